//! Pre-flight check of a FLAC stream's STREAMINFO.
//!
//! FLAC allows 4 to 32 bits per sample, but symphonia 0.5 reads frame headers only up to
//! 24 bits: a 32-bit stream (libFLAC 1.4 writes them) fails at its first frame and used to
//! be reported as a truncated container. The width is read here, before symphonia sees the
//! bytes, so such a file is named for what it is.

use super::AudioError;

/// The widest sample symphonia's FLAC decoder reads.
const MAX_BITS_PER_SAMPLE: u32 = 24;

/// Refuses a native FLAC stream whose STREAMINFO declares more than 24 bits per sample.
/// Anything else passes unchanged: the demuxer reports its own problems.
pub(crate) fn check_flac_streaminfo(bytes: &[u8]) -> Result<(), AudioError> {
    // "fLaC", then the first metadata block's 4-byte header; STREAMINFO is always first
    // (block type 0). Its bits 100..105 (counting from the block body's start) hold
    // bits-per-sample minus one: the low bit of body byte 12 and the high four of byte 13.
    if bytes.get(0..4) != Some(b"fLaC") || bytes.get(4).map(|b| b & 0x7F) != Some(0) {
        return Ok(());
    }
    let (Some(&high), Some(&low)) = (bytes.get(8 + 12), bytes.get(8 + 13)) else {
        return Ok(());
    };
    let bits = ((u32::from(high) & 1) << 4 | u32::from(low) >> 4) + 1;
    if bits > MAX_BITS_PER_SAMPLE {
        return Err(AudioError::UnsupportedBitDepth {
            format: "FLAC",
            bits,
            max: MAX_BITS_PER_SAMPLE,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FLAC header whose STREAMINFO declares `bits` per sample (44.1 kHz, stereo).
    fn header(bits: u32) -> Vec<u8> {
        let mut out = b"fLaC".to_vec();
        out.extend_from_slice(&[0x80, 0, 0, 34]);
        out.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, 0, 0, 0, 0, 0, 0]);
        let packed = (44_100u64 << 44) | (1u64 << 41) | (u64::from(bits - 1) << 36);
        out.extend_from_slice(&packed.to_be_bytes());
        out.extend_from_slice(&[0; 16]);
        out
    }

    #[test]
    fn streams_up_to_24_bits_pass() {
        for bits in [8, 16, 24] {
            assert!(check_flac_streaminfo(&header(bits)).is_ok(), "{bits}");
        }
        assert!(check_flac_streaminfo(b"fLaC").is_ok());
        assert!(check_flac_streaminfo(b"RIFF").is_ok());
    }

    #[test]
    fn a_32_bit_stream_is_named() {
        let err = check_flac_streaminfo(&header(32)).unwrap_err();
        assert!(
            matches!(
                err,
                AudioError::UnsupportedBitDepth {
                    format: "FLAC",
                    bits: 32,
                    max: 24
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("32 bits per sample"), "{err}");
    }
}
