//! Parity with the reference GE2E implementation (Resemblyzer 0.1.4 on PyTorch), step by
//! step on the six fixture files and end to end on all of librispeech-mini.
//! The reference outputs and how they were made: `../shared/reference/ge2e-resemblyzer/README.md`.
//! The encoder runs on `VOCALGUARD_DEVICE` (default `cpu`), so that a build with the `cuda`
//! feature can be checked on a GPU: `VOCALGUARD_DEVICE=cuda cargo test --features cuda --test
//! ge2e_parity`.

mod common;

use vocalguard::audio::{self, level, vad::VoiceActivity, DecodeLimits};
use vocalguard::embed::{partial_starts, Embedder, Trim};
use vocalguard::encoder::{DeviceChoice, Precision, ResolveOptions, SpeakerModel};
use vocalguard::features::mel::MelSpectrogram;

fn embedder(trim: Trim) -> Embedder {
    embedder_in(trim, Precision::F32)
}

/// The device the encoder runs on: `VOCALGUARD_DEVICE`, else the CPU.
fn device() -> DeviceChoice {
    std::env::var("VOCALGUARD_DEVICE").map_or(DeviceChoice::Cpu, |d| d.parse().unwrap())
}

fn embedder_in(trim: Trim, precision: Precision) -> Embedder {
    let mut model =
        SpeakerModel::load_on("ge2e-resemblyzer", &ResolveOptions::default(), device()).unwrap();
    assert_eq!(model.set_precision(precision).unwrap(), precision);
    Embedder::new(model, DecodeLimits::default())
        .unwrap()
        .with_trim(trim)
}

/// Largest elementwise error relative to the reference value, ignoring values under
/// `floor` (where the reference's own float32 rounding dominates).
fn max_relative_error(ours: &[f32], reference: &[f64], floor: f64) -> f64 {
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .map(|(&a, &b)| (a as f64 - b).abs() / b.abs().max(floor))
        .fold(0.0, f64::max)
}

#[test]
fn mel_filterbank_matches_librosa() {
    let Some(reference) = common::ge2e_reference() else {
        return;
    };
    let expected = common::read_npy(&reference.join("fixtures/mel_filterbank_librosa.npy"));
    assert_eq!(expected.shape, vec![40, 201]);
    let model = SpeakerModel::load("ge2e-resemblyzer", &ResolveOptions::default()).unwrap();
    let mel = MelSpectrogram::new(model.card().ge2e().unwrap().frontend.mel().unwrap()).unwrap();
    let err = max_relative_error(mel.filterbank(), &expected.data, 1e-6);
    assert!(err < 1e-6, "filterbank relative error {err}");
}

#[test]
fn every_fixture_matches_step_by_step() {
    let (Some(data), Some(reference)) = (common::librispeech_mini(), common::ge2e_reference())
    else {
        return;
    };
    let fixtures = reference.join("fixtures");
    let mut tags: Vec<String> = std::fs::read_dir(&fixtures)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".json").map(str::to_string))
        .filter(|tag| tag != "index")
        .collect();
    tags.sort();
    assert_eq!(tags.len(), 7, "fixtures: {tags:?}");
    let trimmed = embedder(Trim::Silences);
    let untrimmed = embedder(Trim::Off);
    let frontend = trimmed.model().card().ge2e().unwrap().frontend;
    let mel = MelSpectrogram::new(frontend.mel().unwrap()).unwrap();
    for tag in &tags {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixtures.join(format!("{tag}.json"))).unwrap())
                .unwrap();
        let trim = meta["trim_silence"].as_bool().unwrap();
        let npy = |suffix: &str| common::read_npy(&fixtures.join(format!("{tag}_{suffix}.npy")));
        let file = data.join(meta["file"].as_str().unwrap());

        // Decode and level: the raw VAD decisions must agree window for window.
        let mut samples = audio::load_file(&file, &DecodeLimits::default())
            .unwrap()
            .samples;
        assert_eq!(
            samples.len() as u64,
            meta["raw_num_samples"].as_u64().unwrap(),
            "{tag}"
        );
        level::normalize_volume(&mut samples, frontend.target_dbfs, true);
        let activity = VoiceActivity::detect(&samples, 16_000, &frontend.vad()).unwrap();
        let flags: Vec<f64> = activity
            .raw_decisions()
            .iter()
            .map(|&f| f as u8 as f64)
            .collect();
        assert_eq!(
            flags,
            npy("vad_flags").data,
            "{tag}: raw VAD decisions differ"
        );

        // Preprocessed waveform.
        let wav = if trim {
            activity.trim(&samples)
        } else {
            samples
        };
        let expected_wav = npy("wav");
        assert_eq!(
            wav.len(),
            expected_wav.data.len(),
            "{tag}: preprocessed length"
        );
        let wav_err = max_relative_error(&wav, &expected_wav.data, 1e-3);
        assert!(wav_err < 1e-5, "{tag}: waveform relative error {wav_err}");

        // Mel of the padded waveform, exactly as embed_utterance computes it.
        let (starts, padded_len) = partial_starts(wav.len(), &frontend);
        let slices: Vec<[usize; 2]> = starts.iter().map(|&s| [s, s + 160]).collect();
        let expected_slices: Vec<[usize; 2]> =
            serde_json::from_value(meta["mel_slices"].clone()).unwrap();
        assert_eq!(slices, expected_slices, "{tag}: partial windows");
        let mut padded = wav.clone();
        padded.resize(padded_len.max(wav.len()), 0.0);
        let ours = mel.compute(&padded);
        let expected_mel = npy("mel_padded");
        assert_eq!(
            ours.len(),
            expected_mel.data.len(),
            "{tag}: mel shape {:?}",
            expected_mel.shape
        );
        let peak = expected_mel.data.iter().cloned().fold(0.0, f64::max);
        let mel_err = max_relative_error(&ours, &expected_mel.data, 1e-6 * peak);
        assert!(mel_err < 1e-4, "{tag}: mel relative error {mel_err}");

        // Partial embeddings and the utterance embedding.
        let pipeline = if trim { &trimmed } else { &untrimmed };
        let file_samples = audio::load_file(&file, &DecodeLimits::default())
            .unwrap()
            .samples;
        let prepared = pipeline.prepare_samples(file_samples).unwrap();
        assert_eq!(prepared.n_partials, slices.len());
        let partials = pipeline.embed_partials(&[&prepared]).unwrap().remove(0);
        let expected_partials = npy("partial_embeddings");
        for (i, (ours, theirs)) in partials
            .chunks(256)
            .zip(expected_partials.data.chunks(256))
            .enumerate()
        {
            let ours: Vec<f64> = ours.iter().map(|&x| x as f64).collect();
            let cos = common::cosine(&ours, theirs);
            assert!(cos >= 0.9999, "{tag}: partial {i} cosine {cos}");
        }
        let embedding = pipeline.embed_prepared(&[&prepared]).unwrap().remove(0);
        let expected = npy("embedding");
        let ours: Vec<f64> = embedding.vector.iter().map(|&x| x as f64).collect();
        let cos = common::cosine(&ours, &expected.data);
        let bound = if trim { 0.999 } else { 0.9999 };
        assert!(cos >= bound, "{tag}: embedding cosine {cos} < {bound}");
        eprintln!("{tag}: mel rel err {mel_err:.2e}, wav rel err {wav_err:.2e}, 1 - embedding cosine {:.2e}", 1.0 - cos);
    }
}

#[test]
fn all_of_librispeech_mini_matches_the_reference_embeddings() {
    all_files_match(Precision::F32, 0.9999);
}

/// The bfloat16 path (on CPUs with AVX512_BF16) stays within the 0.999.
#[test]
fn all_of_librispeech_mini_in_bfloat16_stays_close_to_the_reference() {
    if device() != DeviceChoice::Cpu || !std::arch::is_x86_feature_detected!("avx512bf16") {
        eprintln!("skipped: bfloat16 is a path of the CPU encoder on CPUs with AVX512_BF16");
        return;
    }
    all_files_match(Precision::Bf16, 0.999);
}

/// Embeds every file of librispeech-mini in `precision` and checks each against the
/// reference's embedding: cosine at least `bound`.
fn all_files_match(precision: Precision, bound: f64) {
    let (Some(data), Some(reference)) = (common::librispeech_mini(), common::ge2e_reference())
    else {
        return;
    };
    let lines =
        std::fs::read_to_string(reference.join("librispeech-mini-embeddings.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 351);
    let pipeline = embedder_in(Trim::Silences, precision);
    let mut worst = (1.0f64, String::new());
    for chunk in records.chunks(32) {
        let prepared: Vec<_> = chunk
            .iter()
            .map(|r| {
                pipeline
                    .prepare_file(&data.join(r["file"].as_str().unwrap()))
                    .unwrap()
            })
            .collect();
        let refs: Vec<_> = prepared.iter().collect();
        let embeddings = pipeline.embed_prepared(&refs).unwrap();
        for (record, (embedding, prep)) in chunk.iter().zip(embeddings.iter().zip(&prepared)) {
            let file = record["file"].as_str().unwrap();
            let expected_samples = record["preprocessed_num_samples"].as_u64().unwrap() as f64;
            assert_eq!(
                (prep.voiced_s * 16_000.0).round(),
                expected_samples,
                "{file}: trimmed length"
            );
            let theirs: Vec<f64> = serde_json::from_value(record["embedding"].clone()).unwrap();
            let ours: Vec<f64> = embedding.vector.iter().map(|&x| x as f64).collect();
            let cos = common::cosine(&ours, &theirs);
            if cos < worst.0 {
                worst = (cos, file.to_string());
            }
        }
    }
    eprintln!(
        "{precision}: worst cosine over 351 files: 1 - {:.2e} ({})",
        1.0 - worst.0,
        worst.1
    );
    assert!(
        worst.0 >= bound,
        "worst cosine {:.7} on {}",
        worst.0,
        worst.1
    );
}

#[test]
fn the_same_file_gives_the_same_embedding_alone_and_in_a_batch() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };
    let pipeline = embedder(Trim::Silences);
    let files = [
        "test-other/1688/1688-142285-0000.flac",
        "test-other/533/533-1066-0005.flac",
    ];
    let prepared: Vec<_> = files
        .iter()
        .map(|f| pipeline.prepare_file(&data.join(f)).unwrap())
        .collect();
    let together = pipeline
        .embed_prepared(&prepared.iter().collect::<Vec<_>>())
        .unwrap();
    for (file, batched) in files.iter().zip(&together) {
        let alone = pipeline.embed_file(&data.join(file)).unwrap();
        let cos = vocalguard::embed::cosine(&alone.vector, &batched.vector);
        assert!(cos > 0.99999, "{file}: {cos}");
    }
}
