"""Export a fitted model to OpenVINO IR (FP32, FP16 or INT8): torch + OpenVINO + NNCF.

    from npad_edge.export import export_model
    export_model("bottle_fitted", "bottle_int8", precision="int8", calib="mvtec/bottle/train/good")

The IR holds the whole ``FeatureExtractor``: uint8 ``(B, H, W, 3)`` RGB of any size in,
resize + normalise + backbone + aggregation inside, ``(B, D, h, w) float32`` features out
(output name ``features``). The memory bank stays outside the IR (the C++ search scores it),
so the IR's size does not grow with the training set and INT8 never touches the k-NN.
"""

from __future__ import annotations

from .convert import (  # noqa: F401
    INPUT_NAME,
    OUTPUT_NAME,
    QUANT_PRESET,
    convert_extractor,
    export_model,
    quantize_backbone,
)

__all__ = ["export_model", "convert_extractor", "quantize_backbone", "INPUT_NAME", "OUTPUT_NAME",
           "QUANT_PRESET"]
