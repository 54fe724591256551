//! `vocalguard bench`: end-to-end embedding throughput (decode → embedding) over a folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Folder searched recursively for audio files (.flac, .wav, .mp3, .ogg, .m4a).
    #[arg(
        long,
        env = "VOCALGUARD_LIBRISPEECH_MINI",
        default_value = "../shared/data/librispeech-mini"
    )]
    data: PathBuf,
    /// Passes over the files; the median pass is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

/// What one benchmark run measured.
#[derive(Debug, Serialize)]
struct BenchReport {
    #[serde(rename = "impl")]
    implementation: &'static str,
    model: String,
    /// The precision the encoder ran in, which may differ from the one asked for.
    precision: String,
    /// Where the encoder ran.
    device: String,
    threads: usize,
    files: usize,
    failed: usize,
    audio_seconds: f64,
    wall_seconds: f64,
    x_realtime: f64,
    passes_wall_seconds: Vec<f64>,
    peak_rss_mib: Option<f64>,
}

fn audio_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            audio_files(&path, out)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["flac", "wav", "mp3", "ogg", "m4a"].contains(&e.to_ascii_lowercase().as_str())
        }) {
            out.push(path);
        }
    }
    Ok(())
}

/// Peak resident set size of this process, MiB (Linux only).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run(args: BenchArgs, threads: usize) -> Result<ExitCode> {
    let mut files = Vec::new();
    audio_files(&args.data, &mut files)
        .with_context(|| format!("listing audio in {}", args.data.display()))?;
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no audio files under {}",
        args.data.display()
    );
    anyhow::ensure!(args.repeat >= 1, "--repeat must be at least 1");
    let (embedder, precision) = args.model.embedder_in_effect()?;
    let mut passes = Vec::with_capacity(args.repeat);
    let (mut audio_seconds, mut failed) = (0.0, 0);
    for _ in 0..args.repeat {
        (audio_seconds, failed) = (0.0, 0);
        let start = Instant::now();
        embedder.embed_files(&files, |i, result| match result {
            Ok(e) => audio_seconds += e.duration_s,
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", files[i].display());
            }
        });
        passes.push(start.elapsed().as_secs_f64());
    }
    let mut sorted = passes.clone();
    sorted.sort_by(f64::total_cmp);
    let wall_seconds = sorted[sorted.len() / 2];
    let report = BenchReport {
        implementation: "vocalguard",
        model: embedder.model_id().name.clone(),
        precision: precision.to_string(),
        device: args.model.device.to_string(),
        threads,
        files: files.len(),
        failed,
        audio_seconds,
        wall_seconds,
        x_realtime: audio_seconds / wall_seconds,
        passes_wall_seconds: passes,
        peak_rss_mib: peak_rss_mib(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} files ({} failed), {:.1} s of audio in {:.2} s: {:.1}x real time with {} thread(s), encoder on {}; peak RSS {}",
            report.files,
            report.failed,
            report.audio_seconds,
            report.wall_seconds,
            report.x_realtime,
            report.threads,
            report.device,
            report.peak_rss_mib.map_or("unknown".to_string(), |m| format!("{m:.0} MiB")),
        );
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
