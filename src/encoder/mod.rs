//! Speaker encoders: model cards, weight loading and verification, and the architectures.

pub mod convert;
pub mod ecapa;
pub mod ge2e;
mod lstm_cpu;
pub mod resnet;
pub mod source;

use std::fmt;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audio::vad::VadConfig;
use crate::features::FrontendConfig;
use ge2e::{Ge2eConfig, Ge2eEncoder};
pub use source::{ModelFiles, ResolveOptions, Weights};

/// Architecture ids this build implements, as a card's `architecture` names them.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["ge2e-lstm"];

/// Errors of finding, verifying and loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The `--model` value is none of: a built-in name, a directory, a hub repo id.
    #[error("no model '{spec}': not a built-in model ({builtins}), not a directory, and not a Hugging Face repo id (owner/name[@revision])")]
    NotFound {
        /// What was asked for.
        spec: String,
        /// The built-in names, comma-separated.
        builtins: String,
    },
    /// A model file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The model card is not valid JSON of the expected shape.
    #[error("invalid model card {origin}: {reason}")]
    InvalidCard {
        /// Where the card came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The weights or checkpoint do not hash to what the card says.
    #[error("weights of model {origin} have SHA-256 {actual}, but its card says {expected}: the file is corrupt or does not belong to this card")]
    HashMismatch {
        /// Where the model came from.
        origin: String,
        /// SHA-256 from the card.
        expected: String,
        /// SHA-256 of the file.
        actual: String,
    },
    /// The card publishes no hash, and the checkpoint differs from the one pinned on first use.
    #[error("checkpoint of model {origin} has SHA-256 {actual}, but {pin} pinned {pinned} when the model was first used (its card publishes no hash); delete the pin file only if the new checkpoint is trusted")]
    PinMismatch {
        /// Where the model came from.
        origin: String,
        /// The pin file.
        pin: String,
        /// SHA-256 recorded on first use.
        pinned: String,
        /// SHA-256 of the file now.
        actual: String,
    },
    /// The card names an architecture this build does not implement.
    #[error("model {origin} has architecture '{architecture}', which this build does not support (supported: {})", SUPPORTED_ARCHITECTURES.join(", "))]
    UnsupportedArchitecture {
        /// Where the model came from.
        origin: String,
        /// The card's architecture.
        architecture: String,
    },
    /// A hub repo is not in the local cache and downloading is off.
    #[error("model {repo} is not in the Hugging Face cache at {cache} and offline mode is on (HF_HUB_OFFLINE or --offline); fetch it once with network access or point --model at a local directory")]
    NotCached {
        /// The repo id.
        repo: String,
        /// The cache directory searched.
        cache: String,
    },
    /// The hub could not be reached or refused the download.
    #[error("cannot fetch {file} of {repo} from the Hugging Face hub: {reason}")]
    Hub {
        /// The repo id.
        repo: String,
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A published checkpoint could not be converted into safetensors.
    #[error("cannot convert the checkpoint {path} of model {origin}: {source}")]
    Convert {
        /// Where the model came from.
        origin: String,
        /// The checkpoint file.
        path: String,
        /// Candle's reason.
        source: candle_core::Error,
    },
    /// The weights do not fit the architecture.
    #[error("cannot load the weights of model {origin}: {source}")]
    Weights {
        /// Where the model came from.
        origin: String,
        /// Candle's reason.
        source: candle_core::Error,
    },
}

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
    /// The architecture with its own sections.
    #[serde(flatten)]
    pub architecture: Architecture,
}

/// The architecture of a card with the sections only it has, tagged by `architecture`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "architecture")]
pub enum Architecture {
    /// GE2E (Resemblyzer): LSTM over 40-band mel partials; weights already in safetensors.
    #[serde(rename = "ge2e-lstm")]
    Ge2e(Ge2eCard),
}

impl Architecture {
    /// The architecture id as cards write it.
    pub fn id(&self) -> &'static str {
        match self {
            Self::Ge2e(_) => "ge2e-lstm",
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
        }
        Ok(())
    }

    /// The GE2E sections, when the card is a GE2E card.
    pub fn ge2e(&self) -> Option<&Ge2eCard> {
        match &self.architecture {
            Architecture::Ge2e(c) => Some(c),
        }
    }

    /// Where the card's weights come from.
    pub fn weights_ref(&self) -> WeightsRef<'_> {
        match &self.architecture {
            Architecture::Ge2e(c) => WeightsRef::Safetensors {
                file: &c.weights,
                sha256: &c.weights_sha256,
            },
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

/// The encoder of a loaded model.
enum Encoder {
    Ge2e(Ge2eEncoder),
}

/// A speaker model ready to run: its verified card and its encoder on a device.
pub struct SpeakerModel {
    card: ModelCard,
    id: ModelId,
    encoder: Encoder,
    device: Device,
}

impl SpeakerModel {
    /// Resolves `spec` (see [`source::resolve`]), verifies the weights' hash, converts a
    /// published checkpoint when needed (cached) and loads the weights on the CPU.
    pub fn load(spec: &str, options: &ResolveOptions) -> Result<Self, ModelError> {
        Self::from_files(source::resolve(spec, options)?, Device::Cpu)
    }

    /// Verifies, converts if needed, and loads resolved model files onto `device`.
    pub fn from_files(files: ModelFiles, device: Device) -> Result<Self, ModelError> {
        let origin = files.origin.clone();
        let weights_error = |source| ModelError::Weights {
            origin: origin.clone(),
            source,
        };
        let (sha256, encoder) = match (&files.card.architecture, &files.weights) {
            (Architecture::Ge2e(card), Weights::Safetensors(bytes)) => {
                let actual = hex::encode(Sha256::digest(bytes));
                if actual != card.weights_sha256.to_lowercase() {
                    return Err(ModelError::HashMismatch {
                        origin: files.origin,
                        expected: card.weights_sha256.clone(),
                        actual,
                    });
                }
                let encoder = Ge2eEncoder::from_safetensors(card.encoder, bytes, &device)
                    .map_err(weights_error)?;
                (actual, Encoder::Ge2e(encoder))
            }
            (_, Weights::Checkpoint { .. }) => {
                return Err(ModelError::InvalidCard {
                    origin: files.origin,
                    reason: "this architecture has no published-checkpoint conversion".into(),
                })
            }
        };
        Ok(Self {
            id: ModelId {
                name: files.card.name.clone(),
                sha256,
            },
            card: files.card,
            encoder,
            device,
        })
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Name and verified weights hash.
    pub fn id(&self) -> &ModelId {
        &self.id
    }

    /// The device the encoder runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Length of an embedding.
    pub fn embedding_dim(&self) -> usize {
        self.card.embedding_dim
    }

    /// Runs the encoder on a batch of equal-length feature sequences `(batch, frames, bins)`:
    /// GE2E partials give unit-norm embeddings, the fbank models raw ones.
    pub fn embed_partials(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        match &self.encoder {
            Encoder::Ge2e(e) => e.forward(features),
        }
    }
}
