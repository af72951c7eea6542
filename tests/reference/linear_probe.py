#!/usr/bin/env python3
"""Linear-probe reference: scikit-learn's LogisticRegression (lbfgs, multinomial, L2, the
estimator CoOp's lpclip/linear_probe.py fits) on fixed features, for tests/linear_probe.rs.
Writes tests/fixtures/linear_probe.safetensors: features, labels, and for C in {0.5, 100} the
fitted coef_ [k, d], intercept_ [k] and decision_function on the features. Run once:

    python tests/reference/linear_probe.py
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "linear_probe.safetensors")
rng = np.random.default_rng(0)
k, per, d = 3, 8, 16
centers = rng.normal(0, 1, (k, d))
x = np.concatenate([centers[c] + rng.normal(0, 1.2, (per, d)) for c in range(k)]).astype(np.float32)
y = np.repeat(np.arange(k), per)
t = {"x": torch.from_numpy(x), "y": torch.from_numpy(y.astype(np.int64))}
for c in [0.5, 100.0]:
    clf = LogisticRegression(C=c, solver="lbfgs", max_iter=10000, tol=1e-10).fit(x.astype(np.float64), y)
    t[f"c{c}.coef"] = torch.from_numpy(clf.coef_.astype(np.float32))
    t[f"c{c}.intercept"] = torch.from_numpy(clf.intercept_.astype(np.float32))
    t[f"c{c}.decision"] = torch.from_numpy(clf.decision_function(x).astype(np.float32))
save_file({k_: v.contiguous() for k_, v in t.items()}, OUT)
print(sorted(t))
