//! PNG plots for `vocalguard eval`: DET curves and score distributions.
//!
//! Drawn with the `plotters` bitmap backend. Text is rasterised by the pure-Rust `ab_glyph`
//! rasteriser from Noto Sans Regular (Copyright 2012 Google Inc., licensed under the Apache
//! License 2.0), which the `ttf-noto-sans` crate embeds as a byte constant, so no system font,
//! fontconfig or freetype is needed.
//!
//! The output path must end in `.png`: the backend picks the image format from the extension.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::scoring::normal::{phi, probit};

/// Why a plot could not be drawn. Every message names the output file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot plot {}: the file name must end in .png", .path.display())]
    NotPng { path: PathBuf },
    #[error("cannot plot {}: no series given", .path.display())]
    NoSeries { path: PathBuf },
    #[error("cannot plot {}: series `{label}` has no {what}", .path.display())]
    EmptyData {
        path: PathBuf,
        label: String,
        what: &'static str,
    },
    #[error("cannot plot {}: series `{label}` has a non-finite {what}", .path.display())]
    NonFinite {
        path: PathBuf,
        label: String,
        what: &'static str,
    },
    #[error("cannot plot {}: {got} thresholds given for {expected} series", .path.display())]
    ThresholdCount {
        path: PathBuf,
        expected: usize,
        got: usize,
    },
    #[error("cannot plot {}: the embedded font could not be loaded", .path.display())]
    Font { path: PathBuf },
    #[error("cannot draw {}: {message}", .path.display())]
    Draw { path: PathBuf, message: String },
}

/// One system's DET curve: operating points `(p_fa, p_miss)` and the EER for the legend.
#[derive(Debug, Clone, Copy)]
pub struct DetSeries<'a> {
    pub label: &'a str,
    pub points: &'a [(f64, f64)],
    pub eer: f64,
}

/// One system's scores of target and non-target trials.
#[derive(Debug, Clone, Copy)]
pub struct ScoreSeries<'a> {
    pub label: &'a str,
    pub targets: &'a [f64],
    pub nontargets: &'a [f64],
}

/// Colour-blind-safe series colours (Okabe & Ito), cycled.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Family name under which the embedded font is registered; plotters' default text uses it.
const FONT: &str = "sans-serif";

/// Registers the embedded font once per process.
fn ensure_font(path: &Path) -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font { path: path.into() })
    }
}

/// Checks the extension and the font before anything is drawn.
fn prepare(path: &Path) -> Result<(), PlotError> {
    let png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !png {
        return Err(PlotError::NotPng { path: path.into() });
    }
    ensure_font(path)
}

/// Turns a plotters error into a [`PlotError::Draw`] for `path`.
fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.into(),
        message: e.to_string(),
    }
}

/// A [`PlotError::EmptyData`].
fn empty_data(path: &Path, label: &str, what: &'static str) -> PlotError {
    PlotError::EmptyData {
        path: path.into(),
        label: label.into(),
        what,
    }
}

/// A [`PlotError::NonFinite`].
fn non_finite(path: &Path, label: &str, what: &'static str) -> PlotError {
    PlotError::NonFinite {
        path: path.into(),
        label: label.into(),
        what,
    }
}

/// `0.005` → `"0.5%"`, `0.4` → `"40%"`.
fn percent(p: f64) -> String {
    let s = format!("{:.3}", p * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Plotted range of both DET axes, as probabilities.
const DET_RANGE: Range<f64> = 1e-4..0.5;
/// Labelled ticks of both DET axes.
const DET_TICKS: [f64; 8] = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4];
/// Width of the DET image and height of its chart part (the legend goes below).
const DET_SIZE: u32 = 800;

/// A DET axis in probit units over [`DET_RANGE`], with ticks at [`DET_TICKS`] labelled in
/// percent.
struct ProbitAxis {
    lo: f64,
    hi: f64,
}

impl ProbitAxis {
    fn new() -> Self {
        Self {
            lo: probit(DET_RANGE.start),
            hi: probit(DET_RANGE.end),
        }
    }
}

impl Ranged for ProbitAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, z: &f64, (from, to): (i32, i32)) -> i32 {
        let t = (z - self.lo) / (self.hi - self.lo);
        from + (t * f64::from(to - from)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            DET_TICKS.iter().map(|&p| probit(p)).collect()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for ProbitAxis {
    fn format(z: &f64) -> String {
        percent(phi(*z))
    }
}

/// The part of the segment `a`–`b` where both coordinates are at most `hi`, if any.
fn clip_segment(a: (f64, f64), b: (f64, f64), hi: f64) -> Option<((f64, f64), (f64, f64))> {
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (u, v) in [(a.0, b.0), (a.1, b.1)] {
        let d = v - u;
        if d == 0.0 {
            if u > hi {
                return None;
            }
        } else if d > 0.0 {
            t1 = t1.min((hi - u) / d);
        } else {
            t0 = t0.max((hi - u) / d);
        }
    }
    let at = |t: f64| {
        if t == 0.0 {
            a
        } else if t == 1.0 {
            b
        } else {
            (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
        }
    };
    (t0 <= t1).then(|| (at(t0), at(t1)))
}

/// The visible parts of a DET curve, in probit units. Probabilities are clamped to
/// `[DET_RANGE.start, 1 − DET_RANGE.start]`, which puts p = 0 on the lower or left border; the
/// polyline is then clipped at `DET_RANGE.end`, which may split it into several runs.
fn det_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let lo = DET_RANGE.start;
    let hi = probit(DET_RANGE.end);
    let z = |p: f64| probit(p.clamp(lo, 1.0 - lo));
    let zs: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (z(x), z(y))).collect();
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    // Whether the last run ends at the first point of the next segment.
    let mut open = false;
    for w in zs.windows(2) {
        let Some((a, b)) = clip_segment(w[0], w[1], hi) else {
            open = false;
            continue;
        };
        match runs.last_mut() {
            Some(run) if open && a == w[0] => run.push(b),
            _ => runs.push(vec![a, b]),
        }
        open = b == w[1];
    }
    runs
}

/// Writes a DET plot of `series` to `path` (PNG, 800 px wide, a legend strip below the square
/// chart).
///
/// Both axes are probit-scaled from 0.01% to 50% (x: false-alarm rate, y: miss rate). Rates
/// below 0.01%, p = 0 included, are clamped onto the lower or left border; a curve leaves the
/// chart through the upper or right border where a rate exceeds 50%. The dashed diagonal
/// marks `P_miss = P_fa`; the legend reads "label (EER x.xx%)".
pub fn det_png(path: &Path, title: &str, series: &[DetSeries]) -> Result<(), PlotError> {
    if series.is_empty() {
        return Err(PlotError::NoSeries { path: path.into() });
    }
    for s in series {
        if s.points.is_empty() {
            return Err(empty_data(path, s.label, "operating points"));
        }
        if s.points
            .iter()
            .any(|(x, y)| !x.is_finite() || !y.is_finite())
        {
            return Err(non_finite(path, s.label, "operating point"));
        }
        if !s.eer.is_finite() {
            return Err(non_finite(path, s.label, "EER"));
        }
    }
    prepare(path)?;

    let row = 28;
    let legend_height = 20 + row * series.len() as u32;
    let root = BitMapBackend::new(path, (DET_SIZE, DET_SIZE + legend_height)).into_drawing_area();
    let err = draw_err(path);
    root.fill(&WHITE).map_err(&err)?;
    let (header, rest) = root.split_vertically(TITLE_HEIGHT);
    draw_title(&header, title).map_err(&err)?;
    let (chart_area, legend_area) = rest.split_vertically(DET_SIZE - TITLE_HEIGHT);

    let axis = ProbitAxis::new();
    let (lo, hi) = (axis.lo, axis.hi);
    // Leaves a square plotting area of 670 × 670 pixels.
    let mut chart = ChartBuilder::on(&chart_area)
        .margin_top(10)
        .margin_bottom(16)
        .margin_left(15)
        .margin_right(35)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(axis, ProbitAxis::new())
        .map_err(&err)?;
    chart
        .configure_mesh()
        .bold_line_style(BLACK.mix(0.15))
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 20))
        .x_desc("False-alarm rate")
        .y_desc("Miss rate")
        .draw()
        .map_err(&err)?;
    chart
        .draw_series(DashedLineSeries::new(
            [(lo, lo), (hi, hi)],
            8,
            6,
            BLACK.mix(0.5).stroke_width(1),
        ))
        .map_err(&err)?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        for run in det_runs(s.points) {
            chart
                .draw_series(LineSeries::new(run, color.stroke_width(3)))
                .map_err(&err)?;
        }
    }

    let entries: Vec<(String, RGBColor)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let text = format!("{} (EER {:.2}%)", s.label, 100.0 * s.eer);
            (text, PALETTE[i % PALETTE.len()])
        })
        .collect();
    draw_legend(&legend_area, &entries, row).map_err(&err)?;
    root.present().map_err(&err)
}

/// The font size, at most `max` and at least 12, at which `text` fits across `area` with a
/// 20 px margin on each side.
fn fitted_size<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    max: f64,
) -> Result<f64, DrawingAreaErrorKind<DB::ErrorType>> {
    let (width, _) = area.estimate_text_size(text, &TextStyle::from((FONT, max)))?;
    let room = f64::from(area.dim_in_pixel().0.saturating_sub(40));
    Ok((max * room / f64::from(width.max(1))).clamp(12.0, max))
}

/// Height of the strip that holds a plot's title.
const TITLE_HEIGHT: u32 = 44;

/// Draws `title` centred in the top [`TITLE_HEIGHT`] pixels of `area`, shrunk to fit.
fn draw_title<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let size = fitted_size(area, title, 28.0)?;
    let style = TextStyle::from((FONT, size)).pos(Pos::new(HPos::Center, VPos::Center));
    let center = (area.dim_in_pixel().0 / 2) as i32;
    area.draw_text(title, &style, (center, (TITLE_HEIGHT / 2) as i32))
}

/// Draws one legend row per entry (a line sample in its colour, then its text).
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, RGBColor)],
    row: u32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = TextStyle::from((FONT, 18)).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (text, color)) in entries.iter().enumerate() {
        let y = (row / 2 + row * i as u32) as i32;
        area.draw(&PathElement::new(
            [(100, y), (140, y)],
            color.stroke_width(3),
        ))?;
        area.draw_text(text, &style, (150, y))?;
    }
    Ok(())
}

/// Height of one panel of the score plot.
const PANEL_HEIGHT: u32 = 340;
/// Width of the score plot.
const SCORES_WIDTH: u32 = 900;
/// Height of the title and legend strip above the panels.
const SCORES_HEADER: u32 = 80;

/// Histogram of `values` over equal bins `[lo + k·width, lo + (k+1)·width)`, normalised to a
/// density (area 1).
fn density(values: &[f64], lo: f64, width: f64, bins: usize) -> Vec<f64> {
    let mut counts = vec![0usize; bins];
    for &v in values {
        let k = (((v - lo) / width) as usize).min(bins - 1);
        counts[k] += 1;
    }
    let norm = values.len() as f64 * width;
    counts.into_iter().map(|c| c as f64 / norm).collect()
}

/// Writes normalised histograms (densities) of the target and non-target scores of each series
/// to `path` (PNG), one panel per series, stacked vertically. Both histograms of a panel share
/// their bins: 2·n^(1/3) of them for n scores in all (Rice's rule), kept within 10 to 100.
///
/// `thresholds` is either empty or holds one entry per series; a finite `Some(θ)` is drawn as
/// a dashed vertical line and named in the panel's caption (an infinite one only in the
/// caption).
pub fn scores_png(
    path: &Path,
    title: &str,
    series: &[ScoreSeries],
    thresholds: &[Option<f64>],
) -> Result<(), PlotError> {
    if series.is_empty() {
        return Err(PlotError::NoSeries { path: path.into() });
    }
    if !thresholds.is_empty() && thresholds.len() != series.len() {
        return Err(PlotError::ThresholdCount {
            path: path.into(),
            expected: series.len(),
            got: thresholds.len(),
        });
    }
    let threshold = |i: usize| thresholds.get(i).copied().flatten();
    for (i, s) in series.iter().enumerate() {
        for (values, what) in [
            (s.targets, "target scores"),
            (s.nontargets, "non-target scores"),
        ] {
            if values.is_empty() {
                return Err(empty_data(path, s.label, what));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(non_finite(path, s.label, "score"));
            }
        }
        if threshold(i).is_some_and(f64::is_nan) {
            return Err(non_finite(path, s.label, "threshold"));
        }
    }
    prepare(path)?;

    let height = SCORES_HEADER + PANEL_HEIGHT * series.len() as u32;
    let root = BitMapBackend::new(path, (SCORES_WIDTH, height)).into_drawing_area();
    let err = draw_err(path);
    root.fill(&WHITE).map_err(&err)?;
    let (header, panels) = root.split_vertically(SCORES_HEADER);
    draw_title(&header, title).map_err(&err)?;
    let [target_color, nontarget_color] = [PALETTE[1], PALETTE[0]];
    let key = TextStyle::from((FONT, 18)).pos(Pos::new(HPos::Left, VPos::Center));
    let y = 60;
    let mut x = 120;
    for (text, color) in [
        ("target trials", target_color),
        ("non-target trials", nontarget_color),
    ] {
        header
            .draw(&Rectangle::new(
                [(x, y - 8), (x + 30, y + 8)],
                color.mix(0.35).filled(),
            ))
            .map_err(&err)?;
        header
            .draw(&Rectangle::new(
                [(x, y - 8), (x + 30, y + 8)],
                color.stroke_width(2),
            ))
            .map_err(&err)?;
        header.draw_text(text, &key, (x + 40, y)).map_err(&err)?;
        x += 230;
    }
    if thresholds.iter().any(Option::is_some) {
        header
            .draw(&PathElement::new(
                [(x, y), (x + 30, y)],
                BLACK.stroke_width(2),
            ))
            .map_err(&err)?;
        header
            .draw_text("threshold", &key, (x + 40, y))
            .map_err(&err)?;
    }

    let areas = panels.split_evenly((series.len(), 1));
    for (i, (s, area)) in series.iter().zip(&areas).enumerate() {
        let theta = threshold(i);
        let finite_theta = theta.filter(|t| t.is_finite());
        let all = s.targets.iter().chain(s.nontargets);
        let (mut lo, mut hi) = all
            .copied()
            .chain(finite_theta)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        if hi - lo < 1e-9 * (1.0 + lo.abs()) {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let n = s.targets.len() + s.nontargets.len();
        let bins = ((2.0 * (n as f64).cbrt()).round() as usize).clamp(10, 100);
        let width = (hi - lo) / bins as f64;
        let hists = [
            (density(s.nontargets, lo, width, bins), nontarget_color),
            (density(s.targets, lo, width, bins), target_color),
        ];
        let peak = hists
            .iter()
            .flat_map(|(h, _)| h.iter().copied())
            .fold(0.0, f64::max);
        let pad = 0.02 * (hi - lo);

        let mut caption = format!(
            "{}: {} target, {} non-target trials",
            s.label,
            s.targets.len(),
            s.nontargets.len()
        );
        if let Some(t) = theta {
            caption += &format!(", threshold {t:.4}");
        }
        let caption_size = fitted_size(area, &caption, 20.0).map_err(&err)?;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FONT, caption_size))
            .margin(10)
            .margin_right(30)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(lo - pad..hi + pad, 0.0..1.1 * peak)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .max_light_lines(0)
            .bold_line_style(BLACK.mix(0.1))
            .label_style((FONT, 16))
            .axis_desc_style((FONT, 18))
            .x_desc("score")
            .y_desc("density")
            .draw()
            .map_err(&err)?;
        for (hist, color) in &hists {
            let left = |k: usize| lo + k as f64 * width;
            chart
                .draw_series(hist.iter().enumerate().map(|(k, &d)| {
                    Rectangle::new([(left(k), 0.0), (left(k + 1), d)], color.mix(0.3).filled())
                }))
                .map_err(&err)?;
            let outline = hist
                .iter()
                .enumerate()
                .flat_map(|(k, &d)| [(left(k), d), (left(k + 1), d)]);
            let closed = std::iter::once((lo, 0.0))
                .chain(outline)
                .chain(std::iter::once((hi, 0.0)));
            chart
                .draw_series(LineSeries::new(closed, color.stroke_width(2)))
                .map_err(&err)?;
        }
        if let Some(t) = finite_theta {
            chart
                .draw_series(DashedLineSeries::new(
                    [(t, 0.0), (t, 1.1 * peak)],
                    10,
                    6,
                    BLACK.stroke_width(2),
                ))
                .map_err(&err)?;
        }
    }
    root.present().map_err(&err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// Deterministic standard normal samples (Box–Muller over a small LCG).
    fn gaussian(n: usize, mean: f64, sd: f64, seed: u64) -> Vec<f64> {
        let mut state = seed;
        let mut uniform = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                mean + sd * (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
            })
            .collect()
    }

    /// Scores, DET points and EER of a synthetic system.
    struct System {
        label: &'static str,
        targets: Vec<f64>,
        nontargets: Vec<f64>,
        points: Vec<(f64, f64)>,
        eer: crate::eval::EerResult,
    }

    /// Three synthetic systems: unit-variance gaussians, targets shifted by 4.6, 2.6 and 1.2.
    fn systems() -> Vec<System> {
        [
            ("strong system", 4.6, 1),
            ("medium system", 2.6, 2),
            ("weak system", 1.2, 3),
        ]
        .into_iter()
        .map(|(label, separation, seed)| {
            let targets = gaussian(2_000, separation, 1.0, seed);
            let nontargets = gaussian(20_000, 0.0, 1.0, seed + 10);
            let points = crate::eval::det_curve(&targets, &nontargets)
                .unwrap()
                .into_iter()
                .map(|(fa, miss, _)| (fa, miss))
                .collect();
            let eer = crate::eval::eer(&targets, &nontargets).unwrap();
            System {
                label,
                targets,
                nontargets,
                points,
                eer,
            }
        })
        .collect()
    }

    /// Writes both plots of the synthetic systems into `dir`.
    fn write_plots(dir: &Path) {
        let systems = systems();
        let det: Vec<DetSeries> = systems
            .iter()
            .map(|s| DetSeries {
                label: s.label,
                points: &s.points,
                eer: s.eer.eer,
            })
            .collect();
        det_png(&dir.join("det.png"), "DET curves (synthetic)", &det).unwrap();
        let scores: Vec<ScoreSeries> = systems
            .iter()
            .map(|s| ScoreSeries {
                label: s.label,
                targets: &s.targets,
                nontargets: &s.nontargets,
            })
            .collect();
        let thresholds: Vec<Option<f64>> = systems.iter().map(|s| Some(s.eer.threshold)).collect();
        scores_png(
            &dir.join("scores.png"),
            "Score distributions (synthetic)",
            &scores,
            &thresholds,
        )
        .unwrap();
    }

    #[test]
    fn percent_labels_are_short() {
        let labels: Vec<String> = DET_TICKS.iter().map(|&p| percent(phi(probit(p)))).collect();
        assert_eq!(
            labels,
            ["0.1%", "0.5%", "1%", "2%", "5%", "10%", "20%", "40%"]
        );
    }

    #[test]
    fn det_curves_are_clamped_below_and_clipped_above() {
        let hi = probit(DET_RANGE.end);
        let z = probit;
        // Accept-all point, a point with p_fa above 50%, a visible one, p_fa = 0, reject-all.
        let runs = det_runs(&[
            (1.0, 0.0),
            (0.6, 0.001),
            (0.1, 0.01),
            (0.0, 0.2),
            (0.0, 1.0),
        ]);
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        assert_eq!(run.len(), 4, "{run:?}");
        assert!(
            (run[0].0 - hi).abs() < 1e-12,
            "enters through the right border: {run:?}"
        );
        assert_eq!(run[1], (z(0.1), z(0.01)));
        assert_eq!(
            run[2],
            (z(DET_RANGE.start), z(0.2)),
            "p = 0 lies on the left border"
        );
        assert_eq!(
            run[3],
            (z(DET_RANGE.start), hi),
            "leaves through the upper border"
        );

        // A curve that leaves the chart and comes back is split into two runs.
        let runs = det_runs(&[(0.1, 0.1), (0.9, 0.1), (0.1, 0.2)]);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert!(det_runs(&[(0.9, 0.9), (0.8, 0.95)]).is_empty());
        assert!(det_runs(&[(0.1, 0.1)]).is_empty());
    }

    #[test]
    fn writes_both_pngs() {
        let dir = tempfile::tempdir().unwrap();
        write_plots(dir.path());
        for (name, min_size) in [("det.png", 20_000), ("scores.png", 20_000)] {
            let bytes = std::fs::read(dir.path().join(name)).unwrap();
            assert!(
                bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{name} is not a PNG"
            );
            assert!(
                (min_size..5_000_000).contains(&bytes.len()),
                "{name} has an implausible size of {} bytes",
                bytes.len()
            );
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let det = dir.path().join("det.png");
        let scores = dir.path().join("scores.png");
        let points = [(1.0, 0.0), (0.0, 1.0)];
        let ok = DetSeries {
            label: "a",
            points: &points,
            eer: 0.5,
        };

        assert!(matches!(
            det_png(&det, "t", &[]),
            Err(PlotError::NoSeries { .. })
        ));
        let empty = DetSeries { points: &[], ..ok };
        assert!(matches!(
            det_png(&det, "t", &[ok, empty]),
            Err(PlotError::EmptyData { .. })
        ));
        let nan = [(f64::NAN, 0.5)];
        let nan = DetSeries { points: &nan, ..ok };
        assert!(matches!(
            det_png(&det, "t", &[nan]),
            Err(PlotError::NonFinite { .. })
        ));
        let jpg = dir.path().join("det.jpg");
        assert!(matches!(
            det_png(&jpg, "t", &[ok]),
            Err(PlotError::NotPng { .. })
        ));
        let missing_dir = dir.path().join("no/such/dir/det.png");
        let e = det_png(&missing_dir, "t", &[ok]).unwrap_err();
        assert!(matches!(e, PlotError::Draw { .. }), "{e}");
        assert!(e.to_string().contains("no/such/dir/det.png"), "{e}");
        assert!(!det.exists());

        let s = ScoreSeries {
            label: "a",
            targets: &[1.0, 2.0],
            nontargets: &[0.0],
        };
        assert!(matches!(
            scores_png(&scores, "t", &[], &[]),
            Err(PlotError::NoSeries { .. })
        ));
        let no_targets = ScoreSeries { targets: &[], ..s };
        assert!(matches!(
            scores_png(&scores, "t", &[no_targets], &[]),
            Err(PlotError::EmptyData {
                what: "target scores",
                ..
            })
        ));
        let no_nontargets = ScoreSeries {
            nontargets: &[],
            ..s
        };
        assert!(matches!(
            scores_png(&scores, "t", &[s, no_nontargets], &[]),
            Err(PlotError::EmptyData {
                what: "non-target scores",
                ..
            })
        ));
        let inf = ScoreSeries {
            nontargets: &[f64::INFINITY],
            ..s
        };
        assert!(matches!(
            scores_png(&scores, "t", &[inf], &[]),
            Err(PlotError::NonFinite { .. })
        ));
        assert!(matches!(
            scores_png(&scores, "t", &[s], &[None, None]),
            Err(PlotError::ThresholdCount {
                expected: 1,
                got: 2,
                ..
            })
        ));
        assert!(matches!(
            scores_png(&scores, "t", &[s], &[Some(f64::NAN)]),
            Err(PlotError::NonFinite {
                what: "threshold",
                ..
            })
        ));
        assert!(!scores.exists());
    }

    #[test]
    fn degenerate_but_valid_inputs_are_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let points = [(1.0, 0.0), (0.0, 0.0), (0.0, 1.0)];
        let det = [DetSeries {
            label: "perfect",
            points: &points,
            eer: 0.0,
        }];
        det_png(&dir.path().join("det.png"), "t", &det).unwrap();
        let same = ScoreSeries {
            label: "constant",
            targets: &[0.3],
            nontargets: &[0.3, 0.3],
        };
        scores_png(
            &dir.path().join("scores.png"),
            "t",
            &[same],
            &[Some(f64::INFINITY)],
        )
        .unwrap();
    }
}
