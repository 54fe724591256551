//! Parity of the built-in CAM++ (`campplus-zh-en`: Kaldi fbank + mean normalisation, CAM++
//! encoder, the real published weights) with 3D-Speaker's own code on PyTorch, as
//! `tools/campplus_reference.py` records it.
//!
//! The fixture folder (`tests/fixtures/campplus`: three 4 s excerpts; or
//! `$VOCALGUARD_CAMPPLUS_FIXTURE`, e.g. a full run over all of librispeech-mini made by the
//! script) holds `reference.json` and `reference.safetensors`. The model is the one compiled
//! into the binary, loaded the way every front door loads it.
//!
//! - Features (`frames × 80`), elementwise `|ours - reference| / max(|reference|, 1)`: at most
//!   1e-6 against the float64 evaluation of the reference's filterbank (`fbank64`), and against
//!   its float32 run at most 1e-4 further than that run is from its own float64 evaluation
//!   (its rounding reaches a few 1e-4 in quiet bands, where ours, computed in f64, does not).
//! - Embeddings: cosine ≥ 0.9999 end to end from our features and with the encoder alone on
//!   the reference's features, and through the real binary (`vocalguard embed --no-trim` on a
//!   WAV of the same samples).

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use vocalguard::audio::{self, DecodeLimits};
use vocalguard::encoder::{Architecture, ResolveOptions, SpeakerModel};
use vocalguard::features::kaldi_fbank::{self, KaldiFbank};

const MODEL: &str = "campplus-zh-en";
const MAX_FEATURE_ERROR_F32: f64 = 1e-4;
const MAX_FEATURE_ERROR_F64: f64 = 1e-6;
const MIN_COSINE: f64 = 0.9999;

/// `$VOCALGUARD_CAMPPLUS_FIXTURE`, else the committed fixture.
fn fixture_dir() -> PathBuf {
    match std::env::var_os("VOCALGUARD_CAMPPLUS_FIXTURE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/campplus"),
    }
}

/// `|a - b| / max(|b|, 1)`.
fn element_error(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

/// Worst [`element_error`] of `ours` against `reference`.
fn worst_error(ours: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .map(|(&a, &b)| element_error(f64::from(a), b))
        .fold(0.0, f64::max)
}

/// Worst excess of our error against the float32 reference over that reference's own error
/// against its float64 evaluation.
fn beyond_reference_rounding(ours: &[f32], f32_ref: &[f64], f64_ref: &[f64]) -> f64 {
    ours.iter()
        .zip(f32_ref.iter().zip(f64_ref))
        .map(|(&a, (&r32, &r64))| element_error(f64::from(a), r32) - element_error(r64, r32))
        .fold(0.0, f64::max)
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

fn embed(model: &SpeakerModel, frames: usize, data: &[f32]) -> Vec<f32> {
    let feats = Tensor::from_slice(data, (1, frames, 80), &Device::Cpu).unwrap();
    model
        .embed_partials(&feats)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Writes `samples` (16-bit values / 32768, as decoded) as a 16 kHz 16-bit WAV.
fn write_wav(path: &std::path::Path, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        let v = (s * 32768.0).round();
        assert_eq!(v / 32768.0, s, "a decoded sample is not a 16-bit value");
        w.write_sample(v as i16).unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn features_and_embeddings_match_3d_speaker() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    let dir = fixture_dir();
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("reference.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
    )
    .unwrap();
    let model = SpeakerModel::load(MODEL, &ResolveOptions::default()).unwrap();
    assert_eq!(
        meta["weights_sha256"].as_str().unwrap(),
        model.id().sha256,
        "the fixture was made with other weights"
    );
    let Architecture::Campp(card) = &model.card().architecture else {
        panic!("{MODEL} is not a CAM++ card");
    };
    assert_eq!(
        meta["waveform_scale"].as_f64(),
        Some(card.frontend.waveform_scale)
    );
    let fbank = KaldiFbank::new(card.frontend).unwrap();
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let files = meta["files"].as_array().unwrap();
    assert!(!files.is_empty());
    let (mut features32, mut features64) = (0f64, 0f64);
    let (mut end_to_end, mut encoder_only, mut binary) = (1f64, 1f64, 1f64);
    for (i, entry) in files.iter().enumerate() {
        let file = entry["file"].as_str().unwrap();
        let num_samples = entry["num_samples"].as_u64().unwrap() as usize;
        let mut samples = audio::load_file(&data.join(file), &DecodeLimits::default())
            .unwrap()
            .samples;
        assert!(samples.len() >= num_samples, "{file}");
        samples.truncate(num_samples);

        let ours_fbank = fbank.log_fbank(&samples);
        let ours = kaldi_fbank::features(&samples, &card.frontend).unwrap();
        let values = |name: &str| -> Option<Vec<f64>> {
            let t = reference.get(&format!("{name}.{i}"))?;
            assert_eq!(t.dims(), &[ours.frames, ours.bins], "{file} {name}");
            Some(
                t.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            )
        };
        let reference_features = values("features").unwrap();
        let fbank64 = values("fbank64").expect("the fixture holds fbank64");
        features64 = features64.max(worst_error(&ours_fbank.data, &fbank64));
        features32 = features32.max(beyond_reference_rounding(
            &ours_fbank.data,
            &values("fbank").unwrap(),
            &fbank64,
        ));

        let expected: Vec<f32> = reference[&format!("embedding.{i}")].to_vec1().unwrap();
        let ours_embedding = embed(&model, ours.frames, &ours.data);
        let theirs: Vec<f32> = reference_features.iter().map(|&v| v as f32).collect();
        let e2e = cosine(&ours_embedding, &expected);
        let enc = cosine(&embed(&model, ours.frames, &theirs), &expected);

        let wav = scratch.path().join(format!("{i}.wav"));
        write_wav(&wav, &samples);
        let out = common::run_vocalguard(&[
            "embed",
            "--model",
            MODEL,
            "--no-trim",
            "--threads",
            "2",
            wav.to_str().unwrap(),
        ]);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["model"], MODEL);
        let through_binary: Vec<f32> = line["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let bin = cosine(&through_binary, &expected);
        eprintln!(
            "{file}: {} frames, cosine {e2e:.9} (encoder alone {enc:.9}, binary {bin:.9})",
            ours.frames
        );
        end_to_end = end_to_end.min(e2e);
        encoder_only = encoder_only.min(enc);
        binary = binary.min(bin);
    }
    eprintln!(
        "{} ({} files): worst feature error {features64:.2e} vs float64, {features32:.2e} beyond the float32 run's own rounding; worst cosine {end_to_end:.9} end to end, {encoder_only:.9} encoder alone, {binary:.9} through the binary",
        dir.display(),
        files.len()
    );
    assert!(
        features32 <= MAX_FEATURE_ERROR_F32,
        "features vs float32 {features32}"
    );
    assert!(
        features64 <= MAX_FEATURE_ERROR_F64,
        "features vs float64 {features64}"
    );
    assert!(end_to_end >= MIN_COSINE, "cosine {end_to_end}");
    assert!(encoder_only >= MIN_COSINE, "encoder cosine {encoder_only}");
    assert!(binary >= MIN_COSINE, "binary cosine {binary}");
}
