//! Model cards (`model.json`): what a model is, how to feed it and where its weights come
//! from. The common fields sit beside an [`Architecture`] section selected by the card's
//! `architecture` tag; [`ModelCard::parse`] checks that the sections fit together.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::campplus::CamppConfig;
use super::ge2e::Ge2eConfig;
use super::ModelError;
use crate::audio::vad::VadConfig;
use crate::features::kaldi_fbank::KaldiFbankConfig;
use crate::features::sb_fbank::SbFbankConfig;
use crate::features::FrontendConfig;
use crate::scoring::calibration::Calibration;

/// Architecture ids this build implements, as a card's `architecture` names them.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["ge2e-lstm", "campplus", "ecapa-tdnn", "resnet34"];

/// A model card: what a model is, how to feed it, where it came from (`model.json`). The
/// `architecture` field selects the encoder and front-end sections ([`Architecture`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Short name reported with every embedding.
    pub name: String,
    /// Length of an embedding.
    pub embedding_dim: usize,
    /// Provenance.
    pub source: String,
    /// License of the weights.
    pub license: String,
    /// The thresholds measured for this model, which the server uses unless its
    /// configuration sets its own; absent on cards whose weights were never measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    /// The architecture with its own sections.
    #[serde(flatten)]
    pub architecture: Architecture,
}

/// A model's default screening and enrollment thresholds (cosine scores), the calibration
/// they are read from, and how they were measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// A window matches an artist at or above this.
    pub match_threshold: f64,
    /// An artist's aggregate at or above this, short of a match, needs review.
    pub review_threshold: f64,
    /// A new reference must score at least this against the artist's voiceprints.
    pub consistency_threshold: f64,
    /// A new reference scoring this or more against another artist is refused.
    pub collision_threshold: f64,
    /// The per-comparison false-flag rate `match_threshold` stands for: the calibration's
    /// non-target Gaussian reaches `match_threshold` at this rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_false_alarm_rate: Option<f64>,
    /// The per-comparison rate `review_threshold` stands for, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_false_alarm_rate: Option<f64>,
    /// The model's score calibration (`vocalguard calibrate --method gaussian`): the server
    /// reports every candidate's log-likelihood ratio with it unless configured with another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Where the values come from (data, command, the false-alarm rates they stand for).
    pub measured: String,
}

/// How far a card's cosine may lie from the one its stated false-alarm rate gives.
const RATE_TOLERANCE: f64 = 0.005;

impl Thresholds {
    /// Checks that the values are cosines in order, and that the stated false-alarm rates
    /// give them under the calibration.
    fn check(&self, weights_sha256: Option<&str>) -> Result<(), String> {
        if let (Some(c), Some(sha)) = (&self.calibration, weights_sha256) {
            if c.model_sha256 != sha {
                return Err(format!(
                    "the thresholds' calibration was fitted on model {} ({}), not these weights ({sha})",
                    c.model, c.model_sha256
                ));
            }
        }
        for (name, rate, threshold) in [
            ("match", self.match_false_alarm_rate, self.match_threshold),
            (
                "review",
                self.review_false_alarm_rate,
                self.review_threshold,
            ),
        ] {
            let Some(rate) = rate else { continue };
            let at = self
                .calibration
                .as_ref()
                .and_then(|c| c.score_at_false_alarm(rate))
                .ok_or_else(|| {
                    format!("{name}_false_alarm_rate needs a calibration with a non-target model (--method gaussian)")
                })?;
            if !(rate > 0.0 && rate < 1.0) || (at - threshold).abs() > RATE_TOLERANCE {
                return Err(format!(
                    "{name}_threshold {threshold} is not the calibration's score at {name}_false_alarm_rate {rate} ({at:.4})"
                ));
            }
        }
        let all = [
            self.match_threshold,
            self.review_threshold,
            self.consistency_threshold,
            self.collision_threshold,
        ];
        if !all.iter().all(|t| (-1.0..=1.0).contains(t)) {
            return Err(format!("thresholds {all:?} must lie in -1..1"));
        }
        if self.review_threshold > self.match_threshold {
            return Err(format!(
                "review_threshold {} exceeds match_threshold {}",
                self.review_threshold, self.match_threshold
            ));
        }
        Ok(())
    }
}

/// The architecture of a card with the sections only it has, tagged by `architecture`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "architecture")]
pub enum Architecture {
    /// GE2E (Resemblyzer): LSTM over 40-band mel partials; weights already in safetensors.
    #[serde(rename = "ge2e-lstm")]
    Ge2e(Ge2eCard),
    /// CAM++ (3D-Speaker): Kaldi's 80-band filterbank, dither off, mean-normalised; weights
    /// in safetensors, the shape stated by the card and checked against every tensor.
    #[serde(rename = "campplus")]
    Campp(CamppCard),
    /// ECAPA-TDNN (SpeechBrain `spkrec-ecapa-voxceleb`): SpeechBrain's 80-band filterbank with
    /// sentence mean normalisation; the shape is read from the checkpoint.
    #[serde(rename = "ecapa-tdnn")]
    Ecapa(FbankCard<SbFbankConfig>),
    /// ResNet34 (WeSpeaker `voxceleb_resnet34_LM`): Kaldi's 80-band filterbank, dither off,
    /// cepstral mean normalisation; the shape is read from the checkpoint.
    #[serde(rename = "resnet34")]
    Resnet34(FbankCard<KaldiFbankConfig>),
}

impl Architecture {
    /// The architecture id as cards write it.
    pub fn id(&self) -> &'static str {
        match self {
            Self::Ge2e(_) => "ge2e-lstm",
            Self::Campp(_) => "campplus",
            Self::Ecapa(_) => "ecapa-tdnn",
            Self::Resnet34(_) => "resnet34",
        }
    }
}

/// The GE2E sections of a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ge2eCard {
    /// File name of the safetensors weights, beside the card.
    pub weights: String,
    /// Lower-case hex SHA-256 of the weights file.
    pub weights_sha256: String,
    /// Encoder shape.
    pub encoder: Ge2eConfig,
    /// Front-end parameters.
    pub frontend: FrontendConfig,
}

/// The CAM++ sections of a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CamppCard {
    /// File name of the safetensors weights, beside the card.
    pub weights: String,
    /// Lower-case hex SHA-256 of the weights file.
    pub weights_sha256: String,
    /// Encoder shape.
    pub encoder: CamppConfig,
    /// Front-end parameters.
    pub frontend: KaldiFbankConfig,
    /// Silence trimming before the front end.
    pub trim: TrimConfig,
}

/// The sections of a filterbank model's card (ECAPA-TDNN, ResNet34): the published checkpoint,
/// the front end and how silence is trimmed. The encoder's shape is inferred from the
/// checkpoint's tensors, so a reduced-width checkpoint loads through the same code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FbankCard<F> {
    /// The published checkpoint.
    pub checkpoint: Checkpoint,
    /// Front-end parameters.
    pub frontend: F,
    /// Silence trimming before the front end (with `Trim::Silences`, and for screening).
    pub trim: TrimConfig,
}

/// A published checkpoint that is converted into safetensors on first use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Hugging Face repo id holding it; absent when it lies beside the card (a model
    /// directory or a hub repo with its own card).
    #[serde(default)]
    pub repo: Option<String>,
    /// Revision of `repo` (branch, tag or commit); `main` when absent.
    #[serde(default)]
    pub revision: Option<String>,
    /// File name inside the repo or directory.
    pub file: String,
    /// Lower-case hex SHA-256 the publisher states for the file; `null` when none is
    /// published, and then the first file seen is pinned (see [`convert`]).
    pub sha256: Option<String>,
}

/// How the fbank models trim silence: voice activity found on a copy raised to
/// `target_dbfs`, the voiced regions cut from the audio as it was decoded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrimConfig {
    /// Loudness the copy used for voice activity is raised to, dBFS.
    pub target_dbfs: f64,
    /// Voice activity parameters.
    pub vad: VadConfig,
}

impl ModelCard {
    /// Parses a card; `origin` names it in errors.
    pub fn parse(json: &[u8], origin: &str) -> Result<Self, ModelError> {
        let invalid = |reason: String| ModelError::InvalidCard {
            origin: origin.to_string(),
            reason,
        };
        let head: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| invalid(e.to_string()))?;
        let architecture = head
            .get("architecture")
            .and_then(|a| a.as_str())
            .ok_or_else(|| invalid("no \"architecture\" string".into()))?;
        if !SUPPORTED_ARCHITECTURES.contains(&architecture) {
            return Err(ModelError::UnsupportedArchitecture {
                origin: origin.to_string(),
                architecture: architecture.to_string(),
            });
        }
        let card: Self = serde_json::from_value(head).map_err(|e| invalid(e.to_string()))?;
        card.check().map_err(invalid)?;
        Ok(card)
    }

    /// Checks that the sections fit together.
    fn check(&self) -> Result<(), String> {
        if let Some(t) = &self.thresholds {
            let sha = match self.weights_ref() {
                WeightsRef::Safetensors { sha256, .. } => Some(sha256),
                WeightsRef::Checkpoint(_) => None,
            };
            t.check(sha)?;
        }
        match &self.architecture {
            Architecture::Ge2e(c) => {
                if self.embedding_dim != c.encoder.hidden_size
                    || c.encoder.input_dim != c.frontend.n_mels
                {
                    return Err(format!(
                        "embedding_dim {} / hidden_size {} / input_dim {} / n_mels {} do not fit together",
                        self.embedding_dim, c.encoder.hidden_size, c.encoder.input_dim, c.frontend.n_mels
                    ));
                }
            }
            Architecture::Campp(c) => {
                if self.embedding_dim != c.encoder.embedding_size
                    || c.encoder.feat_dim != c.frontend.num_mel_bins
                {
                    return Err(format!(
                        "embedding_dim {} / embedding_size {} / feat_dim {} / num_mel_bins {} do not fit together",
                        self.embedding_dim, c.encoder.embedding_size, c.encoder.feat_dim, c.frontend.num_mel_bins
                    ));
                }
            }
            Architecture::Ecapa(c) => check_checkpoint(&c.checkpoint)?,
            Architecture::Resnet34(c) => check_checkpoint(&c.checkpoint)?,
        }
        Ok(())
    }

    /// The GE2E sections, when the card is a GE2E card.
    pub fn ge2e(&self) -> Option<&Ge2eCard> {
        match &self.architecture {
            Architecture::Ge2e(c) => Some(c),
            _ => None,
        }
    }

    /// The score calibration the card's thresholds are read from, if it carries one.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.thresholds.as_ref()?.calibration.as_ref()
    }

    /// Where the card's weights come from.
    pub fn weights_ref(&self) -> WeightsRef<'_> {
        match &self.architecture {
            Architecture::Ge2e(c) => WeightsRef::Safetensors {
                file: &c.weights,
                sha256: &c.weights_sha256,
            },
            Architecture::Campp(c) => WeightsRef::Safetensors {
                file: &c.weights,
                sha256: &c.weights_sha256,
            },
            Architecture::Ecapa(c) => WeightsRef::Checkpoint(&c.checkpoint),
            Architecture::Resnet34(c) => WeightsRef::Checkpoint(&c.checkpoint),
        }
    }

    /// The published checkpoint the weights are converted from, for the architectures that
    /// have one.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match self.weights_ref() {
            WeightsRef::Checkpoint(c) => Some(c),
            WeightsRef::Safetensors { .. } => None,
        }
    }
}

/// Where a card's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsRef<'a> {
    /// A safetensors file used as is.
    Safetensors {
        /// File name beside the card.
        file: &'a str,
        /// Its SHA-256.
        sha256: &'a str,
    },
    /// A published checkpoint converted on first use.
    Checkpoint(&'a Checkpoint),
}

/// Identity of a model as reported with every embedding: the card's name and the SHA-256 of
/// the file the weights come from (the safetensors file for GE2E, the published checkpoint
/// for converted models, so that a re-conversion keeps the identity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    /// The card's name.
    pub name: String,
    /// SHA-256 of the weights, verified at load.
    pub sha256: String,
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (sha256 {})", self.name, self.sha256)
    }
}

/// A checkpoint hash in a card must be 64 hex digits; a file name must be a plain name.
fn check_checkpoint(c: &Checkpoint) -> Result<(), String> {
    if let Some(sha) = &c.sha256 {
        if sha.len() != 64 || !sha.chars().all(|ch| ch.is_ascii_hexdigit()) {
            return Err(format!("checkpoint sha256 '{sha}' is not 64 hex digits"));
        }
    }
    let plain = Path::new(&c.file)
        .components()
        .all(|part| matches!(part, std::path::Component::Normal(_)));
    if c.file.is_empty() || !plain {
        return Err(format!(
            "checkpoint file '{}' must be a relative path without '..'",
            c.file
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecapa_card(checkpoint: serde_json::Value) -> Vec<u8> {
        let mut card: serde_json::Value = serde_json::from_slice(include_bytes!(
            "../../models/ecapa-tdnn-voxceleb/model.json"
        ))
        .unwrap();
        card["checkpoint"] = checkpoint;
        serde_json::to_vec(&card).unwrap()
    }

    #[test]
    fn fbank_cards_parse_with_or_without_a_published_hash() {
        let card = ModelCard::parse(
            &ecapa_card(serde_json::json!({"file": "embedding_model.ckpt", "sha256": null})),
            "test",
        )
        .unwrap();
        assert_eq!(card.architecture.id(), "ecapa-tdnn");
        let checkpoint = card.checkpoint().unwrap();
        assert_eq!(
            (checkpoint.repo.as_deref(), checkpoint.sha256.as_deref()),
            (None, None)
        );
        assert!(card.ge2e().is_none());
    }

    const CAMPP: &[u8] = include_bytes!("../../models/campplus-zh-en/model.json");

    #[test]
    fn the_built_in_cards_state_their_operating_points_as_calibrated_rates() {
        for bytes in [
            CAMPP,
            include_bytes!("../../models/ge2e-resemblyzer/model.json"),
        ] {
            let card = ModelCard::parse(bytes, "built in").unwrap();
            let t = card.thresholds.unwrap();
            let c = t.calibration.as_ref().unwrap();
            assert_eq!(c.model, card.name);
            let (m, r) = (
                t.match_false_alarm_rate.unwrap(),
                t.review_false_alarm_rate.unwrap(),
            );
            assert!(m < r, "{m} {r}");
            assert!((c.false_alarm_at(t.match_threshold).unwrap() / m - 1.0).abs() < 0.2);
            assert!(c.llr(t.match_threshold) > c.llr(t.review_threshold));
        }
    }

    /// Why `card` is refused.
    fn refusal(card: &serde_json::Value) -> String {
        ModelCard::parse(&serde_json::to_vec(card).unwrap(), "test")
            .err()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_rate_the_threshold_does_not_stand_for_is_refused() {
        let mut card: serde_json::Value = serde_json::from_slice(CAMPP).unwrap();
        card["thresholds"]["match_false_alarm_rate"] = serde_json::json!(1e-3);
        let err = refusal(&card);
        assert!(err.contains("match_false_alarm_rate 0.001"), "{err}");

        let mut card: serde_json::Value = serde_json::from_slice(CAMPP).unwrap();
        card["thresholds"]["calibration"]["model_sha256"] = serde_json::json!("00");
        let err = refusal(&card);
        assert!(err.contains("not these weights"), "{err}");

        let mut card: serde_json::Value = serde_json::from_slice(CAMPP).unwrap();
        let thresholds = card["thresholds"].as_object_mut().unwrap();
        thresholds.remove("calibration");
        let err = refusal(&card);
        assert!(err.contains("needs a calibration"), "{err}");
    }

    #[test]
    fn bad_checkpoint_entries_are_refused() {
        for checkpoint in [
            serde_json::json!({"file": "x.ckpt", "sha256": "abc"}),
            serde_json::json!({"file": "../x.ckpt", "sha256": null}),
            serde_json::json!({"file": "/etc/x.ckpt", "sha256": null}),
            serde_json::json!({"file": "x.ckpt", "sha256": null, "extra": 1}),
        ] {
            let err = ModelCard::parse(&ecapa_card(checkpoint.clone()), "test").err();
            assert!(
                matches!(err, Some(ModelError::InvalidCard { .. })),
                "{checkpoint}: {err:?}"
            );
        }
    }
}
