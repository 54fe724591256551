//! One evaluation run for one model: embed every file a trial list names (through the shared
//! pipeline, in parallel, reusing the on-disk cache), score every trial, optionally normalise
//! the scores (AS-Norm), and summarise them in the metrics researchers report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::cache::{CacheError, CachedEmbedding, EmbeddingCache};
use super::metrics::{act_dcf, bootstrap_ci, cllr, eer, min_dcf, MetricsError};
use super::trials::TrialList;
use crate::embed::{cosine, Embedder};
use crate::scoring::asnorm::AsNorm;
use crate::scoring::calibration::Calibration;

/// Errors of an evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The cache could not be read or written.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Some files could not be embedded.
    #[error("{count} of the trial list's files could not be embedded, e.g. {examples}")]
    Embedding {
        /// How many failed.
        count: usize,
        /// The first few, with their reasons.
        examples: String,
    },
    /// A metric could not be computed.
    #[error("computing the metrics: {0}")]
    Metrics(#[from] MetricsError),
}

/// How an enrollment side that names several files is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EnrollPooling {
    /// The best score over the enrollment files: what the server does with an artist's
    /// several voiceprints.
    Max,
    /// The score of the files' mean embedding (renormalised).
    Mean,
}

/// Everything that shapes the scores and the report besides the model.
pub struct EvalSettings {
    /// Multi-file enrollment scoring.
    pub pooling: EnrollPooling,
    /// Prior target probabilities of the minDCF operating points (C_miss = C_fa = 1).
    pub p_targets: Vec<f64>,
    /// Threshold for the actual DCF, when no calibration gives one.
    pub threshold: Option<f64>,
    /// Calibration whose threshold gives the actual DCF and whose LLRs give Cllr.
    pub calibration: Option<Calibration>,
    /// Score normalisation.
    pub as_norm: Option<AsNorm>,
    /// Bootstrap resamples for the confidence intervals.
    pub bootstrap: usize,
    /// Bootstrap seed.
    pub seed: u64,
}

/// Embedding files, with how many came from the cache.
pub struct Embedded {
    /// Embedding of each file.
    pub vectors: HashMap<PathBuf, Vec<f32>>,
    /// Files embedded now.
    pub computed: usize,
    /// Files found in the cache.
    pub cached: usize,
}

/// Embeds `files` with `embedder`, taking what `cache` has and storing what it lacks; `tick`
/// is called once per file done. Fails naming the files that could not be embedded.
pub fn embed_all(
    embedder: &Embedder,
    files: &[PathBuf],
    cache: &EmbeddingCache,
    tick: impl Fn() + Sync,
) -> Result<Embedded, EvalError> {
    let keys: Vec<Result<String, CacheError>> = files
        .par_iter()
        .map(|f| EmbeddingCache::content_key(f))
        .collect();
    let mut vectors = HashMap::new();
    let mut missing = Vec::new();
    let mut failures = Vec::new();
    for (file, key) in files.iter().zip(keys) {
        match key {
            Ok(key) => match cache.get(&key) {
                Some(hit) => {
                    vectors.insert(file.clone(), hit.embedding);
                    tick();
                }
                None => missing.push((file.clone(), key)),
            },
            Err(e) => failures.push(e.to_string()),
        }
    }
    let cached = vectors.len();
    let paths: Vec<&Path> = missing.iter().map(|(f, _)| f.as_path()).collect();
    let mut write_error = None;
    embedder.embed_files(&paths, |i, result| {
        let (file, key) = &missing[i];
        match result {
            Ok(e) => {
                let entry = CachedEmbedding {
                    embedding: e.vector,
                    duration_s: e.duration_s,
                    voiced_s: e.voiced_s,
                };
                if let Err(err) = cache.put(key, &entry) {
                    write_error.get_or_insert(err);
                }
                vectors.insert(file.clone(), entry.embedding);
            }
            Err(e) => failures.push(format!("{}: {e}", file.display())),
        }
        tick();
    });
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if !failures.is_empty() {
        return Err(EvalError::Embedding {
            count: failures.len(),
            examples: failures
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    Ok(Embedded {
        computed: missing.len(),
        cached,
        vectors,
    })
}

/// One scored trial.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredTrial {
    /// Enrollment files, comma-separated, as the trial list named them (relative to `root`
    /// when under it).
    pub enroll: String,
    /// Test file.
    pub test: String,
    /// Score (cosine, or AS-Norm of it).
    pub score: f64,
    /// Whether it is a target trial.
    pub target: bool,
}

/// Scores every trial of `list` from `vectors`, naming files relative to `root`.
pub fn score_trials(
    list: &TrialList,
    vectors: &HashMap<PathBuf, Vec<f32>>,
    settings: &EvalSettings,
    root: &Path,
) -> Vec<ScoredTrial> {
    let name = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let stats = |v: &[f32]| settings.as_norm.as_ref().map(|n| n.stats(v));
    let test_stats: HashMap<&PathBuf, Option<(f64, f64)>> = list
        .trials
        .iter()
        .map(|t| (&t.test, stats(&vectors[&t.test])))
        .collect();
    list.trials
        .par_iter()
        .map(|t| {
            let test = &vectors[&t.test];
            let sides: Vec<Vec<f32>> = match settings.pooling {
                EnrollPooling::Max => t.enroll.iter().map(|e| vectors[e].clone()).collect(),
                EnrollPooling::Mean => {
                    let rows: Vec<f32> = t.enroll.iter().flat_map(|e| vectors[e].clone()).collect();
                    vec![crate::embed::mean_unit(&rows, test.len())]
                }
            };
            let score = sides
                .iter()
                .map(|side| {
                    let raw = f64::from(cosine(side, test));
                    match (&settings.as_norm, stats(side), test_stats[&t.test]) {
                        (Some(_), Some(e), Some(s)) => AsNorm::normalize(raw, e, s),
                        _ => raw,
                    }
                })
                .fold(f64::NEG_INFINITY, f64::max);
            ScoredTrial {
                enroll: t
                    .enroll
                    .iter()
                    .map(|e| name(e))
                    .collect::<Vec<_>>()
                    .join(","),
                test: name(&t.test),
                score,
                target: t.target,
            }
        })
        .collect()
}

/// minDCF at one operating point.
#[derive(Debug, Clone, Serialize)]
pub struct DcfPoint {
    /// Prior probability of a target.
    pub p_target: f64,
    /// Cost of a miss.
    pub c_miss: f64,
    /// Cost of a false alarm.
    pub c_fa: f64,
    /// Normalised minimum detection cost.
    pub min_dcf: f64,
    /// Threshold reaching it.
    pub threshold: f64,
    /// 95 % bootstrap interval of `min_dcf`.
    pub ci95: (f64, f64),
}

/// Actual DCF at a fixed threshold.
#[derive(Debug, Clone, Serialize)]
pub struct ActDcf {
    /// The threshold.
    pub threshold: f64,
    /// Where it came from: `calibration` or `--threshold`.
    pub source: String,
    /// `(p_target, act_dcf)` per operating point.
    pub dcf: Vec<(f64, f64)>,
}

/// The summary of one model on one trial list.
#[derive(Debug, Clone, Serialize)]
pub struct SystemReport {
    /// Model name.
    pub model: String,
    /// Weights hash.
    pub model_sha256: String,
    /// Target trials.
    pub n_target: usize,
    /// Non-target trials.
    pub n_nontarget: usize,
    /// Equal error rate, 0..1.
    pub eer: f64,
    /// Threshold at the EER.
    pub eer_threshold: f64,
    /// 95 % bootstrap interval of the EER.
    pub eer_ci95: (f64, f64),
    /// minDCF per operating point.
    pub min_dcf: Vec<DcfPoint>,
    /// Actual DCF, when a threshold was given.
    pub act_dcf: Option<ActDcf>,
    /// Cllr of the calibrated LLRs, when calibrated.
    pub cllr: Option<f64>,
    /// `as-norm top-N over a cohort of M`, or `none`.
    pub score_normalisation: String,
    /// Multi-file enrollment scoring.
    pub enroll_pooling: EnrollPooling,
    /// Bootstrap resamples and seed.
    pub bootstrap: (usize, u64),
    /// Files embedded in this run / found in the cache.
    pub files_embedded: usize,
    /// Files whose embedding came from the cache.
    pub files_cached: usize,
}

/// Splits scores by label.
pub fn split(scored: &[ScoredTrial]) -> (Vec<f64>, Vec<f64>) {
    let targets = scored
        .iter()
        .filter(|t| t.target)
        .map(|t| t.score)
        .collect();
    let nontargets = scored
        .iter()
        .filter(|t| !t.target)
        .map(|t| t.score)
        .collect();
    (targets, nontargets)
}

/// Computes the report of `model`'s scores.
pub fn summarise(
    model: (&str, &str),
    scored: &[ScoredTrial],
    settings: &EvalSettings,
    embedded: &Embedded,
) -> Result<SystemReport, EvalError> {
    let (targets, nontargets) = split(scored);
    let e = eer(&targets, &nontargets)?;
    let ci = |f: &(dyn Fn(&[f64], &[f64]) -> f64 + Sync)| {
        bootstrap_ci(
            &targets,
            &nontargets,
            f,
            settings.bootstrap.max(1),
            settings.seed,
        )
    };
    let eer_ci95 = ci(&|t, n| eer(t, n).map_or(f64::NAN, |r| r.eer))?;
    let mut points = Vec::new();
    for &p in &settings.p_targets {
        let d = min_dcf(&targets, &nontargets, p, 1.0, 1.0)?;
        let ci95 = ci(&|t, n| min_dcf(t, n, p, 1.0, 1.0).map_or(f64::NAN, |r| r.dcf))?;
        points.push(DcfPoint {
            p_target: p,
            c_miss: 1.0,
            c_fa: 1.0,
            min_dcf: d.dcf,
            threshold: d.threshold,
            ci95,
        });
    }
    let fixed = match (&settings.calibration, settings.threshold) {
        (_, Some(t)) => Some((t, "--threshold")),
        (Some(c), None) => Some((c.threshold, "calibration")),
        (None, None) => None,
    };
    let act = match fixed {
        Some((threshold, source)) => Some(ActDcf {
            threshold,
            source: source.to_string(),
            dcf: settings
                .p_targets
                .iter()
                .map(|&p| Ok((p, act_dcf(&targets, &nontargets, threshold, p, 1.0, 1.0)?)))
                .collect::<Result<_, MetricsError>>()?,
        }),
        None => None,
    };
    let cllr = match &settings.calibration {
        Some(c) => {
            let llr = |v: &[f64]| v.iter().map(|&s| c.llr(s)).collect::<Vec<_>>();
            Some(cllr(&llr(&targets), &llr(&nontargets))?)
        }
        None => None,
    };
    Ok(SystemReport {
        model: model.0.to_string(),
        model_sha256: model.1.to_string(),
        n_target: targets.len(),
        n_nontarget: nontargets.len(),
        eer: e.eer,
        eer_threshold: e.threshold,
        eer_ci95,
        min_dcf: points,
        act_dcf: act,
        cllr,
        score_normalisation: settings.as_norm.as_ref().map_or("none".to_string(), |n| {
            format!("as-norm top-{} over a cohort of {}", n.top_n(), n.len())
        }),
        enroll_pooling: settings.pooling,
        bootstrap: (settings.bootstrap, settings.seed),
        files_embedded: embedded.computed,
        files_cached: embedded.cached,
    })
}
