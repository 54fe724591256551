//! Upload admission on a real server: beyond the upload slots, a party's share of them or the
//! buffered-bytes budget a call is refused at once with RESOURCE_EXHAUSTED, health stays up,
//! what a call held is given back when it ends, however it ends, and a stream that goes quiet
//! is dropped after the idle timeout.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::grpc::{screen_messages, wav_bytes, Clients};
use common::server::ServerProcess;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vocalguard::proto::*;

fn metadata(track: &str) -> TrackMetadata {
    TrackMetadata {
        track_id: track.into(),
        uploader_party_id: "uploader".into(),
        credited_artist_ids: Vec::new(),
        ai_disclosure: AiDisclosure::None as i32,
    }
}

fn chunk(bytes: &[u8]) -> ScreenRequest {
    ScreenRequest {
        part: Some(screen_request::Part::Chunk(AudioChunk {
            data: bytes.to_vec(),
        })),
    }
}

/// The value of one series on the server's metrics page.
fn metric(addr: &str, name: &str) -> f64 {
    let mut http = std::net::TcpStream::connect(addr).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    http.read_to_string(&mut page).unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from:\n{page}"))
        .parse()
        .unwrap()
}

/// Waits until `name` reads `value`.
async fn wait_for(addr: &str, name: &str, value: f64) {
    let until = Instant::now() + Duration::from_secs(20);
    while metric(addr, name) != value {
        assert!(Instant::now() < until, "{name} never reached {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_slots_or_the_byte_budget_are_refused_at_once() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data.path(),
        &[
            "--max-concurrent-uploads",
            "2",
            "--max-upload-bytes",
            "1000000",
            "--max-buffered-bytes",
            "1000000",
        ],
    );
    let metrics = server.metrics_addr.clone().unwrap();
    let mut clients = Clients::connect(&server.url()).await;
    let silence = wav_bytes(&vec![0.0; 20 * 16_000], 16_000);
    let small = wav_bytes(&vec![0.0; 15 * 16_000], 16_000);

    // A holds 600 kB and keeps its stream open.
    let (send_a, receive_a) = mpsc::channel(4);
    send_a
        .send(screen_messages(metadata("a"), &[]).remove(0))
        .await
        .unwrap();
    send_a.send(chunk(&silence[..600_000])).await.unwrap();
    let a = {
        let mut screening = clients.screening.clone();
        tokio::spawn(async move { screening.screen(ReceiverStream::new(receive_a)).await })
    };
    wait_for(&metrics, "vocalguard_upload_bytes", 600_000.0).await;

    // B would pass the byte budget.
    let sent = Instant::now();
    let refused = clients
        .screen_bytes("b", &small, "uploader", AiDisclosure::None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("bytes of uploads"),
        "{refused:?}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );

    // C takes the second slot with its metadata alone; D finds no slot.
    let (send_c, receive_c) = mpsc::channel(4);
    send_c
        .send(screen_messages(metadata("c"), &[]).remove(0))
        .await
        .unwrap();
    let c = {
        let mut screening = clients.screening.clone();
        tokio::spawn(async move { screening.screen(ReceiverStream::new(receive_c)).await })
    };
    wait_for(&metrics, "vocalguard_uploads_in_flight", 2.0).await;
    let sent = Instant::now();
    let refused = clients
        .screen_bytes("d", &small, "uploader", AiDisclosure::None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("uploads already"), "{refused:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );

    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    // A finishes and is screened; C ends without audio and is refused; both give back all.
    send_a.send(chunk(&silence[600_000..])).await.unwrap();
    drop(send_a);
    let screened = a.await.unwrap().expect("A is screened").into_inner();
    assert_eq!(screened.decision, Decision::NoVoice as i32);
    drop(send_c);
    let refused = c.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    wait_for(&metrics, "vocalguard_uploads_in_flight", 0.0).await;
    assert_eq!(metric(&metrics, "vocalguard_upload_bytes"), 0.0);
    assert_eq!(
        metric(
            &metrics,
            r#"vocalguard_uploads_refused_total{reason="bytes"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"vocalguard_uploads_refused_total{reason="slots"}"#
        ),
        1.0
    );

    // With everything given back, the call refused before now passes.
    let screened = clients
        .screen_bytes("b-again", &small, "uploader", AiDisclosure::None)
        .await
        .expect("admitted once the budget is free");
    assert_eq!(screened.decision, Decision::NoVoice as i32);
}

/// The inline entry (`NAME:ROLE:SHA256`) of a fresh screen-role token named `name`, and the
/// token.
fn screen_token(name: &str) -> (String, String) {
    let printed: serde_json::Value = serde_json::from_slice(&common::run_vocalguard(&[
        "token", "new", "--json", "--name", name, "--role", "screen",
    ]))
    .unwrap();
    let field = |key: &str| printed[key].as_str().unwrap().to_string();
    (field("inline"), field("token"))
}

/// `message` sent with `token`.
fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_hold_only_their_partys_share_and_are_dropped_when_idle() {
    const IDLE_S: u64 = 5;
    let data = tempfile::tempdir().unwrap();
    let (stalling_entry, stalling) = screen_token("stalling-client");
    let (platform_entry, platform) = screen_token("platform");
    let idle = IDLE_S.to_string();
    let server = ServerProcess::start_with_env(
        data.path(),
        &[
            "--max-concurrent-uploads",
            "8",
            "--max-uploads-per-party",
            "4",
            "--upload-idle-timeout",
            &idle,
        ],
        &[(
            "VOCALGUARD_TOKENS",
            &format!("{stalling_entry};{platform_entry}"),
        )],
    );
    let metrics = server.metrics_addr.clone().unwrap();
    let clients = Clients::connect(&server.url()).await;

    // One client opens six streams that send their metadata and 100 bytes, then go quiet.
    let mut quiet = Vec::new();
    let mut stalled = Vec::new();
    for i in 0..6 {
        let (send, receive) = mpsc::channel(4);
        send.send(screen_messages(metadata(&format!("stalled-{i}")), &[]).remove(0))
            .await
            .unwrap();
        send.send(chunk(&[0; 100])).await.unwrap();
        quiet.push(send);
        let mut screening = clients.screening.clone();
        let request = bearer(ReceiverStream::new(receive), &stalling);
        stalled.push(tokio::spawn(async move { screening.screen(request).await }));
    }
    wait_for(
        &metrics,
        r#"vocalguard_uploads_refused_total{reason="party"}"#,
        2.0,
    )
    .await;
    wait_for(&metrics, "vocalguard_uploads_in_flight", 4.0).await;

    // Another party's upload still gets a slot and is screened while they stall.
    let silence = wav_bytes(&vec![0.0; 5 * 16_000], 16_000);
    let messages = screen_messages(metadata("legitimate"), &silence);
    let screened = clients
        .screening
        .clone()
        .screen(bearer(tokio_stream::iter(messages), &platform))
        .await
        .expect("the other party's upload is admitted")
        .into_inner();
    assert_eq!(screened.decision, Decision::NoVoice as i32);
    assert_eq!(
        metric(&metrics, "vocalguard_uploads_in_flight"),
        4.0,
        "the stalled streams still hold their slots"
    );

    // After the idle timeout the quiet streams are dropped with a reason, their slots freed.
    let mut codes = Vec::new();
    for call in stalled {
        let status = call.await.unwrap().unwrap_err();
        match status.code() {
            Code::ResourceExhausted => {
                assert!(status.message().contains("its share"), "{status:?}")
            }
            Code::DeadlineExceeded => {
                assert!(status.message().contains("upload stalled"), "{status:?}")
            }
            other => panic!("a stalled stream ended with {other:?}: {status:?}"),
        }
        codes.push(status.code());
    }
    codes.sort_by_key(|c| *c as i32);
    assert_eq!(
        codes,
        [
            vec![Code::DeadlineExceeded; 4],
            vec![Code::ResourceExhausted; 2]
        ]
        .concat()
    );
    drop(quiet);
    wait_for(&metrics, "vocalguard_uploads_in_flight", 0.0).await;
    assert_eq!(
        metric(&metrics, "vocalguard_upload_idle_timeouts_total"),
        4.0
    );
}
