//! Upload admission on a real server: beyond the upload slots or the buffered-bytes budget a
//! call is refused at once with RESOURCE_EXHAUSTED, health stays up, and what a call held is
//! given back when it ends, however it ends.

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
