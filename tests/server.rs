//! A real `vocalguard serve` process on loopback: ping, health, metrics, and graceful shutdown.

mod common;

use std::io::{Read, Write};

use common::server::ServerProcess;
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
    assert_eq!(reply.model, "ge2e-resemblyzer");
    assert_eq!(reply.model_sha256.len(), 64);

    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "vocalguard.v1.RegistryService", "vocalguard.v1.ScreeningService"] {
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
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut page = String::new();
    http.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("vocalguard_registry_voiceprints 0"), "{page}");

    // Close the connections first: graceful shutdown waits for open ones.
    drop((ping, health));
    let log = server.log.clone();
    let exit = server.terminate();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = log.lock().unwrap();
    assert!(log.contains("vocalguard stopped"), "{log}");
}
