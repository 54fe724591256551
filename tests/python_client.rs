//! A client in another language: `tests/python/vocalguard_client.py`, a Python grpcio client on
//! stubs generated from `proto/`, enrolls and screens against a real `vocalguard serve`, and
//! the standard Python reflection client (grpcio-reflection, reflection `v1alpha`) lists and
//! resolves its services, as a `v1` reflection call does.
//!
//! The packages pinned in `tests/python/requirements.txt` are installed from PyPI into a venv
//! under the target's temporary folder, made once and reused while the requirements stay the
//! same. Python is `$VOCALGUARD_PYTHON`, else `python3`. When the venv cannot be made the test
//! is skipped, and under `CI=true` it fails.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::server::ServerProcess;
use serde_json::Value;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn output_text(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` and returns its output when it succeeds, else what went wrong.
fn run(command: &mut Command) -> Result<Output, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!("{command:?} failed: {}", output_text(&output)))
    }
}

/// The venv's interpreter, with the pinned requirements installed; None (skip) when the venv
/// cannot be made outside CI. The tests of this file run in parallel: the first makes the
/// venv, the others wait for it and share it.
fn python_with_requirements() -> Option<PathBuf> {
    static VENV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    VENV.get_or_init(make_venv).clone()
}

/// Makes (or reuses) the venv of [`python_with_requirements`].
fn make_venv() -> Option<PathBuf> {
    let requirements = manifest_dir().join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("reading requirements.txt");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-client-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("installed-requirements.txt");
    if python.is_file() && std::fs::read_to_string(&marker).is_ok_and(|have| have == wanted) {
        return Some(python);
    }
    let base = std::env::var("VOCALGUARD_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let pip = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-r",
    ];
    let made = run(Command::new(&base)
        .args(["-m", "venv", "--clear"])
        .arg(&venv))
    .and_then(|_| run(Command::new(&python).args(pip).arg(&requirements)));
    match made {
        Ok(_) => {
            std::fs::write(&marker, wanted).expect("writing the venv marker");
            Some(python)
        }
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI needs the Python client's venv: {why}")
        }
        Err(why) => {
            eprintln!("skipping: no Python venv with tests/python/requirements.txt: {why}");
            None
        }
    }
}

/// Generates the Python stubs for every `proto/vocalguard/v1/*.proto` into `out`.
fn generate_stubs(python: &Path, out: &Path) {
    let proto = manifest_dir().join("proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(proto.join("vocalguard/v1"))
        .expect("listing proto/vocalguard/v1")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    let flag = |name: &str, value: &Path| {
        let mut flag = std::ffi::OsString::from(name);
        flag.push(value);
        flag
    };
    run(Command::new(python)
        .args(["-m", "grpc_tools.protoc"])
        .arg(flag("--proto_path=", &proto))
        .arg(flag("--python_out=", out))
        .arg(flag("--grpc_python_out=", out))
        .args(&files))
    .unwrap_or_else(|why| panic!("generating the Python stubs: {why}"));
}

/// Shortest utterance enrolled, seconds: enrollment needs 4 s of voiced audio, and a
/// LibriSpeech utterance of 6 s holds about 5.
const MIN_ENROLL_S: f64 = 6.0;

/// The sorted `.flac` files of one `test-other` speaker.
fn utterances(speaker_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(speaker_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", speaker_dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "flac"))
        .collect();
    files.sort();
    files
}

/// A FLAC file's duration in seconds, from its STREAMINFO block: the eight bytes at offset 18
/// hold the sample rate in their top 20 bits and the total samples in their low 36.
fn flac_duration_s(path: &Path) -> f64 {
    let mut head = [0u8; 26];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&head[..4], b"fLaC", "{} is not FLAC", path.display());
    let info = u64::from_be_bytes(head[18..26].try_into().unwrap());
    (info & ((1 << 36) - 1)) as f64 / (info >> 44) as f64
}

/// The Python interpreter and stub folder the client runs with, and the server it talks to.
struct Harness {
    python: PathBuf,
    stubs: PathBuf,
    server: ServerProcess,
}

impl Harness {
    /// Runs `enroll-and-screen` enrolling `speaker_dir`'s first three utterances of at least
    /// [`MIN_ENROLL_S`] as `artist_id` and screening its fifth utterance, and returns the
    /// client's JSON report.
    fn enroll_and_screen(
        &self,
        artist_id: &str,
        speaker_dir: &Path,
        uploader: &str,
        authorize: Option<&str>,
    ) -> Value {
        let files = utterances(speaker_dir);
        let screened = &files[4];
        let enrolled: Vec<&PathBuf> = files
            .iter()
            .filter(|path| path != &screened && flac_duration_s(path) >= MIN_ENROLL_S)
            .take(3)
            .collect();
        assert_eq!(enrolled.len(), 3, "{}", speaker_dir.display());
        let mut command = Command::new(&self.python);
        command
            .arg(manifest_dir().join("tests/python/vocalguard_client.py"))
            .args(["--server", &self.server.addr])
            .args(["enroll-and-screen", "--artist-id", artist_id])
            .arg("--stubs")
            .arg(&self.stubs)
            .args(["--display-name", &format!("Speaker {artist_id}")])
            .arg("--enroll")
            .args(enrolled)
            .arg("--screen")
            .arg(screened)
            .args(["--uploader", uploader]);
        if let Some(party) = authorize {
            command.args(["--authorize", party]);
        }
        let output = run(&mut command).unwrap_or_else(|why| {
            panic!(
                "the Python client failed: {why}\n--- server log ---\n{}",
                self.server.log_text()
            )
        });
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "the client's stdout is not one JSON object ({e}): {}",
                output_text(&output)
            )
        })
    }
}

/// Checks that the streaming and unary screens agree, with `decision` and `artist_id` on top,
/// and returns the registry version they saw.
fn check_screens(report: &Value, decision: &str, artist_id: &str, authorized: bool) -> u64 {
    let (screen, clip) = (&report["screen"], &report["screen_clip"]);
    for answer in [screen, clip] {
        assert_eq!(answer["decision"], decision, "{report:#}");
        assert_eq!(answer["top_match"], artist_id, "{report:#}");
        let top = &answer["matches"][0];
        assert_eq!(top["matched"], true, "{report:#}");
        assert_eq!(top["uploader_authorized"], authorized, "{report:#}");
        let duration = answer["duration_s"].as_f64().unwrap();
        let ranges = top["time_ranges"].as_array().unwrap();
        assert!(!ranges.is_empty(), "a match has time ranges: {report:#}");
        for range in ranges {
            let (start, end) = (range[0].as_f64().unwrap(), range[1].as_f64().unwrap());
            assert!(
                0.0 <= start && start < end && end <= duration + 1e-3,
                "{range} outside 0..{duration}"
            );
        }
        let context = &answer["context"];
        assert_eq!(
            context["model"],
            vocalguard::encoder::source::DEFAULT_MODEL,
            "{report:#}"
        );
        let sha = context["model_sha256"].as_str().unwrap();
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "model_sha256 {sha:?}"
        );
    }
    assert_eq!(screen["context"], clip["context"], "{report:#}");
    assert_eq!(
        screen["matches"].as_array().unwrap().len(),
        clip["matches"].as_array().unwrap().len(),
        "{report:#}"
    );
    let score = |answer: &Value| answer["matches"][0]["aggregate_score"].as_f64().unwrap();
    assert!(
        (score(screen) - score(clip)).abs() < 1e-4,
        "Screen and ScreenClip score the same bytes differently: {report:#}"
    );
    screen["context"]["registry_version"].as_u64().unwrap()
}

#[test]
fn python_client_enrolls_and_screens() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    let Some(python) = python_with_requirements() else {
        return;
    };
    let stubs = tempfile::TempDir::new().unwrap();
    generate_stubs(&python, stubs.path());
    let mut speakers: Vec<PathBuf> = std::fs::read_dir(data.join("test-other"))
        .expect("listing test-other")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    speakers.sort();
    assert!(speakers.len() >= 2, "test-other needs two speakers");

    let data_dir = tempfile::TempDir::new().unwrap();
    let harness = Harness {
        python,
        stubs: stubs.path().to_path_buf(),
        server: ServerProcess::start(data_dir.path(), &[]),
    };

    let blocked =
        harness.enroll_and_screen("py-artist-1", &speakers[0], "party-unauthorized", None);
    let first_version = check_screens(
        &blocked,
        "DECISION_UNAUTHORIZED_MATCH",
        "py-artist-1",
        false,
    );

    let allowed = harness.enroll_and_screen(
        "py-artist-2",
        &speakers[1],
        "party-label",
        Some("party-label"),
    );
    let second_version = check_screens(&allowed, "DECISION_AUTHORIZED_MATCH", "py-artist-2", true);
    assert!(
        second_version > first_version,
        "the registry grew between the runs"
    );
}

#[test]
fn python_reflection_client_lists_and_resolves_the_services() {
    let Some(python) = python_with_requirements() else {
        return;
    };
    let data_dir = tempfile::TempDir::new().unwrap();
    let server = ServerProcess::start(data_dir.path(), &[]);
    let output = run(Command::new(&python)
        .arg(manifest_dir().join("tests/python/vocalguard_client.py"))
        .args(["--server", &server.addr, "reflect"]))
    .unwrap_or_else(|why| {
        panic!(
            "the reflection client failed: {why}\n--- server log ---\n{}",
            server.log_text()
        )
    });
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", output_text(&output)));
    let names = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing: {report:#}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let v1alpha = names("v1alpha_services");
    for service in [
        "vocalguard.v1.ScreeningService",
        "vocalguard.v1.RegistryService",
        "vocalguard.v1.PingService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            v1alpha.iter().any(|s| s == service),
            "{service}: {report:#}"
        );
    }
    assert_eq!(v1alpha, names("v1_services"), "{report:#}");
    let methods = names("screening_methods");
    assert!(
        methods.iter().any(|m| m == "Screen") && methods.iter().any(|m| m == "ScreenClip"),
        "{report:#}"
    );
}
