//! Parity of the WeSpeaker ResNet34 path (Kaldi fbank + CMN, ResNet encoder) with WeSpeaker on
//! PyTorch, on random weights saved in the published checkpoint format by
//! `tools/wespeaker_reference.py`.
//!
//! The fixture folder (`tests/fixtures/resnet34`, a reduced-width model; or
//! `$VOCALGUARD_RESNET34_FIXTURE`, e.g. a full-size one made by the script) holds
//! `avg_model.pt`, `reference.json` and `reference.safetensors`. The checkpoint goes through
//! the loader users hit (`convert_checkpoint`, safetensors bytes, `from_safetensors`); the
//! audio through `vocalguard::audio`.
//!
//! Features (`frames × 80` per file) are compared elementwise with the error
//! `|ours - reference| / max(|reference|, 1)`: relative where a value is at least 1 in size,
//! absolute near zero, where log energies cross zero and a relative error means nothing.
//! - Against torchaudio's `kaldi.fbank` code run in float64 (`fbank64`; mean-normalised here
//!   for the features): ≤ 1e-6, i.e. the same computation up to our f32 output rounding.
//! - Against WeSpeaker's float32 run (`fbank`, `features`): ours may differ only as much as
//!   that float32 run differs from its own float64 evaluation (plus 1e-6). Its float32
//!   rounding is large in quiet bands: up to 1.7e-3 in a log energy of 1.7 on a 15 s file.
//!
//! Embeddings: cosine ≥ 0.9999 and relative Euclidean difference ≤ 1e-3, end to end from our
//! features, and cosine ≥ 0.9999 with the encoder alone on WeSpeaker's features.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use vocalguard::audio::{self, DecodeLimits};
use vocalguard::encoder::resnet::{config_from_checkpoint, convert_checkpoint, ResNetEncoder};
use vocalguard::features::kaldi_fbank::{self, KaldiFbank, KaldiFbankConfig};

/// Elementwise error bound against the float64 evaluation of the reference's front end.
const MAX_FEATURE_ERROR: f64 = 1e-6;
const MIN_COSINE: f64 = 0.9999;
/// Embedding difference relative to its length.
const MAX_EMBEDDING_RELATIVE: f64 = 1e-3;

/// `|a - b| / max(|b|, 1)`.
fn element_error(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

/// Worst elementwise error of `ours` against `reference`, printed with where it occurs.
fn worst_error(file: &str, what: &str, ours: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "{file} {what}");
    let (at, error) = ours
        .iter()
        .zip(reference)
        .map(|(&a, &b)| element_error(f64::from(a), b))
        .enumerate()
        .fold((0, 0.0), |w, (k, e)| if e > w.1 { (k, e) } else { w });
    eprintln!(
        "{file} {what}: worst error {error:.3e} at value {at}: ours {} reference {}",
        ours[at], reference[at]
    );
    error
}

/// Values where ours is further from WeSpeaker's float32 value than WeSpeaker's float64
/// evaluation is (plus 1e-6): `(index, ours, float32, float64)`.
fn beyond_reference_rounding(
    ours: &[f32],
    f32_ref: &[f64],
    f64_ref: &[f64],
) -> Vec<(usize, f32, f64, f64)> {
    ours.iter()
        .zip(f32_ref.iter().zip(f64_ref))
        .enumerate()
        .filter(|&(_, (&a, (&r32, &r64)))| {
            element_error(f64::from(a), r32) > element_error(r64, r32) + MAX_FEATURE_ERROR
        })
        .map(|(k, (&a, (&r32, &r64)))| (k, a, r32, r64))
        .collect()
}

/// Subtracts each band's mean over the frames (`bins` values per frame).
fn mean_normalised(values: &[f64], bins: usize) -> Vec<f64> {
    let frames = values.len() / bins;
    let means: Vec<f64> = (0..bins)
        .map(|b| values.iter().skip(b).step_by(bins).sum::<f64>() / frames as f64)
        .collect();
    values
        .iter()
        .enumerate()
        .map(|(k, v)| v - means[k % bins])
        .collect()
}

/// Worst values over the files.
#[derive(Debug)]
struct Worst {
    /// Our fbank against the float64 reference.
    fbank64: f64,
    /// Our features against the mean-normalised float64 reference.
    features64: f64,
    /// Our fbank against WeSpeaker's float32 fbank (printed; bounded by its own rounding).
    fbank32: f64,
    /// Our features against WeSpeaker's float32 features (idem).
    features32: f64,
    /// WeSpeaker's float32 features against its float64 evaluation.
    reference_rounding: f64,
    cosine: f64,
    encoder_cosine: f64,
    /// `|ours - reference| / |reference|` of the embeddings, end to end.
    embedding_relative: f64,
}

/// `$VOCALGUARD_RESNET34_FIXTURE`, else the committed reduced fixture.
fn fixture_dir() -> PathBuf {
    match std::env::var_os("VOCALGUARD_RESNET34_FIXTURE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet34"),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// `|a - b| / |b|` (Euclidean norms): also catches a wrong scale, which a cosine ignores.
fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
    (diff / norm).sqrt()
}

fn embed(encoder: &ResNetEncoder, frames: usize, bins: usize, data: &[f32]) -> Vec<f32> {
    let feats = Tensor::from_slice(data, (1, frames, bins), &Device::Cpu).unwrap();
    encoder
        .forward(&feats)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn features_and_embeddings_match_wespeaker() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    let dir = fixture_dir();
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("reference.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
    )
    .unwrap();
    assert_eq!(
        meta["window_type"], "hamming",
        "the reference used another window"
    );

    // The published checkpoint format, through safetensors bytes, as a model is installed.
    let tensors = convert_checkpoint(&dir.join("avg_model.pt")).unwrap();
    let config = config_from_checkpoint(&tensors).unwrap();
    assert_eq!(
        config.m_channels as u64,
        meta["m_channels"].as_u64().unwrap()
    );
    assert_eq!(
        config.embed_dim as u64,
        meta["model_args"]["embed_dim"].as_u64().unwrap()
    );
    assert_eq!(config.feat_dim, 80);
    assert_eq!(config.num_blocks, [3, 4, 6, 3]);
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("model.safetensors");
    let named: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&named, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let encoder = ResNetEncoder::from_safetensors(config, &bytes, &Device::Cpu).unwrap();

    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let files = meta["files"].as_array().unwrap();
    assert!(!files.is_empty());
    let mut worst = Worst {
        fbank64: 0.0,
        features64: 0.0,
        fbank32: 0.0,
        features32: 0.0,
        reference_rounding: 0.0,
        cosine: 1.0,
        encoder_cosine: 1.0,
        embedding_relative: 0.0,
    };
    let fbank = KaldiFbank::new(KaldiFbankConfig::WESPEAKER).unwrap();
    for (i, entry) in files.iter().enumerate() {
        let file = entry["file"].as_str().unwrap();
        let num_samples = entry["num_samples"].as_u64().unwrap() as usize;
        let mut samples = audio::load_file(&data.join(file), &DecodeLimits::default())
            .unwrap()
            .samples;
        assert!(
            samples.len() >= num_samples,
            "{file}: {} samples",
            samples.len()
        );
        samples.truncate(num_samples);

        let ours_fbank = fbank.log_fbank(&samples);
        let ours = kaldi_fbank::features(&samples, &KaldiFbankConfig::WESPEAKER).unwrap();
        assert_eq!((ours.frames, ours.bins), (ours_fbank.frames, 80));
        let values = |name: &str| -> Vec<f64> {
            let t = &reference[&format!("{name}.{i}")];
            assert_eq!(t.dims(), &[ours.frames, ours.bins], "{file} {name}");
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (fbank32, features32, fbank64) =
            (values("fbank"), values("features"), values("fbank64"));
        let features64 = mean_normalised(&fbank64, ours.bins);
        worst.fbank64 = worst.fbank64.max(worst_error(
            file,
            "fbank vs float64",
            &ours_fbank.data,
            &fbank64,
        ));
        worst.features64 = worst.features64.max(worst_error(
            file,
            "features vs float64",
            &ours.data,
            &features64,
        ));
        worst.fbank32 = worst.fbank32.max(worst_error(
            file,
            "fbank vs float32",
            &ours_fbank.data,
            &fbank32,
        ));
        worst.features32 = worst.features32.max(worst_error(
            file,
            "features vs float32",
            &ours.data,
            &features32,
        ));
        worst.reference_rounding = features32
            .iter()
            .zip(&features64)
            .map(|(&r32, &r64)| element_error(r64, r32))
            .fold(worst.reference_rounding, f64::max);
        let beyond = beyond_reference_rounding(&ours_fbank.data, &fbank32, &fbank64);
        assert!(
            beyond.is_empty(),
            "{file} fbank: {:?}",
            &beyond[..beyond.len().min(5)]
        );
        let beyond = beyond_reference_rounding(&ours.data, &features32, &features64);
        assert!(
            beyond.is_empty(),
            "{file} features: {:?}",
            &beyond[..beyond.len().min(5)]
        );

        let expected_embedding: Vec<f32> = reference[&format!("embedding.{i}")].to_vec1().unwrap();
        assert_eq!(expected_embedding.len(), encoder.embedding_dim());
        // End to end from our features, and the encoder alone on WeSpeaker's features.
        let ours_embedding = embed(&encoder, ours.frames, ours.bins, &ours.data);
        let wespeaker_features: Vec<f32> = features32.iter().map(|&v| v as f32).collect();
        let end_to_end = cosine(&ours_embedding, &expected_embedding);
        let encoder_only = cosine(
            &embed(&encoder, ours.frames, ours.bins, &wespeaker_features),
            &expected_embedding,
        );
        worst.embedding_relative = worst
            .embedding_relative
            .max(relative_l2(&ours_embedding, &expected_embedding));
        worst.cosine = worst.cosine.min(end_to_end);
        worst.encoder_cosine = worst.encoder_cosine.min(encoder_only);
        eprintln!(
            "{file}: {} frames, cosine {end_to_end:.9} (encoder alone {encoder_only:.9})",
            ours.frames
        );
    }
    eprintln!(
        "{} ({} files, m_channels {}, embed_dim {}): {worst:?}",
        dir.display(),
        files.len(),
        config.m_channels,
        config.embed_dim
    );
    assert!(worst.fbank64 <= MAX_FEATURE_ERROR, "{worst:?}");
    assert!(worst.features64 <= MAX_FEATURE_ERROR, "{worst:?}");
    assert!(worst.cosine >= MIN_COSINE, "cosine {}", worst.cosine);
    assert!(
        worst.encoder_cosine >= MIN_COSINE,
        "encoder cosine {}",
        worst.encoder_cosine
    );
    assert!(
        worst.embedding_relative <= MAX_EMBEDDING_RELATIVE,
        "{worst:?}"
    );
}

#[test]
fn the_training_head_and_counters_are_dropped_and_names_kept() {
    let tensors = convert_checkpoint(&fixture_dir().join("avg_model.pt")).unwrap();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "names are sorted");
    assert!(names.iter().all(|n| !n.starts_with("projection.")));
    assert!(names.iter().all(|n| !n.ends_with("num_batches_tracked")));
    for name in [
        "conv1.weight",
        "bn1.running_var",
        "layer2.0.shortcut.0.weight",
        "seg_1.bias",
    ] {
        assert!(names.contains(&name), "{name} missing");
    }
}
