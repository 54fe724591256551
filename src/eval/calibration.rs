//! Fitting a score calibration ([`Calibration`], applied by [`crate::scoring`]): raw scores to
//! natural-log likelihood ratios, and a decision threshold at a chosen false-alarm rate.
//!
//! # Logistic calibration
//!
//! The LLR is affine in the raw score, `llr(s) = a·s + b`. As in BOSARIS / Brümmer's
//! `train_llr_fusion`, `(a, b)` minimise the prior-weighted cross-entropy
//!
//! ```text
//! C(a, b) = p · mean_t softplus(−(a·s + b + logit p))
//!         + (1 − p) · mean_n softplus(a·s + b + logit p)
//! ```
//!
//! over the target (`t`) and non-target (`n`) scores, where `p` is `p_target` and
//! `logit p = ln(p / (1 − p))`. The prior log-odds are only added during fitting: the fitted
//! LLR `a·s + b` does not contain them. This is ordinary logistic regression with sample
//! weights `p/N_t` and `(1 − p)/N_n` and the offset `logit p`.
//!
//! The scores are first standardised (pooled mean and population standard deviation), so that
//! the stopping rule does not depend on their scale. `C` is then minimised with Newton's method
//! (exact 2×2 Hessian) from `(0, 0)`, halving the step until the Armijo condition holds, and
//! stops when every gradient component is below 1e-12 in magnitude (or when rounding leaves no
//! further decrease). The computation is deterministic. If all scores are equal they carry no
//! information and the fit is `a = b = 0`. Scores where the targets and the non-targets do not
//! overlap (every target `>=` every non-target, or `<=`) have no finite optimum — the slope
//! would grow without bound — and are refused with [`FitError::Separated`].
//!
//! # Gaussian calibration
//!
//! Scores that separate the classes completely (a strong model on clean speech) have no
//! logistic optimum. [`Calibration::fit_gaussian`] models each class as a Gaussian with their
//! pooled (within-class) variance `σ²`, which gives the affine LLR
//! `llr(s) = (μ_t − μ_n)/σ² · (s − (μ_t + μ_n)/2)`, finite for any scores. Its threshold is
//! read from the Gaussian model of the non-target scores alone (their own mean and standard
//! deviation) at the target false-alarm rate, so that rates far below one over the number of
//! non-target trials can be stated; the empirical rates at that threshold are reported beside
//! it.
//!
//! # Threshold
//!
//! [`threshold_at_fa`] picks the decision threshold on raw scores (accept when
//! `score >= threshold`, as in [`super::metrics`]) with at most a given false-alarm rate on the
//! non-target scores.

use super::metrics::{check_scores, MetricsError};
use crate::scoring::calibration::{Calibration, Method};

/// Gradient magnitude (per component, standardised scores) at which the fit has converged.
const GRADIENT_TOLERANCE: f64 = 1e-12;
/// Newton iterations before the fit gives up.
const MAX_ITERATIONS: usize = 100;
/// Step halvings tried by the line search before rounding is taken to stop all progress.
const MAX_HALVINGS: u32 = 60;

/// Why a calibration could not be fitted.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error(transparent)]
    Scores(#[from] MetricsError),
    #[error("p_target must lie in the open interval (0, 1), got {0}")]
    InvalidPTarget(f64),
    #[error("target_fa_rate must lie in the open interval (0, 1), got {0}")]
    InvalidFaRate(f64),
    #[error(
        "a false-alarm rate of {rate} needs at least {needed} nontarget scores to be resolved, \
         got {have}"
    )]
    TooFewNontargets {
        rate: f64,
        needed: usize,
        have: usize,
    },
    #[error(
        "target scores [{min_target}, {max_target}] and nontarget scores [{min_nontarget}, \
         {max_nontarget}] do not overlap, so logistic calibration has no finite solution; \
         fit on more trials, or use the Gaussian calibration (`--method gaussian`)"
    )]
    Separated {
        min_target: f64,
        max_target: f64,
        min_nontarget: f64,
        max_nontarget: f64,
    },
    #[error(
        "the scores of a class are all equal, so a Gaussian calibration has no variance to \
         model"
    )]
    NoSpread,
    #[error(
        "logistic calibration did not converge in {iterations} iterations (gradient {gradient:e})"
    )]
    NotConverged { iterations: usize, gradient: f64 },
}

impl Calibration {
    /// Fits the logistic calibration for `p_target` and the threshold at `target_fa_rate` (see
    /// the module docs). `model` and `model_sha256` are left empty.
    pub fn fit(
        targets: &[f64],
        nontargets: &[f64],
        p_target: f64,
        target_fa_rate: f64,
    ) -> Result<Self, FitError> {
        check_scores(targets, nontargets)?;
        // Written so that NaN fails too.
        if !(p_target > 0.0 && p_target < 1.0) {
            return Err(FitError::InvalidPTarget(p_target));
        }
        if !(target_fa_rate > 0.0 && target_fa_rate < 1.0) {
            return Err(FitError::InvalidFaRate(target_fa_rate));
        }
        let needed = (1.0 / target_fa_rate).ceil() as usize;
        if nontargets.len() < needed {
            return Err(FitError::TooFewNontargets {
                rate: target_fa_rate,
                needed,
                have: nontargets.len(),
            });
        }
        let (slope, offset) = logistic_fit(targets, nontargets, p_target)?;
        let threshold = threshold_at_fa(nontargets, target_fa_rate);
        let (nontarget_mean, nontarget_sd) = mean_sd(nontargets);
        Ok(Self {
            method: Method::Logistic,
            nontarget_mean: Some(nontarget_mean),
            nontarget_sd: (nontarget_sd > 0.0).then_some(nontarget_sd),
            slope,
            offset,
            p_target,
            threshold,
            target_fa_rate,
            fa_rate: share(nontargets, |s| s >= threshold),
            miss_rate: share(targets, |s| s < threshold),
            n_target: targets.len(),
            n_nontarget: nontargets.len(),
            model: String::new(),
            model_sha256: String::new(),
        })
    }
}

impl Calibration {
    /// Fits the shared-variance Gaussian calibration and reads its threshold at
    /// `target_fa_rate` from the Gaussian non-target model (see the module docs). `p_target` is
    /// recorded for the DCF it is read with; `model` and `model_sha256` are left empty.
    pub fn fit_gaussian(
        targets: &[f64],
        nontargets: &[f64],
        p_target: f64,
        target_fa_rate: f64,
    ) -> Result<Self, FitError> {
        check_scores(targets, nontargets)?;
        if !(p_target > 0.0 && p_target < 1.0) {
            return Err(FitError::InvalidPTarget(p_target));
        }
        if !(target_fa_rate > 0.0 && target_fa_rate < 1.0) {
            return Err(FitError::InvalidFaRate(target_fa_rate));
        }
        let (mean_t, sd_t) = mean_sd(targets);
        let (mean_n, sd_n) = mean_sd(nontargets);
        let (n_t, n_n) = (targets.len() as f64, nontargets.len() as f64);
        let pooled = (n_t * sd_t * sd_t + n_n * sd_n * sd_n) / (n_t + n_n);
        if !(pooled > 0.0 && sd_n > 0.0) {
            return Err(FitError::NoSpread);
        }
        let slope = (mean_t - mean_n) / pooled;
        let offset = -slope * (mean_t + mean_n) / 2.0;
        let mut c = Self {
            method: Method::Gaussian,
            slope,
            offset,
            p_target,
            threshold: 0.0,
            target_fa_rate,
            fa_rate: 0.0,
            miss_rate: 0.0,
            nontarget_mean: Some(mean_n),
            nontarget_sd: Some(sd_n),
            n_target: targets.len(),
            n_nontarget: nontargets.len(),
            model: String::new(),
            model_sha256: String::new(),
        };
        c.threshold = c
            .score_at_false_alarm(target_fa_rate)
            .expect("the non-target model was just set");
        c.fa_rate = share(nontargets, |s| s >= c.threshold);
        c.miss_rate = share(targets, |s| s < c.threshold);
        Ok(c)
    }
}

/// Mean and population standard deviation of non-empty scores.
fn mean_sd(scores: &[f64]) -> (f64, f64) {
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The lowest threshold θ on the given scores (one of the non-target scores, or the next float
/// above their maximum) such that the share of non-targets with `score >= θ` is `<= rate`.
/// Equal scores change side together, so θ is never inside a run of ties. Scores should be
/// finite; with no non-targets the result is `+∞` (accept nothing).
pub fn threshold_at_fa(nontargets: &[f64], rate: f64) -> f64 {
    let mut v = nontargets.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    let Some(&max) = v.last() else {
        return f64::INFINITY;
    };
    // k = number of scores below the candidate v[k], always the first of its run of ties.
    let mut k = 0;
    while k < n {
        if (n - k) as f64 / n as f64 <= rate {
            return v[k];
        }
        let u = v[k];
        while k < n && v[k] == u {
            k += 1;
        }
    }
    max.next_up()
}

fn share(scores: &[f64], pred: impl Fn(f64) -> bool) -> f64 {
    scores.iter().filter(|&&s| pred(s)).count() as f64 / scores.len() as f64
}

/// `(min, max)` of non-empty, finite scores.
fn range(scores: &[f64]) -> (f64, f64) {
    scores
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| {
            (lo.min(s), hi.max(s))
        })
}

/// `ln(1 + e^x)` without overflow or loss of precision for large |x|.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + e^−x)`; saturates to 0 or 1 without producing NaN.
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The objective, its gradient and its Hessian `[h_aa, h_ab, h_bb]` at `(a, b)`.
struct Eval {
    value: f64,
    grad: [f64; 2],
    hess: [f64; 3],
}

/// The prior-weighted logistic objective of the module docs on (standardised) scores.
struct Objective<'a> {
    targets: &'a [f64],
    nontargets: &'a [f64],
    p: f64,
    logit_p: f64,
}

impl Objective<'_> {
    fn eval(&self, a: f64, b: f64) -> Eval {
        // Per class, with z = a·s + b + logit p: the weighted means of the loss, of its first
        // derivative in z times (s, 1) and of its second derivative times (s², s, 1).
        let class = |scores: &[f64], sign: f64, weight: f64| {
            let mut sums = [0.0; 6];
            for &s in scores {
                let z = a * s + b + self.logit_p;
                // Target: softplus(−z), derivative −σ(−z); nontarget: softplus(z), σ(z).
                let d1 = sign * sigmoid(sign * z);
                let d2 = sigmoid(z) * sigmoid(-z);
                let terms = [softplus(sign * z), d1 * s, d1, d2 * s * s, d2 * s, d2];
                for (acc, x) in sums.iter_mut().zip(terms) {
                    *acc += x;
                }
            }
            sums.map(|x| x * weight / scores.len() as f64)
        };
        let t = class(self.targets, -1.0, self.p);
        let n = class(self.nontargets, 1.0, 1.0 - self.p);
        Eval {
            value: t[0] + n[0],
            grad: [t[1] + n[1], t[2] + n[2]],
            hess: [t[3] + n[3], t[4] + n[4], t[5] + n[5]],
        }
    }
}

/// `(slope, offset)` of the prior-weighted logistic calibration (see the module docs).
fn logistic_fit(targets: &[f64], nontargets: &[f64], p: f64) -> Result<(f64, f64), FitError> {
    let count = (targets.len() + nontargets.len()) as f64;
    let all = || targets.iter().chain(nontargets);
    let mean = all().sum::<f64>() / count;
    let sd = (all().map(|&s| (s - mean) * (s - mean)).sum::<f64>() / count).sqrt();
    if sd == 0.0 {
        return Ok((0.0, 0.0));
    }
    let (min_target, max_target) = range(targets);
    let (min_nontarget, max_nontarget) = range(nontargets);
    if max_nontarget <= min_target || max_target <= min_nontarget {
        return Err(FitError::Separated {
            min_target,
            max_target,
            min_nontarget,
            max_nontarget,
        });
    }
    let standardise = |v: &[f64]| v.iter().map(|&s| (s - mean) / sd).collect::<Vec<_>>();
    let (t, n) = (standardise(targets), standardise(nontargets));
    let objective = Objective {
        targets: &t,
        nontargets: &n,
        p,
        logit_p: (p / (1.0 - p)).ln(),
    };
    let (a, b) = minimise(&objective)?;
    let slope = a / sd;
    Ok((slope, b - slope * mean))
}

/// Damped Newton iteration from `(0, 0)`.
fn minimise(objective: &Objective) -> Result<(f64, f64), FitError> {
    let (mut a, mut b) = (0.0, 0.0);
    let mut e = objective.eval(a, b);
    for _ in 0..MAX_ITERATIONS {
        let [ga, gb] = e.grad;
        if ga.abs().max(gb.abs()) < GRADIENT_TOLERANCE {
            return Ok((a, b));
        }
        let [haa, hab, hbb] = e.hess;
        let det = haa * hbb - hab * hab;
        // Newton direction −H⁻¹g; steepest descent if the Hessian is numerically singular.
        let (mut da, mut db) = if det > 0.0 {
            ((hab * gb - hbb * ga) / det, (hab * ga - haa * gb) / det)
        } else {
            (-ga, -gb)
        };
        if !(da.is_finite() && db.is_finite()) {
            (da, db) = (-ga, -gb);
        }
        // Directional derivative along the step, < 0: a descent direction.
        let descent = ga * da + gb * db;
        // Once the predicted decrease is below the objective's rounding, values can no longer
        // rank steps: take the full Newton step (the quadratic model is exact there).
        let negligible = -descent <= 1e-14 * (1.0 + e.value.abs());
        let mut step = 1.0;
        let mut halvings = 0;
        let next = loop {
            let candidate = objective.eval(a + step * da, b + step * db);
            let armijo = candidate.value <= e.value + 1e-4 * step * descent;
            if armijo || (negligible && halvings == 0) {
                break Some(candidate);
            }
            halvings += 1;
            if halvings > MAX_HALVINGS {
                break None;
            }
            step *= 0.5;
        };
        let (a_next, b_next) = (a + step * da, b + step * db);
        let Some(next) = next.filter(|_| (a_next, b_next) != (a, b)) else {
            // No representable progress left: converged as far as rounding allows.
            return Ok((a, b));
        };
        (a, b, e) = (a_next, b_next, next);
    }
    let [ga, gb] = e.grad;
    Err(FitError::NotConverged {
        iterations: MAX_ITERATIONS,
        gradient: ga.abs().max(gb.abs()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::{cllr, SplitMix64};
    use crate::scoring::calibration::CalibrationError;

    /// `n` draws from N(mean, 1) (Box–Muller on SplitMix64).
    fn gaussian(rng: &mut SplitMix64, n: usize, mean: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let u1 = 1.0 - rng.uniform(); // (0, 1]
                let u2 = rng.uniform();
                mean + (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            })
            .collect()
    }

    fn gaussians() -> (Vec<f64>, Vec<f64>) {
        let mut rng = SplitMix64::new(42);
        let t = gaussian(&mut rng, 2000, 2.0);
        let n = gaussian(&mut rng, 20000, 0.0);
        (t, n)
    }

    #[test]
    fn gaussian_scores_give_the_theoretical_llr_and_a_lower_cllr() {
        // For N(2, 1) vs N(0, 1) the true LLR is 2s − 2.
        let (t, n) = gaussians();
        let c = Calibration::fit(&t, &n, 0.5, 0.01).unwrap();
        assert!((c.slope - 2.0).abs() < 0.15, "{c:?}");
        assert!((c.offset + 2.0).abs() < 0.15, "{c:?}");
        let llr = |v: &[f64]| v.iter().map(|&s| c.llr(s)).collect::<Vec<_>>();
        let calibrated = cllr(&llr(&t), &llr(&n)).unwrap();
        let raw = cllr(&t, &n).unwrap();
        assert!(calibrated <= raw, "calibrated {calibrated} vs raw {raw}");
        // The optimum of the objective (Cllr-like for p = 0.5) beats nearby parameters.
        let objective = |a: f64, b: f64| {
            let v = |x: &[f64]| x.iter().map(|&s| a * s + b).collect::<Vec<_>>();
            cllr(&v(&t), &v(&n)).unwrap()
        };
        for (da, db) in [(1e-3, 0.0), (-1e-3, 0.0), (0.0, 1e-3), (0.0, -1e-3)] {
            assert!(calibrated < objective(c.slope + da, c.offset + db));
        }
    }

    #[test]
    fn threshold_and_rates_on_the_fitting_data() {
        let (t, n) = gaussians();
        let c = Calibration::fit(&t, &n, 0.01, 0.01).unwrap();
        assert_eq!(c.threshold, threshold_at_fa(&n, 0.01));
        assert!(c.fa_rate <= 0.01 && c.fa_rate > 0.009, "{c:?}");
        let misses = t.iter().filter(|&&s| s < c.threshold).count();
        assert_eq!(c.miss_rate, misses as f64 / t.len() as f64);
        assert_eq!((c.n_target, c.n_nontarget), (2000, 20000));
        assert_eq!((c.p_target, c.target_fa_rate), (0.01, 0.01));
        assert!(c.model.is_empty() && c.model_sha256.is_empty());
    }

    #[test]
    fn nearly_separable_scores_give_a_positive_slope() {
        let t = [1.0, 2.0, 3.0, 0.4, 2.5];
        let n = [-1.0, -2.0, 0.5, -0.5, 0.0, -3.0];
        let c = Calibration::fit(&t, &n, 0.5, 0.2).unwrap();
        assert!(
            c.slope > 0.0 && c.slope.is_finite() && c.offset.is_finite(),
            "{c:?}"
        );
        assert_eq!((c.threshold, c.fa_rate, c.miss_rate), (0.5, 1.0 / 6.0, 0.2));
        // A single overlapping pair, very close together, among separated scores: steep but
        // finite, at the weight of the rare class.
        let t = [1.0, 2.0, 3.0, 10.0, 0.9995];
        let n = [-1.0, -2.0, -3.0, 0.999, 1.0001];
        let c = Calibration::fit(&t, &n, 0.01, 0.2).unwrap();
        assert!(
            c.slope > 10.0 && c.slope.is_finite() && c.offset.is_finite(),
            "{c:?}"
        );
    }

    #[test]
    fn separated_scores_are_refused() {
        for (t, n) in [
            (&[1.0, 2.0, 3.0][..], &[-1.0, -2.0, -3.0][..]),
            (&[1.0, 2.0], &[0.5, 1.0]), // touching: still no finite optimum
            (&[-1.0, -2.0], &[1.0, 2.0]), // reversed
        ] {
            let e = Calibration::fit(t, n, 0.5, 0.5).unwrap_err();
            assert!(matches!(e, FitError::Separated { .. }), "{e}");
            assert!(e.to_string().contains("do not overlap"), "{e}");
        }
    }

    #[test]
    fn gaussian_fit_gives_the_theoretical_llr_and_a_tail_threshold() {
        // N(2, 1) vs N(0, 1): LLR 2s − 2; the 1e-3 upper tail of N(0, 1) is at 3.090.
        let (t, n) = gaussians();
        let c = Calibration::fit_gaussian(&t, &n, 0.01, 1e-3).unwrap();
        assert_eq!(c.method, Method::Gaussian);
        assert!((c.slope - 2.0).abs() < 0.1, "{c:?}");
        assert!((c.offset + 2.0).abs() < 0.1, "{c:?}");
        assert!((c.threshold - 3.090).abs() < 0.05, "{c:?}");
        assert!(c.fa_rate < 2e-3 && c.miss_rate > 0.8, "{c:?}");
        let at = c.false_alarm_at(c.threshold).unwrap();
        assert!((at - 1e-3).abs() < 1e-9, "{at}");
        // Scores the logistic fit refuses (no overlap) still calibrate.
        let c =
            Calibration::fit_gaussian(&[0.8, 0.9, 0.7], &[0.1, 0.2, 0.0, 0.3], 0.5, 1e-4).unwrap();
        assert!(
            c.slope > 0.0 && c.llr(0.8) > 0.0 && c.llr(0.15) < 0.0,
            "{c:?}"
        );
        assert!(c.threshold > 0.3 && c.fa_rate == 0.0, "{c:?}");
        let e = Calibration::fit_gaussian(&[0.8, 0.9], &[0.1, 0.1], 0.5, 1e-4).unwrap_err();
        assert!(matches!(e, FitError::NoSpread), "{e}");
    }

    #[test]
    fn fit_is_equivariant_under_an_affine_change_of_scores() {
        // Cosine-like scores (small spread around a large mean) give the same LLRs.
        let (t, n) = gaussians();
        let c = Calibration::fit(&t, &n, 0.01, 0.01).unwrap();
        let shift = |v: &[f64]| v.iter().map(|&s| 0.05 * s + 100.0).collect::<Vec<_>>();
        let d = Calibration::fit(&shift(&t), &shift(&n), 0.01, 0.01).unwrap();
        assert!((d.slope * 0.05 / c.slope - 1.0).abs() < 1e-9, "{c:?} {d:?}");
        for s in [-2.0, 0.0, 1.5, 4.0] {
            assert!((d.llr(0.05 * s + 100.0) - c.llr(s)).abs() < 1e-6);
        }
        assert_eq!((d.fa_rate, d.miss_rate), (c.fa_rate, c.miss_rate));
    }

    #[test]
    fn constant_scores_give_an_uninformative_llr() {
        let c = Calibration::fit(&[0.3, 0.3], &[0.3, 0.3, 0.3], 0.1, 0.5).unwrap();
        assert_eq!((c.slope, c.offset), (0.0, 0.0));
        assert_eq!(c.threshold, 0.3_f64.next_up());
    }

    #[test]
    fn json_round_trip() {
        let (t, n) = gaussians();
        let mut c = Calibration::fit(&t, &n, 0.01, 0.001).unwrap();
        c.model = "ge2e-resemblyzer".into();
        c.model_sha256 = "a5d4".into();
        let text = c.to_json();
        assert!(text.contains("\n  \"slope\": "), "{text}");
        assert_eq!(Calibration::from_json(&text, "x.json").unwrap(), c);
    }

    #[test]
    fn from_json_errors_name_the_origin() {
        let e = Calibration::from_json("{", "cal.json").unwrap_err();
        assert!(matches!(e, CalibrationError::Json { .. }));
        assert!(e.to_string().starts_with("cal.json: "), "{e}");
        let (t, n) = gaussians();
        let good = Calibration::fit(&t, &n, 0.01, 0.01).unwrap().to_json();
        let extra = good.replacen('{', "{\"slop\": 1.0,", 1);
        assert!(Calibration::from_json(&extra, "cal.json").is_err());
        let bad = good.replacen("\"p_target\": 0.01", "\"p_target\": 1.5", 1);
        let e = Calibration::from_json(&bad, "cal.json").unwrap_err();
        assert!(matches!(e, CalibrationError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("cal.json") && e.to_string().contains("p_target"));
        let bad = good.replacen("\"miss_rate\": ", "\"miss_rate\": -", 1);
        assert!(Calibration::from_json(&bad, "cal.json").is_err());
    }

    #[test]
    fn threshold_at_fa_moves_ties_together() {
        let n = [2.0, 1.0, 2.0, 3.0, 2.0];
        // Candidates (θ: share ≥ θ): 1: 5/5, 2: 4/5, 3: 1/5, next_up(3): 0.
        assert_eq!(threshold_at_fa(&n, 1.0), 1.0);
        assert_eq!(threshold_at_fa(&n, 0.8), 2.0);
        assert_eq!(threshold_at_fa(&n, 0.5), 3.0);
        assert_eq!(threshold_at_fa(&n, 0.2), 3.0);
        assert_eq!(threshold_at_fa(&n, 0.1), 3.0_f64.next_up());
        // Tied maximum: both copies change side together.
        assert_eq!(threshold_at_fa(&[1.0, 3.0, 3.0], 0.5), 3.0_f64.next_up());
        assert_eq!(threshold_at_fa(&[], 0.5), f64::INFINITY);
    }

    #[test]
    fn fit_errors() {
        let n: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let t = [0.5, 0.9];
        assert!(matches!(
            Calibration::fit(&[], &n, 0.5, 0.1),
            Err(FitError::Scores(MetricsError::EmptyTargets))
        ));
        assert!(matches!(
            Calibration::fit(&t, &[], 0.5, 0.1),
            Err(FitError::Scores(MetricsError::EmptyNontargets))
        ));
        let e = Calibration::fit(&t, &[0.0, f64::NAN], 0.5, 0.1).unwrap_err();
        assert!(matches!(
            e,
            FitError::Scores(MetricsError::NonFiniteScore {
                set: "nontarget",
                index: 1,
                ..
            })
        ));
        for p in [0.0, 1.0, f64::NAN] {
            assert!(matches!(
                Calibration::fit(&t, &n, p, 0.1),
                Err(FitError::InvalidPTarget(_))
            ));
            assert!(matches!(
                Calibration::fit(&t, &n, 0.5, p),
                Err(FitError::InvalidFaRate(_))
            ));
        }
        assert!(Calibration::fit(&t, &n, 0.5, 0.01).is_ok());
        let e = Calibration::fit(&t, &n, 0.5, 0.001).unwrap_err();
        assert!(matches!(
            e,
            FitError::TooFewNontargets {
                needed: 1000,
                have: 100,
                ..
            }
        ));
        assert!(e.to_string().contains("at least 1000"), "{e}");
    }
}
