//! Speaker encoders: model cards, weight loading and verification, and the architectures.

pub mod convert;
pub mod device;
pub mod ecapa;
pub mod ge2e;
#[cfg(target_arch = "x86_64")]
mod gemm_avx512;
mod lstm_cpu;
pub mod resnet;
pub mod source;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audio::vad::VadConfig;
use crate::features::kaldi_fbank::KaldiFbankConfig;
use crate::features::sb_fbank::SbFbankConfig;
use crate::features::FrontendConfig;
use convert::{Converted, Converter};
pub use device::{DeviceChoice, DeviceError};
use ecapa::EcapaEncoder;
use ge2e::{Ge2eConfig, Ge2eEncoder};
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

/// Architecture ids this build implements, as a card's `architecture` names them.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["ge2e-lstm", "ecapa-tdnn", "resnet34"];

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

    /// Where the card's weights come from.
    pub fn weights_ref(&self) -> WeightsRef<'_> {
        match &self.architecture {
            Architecture::Ge2e(c) => WeightsRef::Safetensors {
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

/// The encoder of a loaded model.
enum Encoder {
    Ge2e(Ge2eEncoder),
    Ecapa(Box<EcapaEncoder>),
    Resnet34(ResNetEncoder),
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
            (
                Architecture::Ecapa(c),
                Weights::Checkpoint {
                    path,
                    converted_dir,
                },
            ) => {
                let converted =
                    convert_cached(&files, path, converted_dir, ecapa::convert_checkpoint)?;
                let (tensors, listed) =
                    tensors_of(&converted.bytes, &device).map_err(weights_error)?;
                let config = ecapa::config_from_checkpoint(&listed).map_err(weights_error)?;
                check_shape(
                    &files,
                    config.input_size,
                    c.frontend.n_mels,
                    config.lin_neurons,
                )?;
                let encoder =
                    EcapaEncoder::from_tensors(config, tensors, &device).map_err(weights_error)?;
                return Ok(Self::converted(
                    files,
                    converted,
                    Encoder::Ecapa(Box::new(encoder)),
                    device,
                ));
            }
            (
                Architecture::Resnet34(c),
                Weights::Checkpoint {
                    path,
                    converted_dir,
                },
            ) => {
                let converted =
                    convert_cached(&files, path, converted_dir, resnet::convert_checkpoint)?;
                let (tensors, listed) =
                    tensors_of(&converted.bytes, &device).map_err(weights_error)?;
                let config = resnet::config_from_checkpoint(&listed).map_err(weights_error)?;
                check_shape(
                    &files,
                    config.feat_dim,
                    c.frontend.num_mel_bins,
                    config.embed_dim,
                )?;
                let encoder =
                    ResNetEncoder::from_tensors(config, &tensors).map_err(weights_error)?;
                return Ok(Self::converted(
                    files,
                    converted,
                    Encoder::Resnet34(encoder),
                    device,
                ));
            }
            _ => {
                return Err(ModelError::InvalidCard {
                    origin: files.origin,
                    reason: format!(
                        "architecture {} does not take this kind of weights file",
                        files.card.architecture.id()
                    ),
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
            converted: None,
        })
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
        match &self.encoder {
            Encoder::Ge2e(e) => e.forward(features),
            Encoder::Ecapa(e) => e.forward(features),
            Encoder::Resnet34(e) => e.forward(features),
        }
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

/// Tensors with their names, in a list (as the shape inference reads them).
type NamedTensors = Vec<(String, Tensor)>;

/// The tensors of a safetensors buffer on `device`, decoded once: by name for the encoder,
/// and as a list to infer its shape from.
fn tensors_of(
    bytes: &[u8],
    device: &Device,
) -> candle_core::Result<(HashMap<String, Tensor>, NamedTensors)> {
    let tensors = candle_core::safetensors::load_buffer(bytes, device)?;
    let listed = tensors
        .iter()
        .map(|(name, t)| (name.clone(), t.clone()))
        .collect();
    Ok((tensors, listed))
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
