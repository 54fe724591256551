//! Helpers shared by the integration tests: where the shared data lives, and a `.npy` reader.
#![allow(dead_code)]

pub mod grpc;
pub mod postgres;
pub mod server;
pub mod synthetic;

use std::path::{Path, PathBuf};

/// Resolves a shared folder from `var`, else `default` relative to the crate root. When it
/// is missing the test fails under CI (`CI=true`) and is skipped (returns None) elsewhere.
fn shared_dir(var: &str, default: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(default));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} not found (set {var}); CI needs the shared data",
            dir.display()
        );
    }
    eprintln!("skipping: {} not found (set {var})", dir.display());
    None
}

/// `../shared/data/librispeech-mini`, or `$VOCALGUARD_LIBRISPEECH_MINI`.
pub fn librispeech_mini() -> Option<PathBuf> {
    shared_dir(
        "VOCALGUARD_LIBRISPEECH_MINI",
        "../shared/data/librispeech-mini",
    )
}

/// `../shared/reference/ge2e-resemblyzer`, or `$VOCALGUARD_GE2E_REFERENCE`.
pub fn ge2e_reference() -> Option<PathBuf> {
    shared_dir(
        "VOCALGUARD_GE2E_REFERENCE",
        "../shared/reference/ge2e-resemblyzer",
    )
}

/// Runs the `vocalguard` binary (with no model from the environment) and returns its stdout;
/// panics with its stderr when it fails.
pub fn run_vocalguard(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vocalguard"))
        .args(args)
        .env_remove("VOCALGUARD_MODEL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vocalguard {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A NumPy array read from a `.npy` file, as f64 values with its shape.
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Reads a little-endian `.npy` file of dtype f4, f8 or bool (C order, or Fortran order up to
/// rank 2), returning the values in C order.
pub fn read_npy(path: &Path) -> Npy {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{} is not .npy", path.display());
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    let fortran = header.contains("'fortran_order': True");
    let descr = header
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let body = &bytes[start + header_len..];
    let data: Vec<f64> = match descr {
        "<f4" => body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        "<f8" => body
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        "|b1" => body.iter().map(|&b| b as f64).collect(),
        other => panic!("unsupported npy dtype {other}"),
    };
    assert_eq!(data.len(), shape.iter().product::<usize>().max(1));
    let data = if fortran && shape.len() == 2 {
        let (rows, cols) = (shape[0], shape[1]);
        (0..rows * cols)
            .map(|i| data[(i % cols) * rows + i / cols])
            .collect()
    } else {
        assert!(
            !fortran || shape.len() < 2,
            "Fortran-order arrays of rank > 2 are not supported"
        );
        data
    };
    Npy { shape, data }
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// A hand-built canonical 44-byte WAV header followed by `data`; `data_len` is what the
/// header claims, whatever `data` holds.
pub fn raw_wav(
    format_tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    data_len: u32,
    data: &[u8],
) -> Vec<u8> {
    let block_align = channels.wrapping_mul(bits / 8);
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&format_tag.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&rate.wrapping_mul(u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// An AIFF file of mono 16-bit big-endian PCM `samples` at `rate` (written as the 80-bit
/// extended value the format requires; `rate` must not be 0).
pub fn raw_aiff(rate: u32, samples: &[i16]) -> Vec<u8> {
    let mut comm = Vec::new();
    comm.extend_from_slice(&1u16.to_be_bytes());
    comm.extend_from_slice(&(samples.len() as u32).to_be_bytes());
    comm.extend_from_slice(&16u16.to_be_bytes());
    let exponent = 63 - u64::from(rate).leading_zeros();
    comm.extend_from_slice(&(16_383 + exponent as u16).to_be_bytes());
    comm.extend_from_slice(&(u64::from(rate) << (63 - exponent)).to_be_bytes());
    // SSND: offset and block size (0, 0), then the samples.
    let mut ssnd = vec![0u8; 8];
    ssnd.extend(samples.iter().flat_map(|s| s.to_be_bytes()));
    let mut body = b"AIFF".to_vec();
    for (id, chunk) in [(b"COMM", &comm), (b"SSND", &ssnd)] {
        body.extend_from_slice(id);
        body.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        body.extend_from_slice(chunk);
    }
    let mut out = b"FORM".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Embedding size of the built-in model a server reported.
pub fn builtin_dim(model: &vocalguard::encoder::ModelId) -> usize {
    vocalguard::encoder::source::builtin_cards()
        .unwrap()
        .into_iter()
        .find(|c| c.name == model.name)
        .map(|c| c.embedding_dim)
        .expect("the server runs a built-in model")
}
