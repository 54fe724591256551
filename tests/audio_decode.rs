//! Decoding and resampling of real audio bytes: synthetic WAVs written with hound, committed
//! synthetic fixtures in other formats (tests/fixtures/audio), real speech from
//! librispeech-mini, and malformed or hostile inputs.

mod common;

use std::f64::consts::PI;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hound::{SampleFormat, WavSpec, WavWriter};
use vocalguard::audio::{
    decode_mono, decode_to_16k_mono, load_file, resample_mono, Audio, AudioError, DecodeLimits,
    TARGET_SAMPLE_RATE,
};

/// The synthetic test signal: (frequency in Hz, amplitude).
const TONES: [(f64, f64); 2] = [(440.0, 0.4), (1000.0, 0.2)];
/// Length of every synthetic signal, in seconds.
const SIGNAL_S: f64 = 1.5;
const RATES: [u32; 6] = [8_000, 22_050, 44_100, 48_000, 96_000, 192_000];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The test signal at time `t` seconds.
fn signal(t: f64) -> f64 {
    TONES
        .iter()
        .map(|&(freq, amp)| amp * (2.0 * PI * freq * t).sin())
        .sum()
}

fn signal_frames(rate: u32, seconds: f64) -> Vec<f64> {
    let n = (f64::from(rate) * seconds).round() as usize;
    (0..n).map(|i| signal(i as f64 / f64::from(rate))).collect()
}

/// Amplitude of the `freq` component of 16 kHz `samples` over 0.25 s..1.25 s, a window that
/// holds a whole number of periods of both test tones.
fn tone_amplitude(samples: &[f32], freq: f64) -> f64 {
    let window = &samples[4_000..20_000];
    let (mut re, mut im) = (0.0, 0.0);
    for (i, &s) in window.iter().enumerate() {
        let phase = 2.0 * PI * freq * i as f64 / f64::from(TARGET_SAMPLE_RATE);
        re += f64::from(s) * phase.cos();
        im += f64::from(s) * phase.sin();
    }
    2.0 * (re * re + im * im).sqrt() / window.len() as f64
}

fn rms(samples: &[f32]) -> f64 {
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// Asserts that 16 kHz `samples` hold the test signal scaled by `gain`, within `tolerance`
/// (relative), measured on both tone amplitudes and on the RMS.
fn assert_signal(samples: &[f32], gain: f64, tolerance: f64, what: &str) {
    for &(freq, amp) in &TONES {
        let got = tone_amplitude(samples, freq);
        let want = amp * gain;
        assert!(
            (got - want).abs() <= tolerance * want,
            "{what}: {freq} Hz amplitude {got:.4}, expected {want:.4}"
        );
    }
    let want_rms = gain * (TONES.iter().map(|&(_, a)| a * a / 2.0).sum::<f64>()).sqrt();
    let got_rms = rms(&samples[4_000..20_000]);
    assert!(
        (got_rms - want_rms).abs() <= tolerance * want_rms,
        "{what}: RMS {got_rms:.4}, expected {want_rms:.4}"
    );
}

/// A WAV file written by hound; `channels[c][i]` is frame `i` of channel `c`, in [-1, 1].
fn hound_wav(rate: u32, bits: u16, format: SampleFormat, channels: &[Vec<f64>]) -> Vec<u8> {
    let spec = WavSpec {
        channels: channels.len() as u16,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: format,
    };
    let mut cursor = Cursor::new(Vec::new());
    let mut writer = WavWriter::new(&mut cursor, spec).expect("wav writer");
    let full_scale = f64::from(1u32 << (bits - 1));
    for i in 0..channels[0].len() {
        for channel in channels {
            let x = channel[i];
            match (format, bits) {
                (SampleFormat::Float, _) => writer.write_sample(x as f32),
                (SampleFormat::Int, 8) => writer.write_sample(quantize(x, full_scale) as i8),
                (SampleFormat::Int, 16) => writer.write_sample(quantize(x, full_scale) as i16),
                (SampleFormat::Int, _) => writer.write_sample(quantize(x, full_scale) as i32),
            }
            .expect("write sample");
        }
    }
    writer.finalize().expect("finalize wav");
    cursor.into_inner()
}

fn quantize(x: f64, full_scale: f64) -> i64 {
    (x * full_scale)
        .round()
        .clamp(-full_scale, full_scale - 1.0) as i64
}

/// 16-bit little-endian PCM bytes of `frames`.
fn pcm16_bytes(frames: &[f64]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|&x| (quantize(x, 32768.0) as i16).to_le_bytes())
        .collect()
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audio")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("read fixture {name}: {e}"))
}

fn decode(bytes: Vec<u8>) -> Result<Audio, AudioError> {
    decode_to_16k_mono(bytes, None, &DecodeLimits::default())
}

fn expected_16k_len(frames: usize, rate: u32) -> usize {
    (frames as f64 * f64::from(TARGET_SAMPLE_RATE) / f64::from(rate)).round() as usize
}

fn assert_len_near(got: usize, want: usize, slack: usize, what: &str) {
    assert!(
        got.abs_diff(want) <= slack,
        "{what}: {got} samples, expected {want} ± {slack}"
    );
}

/// Deterministic xorshift64 generator, so no `rand` dependency is needed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// WAV: sample formats, rates, channels, exact conversion
// ---------------------------------------------------------------------------------------------

#[test]
fn wav_every_sample_format_and_rate_resamples_to_16k_with_signal_preserved() {
    let formats = [
        (8, SampleFormat::Int, "pcm_u8"),
        (16, SampleFormat::Int, "pcm_s16le"),
        (24, SampleFormat::Int, "pcm_s24le"),
        (32, SampleFormat::Int, "pcm_s32le"),
        (32, SampleFormat::Float, "pcm_f32le"),
    ];
    for rate in RATES {
        let frames = signal_frames(rate, SIGNAL_S);
        for (bits, format, codec) in formats {
            let what = format!("{bits}-bit {format:?} at {rate} Hz");
            let audio = decode(hound_wav(rate, bits, format, std::slice::from_ref(&frames)))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(audio.source_sample_rate, rate, "{what}");
            assert_eq!(audio.source_channels, 1, "{what}");
            assert_eq!(audio.codec, codec, "{what}");
            assert_len_near(
                audio.samples.len(),
                expected_16k_len(frames.len(), rate),
                1,
                &what,
            );
            // 8-bit quantisation noise is about -50 dB, well inside 2 %.
            assert_signal(&audio.samples, 1.0, 0.02, &what);
        }
    }
}

#[test]
fn wav_stereo_is_averaged_to_mono() {
    for rate in RATES {
        let left = signal_frames(rate, SIGNAL_S);
        let silent = vec![0.0; left.len()];
        let what = format!("stereo, right silent, at {rate} Hz");
        let audio = decode(hound_wav(rate, 16, SampleFormat::Int, &[left, silent]))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(audio.source_channels, 2, "{what}");
        assert_signal(&audio.samples, 0.5, 0.02, &what);
    }
}

#[test]
fn wav_stereo_average_is_exact_at_16k() {
    let left: Vec<f64> = (0..1_000).map(|i| signal(i as f64 / 16_000.0)).collect();
    let right: Vec<f64> = left.iter().map(|x| -0.5 * x + 0.1).collect();
    let audio = decode(hound_wav(
        16_000,
        16,
        SampleFormat::Int,
        &[left.clone(), right.clone()],
    ))
    .expect("stereo wav");
    for (i, (&l, &r)) in left.iter().zip(&right).enumerate() {
        let l = quantize(l, 32768.0) as f64 / 32768.0;
        let r = quantize(r, 32768.0) as f64 / 32768.0;
        assert_eq!(audio.samples[i], ((l + r) / 2.0) as f32, "frame {i}");
    }
}

/// Integer PCM must map to f32 exactly like libsndfile/soundfile: divide by 2^(bits-1)
/// (8-bit WAV is unsigned: u/128 - 1). At 16 kHz nothing is resampled, so this is exact.
#[test]
fn wav_integer_pcm_converts_exactly_like_libsndfile() {
    let cases: [(u16, [i64; 6]); 4] = [
        (8, [-128, -127, -1, 0, 1, 127]),
        (16, [-32768, -32767, -1, 0, 1, 32767]),
        (24, [-8_388_608, -8_388_607, -1, 0, 1, 8_388_607]),
        (
            32,
            [-2_147_483_648, -2_147_483_647, -1, 0, 1, 2_147_483_647],
        ),
    ];
    for (bits, values) in cases {
        let full_scale = f64::from(1u32 << (bits - 1));
        let frames: Vec<f64> = values.iter().map(|&v| v as f64 / full_scale).collect();
        let audio = decode(hound_wav(16_000, bits, SampleFormat::Int, &[frames])).expect("wav");
        let expected: Vec<f32> = values
            .iter()
            .map(|&v| (v as f64 / full_scale) as f32)
            .collect();
        assert_eq!(audio.samples, expected, "{bits}-bit");
    }
}

#[test]
fn wav_float_pcm_passes_through_bit_exact() {
    let values = [-1.0f32, -0.123_456_79, 0.0, 1e-30, 0.5, 1.0];
    let frames: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    let audio = decode(hound_wav(16_000, 32, SampleFormat::Float, &[frames])).expect("wav");
    assert_eq!(audio.samples, values);
}

// ---------------------------------------------------------------------------------------------
// Resampler
// ---------------------------------------------------------------------------------------------

#[test]
fn resampler_keeps_a_click_in_place_and_gives_the_rounded_length() {
    for rate in [
        8_000, 11_025, 22_050, 32_000, 44_100, 48_000, 96_000, 192_000,
    ] {
        for n in [2 * rate as usize, 2 * rate as usize + 7] {
            let mut input = vec![0.0f32; n];
            input[rate as usize] = 1.0; // t = 1.0 s
            let output = resample_mono(input, rate, 16_000).expect("resample");
            assert_len_near(
                output.len(),
                expected_16k_len(n, rate),
                1,
                &format!("{rate} Hz"),
            );
            let peak = (0..output.len())
                .max_by(|&a, &b| output[a].abs().total_cmp(&output[b].abs()))
                .expect("non-empty");
            assert!(
                peak.abs_diff(16_000) <= 1,
                "{rate} Hz: click moved to sample {peak}"
            );
        }
    }
}

#[test]
fn resampler_is_identity_at_16k_and_handles_tiny_inputs() {
    let input: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
    assert_eq!(
        resample_mono(input.clone(), 16_000, 16_000).expect("identity"),
        input
    );
    assert!(resample_mono(Vec::new(), 44_100, 16_000)
        .expect("empty")
        .is_empty());
    for n in 1..12 {
        let output = resample_mono(vec![0.5; n], 44_100, 16_000).expect("tiny");
        assert_len_near(
            output.len(),
            expected_16k_len(n, 44_100),
            1,
            &format!("{n} frames"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Compressed fixtures (synthetic, see tests/fixtures/audio/README.md)
// ---------------------------------------------------------------------------------------------

/// Decodes a fixture and checks its metadata, its length (within `slack_s`) and its signal.
fn check_fixture(
    name: &str,
    rate: u32,
    channels: usize,
    codec: &str,
    gain: f64,
    slack_s: f64,
    tol: f64,
) {
    let audio = load_file(&fixture_path(name), &DecodeLimits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(audio.source_sample_rate, rate, "{name}");
    assert_eq!(audio.source_channels, channels, "{name}");
    assert_eq!(audio.codec, codec, "{name}");
    let want = (SIGNAL_S * f64::from(TARGET_SAMPLE_RATE)) as usize;
    let slack = (slack_s * f64::from(TARGET_SAMPLE_RATE)) as usize;
    assert_len_near(audio.samples.len(), want, slack, name);
    assert_signal(&audio.samples, gain, tol, name);
}

#[test]
fn flac_fixture_decodes() {
    check_fixture("tone_22050_mono.flac", 22_050, 1, "flac", 1.0, 0.0, 0.01);
}

#[test]
fn mp3_fixture_decodes_gapless() {
    // The LAME header's encoder delay and padding are trimmed, as libsndfile does. LAME at
    // 64 kbps makes both tones 5 % quieter (soundfile reads 0.380 and 0.190 as well).
    check_fixture("tone_44100_mono.mp3", 44_100, 1, "mp3", 0.95, 0.0, 0.02);
}

#[test]
fn ogg_vorbis_stereo_fixture_decodes_and_averages() {
    // Right channel is silent, so the mono mix carries half the amplitude.
    check_fixture("tone_48000_stereo.ogg", 48_000, 2, "vorbis", 0.5, 0.0, 0.05);
}

#[test]
fn m4a_aac_fixture_decodes() {
    // symphonia 0.5 does not trim AAC priming/padding in MP4: 1024 + up to 1024 frames extra.
    check_fixture("tone_44100_mono.m4a", 44_100, 1, "aac", 1.0, 0.05, 0.05);
}

#[test]
fn opus_is_reported_as_unsupported_codec() {
    match decode(fixture("tone_48000_mono.opus")) {
        Err(AudioError::UnsupportedCodec { codec }) => assert_eq!(codec, "opus"),
        other => panic!("expected UnsupportedCodec, got {other:?}"),
    }
}

#[test]
fn format_is_probed_from_bytes_not_extension() {
    let bytes = fixture("tone_22050_mono.flac");
    let audio = decode_to_16k_mono(bytes, Some("mp3"), &DecodeLimits::default()).expect("flac");
    assert_eq!(audio.codec, "flac");
}

// ---------------------------------------------------------------------------------------------
// Real speech
// ---------------------------------------------------------------------------------------------

#[test]
fn librispeech_flac_decodes_to_exact_int16_over_32768() {
    let Some(dir) = common::librispeech_mini() else {
        return;
    };
    let path = dir.join("test-other/1688/1688-142285-0000.flac");
    let audio = load_file(&path, &DecodeLimits::default()).expect("librispeech flac");
    assert_eq!(
        (audio.source_sample_rate, audio.source_channels),
        (16_000, 1)
    );
    assert_eq!(audio.codec, "flac");
    assert!(
        audio.samples.len() > 16_000,
        "{} samples",
        audio.samples.len()
    );
    assert!(
        rms(&audio.samples) > 0.005,
        "speech should not be near-silent"
    );
    for (i, &s) in audio.samples.iter().enumerate() {
        let scaled = f64::from(s) * 32768.0;
        assert!(
            scaled.fract() == 0.0 && (-32768.0..=32767.0).contains(&scaled),
            "sample {i} = {s} is not an int16 / 32768"
        );
    }
    // At 16 kHz the resampler must not touch the decoded samples.
    let bytes = std::fs::read(&path).expect("read flac");
    let raw = decode_mono(bytes, Some("flac"), &DecodeLimits::default()).expect("decode_mono");
    assert_eq!(raw.samples, audio.samples);
}

// ---------------------------------------------------------------------------------------------
// Malformed and hostile input
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_input_is_rejected() {
    assert!(matches!(decode(Vec::new()), Err(AudioError::EmptyInput)));
}

#[test]
fn one_byte_and_plain_text_are_unsupported_formats() {
    assert!(matches!(
        decode(vec![b'R']),
        Err(AudioError::UnsupportedFormat { .. })
    ));
    let text = b"This is a plain text file, not audio.\nIt has two lines.\n".repeat(50);
    assert!(matches!(
        decode(text),
        Err(AudioError::UnsupportedFormat { .. })
    ));
}

#[test]
fn random_bytes_are_rejected() {
    // Seed 1: the bytes contain an MPEG sync word, so the probe picks the MP3 reader, which
    // then runs out of data. Seed 2: no marker at all.
    let corrupt = XorShift(1).bytes(4096);
    assert!(matches!(decode(corrupt), Err(AudioError::Corrupt { .. })));
    let unknown = XorShift(2).bytes(4096);
    assert!(matches!(
        decode(unknown),
        Err(AudioError::UnsupportedFormat { .. })
    ));
}

#[test]
fn truncated_files_decode_what_is_complete_or_report_corruption() {
    let wav = hound_wav(
        44_100,
        16,
        SampleFormat::Int,
        &[signal_frames(44_100, SIGNAL_S)],
    );
    let half_wav = decode(wav[..wav.len() / 2].to_vec()).expect("half wav");
    assert_len_near(
        half_wav.samples.len(),
        expected_16k_len((wav.len() / 2 - 44) / 2, 44_100),
        1,
        "half wav",
    );
    // 100 bytes is the 44-byte header plus 28 frames.
    let short_wav = decode(wav[..100].to_vec()).expect("100-byte wav");
    assert_len_near(
        short_wav.samples.len(),
        expected_16k_len(28, 44_100),
        1,
        "100-byte wav",
    );

    // FLAC and MP3 keep the frames before the cut. symphonia's FLAC reader reads ahead to
    // the next frame header, so the last complete frames before the cut are lost too.
    for name in ["tone_22050_mono.flac", "tone_44100_mono.mp3"] {
        let bytes = fixture(name);
        let half =
            decode(bytes[..bytes.len() / 2].to_vec()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            half.samples.len() < 24_000 / 2 + 1_000 && !half.samples.is_empty(),
            "{name}"
        );
    }
    // The OGG fixture's first audio page ends past the middle, and symphonia's MP4 reader
    // needs the whole `mdat`: both are reported as truncated containers.
    for name in ["tone_48000_stereo.ogg", "tone_44100_mono.m4a"] {
        let bytes = fixture(name);
        let result = decode(bytes[..bytes.len() / 2].to_vec());
        assert!(
            matches!(result, Err(AudioError::Corrupt { .. })),
            "{name}: {result:?}"
        );
    }
    let ogg = fixture("tone_48000_stereo.ogg");
    let partial = decode(ogg[..8_000].to_vec()).expect("ogg cut after complete pages");
    assert!(partial.samples.len() < 24_000 && !partial.samples.is_empty());

    for name in [
        "tone_22050_mono.flac",
        "tone_44100_mono.mp3",
        "tone_48000_stereo.ogg",
        "tone_44100_mono.m4a",
    ] {
        let result = decode(fixture(name)[..100].to_vec());
        assert!(
            matches!(result, Err(AudioError::Corrupt { .. })),
            "{name} at 100 bytes: {result:?}"
        );
    }
}

/// symphonia 0.5 reserves memory for MP4 sample tables from their declared entry count; a
/// forged count of 2^32 - 1 would ask for up to 64 GB and abort the process. It must be
/// reported as corrupt instead.
#[test]
fn aiff_decodes_exactly_like_the_same_wav() {
    let frames = signal_frames(22_050, SIGNAL_S);
    let pcm: Vec<i16> = frames
        .iter()
        .map(|&x| quantize(x, 32768.0) as i16)
        .collect();
    let aiff = decode_mono(
        common::raw_aiff(22_050, &pcm),
        None,
        &DecodeLimits::default(),
    )
    .expect("aiff");
    let wav = decode_mono(
        hound_wav(22_050, 16, SampleFormat::Int, &[frames]),
        None,
        &DecodeLimits::default(),
    )
    .expect("wav");
    assert_eq!(aiff.sample_rate, 22_050);
    assert_eq!(aiff.samples, wav.samples);
}

#[test]
fn a_32_bit_flac_is_named_as_an_unsupported_sample_size() {
    let mut bytes = fixture("tone_22050_mono.flac");
    // STREAMINFO bits-per-sample minus one: the low bit of body byte 12, the high four of 13.
    bytes[8 + 12] |= 1;
    bytes[8 + 13] |= 0xF0;
    match decode(bytes) {
        Err(e @ AudioError::UnsupportedBitDepth { bits: 32, .. }) => {
            assert!(e.to_string().contains("FLAC"), "{e}");
        }
        other => panic!("32-bit FLAC: expected UnsupportedBitDepth, got {other:?}"),
    }
}

#[test]
fn mp4_sample_table_with_forged_entry_count_is_corrupt() {
    let original = fixture("tone_44100_mono.m4a");
    for table in [b"stts", b"stsc", b"stsz", b"stco"] {
        let at = original
            .windows(4)
            .position(|w| w == table)
            .expect("table present");
        // Count follows the 4-byte version/flags (and, for stsz, the 4-byte sample size).
        let count_at = at + 4 + 4 + if table == b"stsz" { 4 } else { 0 };
        let mut bytes = original.clone();
        bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        match decode(bytes) {
            Err(AudioError::Corrupt { reason }) => {
                assert!(
                    reason.contains(std::str::from_utf8(table).expect("ascii")),
                    "{reason}"
                );
            }
            other => panic!("forged {table:?} count: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn wav_header_claiming_a_billion_frames_decodes_the_data_present_quickly() {
    let frames = signal_frames(16_000, 0.5);
    let bytes = common::raw_wav(1, 1, 16_000, 16, 2_000_000_000, &pcm16_bytes(&frames));
    let start = Instant::now();
    let audio = decode(bytes).expect("forged length");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(audio.samples.len(), frames.len());
}

#[test]
fn wav_with_zero_channels_is_rejected() {
    let bytes = common::raw_wav(1, 0, 16_000, 16, 3200, &[0; 3200]);
    assert!(matches!(decode(bytes), Err(AudioError::ZeroChannels)));
}

#[test]
fn wav_sample_rates_outside_8k_to_192k_are_rejected() {
    for rate in [0, 1, 7_999, 192_001, 10_000_000] {
        let result = decode(common::raw_wav(1, 1, rate, 16, 3200, &[0; 3200]));
        match result {
            Err(AudioError::UnsupportedSampleRate { rate: got }) => assert_eq!(got, rate),
            other => panic!("rate {rate}: expected UnsupportedSampleRate, got {other:?}"),
        }
    }
}

#[test]
fn nan_and_infinite_float_samples_are_rejected() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut frames = signal_frames(16_000, 0.1);
        frames[100] = bad;
        match decode(hound_wav(16_000, 32, SampleFormat::Float, &[frames])) {
            Err(AudioError::NonFinite { frame }) => assert_eq!(frame, 100),
            other => panic!("{bad}: expected NonFinite, got {other:?}"),
        }
    }
}

#[test]
fn wav_of_only_a_header_has_zero_samples() {
    assert!(matches!(
        decode(common::raw_wav(1, 1, 16_000, 16, 0, &[])),
        Err(AudioError::ZeroSamples)
    ));
}

#[test]
fn sixteen_minutes_is_rejected_as_too_long_quickly() {
    // 16 min of 8-bit 16 kHz silence: 15.4 MB.
    let data = vec![0x80u8; 16 * 60 * 16_000];
    let bytes = common::raw_wav(1, 1, 16_000, 8, data.len() as u32, &data);
    let start = Instant::now();
    match decode(bytes) {
        Err(AudioError::TooLong { duration_s, max_s }) => {
            assert_eq!(max_s, 900.0);
            // Decoding stops at the first packet past the limit.
            assert!(
                duration_s > 900.0 && duration_s < 901.0,
                "stopped at {duration_s} s"
            );
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn custom_duration_limit_is_enforced() {
    let bytes = hound_wav(
        22_050,
        16,
        SampleFormat::Int,
        &[signal_frames(22_050, SIGNAL_S)],
    );
    let limits = DecodeLimits {
        max_duration_s: 1.0,
    };
    match decode_to_16k_mono(bytes.clone(), Some("wav"), &limits) {
        Err(AudioError::TooLong { duration_s, max_s }) => {
            assert_eq!(max_s, 1.0);
            assert!(duration_s > 1.0 && duration_s <= SIGNAL_S, "{duration_s}");
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    let generous = DecodeLimits {
        max_duration_s: 2.0,
    };
    assert!(decode_to_16k_mono(bytes, Some("wav"), &generous).is_ok());
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let path = Path::new("/nonexistent/vocalguard/voice.wav");
    match load_file(path, &DecodeLimits::default()) {
        Err(err @ AudioError::Io { .. }) => {
            assert!(
                err.to_string()
                    .contains("/nonexistent/vocalguard/voice.wav"),
                "{err}"
            );
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn load_file_reads_a_wav_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tone.wav");
    let bytes = hound_wav(
        48_000,
        24,
        SampleFormat::Int,
        &[signal_frames(48_000, SIGNAL_S)],
    );
    std::fs::write(&path, bytes).expect("write wav");
    let audio = load_file(&path, &DecodeLimits::default()).expect("load wav");
    assert_eq!(audio.samples.len(), 24_000);
    assert_signal(&audio.samples, 1.0, 0.01, "tone.wav");
}

/// Seeded byte flips, overwrites, insertions and truncations of every fixture must come back
/// as `Ok` (with finite samples) or `Err`, never as a panic or an abort.
#[test]
fn mutated_fixtures_never_panic() {
    let wav = hound_wav(22_050, 16, SampleFormat::Int, &[signal_frames(22_050, 0.5)]);
    let mut inputs = vec![("generated.wav".to_owned(), wav)];
    for name in [
        "tone_22050_mono.flac",
        "tone_44100_mono.mp3",
        "tone_48000_stereo.ogg",
        "tone_44100_mono.m4a",
        "tone_48000_mono.opus",
    ] {
        inputs.push((name.to_owned(), fixture(name)));
    }
    let mut rng = XorShift(0x5EED_CAFE_F00D_BEEF);
    for (name, original) in &inputs {
        let (mut ok, mut err) = (0, 0);
        for round in 0..200 {
            let mut bytes = original.clone();
            match rng.below(4) {
                0 => {
                    for _ in 0..=rng.below(8) {
                        let at = rng.below(bytes.len());
                        bytes[at] ^= (rng.next() as u8) | 1;
                    }
                }
                1 => bytes.truncate(rng.below(bytes.len())),
                2 => {
                    let at = rng.below(bytes.len());
                    let end = (at + 1 + rng.below(64)).min(bytes.len());
                    let noise = rng.bytes(end - at);
                    bytes[at..end].copy_from_slice(&noise);
                }
                _ => {
                    let at = rng.below(bytes.len());
                    let len = 1 + rng.below(64);
                    let noise = rng.bytes(len);
                    bytes.splice(at..at, noise);
                }
            }
            match decode_to_16k_mono(bytes, None, &DecodeLimits::default()) {
                Ok(audio) => {
                    assert!(
                        audio.samples.iter().all(|s| s.is_finite()),
                        "{name} round {round}"
                    );
                    ok += 1;
                }
                Err(_) => err += 1,
            }
        }
        eprintln!("{name}: {ok} decoded, {err} rejected");
    }
}
