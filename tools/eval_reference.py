#!/usr/bin/env python3
"""Reference values for src/eval/metrics.rs (EER via scikit-learn, minDCF via a numpy sweep).

Generates a deterministic synthetic score set (numpy default_rng(7): 2,000 targets ~ N(2, 1),
20,000 nontargets ~ N(0, 1), rounded to 6 decimals), writes it to
tests/fixtures/eval/synthetic_scores.txt (`score label` per line, label 1 = target) and the
expected metrics to tests/fixtures/eval/synthetic_expected.json. Conventions are those of the
Rust module docs: accept when score >= threshold; operating points at every unique score plus
+inf; EER linearly interpolated on the segment where P_miss - P_fa changes sign.

With `--real-scores FILE` it instead computes the same metrics on a real score file
(`score label` per line) and writes them beside it as `<stem>_expected.json`; the committed
`tests/fixtures/eval/librispeech_test_other_scores.txt` holds the 4,950 GE2E scores of
`vocalguard eval --trials ../shared/data/librispeech-mini/test-other` (its scores.txt,
reduced to `score label`).

Usage: /work/venv/eval/bin/python tools/eval_reference.py [--out-dir tests/fixtures/eval]
       /work/venv/eval/bin/python tools/eval_reference.py --real-scores tests/fixtures/eval/librispeech_test_other_scores.txt
"""
import argparse
import json
import os

import numpy as np
import sklearn
from sklearn.metrics import roc_curve


def eer_sklearn(scores, labels):
    # drop_intermediate=False keeps one point per unique score; thresholds descend from +inf.
    fpr, tpr, thr = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    # Ascending threshold order, as in the Rust sweep: +inf (reject all) comes last.
    p_fa = fpr[::-1]
    p_miss = (1.0 - tpr)[::-1]
    thr = thr[::-1]
    assert np.isinf(thr[-1]) or thr[-1] > scores.max()
    i = int(np.argmax(p_miss >= p_fa))  # first point with P_miss >= P_fa
    if p_miss[i] == p_fa[i]:
        return float(p_miss[i]), float(thr[i])
    d_prev = p_fa[i - 1] - p_miss[i - 1]
    d_cur = p_fa[i] - p_miss[i]
    t = d_prev / (d_prev - d_cur)
    eer = p_miss[i - 1] + t * (p_miss[i] - p_miss[i - 1])
    if np.isfinite(thr[i]) and i != len(thr) - 1:
        th = thr[i - 1] + t * (thr[i] - thr[i - 1])
    else:
        th = thr[i - 1]
    return float(eer), float(th)


def min_dcf_numpy(tar, non, p_target, c_miss=1.0, c_fa=1.0):
    tar, non = np.sort(tar), np.sort(non)
    thr = np.concatenate([np.unique(np.concatenate([tar, non])), [np.inf]])
    p_miss = np.searchsorted(tar, thr, side="left") / len(tar)
    p_fa = (len(non) - np.searchsorted(non, thr, side="left")) / len(non)
    w_miss, w_fa = c_miss * p_target, c_fa * (1.0 - p_target)
    cost = (w_miss * p_miss + w_fa * p_fa) / min(w_miss, w_fa)
    i = int(np.argmin(cost))  # first (lowest threshold) minimum
    return float(cost[i]), float(thr[i])


def expected_metrics(scores, labels, generator):
    """EER (scikit-learn) and minDCF at p_target 0.01 and 0.001 (numpy) of labelled scores."""
    tar, non = scores[labels == 1], scores[labels == 0]
    eer, eer_th = eer_sklearn(scores, labels)
    expected = {
        "generator": generator,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "eer": eer,
        "eer_threshold": eer_th,
    }
    for p in (0.01, 0.001):
        dcf, th = min_dcf_numpy(tar, non, p)
        expected[f"min_dcf_{p}"] = dcf
        expected[f"min_dcf_{p}_threshold"] = th
    return expected


def write_expected(path, expected):
    with open(path, "w") as f:
        json.dump(expected, f, indent=2)
        f.write("\n")
    print(json.dumps(expected, indent=2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "eval"))
    ap.add_argument("--real-scores", help="a real `score label` file to compute metrics on")
    args = ap.parse_args()
    if args.real_scores:
        data = np.loadtxt(args.real_scores)
        stem = os.path.splitext(args.real_scores)[0].removesuffix("_scores")
        write_expected(f"{stem}_expected.json", expected_metrics(
            data[:, 0], data[:, 1].astype(int), os.path.basename(args.real_scores)))
        return
    os.makedirs(args.out_dir, exist_ok=True)

    rng = np.random.default_rng(7)
    tar = np.round(rng.normal(2.0, 1.0, 2000), 6)
    non = np.round(rng.normal(0.0, 1.0, 20000), 6)
    scores = np.concatenate([tar, non])
    labels = np.concatenate([np.ones(len(tar), int), np.zeros(len(non), int)])

    with open(os.path.join(args.out_dir, "synthetic_scores.txt"), "w") as f:
        for s, l in zip(scores, labels):
            f.write(f"{s:.6f} {l}\n")
    # Re-read what was written so the expected values are computed from the file's exact values.
    data = np.loadtxt(os.path.join(args.out_dir, "synthetic_scores.txt"))
    scores, labels = data[:, 0], data[:, 1].astype(int)
    write_expected(os.path.join(args.out_dir, "synthetic_expected.json"), expected_metrics(
        scores, labels,
        "numpy default_rng(7); 2000 target N(2,1), 20000 nontarget N(0,1), 6 decimals"))


if __name__ == "__main__":
    main()
