//! Parity of `vocalguard::eval::calibration` and `vocalguard::scoring::asnorm` with an independent reference computed
//! by `tools/calibration_reference.py`: the prior-weighted logistic calibration with
//! scikit-learn, `threshold_at_fa` with numpy on `synthetic_scores.txt`, and AS-Norm with numpy
//! on a synthetic cohort stored in the fixture.

use std::path::Path;

use serde_json::Value;
use vocalguard::eval::calibration::threshold_at_fa;
use vocalguard::scoring::asnorm::AsNorm;
use vocalguard::scoring::calibration::Calibration;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn expected() -> Value {
    serde_json::from_str(&fixture("calibration_expected.json")).unwrap()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn scores() -> (Vec<f64>, Vec<f64>) {
    let (mut targets, mut nontargets) = (Vec::new(), Vec::new());
    for (n, line) in fixture("synthetic_scores.txt").lines().enumerate() {
        let mut it = line.split_whitespace();
        let score: f64 = it.next().unwrap().parse().unwrap();
        match it.next() {
            Some("1") => targets.push(score),
            Some("0") => nontargets.push(score),
            other => panic!("line {}: bad label {other:?}", n + 1),
        }
    }
    (targets, nontargets)
}

fn vectors(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| num(x) as f32)
                .collect()
        })
        .collect()
}

#[test]
fn logistic_calibration_matches_scikit_learn() {
    let (targets, nontargets) = scores();
    let want = expected();
    assert_eq!(
        (targets.len(), nontargets.len()),
        (
            want["n_target"].as_u64().unwrap() as usize,
            want["n_nontarget"].as_u64().unwrap() as usize
        )
    );
    for case in want["calibration"].as_array().unwrap() {
        let p = num(&case["p_target"]);
        let c = Calibration::fit(&targets, &nontargets, p, 0.01).unwrap();
        for (what, got, want) in [
            ("slope", c.slope, num(&case["slope"])),
            ("offset", c.offset, num(&case["offset"])),
        ] {
            let diff = (got - want).abs();
            eprintln!("p_target {p} {what}: rust {got} vs sklearn {want} (diff {diff:e})");
            assert!(
                diff <= (1e-6 * want.abs()).max(1e-8),
                "p_target {p} {what}: rust {got} vs sklearn {want}"
            );
        }
    }
}

#[test]
fn thresholds_match_numpy_exactly() {
    let (targets, nontargets) = scores();
    for case in expected()["threshold_at_fa"].as_array().unwrap() {
        let rate = num(&case["rate"]);
        let want = num(&case["threshold"]);
        let got = threshold_at_fa(&nontargets, rate);
        eprintln!("threshold_at_fa {rate}: rust {got} vs numpy {want}");
        assert_eq!(got, want, "threshold at FA rate {rate}");
        if rate * nontargets.len() as f64 >= 1.0 {
            let c = Calibration::fit(&targets, &nontargets, 0.01, rate).unwrap();
            assert_eq!(c.threshold, want);
            assert_eq!(c.fa_rate, num(&case["fa_rate"]));
        }
    }
}

#[test]
fn asnorm_matches_numpy() {
    let want = expected();
    let a = &want["asnorm"];
    let (cohort, enroll, test) = (
        vectors(&a["cohort"]),
        vectors(&a["enroll"]),
        vectors(&a["test"]),
    );
    let size = cohort.len();
    let mut max_diff = 0.0f64;
    let mut check = |what: String, got: f64, want: f64| {
        let diff = (got - want).abs();
        assert!(diff <= 1e-9, "{what}: rust {got} vs numpy {want}");
        max_diff = max_diff.max(diff);
    };
    for case in a["cases"].as_array().unwrap() {
        let top_n = case["top_n"].as_u64().unwrap() as usize;
        let asn = AsNorm::new(cohort.clone(), top_n).unwrap();
        assert_eq!((asn.len(), asn.top_n()), (size, top_n.min(size)));
        for (side, vecs) in [("enroll", &enroll), ("test", &test)] {
            let stats = case[format!("{side}_stats")].as_array().unwrap();
            for (i, (v, s)) in vecs.iter().zip(stats).enumerate() {
                let (mean, std) = asn.stats(v);
                check(format!("top {top_n} {side} {i} mean"), mean, num(&s[0]));
                check(format!("top {top_n} {side} {i} std"), std, num(&s[1]));
            }
        }
        for (i, e) in enroll.iter().enumerate() {
            for (j, t) in test.iter().enumerate() {
                let raw: f64 = e
                    .iter()
                    .zip(t)
                    .map(|(&x, &y)| f64::from(x) * f64::from(y))
                    .sum();
                check(format!("raw {i},{j}"), raw, num(&case["raw"][i][j]));
                check(
                    format!("top {top_n} normalised {i},{j}"),
                    asn.score(e, t, raw),
                    num(&case["normalized"][i][j]),
                );
            }
        }
    }
    eprintln!("AS-Norm: largest difference from numpy {max_diff:e}");
}
