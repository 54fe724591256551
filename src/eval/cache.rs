//! The on-disk embedding cache of `vocalguard eval`: one small JSON file per (model, audio
//! content) pair, so a rerun over the same files, or another trial list naming them, embeds
//! nothing again. Entries are keyed by the SHA-256 of the file's bytes (not its path or time
//! stamp, so a changed file is embedded again and a moved one is not) under a folder named by
//! the model's weights hash and the pipeline settings.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file could not be read or written.
    #[error("embedding cache: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One cached utterance embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedEmbedding {
    /// Unit-norm embedding.
    pub embedding: Vec<f32>,
    /// Decoded duration, seconds.
    pub duration_s: f64,
    /// Voiced duration, seconds.
    pub voiced_s: f64,
}

/// A cache folder for one model and pipeline setting.
#[derive(Debug, Clone)]
pub struct EmbeddingCache {
    dir: PathBuf,
}

impl EmbeddingCache {
    /// The cache under `root` for the model with weights hash `model_sha256` and the pipeline
    /// settings named by `settings` (e.g. `trim`); created on first write.
    pub fn new(root: &Path, model_sha256: &str, settings: &str) -> Self {
        Self {
            dir: root.join(format!("{model_sha256}-{settings}")),
        }
    }

    /// The default root: `$XDG_CACHE_HOME/vocalguard/embeddings`, else
    /// `~/.cache/vocalguard/embeddings`, else `.vocalguard-cache` in the working directory.
    pub fn default_root() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("vocalguard").join("embeddings"))
            .unwrap_or_else(|| PathBuf::from(".vocalguard-cache"))
    }

    /// Hex SHA-256 of a file's bytes: the key of its entry.
    pub fn content_key(path: &Path) -> Result<String, CacheError> {
        let bytes = std::fs::read(path).map_err(|source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The entry for `key`, if present and readable (an unreadable entry counts as absent and
    /// is overwritten by the next `put`).
    pub fn get(&self, key: &str) -> Option<CachedEmbedding> {
        let text = std::fs::read(self.entry(key)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Stores an entry atomically (written beside it, then renamed into place).
    pub fn put(&self, key: &str, value: &CachedEmbedding) -> Result<(), CacheError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let target = self.entry(key);
        let partial = self
            .dir
            .join(format!("{key}.json.{}.tmp", std::process::id()));
        let json = serde_json::to_vec(value).expect("embeddings serialise");
        std::fs::write(&partial, json).map_err(io(&partial))?;
        std::fs::rename(&partial, &target).map_err(io(&target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_are_keyed_by_content() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a.bin");
        let b = root.path().join("b.bin");
        std::fs::write(&a, b"same bytes").unwrap();
        std::fs::write(&b, b"same bytes").unwrap();
        let key = EmbeddingCache::content_key(&a).unwrap();
        assert_eq!(key, EmbeddingCache::content_key(&b).unwrap());
        let cache = EmbeddingCache::new(root.path(), "abc", "trim");
        assert!(cache.get(&key).is_none());
        let value = CachedEmbedding {
            embedding: vec![0.6, 0.8],
            duration_s: 1.5,
            voiced_s: 1.25,
        };
        cache.put(&key, &value).unwrap();
        assert_eq!(cache.get(&key), Some(value));
        let other_model = EmbeddingCache::new(root.path(), "def", "trim");
        assert!(other_model.get(&key).is_none());
    }
}
