//! Access control and TLS against a real `vocalguard serve` on loopback: API tokens with roles
//! from a tokens file and from the environment, refusals and their codes, the health check
//! open to all, tokens kept out of the log, TLS with a certificate made here, and mutual TLS.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

use common::grpc::{wav_bytes, Clients};
use common::server::ServerProcess;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vocalguard::proto::ping_service_client::PingServiceClient;
use vocalguard::proto::*;

/// A token made by `vocalguard token new --json`.
struct NewToken {
    token: String,
    sha256: String,
    inline: String,
}

fn new_token(name: &str, roles: &[&str]) -> NewToken {
    let mut args = vec!["token", "new", "--json", "--name", name];
    for role in roles {
        args.extend(["--role", role]);
    }
    let printed: serde_json::Value =
        serde_json::from_slice(&common::run_vocalguard(&args)).unwrap();
    let field = |key: &str| printed[key].as_str().unwrap().to_string();
    NewToken {
        token: field("token"),
        sha256: field("sha256"),
        inline: field("inline"),
    }
}

/// `message` with `authorization: Bearer <token>` metadata.
fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn plain_channel(server: &ServerProcess) -> Channel {
    Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Calls `path` with an empty message (and the token, if any), whatever the method is.
async fn raw_call(channel: Channel, path: &'static str, token: Option<&str>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let request = match token {
        Some(token) => bearer((), token),
        None => Request::new(()),
    };
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(request, PathAndQuery::from_static(path), codec)
        .await
        .map(|_| ())
}

async fn health_status(channel: Channel) -> Result<i32, Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
}

fn clip_request() -> ScreenClipRequest {
    let tone: Vec<f32> = (0..16_000)
        .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin())
        .collect();
    ScreenClipRequest {
        metadata: Some(TrackMetadata {
            track_id: "tone".into(),
            uploader_party_id: "label".into(),
            credited_artist_ids: Vec::new(),
            ai_disclosure: AiDisclosure::None as i32,
        }),
        audio: wav_bytes(&tone, 16_000),
    }
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, what: &str) -> Status {
    match result {
        Err(status) if status.code() == code => status,
        other => panic!("{what}: expected {code:?}, got {other:?}"),
    }
}

/// The Prometheus page of `server`.
fn metrics_page(server: &ServerProcess) -> String {
    let mut http = std::net::TcpStream::connect(server.metrics_addr.clone().unwrap()).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    http.read_to_string(&mut page).unwrap();
    page
}

/// Runs the `vocalguard` binary with `env` and none of this environment's VOCALGUARD_* settings.
fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vocalguard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VOCALGUARD_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_file_and_environment_enforce_roles() {
    let data = tempfile::tempdir().unwrap();
    let screen = new_token("ingest", &["screen"]);
    let admin = new_token("registry-ops", &["registry-admin"]);
    let auditor = new_token("audit", &["auditor"]);
    let from_env = new_token("env-screen", &["screen"]);
    let file = data.path().join("tokens.toml");
    let mut text = String::new();
    for (name, roles, t) in [
        ("ingest", "\"screen\"", &screen),
        ("registry-ops", "\"registry-admin\"", &admin),
        ("audit", "\"auditor\"", &auditor),
    ] {
        text += &format!(
            "[[token]]\nname = \"{name}\"\nroles = [{roles}]\nsha256 = \"{}\"\n\n",
            t.sha256
        );
    }
    std::fs::write(&file, text).unwrap();
    let registry_dir = data.path().join("registry");
    let server = ServerProcess::start_with_env(
        &registry_dir,
        &[
            "--tokens-file",
            file.to_str().unwrap(),
            "--log-filter",
            "debug",
        ],
        &[("VOCALGUARD_TOKENS", &from_env.inline)],
    );
    let channel = plain_channel(&server).await;
    let mut clients = Clients::connect(&server.url()).await;
    let unknown = format!("vgt_{}", "5a".repeat(32));

    // Health stays open; everything else needs a valid token.
    assert_eq!(
        health_status(channel.clone()).await.unwrap(),
        ServingStatus::Serving as i32
    );
    let create = |id: &str| CreateArtistRequest {
        artist_id: id.into(),
        display_name: "Artist".into(),
        ..Default::default()
    };
    let status = assert_code(
        clients.registry.create_artist(create("a1")).await,
        Code::Unauthenticated,
        "no token",
    );
    assert!(status.message().contains("Bearer"), "{status:?}");
    assert_code(
        clients
            .registry
            .create_artist(bearer(create("a1"), &unknown))
            .await,
        Code::Unauthenticated,
        "unknown token",
    );
    let mut malformed = Request::new(create("a1"));
    malformed
        .metadata_mut()
        .insert("authorization", admin.token.parse().unwrap());
    assert_code(
        clients.registry.create_artist(malformed).await,
        Code::Unauthenticated,
        "token without the Bearer scheme",
    );
    assert_code(
        clients.screening.screen_clip(clip_request()).await,
        Code::Unauthenticated,
        "screening without a token",
    );
    let mut ping = PingServiceClient::new(channel.clone());
    assert_code(
        ping.ping(PingRequest {}).await,
        Code::Unauthenticated,
        "ping without a token",
    );
    ping.ping(bearer(PingRequest {}, &auditor.token))
        .await
        .expect("any valid token may ping");

    // registry-admin changes and reads the registry.
    clients
        .registry
        .create_artist(bearer(create("a1"), &admin.token))
        .await
        .expect("registry-admin creates an artist");
    let get = || GetArtistRequest {
        artist_id: "a1".into(),
    };
    clients
        .registry
        .get_artist(bearer(get(), &admin.token))
        .await
        .expect("registry-admin reads");

    // The auditor reads but changes nothing.
    let listed = clients
        .registry
        .list_artists(bearer(
            ListArtistsRequest {
                page_size: 10,
                page_token: String::new(),
            },
            &auditor.token,
        ))
        .await
        .expect("the auditor lists artists")
        .into_inner();
    assert_eq!(listed.total, 1);
    clients
        .registry
        .get_artist(bearer(get(), &auditor.token))
        .await
        .expect("the auditor reads an artist");
    let status = assert_code(
        clients
            .registry
            .create_artist(bearer(create("a2"), &auditor.token))
            .await,
        Code::PermissionDenied,
        "the auditor creates an artist",
    );
    assert!(status.message().contains("registry-admin"), "{status:?}");
    assert_code(
        clients
            .registry
            .delete_artist(bearer(
                DeleteArtistRequest {
                    artist_id: "a1".into(),
                    ..Default::default()
                },
                &auditor.token,
            ))
            .await,
        Code::PermissionDenied,
        "the auditor deletes an artist",
    );

    // screen screens, and nothing else; the token from the environment works the same.
    for token in [&screen.token, &from_env.token] {
        clients
            .screening
            .screen_clip(bearer(clip_request(), token))
            .await
            .expect("a screen token screens");
    }
    let status = assert_code(
        clients
            .registry
            .get_artist(bearer(get(), &screen.token))
            .await,
        Code::PermissionDenied,
        "screen reads the registry",
    );
    assert!(
        status.message().contains("registry-admin or auditor"),
        "{status:?}"
    );
    assert_code(
        clients
            .registry
            .create_artist(bearer(create("a3"), &from_env.token))
            .await,
        Code::PermissionDenied,
        "the environment's screen token creates an artist",
    );
    let status = assert_code(
        clients
            .screening
            .screen_clip(bearer(clip_request(), &admin.token))
            .await,
        Code::PermissionDenied,
        "registry-admin screens",
    );
    assert!(status.message().contains("screen"), "{status:?}");

    // The audit trail needs the auditor role, and names the caller of each change.
    let trail = clients
        .registry
        .list_audit_events(bearer(
            ListAuditEventsRequest {
                page_size: 10,
                ..Default::default()
            },
            &auditor.token,
        ))
        .await
        .expect("the auditor reads the audit trail")
        .into_inner();
    assert_eq!(trail.events.len(), 1, "{trail:?}");
    assert_eq!(trail.events[0].actor, "registry-ops");
    assert_eq!(trail.events[0].artist_id, "a1");
    // Other roles may not read it; a method no role covers is refused to all.
    let status = assert_code(
        raw_call(
            channel.clone(),
            "/vocalguard.v1.RegistryService/ListAuditEvents",
            Some(&admin.token),
        )
        .await,
        Code::PermissionDenied,
        "registry-admin reads the audit trail",
    );
    assert!(status.message().contains("auditor"), "{status:?}");
    for token in [&admin.token, &auditor.token, &screen.token] {
        assert_code(
            raw_call(
                channel.clone(),
                "/vocalguard.v1.RegistryService/DropEverything",
                Some(token),
            )
            .await,
            Code::PermissionDenied,
            "an undefined method",
        );
    }
    assert_code(
        raw_call(
            channel.clone(),
            "/vocalguard.v1.RegistryService/DropEverything",
            None,
        )
        .await,
        Code::Unauthenticated,
        "an undefined method without a token",
    );

    // Refusals are counted; the log names callers but never holds a token.
    let page = metrics_page(&server);
    for line in [
        r#"vocalguard_requests_total{code="UNAUTHENTICATED",method="CreateArtist"} 3"#,
        r#"vocalguard_requests_total{code="PERMISSION_DENIED",method="CreateArtist"} 2"#,
        r#"vocalguard_requests_total{code="PERMISSION_DENIED",method="unknown"} 3"#,
    ] {
        assert!(
            page.lines().any(|l| l == line),
            "missing {line:?} in:\n{page}"
        );
    }
    drop((clients, ping, channel));
    let log = server.log_text();
    assert!(log.contains("access control on"), "{log}");
    assert!(log.contains("access refused"), "{log}");
    assert!(log.contains("registry-ops"), "{log}");
    for secret in [
        &screen.token,
        &admin.token,
        &auditor.token,
        &from_env.token,
        &unknown,
    ] {
        assert!(
            !log.contains(secret.as_str()),
            "a token is in the log:\n{log}"
        );
        assert!(
            !log.contains(&secret[4..20]),
            "part of a token is in the log:\n{log}"
        );
    }
}

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A certificate for `names` signed by this CA, and its key, in PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate and a server certificate for loopback into `dir`.
    fn write_server_files(&self, dir: &Path) -> [String; 3] {
        let (cert, key) = self.issue(&["localhost", "127.0.0.1"]);
        let paths = [
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server.key"),
        ];
        for (path, text) in paths.iter().zip([self.pem(), cert, key]) {
            std::fs::write(path, text).unwrap();
        }
        paths.map(|p| p.to_str().unwrap().to_string())
    }
}

/// `https://127.0.0.1:PORT` of a server with TLS.
fn https_url(server: &ServerProcess) -> String {
    format!("https://{}", server.addr)
}

/// A TLS channel trusting `ca`, presenting `identity` if any; fails if the handshake does.
async fn tls_channel(
    server: &ServerProcess,
    ca: Option<&str>,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = match ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(https_url(server))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_generated_certificate() {
    let data = tempfile::tempdir().unwrap();
    let ca = Ca::new("vocalguard test CA");
    let [ca_file, cert_file, key_file] = ca.write_server_files(data.path());
    let admin = new_token("ops", &["registry-admin"]);
    let server = ServerProcess::start_with_env(
        &data.path().join("registry"),
        &["--tls-cert", &cert_file, "--tls-key", &key_file],
        &[("VOCALGUARD_TOKENS", &admin.inline)],
    );

    // A client that trusts the CA gets through, with health open and tokens enforced.
    let channel = tls_channel(&server, Some(&ca.pem()), None).await.unwrap();
    assert_eq!(
        health_status(channel.clone()).await.unwrap(),
        ServingStatus::Serving as i32
    );
    let mut registry =
        vocalguard::proto::registry_service_client::RegistryServiceClient::new(channel.clone());
    let request = || CreateArtistRequest {
        artist_id: "tls-artist".into(),
        display_name: "Over TLS".into(),
        ..Default::default()
    };
    assert_code(
        registry.create_artist(request()).await,
        Code::Unauthenticated,
        "no token over TLS",
    );
    registry
        .create_artist(bearer(request(), &admin.token))
        .await
        .expect("a token over TLS");

    // A plaintext client, and a client that does not trust the CA, get nowhere.
    let plaintext = async {
        let channel = Channel::from_shared(server.url())
            .unwrap()
            .connect()
            .await?;
        health_status(channel).await.map_err(Into::into)
    };
    let refused: Result<i32, Box<dyn std::error::Error>> = plaintext.await;
    assert!(
        refused.is_err(),
        "plaintext reached a TLS server: {refused:?}"
    );
    assert!(
        tls_channel(&server, None, None).await.is_err(),
        "a client without the CA trusted the server"
    );

    // The command-line client: https with --tls-ca and the token from VOCALGUARD_TOKEN.
    let url = https_url(&server);
    let listed = run_cli(
        &[
            "artist", "list", "--json", "--server", &url, "--tls-ca", &ca_file,
        ],
        &[("VOCALGUARD_TOKEN", &admin.token)],
    );
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("tls-artist"));
    let wrong = format!("vgt_{}", "c3".repeat(32));
    let refused = run_cli(
        &[
            "artist", "list", "--server", &url, "--tls-ca", &ca_file, "--token", &wrong,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    assert!(
        !stderr.contains(&wrong),
        "the token is in the error: {stderr}"
    );
    let mixed = run_cli(
        &[
            "artist",
            "list",
            "--server",
            &server.url(),
            "--tls-ca",
            &ca_file,
        ],
        &[],
    );
    assert!(String::from_utf8_lossy(&mixed.stderr).contains("https://"));

    // The server still answers after the failed handshakes, and says TLS is on.
    assert!(health_status(channel).await.is_ok());
    let log = server.log_text();
    assert!(log.contains("TLS on"), "{log}");
    assert!(
        !log.contains(&admin.token) && !log.contains(&wrong),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let data = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let [ca_file, cert_file, key_file] = server_ca.write_server_files(data.path());
    let client_ca = Ca::new("client CA");
    let client_ca_file = data.path().join("client-ca.pem");
    std::fs::write(&client_ca_file, client_ca.pem()).unwrap();
    let server = ServerProcess::start(
        &data.path().join("registry"),
        &[
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
            "--tls-client-ca",
            client_ca_file.to_str().unwrap(),
        ],
    );
    let ca = server_ca.pem();

    // Without a client certificate, or with one from another CA: refused.
    for identity in [None, Some(Ca::new("stranger CA").issue(&["intruder"]))] {
        let attempt = async {
            let channel = tls_channel(&server, Some(&ca), identity).await?;
            health_status(channel).await.map_err(Into::into)
        };
        let refused: Result<i32, Box<dyn std::error::Error>> = attempt.await;
        assert!(
            refused.is_err(),
            "a call without a valid client certificate: {refused:?}"
        );
    }

    // With a certificate signed by the client CA: accepted (no tokens: access control off).
    let identity = client_ca.issue(&["ingest-service"]);
    let channel = tls_channel(&server, Some(&ca), Some(identity.clone()))
        .await
        .unwrap();
    assert_eq!(
        health_status(channel.clone()).await.unwrap(),
        ServingStatus::Serving as i32
    );
    let mut clients = Clients {
        registry: vocalguard::proto::registry_service_client::RegistryServiceClient::new(
            channel.clone(),
        ),
        screening: vocalguard::proto::screening_service_client::ScreeningServiceClient::new(
            channel,
        ),
    };
    clients.create_artist("mtls-artist", "Mutual").await;
    clients
        .screening
        .screen_clip(clip_request())
        .await
        .expect("screening over mutual TLS");

    // The command-line client with its certificate and key.
    let (cert_pem, key_pem) = identity;
    let cert = data.path().join("client.pem");
    let key = data.path().join("client.key");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let listed = run_cli(
        &[
            "artist",
            "get",
            "mtls-artist",
            "--server",
            &https_url(&server),
            "--tls-ca",
            &ca_file,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let log = server.log_text();
    assert!(log.contains("access control is off"), "{log}");
    assert!(log.contains("client_certificates=true"), "{log}");
}
