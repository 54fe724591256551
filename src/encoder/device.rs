//! Where the encoder runs: the CPU (the default), or an NVIDIA GPU through candle's CUDA
//! backend, which the `cuda` cargo feature compiles in. Features are always computed on the
//! CPU; with a GPU, each batch of them is copied over and the encoder runs there.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// A device as named on the command line or in the configuration: `cpu`, `cuda` (GPU 0) or
/// `cuda:N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// The CPU, with the encoders' own AVX-512/AVX2 kernels.
    #[default]
    Cpu,
    /// The CUDA GPU of this ordinal.
    Cuda(usize),
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `cuda` was asked of a build without the `cuda` feature.
    #[error("this build has no CUDA support; build with `cargo build --release --features cuda` (needs the CUDA toolkit) or use --device cpu")]
    NotCompiled,
    /// The GPU could not be opened (no driver, no such ordinal, ...).
    #[error("cannot open CUDA device {ordinal}: {reason}")]
    Cuda {
        /// The GPU asked for.
        ordinal: usize,
        /// What the CUDA runtime said.
        reason: String,
    },
}

impl DeviceChoice {
    /// Opens the device.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(ordinal) => open_cuda(ordinal),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device, DeviceError> {
    // cudarc panics, rather than failing, when the driver library cannot be loaded.
    let opened = std::panic::catch_unwind(|| Device::new_cuda(ordinal)).map_err(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CUDA runtime panicked".to_string());
        DeviceError::Cuda { ordinal, reason }
    })?;
    opened.map_err(|e| DeviceError::Cuda {
        ordinal,
        reason: match e {
            candle_core::Error::WithBacktrace { inner, .. } => inner.to_string(),
            e => e.to_string(),
        },
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled)
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("device '{s}' is none of: cpu, cuda, cuda:N (N the GPU's ordinal)");
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for (text, device) in [
            ("cpu", DeviceChoice::Cpu),
            ("CUDA", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>(), Ok(device));
            assert_eq!(device.to_string().parse::<DeviceChoice>(), Ok(device));
        }
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(err.contains("cpu, cuda, cuda:N"), "{err}");
        }
        assert!(matches!(DeviceChoice::Cpu.open(), Ok(Device::Cpu)));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
