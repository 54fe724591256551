//! Models converted from published checkpoints, through the code users hit: a hub repo in a
//! local Hugging Face cache (offline), hash verification and pinning, the conversion cache,
//! the registry's one-model check, the `Embedder` path against the reference, and the binary
//! (`embed`, `models convert`, `serve`) with a model directory.
//!
//! The checkpoints are the committed reduced-width fixtures (`tests/fixtures/ecapa/`,
//! `tests/fixtures/resnet34/`), in the published formats and tensor names.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vocalguard::audio::{self, DecodeLimits};
use vocalguard::embed::{cosine, Embedder, Trim, WindowConfig};
use vocalguard::encoder::convert::sha256_file;
use vocalguard::encoder::{ModelError, ModelId, ResolveOptions, SpeakerModel};
use vocalguard::registry::{EnrollmentPolicy, Registry, RegistryError};

/// One reduced-width fixture: its folder, checkpoint file, architecture and card sections.
struct Fixture {
    dir: &'static str,
    checkpoint: &'static str,
    architecture: &'static str,
    frontend: serde_json::Value,
}

fn ecapa() -> Fixture {
    Fixture {
        dir: "tests/fixtures/ecapa",
        checkpoint: "embedding_model.ckpt",
        architecture: "ecapa-tdnn",
        frontend: builtin_card("ecapa-tdnn-voxceleb")["frontend"].clone(),
    }
}

fn resnet() -> Fixture {
    Fixture {
        dir: "tests/fixtures/resnet34",
        checkpoint: "avg_model.pt",
        architecture: "resnet34",
        frontend: builtin_card("wespeaker-resnet34")["frontend"].clone(),
    }
}

fn builtin_card(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("models/{name}/model.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

impl Fixture {
    fn checkpoint_path(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(self.dir)
            .join(self.checkpoint)
    }

    fn reference(&self) -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(self.dir)
            .join("reference.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The embedding size of the fixture, from its reference record.
    fn embedding_dim(&self) -> usize {
        let tensors = candle_core::safetensors::load(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(self.dir)
                .join("reference.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        tensors["embedding.0"].dims1().unwrap()
    }

    /// A card for the fixture checkpoint, lying beside it, with `sha256` as its hash.
    fn card(&self, name: &str, sha256: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "architecture": self.architecture,
            "embedding_dim": self.embedding_dim(),
            "checkpoint": { "file": self.checkpoint, "sha256": sha256 },
            "frontend": self.frontend,
            "trim": { "target_dbfs": -30.0, "vad": { "window_ms": 30, "mode": 3, "moving_average_width": 8, "max_silence_windows": 6 } },
            "source": "reduced-width random fixture",
            "license": "Apache-2.0",
        })
    }

    /// A model directory (card + checkpoint) at `dir`.
    fn model_dir(&self, dir: &Path, sha256: Option<&str>) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(self.checkpoint_path(), dir.join(self.checkpoint)).unwrap();
        let card = self.card("fixture-model", sha256);
        std::fs::write(
            dir.join("model.json"),
            serde_json::to_vec_pretty(&card).unwrap(),
        )
        .unwrap();
        dir.to_path_buf()
    }

    fn sha256(&self) -> String {
        sha256_file(&self.checkpoint_path()).unwrap()
    }
}

/// Lays out hub repo `owner/name` in the Hugging Face cache `cache` as hf-hub does
/// (`models--owner--name/refs/main`, `snapshots/<commit>/…`) holding the fixture's card and
/// checkpoint.
fn hub_repo(cache: &Path, repo: &str, fixture: &Fixture, sha256: Option<&str>) -> PathBuf {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = fixture.model_dir(&root.join("snapshots").join(commit), sha256);
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), commit).unwrap();
    snapshot
}

fn offline(cache: &Path) -> ResolveOptions {
    ResolveOptions {
        offline: true,
        cache_dir: Some(cache.to_path_buf()),
        converted_dir: None,
    }
}

fn load(spec: &str, options: &ResolveOptions) -> Result<SpeakerModel, ModelError> {
    SpeakerModel::load(spec, options)
}

#[test]
fn a_hub_checkpoint_is_converted_once_then_reused() {
    for fixture in [ecapa(), resnet()] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("hub");
        hub_repo(
            &cache,
            "vocalguard-test/mini",
            &fixture,
            Some(&fixture.sha256()),
        );

        let first = load("vocalguard-test/mini", &offline(&cache)).unwrap();
        assert_eq!(first.id().name, "fixture-model");
        assert_eq!(
            first.id().sha256,
            fixture.sha256(),
            "identity is the checkpoint's hash"
        );
        let converted = first.converted_weights().unwrap().clone();
        assert!(!converted.reused, "{}", fixture.architecture);
        assert!(converted
            .path
            .starts_with(cache.join("vocalguard-converted")));
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(converted.path.with_extension("json")).unwrap())
                .unwrap();
        assert_eq!(record["checkpoint_sha256"], fixture.sha256().as_str());
        assert_eq!(
            record["safetensors_sha256"],
            sha256_file(&converted.path).unwrap().as_str()
        );

        let second = load("vocalguard-test/mini", &offline(&cache)).unwrap();
        let again = second.converted_weights().unwrap();
        assert!(again.reused, "{}", fixture.architecture);
        assert_eq!(again.path, converted.path);
        assert_eq!(second.id(), first.id());
        let leftovers: Vec<_> = std::fs::read_dir(cache.join("vocalguard-converted"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn a_conversion_that_no_longer_matches_its_record_is_made_again() {
    let fixture = ecapa();
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture.model_dir(&tmp.path().join("model"), Some(&fixture.sha256()));
    let options = offline(&tmp.path().join("hub"));
    let first = load(dir.to_str().unwrap(), &options).unwrap();
    let path = first.converted_weights().unwrap().path.clone();
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    std::fs::write(&path, bad).unwrap();
    let second = load(dir.to_str().unwrap(), &options).unwrap();
    assert!(!second.converted_weights().unwrap().reused);
    assert_eq!(std::fs::read(&path).unwrap(), good);
}

#[test]
fn a_corrupted_checkpoint_is_refused_with_the_hash_error() {
    let fixture = ecapa();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let snapshot = hub_repo(
        &cache,
        "vocalguard-test/mini",
        &fixture,
        Some(&fixture.sha256()),
    );
    let path = snapshot.join(fixture.checkpoint);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = load("vocalguard-test/mini", &offline(&cache))
        .err()
        .unwrap();
    match &err {
        ModelError::HashMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &fixture.sha256());
            assert_ne!(actual, expected);
        }
        other => panic!("expected HashMismatch, got {other}"),
    }
    assert!(
        !cache.join("vocalguard-converted").exists(),
        "nothing is converted from a refused checkpoint"
    );
}

#[test]
fn without_a_published_hash_the_first_checkpoint_is_pinned() {
    let fixture = ecapa();
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture.model_dir(&tmp.path().join("model"), None);
    let options = offline(&tmp.path().join("hub"));
    let model = load(dir.to_str().unwrap(), &options).unwrap();
    assert_eq!(model.id().sha256, fixture.sha256());
    let pin = tmp
        .path()
        .join("hub/vocalguard-converted/fixture-model.pin");
    assert_eq!(
        std::fs::read_to_string(&pin).unwrap().trim(),
        fixture.sha256()
    );
    assert!(load(dir.to_str().unwrap(), &options).is_ok());

    let mut bytes = std::fs::read(dir.join(fixture.checkpoint)).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(dir.join(fixture.checkpoint), bytes).unwrap();
    match load(dir.to_str().unwrap(), &options).err().unwrap() {
        ModelError::PinMismatch { pinned, actual, .. } => {
            assert_eq!(pinned, fixture.sha256());
            assert_ne!(actual, pinned);
        }
        other => panic!("expected PinMismatch, got {other}"),
    }
}

#[test]
fn a_card_of_an_unknown_architecture_lists_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut card = ecapa().card("x", None);
    card["architecture"] = "wav2vec2".into();
    std::fs::write(
        tmp.path().join("model.json"),
        serde_json::to_vec(&card).unwrap(),
    )
    .unwrap();
    let err = load(tmp.path().to_str().unwrap(), &offline(tmp.path()))
        .err()
        .unwrap();
    assert!(matches!(err, ModelError::UnsupportedArchitecture { .. }));
    let msg = err.to_string();
    for id in ["wav2vec2", "ge2e-lstm", "ecapa-tdnn", "resnet34"] {
        assert!(msg.contains(id), "{msg}");
    }
}

#[test]
fn a_registry_built_with_ge2e_refuses_ecapa() {
    let fixture = ecapa();
    let tmp = tempfile::tempdir().unwrap();
    let ge2e = SpeakerModel::load("ge2e-resemblyzer", &ResolveOptions::default()).unwrap();
    let data = tmp.path().join("registry");
    drop(Registry::open(&data, ge2e.id(), 256, EnrollmentPolicy::default()).unwrap());
    let dir = fixture.model_dir(&tmp.path().join("model"), Some(&fixture.sha256()));
    let model = load(dir.to_str().unwrap(), &offline(&tmp.path().join("hub"))).unwrap();
    let ecapa_id: &ModelId = model.id();
    match Registry::open(
        &data,
        ecapa_id,
        model.embedding_dim(),
        EnrollmentPolicy::default(),
    ) {
        Err(RegistryError::ModelMismatch {
            registry, loaded, ..
        }) => {
            assert_eq!(&registry, ge2e.id());
            assert_eq!(&loaded, ecapa_id);
        }
        Err(other) => panic!("expected ModelMismatch, got {other}"),
        Ok(_) => panic!("a GE2E registry opened with ECAPA"),
    }
}

/// The first `num_samples` samples of the fixture's first file, as the reference used them.
fn reference_audio(data: &Path, fixture: &Fixture) -> (Vec<f32>, usize) {
    let reference = fixture.reference();
    let entry = &reference["files"][0];
    let file = data.join(entry["file"].as_str().unwrap());
    let mut samples = audio::load_file(&file, &DecodeLimits::default())
        .unwrap()
        .samples;
    samples.truncate(entry["num_samples"].as_u64().unwrap() as usize);
    (samples, entry["frames"].as_u64().unwrap() as usize)
}

#[test]
fn the_embedder_path_equals_the_reference_on_a_fixture_file() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    for fixture in [ecapa(), resnet()] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fixture.model_dir(&tmp.path().join("model"), Some(&fixture.sha256()));
        let model = load(dir.to_str().unwrap(), &offline(&tmp.path().join("hub"))).unwrap();
        let embedder = Embedder::new(model, DecodeLimits::default())
            .unwrap()
            .with_trim(Trim::Off);
        let (samples, _) = reference_audio(&data, &fixture);
        let prepared = embedder.prepare_samples(samples).unwrap();
        assert_eq!(prepared.n_partials, 1, "one input: the whole utterance");
        let ours = embedder.embed_prepared(&[&prepared]).unwrap().remove(0);
        let expected = candle_core::safetensors::load(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(fixture.dir)
                .join("reference.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap()["embedding.0"]
            .to_vec1::<f32>()
            .unwrap();
        let norm: f32 = ours.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "unit norm, got {norm}");
        let cos = cosine(&ours.vector, &expected);
        eprintln!(
            "{}: Embedder vs reference cosine 1 - {:.2e}",
            fixture.architecture,
            1.0 - cos
        );
        assert!(cos >= 0.9999, "{}: cosine {cos}", fixture.architecture);
    }
}

#[test]
fn screening_windows_are_embedded_one_by_one_in_their_place() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    let fixture = ecapa();
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture.model_dir(&tmp.path().join("model"), Some(&fixture.sha256()));
    let model = load(dir.to_str().unwrap(), &offline(&tmp.path().join("hub"))).unwrap();
    let embedder = Embedder::new(model, DecodeLimits::default()).unwrap();
    let file = data.join(fixture.reference()["files"][0]["file"].as_str().unwrap());
    let samples = audio::load_file(&file, &DecodeLimits::default())
        .unwrap()
        .samples;
    let config = WindowConfig {
        window_s: 3.0,
        hop_s: 1.5,
    };
    let track = embedder.embed_windows(samples, &config).unwrap();
    assert!((track.window_s - 3.0).abs() < 1e-9 && (track.hop_s - 1.5).abs() < 1e-9);
    assert!(track.windows.len() >= 2, "{} windows", track.windows.len());
    assert_eq!(track.n_partials, track.windows.len());
    for w in &track.windows {
        assert!((w.voiced.end - w.voiced.start - 3.0).abs() < 1e-9);
        assert!(w.voiced.end <= track.voiced_s + 1e-9);
        let covered: f64 = w.spans.iter().map(|s| s.end - s.start).sum();
        assert!((covered - 3.0).abs() < 1e-6, "spans cover the window");
        assert!(w.spans.iter().all(|s| s.end <= track.duration_s + 1e-9));
    }
    assert!((track.windows.last().unwrap().voiced.end - track.voiced_s).abs() < 1e-9);

    // A window's embedding is that of its samples alone: embed the first window directly.
    let first = &track.windows[0];
    let direct_samples: Vec<f32> = {
        let all = audio::load_file(&file, &DecodeLimits::default())
            .unwrap()
            .samples;
        first
            .spans
            .iter()
            .flat_map(|s| {
                all[(s.start * 16_000.0).round() as usize..(s.end * 16_000.0).round() as usize]
                    .to_vec()
            })
            .collect()
    };
    let id = embedder.model_id().clone();
    let untrimmed = Embedder::new(
        load(dir.to_str().unwrap(), &offline(&tmp.path().join("hub"))).unwrap(),
        DecodeLimits::default(),
    )
    .unwrap()
    .with_trim(Trim::Off);
    assert_eq!(untrimmed.model_id(), &id);
    let alone = untrimmed
        .embed_prepared(&[&untrimmed.prepare_samples(direct_samples).unwrap()])
        .unwrap()
        .remove(0);
    let cos = cosine(&alone.vector, &first.embedding);
    assert!(cos > 0.99999, "window vs its samples alone: {cos}");
}

/// Runs the binary with `HF_HUB_CACHE` set to `cache` and no model from the environment.
fn vocalguard(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vocalguard"))
        .args(args)
        .env_remove("VOCALGUARD_MODEL")
        .env_remove("HF_HOME")
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

#[test]
fn the_binary_embeds_converts_and_serves_with_a_model_directory() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    for fixture in [ecapa(), resnet()] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("hub");
        let dir = fixture.model_dir(&tmp.path().join("model"), Some(&fixture.sha256()));
        let model = dir.to_str().unwrap();
        let file = data.join(fixture.reference()["files"][0]["file"].as_str().unwrap());

        let out = vocalguard(&["models", "convert", "--model", model], &cache);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let converted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(converted["checkpoint_sha256"], fixture.sha256().as_str());
        assert_eq!(converted["architecture"], fixture.architecture);
        assert_eq!(converted["reused"], false);

        let out = vocalguard(&["embed", file.to_str().unwrap(), "--model", model], &cache);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(line["model"], "fixture-model");
        assert_eq!(line["model_sha256"], fixture.sha256().as_str());
        assert_eq!(line["dim"], fixture.embedding_dim());

        let server = common::server::ServerProcess::start_with_env(
            &tmp.path().join("data"),
            &["--model", model],
            &[
                ("HF_HUB_CACHE", cache.to_str().unwrap()),
                ("HF_HUB_OFFLINE", "1"),
            ],
        );
        let status = server.terminate();
        assert!(status.success(), "{status}");
    }
}

#[test]
fn models_list_names_every_builtin_with_its_hash_situation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vocalguard(&["models", "list", "--json"], tmp.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "ge2e-resemblyzer",
            "campplus-zh-en",
            "ecapa-tdnn-voxceleb",
            "wespeaker-resnet34"
        ]
    );
    assert_eq!(
        lines[1]["sha256"],
        "2ed2fdcf0ce9d603e88ef4a9c494d6817c9870cdbbe11437b730b2c14cba5034"
    );
    assert_eq!(
        lines[2]["sha256"],
        "0575cb64845e6b9a10db9bcb74d5ac32b326b8dc90352671d345e2ee3d0126a2"
    );
    assert!(lines[3]["sha256"].is_null());
    assert!(lines[2]["converted"].is_null());
}
