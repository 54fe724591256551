//! Where a model comes from: a built-in name (weights compiled into the binary from
//! `models/`), a local directory holding `model.json` and its weights, or a Hugging Face
//! repo id fetched with `hf-hub` into the standard cache.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use super::{ModelCard, ModelError};

/// Name of the model used when none is given.
pub const DEFAULT_MODEL: &str = "ge2e-resemblyzer";

/// File name of a model card inside a model directory or hub repo.
pub const CARD_FILE: &str = "model.json";

/// Models compiled into the binary: name, card, weights.
const BUILTIN: &[(&str, &[u8], &[u8])] = &[(
    "ge2e-resemblyzer",
    include_bytes!("../../models/ge2e-resemblyzer/model.json"),
    include_bytes!("../../models/ge2e-resemblyzer/model.safetensors"),
)];

/// Names of the built-in models.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(name, _, _)| *name).collect()
}

/// How hub models are looked up.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Never download: use only what the cache holds.
    pub offline: bool,
    /// The hub cache directory (the folder holding `models--owner--name`).
    pub cache_dir: Option<PathBuf>,
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
        Self { offline, cache_dir }
    }

    fn cache(&self) -> Cache {
        match &self.cache_dir {
            Some(dir) => Cache::new(dir.clone()),
            None => Cache::from_env(),
        }
    }
}

/// A model's card and weights, not yet verified.
pub struct ModelFiles {
    /// The parsed card.
    pub card: ModelCard,
    /// The safetensors bytes.
    pub weights: Cow<'static, [u8]>,
    /// Where they came from, for messages.
    pub origin: String,
}

/// Resolves `spec`: a built-in name, else an existing directory, else a hub repo id
/// `owner/name` with an optional `@revision`.
pub fn resolve(spec: &str, options: &ResolveOptions) -> Result<ModelFiles, ModelError> {
    if let Some((name, card, weights)) = BUILTIN.iter().find(|(name, _, _)| *name == spec) {
        let origin = format!("built-in {name}");
        return Ok(ModelFiles {
            card: ModelCard::parse(card, &origin)?,
            weights: Cow::Borrowed(weights),
            origin,
        });
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return from_dir(path);
    }
    if let Some((repo, revision)) = parse_repo_id(spec) {
        if !path.exists() {
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

fn from_dir(dir: &Path) -> Result<ModelFiles, ModelError> {
    let card_path = dir.join(CARD_FILE);
    let origin = dir.display().to_string();
    let card = ModelCard::parse(&read(&card_path)?, &card_path.display().to_string())?;
    let weights = read(&dir.join(&card.weights))?;
    Ok(ModelFiles {
        card,
        weights: Cow::Owned(weights),
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

fn from_hub(
    repo_id: &str,
    revision: Option<&str>,
    options: &ResolveOptions,
) -> Result<ModelFiles, ModelError> {
    let repo = match revision {
        Some(rev) => Repo::with_revision(repo_id.to_string(), RepoType::Model, rev.to_string()),
        None => Repo::new(repo_id.to_string(), RepoType::Model),
    };
    let cache = options.cache();
    let fetch = |file: &str| -> Result<PathBuf, ModelError> {
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
        api.repo(repo.clone())
            .get(file)
            .map_err(|e| hub_error(e.to_string()))
    };
    let card_path = fetch(CARD_FILE)?;
    let origin = match revision {
        Some(rev) => format!("hub {repo_id}@{rev}"),
        None => format!("hub {repo_id}"),
    };
    let card = ModelCard::parse(&read(&card_path)?, &origin)?;
    let weights = read(&fetch(&card.weights)?)?;
    Ok(ModelFiles {
        card,
        weights: Cow::Owned(weights),
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
