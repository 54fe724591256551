//! Pre-flight check of Vorbis setup headers.
//!
//! symphonia 0.5 allocates each codebook's vector-quantisation table (`entries × dimensions`
//! floats) straight from the 40 header bits that declare it, so a setup header of a few dozen
//! bytes can request terabytes and abort the process. The codebooks are walked here, bit for
//! bit as symphonia reads them, and refused when one is larger than libvorbis accepts
//! (`ilog(dimensions) + ilog(entries) > 24`) or when all of them together exceed
//! [`MAX_TOTAL_CODEBOOK_VALUES`].

use super::AudioError;

/// Size of the identification header that precedes the setup header in symphonia's codec
/// extra data.
const IDENT_HEADER_LEN: usize = 30;

/// Packet type and signature that open a setup header.
const SETUP_SIGNATURE: &[u8; 7] = b"\x05vorbis";

/// Codebook synchronisation pattern.
const CODEBOOK_SYNC: u32 = 0x56_4342;

/// Most codebook entries plus lookup values all codebooks together may declare. Encoders use
/// well under 10^6 (libvorbis' largest modes about 10^5); this bounds the decoder's tables to
/// tens of megabytes.
pub(crate) const MAX_TOTAL_CODEBOOK_VALUES: u64 = 1 << 22;

/// Checks the codebooks of the setup header in `extra_data` (a Vorbis identification header
/// followed by a setup header, as symphonia's Ogg reader hands them to the decoder).
///
/// Whatever cannot be read passes unchanged: the decoder reports it.
pub(crate) fn check_vorbis_setup(extra_data: &[u8]) -> Result<(), AudioError> {
    let Some(setup) = extra_data.get(IDENT_HEADER_LEN..) else {
        return Ok(());
    };
    let Some(body) = setup.strip_prefix(SETUP_SIGNATURE) else {
        return Ok(());
    };
    let mut bits = BitReader::new(body);
    let Some(count) = bits.read(8) else {
        return Ok(());
    };
    let mut total = 0u64;
    for index in 0..=count {
        match codebook_size(&mut bits) {
            Some(Ok(size)) => total += size,
            Some(Err(reason)) => {
                return Err(AudioError::Corrupt {
                    reason: format!("vorbis codebook {index}: {reason}"),
                })
            }
            None => return Ok(()),
        }
        if total > MAX_TOTAL_CODEBOOK_VALUES {
            return Err(AudioError::Corrupt {
                reason: format!(
                    "vorbis codebooks declare more than {MAX_TOTAL_CODEBOOK_VALUES} entries and \
                     lookup values in all"
                ),
            });
        }
    }
    Ok(())
}

/// Reads one codebook header and returns the entries plus lookup values it makes the decoder
/// allocate, `Err` when it is too large, or `None` when it cannot be read.
fn codebook_size(bits: &mut BitReader<'_>) -> Option<Result<u64, String>> {
    if bits.read(24)? != CODEBOOK_SYNC {
        return None;
    }
    let dimensions = bits.read(16)?;
    let entries = bits.read(24)?;
    if ilog(dimensions) + ilog(entries) > 24 {
        return Some(Err(format!(
            "{entries} entries of {dimensions} dimensions exceed the Vorbis limit of 2^24 values"
        )));
    }
    let ordered = bits.read(1)? == 1;
    if !ordered {
        if bits.read(1)? == 1 {
            for _ in 0..entries {
                if bits.read(1)? == 1 {
                    bits.skip(5)?;
                }
            }
        } else {
            bits.skip(u64::from(entries) * 5)?;
        }
    } else {
        bits.skip(5)?;
        let mut entry = 0u32;
        while entry < entries {
            entry = entry.checked_add(bits.read(ilog(entries - entry))?)?;
        }
        if entry > entries {
            return None;
        }
    }
    let lookup_values = match bits.read(4)? {
        0 => return Some(Ok(u64::from(entries))),
        lookup @ (1 | 2) => {
            bits.skip(64)?;
            let value_bits = bits.read(4)? + 1;
            bits.skip(1)?;
            let values = if lookup == 1 {
                lookup1_values(entries, dimensions)?
            } else {
                u64::from(entries) * u64::from(dimensions)
            };
            bits.skip(values * u64::from(value_bits))?;
            values
        }
        _ => return None,
    };
    Some(Ok(
        u64::from(entries) * (1 + u64::from(dimensions)) + lookup_values
    ))
}

/// Vorbis I §9.2.3: the greatest `v` with `v^dimensions <= entries`; `None` when symphonia
/// would fail on it (no dimensions).
fn lookup1_values(entries: u32, dimensions: u32) -> Option<u64> {
    if dimensions == 0 {
        return None;
    }
    let fits = |v: u64| {
        (0..dimensions)
            .try_fold(1u64, |acc, _| {
                acc.checked_mul(v).filter(|&p| p <= u64::from(entries))
            })
            .is_some()
    };
    let (mut low, mut high) = (0u64, u64::from(entries) + 1);
    while high - low > 1 {
        let mid = (low + high) / 2;
        if fits(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    Some(low)
}

/// Bits needed to write `x` (Vorbis `ilog`).
fn ilog(x: u32) -> u32 {
    32 - x.leading_zeros()
}

/// Reads bits least-significant first, as Vorbis packs them.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: u64,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// The next `n` (at most 32) bits as an integer, first bit lowest.
    fn read(&mut self, n: u32) -> Option<u32> {
        let mut value = 0u32;
        for i in 0..n {
            let byte = *self.bytes.get(usize::try_from(self.pos / 8).ok()?)?;
            value |= u32::from((byte >> (self.pos % 8)) & 1) << i;
            self.pos += 1;
        }
        Some(value)
    }

    /// Skips `n` bits; `None` when fewer are left.
    fn skip(&mut self, n: u64) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        (end <= self.bytes.len() as u64 * 8).then(|| self.pos = end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes bits least-significant first.
    #[derive(Default)]
    struct BitWriter {
        bytes: Vec<u8>,
        len: usize,
    }

    impl BitWriter {
        fn put(&mut self, value: u64, n: u32) -> &mut Self {
            for i in 0..n {
                if self.len.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = value.checked_shr(i).unwrap_or(0) & 1;
                self.bytes[self.len / 8] |= (bit as u8) << (self.len % 8);
                self.len += 1;
            }
            self
        }
    }

    /// Identification header bytes followed by a setup header whose codebooks are `books`:
    /// (dimensions, entries, lookup type), each length-ordered with one code length.
    fn extra_data(books: &[(u64, u64, u64)]) -> Vec<u8> {
        let mut data = vec![1u8];
        data.extend_from_slice(b"vorbis");
        data.resize(IDENT_HEADER_LEN, 0);
        data.extend_from_slice(SETUP_SIGNATURE);
        let mut w = BitWriter::default();
        w.put(books.len() as u64 - 1, 8);
        for &(dimensions, entries, lookup) in books {
            w.put(u64::from(CODEBOOK_SYNC), 24)
                .put(dimensions, 16)
                .put(entries, 24)
                .put(1, 1)
                .put(0, 5)
                .put(entries, ilog(entries as u32))
                .put(lookup, 4);
            if lookup != 0 {
                w.put(0, 64).put(0, 4).put(0, 1);
                let values = match lookup {
                    1 => lookup1_values(entries as u32, dimensions as u32).unwrap(),
                    _ => entries * dimensions,
                };
                w.put(0, values as u32);
            }
        }
        data.extend_from_slice(&w.bytes);
        data
    }

    #[test]
    fn ordinary_codebooks_pass() {
        assert!(check_vorbis_setup(&extra_data(&[(8, 6561, 1), (2, 256, 0), (4, 81, 2)])).is_ok());
    }

    #[test]
    fn a_terabyte_lookup_table_is_refused() {
        let err = check_vorbis_setup(&extra_data(&[(65535, (1 << 24) - 1, 1)])).unwrap_err();
        assert!(err.to_string().contains("exceed the Vorbis limit"), "{err}");
    }

    #[test]
    fn many_large_codebooks_are_refused_together() {
        let books = vec![(1, 1 << 20, 0); 5];
        let err = check_vorbis_setup(&extra_data(&books)).unwrap_err();
        assert!(err.to_string().contains("in all"), "{err}");
    }

    #[test]
    fn unreadable_headers_are_left_to_the_decoder() {
        assert!(check_vorbis_setup(b"").is_ok());
        assert!(check_vorbis_setup(&[0; 64]).is_ok());
        let mut cut = extra_data(&[(8, 6561, 1)]);
        cut.truncate(IDENT_HEADER_LEN + 12);
        assert!(check_vorbis_setup(&cut).is_ok());
    }

    #[test]
    fn lookup1_values_is_the_integer_root() {
        assert_eq!(lookup1_values(6561, 8), Some(3));
        assert_eq!(lookup1_values(6560, 8), Some(2));
        assert_eq!(lookup1_values((1 << 24) - 1, 65535), Some(1));
        assert_eq!(lookup1_values(0, 3), Some(0));
        assert_eq!(lookup1_values(5, 0), None);
    }
}
