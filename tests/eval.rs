//! `vocalguard eval` and `vocalguard calibrate` end to end on librispeech-mini's test-other
//! speakers: the three trial formats give the same trials and metrics, a rerun is served from
//! the embedding cache, calibration and AS-Norm flow into the report, and two models compare.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use vocalguard::eval::trials::{load_trials, write_kaldi, write_voxceleb, DirOptions};

fn vocalguard(args: &[&str]) {
    common::run_vocalguard(args);
}

fn report(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn eval_covers_formats_cache_calibration_as_norm_and_model_comparison() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let test_other = root.join("test-other");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let out: PathBuf = work.path().join("dirs");
    // GE2E: its scores overlap on test-other (CAM++ separates every trial), which the EER,
    // calibration and AS-Norm checks below need.
    let base: [&str; 6] = [
        "--cache-dir",
        s(&cache),
        "--bootstrap",
        "200",
        "--model",
        "ge2e-resemblyzer",
    ];

    vocalguard(
        &[
            &["eval", "--trials", s(&test_other), "--out", s(&out)][..],
            &base,
        ]
        .concat(),
    );
    let first = report(&out);
    let sys = &first["systems"][0];
    assert_eq!(first["format"], "speaker-dirs");
    assert_eq!(
        (sys["n_target"].as_u64(), sys["n_nontarget"].as_u64()),
        (Some(450), Some(4500))
    );
    let eer = sys["eer"].as_f64().unwrap();
    assert!(eer > 0.0 && eer < 0.1, "GE2E on test-other: EER {eer}");
    let (lo, hi) = (
        sys["eer_ci95"][0].as_f64().unwrap(),
        sys["eer_ci95"][1].as_f64().unwrap(),
    );
    assert!(lo <= eer && eer <= hi, "{lo} {eer} {hi}");
    assert_eq!(sys["min_dcf"].as_array().unwrap().len(), 2);
    assert_eq!(sys["files_embedded"], 100);
    assert_eq!(sys["files_cached"], 0);
    for file in ["report.md", "scores.txt", "det.png", "scores.png"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let scores = std::fs::read_to_string(out.join("scores.txt")).unwrap();
    assert!(scores.starts_with("# model ge2e-resemblyzer sha256 "));
    assert_eq!(scores.lines().filter(|l| !l.starts_with('#')).count(), 4950);

    let again = work.path().join("again");
    vocalguard(
        &[
            &["eval", "--trials", s(&test_other), "--out", s(&again)][..],
            &base,
        ]
        .concat(),
    );
    let rerun = report(&again);
    assert_eq!(
        rerun["systems"][0]["files_cached"], 100,
        "a rerun is served from the cache"
    );
    assert_eq!(rerun["systems"][0]["files_embedded"], 0);
    assert_eq!(rerun["systems"][0]["eer"], sys["eer"]);

    let list = load_trials(&test_other, None, &DirOptions::default()).unwrap();
    for (name, text) in [
        ("voxceleb.txt", write_voxceleb(&list, &test_other)),
        ("kaldi.trials", write_kaldi(&list, &test_other)),
    ] {
        let trials = work.path().join(name);
        std::fs::write(&trials, text).unwrap();
        let dir = work.path().join(format!("out-{name}"));
        vocalguard(
            &[
                &[
                    "eval",
                    "--trials",
                    s(&trials),
                    "--audio-root",
                    s(&test_other),
                    "--out",
                    s(&dir),
                ][..],
                &base,
            ]
            .concat(),
        );
        let r = report(&dir);
        assert_eq!(r["systems"][0]["n_target"], 450, "{name}");
        assert_eq!(
            r["systems"][0]["eer"], sys["eer"],
            "{name}: same trials, same EER"
        );
        assert_eq!(r["systems"][0]["files_cached"], 100, "{name}");
    }

    let calibration = work.path().join("calibration.json");
    vocalguard(&[
        "calibrate",
        s(&out.join("scores.txt")),
        "--target-fa-rate",
        "0.01",
        "--out",
        s(&calibration),
    ]);
    let fitted: Value = serde_json::from_slice(&std::fs::read(&calibration).unwrap()).unwrap();
    assert_eq!(fitted["model"], "ge2e-resemblyzer");
    assert!(fitted["slope"].as_f64().unwrap() > 0.0);
    assert!(fitted["fa_rate"].as_f64().unwrap() <= 0.01);

    let calibrated = work.path().join("calibrated");
    vocalguard(
        &[
            &[
                "eval",
                "--trials",
                s(&test_other),
                "--out",
                s(&calibrated),
                "--calibration",
                s(&calibration),
                "--cohort",
                s(&root.join("train-clean-100")),
            ][..],
            &base,
        ]
        .concat(),
    );
    let r = report(&calibrated);
    let sys = &r["systems"][0];
    assert!(sys["score_normalisation"]
        .as_str()
        .unwrap()
        .starts_with("as-norm top-100 over a cohort of 251"));
    assert_eq!(sys["act_dcf"]["source"], "calibration");
    assert!(sys["cllr"].as_f64().unwrap().is_finite());
    let as_norm_eer = sys["eer"].as_f64().unwrap();
    assert!(as_norm_eer < 0.1, "AS-Norm EER {as_norm_eer}");

    let other_model = work.path().join("model");
    std::fs::create_dir(&other_model).unwrap();
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ge2e-resemblyzer");
    std::fs::copy(
        builtin.join("model.safetensors"),
        other_model.join("model.safetensors"),
    )
    .unwrap();
    let card = std::fs::read_to_string(builtin.join("model.json")).unwrap();
    std::fs::write(
        other_model.join("model.json"),
        card.replacen("\"ge2e-resemblyzer\"", "\"ge2e-copy\"", 1),
    )
    .unwrap();
    let compared = work.path().join("compared");
    vocalguard(
        &[
            &[
                "eval",
                "--trials",
                s(&test_other),
                "--out",
                s(&compared),
                "--model",
                "ge2e-resemblyzer",
                "--model",
                s(&other_model),
            ][..],
            // The cache and bootstrap settings, not the model again.
            &base[..4],
        ]
        .concat(),
    );
    let r = report(&compared);
    assert_eq!(r["systems"].as_array().unwrap().len(), 2);
    assert_eq!(r["systems"][1]["model"], "ge2e-copy");
    assert_eq!(
        r["systems"][0]["eer"], r["systems"][1]["eer"],
        "same weights, same scores"
    );
    assert!(compared.join("scores-ge2e-resemblyzer.txt").is_file());
    assert!(compared.join("scores-ge2e-copy.txt").is_file());
    let md = std::fs::read_to_string(compared.join("report.md")).unwrap();
    assert!(md.contains("ge2e-copy") && md.contains("minDCF"));
}
