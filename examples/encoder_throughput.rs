//! Throughput of a filterbank encoder at one thread: audio-seconds per wall-second of features
//! plus embedding, on the librispeech-mini files a reference folder lists, for comparison with
//! the reference toolkit's `--bench` on the same audio.
//!
//! The checkpoint is a published-format file made by the reference scripts: ECAPA-TDNN's
//! `embedding_model.ckpt` (`tools/speechbrain_reference.py --out /tmp/ecapa-full`) or
//! ResNet34's `avg_model.pt` (`tools/wespeaker_reference.py --out /tmp/resnet34-full`). It is
//! installed as users get it (checkpoint → safetensors bytes → encoder). The files and how many
//! samples of each to use come from `reference.json` beside it. Decoding is done before timing,
//! as in the scripts. Prints one JSON object with the best of `REPEATS` passes (default 3).
//!
//! ```sh
//! cargo run --release --example encoder_throughput -- ecapa /tmp/ecapa-full/embedding_model.ckpt [REPEATS]
//! cargo run --release --example encoder_throughput -- resnet34 /tmp/resnet34-full/avg_model.pt [REPEATS]
//! ```
//!
//! (librispeech-mini from `$VOCALGUARD_LIBRISPEECH_MINI`, else `../shared/data/librispeech-mini`)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use vocalguard::audio::{self, DecodeLimits};
use vocalguard::encoder::{ecapa, resnet};
use vocalguard::features::kaldi_fbank::{KaldiFbank, KaldiFbankConfig};
use vocalguard::features::sb_fbank::{self, SbFbankConfig};

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

/// One of the two encoders with its front end.
enum Model {
    Ecapa(ecapa::EcapaEncoder, SbFbankConfig),
    ResNet(resnet::ResNetEncoder, KaldiFbank),
}

impl Model {
    /// Loads `checkpoint` through safetensors bytes, as the conversion cache does.
    fn load(kind: &str, checkpoint: &Path) -> (Self, serde_json::Value) {
        let tensors = match kind {
            "ecapa" => ecapa::convert_checkpoint(checkpoint),
            "resnet34" => resnet::convert_checkpoint(checkpoint),
            other => panic!("unknown model {other:?}: ecapa or resnet34"),
        }
        .unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let weights = scratch.path().join("model.safetensors");
        let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
        candle_core::safetensors::save(&map, &weights).unwrap();
        let bytes = std::fs::read(&weights).unwrap();
        if kind == "ecapa" {
            let config = ecapa::config_from_checkpoint(&tensors).unwrap();
            let encoder =
                ecapa::EcapaEncoder::from_safetensors(config, &bytes, &Device::Cpu).unwrap();
            let shape = serde_json::json!({"channels": config.channels});
            (Self::Ecapa(encoder, SbFbankConfig::default()), shape)
        } else {
            let config = resnet::config_from_checkpoint(&tensors).unwrap();
            let encoder =
                resnet::ResNetEncoder::from_safetensors(config, &bytes, &Device::Cpu).unwrap();
            let fbank = KaldiFbank::new(KaldiFbankConfig::WESPEAKER).unwrap();
            let shape = serde_json::json!({"m_channels": config.m_channels});
            (Self::ResNet(encoder, fbank), shape)
        }
    }

    /// Features and embedding of one clip.
    fn embed(&self, samples: &[f32]) -> Tensor {
        let (frames, bins, data) = match self {
            Self::Ecapa(_, cfg) => {
                let f = sb_fbank::features(samples, cfg).expect("valid front end");
                (f.frames, f.bins, f.data)
            }
            Self::ResNet(_, fbank) => {
                let f = fbank.compute(samples);
                (f.frames, f.bins, f.data)
            }
        };
        let input = Tensor::from_vec(data, (1, frames, bins), &Device::Cpu).unwrap();
        match self {
            Self::Ecapa(encoder, _) => encoder.forward(&input),
            Self::ResNet(encoder, _) => encoder.forward(&input),
        }
        .unwrap()
    }
}

fn main() {
    // One thread for candle's matrix products (it reads this variable) and for rayon.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .unwrap();
    let usage = "usage: encoder_throughput ecapa|resnet34 CHECKPOINT [REPEATS] (reference.json beside CHECKPOINT)";
    let mut args = std::env::args().skip(1);
    let kind = args.next().expect(usage);
    let checkpoint = PathBuf::from(args.next().expect(usage));
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
    let (model, shape) = Model::load(&kind, &checkpoint);

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
    let audio_seconds = clips.iter().map(Vec::len).sum::<usize>() as f64 / 16_000.0;
    model.embed(&clips[0]); // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let start = Instant::now();
        for clip in &clips {
            model.embed(clip);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        serde_json::json!({
            "implementation": format!("vocalguard {kind} (candle)"),
            "threads": 1,
            "files": clips.len(),
            "audio_seconds": audio_seconds,
            "best_wall_seconds": best,
            "audio_seconds_per_wall_second": audio_seconds / best,
            "shape": shape,
        })
    );
}
