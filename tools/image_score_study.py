#!/usr/bin/env python
"""Image-score variants on the cached features of tools/study.py (short side 320, exposure gain,
default taps): the largest patch score ("max"), the method's default score (``image_score=
"smoothed"``: the peak of the patch grid smoothed with sigma 0.5 cells), the largest value of
the Gaussian-smoothed map at the model input size (sigma 2 and 4 model-input pixels, as the
anomaly map is made), the grid smoothed with sigma 0.75 / 1.0 cells, and the mean of the top
3 / 10 patch scores. Prints image AUROC per method and category.

    python tools/image_score_study.py npad,patchcore
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study  # noqa: E402
from npad_edge import metrics  # noqa: E402
from npad_edge.methods import get_method  # noqa: E402
from npad_edge.methods.base import smoothed_max  # noqa: E402
from npad_edge.postprocess import anomaly_maps  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
taps = ["stage2", "stage3", "stage5"]
with threadpool_limits(2):
    for method in (sys.argv[1] if len(sys.argv) > 1 else "npad,patchcore").split(","):
        for cat in study.categories():
            train, test, _, labels, hw, _ = study.load_cached(cat, "efficientnet_lite0", 320, taps, study.DEFAULT_CACHE, exposure="gain")
            m = get_method(method).fit(np.ascontiguousarray(train), seed=0)
            P, I = [], []
            for s in range(0, len(test), 16):
                p, i = m.score(np.ascontiguousarray(test[s:s+16])); P.append(p); I.append(i)
            P = np.concatenate(P); I = np.concatenate(I)
            res = {"max": metrics.image_auroc(labels, P.reshape(len(P), -1).max(1)),
                   f"default ({m.settings['image_score']})": metrics.image_auroc(labels, I)}
            for sg in (2.0, 4.0):
                mp = anomaly_maps(P, hw, hw, sigma=sg)
                res[f"smooth{sg}"] = metrics.image_auroc(labels, mp.reshape(len(mp), -1).max(1))
            for sg in (0.75, 1.0):
                res[f"grid{sg}"] = metrics.image_auroc(labels, smoothed_max(P, sg))
            flat = P.reshape(len(P), -1)
            for k in (3, 10):
                res[f"top{k}"] = metrics.image_auroc(labels, np.sort(flat, 1)[:, -k:].mean(1))
            print(method, cat.name, {k: round(100 * v, 2) for k, v in res.items()}, flush=True)
