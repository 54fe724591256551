//! Where a model comes from: a built-in name (the card, and for GE2E and CAM++ the weights, compiled
//! into the binary from `models/`), a local directory holding `model.json` and its weights or
//! checkpoint, or a Hugging Face repo id fetched with `hf-hub` into the standard cache.
//!
//! Cards of converted architectures name a published checkpoint ([`super::Checkpoint`]): a
//! built-in card fetches it from its hub repo, a directory or hub repo with its own card holds
//! it beside the card. A hub repo id that is a built-in card's checkpoint repo resolves to that
//! card.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use super::convert::CONVERTED_DIR;
use super::{ModelCard, ModelError, WeightsRef};

/// Name of the model used when none is given.
pub const DEFAULT_MODEL: &str = "campplus-zh-en";

/// File name of a model card inside a model directory or hub repo.
pub const CARD_FILE: &str = "model.json";

/// A model compiled into the binary: its card, and its weights when they are compiled in too
/// (GE2E, CAM++); the others' checkpoints come from the hub.
#[derive(Clone, Copy)]
struct Builtin {
    name: &'static str,
    card: &'static [u8],
    weights: Option<&'static [u8]>,
}

/// The built-in models.
const BUILTIN: &[Builtin] = &[
    Builtin {
        name: "ge2e-resemblyzer",
        card: include_bytes!("../../models/ge2e-resemblyzer/model.json"),
        weights: Some(include_bytes!(
            "../../models/ge2e-resemblyzer/model.safetensors"
        )),
    },
    Builtin {
        name: "campplus-zh-en",
        card: include_bytes!("../../models/campplus-zh-en/model.json"),
        weights: Some(include_bytes!(
            "../../models/campplus-zh-en/model.safetensors"
        )),
    },
    Builtin {
        name: "ecapa-tdnn-voxceleb",
        card: include_bytes!("../../models/ecapa-tdnn-voxceleb/model.json"),
        weights: None,
    },
    Builtin {
        name: "wespeaker-resnet34",
        card: include_bytes!("../../models/wespeaker-resnet34/model.json"),
        weights: None,
    },
];

/// Names of the built-in models.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|b| b.name).collect()
}

/// The parsed cards of the built-in models.
pub fn builtin_cards() -> Result<Vec<ModelCard>, ModelError> {
    BUILTIN
        .iter()
        .map(|b| ModelCard::parse(b.card, &format!("built-in {}", b.name)))
        .collect()
}

/// How hub models are looked up.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Never download: use only what the cache holds.
    pub offline: bool,
    /// The hub cache directory (the folder holding `models--owner--name`).
    pub cache_dir: Option<PathBuf>,
    /// Where converted checkpoints are cached, instead of `vocalguard-converted` in the hub
    /// cache.
    pub converted_dir: Option<PathBuf>,
}

impl ResolveOptions {
    /// Options from the environment, as the Hugging Face tools read it: `HF_HUB_OFFLINE`
    /// (1/true/yes), `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        let cache_dir = std::env::var_os("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HF_HOME").map(|home| PathBuf::from(home).join("hub")));
        Self {
            offline,
            cache_dir,
            converted_dir: None,
        }
    }

    fn cache(&self) -> Cache {
        match &self.cache_dir {
            Some(dir) => Cache::new(dir.clone()),
            None => Cache::from_env(),
        }
    }

    /// The folder converted checkpoints are cached in: the one set, else
    /// `vocalguard-converted` inside the hub cache.
    pub fn converted_dir(&self) -> PathBuf {
        match &self.converted_dir {
            Some(dir) => dir.clone(),
            None => self.cache().path().join(CONVERTED_DIR),
        }
    }
}

/// Where a model's weights are, not yet verified.
pub enum Weights {
    /// Safetensors bytes, checked against the card's `weights_sha256`.
    Safetensors(Cow<'static, [u8]>),
    /// A published checkpoint file, checked against the card's checkpoint hash and converted
    /// into `converted_dir` on first use.
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The conversion cache folder.
        converted_dir: PathBuf,
    },
}

/// A model's card and weights, not yet verified.
pub struct ModelFiles {
    /// The parsed card.
    pub card: ModelCard,
    /// The weights.
    pub weights: Weights,
    /// Where they came from, for messages.
    pub origin: String,
}

/// Resolves `spec`: a built-in name, else an existing directory, else a hub repo id
/// `owner/name` with an optional `@revision`.
pub fn resolve(spec: &str, options: &ResolveOptions) -> Result<ModelFiles, ModelError> {
    if let Some(builtin) = BUILTIN.iter().find(|b| b.name == spec) {
        return from_builtin(builtin, options);
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return from_dir(path, options);
    }
    if let Some((repo, revision)) = parse_repo_id(spec) {
        if !path.exists() {
            if let Some(builtin) = builtin_for_repo(repo, revision) {
                return from_builtin(builtin, options);
            }
            return from_hub(repo, revision, options);
        }
    }
    Err(ModelError::NotFound {
        spec: spec.to_string(),
        builtins: builtin_names().join(", "),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The built-in card whose checkpoint is published in `repo` at `revision` (or any revision
/// when the card pins none and none is asked for).
fn builtin_for_repo(repo: &str, revision: Option<&str>) -> Option<&'static Builtin> {
    BUILTIN.iter().find(|b| {
        let Ok(card) = ModelCard::parse(b.card, b.name) else {
            return false;
        };
        card.checkpoint().is_some_and(|c| {
            c.repo.as_deref() == Some(repo)
                && (revision.is_none() || c.revision.as_deref() == revision)
        })
    })
}

fn from_builtin(builtin: &Builtin, options: &ResolveOptions) -> Result<ModelFiles, ModelError> {
    let origin = format!("built-in {}", builtin.name);
    let card = ModelCard::parse(builtin.card, &origin)?;
    let weights = match (builtin.weights, card.checkpoint()) {
        (Some(bytes), _) => Weights::Safetensors(Cow::Borrowed(bytes)),
        (None, Some(checkpoint)) => {
            let repo = checkpoint
                .repo
                .as_deref()
                .ok_or_else(|| ModelError::InvalidCard {
                    origin: origin.clone(),
                    reason: "a built-in card's checkpoint needs its hub repo".into(),
                })?;
            Weights::Checkpoint {
                path: fetch(
                    repo,
                    checkpoint.revision.as_deref(),
                    &checkpoint.file,
                    options,
                )?,
                converted_dir: options.converted_dir(),
            }
        }
        (None, None) => {
            return Err(ModelError::InvalidCard {
                origin,
                reason: "a built-in card without weights must name a checkpoint".into(),
            })
        }
    };
    Ok(ModelFiles {
        card,
        weights,
        origin,
    })
}

fn from_dir(dir: &Path, options: &ResolveOptions) -> Result<ModelFiles, ModelError> {
    let card_path = dir.join(CARD_FILE);
    let origin = dir.display().to_string();
    let card = ModelCard::parse(&read(&card_path)?, &card_path.display().to_string())?;
    let weights = match card.weights_ref() {
        WeightsRef::Checkpoint(checkpoint) => Weights::Checkpoint {
            path: dir.join(&checkpoint.file),
            converted_dir: options.converted_dir(),
        },
        WeightsRef::Safetensors { file, .. } => {
            Weights::Safetensors(Cow::Owned(read(&dir.join(file))?))
        }
    };
    Ok(ModelFiles {
        card,
        weights,
        origin,
    })
}

/// `owner/name` or `owner/name@revision`, with hub-legal characters only.
fn parse_repo_id(spec: &str) -> Option<(&str, Option<&str>)> {
    let (repo, revision) = match spec.split_once('@') {
        Some((repo, rev)) if !rev.is_empty() => (repo, Some(rev)),
        Some(_) => return None,
        None => (spec, None),
    };
    let (owner, name) = repo.split_once('/')?;
    let legal = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (legal(owner) && legal(name)).then_some((repo, revision))
}

/// The local path of `file` in hub repo `repo_id` at `revision`: from the cache, else
/// downloaded into it unless offline.
fn fetch(
    repo_id: &str,
    revision: Option<&str>,
    file: &str,
    options: &ResolveOptions,
) -> Result<PathBuf, ModelError> {
    let repo = match revision {
        Some(rev) => Repo::with_revision(repo_id.to_string(), RepoType::Model, rev.to_string()),
        None => Repo::new(repo_id.to_string(), RepoType::Model),
    };
    let cache = options.cache();
    if let Some(path) = cache.repo(repo.clone()).get(file) {
        return Ok(path);
    }
    if options.offline {
        return Err(ModelError::NotCached {
            repo: repo_id.to_string(),
            cache: cache.path().display().to_string(),
        });
    }
    let hub_error = |reason: String| ModelError::Hub {
        repo: repo_id.to_string(),
        file: file.to_string(),
        reason,
    };
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()
        .map_err(|e| hub_error(e.to_string()))?;
    api.repo(repo)
        .get(file)
        .map_err(|e| hub_error(e.to_string()))
}

fn from_hub(
    repo_id: &str,
    revision: Option<&str>,
    options: &ResolveOptions,
) -> Result<ModelFiles, ModelError> {
    let card_path = fetch(repo_id, revision, CARD_FILE, options)?;
    let origin = match revision {
        Some(rev) => format!("hub {repo_id}@{rev}"),
        None => format!("hub {repo_id}"),
    };
    let card = ModelCard::parse(&read(&card_path)?, &origin)?;
    let weights = match card.weights_ref() {
        WeightsRef::Checkpoint(checkpoint) => {
            let repo = checkpoint.repo.as_deref().unwrap_or(repo_id);
            let revision = checkpoint.revision.as_deref().or(revision);
            Weights::Checkpoint {
                path: fetch(repo, revision, &checkpoint.file, options)?,
                converted_dir: options.converted_dir(),
            }
        }
        WeightsRef::Safetensors { file, .. } => {
            Weights::Safetensors(Cow::Owned(read(&fetch(repo_id, revision, file, options)?)?))
        }
    };
    Ok(ModelFiles {
        card,
        weights,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_recognised() {
        assert_eq!(parse_repo_id("acme/voice"), Some(("acme/voice", None)));
        assert_eq!(
            parse_repo_id("acme/voice@v2"),
            Some(("acme/voice", Some("v2")))
        );
        assert_eq!(parse_repo_id("acme/voice@"), None);
        assert_eq!(parse_repo_id("voice"), None);
        assert_eq!(parse_repo_id("a/b/c"), None);
        assert_eq!(parse_repo_id("../x"), None);
    }

    #[test]
    fn every_builtin_card_parses_and_names_itself() {
        let cards = builtin_cards().unwrap();
        let names: Vec<&str> = cards.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, builtin_names());
        let architectures: Vec<&str> = cards.iter().map(|c| c.architecture.id()).collect();
        assert_eq!(
            architectures,
            ["ge2e-lstm", "campplus", "ecapa-tdnn", "resnet34"]
        );
    }

    #[test]
    fn hub_ids_of_builtin_checkpoints_resolve_to_their_cards() {
        let builtin = builtin_for_repo("speechbrain/spkrec-ecapa-voxceleb", None).unwrap();
        assert_eq!(builtin.name, "ecapa-tdnn-voxceleb");
        assert!(builtin_for_repo("speechbrain/spkrec-ecapa-voxceleb", Some("v9")).is_none());
        assert!(builtin_for_repo("acme/voice", None).is_none());
    }

    #[test]
    fn unknown_names_say_what_was_tried() {
        let err = resolve("no-such-model", &ResolveOptions::default())
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("no-such-model") && msg.contains(DEFAULT_MODEL),
            "{msg}"
        );
    }
}
