//! Hostile audio made from scratch (WAV headers come from `common::raw_wav`): a FLAC encoder for constant
//! (silent) frames, and Ogg Vorbis streams with forged setup headers and valid page checksums.

/// WAV bytes of `channels` (equal lengths) at `rate`, as 16-bit integers or 32-bit floats.
pub fn wav(channels: &[Vec<f32>], rate: u32, float: bool) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: rate,
        bits_per_sample: if float { 32 } else { 16 },
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
    for i in 0..channels[0].len() {
        for channel in channels {
            let s = channel[i];
            if float {
                writer.write_sample(s).unwrap();
            } else {
                writer
                    .write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
                    .unwrap();
            }
        }
    }
    writer.finalize().unwrap();
    out.into_inner()
}

/// A real FLAC stream of `seconds` of digital silence at `rate` (one of the rates a FLAC
/// frame header can name: 8, 16, 22.05, 24, 32, 44.1, 48 kHz), mono 16-bit, in 4096-sample
/// frames with CONSTANT subframes: about 14 bytes per frame.
pub fn flac_silence(rate: u32, seconds: u64) -> Vec<u8> {
    flac_silence_of_width(rate, seconds, 16)
}

/// [`flac_silence`] with `bits` per sample: 16, 24 or 32 (the width libFLAC 1.4 added,
/// frame header code 7).
pub fn flac_silence_of_width(rate: u32, seconds: u64, bits: u32) -> Vec<u8> {
    let width_code: u8 = match bits {
        16 => 4,
        24 => 6,
        32 => 7,
        other => panic!("no FLAC width code for {other} bits"),
    };
    const BLOCK: u64 = 4096;
    let rate_code: u8 = match rate {
        8_000 => 4,
        16_000 => 5,
        22_050 => 6,
        24_000 => 7,
        32_000 => 8,
        44_100 => 9,
        48_000 => 10,
        other => panic!("no FLAC rate code for {other} Hz"),
    };
    let frames = (seconds * u64::from(rate)).div_ceil(BLOCK);
    let total = frames * BLOCK;
    let mut out = b"fLaC".to_vec();
    // STREAMINFO, the last metadata block: 34 bytes.
    out.extend_from_slice(&[0x80, 0, 0, 34]);
    out.extend_from_slice(&(BLOCK as u16).to_be_bytes());
    out.extend_from_slice(&(BLOCK as u16).to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    // rate (20 bits) | channels - 1 (3) | bits - 1 (5) | total samples (36).
    let packed = (u64::from(rate) << 44) | (u64::from(bits - 1) << 36) | total;
    out.extend_from_slice(&packed.to_be_bytes());
    out.extend_from_slice(&[0; 16]);
    for n in 0..frames {
        let start = out.len();
        // Sync, fixed blocking; 4096-sample block, rate code; mono, sample width.
        out.extend_from_slice(&[0xFF, 0xF8, 0xC0 | rate_code, width_code << 1]);
        out.extend_from_slice(&flac_utf8(n));
        let crc = crc8(&out[start..]);
        out.push(crc);
        // CONSTANT subframe holding 0, in `bits` bits.
        out.push(0x00);
        out.extend(std::iter::repeat_n(0u8, bits as usize / 8));
        let crc = crc16(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    out
}

/// FLAC's UTF-8-like coding of a frame number.
fn flac_utf8(n: u64) -> Vec<u8> {
    if n < 0x80 {
        return vec![n as u8];
    }
    let (len, lead): (u32, u8) = match n {
        0..0x800 => (2, 0xC0),
        0x800..0x1_0000 => (3, 0xE0),
        0x1_0000..0x20_0000 => (4, 0xF0),
        _ => panic!("frame number {n} too large for this encoder"),
    };
    let mut out = vec![lead | (n >> (6 * (len - 1))) as u8];
    for i in (0..len - 1).rev() {
        out.push(0x80 | ((n >> (6 * i)) & 0x3F) as u8);
    }
    out
}

fn crc8(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |mut crc, &byte| {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
        crc
    })
}

fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |mut crc, &byte| {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// An Ogg Vorbis stream (mono, 8 kHz) whose setup header holds one codebook of `dimensions`
/// and `entries`, length-ordered, with VQ lookup `lookup_type` (1 or 2); every page checksum
/// is valid, so only the Vorbis layer can tell.
pub fn ogg_vorbis_forged_codebook(dimensions: u16, entries: u32, lookup_type: u32) -> Vec<u8> {
    let mut ident = vec![1u8];
    ident.extend_from_slice(b"vorbis");
    ident.extend_from_slice(&0u32.to_le_bytes());
    ident.push(1);
    ident.extend_from_slice(&8_000u32.to_le_bytes());
    ident.extend_from_slice(&[0; 12]);
    ident.push(0xB8); // blocksizes 2^8 and 2^11
    ident.push(1);
    let mut comment = vec![3u8];
    comment.extend_from_slice(b"vorbis");
    comment.extend_from_slice(&[0; 8]);
    comment.push(1);
    let mut bits = BitWriter::default();
    bits.put(0, 8) // one codebook
        .put(0x56_4342, 24)
        .put(u64::from(dimensions), 16)
        .put(u64::from(entries), 24)
        .put(1, 1) // length-ordered
        .put(0, 5)
        .put(u64::from(entries), 32 - entries.leading_zeros())
        .put(u64::from(lookup_type), 4)
        .put(0, 32)
        .put(0, 32)
        .put(0, 4) // one bit per value
        .put(0, 1)
        .put(0, 8);
    let mut setup = vec![5u8];
    setup.extend_from_slice(b"vorbis");
    setup.extend_from_slice(&bits.bytes);
    setup.extend_from_slice(&[0; 32]);
    let mut out = ogg_page(0x02, 0, 0, &[&ident]);
    out.extend(ogg_page(0x00, 0, 1, &[&comment, &setup]));
    out.extend(ogg_page(0x04, 256, 2, &[&[0u8; 8]]));
    out
}

/// One Ogg page of stream serial 1 holding whole `packets`, with its CRC.
fn ogg_page(header_type: u8, granule: u64, sequence: u32, packets: &[&[u8]]) -> Vec<u8> {
    let mut lacing = Vec::new();
    for packet in packets {
        lacing.extend(std::iter::repeat_n(255u8, packet.len() / 255));
        lacing.push((packet.len() % 255) as u8);
    }
    let mut page = b"OggS\0".to_vec();
    page.push(header_type);
    page.extend_from_slice(&granule.to_le_bytes());
    page.extend_from_slice(&1u32.to_le_bytes());
    page.extend_from_slice(&sequence.to_le_bytes());
    page.extend_from_slice(&[0; 4]);
    page.push(lacing.len() as u8);
    page.extend_from_slice(&lacing);
    for packet in packets {
        page.extend_from_slice(packet);
    }
    let crc = page.iter().fold(0u32, |mut crc, &byte| {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
        crc
    });
    page[22..26].copy_from_slice(&crc.to_le_bytes());
    page
}

/// Writes bits least-significant first, as Vorbis packs them.
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
            let bit = (value >> i) & 1;
            self.bytes[self.len / 8] |= (bit as u8) << (self.len % 8);
            self.len += 1;
        }
        self
    }
}

/// Seeded pseudo-random bytes (xorshift), the same on every run.
pub fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// `m4a` with the timescale of its first media header (`mdhd`) set to 0.
pub fn mp4_zero_timescale(mut m4a: Vec<u8>) -> Vec<u8> {
    let at = m4a
        .windows(4)
        .position(|w| w == b"mdhd")
        .expect("the file has a media header");
    let version = m4a[at + 4];
    let timescale = at + 4 + if version == 1 { 20 } else { 12 };
    m4a[timescale..timescale + 4].fill(0);
    m4a
}
