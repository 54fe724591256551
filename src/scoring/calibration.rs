//! A fitted score calibration as the server applies it: raw scores to natural-log likelihood
//! ratios (`llr(s) = slope·s + offset`), the decision threshold at a chosen false-alarm rate,
//! and a Gaussian model of the non-target scores from which operating points at stated
//! false-alarm rates are read. It comes from the JSON file `vocalguard calibrate` writes, or
//! from a model's card. Fitting it is [`crate::eval::calibration`]'s work.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::normal::{phi, probit};

/// Why a calibration file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("reading the calibration {origin}: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    #[error("{origin}: not a calibration file: {source}")]
    Json {
        origin: String,
        source: serde_json::Error,
    },
    #[error("{origin}: invalid calibration: {reason}")]
    Invalid { origin: String, reason: String },
}

/// How the score-to-LLR map was fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Prior-weighted logistic regression (needs overlapping target and non-target scores).
    #[default]
    Logistic,
    /// Two Gaussians with a shared variance (finite even when the scores do not overlap).
    Gaussian,
}

/// What a calibration file holds; serialises to JSON (serde), loaded by the server's
/// configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// How `slope` and `offset` were fitted (files written before there was a choice are
    /// logistic).
    #[serde(default)]
    pub method: Method,
    /// LLR = slope * score + offset (natural log).
    pub slope: f64,
    /// See `slope`.
    pub offset: f64,
    /// The prior the logistic regression was weighted for (p_target).
    pub p_target: f64,
    /// Decision threshold on raw scores reaching at most `target_fa_rate` false alarms on the
    /// non-target scores it was fitted on.
    pub threshold: f64,
    /// The false-alarm rate the threshold was chosen for.
    pub target_fa_rate: f64,
    /// The false-alarm rate at `threshold` on the fitting data.
    pub fa_rate: f64,
    /// The miss rate at `threshold` on the fitting data.
    pub miss_rate: f64,
    /// Mean of the non-target scores it was fitted on.
    #[serde(default)]
    pub nontarget_mean: Option<f64>,
    /// Standard deviation of those scores; with the mean, the Gaussian non-target model that
    /// [`Calibration::score_at_false_alarm`] reads.
    #[serde(default)]
    pub nontarget_sd: Option<f64>,
    /// Number of target trials it was fitted on.
    pub n_target: usize,
    /// Number of non-target trials it was fitted on.
    pub n_nontarget: usize,
    /// Model name the scores came from (set by the caller; empty if unknown).
    pub model: String,
    /// SHA-256 of the model weights the scores came from (set by the caller; empty if unknown).
    pub model_sha256: String,
}

impl Calibration {
    /// Reads and checks the calibration file at `path`.
    pub fn load(path: &Path) -> Result<Self, CalibrationError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CalibrationError::Read {
            origin: origin.clone(),
            source,
        })?;
        Self::from_json(&text, &origin)
    }

    /// The log-likelihood ratio of a raw score.
    pub fn llr(&self, score: f64) -> f64 {
        self.slope * score + self.offset
    }

    /// The raw score that a share `rate` of non-target scores reaches under the Gaussian
    /// non-target model, if the calibration has one.
    pub fn score_at_false_alarm(&self, rate: f64) -> Option<f64> {
        let (mean, sd) = self.nontarget_mean.zip(self.nontarget_sd)?;
        Some(mean + sd * probit(1.0 - rate))
    }

    /// The share of non-target scores at or above `score` under the Gaussian non-target model,
    /// if the calibration has one.
    pub fn false_alarm_at(&self, score: f64) -> Option<f64> {
        let (mean, sd) = self.nontarget_mean.zip(self.nontarget_sd)?;
        Some(phi((mean - score) / sd))
    }

    /// Pretty-printed JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a struct of numbers and strings serialises")
    }

    /// Parses and checks a calibration file; errors name `origin` (e.g. the file's path).
    pub fn from_json(text: &str, origin: &str) -> Result<Self, CalibrationError> {
        let c: Self = serde_json::from_str(text).map_err(|source| CalibrationError::Json {
            origin: origin.to_owned(),
            source,
        })?;
        let invalid = |reason: String| CalibrationError::Invalid {
            origin: origin.to_owned(),
            reason,
        };
        for (name, value) in [
            ("p_target", c.p_target),
            ("target_fa_rate", c.target_fa_rate),
        ] {
            if !(value > 0.0 && value < 1.0) {
                return Err(invalid(format!(
                    "{name} must lie in the open interval (0, 1), got {value}"
                )));
            }
        }
        for (name, value) in [("fa_rate", c.fa_rate), ("miss_rate", c.miss_rate)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(format!("{name} must lie in [0, 1], got {value}")));
            }
        }
        if let Some(sd) = c.nontarget_sd {
            if !(sd > 0.0 && sd.is_finite() && c.nontarget_mean.is_some_and(f64::is_finite)) {
                return Err(invalid(format!(
                    "the non-target model needs a finite nontarget_mean and a positive nontarget_sd, got {:?} and {sd}",
                    c.nontarget_mean
                )));
            }
        }
        if !(c.slope.is_finite() && c.offset.is_finite()) {
            return Err(invalid("slope and offset must be finite".into()));
        }
        Ok(c)
    }
}
