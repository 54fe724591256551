//! Hostile input through the gRPC API of one real server on loopback: broken, forged,
//! oversized and degenerate audio, and malformed upload streams, each generated here (no
//! downloaded files). Every case gets its exact status code and a reason (or the right
//! decision) within a time bound, and the server answers a health check after each.

mod common;
#[path = "hostile_input/forge.rs"]
mod forge;
#[path = "hostile_input/raw_grpc.rs"]
mod raw_grpc;

use std::path::Path;
use std::time::{Duration, Instant};

use common::grpc::{decision, enroll_first, test_other_speakers, Clients};
use common::server::ServerProcess;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vocalguard::audio::{resample_mono, DecodeLimits};
use vocalguard::proto::*;

/// The server's upload limit in these tests.
const MAX_UPLOAD_BYTES: usize = 4_000_000;
/// The server's duration limit in these tests, seconds.
const MAX_DURATION_S: u32 = 60;
/// Longest any refusal or synthetic-audio case may take on a loaded 2-core machine.
const QUICK: Duration = Duration::from_secs(20);
/// Longest a case that screens real speech may take.
const SPEECH: Duration = Duration::from_secs(60);
/// The artist enrolled for the speech cases.
const ARTIST: &str = "hostile-artist";

/// What a case must get back.
enum Expect {
    /// This status code, with a message containing the text (case-insensitive).
    Status(Code, &'static str),
    /// Success with this decision (and review reason, for NEEDS_REVIEW).
    Decision(&'static str, ReviewReason),
}

/// Which call a case makes.
#[derive(Clone, Copy)]
enum Rpc {
    Screen,
    Enroll,
}

/// One hostile input: the messages of its upload stream.
struct Case {
    name: String,
    rpc: Rpc,
    messages: Vec<Message>,
    expect: Expect,
    bound: Duration,
}

/// A stream message, independent of the RPC.
#[derive(Clone)]
enum Message {
    Metadata,
    Chunk(Vec<u8>),
    Neither,
}

impl Case {
    /// A well-formed upload of `bytes`: metadata, then 64 KiB chunks.
    fn upload(name: &str, rpc: Rpc, bytes: &[u8], expect: Expect) -> Self {
        let mut messages = vec![Message::Metadata];
        messages.extend(bytes.chunks(64 * 1024).map(|c| Message::Chunk(c.to_vec())));
        Self {
            name: name.to_string(),
            rpc,
            messages,
            expect,
            bound: QUICK,
        }
    }

    fn screen(name: &str, bytes: &[u8], expect: Expect) -> Self {
        Self::upload(name, Rpc::Screen, bytes, expect)
    }

    fn enroll(name: &str, bytes: &[u8], expect: Expect) -> Self {
        Self::upload(name, Rpc::Enroll, bytes, expect)
    }

    fn stream(name: &str, rpc: Rpc, messages: Vec<Message>, expect: Expect) -> Self {
        Self {
            name: name.to_string(),
            rpc,
            messages,
            expect,
            bound: QUICK,
        }
    }

    fn within(mut self, bound: Duration) -> Self {
        self.bound = bound;
        self
    }
}

fn invalid(reason: &'static str) -> Expect {
    Expect::Status(Code::InvalidArgument, reason)
}

fn decided(name: &'static str) -> Expect {
    Expect::Decision(name, ReviewReason::Unspecified)
}

/// NEEDS_REVIEW for less voiced audio than the decision needs.
fn too_little_voice() -> Expect {
    Expect::Decision("DECISION_NEEDS_REVIEW", ReviewReason::InsufficientVoice)
}

fn track_metadata(track_id: &str) -> TrackMetadata {
    TrackMetadata {
        track_id: track_id.into(),
        uploader_party_id: "uploader-unknown".into(),
        credited_artist_ids: Vec::new(),
        ai_disclosure: AiDisclosure::None as i32,
    }
}

/// Sends `case` and returns what came back.
async fn send(clients: &mut Clients, case: &Case) -> Result<ScreenResponse, tonic::Status> {
    match case.rpc {
        Rpc::Screen => {
            let messages: Vec<ScreenRequest> = case
                .messages
                .iter()
                .map(|m| ScreenRequest {
                    part: match m {
                        Message::Metadata => {
                            Some(screen_request::Part::Metadata(track_metadata(&case.name)))
                        }
                        Message::Chunk(c) => {
                            Some(screen_request::Part::Chunk(AudioChunk { data: c.clone() }))
                        }
                        Message::Neither => None,
                    },
                })
                .collect();
            clients
                .screening
                .screen(tokio_stream::iter(messages))
                .await
                .map(|r| r.into_inner())
        }
        Rpc::Enroll => {
            let messages: Vec<EnrollVoiceprintRequest> = case
                .messages
                .iter()
                .map(|m| EnrollVoiceprintRequest {
                    part: match m {
                        Message::Metadata => {
                            Some(enroll_voiceprint_request::Part::Metadata(EnrollMetadata {
                                artist_id: ARTIST.into(),
                                label: VoiceprintLabel::Speaking as i32,
                                description: case.name.clone(),
                                ..Default::default()
                            }))
                        }
                        Message::Chunk(c) => {
                            Some(enroll_voiceprint_request::Part::Chunk(AudioChunk {
                                data: c.clone(),
                            }))
                        }
                        Message::Neither => None,
                    },
                })
                .collect();
            clients
                .registry
                .enroll_voiceprint(tokio_stream::iter(messages))
                .await
                .map(|r| ScreenResponse {
                    track_id: r.into_inner().voiceprint.unwrap().voiceprint_id,
                    ..Default::default()
                })
        }
    }
}

/// Runs `case` and checks its answer and time, then the server's health; returns what was
/// wrong with the answer, if anything.
async fn run(
    clients: &mut Clients,
    health: &mut HealthClient<tonic::transport::Channel>,
    case: &Case,
) -> Option<String> {
    let start = Instant::now();
    let result = send(clients, case).await;
    let took = start.elapsed();
    let name = &case.name;
    assert_serving(health, name).await;
    eprintln!("{name}: {took:?}");
    let wrong = match (&case.expect, result) {
        (Expect::Status(code, reason), Err(status)) => (status.code() != *code
            || !status
                .message()
                .to_lowercase()
                .contains(&reason.to_lowercase()))
        .then(|| format!("expected {code:?} with {reason:?}, got {status:?}")),
        (Expect::Decision(want, reason), Ok(response)) => (decision(&response) != *want
            || response.review_reason != *reason as i32
            || response.explanation.is_empty())
        .then(|| {
            format!(
                "expected {want}, got {} ({:?}): {}",
                decision(&response),
                response.review_reason,
                response.explanation
            )
        }),
        (Expect::Status(code, _), Ok(response)) => {
            Some(format!("expected {code:?}, got {response:?}"))
        }
        (Expect::Decision(want, _), Err(status)) => {
            Some(format!("expected {want}, got {status:?}"))
        }
    };
    let slow = (took >= case.bound).then(|| format!("took {took:?}, bound {:?}", case.bound));
    match (wrong, slow) {
        (None, None) => None,
        (wrong, slow) => Some(format!(
            "{name}: {}",
            [wrong, slow]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

async fn assert_serving(health: &mut HealthClient<tonic::transport::Channel>, after: &str) {
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_or_else(|s| panic!("health after {after}: {s:?}"))
        .into_inner()
        .status;
    assert_eq!(
        status,
        ServingStatus::Serving as i32,
        "health after {after}"
    );
}

/// 1.5 s tone in `n` seconds of audio at `rate`: `0.4 sin(2π 440 t)`.
fn tone(rate: u32, seconds: f32) -> Vec<f32> {
    (0..(rate as f32 * seconds) as usize)
        .map(|i| 0.4 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin())
        .collect()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audio")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Cases that need no shared data.
fn synthetic_cases() -> Vec<Case> {
    let mut cases = vec![
        Case::stream(
            "no messages at all",
            Rpc::Screen,
            vec![],
            invalid("empty stream"),
        ),
        Case::screen("empty upload", &[], invalid("no audio")),
        Case::screen("one byte", &[0x42], invalid("unsupported format")),
        Case::screen(
            "random bytes",
            &forge::random_bytes(256 * 1024, 7),
            invalid("unusable audio"),
        ),
        Case::screen(
            "text",
            "This is not audio, just a paragraph of text. "
                .repeat(200)
                .as_bytes(),
            invalid("unsupported format"),
        ),
        Case::screen(
            "WAV header claiming 10^9 frames over 0.5 s of tone",
            &common::raw_wav(1, 1, 16_000, 16, 2_000_000_000, &pcm16(&tone(16_000, 0.5))),
            decided("DECISION_NO_VOICE"),
        ),
        Case::screen(
            "WAV with zero channels",
            &common::raw_wav(1, 0, 16_000, 16, 3200, &[0; 3200]),
            invalid("zero channels"),
        ),
        Case::screen(
            "WAV at 0 Hz",
            &common::raw_wav(1, 1, 0, 16, 3200, &[0; 3200]),
            invalid("unsupported sample rate 0 Hz"),
        ),
        Case::screen(
            "WAV at 1 Hz",
            &common::raw_wav(1, 1, 1, 16, 3200, &[0; 3200]),
            invalid("unsupported sample rate 1 Hz"),
        ),
        Case::screen(
            "WAV at 10 MHz",
            &common::raw_wav(1, 1, 10_000_000, 16, 3200, &[0; 3200]),
            invalid("unsupported sample rate 10000000 Hz"),
        ),
        Case::screen(
            "float WAV with NaN",
            &forge::wav(
                &[with_sample(tone(16_000, 1.0), 100, f32::NAN)],
                16_000,
                true,
            ),
            invalid("non-finite sample"),
        ),
        Case::screen(
            "float WAV with infinity",
            &forge::wav(
                &[with_sample(tone(16_000, 1.0), 200, f32::NEG_INFINITY)],
                16_000,
                true,
            ),
            invalid("non-finite sample"),
        ),
        Case::screen(
            "ten hours of FLAC silence",
            &forge::flac_silence(8_000, 10 * 3600),
            invalid("the header declares 36000"),
        ),
        Case::screen(
            "32-bit FLAC (libFLAC 1.4 width)",
            &forge::flac_silence_of_width(48_000, 5, 32),
            invalid("unsupported FLAC sample size: 32 bits per sample"),
        ),
        Case::screen(
            "AIFF of three seconds of silence",
            &common::raw_aiff(16_000, &[0; 3 * 16_000]),
            decided("DECISION_NO_VOICE"),
        ),
        Case::screen(
            "M4A whose media header declares a timescale of 0 (a symphonia panic)",
            &forge::mp4_zero_timescale(fixture("tone_44100_mono.m4a")),
            invalid("timescale of 0"),
        ),
        Case::screen(
            "thirty seconds of FLAC silence (the same encoder)",
            &forge::flac_silence(8_000, 30),
            decided("DECISION_NO_VOICE"),
        ),
        Case::screen(
            "two minutes of WAV silence (over the 60 s limit)",
            &common::raw_wav(1, 1, 8_000, 8, 120 * 8_000, &vec![0x80; 120 * 8_000]),
            invalid("audio too long: decoding passed"),
        ),
        Case::screen(
            "upload over the size limit",
            &forge::random_bytes(MAX_UPLOAD_BYTES + 1, 3),
            Expect::Status(Code::ResourceExhausted, "exceeds the server's limit"),
        ),
        Case::screen(
            "clipped square wave",
            &forge::wav(&[square_wave(16_000, 5.0)], 16_000, false),
            too_little_voice(),
        ),
        Case::screen(
            "Ogg Vorbis codebook of 2^24 entries x 31 dimensions (2 GB table)",
            &forge::ogg_vorbis_forged_codebook(31, (1 << 24) - 1, 1),
            invalid("vorbis codebook 0"),
        ),
        Case::screen(
            "Ogg Vorbis codebook whose lookup size overflows 32 bits",
            &forge::ogg_vorbis_forged_codebook(32768, 127 << 17, 2),
            invalid("corrupt"),
        ),
        Case::screen(
            "Opus in Ogg",
            &fixture("tone_48000_mono.opus"),
            invalid("unsupported codec: opus"),
        ),
        Case::stream(
            "metadata missing (only chunks)",
            Rpc::Screen,
            vec![Message::Chunk(vec![0; 1024]), Message::Chunk(vec![0; 1024])],
            invalid("first message must carry metadata"),
        ),
        Case::stream(
            "chunks before metadata",
            Rpc::Screen,
            vec![Message::Chunk(vec![0; 1024]), Message::Metadata],
            invalid("first message must carry metadata"),
        ),
        Case::stream(
            "metadata sent twice",
            Rpc::Screen,
            vec![
                Message::Metadata,
                Message::Metadata,
                Message::Chunk(vec![0; 64]),
            ],
            invalid("metadata sent twice"),
        ),
        Case::stream(
            "a message with neither metadata nor chunk",
            Rpc::Screen,
            vec![Message::Metadata, Message::Neither],
            invalid("neither metadata nor a chunk"),
        ),
        Case::enroll(
            "enroll random bytes",
            &forge::random_bytes(64 * 1024, 11),
            invalid("unusable audio"),
        ),
        Case::enroll(
            "enroll five seconds of silence",
            &forge::wav(&[vec![0.0; 5 * 16_000]], 16_000, false),
            Expect::Status(Code::FailedPrecondition, "0.00 s of voiced audio"),
        ),
        Case::enroll(
            "enroll ten hours of FLAC silence",
            &forge::flac_silence(8_000, 10 * 3600),
            invalid("the header declares 36000"),
        ),
        Case::enroll(
            "enroll over the size limit",
            &forge::random_bytes(MAX_UPLOAD_BYTES + 1, 5),
            Expect::Status(Code::ResourceExhausted, "exceeds the server's limit"),
        ),
        Case::enroll(
            "enroll a forged Ogg Vorbis codebook",
            &forge::ogg_vorbis_forged_codebook(31, (1 << 24) - 1, 1),
            invalid("vorbis codebook 0"),
        ),
        Case::stream(
            "enroll chunks before metadata",
            Rpc::Enroll,
            vec![Message::Chunk(vec![0; 1024]), Message::Metadata],
            invalid("first message must carry metadata"),
        ),
        Case::stream(
            "enroll metadata sent twice",
            Rpc::Enroll,
            vec![Message::Metadata, Message::Metadata],
            invalid("metadata sent twice"),
        ),
    ];
    for (name, bytes) in [
        ("WAV", forge::wav(&[tone(16_000, 1.5)], 16_000, false)),
        ("FLAC", fixture("tone_22050_mono.flac")),
        ("MP3", fixture("tone_44100_mono.mp3")),
        ("OGG", fixture("tone_48000_stereo.ogg")),
        ("M4A", fixture("tone_44100_mono.m4a")),
    ] {
        cases.push(Case::screen(
            &format!("{name} cut to its first 40 bytes"),
            &bytes[..40],
            truncated_header_expectation(name),
        ));
        cases.push(Case::screen(
            &format!("{name} cut in half"),
            &bytes[..bytes.len() / 2],
            truncated_half_expectation(name),
        ));
    }
    cases
}

/// What a file cut to 40 bytes (inside its headers) gets.
fn truncated_header_expectation(_format: &str) -> Expect {
    invalid("corrupt or truncated")
}

/// What a 1.5 s tone cut in half gets: WAV, FLAC and MP3 decode their complete packets (the
/// VAD finds a little "voice" in the FLAC and MP3 tones); symphonia's Ogg and MP4 readers
/// refuse a stream whose end is missing.
fn truncated_half_expectation(format: &str) -> Expect {
    match format {
        "WAV" => decided("DECISION_NO_VOICE"),
        "FLAC" | "MP3" => too_little_voice(),
        _ => invalid("ended unexpectedly"),
    }
}

/// Cases that screen real speech from librispeech-mini against an enrolled artist; returns
/// them with the artist enrolled.
async fn speech_cases(clients: &mut Clients, root: &Path) -> Vec<Case> {
    let speakers = test_other_speakers(root);
    let (_, files) = &speakers[0];
    let (_, rest) = enroll_first(clients, ARTIST, files, 3).await;
    let limits = DecodeLimits::default();
    let speech = rest
        .iter()
        .map(|f| vocalguard::audio::load_file(f, &limits).unwrap().samples)
        .find(|s| s.len() > 8 * 16_000)
        .expect("an utterance over 8 s");
    let telephone = resample_mono(speech.clone(), 16_000, 8_000).unwrap();
    let wide = resample_mono(speech.clone(), 16_000, 48_000).unwrap();
    let silent = vec![0.0; wide.len()];
    let offset: Vec<f32> = speech.iter().map(|s| s + 0.3).collect();
    vec![
        Case::screen(
            "8 kHz telephone speech of the artist",
            &forge::wav(&[telephone], 8_000, false),
            decided("DECISION_UNAUTHORIZED_MATCH"),
        )
        .within(SPEECH),
        Case::screen(
            "48 kHz stereo speech of the artist with a silent channel",
            &forge::wav(&[wide, silent], 48_000, false),
            decided("DECISION_UNAUTHORIZED_MATCH"),
        )
        .within(SPEECH),
        // The encoder, like its reference, sees DC: the offset alone hides the voice, so the
        // track is screened again without it.
        Case::screen(
            "speech of the artist on a DC offset of +0.3",
            &forge::wav(&[offset], 16_000, false),
            decided("DECISION_UNAUTHORIZED_MATCH"),
        )
        .within(SPEECH),
    ]
}

fn pcm16(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
        .collect()
}

fn with_sample(mut samples: Vec<f32>, at: usize, value: f32) -> Vec<f32> {
    samples[at] = value;
    samples
}

/// A 150 Hz square wave driven far past full scale and clipped: `±1`.
fn square_wave(rate: u32, seconds: f32) -> Vec<f32> {
    (0..(rate as f32 * seconds) as usize)
        .map(|i| {
            let phase = (i as f32 * 150.0 / rate as f32).fract();
            (if phase < 0.5 { 4.0f32 } else { -4.0 }).clamp(-1.0, 1.0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_typed_errors_quickly_and_the_server_stays_healthy() {
    let data = tempfile::tempdir().unwrap();
    let max_upload = MAX_UPLOAD_BYTES.to_string();
    let max_duration = MAX_DURATION_S.to_string();
    let server = ServerProcess::start(
        data.path(),
        &[
            "--max-upload-bytes",
            &max_upload,
            "--max-duration",
            &max_duration,
        ],
    );
    let mut clients = Clients::connect(&server.url()).await;
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    clients.create_artist(ARTIST, "Hostile Artist").await;

    let mut cases = synthetic_cases();
    match common::librispeech_mini() {
        Some(root) => cases.extend(speech_cases(&mut clients, &root).await),
        None => eprintln!("speech cases skipped"),
    }
    let mut failures = Vec::new();
    for case in &cases {
        failures.extend(run(&mut clients, &mut health, case).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A stream whose last message is cut short: the client ends the stream mid-message.
    let start = Instant::now();
    let (code, message) =
        raw_grpc::screen_cut_mid_chunk(&server.addr, track_metadata("cut"), 1000, true)
            .await
            .expect("a status");
    assert_eq!(Code::from_i32(code), Code::InvalidArgument, "{message}");
    assert!(message.contains("upload stream broke off"), "{message}");
    assert!(start.elapsed() < QUICK);
    assert_serving(&mut health, "a stream ended mid-message").await;

    // A client that drops its connection mid-message: nothing to answer, but the server stays
    // healthy and the next call works.
    assert!(
        raw_grpc::screen_cut_mid_chunk(&server.addr, track_metadata("dropped"), 30_000, false)
            .await
            .is_none()
    );
    assert_serving(&mut health, "a connection dropped mid-message").await;

    // Whole messages whose bytes are not protobuf (a field tag of 0, then a truncated
    // varint): the client's fault, INVALID_ARGUMENT, for a unary call and for an upload.
    for path in [
        "/vocalguard.v1.RegistryService/GetArtist",
        "/vocalguard.v1.ScreeningService/Screen",
    ] {
        let (code, message) =
            raw_grpc::call_with_raw_message(&server.addr, path, &[0x00, 0xFF, 0xFF]).await;
        assert_eq!(
            Code::from_i32(code),
            Code::InvalidArgument,
            "{path}: {message}"
        );
        assert!(message.contains("does not decode"), "{path}: {message}");
    }
    assert_serving(&mut health, "malformed message bodies").await;
    let after = clients
        .screen_bytes(
            "after the drop",
            &forge::wav(&[tone(16_000, 1.0)], 16_000, false),
            "uploader-unknown",
            AiDisclosure::None,
        )
        .await
        .expect("the next call works");
    assert_eq!(decision(&after), "DECISION_NO_VOICE");

    assert!(cases.len() >= 30, "{} cases", cases.len());
}

/// Checks that `result` failed with `code`, a message under 300 bytes that says how long the
/// value was, and no more than a short prefix of it.
fn assert_short_refusal<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    what: &str,
    length: usize,
) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    let message = status.message();
    assert!(message.len() < 300, "{what}: {} bytes", message.len());
    assert!(
        message.contains(&format!("({length} characters)")),
        "{what}: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_ids_are_refused_by_their_code_with_a_short_message() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let mut clients = Clients::connect(&server.url()).await;
    clients.create_artist(ARTIST, "Hostile Artist").await;
    let silence = forge::wav(&[vec![0.0; 16_000]], 16_000, false);

    // 16,300 characters broke the reply header before; 5 MB also flooded the log.
    for length in [16_300, 5_000_000] {
        let long = "a".repeat(length);
        let registry = &mut clients.registry;
        assert_short_refusal(
            registry
                .get_artist(GetArtistRequest {
                    artist_id: long.clone(),
                })
                .await,
            Code::InvalidArgument,
            "GetArtist",
            length,
        );
        assert_short_refusal(
            registry
                .create_artist(CreateArtistRequest {
                    artist_id: long.clone(),
                    display_name: "Long".into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "CreateArtist",
            length,
        );
        assert_short_refusal(
            registry
                .delete_voiceprint(DeleteVoiceprintRequest {
                    voiceprint_id: long.clone(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "DeleteVoiceprint",
            length,
        );
        assert_short_refusal(
            registry
                .grant_authorization(GrantAuthorizationRequest {
                    artist_id: ARTIST.into(),
                    party_id: long.clone(),
                    note: String::new(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "GrantAuthorization",
            length,
        );
        assert_short_refusal(
            registry
                .revoke_authorization(RevokeAuthorizationRequest {
                    artist_id: long.clone(),
                    party_id: "p".into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "RevokeAuthorization",
            length,
        );
        assert_short_refusal(
            registry
                .list_audit_events(ListAuditEventsRequest {
                    page_token: long.clone(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "ListAuditEvents page_token",
            length,
        );
        let enroll = common::grpc::enroll_messages(&long, &silence);
        assert_short_refusal(
            registry.enroll_voiceprint(tokio_stream::iter(enroll)).await,
            Code::InvalidArgument,
            "EnrollVoiceprint",
            length,
        );
        for (field, metadata) in [
            (
                "uploader_party_id",
                TrackMetadata {
                    uploader_party_id: long.clone(),
                    ..track_metadata("long-uploader")
                },
            ),
            (
                "credited_artist_ids",
                TrackMetadata {
                    credited_artist_ids: vec![long.clone()],
                    ..track_metadata("long-credit")
                },
            ),
            (
                "track_id",
                TrackMetadata {
                    track_id: long.clone(),
                    ..track_metadata("")
                },
            ),
        ] {
            assert_short_refusal(
                clients
                    .screening
                    .screen_clip(ScreenClipRequest {
                        metadata: Some(metadata),
                        audio: silence.clone(),
                    })
                    .await,
                Code::InvalidArgument,
                field,
                length,
            );
        }
    }
    let log = server.log_text();
    assert!(log.len() < 64 * 1024, "the log grew to {} bytes", log.len());
}
