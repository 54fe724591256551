//! Hub voiceprints: a voice that many other voices score close to attracts false matches
//! (a "hub" of the embedding space). Whether a voiceprint is one is read from its
//! neighbourhood among the registry's other artists: how many of them have a voiceprint at or
//! above the score that a stated share ([`NEAR_RATE`]) of non-target comparisons reaches, against
//! how many an ordinary voice would have by chance (binomial, that share of the others).

/// Share of non-target comparisons that reach the "near" score.
pub const NEAR_RATE: f64 = 0.01;

/// A neighbourhood this improbable for an ordinary voice marks a hub.
pub const HUB_P_VALUE: f64 = 1e-3;

/// How crowded one artist's voice is among the registry's other artists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hubness {
    /// The cosine score counted as near (the calibration's score at [`NEAR_RATE`]).
    pub near_score: f64,
    /// Other artists with a voiceprint at or above `near_score` against this artist's.
    pub artists_near: usize,
    /// Other artists in the registry.
    pub other_artists: usize,
    /// Artists near by chance for an ordinary voice: `NEAR_RATE · other_artists`.
    pub expected_near: f64,
    /// Probability that an ordinary voice has `artists_near` or more neighbours.
    pub p_value: f64,
    /// Whether `p_value` is below [`HUB_P_VALUE`].
    pub is_hub: bool,
}

impl Hubness {
    /// The assessment of `artists_near` of `other_artists` scoring at or above `near_score`.
    pub fn assess(near_score: f64, artists_near: usize, other_artists: usize) -> Self {
        let p_value = binomial_upper_tail(other_artists, artists_near, NEAR_RATE);
        Self {
            near_score,
            artists_near,
            other_artists,
            expected_near: NEAR_RATE * other_artists as f64,
            p_value,
            is_hub: p_value < HUB_P_VALUE,
        }
    }
}

/// P(X ≥ k) for X ~ Binomial(n, p), 0 < p < 1: the terms from `k` up, summed until they no
/// longer change the total (they fall monotonically past the mode, and the sum starts at or
/// above it whenever the tail is small).
fn binomial_upper_tail(n: usize, k: usize, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let ln_choose: f64 = (0..k).map(|j| ((n - j) as f64 / (j + 1) as f64).ln()).sum();
    let ratio = p / (1.0 - p);
    let mut term = (ln_choose + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln()).exp();
    let mut total = 0.0;
    for i in k..=n {
        total += term;
        if term <= total * 1e-17 && i as f64 > n as f64 * p {
            break;
        }
        term *= (n - i) as f64 / (i + 1) as f64 * ratio;
    }
    total.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tail_matches_its_closed_forms() {
        // P(X >= 1) = 1 - (1-p)^n; P(X >= n) = p^n.
        let p: f64 = 0.01;
        assert!((binomial_upper_tail(200, 1, p) - (1.0 - (1.0 - p).powi(200))).abs() < 1e-12);
        assert!((binomial_upper_tail(5, 5, p) - p.powi(5)).abs() < 1e-20);
        assert_eq!(binomial_upper_tail(5, 0, p), 1.0);
        assert_eq!(binomial_upper_tail(5, 6, p), 0.0);
        // Binomial(4, 0.5): P(X >= 3) = 5/16.
        assert!((binomial_upper_tail(4, 3, 0.5) - 5.0 / 16.0).abs() < 1e-12);
    }

    #[test]
    fn an_ordinary_neighbourhood_is_no_hub_a_crowded_one_is() {
        // 1,000 other artists: about 10 near by chance.
        let ordinary = Hubness::assess(0.3, 12, 1000);
        assert!(!ordinary.is_hub, "{ordinary:?}");
        assert!((ordinary.expected_near - 10.0).abs() < 1e-9);
        let hub = Hubness::assess(0.3, 40, 1000);
        assert!(hub.is_hub && hub.p_value < 1e-9, "{hub:?}");
        // A small registry cannot show a hub with one or two neighbours.
        assert!(!Hubness::assess(0.3, 1, 20).is_hub);
        assert!(Hubness::assess(0.3, 5, 20).is_hub);
    }
}
