//! Pre-flight check of MP4/M4A sample tables.
//!
//! symphonia 0.5 reserves memory for the `stts`, `stsc`, `stsz`, `stco` and `co64` tables
//! from their declared entry counts before reading a single entry, so a forged count (four
//! bytes) can request tens of gigabytes and abort the process. Tables whose declared entries
//! cannot fit in their box are rejected here, before symphonia sees the bytes. A media
//! header (`mdhd`) with a timescale of 0 makes symphonia panic (`TimeBase::new`); it is
//! rejected here too, so the panic is never reached.

use super::AudioError;

/// How far symphonia's probe searches for a container marker (`Probe::PROBE_SEARCH_LIMIT`).
const PROBE_SEARCH_LIMIT: usize = 1024 * 1024;

/// Boxes on the path from the top level down to the sample tables.
const TABLE_PARENTS: [&[u8; 4]; 5] = [b"moov", b"trak", b"mdia", b"minf", b"stbl"];

/// The index in [`TABLE_PARENTS`] of the boxes that sit beside `mdhd` (inside `mdia`).
const MEDIA_HEADER_DEPTH: usize = 3;

/// Checks the sample tables of the MP4 stream that starts at the first `ftyp` box, if any.
pub(crate) fn check_mp4_tables(bytes: &[u8]) -> Result<(), AudioError> {
    let probed = &bytes[..bytes.len().min(PROBE_SEARCH_LIMIT + 4)];
    let Some(ftyp) = probed.windows(4).position(|window| window == b"ftyp") else {
        return Ok(());
    };
    match ftyp.checked_sub(4).and_then(|start| bytes.get(start..)) {
        Some(stream) => check_boxes(stream, 0),
        None => Ok(()),
    }
}

/// Walks the boxes in `data`; `depth` is the index into [`TABLE_PARENTS`] of the boxes that
/// may be descended into (`TABLE_PARENTS.len()` means inside `stbl`).
fn check_boxes(data: &[u8], depth: usize) -> Result<(), AudioError> {
    let mut rest = data;
    while let Some((kind, body, next)) = split_box(rest) {
        if depth == TABLE_PARENTS.len() {
            check_table(kind, body)?;
        } else if depth == MEDIA_HEADER_DEPTH && &kind == b"mdhd" {
            check_media_header(body)?;
        } else if &kind == TABLE_PARENTS[depth] {
            check_boxes(body, depth + 1)?;
        }
        rest = next;
    }
    Ok(())
}

/// Splits the first box off `data`: its type, its body (cut to the bytes present) and what
/// follows it. `None` when no complete box header is left.
fn split_box(data: &[u8]) -> Option<([u8; 4], &[u8], &[u8])> {
    let size = u64::from(read_u32(data, 0)?);
    let kind: [u8; 4] = data.get(4..8)?.try_into().ok()?;
    let (header_len, box_len) = match size {
        0 => (8, data.len() as u64),
        1 => (16, read_u64(data, 8)?),
        _ => (8, size),
    };
    if box_len < header_len {
        return None;
    }
    let end = usize::try_from(box_len).map_or(data.len(), |len| len.min(data.len()));
    let body = data.get(header_len as usize..end)?;
    Some((kind, body, &data[end..]))
}

/// Rejects a media header whose timescale (units per second of the track's timestamps) is 0.
fn check_media_header(body: &[u8]) -> Result<(), AudioError> {
    // Version 0 stores the creation and modification times in 4 bytes each, version 1 in 8,
    // after the 4-byte version/flags field; the timescale follows them.
    let timescale_at = match body.first() {
        Some(1) => 20,
        _ => 12,
    };
    if read_u32(body, timescale_at) == Some(0) {
        return Err(AudioError::Corrupt {
            reason: "mp4 media header (mdhd) declares a timescale of 0".to_string(),
        });
    }
    Ok(())
}

/// Rejects a sample table whose declared entry count cannot fit in its body.
fn check_table(kind: [u8; 4], body: &[u8]) -> Result<(), AudioError> {
    // Every table starts with a 4-byte version/flags field.
    let (count_at, entry_len) = match &kind {
        b"stts" => (4, 8),
        b"stsc" => (4, 12),
        b"stco" => (4, 4),
        b"co64" => (4, 8),
        // A non-zero sample_size means one constant size and no table.
        b"stsz" if read_u32(body, 4) == Some(0) => (8, 4),
        _ => return Ok(()),
    };
    let Some(count) = read_u32(body, count_at) else {
        return Ok(());
    };
    let available = body.len().saturating_sub(count_at + 4) as u64;
    let needed = u64::from(count) * entry_len;
    if needed > available {
        return Err(AudioError::Corrupt {
            reason: format!(
                "mp4 '{}' table declares {count} entries ({needed} bytes) but its box holds \
                 only {available} bytes",
                String::from_utf8_lossy(&kind)
            ),
        });
    }
    Ok(())
}

fn read_u32(bytes: &[u8], pos: usize) -> Option<u32> {
    let raw = bytes.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes(raw.try_into().ok()?))
}

fn read_u64(bytes: &[u8], pos: usize) -> Option<u64> {
    let raw = bytes.get(pos..pos.checked_add(8)?)?;
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}
