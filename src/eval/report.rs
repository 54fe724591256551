//! What `vocalguard eval` writes into `--out`: `report.json`, `report.md`, the score files
//! (`enroll test score label` per trial), `det.png` and `scores.png`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::evaluate::{split, ScoredTrial, SystemReport};
use super::metrics::{det_curve, MetricsError};
use super::plot::{self, DetSeries, PlotError, ScoreSeries};
use super::trials::TrialFormat;

/// Errors of writing the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// The DET curve could not be computed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// One model's results.
pub struct SystemRun {
    /// Its summary.
    pub report: SystemReport,
    /// Its scored trials.
    pub scored: Vec<ScoredTrial>,
}

/// `report.json`.
#[derive(Serialize)]
struct Report<'a> {
    trials: &'a str,
    format: TrialFormat,
    n_target: usize,
    n_nontarget: usize,
    systems: Vec<&'a SystemReport>,
}

/// The score file of system `i` among `runs`: `scores.txt` for a single system, else
/// `scores-<model>.txt` (with the system's position when two share a name).
pub fn score_file_name(runs: &[SystemRun], i: usize) -> String {
    if runs.len() == 1 {
        return "scores.txt".into();
    }
    let name = &runs[i].report.model;
    let clash = runs.iter().filter(|r| &r.report.model == name).count() > 1;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clash {
        format!("scores-{}-{safe}.txt", i + 1)
    } else {
        format!("scores-{safe}.txt")
    }
}

/// Writes every output for `runs` on the trial list `trials` (as named by the user) into `out`;
/// returns the files written.
pub fn write(
    out: &Path,
    trials: &str,
    format: TrialFormat,
    runs: &[SystemRun],
) -> Result<Vec<PathBuf>, ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<(), ReportError> {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(io(&path))?;
        written.push(path);
        Ok(())
    };
    let first = &runs[0].report;
    let report = Report {
        trials,
        format,
        n_target: first.n_target,
        n_nontarget: first.n_nontarget,
        systems: runs.iter().map(|r| &r.report).collect(),
    };
    let json = serde_json::to_string_pretty(&report).expect("reports serialise");
    put("report.json", json.as_bytes())?;
    for (i, run) in runs.iter().enumerate() {
        let mut text = format!(
            "# model {} sha256 {}\n",
            run.report.model, run.report.model_sha256
        );
        for t in &run.scored {
            let label = if t.target { "target" } else { "nontarget" };
            writeln!(text, "{} {} {:.6} {label}", t.enroll, t.test, t.score).expect("string");
        }
        put(&score_file_name(runs, i), text.as_bytes())?;
    }
    put("report.md", markdown(trials, format, runs).as_bytes())?;

    let mut curves = Vec::new();
    let mut splits = Vec::new();
    for run in runs {
        let (t, n) = split(&run.scored);
        let points: Vec<(f64, f64)> = det_curve(&t, &n)?
            .into_iter()
            .map(|(fa, miss, _)| (fa, miss))
            .collect();
        curves.push(points);
        splits.push((t, n));
    }
    let det: Vec<DetSeries> = runs
        .iter()
        .zip(&curves)
        .map(|(r, points)| DetSeries {
            label: &r.report.model,
            points,
            eer: r.report.eer,
        })
        .collect();
    let det_path = out.join("det.png");
    plot::det_png(&det_path, &format!("DET: {trials}"), &det)?;
    written.push(det_path);
    let series: Vec<ScoreSeries> = runs
        .iter()
        .zip(&splits)
        .map(|(r, (t, n))| ScoreSeries {
            label: &r.report.model,
            targets: t,
            nontargets: n,
        })
        .collect();
    let thresholds: Vec<Option<f64>> = runs.iter().map(|r| Some(r.report.eer_threshold)).collect();
    let scores_path = out.join("scores.png");
    plot::scores_png(
        &scores_path,
        &format!("Scores: {trials}"),
        &series,
        &thresholds,
    )?;
    written.push(scores_path);
    Ok(written)
}

/// `report.md`: a table per system a person can paste into a write-up.
fn markdown(trials: &str, format: TrialFormat, runs: &[SystemRun]) -> String {
    let first = &runs[0].report;
    let mut md = format!(
        "# Speaker verification report\n\nTrials: `{trials}` ({}), {} target and {} non-target.\n\n",
        serde_json::to_value(format).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        first.n_target,
        first.n_nontarget
    );
    md.push_str("| model | EER (95% CI) | EER threshold |");
    for p in &first.min_dcf {
        write!(md, " minDCF p={} |", p.p_target).expect("string");
    }
    md.push_str(" actDCF | Cllr | normalisation |\n|---|---|---|");
    for _ in &first.min_dcf {
        md.push_str("---|");
    }
    md.push_str("---|---|---|\n");
    for run in runs {
        let r = &run.report;
        write!(
            md,
            "| {} (`{}`) | {:.2}% ({:.2}-{:.2}%) | {:.4} |",
            r.model,
            &r.model_sha256[..r.model_sha256.len().min(12)],
            r.eer * 100.0,
            r.eer_ci95.0 * 100.0,
            r.eer_ci95.1 * 100.0,
            r.eer_threshold
        )
        .expect("string");
        for p in &r.min_dcf {
            write!(md, " {:.4} ({:.4}-{:.4}) |", p.min_dcf, p.ci95.0, p.ci95.1).expect("string");
        }
        let act = r.act_dcf.as_ref().map_or("-".to_string(), |a| {
            let values: Vec<String> = a
                .dcf
                .iter()
                .map(|(p, d)| format!("{d:.4} @p={p}"))
                .collect();
            format!("{} at {:.4} ({})", values.join(", "), a.threshold, a.source)
        });
        let cllr = r.cllr.map_or("-".to_string(), |c| format!("{c:.4}"));
        writeln!(md, " {act} | {cllr} | {} |", r.score_normalisation).expect("string");
    }
    let r = first;
    writeln!(
        md,
        "\nConfidence intervals: 95% percentile bootstrap over trials, {} resamples, seed {}. Multi-file enrollment: {}.\nFiles embedded in this run: {}, from the cache: {}.\n\n![DET](det.png)\n\n![Scores](scores.png)",
        r.bootstrap.0,
        r.bootstrap.1,
        serde_json::to_value(r.enroll_pooling).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        r.files_embedded,
        r.files_cached
    )
    .expect("string");
    md
}
