//! Pre-flight check of RIFF/WAVE `fmt ` chunks.
//!
//! symphonia 0.5 panics on a WAV sample rate of 0 (`TimeBase::new`), does not bound the rate
//! at all, and reports zero channels only as a generic "invalid channel count". The two
//! fields are validated here, before symphonia sees the bytes, to report them precisely.

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

fn read_u16(bytes: &[u8], pos: usize) -> Option<u16> {
    let raw = bytes.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_le_bytes(raw.try_into().ok()?))
}

fn read_u32(bytes: &[u8], pos: usize) -> Option<u32> {
    let raw = bytes.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}
