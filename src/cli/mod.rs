//! The `vocalguard` command line: argument definitions and the commands behind them.

mod audit;
mod bench;
mod client;
mod eval;
mod models;
mod registry;
mod serve;
mod token;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::audio::DecodeLimits;
use crate::embed::{cosine, Embedder, Trim};
use crate::encoder::{
    source::DEFAULT_MODEL, DeviceChoice, Precision, ResolveOptions, SpeakerModel,
};

/// VocalGuard: voice-impersonation screening with speaker embeddings.
#[derive(Debug, Parser)]
#[command(name = "vocalguard", version, about, long_about = None)]
pub struct Cli {
    /// Worker threads for decoding and inference (default: all cores).
    #[arg(long, global = true, env = "VOCALGUARD_THREADS")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC server: registry and screening services, health, reflection and metrics.
    /// With no arguments it starts on the embedded defaults (127.0.0.1:50051, built-in model,
    /// registry in ./vocalguard-data).
    Serve(Box<serve::ServeArgs>),
    /// Embed audio files; one JSON line per file on stdout, errors on stderr.
    Embed(EmbedArgs),
    /// Print the cosine score between the speakers of two audio files.
    Compare(CompareArgs),
    /// Measure end-to-end embedding throughput over a folder of audio (librispeech-mini by default).
    Bench(bench::BenchArgs),
    /// Create, show, list or delete protected artists on a running server.
    #[command(subcommand)]
    Artist(client::ArtistCommand),
    /// Enroll one or more reference recordings of a voice as one voiceprint of an artist.
    Enroll(client::EnrollArgs),
    /// List or delete an artist's voiceprints.
    #[command(subcommand)]
    Voiceprint(client::VoiceprintCommand),
    /// Authorize a party to release music in an artist's voice.
    Authorize(client::AuthorizeArgs),
    /// Withdraw a party's authorization.
    Revoke(client::RevokeArgs),
    /// List the parties an artist authorizes.
    Authorizations(client::AuthorizationsArgs),
    /// Screen an audio file for protected voices, as an ingestion service would.
    Screen(client::ScreenArgs),
    /// Evaluate models on a trial list: EER, minDCF, DET curve, score plots, with an embedding
    /// cache, AS-Norm and calibration.
    Eval(eval::EvalArgs),
    /// Fit a threshold at a target false-alarm rate and a score-to-LLR calibration from a
    /// score file, for the server or for `eval --calibration`.
    Calibrate(eval::CalibrateArgs),
    /// Read the registry's audit trail: who changed what, when, in which request.
    Audit(audit::AuditArgs),
    /// Make API tokens for the server's access control.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Move a registry between the embedded store and PostgreSQL: export to a dump file,
    /// import into a new registry.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// List the built-in models, or convert a published checkpoint into safetensors.
    #[command(subcommand)]
    Models(models::ModelsCommand),
}

/// How to find the model and treat the audio; shared by every command that embeds.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model: a built-in name, a directory holding model.json and its weights, or a Hugging
    /// Face repo id `owner/name[@revision]` (cached under HF_HUB_CACHE or HF_HOME/hub).
    #[arg(long, env = "VOCALGUARD_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Never download from the hub; use only the local cache (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Longest audio accepted, seconds.
    #[arg(long, default_value_t = 900.0, value_name = "SECONDS")]
    pub max_duration: f64,
    /// Keep long silences instead of trimming them with voice activity detection.
    #[arg(long)]
    pub no_trim: bool,
    /// Most partial windows run through the encoder at once.
    #[arg(long, default_value_t = Embedder::DEFAULT_MAX_BATCH)]
    pub batch: usize,
    /// Arithmetic of the encoder's products: f32, or bf16 (GE2E only, on CPUs with
    /// AVX512_BF16: faster, embeddings within cosine 0.999 of f32).
    #[arg(long, env = "VOCALGUARD_PRECISION", value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Where the encoder runs: cpu, or cuda / cuda:N (an NVIDIA GPU; builds with the `cuda`
    /// feature only). Features are computed on the CPU either way.
    #[arg(
        long,
        env = "VOCALGUARD_DEVICE",
        default_value = "cpu",
        value_name = "DEVICE"
    )]
    pub device: DeviceChoice,
}

impl ModelArgs {
    /// Loads the model and builds the embedding pipeline.
    pub fn embedder(&self) -> Result<Embedder> {
        Ok(self.embedder_in_effect()?.0)
    }

    /// [`ModelArgs::embedder`], with the precision the encoder runs in (f32 where bf16 was
    /// asked for on a CPU without AVX512_BF16).
    pub fn embedder_in_effect(&self) -> Result<(Embedder, Precision)> {
        let mut options = ResolveOptions::from_env();
        options.offline |= self.offline;
        let (model, precision) =
            SpeakerModel::load_in(&self.model, &options, self.device, self.precision)
                .context("loading the model")?;
        if precision != self.precision {
            eprintln!(
                "warning: precision {} needs the encoder on a CPU with AVX512_BF16; it runs in {precision}",
                self.precision
            );
        }
        anyhow::ensure!(
            self.max_duration > 0.0 && self.max_duration.is_finite(),
            "--max-duration must be a positive number of seconds"
        );
        let limits = DecodeLimits {
            max_duration_s: self.max_duration,
        };
        let trim = if self.no_trim {
            Trim::Off
        } else {
            Trim::Silences
        };
        let embedder = Embedder::new(model, limits)?
            .with_trim(trim)
            .with_max_batch(self.batch);
        Ok((embedder, precision))
    }
}

#[derive(Debug, Args)]
struct EmbedArgs {
    /// Audio files (WAV, FLAC, MP3, OGG Vorbis, AAC in MP4/M4A).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// First audio file.
    a: PathBuf,
    /// Second audio file.
    b: PathBuf,
    /// Print a JSON object instead of the bare score.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

/// One line of `vocalguard embed` output.
#[derive(Serialize)]
struct EmbedLine<'a> {
    file: &'a str,
    model: &'a str,
    model_sha256: &'a str,
    dim: usize,
    duration_s: f64,
    voiced_s: f64,
    embedding: &'a [f32],
}

impl Cli {
    /// Sizes the worker pool, then runs the command. Returns the process exit code.
    pub fn run(self) -> Result<ExitCode> {
        let threads = match self.threads {
            Some(0) => anyhow::bail!("--threads must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        // Candle sizes its matrix-multiply parallelism from this variable; rayon too.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("starting the worker pool")?;
        match self.command {
            Command::Serve(args) => serve::run(*args),
            Command::Embed(args) => embed(args),
            Command::Compare(args) => compare(args),
            Command::Bench(args) => bench::run(args, threads),
            Command::Artist(c) => client::artist(c),
            Command::Enroll(a) => client::enroll(a),
            Command::Voiceprint(c) => client::voiceprint(c),
            Command::Authorize(a) => client::authorize(a),
            Command::Revoke(a) => client::revoke(a),
            Command::Authorizations(a) => client::authorizations(a),
            Command::Screen(a) => client::screen(a),
            Command::Eval(a) => eval::eval(a),
            Command::Calibrate(a) => eval::calibrate(a),
            Command::Audit(a) => audit::run(a),
            Command::Token(c) => token::run(c),
            Command::Registry(c) => registry::run(c),
            Command::Models(c) => models::run(c),
        }
    }
}

fn embed(args: EmbedArgs) -> Result<ExitCode> {
    let embedder = args.model.embedder()?;
    let id = embedder.model_id().clone();
    let progress = if args.files.len() > 1 {
        ProgressBar::new(args.files.len() as u64).with_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} files, {elapsed} elapsed, eta {eta}",
            )
            .expect("valid template"),
        )
    } else {
        ProgressBar::hidden()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    let mut write_error = None;
    embedder.embed_files(&args.files, |i, result| {
        let file = args.files[i].to_string_lossy();
        match result {
            Ok(e) => {
                let line = EmbedLine {
                    file: &file,
                    model: &id.name,
                    model_sha256: &id.sha256,
                    dim: e.vector.len(),
                    duration_s: e.duration_s,
                    voiced_s: e.voiced_s,
                    embedding: &e.vector,
                };
                let written = serde_json::to_writer(&mut out, &line)
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"));
                if let Err(e) = written {
                    write_error.get_or_insert(e);
                }
            }
            Err(e) => {
                failed += 1;
                progress.suspend(|| eprintln!("error: {file}: {e}"));
            }
        }
        progress.inc(1);
    });
    progress.finish_and_clear();
    out.flush().context("writing to stdout")?;
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    if failed > 0 {
        eprintln!("{failed} of {} files failed", args.files.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn compare(args: CompareArgs) -> Result<ExitCode> {
    let embedder = args.model.embedder()?;
    let embed = |path: &PathBuf| {
        embedder
            .embed_file(path)
            .with_context(|| format!("embedding {}", path.display()))
    };
    let (a, b) = (embed(&args.a)?, embed(&args.b)?);
    let score = cosine(&a.vector, &b.vector);
    if args.json {
        let id = embedder.model_id();
        println!(
            "{}",
            serde_json::json!({
                "a": args.a.to_string_lossy(),
                "b": args.b.to_string_lossy(),
                "score": score,
                "model": id.name,
                "model_sha256": id.sha256,
            })
        );
    } else {
        println!("{score:.6}");
    }
    Ok(ExitCode::SUCCESS)
}
