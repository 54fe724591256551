//! WeSpeaker ResNet34 throughput at one thread: audio-seconds per wall-second of Kaldi fbank
//! + CMN features plus embedding, on the librispeech-mini files a reference folder lists.
//!
//! The checkpoint is a WeSpeaker `avg_model.pt` (e.g. the full-size random one made by
//! `tools/wespeaker_reference.py --out /tmp/resnet34-full`); the files and how many samples of
//! each to use come from `reference.json` beside it, so the numbers compare with that script's
//! `--bench` on the same audio. Decoding happens before timing, as in the script. Prints one
//! JSON object with the best of `REPEATS` passes (default 3).
//!
//! `cargo run --release --example resnet34_throughput -- /tmp/resnet34-full/avg_model.pt [REPEATS]`
//! (librispeech-mini from `$VOCALGUARD_LIBRISPEECH_MINI`, else `../shared/data/librispeech-mini`)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use vocalguard::audio::{self, DecodeLimits};
use vocalguard::encoder::resnet::{config_from_checkpoint, convert_checkpoint, ResNetEncoder};
use vocalguard::features::kaldi_fbank::{KaldiFbank, KaldiFbankConfig};

/// The `vocalguard` binary's allocator, so that the numbers are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
struct Reference {
    files: Vec<FileEntry>,
}

#[derive(Deserialize)]
struct FileEntry {
    file: String,
    num_samples: usize,
}

fn main() {
    // One thread for candle's matrix products (it reads this variable) and for rayon.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .unwrap();
    let mut args = std::env::args().skip(1);
    let checkpoint = PathBuf::from(args.next().expect(
        "usage: resnet34_throughput CHECKPOINT [REPEATS] (reference.json beside CHECKPOINT)",
    ));
    let repeats: usize = args.next().map_or(3, |r| r.parse().expect("REPEATS"));
    let data = std::env::var_os("VOCALGUARD_LIBRISPEECH_MINI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/librispeech-mini")
        });
    let reference_json = checkpoint.with_file_name("reference.json");
    let reference: Reference = serde_json::from_slice(
        &std::fs::read(&reference_json)
            .unwrap_or_else(|e| panic!("{}: {e}", reference_json.display())),
    )
    .unwrap();

    // Installed as users get it: checkpoint -> safetensors bytes -> encoder.
    let tensors = convert_checkpoint(&checkpoint).unwrap();
    let config = config_from_checkpoint(&tensors).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let weights = scratch.path().join("model.safetensors");
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, &weights).unwrap();
    let encoder =
        ResNetEncoder::from_safetensors(config, &std::fs::read(&weights).unwrap(), &Device::Cpu)
            .unwrap();
    let fbank = KaldiFbank::new(KaldiFbankConfig::WESPEAKER).unwrap();

    let clips: Vec<Vec<f32>> = reference
        .files
        .iter()
        .map(|entry| {
            let mut samples = audio::load_file(&data.join(&entry.file), &DecodeLimits::default())
                .unwrap_or_else(|e| panic!("{}: {e}", entry.file))
                .samples;
            samples.truncate(entry.num_samples);
            samples
        })
        .collect();
    let audio_seconds = clips.iter().map(|c| c.len()).sum::<usize>() as f64 / 16_000.0;

    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let start = Instant::now();
        for clip in &clips {
            let feats = fbank.compute(clip);
            let input =
                Tensor::from_vec(feats.data, (1, feats.frames, feats.bins), &Device::Cpu).unwrap();
            let embedding = encoder.forward(&input).unwrap();
            assert_eq!(embedding.dims(), &[1, encoder.embedding_dim()]);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        serde_json::json!({
            "implementation": "vocalguard ResNet34 (candle)",
            "threads": 1,
            "m_channels": config.m_channels,
            "files": clips.len(),
            "audio_seconds": audio_seconds,
            "best_wall_seconds": best,
            "audio_seconds_per_wall_second": audio_seconds / best,
        })
    );
}
