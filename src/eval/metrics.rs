//! Speaker-verification metrics over scored trials.
//!
//! # API and conventions
//!
//! Every function takes the scores of the **target** trials (same speaker) and of the
//! **nontarget** trials (different speakers) as two slices, `targets: &[f64]` and
//! `nontargets: &[f64]`. A higher score means "more likely the same speaker".
//!
//! * **Decision rule:** at threshold `θ` a trial is accepted as target when `score >= θ`.
//! * **Error rates:** `P_miss(θ)` = share of targets with `score < θ`;
//!   `P_fa(θ)` = share of nontargets with `score >= θ`.
//! * **Operating points:** one for every unique score `u` (ascending), with `θ = u`, followed
//!   by one at `θ = +∞` (reject everything: `P_miss = 1`, `P_fa = 0`). The first point
//!   (`θ` = the lowest score) accepts everything (`P_miss = 0`, `P_fa = 1`). All trials that
//!   share a score therefore change side together. Sorting makes every metric O(n log n).
//! * **EER:** walking the operating points in ascending threshold order, take the first point
//!   `i` with `P_miss ≥ P_fa`. If they are equal there, EER is that value and the threshold is
//!   `θ_i`. Otherwise the EER is where the straight segment between point `i−1` and point `i`
//!   of the DET (ROC) curve crosses the line `P_miss = P_fa`: with `d = P_fa − P_miss`,
//!   `t = d_{i−1} / (d_{i−1} − d_i)`, `EER = P_miss_{i−1} + t·(P_miss_i − P_miss_{i−1})`
//!   (which equals the same interpolation of `P_fa`), and the reported threshold is
//!   `θ_{i−1} + t·(θ_i − θ_{i−1})`, or `θ_{i−1}` when `θ_i = +∞`. Perfectly separated scores
//!   give EER 0; identical target and nontarget distributions give 0.5.
//! * **DCF (NIST, normalised):** `C(θ) = (c_miss·p_target·P_miss(θ) + c_fa·(1−p_target)·P_fa(θ))
//!   / min(c_miss·p_target, c_fa·(1−p_target))`. `min_dcf` is the minimum over all operating
//!   points (first one in ascending threshold order on ties), so it is never above 1;
//!   `act_dcf` is `C` at a given threshold.
//! * **Cllr:** scores are natural-log likelihood ratios;
//!   `Cllr = ½[mean log2(1+e^{−s}) over targets + mean log2(1+e^{s}) over nontargets]`,
//!   computed with a stable softplus.
//!
//! Inputs must be non-empty and finite (thresholds given to [`act_dcf`] may be ±∞);
//! `p_target` must lie in the open interval (0, 1) and the costs must be finite and > 0.

use std::cmp::Ordering;

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("the set of target scores is empty")]
    EmptyTargets,
    #[error("the set of nontarget scores is empty")]
    EmptyNontargets,
    #[error("{set} score at index {index} is not finite ({value})")]
    NonFiniteScore {
        set: &'static str,
        index: usize,
        value: f64,
    },
    #[error("threshold is NaN")]
    NanThreshold,
    #[error("p_target must lie in the open interval (0, 1), got {0}")]
    InvalidPTarget(f64),
    #[error("{name} must be finite and > 0, got {value}")]
    InvalidCost { name: &'static str, value: f64 },
    #[error("bootstrap needs at least one resample")]
    NoResamples,
}

/// The equal error rate and the threshold at which it is reached (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EerResult {
    pub eer: f64,
    pub threshold: f64,
}

/// A normalised detection cost and the threshold at which it is reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DcfResult {
    pub dcf: f64,
    pub threshold: f64,
}

/// One operating point: threshold and the two error rates there.
#[derive(Debug, Clone, Copy)]
struct Point {
    threshold: f64,
    p_miss: f64,
    p_fa: f64,
}

/// Checks that both score sets are non-empty and finite.
pub(crate) fn check_scores(targets: &[f64], nontargets: &[f64]) -> Result<(), MetricsError> {
    if targets.is_empty() {
        return Err(MetricsError::EmptyTargets);
    }
    if nontargets.is_empty() {
        return Err(MetricsError::EmptyNontargets);
    }
    for (set, scores) in [("target", targets), ("nontarget", nontargets)] {
        if let Some((index, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return Err(MetricsError::NonFiniteScore { set, index, value });
        }
    }
    Ok(())
}

fn check_costs(p_target: f64, c_miss: f64, c_fa: f64) -> Result<(), MetricsError> {
    // Written so that NaN fails too.
    if !(p_target > 0.0 && p_target < 1.0) {
        return Err(MetricsError::InvalidPTarget(p_target));
    }
    for (name, value) in [("c_miss", c_miss), ("c_fa", c_fa)] {
        if !(value.is_finite() && value > 0.0) {
            return Err(MetricsError::InvalidCost { name, value });
        }
    }
    Ok(())
}

fn sorted(scores: &[f64]) -> Vec<f64> {
    let mut v = scores.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    v
}

/// All operating points in ascending threshold order, ending with `θ = +∞`.
/// Inputs must already be validated.
fn operating_points(targets: &[f64], nontargets: &[f64]) -> Vec<Point> {
    let t = sorted(targets);
    let n = sorted(nontargets);
    let (nt, nn) = (t.len(), n.len());
    let (ntf, nnf) = (nt as f64, nn as f64);
    let mut points = Vec::with_capacity(nt + nn + 1);
    // i = number of targets below the current threshold, j = number of nontargets below it.
    let (mut i, mut j) = (0usize, 0usize);
    while i < nt || j < nn {
        let u = match (t.get(i), n.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => unreachable!(),
        };
        points.push(Point {
            threshold: u,
            p_miss: i as f64 / ntf,
            p_fa: (nn - j) as f64 / nnf,
        });
        // Every trial with score u moves to the rejected side for the next threshold.
        while i < nt && t[i] == u {
            i += 1;
        }
        while j < nn && n[j] == u {
            j += 1;
        }
    }
    points.push(Point {
        threshold: f64::INFINITY,
        p_miss: 1.0,
        p_fa: 0.0,
    });
    points
}

/// Equal error rate (see the module docs for the exact convention).
pub fn eer(targets: &[f64], nontargets: &[f64]) -> Result<EerResult, MetricsError> {
    check_scores(targets, nontargets)?;
    let points = operating_points(targets, nontargets);
    // The last point has P_miss = 1 ≥ P_fa = 0, so a crossing always exists; the first has
    // P_miss = 0 ≤ P_fa = 1, so if i > 0 point i−1 has P_miss < P_fa.
    let i = points
        .iter()
        .position(|p| p.p_miss >= p.p_fa)
        .expect("last operating point has P_miss = 1 >= P_fa = 0");
    let cur = points[i];
    if cur.p_miss == cur.p_fa {
        return Ok(EerResult {
            eer: cur.p_miss,
            threshold: cur.threshold,
        });
    }
    let prev = points[i - 1];
    let d_prev = prev.p_fa - prev.p_miss; // > 0
    let d_cur = cur.p_fa - cur.p_miss; // < 0
    let t = d_prev / (d_prev - d_cur);
    let eer = prev.p_miss + t * (cur.p_miss - prev.p_miss);
    let threshold = if cur.threshold.is_finite() {
        prev.threshold + t * (cur.threshold - prev.threshold)
    } else {
        prev.threshold
    };
    Ok(EerResult { eer, threshold })
}

fn normalised_cost(p_miss: f64, p_fa: f64, p_target: f64, c_miss: f64, c_fa: f64) -> f64 {
    let w_miss = c_miss * p_target;
    let w_fa = c_fa * (1.0 - p_target);
    (w_miss * p_miss + w_fa * p_fa) / w_miss.min(w_fa)
}

/// Normalised minimum detection cost over all operating points, with its threshold (the
/// lowest threshold reaching the minimum).
pub fn min_dcf(
    targets: &[f64],
    nontargets: &[f64],
    p_target: f64,
    c_miss: f64,
    c_fa: f64,
) -> Result<DcfResult, MetricsError> {
    check_costs(p_target, c_miss, c_fa)?;
    check_scores(targets, nontargets)?;
    let mut best = DcfResult {
        dcf: f64::INFINITY,
        threshold: f64::NAN,
    };
    for p in operating_points(targets, nontargets) {
        let c = normalised_cost(p.p_miss, p.p_fa, p_target, c_miss, c_fa);
        if c < best.dcf {
            best = DcfResult {
                dcf: c,
                threshold: p.threshold,
            };
        }
    }
    Ok(best)
}

/// Normalised detection cost at `threshold` (a trial is accepted when `score >= threshold`).
/// The threshold may be ±∞ (accept nothing / everything) but not NaN.
pub fn act_dcf(
    targets: &[f64],
    nontargets: &[f64],
    threshold: f64,
    p_target: f64,
    c_miss: f64,
    c_fa: f64,
) -> Result<f64, MetricsError> {
    check_costs(p_target, c_miss, c_fa)?;
    check_scores(targets, nontargets)?;
    if threshold.is_nan() {
        return Err(MetricsError::NanThreshold);
    }
    let misses = targets.iter().filter(|&&s| s < threshold).count();
    let fas = nontargets.iter().filter(|&&s| s >= threshold).count();
    let p_miss = misses as f64 / targets.len() as f64;
    let p_fa = fas as f64 / nontargets.len() as f64;
    Ok(normalised_cost(p_miss, p_fa, p_target, c_miss, c_fa))
}

/// All operating points as `(p_fa, p_miss, threshold)`, in ascending threshold order: one per
/// unique score, then `(0, 1, +∞)`. `p_fa` falls and `p_miss` rises along the vector.
pub fn det_curve(
    targets: &[f64],
    nontargets: &[f64],
) -> Result<Vec<(f64, f64, f64)>, MetricsError> {
    check_scores(targets, nontargets)?;
    Ok(operating_points(targets, nontargets)
        .into_iter()
        .map(|p| (p.p_fa, p.p_miss, p.threshold))
        .collect())
}

/// `ln(1 + e^x)` without overflow or loss of precision for large |x|.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Log-likelihood-ratio cost, in bits, of scores that are natural-log likelihood ratios.
/// 1.0 for an uninformative system (all LLRs 0), 0 for a perfect, confident one.
pub fn cllr(targets_llr: &[f64], nontargets_llr: &[f64]) -> Result<f64, MetricsError> {
    check_scores(targets_llr, nontargets_llr)?;
    let mean =
        |v: &[f64], sign: f64| v.iter().map(|&s| softplus(sign * s)).sum::<f64>() / v.len() as f64;
    let nats = 0.5 * (mean(targets_llr, -1.0) + mean(nontargets_llr, 1.0));
    Ok(nats / std::f64::consts::LN_2)
}

/// SplitMix64: a small, fast, deterministic PRNG (Steele, Lea & Flood 2014).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An index in `0..n` (multiply-shift; the bias is below n / 2^64, negligible here).
    pub(crate) fn index(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[cfg(test)]
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Percentile `q` (0..=1) of sorted values, linearly interpolated (numpy's default).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

/// 95 % percentile bootstrap interval `(lower, upper)` of `metric(targets, nontargets)`.
///
/// Each of `resamples` rounds draws `targets.len()` targets and `nontargets.len()` nontargets
/// independently, uniformly with replacement (SplitMix64 seeded with `seed`, so a fixed seed
/// gives the same interval), and evaluates `metric`. The bounds are the 2.5th and 97.5th
/// percentiles of those values, linearly interpolated as numpy's default `percentile`.
/// Resamples are non-empty and finite, so `metric` may unwrap e.g. [`eer`]'s result.
pub fn bootstrap_ci<F: Fn(&[f64], &[f64]) -> f64>(
    targets: &[f64],
    nontargets: &[f64],
    metric: F,
    resamples: usize,
    seed: u64,
) -> Result<(f64, f64), MetricsError> {
    check_scores(targets, nontargets)?;
    if resamples == 0 {
        return Err(MetricsError::NoResamples);
    }
    let mut rng = SplitMix64::new(seed);
    let mut t = vec![0.0; targets.len()];
    let mut n = vec![0.0; nontargets.len()];
    let mut values = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for x in t.iter_mut() {
            *x = targets[rng.index(targets.len())];
        }
        for x in n.iter_mut() {
            *x = nontargets[rng.index(nontargets.len())];
        }
        values.push(metric(&t, &n));
    }
    values.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    Ok((percentile(&values, 0.025), percentile(&values, 0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= EPS
    }

    // Hand example A (no ties): targets [0.9, 0.8, 0.7, 0.3] (4), nontargets
    // [0.6, 0.5, 0.4, 0.35, 0.2, 0.1] (6). Operating points (θ: P_miss, P_fa):
    //   0.1: 0, 6/6   0.2: 0, 5/6   0.3: 0, 4/6   0.35: 1/4, 4/6   0.4: 1/4, 3/6
    //   0.5: 1/4, 2/6   0.6: 1/4, 1/6   0.7: 1/4, 0   0.8: 2/4, 0   0.9: 3/4, 0   ∞: 1, 0
    // First point with P_miss ≥ P_fa is θ = 0.6 (1/4 ≥ 1/6); before it θ = 0.5 (d = 1/3 − 1/4
    // = 1/12), at it d = 1/6 − 1/4 = −1/12, so t = 1/2: EER = 1/4, threshold 0.55.
    // minDCF, p_target 0.5, costs 1: C = P_miss + P_fa → minimum 1/4 at θ = 0.7.
    // minDCF, p_target 0.01, costs 1: C = P_miss + 99·P_fa → only P_fa = 0 points compete:
    //   0.7: 1/4, 0.8: 1/2, 0.9: 3/4, ∞: 1 → 1/4 at θ = 0.7.
    const A_T: [f64; 4] = [0.9, 0.8, 0.7, 0.3];
    const A_N: [f64; 6] = [0.6, 0.5, 0.4, 0.35, 0.2, 0.1];

    // Hand example B (a target and a nontarget tie at 0.5): targets [0.9, 0.8, 0.5, 0.3],
    // nontargets as in A. Operating points (θ: P_miss, P_fa):
    //   0.1: 0, 1   0.2: 0, 5/6   0.3: 0, 4/6   0.35: 1/4, 4/6   0.4: 1/4, 3/6
    //   0.5: 1/4, 2/6   0.6: 2/4, 1/6   0.8: 2/4, 0   0.9: 3/4, 0   ∞: 1, 0
    // (at θ = 0.5 both tied trials are accepted; at θ = 0.6 both are rejected.)
    // Crossing between 0.5 (d = 1/12) and 0.6 (d = 1/6 − 1/2 = −1/3): t = (1/12)/(5/12) = 1/5,
    // EER = 1/4 + (1/5)(1/4) = 0.3 (= 1/3 − (1/5)(1/6)), threshold 0.5 + 0.1/5 = 0.52.
    // minDCF p 0.5: P_miss + P_fa: 0.1: 1, 0.2: 5/6, 0.3: 2/3, 0.35: 11/12, 0.4: 3/4,
    //   0.5: 7/12, 0.6: 2/3, 0.8: 1/2, 0.9: 3/4, ∞: 1 → 1/2 at θ = 0.8.
    // minDCF p 0.01: P_miss + 99·P_fa → 1/2 at θ = 0.8.
    // minDCF p 0.9: (0.9·P_miss + 0.1·P_fa)/0.1 = 9·P_miss + P_fa → P_miss = 0 points:
    //   0.1: 1, 0.2: 5/6, 0.3: 2/3 (0.35 already 9/4 + …) → 2/3 at θ = 0.3.
    const B_T: [f64; 4] = [0.9, 0.8, 0.5, 0.3];

    #[test]
    fn hand_example_without_ties() {
        let e = eer(&A_T, &A_N).unwrap();
        assert!(close(e.eer, 0.25), "{e:?}");
        assert!(close(e.threshold, 0.55), "{e:?}");
        let d = min_dcf(&A_T, &A_N, 0.5, 1.0, 1.0).unwrap();
        assert!(close(d.dcf, 0.25) && d.threshold == 0.7, "{d:?}");
        let d = min_dcf(&A_T, &A_N, 0.01, 1.0, 1.0).unwrap();
        assert!(close(d.dcf, 0.25) && d.threshold == 0.7, "{d:?}");
    }

    #[test]
    fn hand_example_with_ties() {
        let e = eer(&B_T, &A_N).unwrap();
        assert!(close(e.eer, 0.3), "{e:?}");
        assert!(close(e.threshold, 0.52), "{e:?}");
        let d = min_dcf(&B_T, &A_N, 0.5, 1.0, 1.0).unwrap();
        assert!(close(d.dcf, 0.5) && d.threshold == 0.8, "{d:?}");
        let d = min_dcf(&B_T, &A_N, 0.01, 1.0, 1.0).unwrap();
        assert!(close(d.dcf, 0.5) && d.threshold == 0.8, "{d:?}");
        let d = min_dcf(&B_T, &A_N, 0.9, 1.0, 1.0).unwrap();
        assert!(close(d.dcf, 2.0 / 3.0) && d.threshold == 0.3, "{d:?}");
        // The tied score changes side as one: at θ = 0.5 both are accepted.
        let det = det_curve(&B_T, &A_N).unwrap();
        let at = |th: f64| *det.iter().find(|p| p.2 == th).unwrap();
        let (pfa, pmiss, _) = at(0.5);
        assert!(close(pfa, 2.0 / 6.0) && close(pmiss, 0.25));
        let (pfa, pmiss, _) = at(0.6);
        assert!(close(pfa, 1.0 / 6.0) && close(pmiss, 0.5));
        assert_eq!(det.len(), 10); // 9 unique scores + ∞
    }

    #[test]
    fn det_curve_is_ordered_and_spans_both_ends() {
        let det = det_curve(&A_T, &A_N).unwrap();
        assert_eq!(det.len(), 11);
        assert_eq!(det[0], (1.0, 0.0, 0.1));
        assert_eq!(*det.last().unwrap(), (0.0, 1.0, f64::INFINITY));
        for w in det.windows(2) {
            assert!(w[0].2 < w[1].2 && w[0].0 >= w[1].0 && w[0].1 <= w[1].1);
        }
    }

    #[test]
    fn threshold_semantics_score_equal_to_threshold_is_accepted() {
        // One target and one nontarget, both exactly at θ = 1: both accepted.
        let c = act_dcf(&[1.0], &[1.0], 1.0, 0.5, 1.0, 1.0).unwrap();
        assert!(close(c, 1.0)); // P_miss 0, P_fa 1
        let c = act_dcf(&[1.0], &[0.0], 1.0, 0.5, 1.0, 1.0).unwrap();
        assert!(close(c, 0.0)); // target accepted, nontarget rejected
        let c = act_dcf(&[1.0], &[0.0], 1.0 + 1e-12, 0.5, 1.0, 1.0).unwrap();
        assert!(close(c, 1.0)); // target just below: missed
    }

    #[test]
    fn perfectly_separated() {
        let t = [2.0, 3.0, 2.5];
        let n = [0.0, 1.0, -1.0, 1.5];
        let e = eer(&t, &n).unwrap();
        assert_eq!(e.eer, 0.0);
        assert_eq!(e.threshold, 2.0);
        let d = min_dcf(&t, &n, 0.01, 1.0, 1.0).unwrap();
        assert_eq!(d.dcf, 0.0);
        assert_eq!(d.threshold, 2.0);
        assert_eq!(act_dcf(&t, &n, 1.75, 0.01, 1.0, 1.0).unwrap(), 0.0);
    }

    #[test]
    fn fully_reversed_scores_give_eer_one() {
        let e = eer(&[0.0, 1.0], &[2.0, 3.0]).unwrap();
        assert!(close(e.eer, 1.0), "{e:?}");
    }

    #[test]
    fn identical_distributions_give_half() {
        let s: Vec<f64> = (0..100).map(|i| i as f64 * 0.01).collect();
        let e = eer(&s, &s).unwrap();
        assert!(close(e.eer, 0.5), "{e:?}");
        // All scores equal: one real point (accept all) and ∞ (reject all).
        let e = eer(&[1.0; 3], &[1.0; 5]).unwrap();
        assert!(close(e.eer, 0.5), "{e:?}");
        assert_eq!(e.threshold, 1.0);
    }

    #[test]
    fn act_dcf_at_infinite_thresholds() {
        let (p, cm, cf) = (0.01, 1.0, 1.0);
        // Reject all: P_miss = 1 → c_miss·p / min(c_miss·p, c_fa·(1−p)) = 0.01/0.01 = 1.
        let rej = act_dcf(&A_T, &A_N, f64::INFINITY, p, cm, cf).unwrap();
        assert!(close(rej, 1.0), "{rej}");
        // Accept all: P_fa = 1 → 0.99 / 0.01 = 99.
        let acc = act_dcf(&A_T, &A_N, f64::NEG_INFINITY, p, cm, cf).unwrap();
        assert!((acc - 99.0).abs() < 1e-9, "{acc}");
        // With p_target 0.99 the sides swap: accepting all costs 1.
        let acc = act_dcf(&A_T, &A_N, f64::NEG_INFINITY, 0.99, cm, cf).unwrap();
        assert!(close(acc, 1.0), "{acc}");
        let rej = act_dcf(&A_T, &A_N, f64::INFINITY, 0.99, cm, cf).unwrap();
        assert!((rej - 99.0).abs() < 1e-9, "{rej}");
        // act_dcf at the minDCF threshold is the minDCF.
        let d = min_dcf(&B_T, &A_N, 0.5, 1.0, 1.0).unwrap();
        let a = act_dcf(&B_T, &A_N, d.threshold, 0.5, 1.0, 1.0).unwrap();
        assert!(close(a, d.dcf));
    }

    #[test]
    fn cllr_values() {
        let c = cllr(&[0.0; 7], &[0.0; 3]).unwrap();
        assert!(close(c, 1.0), "{c}");
        let c = cllr(&[40.0, 50.0], &[-40.0, -60.0]).unwrap();
        assert!(c > 0.0 && c < 1e-15, "{c}");
        // Confidently wrong: large, finite (no overflow) ≈ 1000/ln 2.
        let c = cllr(&[-1000.0], &[1000.0]).unwrap();
        assert!((c - 1000.0 / std::f64::consts::LN_2).abs() < 1e-9, "{c}");
        // One hand value: target LLR ln 3 → log2(1 + 1/3); nontarget LLR −ln 3 → same.
        let c = cllr(&[3f64.ln()], &[-(3f64.ln())]).unwrap();
        assert!(close(c, (4.0f64 / 3.0).log2()), "{c}");
    }

    fn gaussians(seed: u64, nt: usize, nn: usize) -> (Vec<f64>, Vec<f64>) {
        let mut rng = SplitMix64::new(seed);
        let mut normal = || {
            // Box–Muller; 1 − u ∈ (0, 1] keeps ln finite.
            let u1 = 1.0 - rng.uniform();
            let u2 = rng.uniform();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let t = (0..nt).map(|_| 2.0 + normal()).collect();
        let n = (0..nn).map(|_| normal()).collect();
        (t, n)
    }

    #[test]
    fn bootstrap_is_reproducible_and_covers_the_estimate() {
        let (t, n) = gaussians(11, 300, 1500);
        let metric = |a: &[f64], b: &[f64]| eer(a, b).unwrap().eer;
        let point = metric(&t, &n);
        let ci1 = bootstrap_ci(&t, &n, metric, 200, 42).unwrap();
        let ci2 = bootstrap_ci(&t, &n, metric, 200, 42).unwrap();
        assert_eq!(ci1, ci2);
        let ci3 = bootstrap_ci(&t, &n, metric, 200, 43).unwrap();
        assert_ne!(ci1, ci3);
        assert!(ci1.0 < point && point < ci1.1, "{ci1:?} vs {point}");
        // Two unit Gaussians 2 apart: EER = Φ(−1) ≈ 0.1587.
        assert!((point - 0.1587).abs() < 0.03, "{point}");
        assert!(ci1.1 - ci1.0 < 0.1, "{ci1:?}");
    }

    #[test]
    fn large_set_is_fast_and_sane() {
        let (t, n) = gaussians(5, 20_000, 200_000);
        let start = std::time::Instant::now();
        let e = eer(&t, &n).unwrap();
        let d = min_dcf(&t, &n, 0.01, 1.0, 1.0).unwrap();
        assert!(start.elapsed().as_secs_f64() < 5.0);
        assert!((e.eer - 0.1587).abs() < 0.01, "{e:?}");
        assert!(d.dcf > 0.0 && d.dcf <= 1.0);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(eer(&[], &[1.0]), Err(MetricsError::EmptyTargets));
        assert_eq!(eer(&[1.0], &[]), Err(MetricsError::EmptyNontargets));
        let e = eer(&[1.0], &[0.0, f64::NAN]).unwrap_err();
        assert!(matches!(
            e,
            MetricsError::NonFiniteScore {
                set: "nontarget",
                index: 1,
                ..
            }
        ));
        assert!(e.to_string().contains("nontarget score at index 1"));
        let e = cllr(&[f64::INFINITY], &[0.0]).unwrap_err();
        assert!(matches!(
            e,
            MetricsError::NonFiniteScore {
                set: "target",
                index: 0,
                ..
            }
        ));
        for p in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(matches!(
                min_dcf(&A_T, &A_N, p, 1.0, 1.0),
                Err(MetricsError::InvalidPTarget(_))
            ));
        }
        assert!(matches!(
            min_dcf(&A_T, &A_N, 0.5, 0.0, 1.0),
            Err(MetricsError::InvalidCost { name: "c_miss", .. })
        ));
        assert!(matches!(
            act_dcf(&A_T, &A_N, 0.5, 0.5, 1.0, f64::INFINITY),
            Err(MetricsError::InvalidCost { name: "c_fa", .. })
        ));
        assert_eq!(
            act_dcf(&A_T, &A_N, f64::NAN, 0.5, 1.0, 1.0),
            Err(MetricsError::NanThreshold)
        );
        assert!(det_curve(&[], &[1.0]).is_err());
        assert_eq!(
            bootstrap_ci(&A_T, &A_N, |_, _| 0.0, 0, 1),
            Err(MetricsError::NoResamples)
        );
    }
}
