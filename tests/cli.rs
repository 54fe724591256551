//! The `vocalguard` binary end to end: embed, compare, model resolution (built-in, local
//! directory, Hugging Face cache), errors and exit codes, and a registry write that retries
//! while the server is not up yet, idempotent by its request id.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BUILTIN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/campplus-zh-en");

fn vocalguard(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vocalguard"));
    cmd.args(args)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("VOCALGUARD_MODEL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running vocalguard")
}

fn stdout_json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn card_sha256() -> String {
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(BUILTIN_DIR).join("model.json")).unwrap())
            .unwrap();
    card["weights_sha256"].as_str().unwrap().to_string()
}

fn speech(data: &Path, name: &str) -> String {
    let speaker = name.split('-').next().unwrap();
    data.join("test-other")
        .join(speaker)
        .join(format!("{name}.flac"))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn embed_writes_one_json_line_per_file_and_reports_failures() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wav");
    std::fs::write(&garbage, b"this is not audio at all").unwrap();
    let a = speech(&data, "1688-142285-0000");
    let b = speech(&data, "1688-142285-0001");
    let out = vocalguard(
        &["embed", &a, garbage.to_str().unwrap(), &b, "--threads", "2"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "one file failed, so exit 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("garbage.wav") && stderr.contains("1 of 3 files failed"),
        "{stderr}"
    );
    let lines = stdout_json_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["file"],
        a.as_str(),
        "file is the path exactly as given"
    );
    assert_eq!(lines[1]["file"], b.as_str());
    for line in &lines {
        assert_eq!(line["model"], vocalguard::encoder::source::DEFAULT_MODEL);
        assert_eq!(line["model_sha256"], card_sha256().as_str());
        assert_eq!(line["dim"], 192);
        assert_eq!(line["embedding"].as_array().unwrap().len(), 192);
        let (duration, voiced) = (
            line["duration_s"].as_f64().unwrap(),
            line["voiced_s"].as_f64().unwrap(),
        );
        assert!(
            voiced > 1.0 && voiced <= duration,
            "voiced {voiced} of {duration}"
        );
    }
}

#[test]
fn compare_scores_the_same_speaker_above_a_different_one() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    let score = |x: &str, y: &str| -> f64 {
        let out = vocalguard(&["compare", &speech(&data, x), &speech(&data, y)], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let same = score("1688-142285-0000", "1688-142285-0001");
    let different = score("1688-142285-0000", "2033-164914-0000");
    assert!(
        same > 0.75 && same > different + 0.1,
        "same {same}, different {different}"
    );
}

/// Copies the built-in model into `dir` as a model directory.
fn model_dir(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["model.json", "model.safetensors"] {
        std::fs::copy(Path::new(BUILTIN_DIR).join(f), dir.join(f)).unwrap();
    }
    dir.to_path_buf()
}

fn embedding_of(out: &Output) -> Vec<f64> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_value(stdout_json_lines(out)[0]["embedding"].clone()).unwrap()
}

#[test]
fn models_resolve_from_a_directory_and_from_the_hub_cache() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    let file = speech(&data, "2414-128291-0000");
    let builtin = embedding_of(&vocalguard(&["embed", &file], &[]));

    let tmp = tempfile::tempdir().unwrap();
    let local = model_dir(&tmp.path().join("local-model"));
    let from_dir = embedding_of(&vocalguard(
        &["embed", &file, "--model", local.to_str().unwrap()],
        &[],
    ));
    assert_eq!(builtin, from_dir);

    // The hub's cache layout: models--owner--name/{refs/main, snapshots/<commit>/…}.
    let cache = tmp.path().join("hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("models--acme--ge2e-voice");
    model_dir(&repo.join("snapshots").join(commit));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let out = vocalguard(
        &["embed", &file, "--model", "acme/ge2e-voice", "--offline"],
        &[("HF_HUB_CACHE", &cache)],
    );
    assert_eq!(builtin, embedding_of(&out));
    // HF_HOME/hub is the cache when HF_HUB_CACHE is unset; HF_HUB_OFFLINE=1 is honoured.
    std::fs::rename(&cache, tmp.path().join("home-hub")).unwrap();
    let home = tmp.path().join("hf-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::rename(tmp.path().join("home-hub"), home.join("hub")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vocalguard"));
    let out = cmd
        .args(["embed", &file, "--model", "acme/ge2e-voice"])
        .env_remove("HF_HUB_CACHE")
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(builtin, embedding_of(&out));

    // A repo that is not cached, offline: a clear error, no network.
    let out = vocalguard(
        &["embed", &file, "--model", "acme/not-cached", "--offline"],
        &[("HF_HUB_CACHE", &home.join("hub"))],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("acme/not-cached") && stderr.contains("offline"),
        "{stderr}"
    );
}

#[test]
fn weights_that_do_not_match_their_card_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(&tmp.path().join("tampered"));
    let mut weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let last = weights.len() - 1;
    weights[last] ^= 1;
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    let out = vocalguard(
        &["embed", "whatever.wav", "--model", dir.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SHA-256") && stderr.contains(&card_sha256()),
        "{stderr}"
    );
}

#[test]
fn usage_errors_and_unknown_models_explain_themselves() {
    let out = vocalguard(&["embed"], &[]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let out = vocalguard(&["embed", "x.wav", "--model", "no-such-model"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-model")
            && stderr.contains(vocalguard::encoder::source::DEFAULT_MODEL),
        "{stderr}"
    );
    let out = vocalguard(&["embed", "--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--model",
        "--offline",
        "--threads",
        "--max-duration",
        "--no-trim",
    ] {
        assert!(help.contains(flag), "embed --help lacks {flag}");
    }
}

#[test]
fn the_device_is_chosen_by_name_and_cuda_needs_a_cuda_build() {
    let out = vocalguard(&["embed", "x.wav", "--device", "gpu"], &[]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cpu, cuda, cuda:N"), "{stderr}");
    let out = vocalguard(&["serve", "--device", "cuda:1", "--print-config"], &[]);
    assert!(out.status.success());
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(config.contains("device = \"cuda:1\""), "{config}");
    if cfg!(not(feature = "cuda")) {
        let out = vocalguard(&["embed", "x.wav", "--device", "cuda"], &[]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--features cuda"), "{stderr}");
    }
}

#[test]
fn a_write_waits_for_the_server_and_its_request_id_makes_a_rerun_harmless() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let create = |request_id: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vocalguard"));
        cmd.args([
            "artist",
            "create",
            "--display-name",
            "Early Artist",
            "--id",
            "early",
        ])
        .args(["--server", &url, "--json", "--request-id", request_id])
        .env_remove("VOCALGUARD_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        cmd
    };
    // Nothing listens yet: the CLI retries until the server is up.
    let early = create("create-early-1").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let data = tempfile::tempdir().unwrap();
    let _server = common::server::ServerProcess::start_on(
        &format!("127.0.0.1:{port}"),
        data.path(),
        &[],
        &[],
    );
    let first = early.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    let created: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(created["artist_id"], "early");

    // Run again with the same request id: the first result, not ALREADY_EXISTS.
    let rerun = create("create-early-1").output().unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let replayed: serde_json::Value = serde_json::from_slice(&rerun.stdout).unwrap();
    assert_eq!(replayed, created);
    let fresh = create("create-early-2").output().unwrap();
    assert!(!fresh.status.success());
    assert!(
        String::from_utf8_lossy(&fresh.stderr).contains("AlreadyExists"),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
}
