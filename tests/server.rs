//! A real `vocalguard serve` process on loopback: ping, health, and graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vocalguard::proto::ping_service_client::PingServiceClient;
use vocalguard::proto::PingRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_ping_and_health_then_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vocalguard"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting vocalguard serve");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let url = format!("http://{addr}");

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
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // Close the connections first: graceful shutdown waits for open ones.
    drop((ping, health));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("stopped"), "{rest}");
}
