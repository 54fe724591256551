//! A real `vocalguard serve` process on loopback: ping, health, metrics, and graceful shutdown.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::server::{eventually, metric, ServerProcess};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vocalguard::proto::ping_service_client::PingServiceClient;
use vocalguard::proto::PingRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_ping_health_and_metrics_then_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let url = server.url();

    let mut ping = PingServiceClient::connect(url.clone()).await.unwrap();
    let reply = ping.ping(PingRequest {}).await.unwrap().into_inner();
    assert_eq!(reply.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(reply.model, vocalguard::encoder::source::DEFAULT_MODEL);
    assert_eq!(reply.model_sha256.len(), 64);

    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in [
        "",
        "vocalguard.v1.RegistryService",
        "vocalguard.v1.ScreeningService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    let metrics_addr = server.metrics_addr.clone().expect("metrics address");
    let mut http = std::net::TcpStream::connect(metrics_addr).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    http.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("vocalguard_registry_voiceprints 0"), "{page}");

    // Close the connections first: graceful shutdown waits for open ones.
    drop((ping, health));
    let log = server.log.clone();
    let exit = server.terminate();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    // The log reader thread may still be copying the last lines.
    eventually("the last log line", Duration::from_secs(10), || {
        log.lock().unwrap().contains("vocalguard stopped")
    });
}

/// A minute of real speech as WAV bytes, and its metadata.
fn long_track(root: &std::path::Path) -> Vec<u8> {
    let mut samples = Vec::new();
    for file in common::grpc::flac_files(&root.join("train-clean-100")) {
        samples.extend(
            vocalguard::audio::load_file(&file, &Default::default())
                .unwrap()
                .samples,
        );
        if samples.len() > 60 * 16_000 {
            break;
        }
    }
    common::grpc::wav_bytes(&samples, 16_000)
}

fn track_metadata() -> vocalguard::proto::TrackMetadata {
    vocalguard::proto::TrackMetadata {
        track_id: "long".into(),
        uploader_party_id: "p".into(),
        credited_artist_ids: vec![],
        ai_disclosure: vocalguard::proto::AiDisclosure::None as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_honoured_and_shutdown_lets_in_flight_calls_finish() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let wav = long_track(&root);
    let data = tempfile::tempdir().unwrap();
    {
        let strict = ServerProcess::start(data.path(), &["--request-timeout", "0.05"]);
        let mut clients = common::grpc::Clients::connect(&strict.url()).await;
        let expired = clients
            .screen_bytes("long", &wav, "p", vocalguard::proto::AiDisclosure::None)
            .await
            .unwrap_err();
        assert_eq!(expired.code(), tonic::Code::DeadlineExceeded, "{expired:?}");
        assert!(expired.message().contains("deadline"), "{expired:?}");
    }
    let server = ServerProcess::start(data.path(), &["--workers", "1"]);
    let mut clients = common::grpc::Clients::connect(&server.url()).await;

    // tonic's client enforces a deadline it sends itself, and reports it as CANCELLED.
    let mut hurried = tonic::Request::new(tokio_stream::iter(common::grpc::screen_messages(
        track_metadata(),
        &wav,
    )));
    hurried.set_timeout(std::time::Duration::from_millis(30));
    let expired = clients.screening.screen(hurried).await.unwrap_err();
    assert!(
        matches!(
            expired.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{expired:?}"
    );

    // The hurried call's work may outlive it; let it drain so that what is seen below is the
    // next call's.
    let idle = |page: &str| {
        metric(page, "vocalguard_uploads_in_flight") == 0.0
            && metric(page, "vocalguard_inference_queue_depth") == 0.0
    };
    eventually("the hurried call to drain", Duration::from_secs(60), || {
        idle(&server.metrics_page())
    });
    let in_flight = {
        let mut screening = clients.screening.clone();
        let wav = wav.clone();
        tokio::spawn(async move {
            screening
                .screen(tokio_stream::iter(common::grpc::screen_messages(
                    track_metadata(),
                    &wav,
                )))
                .await
        })
    };
    // In flight once its upload holds a slot or its job is in the pool; SIGTERM only then.
    eventually("the call to be in flight", Duration::from_secs(30), || {
        !idle(&server.metrics_page())
    });
    assert!(!in_flight.is_finished(), "the call ended before SIGTERM");
    server.signal_term();
    let finished = in_flight
        .await
        .unwrap()
        .expect("the in-flight call finishes")
        .into_inner();
    assert_eq!(
        finished.decision,
        vocalguard::proto::Decision::NoMatch as i32,
        "{}",
        finished.explanation
    );
    assert!(finished.duration_s > 59.0);
    drop(clients);
    let log = server.log.clone();
    let exit = server.wait();
    assert!(exit.success(), "{exit}");
    assert!(log.lock().unwrap().contains("shutting down"));
}
