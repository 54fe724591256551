//! Pre-flight check of RIFF/WAVE `fmt ` chunks and AIFF/AIFC `COMM` chunks.
//!
//! symphonia 0.5 panics on a WAV or AIFF sample rate of 0 (`TimeBase::new`), does not bound
//! the rate at all, and reports zero channels only as a generic "invalid channel count". The
//! two fields are validated here, before symphonia sees the bytes, to report them precisely.

use super::{check_sample_rate, AudioError};

/// Validates the channel count and sample rate of a RIFF/WAVE header, if `bytes` is one.
///
/// Anything that is not a RIFF/WAVE file, or whose `fmt ` chunk cannot be found, passes
/// unchanged: the real demuxer reports those problems.
pub(crate) fn check_wav_header(bytes: &[u8]) -> Result<(), AudioError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Ok(());
    }
    let mut pos = 12usize;
    while let (Some(id), Some(len)) = (bytes.get(pos..pos + 4), read_u32(bytes, pos + 4)) {
        let body = pos + 8;
        match id {
            b"fmt " => {
                let (Some(channels), Some(rate)) =
                    (read_u16(bytes, body + 2), read_u32(bytes, body + 4))
                else {
                    return Ok(());
                };
                if channels == 0 {
                    return Err(AudioError::ZeroChannels);
                }
                return check_sample_rate(rate);
            }
            b"data" => return Ok(()),
            _ => {}
        }
        // Chunks are padded to an even length.
        let padded = u64::from(len) + u64::from(len % 2);
        pos = match usize::try_from(body as u64 + padded) {
            Ok(next) => next,
            Err(_) => return Ok(()),
        };
    }
    Ok(())
}

/// Validates the channel count and sample rate of an AIFF or AIFC `COMM` chunk, if `bytes`
/// is such a file; like [`check_wav_header`], anything else passes unchanged.
pub(crate) fn check_aiff_header(bytes: &[u8]) -> Result<(), AudioError> {
    if bytes.get(0..4) != Some(b"FORM") || !matches!(bytes.get(8..12), Some(b"AIFF" | b"AIFC")) {
        return Ok(());
    }
    let mut pos = 12usize;
    while let (Some(id), Some(len)) = (bytes.get(pos..pos + 4), read_u32_be(bytes, pos + 4)) {
        let body = pos + 8;
        if id == b"COMM" {
            let (Some(channels), Some(rate)) = (
                bytes.get(body..body + 2),
                bytes.get(body + 8..body + 18).map(extended_to_rate),
            ) else {
                return Ok(());
            };
            if channels == [0, 0] {
                return Err(AudioError::ZeroChannels);
            }
            return check_sample_rate(rate);
        }
        let padded = u64::from(len) + u64::from(len % 2);
        pos = match usize::try_from(body as u64 + padded) {
            Ok(next) => next,
            Err(_) => return Ok(()),
        };
    }
    Ok(())
}

/// An AIFF sample rate (an 80-bit IEEE 754 extended value, big-endian) as the whole number
/// of hertz symphonia reads from it: saturated to `u32`, NaN and negative values as 0.
fn extended_to_rate(raw: &[u8]) -> u32 {
    let sign_exponent = u16::from_be_bytes([raw[0], raw[1]]);
    let mantissa = u64::from_be_bytes(raw[2..10].try_into().expect("ten bytes"));
    let exponent = i32::from(sign_exponent & 0x7FFF);
    let magnitude = if exponent == 0x7FFF {
        if mantissa == 0 {
            f64::INFINITY
        } else {
            f64::NAN
        }
    } else {
        mantissa as f64 * 2f64.powi(exponent - 16383 - 63)
    };
    let value = if sign_exponent & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    };
    value as u32
}

fn read_u32_be(bytes: &[u8], pos: usize) -> Option<u32> {
    let raw = bytes.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes(raw.try_into().ok()?))
}

fn read_u16(bytes: &[u8], pos: usize) -> Option<u16> {
    let raw = bytes.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_le_bytes(raw.try_into().ok()?))
}

fn read_u32(bytes: &[u8], pos: usize) -> Option<u32> {
    let raw = bytes.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AIFF header with a `COMM` chunk of `channels` and the 80-bit `rate`.
    fn aiff(channels: u16, rate: [u8; 10]) -> Vec<u8> {
        let mut out = b"FORM\0\0\0\x2eAIFF".to_vec();
        out.extend_from_slice(b"COMM\0\0\0\x12");
        out.extend_from_slice(&channels.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 10, 0, 16]);
        out.extend_from_slice(&rate);
        out
    }

    const HZ_44100: [u8; 10] = [0x40, 0x0E, 0xAC, 0x44, 0, 0, 0, 0, 0, 0];

    #[test]
    fn extended_rates_read_as_symphonia_reads_them() {
        assert_eq!(extended_to_rate(&HZ_44100), 44_100);
        assert_eq!(
            extended_to_rate(&[0x40, 0x0C, 0xFA, 0, 0, 0, 0, 0, 0, 0]),
            16_000
        );
        assert_eq!(extended_to_rate(&[0; 10]), 0);
        assert_eq!(extended_to_rate(&[0x7F, 0xFF, 1, 0, 0, 0, 0, 0, 0, 0]), 0);
        assert_eq!(
            extended_to_rate(&[0xC0, 0x0E, 0xAC, 0x44, 0, 0, 0, 0, 0, 0]),
            0
        );
    }

    #[test]
    fn aiff_headers_are_checked() {
        assert!(check_aiff_header(&aiff(1, HZ_44100)).is_ok());
        assert!(matches!(
            check_aiff_header(&aiff(0, HZ_44100)),
            Err(AudioError::ZeroChannels)
        ));
        assert!(matches!(
            check_aiff_header(&aiff(2, [0; 10])),
            Err(AudioError::UnsupportedSampleRate { rate: 0 })
        ));
        assert!(check_aiff_header(b"FORM\0\0\0\x04AIFF").is_ok());
    }
}
