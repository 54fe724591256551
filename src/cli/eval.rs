//! `vocalguard eval` (trial list → scores, metrics, plots) and `vocalguard calibrate` (score
//! file → threshold at a false-alarm rate and a score-to-LLR calibration the server can load).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::audio::DecodeLimits;
use crate::embed::Embedder;
use crate::encoder::{source::DEFAULT_MODEL, ResolveOptions, SpeakerModel};
use crate::eval::cache::EmbeddingCache;
use crate::eval::evaluate::{embed_all, score_trials, summarise, EnrollPooling, EvalSettings};
use crate::eval::report::{self, SystemRun};
use crate::eval::trials::{audio_files, load_trials, DirOptions};
use crate::scoring::asnorm::AsNorm;
use crate::scoring::calibration::Calibration;

/// `vocalguard eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Trial list: a VoxCeleb file (`1 enroll.wav test.wav`, 1 = target), a Kaldi/NIST file
    /// (`enroll test target|nontarget`), or a folder with one sub-folder of audio per speaker
    /// (all target pairs and a seeded sample of non-target pairs). An enrollment field may name
    /// several files joined by `,`.
    #[arg(long, value_name = "FILE|DIR")]
    trials: PathBuf,
    /// Folder that relative audio paths in a trial file are resolved against [default: the
    /// trial file's folder].
    #[arg(long, value_name = "DIR")]
    audio_root: Option<PathBuf>,
    /// Model to evaluate (built-in name, directory or hub repo id); repeat to compare several
    /// models in one report [default: campplus-zh-en].
    #[arg(long = "model", value_name = "MODEL")]
    models: Vec<String>,
    /// Never download from the hub; use only the local cache (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Output folder for report.json, report.md, the score files, det.png and scores.png.
    #[arg(long, default_value = "eval-out", value_name = "DIR")]
    out: PathBuf,
    /// Embedding cache, keyed by file content and model hash [default:
    /// $XDG_CACHE_HOME/vocalguard/embeddings or ~/.cache/vocalguard/embeddings].
    #[arg(long, env = "VOCALGUARD_EMBEDDING_CACHE", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Most non-target pairs drawn from a speaker-folder layout.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_nontarget: usize,
    /// Seed of the non-target sample and of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// minDCF operating point, as the prior probability of a target (C_miss = C_fa = 1);
    /// repeat for several.
    #[arg(long = "p-target", default_values_t = [0.01, 0.001], value_name = "P")]
    p_targets: Vec<f64>,
    /// Threshold at which to report the actual DCF (default: the calibration's, if given).
    #[arg(long, value_name = "SCORE")]
    threshold: Option<f64>,
    /// Calibration file from `vocalguard calibrate`: its threshold gives the actual DCF and
    /// its LLRs give Cllr.
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// AS-Norm cohort: a folder of audio (embedded and cached like the trials), or JSON lines
    /// written by `vocalguard embed`. Scores are then AS-Norm normalised.
    #[arg(long, value_name = "DIR|FILE")]
    cohort: Option<PathBuf>,
    /// Cohort scores AS-Norm averages over, per side.
    #[arg(long, default_value_t = 100, value_name = "N")]
    as_norm_top_n: usize,
    /// How an enrollment of several files is scored.
    #[arg(long, value_enum, default_value_t = EnrollPooling::Max)]
    enroll_pooling: EnrollPooling,
    /// Bootstrap resamples for the 95% confidence intervals.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    bootstrap: usize,
}

fn progress(len: usize, what: &str) -> ProgressBar {
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}, {{elapsed}} elapsed, eta {{eta}}"
        ))
        .expect("valid template"),
    )
}

/// Runs `vocalguard eval`.
pub fn eval(args: EvalArgs) -> Result<ExitCode> {
    let dirs = DirOptions {
        max_nontarget: args.max_nontarget,
        seed: args.seed,
    };
    let list = load_trials(&args.trials, args.audio_root.as_deref(), &dirs)
        .with_context(|| format!("reading the trials {}", args.trials.display()))?;
    let root = match &args.audio_root {
        Some(root) => root.clone(),
        None if args.trials.is_dir() => args.trials.clone(),
        None => args.trials.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let calibration = match &args.calibration {
        Some(path) => Some(Calibration::load(path)?),
        None => None,
    };
    let models = if args.models.is_empty() {
        vec![DEFAULT_MODEL.to_string()]
    } else {
        args.models.clone()
    };
    let files = list.files();
    let cache_root = args
        .cache_dir
        .clone()
        .unwrap_or_else(EmbeddingCache::default_root);
    eprintln!(
        "{} trials ({} target, {} non-target) over {} files; {} model(s)",
        list.trials.len(),
        list.n_target(),
        list.n_nontarget(),
        files.len(),
        models.len()
    );
    let mut runs = Vec::new();
    for spec in &models {
        let mut options = ResolveOptions::from_env();
        options.offline |= args.offline;
        let model = SpeakerModel::load(spec, &options)
            .with_context(|| format!("loading the model {spec}"))?;
        let embedder = Embedder::new(model, DecodeLimits::default())?;
        let id = embedder.model_id().clone();
        let cache = EmbeddingCache::new(&cache_root, &id.sha256, "trim");
        let bar = progress(files.len(), &format!("files ({})", id.name));
        let embedded = embed_all(&embedder, &files, &cache, || bar.inc(1))?;
        bar.finish_and_clear();
        let as_norm = match &args.cohort {
            Some(cohort) => Some(load_cohort(cohort, &embedder, &cache, args.as_norm_top_n)?),
            None => None,
        };
        if let Some(c) = &calibration {
            if !c.model_sha256.is_empty() && c.model_sha256 != id.sha256 {
                bail!(
                    "the calibration {} was fitted on scores of model {} ({}), not {}",
                    args.calibration
                        .as_ref()
                        .map_or(String::new(), |p| p.display().to_string()),
                    c.model,
                    c.model_sha256,
                    id
                );
            }
        }
        let settings = EvalSettings {
            pooling: args.enroll_pooling,
            p_targets: args.p_targets.clone(),
            threshold: args.threshold,
            calibration: calibration.clone(),
            as_norm,
            bootstrap: args.bootstrap,
            seed: args.seed,
        };
        let scored = score_trials(&list, &embedded.vectors, &settings, &root);
        let summary = summarise((&id.name, &id.sha256), &scored, &settings, &embedded)?;
        eprintln!(
            "{}: EER {:.2}% at {:.4}; {} files embedded, {} from the cache",
            id.name,
            summary.eer * 100.0,
            summary.eer_threshold,
            embedded.computed,
            embedded.cached
        );
        runs.push(SystemRun {
            report: summary,
            scored,
        });
    }
    let written = report::write(
        &args.out,
        &args.trials.display().to_string(),
        list.format,
        &runs,
    )?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The AS-Norm cohort: embedded audio from a folder, or `vocalguard embed` JSON lines of the
/// same model.
fn load_cohort(
    path: &Path,
    embedder: &Embedder,
    cache: &EmbeddingCache,
    top_n: usize,
) -> Result<AsNorm> {
    if !path.is_dir() {
        return Ok(AsNorm::load(path, embedder.model_id(), top_n)?);
    }
    let files =
        audio_files(path).with_context(|| format!("listing the cohort {}", path.display()))?;
    let bar = progress(files.len(), "cohort files");
    let embedded = embed_all(embedder, &files, cache, || bar.inc(1))?;
    bar.finish_and_clear();
    let vectors = files.iter().map(|f| embedded.vectors[f].clone()).collect();
    Ok(AsNorm::new(vectors, top_n)?)
}

/// `vocalguard calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Score file: `enroll test score target|nontarget` per line, as `vocalguard eval` writes
    /// it (its `# model NAME sha256 HASH` line names the model), or `score 1|0` per line.
    scores: PathBuf,
    /// Largest false-alarm rate the threshold may give on the non-target scores.
    #[arg(long, default_value_t = 1e-3, value_name = "RATE")]
    target_fa_rate: f64,
    /// Prior probability of a target that the logistic calibration is weighted for.
    #[arg(long, default_value_t = 0.01, value_name = "P")]
    p_target: f64,
    /// `logistic` (prior-weighted logistic regression; needs target and non-target scores
    /// that overlap) or `gaussian` (two Gaussians with a shared variance; its threshold is
    /// read from the non-target Gaussian, so rates below one over the number of non-target
    /// scores can be stated).
    #[arg(long, value_enum, default_value_t = CalibrationMethod::Logistic)]
    method: CalibrationMethod,
    /// Where to write the calibration (JSON; `calibration = "FILE"` in the server configuration).
    #[arg(long, default_value = "calibration.json", value_name = "FILE")]
    out: PathBuf,
}

/// The `--method` of `vocalguard calibrate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CalibrationMethod {
    /// Prior-weighted logistic regression.
    Logistic,
    /// Shared-variance Gaussians.
    Gaussian,
}

/// Scores of a score file: targets, non-targets, and the model (name, weights hash) its header
/// names, if any.
type ScoreFile = (Vec<f64>, Vec<f64>, Option<(String, String)>);

/// Reads a score file: labelled scores, and the model named by its header if any.
pub fn read_scores(text: &str, origin: &str) -> Result<ScoreFile> {
    let (mut targets, mut nontargets, mut model) = (Vec::new(), Vec::new(), None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('#') {
            let words: Vec<&str> = header.split_whitespace().collect();
            if let ["model", name, "sha256", sha] = words.as_slice() {
                model = Some((name.to_string(), sha.to_string()));
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (score, label) = match fields.as_slice() {
            [_, _, score, label] | [score, label] => (*score, *label),
            _ => bail!(
                "{origin}:{}: expected `enroll test score target|nontarget` or `score 1|0`",
                n + 1
            ),
        };
        let score: f64 = score
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .with_context(|| format!("{origin}:{}: {score:?} is not a finite number", n + 1))?;
        match label.to_ascii_lowercase().as_str() {
            "target" | "1" => targets.push(score),
            "nontarget" | "0" => nontargets.push(score),
            other => bail!(
                "{origin}:{}: label {other:?} is none of target, nontarget, 1, 0",
                n + 1
            ),
        }
    }
    Ok((targets, nontargets, model))
}

/// Runs `vocalguard calibrate`.
pub fn calibrate(args: CalibrateArgs) -> Result<ExitCode> {
    let origin = args.scores.display().to_string();
    let text =
        std::fs::read_to_string(&args.scores).with_context(|| format!("reading {origin}"))?;
    let (targets, nontargets, model) = read_scores(&text, &origin)?;
    let fit = match args.method {
        CalibrationMethod::Logistic => Calibration::fit,
        CalibrationMethod::Gaussian => Calibration::fit_gaussian,
    };
    let mut calibration = fit(&targets, &nontargets, args.p_target, args.target_fa_rate)?;
    if let Some((name, sha)) = model {
        calibration.model = name;
        calibration.model_sha256 = sha;
    }
    std::fs::write(&args.out, calibration.to_json())
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "threshold {:.6} (false alarms {:.4}%, misses {:.2}% on {} target / {} non-target scores); LLR = {:.4} * score + {:.4}; written to {}",
        calibration.threshold,
        calibration.fa_rate * 100.0,
        calibration.miss_rate * 100.0,
        calibration.n_target,
        calibration.n_nontarget,
        calibration.slope,
        calibration.offset,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
