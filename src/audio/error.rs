//! Errors raised while decoding and resampling untrusted audio.

use std::path::PathBuf;

/// Why a piece of audio could not be turned into 16 kHz mono samples.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The input contained no bytes at all.
    #[error("empty input: the audio data is 0 bytes long")]
    EmptyInput,
    /// No supported container (WAV, AIFF, FLAC, MP3, OGG, MP4/M4A) was recognised.
    #[error("unsupported format: {reason}")]
    UnsupportedFormat {
        /// What the container probe or reader reported.
        reason: String,
    },
    /// The container was recognised but its audio codec cannot be decoded.
    #[error("unsupported codec: {codec}")]
    UnsupportedCodec {
        /// Short name of the codec (for example `opus`).
        codec: String,
    },
    /// The stream is malformed or was cut off before any usable audio.
    #[error("corrupt or truncated audio stream: {reason}")]
    Corrupt {
        /// What went wrong, as reported by the demuxer or decoder.
        reason: String,
    },
    /// The stream stores samples wider than its decoder reads (FLAC beyond 24 bits).
    #[error("unsupported {format} sample size: {bits} bits per sample, at most {max} are decoded; convert it to {max}-bit")]
    UnsupportedBitDepth {
        /// The format, as people name it (`FLAC`).
        format: &'static str,
        /// The bits per sample the stream declares.
        bits: u32,
        /// The widest sample the decoder reads.
        max: u32,
    },
    /// The container holds no decodable audio track.
    #[error("no audio track found in the container")]
    NoAudioTrack,
    /// Decoding succeeded but produced no samples.
    #[error("the audio stream decoded to zero samples")]
    ZeroSamples,
    /// A decoded sample was NaN or infinite.
    #[error("non-finite sample (NaN or infinity) in the audio at frame {frame}")]
    NonFinite {
        /// Index (at the source rate) of the first offending frame.
        frame: u64,
    },
    /// More audio than [`super::DecodeLimits::max_duration_s`] allows.
    #[error("audio too long: decoding passed {duration_s:.2} s, the maximum is {max_s:.2} s")]
    TooLong {
        /// Duration decoded when decoding stopped, in seconds.
        duration_s: f64,
        /// The configured maximum, in seconds.
        max_s: f64,
    },
    /// A compressed stream's header declares more audio than [`super::DecodeLimits::max_duration_s`]
    /// allows; nothing was decoded.
    #[error("audio too long: the header declares {declared_s:.2} s, the maximum is {max_s:.2} s")]
    DeclaredTooLong {
        /// Duration the header declares, in seconds.
        declared_s: f64,
        /// The configured maximum, in seconds.
        max_s: f64,
    },
    /// The sample rate lies outside 8 kHz..=192 kHz.
    #[error("unsupported sample rate {rate} Hz: must be between 8000 and 192000 Hz")]
    UnsupportedSampleRate {
        /// The sample rate the stream declares.
        rate: u32,
    },
    /// The stream declares zero channels.
    #[error("the audio stream declares zero channels")]
    ZeroChannels,
    /// The audio file could not be read.
    #[error("cannot read audio file {}: {source}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The resampler rejected its configuration or input.
    #[error("resampling from {from_rate} Hz to {to_rate} Hz failed: {reason}")]
    Resample {
        /// Source sample rate.
        from_rate: u32,
        /// Target sample rate.
        to_rate: u32,
        /// What the resampler reported.
        reason: String,
    },
}
