//! The conversion cache: a published checkpoint (PyTorch zip) is verified against its card's
//! SHA-256, converted once into safetensors by its architecture's converter, and reused.
//!
//! Layout of the cache folder (`<hub cache>/vocalguard-converted/` unless told otherwise):
//! `<name>-<sha8>.safetensors` (the converted tensors), `<name>-<sha8>.json` (the record:
//! the checkpoint's and the safetensors file's SHA-256), and `<name>.pin` only for cards that
//! publish no hash (the checkpoint hash seen on first use). Every file is written to a
//! temporary name and renamed, so a crash never leaves a half-written file under a real name.
//! A converted file whose hash no longer matches its record is converted again.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ModelCard, ModelError};

/// Name of the cache folder inside the hub cache.
pub const CONVERTED_DIR: &str = "vocalguard-converted";

/// An architecture's converter: reads a published checkpoint and returns the tensors to store.
pub type Converter = fn(&Path) -> Result<Vec<(String, Tensor)>, candle_core::Error>;

/// What the record beside a converted file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The card's name.
    pub name: String,
    /// SHA-256 of the published checkpoint converted.
    pub checkpoint_sha256: String,
    /// SHA-256 of the safetensors file written.
    pub safetensors_sha256: String,
}

/// A checkpoint's converted weights, ready to load.
#[derive(Debug)]
pub struct Converted {
    /// SHA-256 of the published checkpoint (the model's identity).
    pub checkpoint_sha256: String,
    /// The safetensors file in the cache.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Whether an earlier conversion was reused.
    pub reused: bool,
}

/// Where a card's conversion lives: the safetensors file and its record.
pub fn cache_paths(dir: &Path, name: &str, checkpoint_sha256: &str) -> (PathBuf, PathBuf) {
    let stem = format!("{}-{}", file_safe(name), &checkpoint_sha256[..8]);
    (
        dir.join(format!("{stem}.safetensors")),
        dir.join(format!("{stem}.json")),
    )
}

/// The pin file of a card that publishes no checkpoint hash.
pub fn pin_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.pin", file_safe(name)))
}

/// Verifies `checkpoint` against `card` (or its pin), then returns its converted weights from
/// `dir`, converting them with `convert` when no valid conversion is there yet.
pub fn converted(
    card: &ModelCard,
    checkpoint: &Path,
    dir: &Path,
    origin: &str,
    convert: Converter,
) -> Result<Converted, ModelError> {
    let actual = sha256_file(checkpoint)?;
    let published = card.checkpoint().and_then(|c| c.sha256.as_deref());
    match published {
        Some(expected) if expected.to_lowercase() != actual => {
            return Err(ModelError::HashMismatch {
                origin: origin.to_string(),
                expected: expected.to_string(),
                actual,
            })
        }
        Some(_) => {}
        None => check_pin(dir, &card.name, &actual, origin)?,
    }
    let (path, record_path) = cache_paths(dir, &card.name, &actual);
    if let Some(bytes) = reusable(&path, &record_path, &actual) {
        return Ok(Converted {
            checkpoint_sha256: actual,
            path,
            bytes,
            reused: true,
        });
    }
    let tensors = convert(checkpoint).map_err(|source| ModelError::Convert {
        origin: origin.to_string(),
        path: checkpoint.display().to_string(),
        source: Box::new(source),
    })?;
    create_dir(dir)?;
    let tmp = temp_name(&path);
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, &tmp).map_err(|source| ModelError::Convert {
        origin: origin.to_string(),
        path: checkpoint.display().to_string(),
        source: Box::new(source),
    })?;
    let bytes = read(&tmp)?;
    rename(&tmp, &path)?;
    let record = Record {
        name: card.name.clone(),
        checkpoint_sha256: actual.clone(),
        safetensors_sha256: hex::encode(Sha256::digest(&bytes)),
    };
    let json = serde_json::to_vec_pretty(&record).expect("a record serialises");
    write_atomic(&record_path, &json)?;
    Ok(Converted {
        checkpoint_sha256: actual,
        path,
        bytes,
        reused: false,
    })
}

/// The bytes of an earlier conversion of the checkpoint hashing to `checkpoint_sha256`, when
/// its record names that checkpoint and the file still hashes to what the record says.
fn reusable(path: &Path, record_path: &Path, checkpoint_sha256: &str) -> Option<Vec<u8>> {
    let record: Record = serde_json::from_slice(&std::fs::read(record_path).ok()?).ok()?;
    if record.checkpoint_sha256 != checkpoint_sha256 {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    if hex::encode(Sha256::digest(&bytes)) != record.safetensors_sha256 {
        eprintln!(
            "warning: {} does not hash to what its record says; converting the checkpoint again",
            path.display()
        );
        return None;
    }
    Some(bytes)
}

/// For a card without a published hash: pins the first checkpoint hash seen in
/// `<dir>/<name>.pin` and refuses any other later.
fn check_pin(dir: &Path, name: &str, actual: &str, origin: &str) -> Result<(), ModelError> {
    let pin = pin_path(dir, name);
    match std::fs::read_to_string(&pin) {
        Ok(pinned) if pinned.trim() == actual => {
            eprintln!(
                "warning: model {origin} publishes no checkpoint hash; the checkpoint matches the SHA-256 pinned on first use in {}",
                pin.display()
            );
            Ok(())
        }
        Ok(pinned) => Err(ModelError::PinMismatch {
            origin: origin.to_string(),
            pin: pin.display().to_string(),
            pinned: pinned.trim().to_string(),
            actual: actual.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_dir(dir)?;
            write_atomic(&pin, format!("{actual}\n").as_bytes())?;
            eprintln!(
                "WARNING: model {origin} publishes no checkpoint hash, so this checkpoint could not be verified. \
                 Its SHA-256 {actual} is now pinned in {}: later loads refuse any other file. \
                 Check the hash against a trusted source.",
                pin.display()
            );
            Ok(())
        }
        Err(source) => Err(ModelError::Io {
            path: pin.display().to_string(),
            source,
        }),
    }
}

/// Hex SHA-256 of a file, read in blocks.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let io = |source| ModelError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A card name made safe for a file name: anything but ASCII letters, digits, `.`, `_` and
/// `-` becomes `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let tmp = temp_name(path);
    std::fs::write(&tmp, bytes).map_err(|source| ModelError::Io {
        path: tmp.display().to_string(),
        source,
    })?;
    rename(&tmp, path)
}

fn rename(from: &Path, to: &Path) -> Result<(), ModelError> {
    std::fs::rename(from, to).map_err(|source| ModelError::Io {
        path: to.display().to_string(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.display().to_string(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_file_safe() {
        assert_eq!(
            file_safe("ecapa-tdnn_voxceleb.v1"),
            "ecapa-tdnn_voxceleb.v1"
        );
        assert_eq!(file_safe("../x y"), ".._x_y");
    }

    #[test]
    fn cache_paths_name_the_checkpoint_hash() {
        let (st, record) = cache_paths(Path::new("/c"), "m", &"ab".repeat(32));
        assert_eq!(st, Path::new("/c/m-abababab.safetensors"));
        assert_eq!(record, Path::new("/c/m-abababab.json"));
    }
}
