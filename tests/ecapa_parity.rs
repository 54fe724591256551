//! Parity of the ECAPA-TDNN path with SpeechBrain (`speechbrain/spkrec-ecapa-voxceleb`'s
//! front end and `ECAPA_TDNN`), on a random-weight checkpoint in the published format.
//!
//! The fixture folder (default `tests/fixtures/ecapa`, or `$VOCALGUARD_ECAPA_FIXTURE`, e.g. a
//! full-size folder made by `tools/speechbrain_reference.py`) holds `embedding_model.ckpt`,
//! `reference.json` (the librispeech-mini files and how many samples of each were used) and
//! `reference.safetensors` (SpeechBrain's features and embeddings). The checkpoint goes
//! through the loader users hit: `convert_checkpoint` → safetensors file → `from_safetensors`.
//!
//! Feature error is `max |ours - reference| / max |reference|` over each file (the features
//! are mean-normalised dB values, so an elementwise relative error is meaningless near zero);
//! it must stay within 1e-4. Embeddings, computed from our own features, must reach cosine
//! 0.9999 with the reference and the same norm within 1e-3.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use vocalguard::audio::{self, DecodeLimits};
use vocalguard::encoder::ecapa::{config_from_checkpoint, convert_checkpoint, EcapaEncoder};
use vocalguard::features::sb_fbank::{features, SbFbankConfig};

#[derive(Deserialize)]
struct Reference {
    model_args: ModelArgs,
    files: Vec<FileEntry>,
}

#[derive(Deserialize)]
struct ModelArgs {
    input_size: usize,
    channels: [usize; 5],
    kernel_sizes: [usize; 5],
    dilations: [usize; 5],
    attention_channels: usize,
    res2net_scale: usize,
    se_channels: usize,
    lin_neurons: usize,
    global_context: bool,
}

#[derive(Deserialize)]
struct FileEntry {
    file: String,
    num_samples: usize,
    frames: usize,
}

fn fixture_dir() -> PathBuf {
    std::env::var_os("VOCALGUARD_ECAPA_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ecapa"))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    dot / (norm(a) * norm(b))
}

fn norm(a: &[f32]) -> f64 {
    a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The fixture checkpoint loaded as a user's converted model is: published checkpoint →
/// `convert_checkpoint` → safetensors file → `from_safetensors`.
fn load_encoder(dir: &std::path::Path, expected: &ModelArgs) -> EcapaEncoder {
    let tensors = convert_checkpoint(&dir.join("embedding_model.ckpt")).unwrap();
    assert!(tensors
        .iter()
        .all(|(n, _)| !n.contains("num_batches_tracked")));
    let config = config_from_checkpoint(&tensors).unwrap();
    assert_eq!(config.input_size, expected.input_size);
    assert_eq!(config.channels, expected.channels);
    assert_eq!(config.kernel_sizes, expected.kernel_sizes);
    assert_eq!(config.dilations, expected.dilations);
    assert_eq!(config.attention_channels, expected.attention_channels);
    assert_eq!(config.res2net_scale, expected.res2net_scale);
    assert_eq!(config.se_channels, expected.se_channels);
    assert_eq!(config.lin_neurons, expected.lin_neurons);
    assert_eq!(config.global_context, expected.global_context);
    let cache = tempfile::tempdir().unwrap();
    let path = cache.path().join("model.safetensors");
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    EcapaEncoder::from_safetensors(config, &bytes, &Device::Cpu).unwrap()
}

#[test]
fn features_and_embeddings_match_speechbrain() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    let dir = fixture_dir();
    let reference: Reference =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let expected =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let encoder = load_encoder(&dir, &reference.model_args);
    assert_eq!(encoder.embedding_dim(), reference.model_args.lin_neurons);
    let cfg = SbFbankConfig::default();
    assert!(!reference.files.is_empty());

    let mut reference_embeddings = Vec::new();
    let (mut worst_feature, mut lowest_cosine, mut lowest_encoder_cosine) = (0f64, 1f64, 1f64);
    for (i, entry) in reference.files.iter().enumerate() {
        let mut samples = audio::load_file(&data.join(&entry.file), &DecodeLimits::default())
            .unwrap()
            .samples;
        assert!(samples.len() >= entry.num_samples, "{}", entry.file);
        samples.truncate(entry.num_samples);

        let ours = features(&samples, &cfg).unwrap();
        let theirs = to_vec(&expected[&format!("features.{i}")]);
        assert_eq!(
            (ours.frames, ours.bins),
            (entry.frames, cfg.n_mels),
            "{}",
            entry.file
        );
        let scale = theirs.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        let err = ours
            .data
            .iter()
            .zip(&theirs)
            .map(|(&a, &b)| (a as f64 - b as f64).abs())
            .fold(0.0, f64::max)
            / scale;
        assert!(err <= 1e-4, "{}: feature error {err:e}", entry.file);
        worst_feature = worst_feature.max(err);

        let reference_embedding = to_vec(&expected[&format!("embedding.{i}")]);
        let input = Tensor::from_vec(ours.data, (1, ours.frames, ours.bins), &Device::Cpu).unwrap();
        let embedding = to_vec(&encoder.forward(&input).unwrap());
        let cos = cosine(&embedding, &reference_embedding);
        let norm_ratio = norm(&embedding) / norm(&reference_embedding);
        assert!(cos >= 0.9999, "{}: cosine {cos}", entry.file);
        assert!(
            (norm_ratio - 1.0).abs() < 1e-3,
            "{}: norm ratio {norm_ratio}",
            entry.file
        );
        lowest_cosine = lowest_cosine.min(cos);

        // The encoder alone, on SpeechBrain's own features.
        let input = expected[&format!("features.{i}")].unsqueeze(0).unwrap();
        let cos = cosine(
            &to_vec(&encoder.forward(&input).unwrap()),
            &reference_embedding,
        );
        assert!(cos >= 0.9999, "{}: encoder-only cosine {cos}", entry.file);
        lowest_encoder_cosine = lowest_encoder_cosine.min(cos);
        reference_embeddings.push(reference_embedding);
    }
    // A fixture whose embeddings barely depend on the input would prove little: files (of
    // different speakers, mostly) must not all look alike.
    let mut between_files = Vec::new();
    for (a, ea) in reference_embeddings.iter().enumerate() {
        for eb in &reference_embeddings[a + 1..] {
            between_files.push(cosine(ea, eb));
        }
    }
    let mean_between_files = between_files.iter().sum::<f64>() / between_files.len().max(1) as f64;
    let highest_between_files = between_files.iter().copied().fold(-1.0, f64::max);
    assert!(
        mean_between_files < 0.95,
        "reference embeddings of different files have mean cosine {mean_between_files}"
    );
    eprintln!(
        "{} files from {}: worst feature error {worst_feature:.3e}, lowest cosine 1 - {:.3e} \
         (encoder alone 1 - {:.3e}), cosine between files mean {mean_between_files:.4}, highest {highest_between_files:.4}",
        reference.files.len(),
        dir.display(),
        1.0 - lowest_cosine,
        1.0 - lowest_encoder_cosine
    );
}
