//! A fitted score calibration as the server applies it: raw scores to natural-log likelihood
//! ratios (`llr(s) = slope·s + offset`) and the decision threshold at a chosen false-alarm
//! rate, read from the JSON file `vocalguard calibrate` writes. Fitting it is
//! [`crate::eval::calibration`]'s work.

use std::path::Path;

use serde::{Deserialize, Serialize};

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

/// What a calibration file holds; serialises to JSON (serde), loaded by the server's
/// configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
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
        Ok(c)
    }
}
