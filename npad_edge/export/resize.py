"""A fast, exact replacement for the IR's antialiased bilinear resize.

torch's ``interpolate(..., mode="bilinear", antialias=True)`` converts to an OpenVINO
``Interpolate`` in ``bilinear_pillow`` mode. Its CPU kernel is slow: about 25 ms of one core
to shrink a 900x900 RGB frame to 256x256, more than the whole INT8 backbone (OpenVINO
2026.4); its ``linear`` mode with ``antialias`` is fast but computes something else.

The same filter written with plain ops is cheap because it is banded: output ``i`` of an axis
of length ``n`` shrunk to ``m`` reads at most ``ceil(2 * support) + 1`` inputs, ``support =
max(n / m, 1)``, with triangle weights normalised to sum 1 (exactly aten's
``_upsample_bilinear2d_aa``: centre ``(i + 0.5) * n / m``, window ``[floor(centre - support +
0.5), floor(centre + support + 0.5))`` clipped to the axis, weight ``1 - |j + 0.5 - centre| /
support``). Per axis: one ``Gather`` of the window rows, a multiply and a sum. The index
and weight tables are computed in the graph from the input's shape, so any input size works.
When the resize reads the graph's uint8 input through Convert + Transpose, the rows are
gathered from the uint8 NHWC image before the conversion (a quarter of the bytes moved).
Measured on one core of this project's 2-core AVX-512 machine, 900x900 -> 256x256: 27 ms for
``bilinear_pillow``, 11 ms for this; same values to 1e-4 (of 255).
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["replace_pillow_resize", "aa_resize_axis"]

log = logging.getLogger(__name__)


def aa_resize_axis(x, axis: int, out_len: int):
    """``x`` resized along ``axis`` to ``out_len`` with aten's antialiased bilinear filter.

    ``x``: an OpenVINO output (any rank, f32 or u8). Returns an f32 output.
    """
    import openvino as ov
    import openvino.opset13 as ops

    f32, i64 = ov.Type.f32, ov.Type.i64

    def c(v, t=np.float32):
        return ops.constant(np.array(v, dtype=t))

    rank = x.get_partial_shape().rank.get_length()
    n = ops.gather(ops.shape_of(x, "i64"), c(axis, np.int64), c(0, np.int64))          # scalar
    n_f = ops.convert(n, f32)
    scale = ops.divide(n_f, c(float(out_len)))
    support = ops.maximum(scale, c(1.0))
    centre = ops.multiply(scale, c(np.arange(out_len, dtype=np.float32) + 0.5))         # (m,)
    lo = ops.maximum(ops.convert(ops.floor(ops.add(ops.subtract(centre, support), c(0.5))), i64),
                     c(0, np.int64))                                                     # (m,)
    hi = ops.minimum(ops.convert(ops.floor(ops.add(ops.add(centre, support), c(0.5))), i64), n)
    taps = ops.add(ops.convert(ops.ceiling(ops.multiply(support, c(2.0))), i64), c(1, np.int64))
    k = ops.range(c(0, np.int64), taps, c(1, np.int64), "i64")                          # (K,)
    j = ops.add(ops.unsqueeze(lo, c([1], np.int64)), ops.unsqueeze(k, c([0], np.int64)))  # (m, K)
    dist = ops.subtract(ops.add(ops.convert(j, f32), c(0.5)), ops.unsqueeze(centre, c([1], np.int64)))
    w = ops.maximum(ops.subtract(c(1.0), ops.divide(ops.abs(dist), support)), c(0.0))
    w = ops.select(ops.less(j, ops.unsqueeze(hi, c([1], np.int64))), w, c(0.0))
    w = ops.divide(w, ops.reduce_sum(w, c([1], np.int64), keep_dims=True))
    j = ops.minimum(j, ops.subtract(n, c(1, np.int64)))
    g = ops.gather(x, j, c(axis, np.int64))                     # pre + (m, K) + post
    if g.get_element_type() != f32:
        g = ops.convert(g, f32)
    shape = ops.shape_of(x, "i64")
    pre = [ops.gather(shape, c(list(range(axis)), np.int64), c(0, np.int64))] if axis else []
    m = c([out_len], np.int64)
    if axis == rank - 1:
        # Window along the innermost axis: multiply and sum the last axis (contiguous).
        return ops.reduce_sum(ops.multiply(g, w), c([rank], np.int64), keep_dims=False).output(0)
    # Otherwise a batched (1 x K) @ (K x rest) product per output row: far faster than a
    # reduction over a middle axis.
    post = ops.gather(shape, c(list(range(axis + 1, rank)), np.int64), c(0, np.int64))
    rest = ops.reduce_prod(post, c([0], np.int64), keep_dims=True)
    g = ops.reshape(g, ops.concat(pre + [m, ops.unsqueeze(taps, c([0], np.int64)), rest], 0), False)
    y = ops.matmul(ops.unsqueeze(w, c([1], np.int64)), g, False, False)           # pre + (m, 1, rest)
    return ops.reshape(y, ops.concat(pre + [m, post], 0), False).output(0)


def replace_pillow_resize(model) -> int:
    """Replace every ``bilinear_pillow`` Interpolate with constant output sizes in ``model``
    (in place) by :func:`aa_resize_axis` along its axes. Returns how many were replaced."""
    import openvino.opset13 as ops

    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Interpolate":
            continue
        attrs = node.get_attributes()
        if attrs.get("mode") != "bilinear_pillow" or attrs.get("shape_calculation_mode") != "sizes":
            continue
        if any(p != 0 for p in list(attrs.get("pads_begin", [])) + list(attrs.get("pads_end", []))):
            continue
        if node.get_input_size() < 3:
            continue
        sizes_node = node.input_value(1).get_node()
        axes_node = node.input_value(2).get_node()
        if sizes_node.get_type_name() != "Constant" or axes_node.get_type_name() != "Constant":
            continue
        sizes = [int(s) for s in sizes_node.get_vector()]
        axes = [int(a) for a in axes_node.get_vector()]
        src = node.input_value(0)
        rank = src.get_partial_shape().rank.get_length()
        axes = [a % rank for a in axes]
        # Convert(u8 NHWC) -> Transpose(0, 3, 1, 2) feeding the resize: gather from the uint8
        # image instead and transpose the small result.
        nhwc = _uint8_nhwc_source(src)
        if nhwc is not None and rank == 4 and sorted(axes) == [2, 3]:
            size = dict(zip(axes, sizes))
            # H on the uint8 NHWC image (rows are contiguous), then NCHW, then W innermost.
            y = aa_resize_axis(nhwc, 1, size[2])
            y = ops.transpose(y, ops.constant(np.array([0, 3, 1, 2], np.int64))).output(0)
            y = aa_resize_axis(y, 3, size[3])
        else:
            y = src
            for a, s in sorted(zip(axes, sizes)):
                y = aa_resize_axis(y, a, s)
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(y)
        count += 1
    if count:
        model.validate_nodes_and_infer_types()
        log.debug("replaced %d bilinear_pillow Interpolate op(s) by banded gathers", count)
    return count


def _uint8_nhwc_source(src):
    """The uint8 NHWC output behind ``Transpose(Convert(x), [0, 3, 1, 2])``, else None."""
    import openvino as ov

    t = src.get_node()
    if t.get_type_name() != "Transpose":
        return None
    perm = t.input_value(1).get_node()
    if perm.get_type_name() != "Constant" or [int(v) for v in perm.get_vector()] != [0, 3, 1, 2]:
        return None
    conv = t.input_value(0).get_node()
    if conv.get_type_name() != "Convert":
        return None
    x = conv.input_value(0)
    return x if x.get_element_type() == ov.Type.u8 else None
