//! Container probing and packet-by-packet decoding of untrusted bytes to mono `f32`
//! at the source sample rate.
//!
//! Integer PCM is converted to `f32` by symphonia's `conv` module, which divides by the
//! full-scale value of the sample width exactly like libsndfile/soundfile: 8-bit unsigned
//! `u/128 - 1`, 16-bit `s/32768`, 24-bit `s/8388608`, 32-bit `s/2147483648`. FLAC is decoded
//! to left-justified `i32` and then divided by 2^31, which gives the same values.
//! Multi-channel audio is averaged into one channel.

use std::any::Any;
use std::io::{Cursor, ErrorKind};
use std::panic::{self, AssertUnwindSafe};

use symphonia::core::audio::{AudioBuffer, AudioBufferRef, Signal};
use symphonia::core::codecs::{self, CodecType, DecoderOptions};
use symphonia::core::conv::IntoSample;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::sample::Sample;

use super::flac::check_flac_streaminfo;
use super::mp4::check_mp4_tables;
use super::riff::{check_aiff_header, check_wav_header};
use super::vorbis::check_vorbis_setup;
use super::{check_sample_rate, AudioError, DecodeLimits};

/// Packets that may fail to decode (and are skipped) before the stream is declared corrupt.
const MAX_SKIPPED_PACKETS: usize = 8;

/// Mono audio at the rate it was stored at.
#[derive(Debug, Clone)]
pub struct DecodedMono {
    /// Mono samples in `[-1, 1]` (channel average), at `sample_rate`.
    pub samples: Vec<f32>,
    /// Sample rate of the stream, in Hz.
    pub sample_rate: u32,
    /// Channel count of the stream before downmixing.
    pub channels: usize,
    /// Short codec name, as symphonia names it (`pcm_s16le`, `flac`, `mp3`, `vorbis`, `aac`).
    pub codec: String,
}

/// Decodes `bytes` (any supported container) to mono `f32` at the source rate.
///
/// The container is detected from the bytes; `hint_extension` is passed on as a probe hint
/// but cannot override what the bytes say (symphonia 0.5 ignores it). Decoding
/// stops with [`AudioError::TooLong`] as soon as more than `limits.max_duration_s` seconds
/// have been decoded, so memory stays bounded by the limit, whatever the header claims; a
/// compressed stream whose header (FLAC STREAMINFO, MP3 Xing/VBRI, MP4 `mdhd`, the last Ogg
/// page) declares a longer duration is refused with [`AudioError::DeclaredTooLong`] before
/// anything is decoded.
/// Panics inside the decoder are caught and reported as [`AudioError::Corrupt`].
pub fn decode_mono(
    bytes: Vec<u8>,
    hint_extension: Option<&str>,
    limits: &DecodeLimits,
) -> Result<DecodedMono, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::EmptyInput);
    }
    check_wav_header(&bytes)?;
    check_aiff_header(&bytes)?;
    check_flac_streaminfo(&bytes)?;
    check_mp4_tables(&bytes)?;
    // WAV lengths are often placeholders (streaming writers) or cut short; a WAV decodes what
    // is present, bounded by the running count and the upload size.
    let trust_declared_length = !bytes.starts_with(b"RIFF");
    panic::catch_unwind(AssertUnwindSafe(|| {
        decode_unguarded(bytes, hint_extension, limits, trust_declared_length)
    }))
    .unwrap_or_else(|payload| {
        Err(AudioError::Corrupt {
            reason: format!(
                "decoder failed on malformed data: {}",
                panic_message(&*payload)
            ),
        })
    })
}

fn decode_unguarded(
    bytes: Vec<u8>,
    hint_extension: Option<&str>,
    limits: &DecodeLimits,
    trust_declared_length: bool,
) -> Result<DecodedMono, AudioError> {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    if let Some(extension) = hint_extension {
        hint.with_extension(extension);
    }
    let format_opts = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let mut format = symphonia::default::get_probe()
        .format(&hint, source, &format_opts, &MetadataOptions::default())
        .map_err(container_error)?
        .format;

    let track = format
        .tracks()
        .iter()
        .find(|track| track.codec_params.codec != codecs::CODEC_TYPE_NULL)
        .ok_or(AudioError::NoAudioTrack)?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    if let Some(rate) = params.sample_rate {
        check_sample_rate(rate)?;
    }
    if params
        .channels
        .is_some_and(|channels| channels.count() == 0)
    {
        return Err(AudioError::ZeroChannels);
    }

    if let (true, Some(frames), Some(time_base)) =
        (trust_declared_length, params.n_frames, params.time_base)
    {
        if time_base.denom > 0 {
            let declared_s =
                frames as f64 * f64::from(time_base.numer) / f64::from(time_base.denom);
            check_declared_duration(declared_s, limits)?;
        }
    }
    if params.codec == codecs::CODEC_TYPE_VORBIS {
        if let Some(extra_data) = params.extra_data.as_deref() {
            check_vorbis_setup(extra_data)?;
        }
    }

    let codec = codec_name(params.codec);
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|err| decoder_setup_error(&codec, err))?;

    let mut sink = MonoSink::new(limits.max_duration_s);
    let mut skipped = 0usize;
    let mut last_packet_error = None;
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(SymphoniaError::IoError(err)) if err.kind() == ErrorKind::UnexpectedEof => break,
            // A chained stream (new logical stream) follows; only the first one is used.
            Err(SymphoniaError::ResetRequired) => break,
            Err(err) => return Err(container_error(err)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buffer) => sink.push(buffer)?,
            Err(SymphoniaError::ResetRequired) => break,
            Err(err) => {
                skipped += 1;
                if skipped > MAX_SKIPPED_PACKETS {
                    return Err(packet_error(&codec, skipped, true, err));
                }
                last_packet_error = Some(err);
            }
        }
    }

    match (sink.rate, last_packet_error) {
        (Some(sample_rate), _) if !sink.samples.is_empty() => Ok(DecodedMono {
            samples: sink.samples,
            sample_rate,
            channels: sink.channels,
            codec,
        }),
        (_, Some(err)) => Err(packet_error(&codec, skipped, false, err)),
        _ => Err(AudioError::ZeroSamples),
    }
}

/// Refuses a stream whose header declares more than `limits.max_duration_s` seconds.
fn check_declared_duration(declared_s: f64, limits: &DecodeLimits) -> Result<(), AudioError> {
    if declared_s > limits.max_duration_s {
        return Err(AudioError::DeclaredTooLong {
            declared_s,
            max_s: limits.max_duration_s,
        });
    }
    Ok(())
}

/// Accumulates decoded packets as mono `f32`, enforcing the duration limit and finiteness.
struct MonoSink {
    samples: Vec<f32>,
    rate: Option<u32>,
    channels: usize,
    max_duration_s: f64,
    mix: Vec<f64>,
}

impl MonoSink {
    fn new(max_duration_s: f64) -> Self {
        Self {
            samples: Vec::new(),
            rate: None,
            channels: 0,
            max_duration_s,
            mix: Vec::new(),
        }
    }

    fn push(&mut self, buffer: AudioBufferRef<'_>) -> Result<(), AudioError> {
        let spec = *buffer.spec();
        let channels = spec.channels.count();
        if channels == 0 {
            return Err(AudioError::ZeroChannels);
        }
        match self.rate {
            None => {
                check_sample_rate(spec.rate)?;
                self.rate = Some(spec.rate);
                self.channels = channels;
            }
            Some(rate) if rate != spec.rate => {
                return Err(AudioError::Corrupt {
                    reason: format!(
                        "sample rate changed mid-stream from {rate} Hz to {} Hz",
                        spec.rate
                    ),
                });
            }
            Some(_) => {}
        }
        let total_frames = self.samples.len() + buffer.frames();
        let duration_s = total_frames as f64 / f64::from(spec.rate);
        if duration_s > self.max_duration_s {
            return Err(AudioError::TooLong {
                duration_s,
                max_s: self.max_duration_s,
            });
        }
        match buffer {
            AudioBufferRef::U8(buf) => self.append(&buf),
            AudioBufferRef::U16(buf) => self.append(&buf),
            AudioBufferRef::U24(buf) => self.append(&buf),
            AudioBufferRef::U32(buf) => self.append(&buf),
            AudioBufferRef::S8(buf) => self.append(&buf),
            AudioBufferRef::S16(buf) => self.append(&buf),
            AudioBufferRef::S24(buf) => self.append(&buf),
            AudioBufferRef::S32(buf) => self.append(&buf),
            AudioBufferRef::F32(buf) => self.append(&buf),
            AudioBufferRef::F64(buf) => self.append(&buf),
        }
    }

    /// Converts one buffer to `f32` and appends its channel average.
    fn append<S: Sample + IntoSample<f32>>(
        &mut self,
        buf: &AudioBuffer<S>,
    ) -> Result<(), AudioError> {
        let first_frame = self.samples.len();
        let planes = buf.planes();
        match planes.planes() {
            [mono] => self
                .samples
                .extend(mono.iter().map(|&s| -> f32 { s.into_sample() })),
            planes => {
                self.mix.clear();
                self.mix.resize(buf.frames(), 0.0);
                for plane in planes {
                    for (acc, &s) in self.mix.iter_mut().zip(plane.iter()) {
                        let value: f32 = s.into_sample();
                        *acc += f64::from(value);
                    }
                }
                let count = planes.len() as f64;
                self.samples
                    .extend(self.mix.iter().map(|&sum| (sum / count) as f32));
            }
        }
        match self.samples[first_frame..]
            .iter()
            .position(|s| !s.is_finite())
        {
            Some(offset) => Err(AudioError::NonFinite {
                frame: (first_frame + offset) as u64,
            }),
            None => Ok(()),
        }
    }
}

/// Maps a demuxer (probe or packet-reading) error.
fn container_error(err: SymphoniaError) -> AudioError {
    match err {
        SymphoniaError::Unsupported(_) => AudioError::UnsupportedFormat {
            reason: err.to_string(),
        },
        SymphoniaError::IoError(ref io) if io.kind() == ErrorKind::UnexpectedEof => {
            AudioError::Corrupt {
                reason: format!("container ended unexpectedly ({err})"),
            }
        }
        other => AudioError::Corrupt {
            reason: other.to_string(),
        },
    }
}

/// Maps an error from building the decoder.
fn decoder_setup_error(codec: &str, err: SymphoniaError) -> AudioError {
    match err {
        SymphoniaError::Unsupported(feature) if feature.starts_with("core (codec)") => {
            AudioError::UnsupportedCodec {
                codec: codec.to_owned(),
            }
        }
        SymphoniaError::Unsupported(feature) => AudioError::UnsupportedCodec {
            codec: format!("{codec} ({feature})"),
        },
        other => AudioError::Corrupt {
            reason: other.to_string(),
        },
    }
}

/// Maps the last of `failed` packet decode errors, once decoding has been given up.
fn packet_error(codec: &str, failed: usize, too_many: bool, err: SymphoniaError) -> AudioError {
    match err {
        SymphoniaError::Unsupported(feature) => AudioError::UnsupportedCodec {
            codec: format!("{codec} ({feature})"),
        },
        other if too_many => AudioError::Corrupt {
            reason: format!("{failed} packets failed to decode, the last with: {other}"),
        },
        other => AudioError::Corrupt {
            reason: format!(
                "no audio could be decoded; {failed} packets failed, the last with: {other}"
            ),
        },
    }
}

/// Short name of a codec, also for codecs this build cannot decode.
fn codec_name(codec: CodecType) -> String {
    if let Some(descriptor) = symphonia::default::get_codecs().get_codec(codec) {
        return descriptor.short_name.to_owned();
    }
    let name = match codec {
        codecs::CODEC_TYPE_OPUS => "opus",
        codecs::CODEC_TYPE_SPEEX => "speex",
        codecs::CODEC_TYPE_MP1 => "mp1",
        codecs::CODEC_TYPE_MP2 => "mp2",
        codecs::CODEC_TYPE_ALAC => "alac",
        codecs::CODEC_TYPE_WAVPACK => "wavpack",
        codecs::CODEC_TYPE_MONKEYS_AUDIO => "ape",
        codecs::CODEC_TYPE_TTA => "tta",
        codecs::CODEC_TYPE_MUSEPACK => "musepack",
        codecs::CODEC_TYPE_EAC3 => "eac3",
        codecs::CODEC_TYPE_AC4 => "ac4",
        codecs::CODEC_TYPE_DCA => "dts",
        codecs::CODEC_TYPE_WMA => "wma",
        codecs::CODEC_TYPE_ATRAC1
        | codecs::CODEC_TYPE_ATRAC3
        | codecs::CODEC_TYPE_ATRAC3PLUS
        | codecs::CODEC_TYPE_ATRAC9 => "atrac",
        other => return format!("codec id {other}"),
    };
    name.to_owned()
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}
