#!/usr/bin/env python3
"""Reference values for src/eval/calibration.rs and src/eval/asnorm.rs.

Computes, independently of the Rust code:

1. Prior-weighted logistic calibration (BOSARIS / Brummer's train_llr_fusion) of the scores in
   tests/fixtures/eval/synthetic_scores.txt (`score label` per line, label 1 = target) with
   scikit-learn's LogisticRegression (unpenalised: C=inf, solver newton-cholesky), for
   p_target 0.01 and 0.5. Each target has sample weight p/N_t and each non-target (1-p)/N_n.
   scikit-learn has no offset argument, so its intercept is b' = b + logit(p) and the
   calibration offset is b = b' - logit(p); the LLR is slope * score + offset (natural log).
   A plain numpy Newton iteration on the same objective guards against a non-converged fit:
   the script fails if the two disagree by more than 1e-9.
2. threshold_at_fa for FA rates 0.01, 0.001 and 1e-5 with numpy: the lowest threshold among
   the unique non-target scores and the next float above their maximum such that the share of
   non-targets with score >= threshold is <= rate.
3. AS-Norm on a deterministic synthetic cohort (numpy default_rng(11): 200 random unit vectors
   of dim 16, then 5 enrolment and 5 test vectors, all rounded to float32 and not
   re-normalised afterwards): cosine scores of every enrolment/test pair, the top-N mean and
   population standard deviation (floor 1e-6) of each vector against the cohort, and the
   normalised scores 0.5 * ((s - mu_e)/sd_e + (s - mu_t)/sd_t), for top_n 50 and for top_n 500
   (clamped to the cohort size, 200). All arithmetic is float64 on the float32 values.

Everything goes to tests/fixtures/eval/calibration_expected.json, which
tests/eval_calibration_parity.rs reads.

Usage (from the repository root):

    python3 -m venv /tmp/calib-venv && /tmp/calib-venv/bin/pip install numpy scikit-learn
    /tmp/calib-venv/bin/python tools/calibration_reference.py
    cargo test --test eval_calibration_parity
"""
import argparse
import json
import math
import os
import warnings

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

FIXTURES = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "eval"))


def logit(p):
    return math.log(p / (1.0 - p))


def calibrate_sklearn(tar, non, p):
    x = np.concatenate([tar, non])[:, None]
    y = np.concatenate([np.ones(len(tar), int), np.zeros(len(non), int)])
    w = np.concatenate([np.full(len(tar), p / len(tar)), np.full(len(non), (1.0 - p) / len(non))])
    model = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-14, max_iter=1000)
    with warnings.catch_warnings():
        # A tolerance this small may be reported as "not reached" at the rounding floor; the
        # numpy Newton check below is what decides whether the fit converged.
        warnings.simplefilter("ignore")
        model.fit(x, y, sample_weight=w)
    return float(model.coef_[0, 0]), float(model.intercept_[0]) - logit(p)


def objective_grad_hess(a, b, tar, non, p):
    lp = logit(p)
    zt = a * tar + b + lp
    zn = a * non + b + lp
    f = p * np.mean(np.logaddexp(0.0, -zt)) + (1.0 - p) * np.mean(np.logaddexp(0.0, zn))
    st = 1.0 / (1.0 + np.exp(zt))  # sigmoid(-z_t)
    sn = 1.0 / (1.0 + np.exp(-zn))  # sigmoid(z_n)
    gt, gn = -p * st / len(tar), (1.0 - p) * sn / len(non)
    g = np.array([np.sum(gt * tar) + np.sum(gn * non), np.sum(gt) + np.sum(gn)])
    ht = p * st * (1.0 - st) / len(tar)
    hn = (1.0 - p) * sn * (1.0 - sn) / len(non)
    h = np.array([
        [np.sum(ht * tar * tar) + np.sum(hn * non * non), np.sum(ht * tar) + np.sum(hn * non)],
        [np.sum(ht * tar) + np.sum(hn * non), np.sum(ht) + np.sum(hn)],
    ])
    return f, g, h


def calibrate_newton(tar, non, p):
    a, b = 0.0, 0.0
    for _ in range(200):
        f, g, h = objective_grad_hess(a, b, tar, non, p)
        if np.max(np.abs(g)) < 1e-14:
            break
        d = -np.linalg.solve(h, g)
        t = 1.0
        while t > 1e-12:
            f_new, _, _ = objective_grad_hess(a + t * d[0], b + t * d[1], tar, non, p)
            if f_new <= f + 1e-4 * t * float(g @ d) or -float(g @ d) < 1e-20:
                break
            t *= 0.5
        a, b = a + t * d[0], b + t * d[1]
    _, g, _ = objective_grad_hess(a, b, tar, non, p)
    return a, b, float(np.max(np.abs(g)))


def threshold_at_fa(non, rate):
    s = np.sort(non)
    candidates = np.concatenate([np.unique(s), [np.nextafter(s[-1], np.inf)]])
    fa = (len(s) - np.searchsorted(s, candidates, side="left")) / len(s)
    i = int(np.argmax(fa <= rate))  # the last candidate has fa = 0, so one always qualifies
    return float(candidates[i]), float(fa[i])


def unit_rows_f32(rng, n, dim):
    v = rng.normal(size=(n, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def top_stats(e, cohort, top_n):
    scores = cohort.astype(np.float64) @ e.astype(np.float64)
    top = np.sort(scores)[::-1][: min(top_n, len(scores))]
    return float(np.mean(top)), float(max(np.std(top), 1e-6))


def asnorm_case(cohort, enroll, test, top_n):
    es = [top_stats(e, cohort, top_n) for e in enroll]
    ts = [top_stats(t, cohort, top_n) for t in test]
    raw, norm = [], []
    for i, e in enumerate(enroll):
        raw_row, norm_row = [], []
        for j, t in enumerate(test):
            s = float(e.astype(np.float64) @ t.astype(np.float64))
            (me, se), (mt, st) = es[i], ts[j]
            raw_row.append(s)
            norm_row.append(0.5 * ((s - me) / se + (s - mt) / st))
        raw.append(raw_row)
        norm.append(norm_row)
    return {"top_n": top_n, "enroll_stats": es, "test_stats": ts, "raw": raw, "normalized": norm}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=FIXTURES, help="folder with synthetic_scores.txt")
    args = ap.parse_args()

    data = np.loadtxt(os.path.join(args.fixtures, "synthetic_scores.txt"))
    scores, labels = data[:, 0], data[:, 1].astype(int)
    tar, non = scores[labels == 1], scores[labels == 0]

    calibration = []
    for p in (0.01, 0.5):
        slope, offset = calibrate_sklearn(tar, non, p)
        a, b, grad = calibrate_newton(tar, non, p)
        diff = max(abs(slope - a), abs(offset - b))
        print(f"p_target {p}: sklearn slope {slope!r} offset {offset!r}; "
              f"numpy Newton differs by {diff:.3e} (its |grad| {grad:.1e})")
        assert diff < 1e-9, "scikit-learn and the numpy Newton fit disagree"
        calibration.append({"p_target": p, "slope": slope, "offset": offset})

    thresholds = []
    for rate in (0.01, 0.001, 1e-5):
        th, fa = threshold_at_fa(non, rate)
        thresholds.append({"rate": rate, "threshold": th, "fa_rate": fa})

    rng = np.random.default_rng(11)
    cohort = unit_rows_f32(rng, 200, 16)
    enroll = unit_rows_f32(rng, 5, 16)
    test = unit_rows_f32(rng, 5, 16)
    as_norm = {
        "generator": "numpy default_rng(11): normal(size=(n, 16)) rows scaled to unit norm, "
                     "float32; cohort 200, then enroll 5, then test 5",
        # float(np.float32) is the exact float32 value, so Rust's `as f32` reads it back exactly.
        "cohort": [[float(x) for x in row] for row in cohort],
        "enroll": [[float(x) for x in row] for row in enroll],
        "test": [[float(x) for x in row] for row in test],
        "cases": [asnorm_case(cohort, enroll, test, n) for n in (50, 500)],
    }

    expected = {
        "generator": "tools/calibration_reference.py on synthetic_scores.txt",
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "n_target": int(len(tar)),
        "n_nontarget": int(len(non)),
        "calibration": calibration,
        "threshold_at_fa": thresholds,
        "asnorm": as_norm,
    }
    out = os.path.join(args.fixtures, "calibration_expected.json")
    with open(out, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")
    print(json.dumps({k: expected[k] for k in ("calibration", "threshold_at_fa")}, indent=1))


if __name__ == "__main__":
    main()
