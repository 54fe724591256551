//! Audio ingestion: decode untrusted bytes (WAV, AIFF, FLAC, MP3, OGG Vorbis, AAC in MP4/M4A)
//! into mono `f32` samples at [`TARGET_SAMPLE_RATE`], loudness, and voice activity.

pub mod decode;
pub mod level;
pub mod resample;
pub mod vad;

mod error;
mod flac;
mod mp4;
mod riff;
mod vorbis;

use std::path::Path;

pub use decode::{decode_mono, DecodedMono};
pub use error::AudioError;
pub use resample::resample_mono;

/// Sample rate every later stage works at.
pub const TARGET_SAMPLE_RATE: u32 = 16_000;

/// Lowest source sample rate accepted, in Hz.
pub const MIN_SAMPLE_RATE: u32 = 8_000;

/// Highest source sample rate accepted, in Hz.
pub const MAX_SAMPLE_RATE: u32 = 192_000;

/// Limits applied while decoding untrusted input.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// Longest audio accepted, in seconds; decoding stops as soon as it is exceeded.
    pub max_duration_s: f64,
}

impl Default for DecodeLimits {
    /// 15 minutes.
    fn default() -> Self {
        Self {
            max_duration_s: 900.0,
        }
    }
}

/// Decoded audio: mono `f32` at 16 kHz, plus what was read.
#[derive(Debug, Clone)]
pub struct Audio {
    /// Mono samples at [`TARGET_SAMPLE_RATE`].
    pub samples: Vec<f32>,
    /// Sample rate of the input, in Hz.
    pub source_sample_rate: u32,
    /// Channel count of the input before downmixing.
    pub source_channels: usize,
    /// Short codec name (`pcm_s16le`, `flac`, `mp3`, `vorbis`, `aac`, ...).
    pub codec: String,
}

/// Decodes `bytes` in any supported format to mono `f32` at 16 kHz.
///
/// The format is detected from the bytes; `hint_extension` (for example `"wav"`) is only a
/// hint. Never panics, whatever the input; see [`decode_mono`] for the limits applied.
pub fn decode_to_16k_mono(
    bytes: Vec<u8>,
    hint_extension: Option<&str>,
    limits: &DecodeLimits,
) -> Result<Audio, AudioError> {
    let decoded = decode_mono(bytes, hint_extension, limits)?;
    let samples = resample_mono(decoded.samples, decoded.sample_rate, TARGET_SAMPLE_RATE)?;
    Ok(Audio {
        samples,
        source_sample_rate: decoded.sample_rate,
        source_channels: decoded.channels,
        codec: decoded.codec,
    })
}

/// Reads the file at `path` and decodes it like [`decode_to_16k_mono`], using its extension
/// as the format hint.
pub fn load_file(path: &Path, limits: &DecodeLimits) -> Result<Audio, AudioError> {
    let bytes = std::fs::read(path).map_err(|source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let extension = path.extension().and_then(|ext| ext.to_str());
    decode_to_16k_mono(bytes, extension, limits)
}

/// Accepts sample rates in [`MIN_SAMPLE_RATE`]`..=`[`MAX_SAMPLE_RATE`].
fn check_sample_rate(rate: u32) -> Result<(), AudioError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::UnsupportedSampleRate { rate })
    }
}
