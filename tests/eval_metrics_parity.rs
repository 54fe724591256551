//! Parity of `vocalguard::eval` with an independent reference: EER from scikit-learn's
//! `roc_curve` and minDCF from a numpy sweep, both computed by `tools/eval_reference.py`, on a
//! deterministic synthetic score set (2,000 targets, 20,000 nontargets) and on a real score
//! file (GE2E on librispeech-mini's test-other trials, 450 targets, 4,500 nontargets).

use std::path::Path;

use vocalguard::eval::{eer, min_dcf};

const TOL: f64 = 1e-6;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn assert_close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOL,
        "{what}: rust {got} vs reference {want} (diff {:e})",
        (got - want).abs()
    );
}

/// Checks EER and minDCF of the `score label` file `scores` against `expected`.
fn check(scores: &str, expected: &str, counts: (usize, usize)) {
    let mut targets = Vec::new();
    let mut nontargets = Vec::new();
    for (n, line) in fixture(scores).lines().enumerate() {
        let mut it = line.split_whitespace();
        let score: f64 = it.next().unwrap().parse().unwrap();
        match it.next() {
            Some("1") => targets.push(score),
            Some("0") => nontargets.push(score),
            other => panic!("{scores} line {}: bad label {other:?}", n + 1),
        }
    }
    assert_eq!((targets.len(), nontargets.len()), counts);
    let expected: serde_json::Value = serde_json::from_str(&fixture(expected)).unwrap();
    let want = |key: &str| {
        expected[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    let e = eer(&targets, &nontargets).unwrap();
    assert_close("eer", e.eer, want("eer"));
    assert_close("eer threshold", e.threshold, want("eer_threshold"));
    eprintln!(
        "{scores}: eer rust {} / {} vs reference {} / {}",
        e.eer,
        e.threshold,
        want("eer"),
        want("eer_threshold")
    );
    for p in ["0.01", "0.001"] {
        let d = min_dcf(&targets, &nontargets, p.parse().unwrap(), 1.0, 1.0).unwrap();
        assert_close(
            &format!("min_dcf {p}"),
            d.dcf,
            want(&format!("min_dcf_{p}")),
        );
        assert_close(
            &format!("min_dcf {p} threshold"),
            d.threshold,
            want(&format!("min_dcf_{p}_threshold")),
        );
    }
}

#[test]
fn eer_and_min_dcf_match_the_python_reference_on_synthetic_scores() {
    check(
        "synthetic_scores.txt",
        "synthetic_expected.json",
        (2000, 20000),
    );
}

#[test]
fn eer_and_min_dcf_match_the_python_reference_on_real_scores() {
    check(
        "librispeech_test_other_scores.txt",
        "librispeech_test_other_expected.json",
        (450, 4500),
    );
}
