//! Speaker encoders: model cards, weight loading and verification, and the architectures.

pub mod campplus;
pub mod card;
mod conv2d_cpu;
pub mod convert;
pub mod device;
pub mod ecapa;
pub mod ge2e;
#[cfg(target_arch = "x86_64")]
mod gemm_avx512;
mod lstm_cpu;
pub mod resnet;
pub mod source;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use sha2::{Digest, Sha256};

use campplus::CamppEncoder;
pub use card::{
    Architecture, CamppCard, Checkpoint, FbankCard, Ge2eCard, ModelCard, ModelId, Thresholds,
    TrimConfig, WeightsRef, SUPPORTED_ARCHITECTURES,
};
use convert::{Converted, Converter};
pub use device::{DeviceChoice, DeviceError};
use ecapa::EcapaEncoder;
use ge2e::Ge2eEncoder;
use resnet::ResNetEncoder;
pub use source::{ModelFiles, ResolveOptions, Weights};

/// Arithmetic of the encoder's matrix products on the CPU.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Single precision throughout (the default; parity with the reference).
    #[default]
    F32,
    /// GE2E only: weights and inputs of the LSTM's products rounded to bfloat16, sums in f32
    /// (CPUs with AVX512_BF16; elsewhere f32 is used).
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

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
        source: Box<candle_core::Error>,
    },
    /// A precision other than f32 was asked of a model that has no such path.
    #[error(
        "model {model} runs only in f32; --precision {precision} is implemented for GE2E models"
    )]
    PrecisionUnsupported {
        /// The model's name.
        model: String,
        /// What was asked for.
        precision: Precision,
    },
    /// The weights do not fit the architecture.
    #[error("cannot load the weights of model {origin}: {source}")]
    Weights {
        /// Where the model came from.
        origin: String,
        /// Candle's reason.
        source: candle_core::Error,
    },
    /// The device to run the encoder on cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// The encoder of a loaded model.
enum Encoder {
    Ge2e(Ge2eEncoder),
    Campp(Box<CamppEncoder>),
    Ecapa(Box<EcapaEncoder>),
    Resnet34(ResNetEncoder),
}

impl Encoder {
    /// The encoder of a card whose weights are a safetensors file, from its verified bytes.
    fn from_safetensors(
        architecture: &Architecture,
        bytes: &[u8],
        device: &Device,
    ) -> candle_core::Result<Self> {
        Ok(match architecture {
            Architecture::Ge2e(c) => {
                Self::Ge2e(Ge2eEncoder::from_safetensors(c.encoder, bytes, device)?)
            }
            Architecture::Campp(c) => Self::Campp(Box::new(CamppEncoder::from_safetensors(
                c.encoder, bytes, device,
            )?)),
            Architecture::Ecapa(_) | Architecture::Resnet34(_) => {
                candle_core::bail!("{} weights come from a checkpoint", architecture.id())
            }
        })
    }

    /// The encoder of a converted checkpoint (safetensors `bytes` under the checkpoint's
    /// tensor names), its shape read from the tensors; with the features per frame it takes
    /// and the embedding size it gives.
    fn from_checkpoint(
        architecture: &Architecture,
        bytes: &[u8],
        device: &Device,
    ) -> candle_core::Result<(Self, usize, usize)> {
        let tensors = candle_core::safetensors::load_buffer(bytes, device)?;
        let listed: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.clone()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Ok(match architecture {
            Architecture::Ecapa(_) => {
                let config = ecapa::config_from_checkpoint(&listed)?;
                let encoder = EcapaEncoder::new(config, vb)?;
                (
                    Self::Ecapa(Box::new(encoder)),
                    config.input_size,
                    config.lin_neurons,
                )
            }
            Architecture::Resnet34(_) => {
                let config = resnet::config_from_checkpoint(&listed)?;
                let encoder = ResNetEncoder::new(config, vb)?;
                (Self::Resnet34(encoder), config.feat_dim, config.embed_dim)
            }
            Architecture::Ge2e(_) | Architecture::Campp(_) => {
                candle_core::bail!("{} weights are not converted", architecture.id())
            }
        })
    }

    /// See [`SpeakerModel::embed_partials`].
    fn forward(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Ge2e(e) => e.forward(features),
            Self::Campp(e) => e.forward(features),
            Self::Ecapa(e) => e.forward(features),
            Self::Resnet34(e) => e.forward(features),
        }
    }
}

/// Where the weights of a converted model were loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertedWeights {
    /// The safetensors file in the conversion cache.
    pub path: PathBuf,
    /// Whether an earlier conversion was reused.
    pub reused: bool,
}

/// A speaker model ready to run: its verified card and its encoder on a device.
pub struct SpeakerModel {
    card: ModelCard,
    id: ModelId,
    encoder: Encoder,
    device: Device,
    converted: Option<ConvertedWeights>,
}

impl SpeakerModel {
    /// Resolves `spec` (see [`source::resolve`]), verifies the weights' hash, converts a
    /// published checkpoint when needed (cached) and loads the weights on the CPU.
    pub fn load(spec: &str, options: &ResolveOptions) -> Result<Self, ModelError> {
        Self::load_on(spec, options, DeviceChoice::Cpu)
    }

    /// [`SpeakerModel::load`] onto `device`, which is opened first.
    pub fn load_on(
        spec: &str,
        options: &ResolveOptions,
        device: DeviceChoice,
    ) -> Result<Self, ModelError> {
        let device = device.open()?;
        Self::from_files(source::resolve(spec, options)?, device)
    }

    /// [`SpeakerModel::load_on`], then [`SpeakerModel::set_precision`]: the model and the
    /// precision in effect, which is f32 where bf16 cannot run (the edges warn about that).
    pub fn load_in(
        spec: &str,
        options: &ResolveOptions,
        device: DeviceChoice,
        precision: Precision,
    ) -> Result<(Self, Precision), ModelError> {
        let mut model = Self::load_on(spec, options, device)?;
        let in_effect = model.set_precision(precision)?;
        Ok((model, in_effect))
    }

    /// Verifies, converts if needed, and loads resolved model files onto `device`.
    pub fn from_files(files: ModelFiles, device: Device) -> Result<Self, ModelError> {
        let origin = files.origin.clone();
        let weights_error = |source| ModelError::Weights {
            origin: origin.clone(),
            source,
        };
        match (files.card.weights_ref(), &files.weights) {
            (WeightsRef::Safetensors { sha256, .. }, Weights::Safetensors(bytes)) => {
                let actual = hex::encode(Sha256::digest(bytes));
                if actual != sha256.to_lowercase() {
                    return Err(ModelError::HashMismatch {
                        origin: files.origin,
                        expected: sha256.to_string(),
                        actual,
                    });
                }
                let encoder = Encoder::from_safetensors(&files.card.architecture, bytes, &device)
                    .map_err(weights_error)?;
                Ok(Self {
                    id: ModelId {
                        name: files.card.name.clone(),
                        sha256: actual,
                    },
                    card: files.card,
                    encoder,
                    device,
                    converted: None,
                })
            }
            (
                WeightsRef::Checkpoint(_),
                Weights::Checkpoint {
                    path,
                    converted_dir,
                },
            ) => {
                let Some((converter, bins)) = checkpoint_converter(&files.card.architecture) else {
                    return Err(ModelError::InvalidCard {
                        origin: files.origin,
                        reason: format!(
                            "architecture {} takes safetensors weights, not a checkpoint",
                            files.card.architecture.id()
                        ),
                    });
                };
                let converted = convert_cached(&files, path, converted_dir, converter)?;
                let (encoder, input, embedding) =
                    Encoder::from_checkpoint(&files.card.architecture, &converted.bytes, &device)
                        .map_err(weights_error)?;
                check_shape(&files, input, bins, embedding)?;
                Ok(Self::converted(files, converted, encoder, device))
            }
            _ => Err(ModelError::InvalidCard {
                origin: files.origin,
                reason: format!(
                    "architecture {} does not take this kind of weights file",
                    files.card.architecture.id()
                ),
            }),
        }
    }

    fn converted(
        files: ModelFiles,
        converted: Converted,
        encoder: Encoder,
        device: Device,
    ) -> Self {
        Self {
            id: ModelId {
                name: files.card.name.clone(),
                sha256: converted.checkpoint_sha256,
            },
            card: files.card,
            encoder,
            device,
            converted: Some(ConvertedWeights {
                path: converted.path,
                reused: converted.reused,
            }),
        }
    }

    /// For a model converted from a published checkpoint: where the converted weights are.
    pub fn converted_weights(&self) -> Option<&ConvertedWeights> {
        self.converted.as_ref()
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Name and verified weights hash.
    pub fn id(&self) -> &ModelId {
        &self.id
    }

    /// Sets the arithmetic of the encoder's CPU products; returns the one in effect (bfloat16
    /// needs a CPU with AVX512_BF16, else f32 stays). Only GE2E has a bfloat16 path.
    pub fn set_precision(&mut self, precision: Precision) -> Result<Precision, ModelError> {
        match (&mut self.encoder, precision) {
            (Encoder::Ge2e(e), _) => {
                e.set_precision(precision)
                    .map_err(|source| ModelError::Weights {
                        origin: self.id.name.clone(),
                        source,
                    })
            }
            (_, Precision::F32) => Ok(Precision::F32),
            (_, precision) => Err(ModelError::PrecisionUnsupported {
                model: self.id.name.clone(),
                precision,
            }),
        }
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
        self.encoder.forward(features)
    }
}

/// For the architectures published as checkpoints: their converter and the features per
/// frame of their front end.
fn checkpoint_converter(architecture: &Architecture) -> Option<(Converter, usize)> {
    match architecture {
        Architecture::Ecapa(c) => Some((ecapa::convert_checkpoint, c.frontend.n_mels)),
        Architecture::Resnet34(c) => Some((resnet::convert_checkpoint, c.frontend.num_mel_bins)),
        Architecture::Ge2e(_) | Architecture::Campp(_) => None,
    }
}

/// Verifies the checkpoint and returns its conversion from the cache, converting it first
/// when needed.
fn convert_cached(
    files: &ModelFiles,
    checkpoint: &Path,
    dir: &Path,
    converter: Converter,
) -> Result<Converted, ModelError> {
    convert::converted(&files.card, checkpoint, dir, &files.origin, converter)
}

/// The checkpoint's input width must be the front end's, its embedding size the card's.
fn check_shape(
    files: &ModelFiles,
    input: usize,
    bins: usize,
    embedding: usize,
) -> Result<(), ModelError> {
    if input != bins || embedding != files.card.embedding_dim {
        return Err(ModelError::InvalidCard {
            origin: files.origin.clone(),
            reason: format!(
                "the checkpoint takes {input} features per frame and gives {embedding}-dimensional embeddings; the card's front end gives {bins} and its embedding_dim is {}",
                files.card.embedding_dim
            ),
        });
    }
    Ok(())
}

/// Largest absolute value of a tensor, for the encoders' tests.
#[cfg(test)]
pub(crate) fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.max_all())
        .and_then(|m| m.to_scalar::<f32>())
        .expect("a float tensor")
}
