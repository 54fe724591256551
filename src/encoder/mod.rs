//! Speaker encoders: model cards, weight loading and verification, and the architectures.

pub mod ge2e;
mod lstm_cpu;
pub mod source;

use std::fmt;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::features::FrontendConfig;
use ge2e::{Ge2eConfig, Ge2eEncoder};
pub use source::{ModelFiles, ResolveOptions};

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
    /// A model file could not be read.
    #[error("cannot read {path}: {source}")]
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
    /// The weights do not hash to what the card says.
    #[error("weights of model {origin} have SHA-256 {actual}, but its card says {expected}: the file is corrupt or does not belong to this card")]
    HashMismatch {
        /// Where the model came from.
        origin: String,
        /// SHA-256 from the card.
        expected: String,
        /// SHA-256 of the file.
        actual: String,
    },
    /// The card names an architecture this build does not implement.
    #[error("model {origin} has architecture '{architecture}', which this build does not support (supported: ge2e-lstm)")]
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
    /// The weights do not fit the architecture.
    #[error("cannot load the weights of model {origin}: {source}")]
    Weights {
        /// Where the model came from.
        origin: String,
        /// Candle's reason.
        source: candle_core::Error,
    },
}

/// A model card: what a model is, how to feed it, where it came from (`model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Short name reported with every embedding.
    pub name: String,
    /// Architecture id; `ge2e-lstm` is the one implemented.
    pub architecture: String,
    /// File name of the safetensors weights, beside the card.
    pub weights: String,
    /// Lower-case hex SHA-256 of the weights file.
    pub weights_sha256: String,
    /// Length of an embedding.
    pub embedding_dim: usize,
    /// Encoder shape.
    pub encoder: Ge2eConfig,
    /// Front-end parameters.
    pub frontend: FrontendConfig,
    /// Provenance.
    pub source: String,
    /// License of the weights.
    pub license: String,
}

impl ModelCard {
    /// Parses a card; `origin` names it in errors.
    pub fn parse(json: &[u8], origin: &str) -> Result<Self, ModelError> {
        let card: Self = serde_json::from_slice(json).map_err(|e| ModelError::InvalidCard {
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
        if card.architecture != "ge2e-lstm" {
            return Err(ModelError::UnsupportedArchitecture {
                origin: origin.to_string(),
                architecture: card.architecture,
            });
        }
        if card.embedding_dim != card.encoder.hidden_size
            || card.encoder.input_dim != card.frontend.n_mels
        {
            return Err(ModelError::InvalidCard {
                origin: origin.to_string(),
                reason: format!(
                    "embedding_dim {} / hidden_size {} / input_dim {} / n_mels {} do not fit together",
                    card.embedding_dim, card.encoder.hidden_size, card.encoder.input_dim, card.frontend.n_mels
                ),
            });
        }
        Ok(card)
    }
}

/// Identity of a model as reported with every embedding.
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

/// A speaker model ready to run: its verified card and its encoder on a device.
pub struct SpeakerModel {
    card: ModelCard,
    id: ModelId,
    encoder: Ge2eEncoder,
    device: Device,
}

impl SpeakerModel {
    /// Resolves `spec` (see [`source::resolve`]), verifies the weights' hash and loads them
    /// on the CPU.
    pub fn load(spec: &str, options: &ResolveOptions) -> Result<Self, ModelError> {
        Self::from_files(source::resolve(spec, options)?, Device::Cpu)
    }

    /// Verifies and loads resolved model files onto `device`.
    pub fn from_files(files: ModelFiles, device: Device) -> Result<Self, ModelError> {
        let actual = hex::encode(Sha256::digest(&files.weights));
        if actual != files.card.weights_sha256.to_lowercase() {
            return Err(ModelError::HashMismatch {
                origin: files.origin,
                expected: files.card.weights_sha256,
                actual,
            });
        }
        let encoder = Ge2eEncoder::from_safetensors(files.card.encoder, &files.weights, &device)
            .map_err(|source| ModelError::Weights {
                origin: files.origin.clone(),
                source,
            })?;
        Ok(Self {
            id: ModelId {
                name: files.card.name.clone(),
                sha256: actual,
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

    /// Embeds a batch of partials `(batch, frames, n_mels)` into unit-norm embeddings.
    pub fn embed_partials(&self, mels: &Tensor) -> candle_core::Result<Tensor> {
        self.encoder.forward(mels)
    }
}
