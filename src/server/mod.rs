//! The gRPC server: thin tonic services over the core (registry, screening), the standard
//! health and reflection (v1 and v1alpha) services, Prometheus metrics on a separate port, and graceful
//! shutdown. Decoding and inference run on a bounded worker pool, never on the executor.

pub mod admission;
pub mod auth;
pub mod config;
pub mod convert;
pub mod metrics;
pub mod pool;
pub mod registry_api;
pub mod request;
pub mod screening_api;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::audio::DecodeLimits;
use crate::embed::Embedder;
use crate::encoder::ModelId;
use crate::proto::ping_service_server::{PingService, PingServiceServer};
use crate::proto::registry_service_server::RegistryServiceServer;
use crate::proto::screening_service_server::ScreeningServiceServer;
use crate::proto::{PingRequest, PingResponse, ScoringContext};
use crate::registry::backend::StoreLocation;
use crate::registry::replay::WriteKey;
use crate::registry::{Origin, Registry};
use crate::screening::Scoring;
use admission::UploadBudget;
use auth::Caller;
pub use config::ServerConfig;
use metrics::Metrics;
use pool::InferencePool;

/// What every handler shares: the pipeline, the registry, the pool and the configuration.
pub struct Core {
    embedder: Arc<Embedder>,
    registry: Arc<Registry>,
    pool: InferencePool,
    uploads: UploadBudget,
    metrics: Metrics,
    config: ServerConfig,
    scoring: Arc<Scoring>,
}

/// What a handler knows about its call besides the message.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// When the call's deadline passes.
    pub deadline: Instant,
    /// The call's request id (the client's `x-request-id`, or a fresh one).
    pub request_id: String,
    /// The caller's name, or [`Caller::ANONYMOUS`] when access control is off.
    pub caller: String,
    /// Who holds the call's upload slot for the per-party share: `token:NAME`, or
    /// `peer:IP` when access control is off.
    pub party: String,
}

impl CallContext {
    /// Who made a registry change, for its audit event, with the client's write key if any.
    pub fn origin(&self, key: Option<WriteKey>) -> Origin {
        Origin {
            actor: self.caller.clone(),
            request_id: self.request_id.clone(),
            key,
        }
    }
}

impl Core {
    /// Runs one call: picks its request id and deadline, reads the caller the access check
    /// attached, runs `handle` (given that context and the message) inside a span carrying the
    /// request id, and records its outcome in logs and metrics.
    async fn call<R, T, F, Fut>(
        &self,
        method: &'static str,
        request: Request<R>,
        handle: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(CallContext, R) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let peer = request.remote_addr();
        let (metadata, extensions, message) = request.into_parts();
        let request_id = telemetry::request_id_from(&metadata);
        let default = Duration::from_secs_f64(self.config.limits.request_timeout_s);
        let deadline = request::deadline(&metadata, default);
        let authenticated = extensions.get::<Caller>();
        let caller = authenticated
            .map_or(Caller::ANONYMOUS, |c| c.name.as_str())
            .to_string();
        let party = match (authenticated, peer) {
            (Some(c), _) => format!("token:{}", c.name),
            (None, Some(addr)) => format!("peer:{}", addr.ip()),
            (None, None) => "peer:unknown".to_string(),
        };
        let span = tracing::info_span!("request", request_id = %request_id, method);
        let started = Instant::now();
        let context = CallContext {
            deadline,
            request_id: request_id.clone(),
            caller,
            party,
        };
        let outcome = async {
            match tokio::time::timeout_at(deadline.into(), handle(context, message)).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded(
                    "the call's deadline passed before it finished",
                )),
            }
        }
        .instrument(span.clone())
        .await
        .map_err(bounded_status);
        let elapsed = started.elapsed();
        let code = outcome.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics.record_request(method, code, elapsed);
        span.in_scope(|| match &outcome {
            Ok(_) => tracing::info!(code = ?code, elapsed_ms = elapsed.as_millis() as u64, "ok"),
            Err(s) if client_error(code) => tracing::info!(code = ?code, elapsed_ms = elapsed.as_millis() as u64, reason = s.message(), "refused"),
            Err(s) => tracing::warn!(code = ?code, elapsed_ms = elapsed.as_millis() as u64, reason = s.message(), "failed"),
        });
        let id = MetadataValue::try_from(request_id.as_str()).ok();
        outcome
            .map(|body| {
                let mut response = Response::new(body);
                if let Some(id) = id.clone() {
                    response
                        .metadata_mut()
                        .insert(telemetry::REQUEST_ID_KEY, id);
                }
                response
            })
            .map_err(|mut status| {
                if let Some(id) = id {
                    status.metadata_mut().insert(telemetry::REQUEST_ID_KEY, id);
                }
                status
            })
    }

    /// Runs a short blocking registry operation off the executor.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Status::internal(format!("registry task failed: {e}")))
    }

    /// Model identity and `version`, for answers.
    fn context(&self, version: u64) -> ScoringContext {
        let id = self.embedder.model_id();
        ScoringContext {
            model: id.name.clone(),
            model_sha256: id.sha256.clone(),
            registry_version: version,
        }
    }

    /// How upload streams of `max_files` files are read, from the configuration.
    fn upload_rules(&self, max_files: usize) -> request::UploadRules {
        request::UploadRules {
            max_bytes: self.config.limits.max_upload_bytes,
            max_files,
            idle_timeout: Duration::from_secs_f64(self.config.limits.upload_idle_timeout_s),
        }
    }

    /// Decoding limits from the configuration.
    fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_duration_s: self.config.limits.max_duration_s,
        }
    }

    /// Refreshes the registry gauges after a change.
    fn registry_changed(&self) {
        let (artists, voiceprints) = self.registry.size();
        self.metrics
            .set_registry(artists, voiceprints, self.registry.version());
    }
}

/// The longest status message a reply carries, in bytes. gRPC sends it in a header, which
/// clients cap (8-16 KB); messages are written to stay far below this, which only catches
/// what slipped through.
const MAX_STATUS_MESSAGE_BYTES: usize = 1024;

/// `status` with its message cut to [`MAX_STATUS_MESSAGE_BYTES`].
fn bounded_status(status: Status) -> Status {
    if status.message().len() <= MAX_STATUS_MESSAGE_BYTES {
        return status;
    }
    let message = crate::echo::truncate(status.message(), MAX_STATUS_MESSAGE_BYTES);
    Status::new(status.code(), message)
}

/// Whether a status reports a problem with the request rather than with the server: those are
/// logged at info, the rest at warn.
fn client_error(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Cancelled
    )
}

/// Answers pings with the server's version and model.
pub struct Ping {
    model: ModelId,
}

#[tonic::async_trait]
impl PingService for Ping {
    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            model: self.model.name.clone(),
            model_sha256: self.model.sha256.clone(),
        }))
    }
}

/// Installs the SIGINT and SIGTERM handlers now, before the server says it is listening, so
/// that a signal sent right after that line shuts down gracefully instead of killing the
/// process; the returned future resolves on either signal.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Says at start whether access control and TLS are on; warns when anyone may call, or when
/// tokens would cross the network in clear text.
fn log_access(tokens: &auth::Tokens, tls: bool, config: &ServerConfig) {
    if tokens.is_empty() {
        tracing::warn!(
            "access control is off: no API tokens are configured, so every caller may screen and change the registry (configure tokens with --tokens-file or VOCALGUARD_TOKENS)"
        );
    } else {
        tracing::info!(tokens = tokens.len(), "access control on");
        if !tls && !config.listen.ip().is_loopback() {
            tracing::warn!(
                "API tokens cross the network in clear text: serve with TLS (--tls-cert, --tls-key)"
            );
        }
    }
    if tls {
        tracing::info!(
            client_certificates = config.tls.client_ca.is_some(),
            "TLS on"
        );
    }
}

/// Takes the thresholds the configuration leaves unset from the model card, opens the registry,
/// binds the listeners and serves until SIGINT or SIGTERM: then health
/// turns NOT_SERVING, new calls are refused, and in-flight calls finish before it returns.
pub async fn serve(mut config: ServerConfig, embedder: Embedder) -> Result<()> {
    config
        .adopt_model_thresholds(embedder.model().card().thresholds.as_ref())
        .context("the configured thresholds with the model's")?;
    let tokens = Arc::new(
        auth::Tokens::load(config.auth.tokens_file.as_deref(), &config.auth.tokens)
            .context("loading the API tokens")?,
    );
    let tls = tls::server_tls(&config.tls).context("loading the TLS files")?;
    let model = embedder.model_id().clone();
    let dim = embedder.model().card().embedding_dim;
    let location = config.store_location();
    let registry = tokio::task::block_in_place(|| {
        Registry::open_at(&location, &model, dim, config.enrollment)
    })
    .with_context(|| match &location {
        StoreLocation::Embedded(dir) => format!("opening the registry in {}", dir.display()),
        StoreLocation::Postgres { .. } => "opening the PostgreSQL registry".to_string(),
    })?;
    let registry = Arc::new(registry.with_search(config.search));
    let metrics = Metrics::new();
    metrics.set_search_index(&registry.index_status());
    let index_gauges = metrics.clone();
    registry
        .maintain_index(move |status| index_gauges.set_search_index(&status))
        .context("starting the search index builder")?;
    let gauges = metrics.clone();
    registry.follow(move |r| {
        let (artists, voiceprints) = r.size();
        gauges.set_registry(artists, voiceprints, r.version());
    });
    let (artists, voiceprints) = registry.size();
    metrics.set_registry(artists, voiceprints, registry.version());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let local = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.metrics_listen {
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        tracing::info!(
            "metrics on http://{}/metrics",
            metrics_listener.local_addr()?
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(metrics::serve_metrics(
            metrics_listener,
            metrics.clone(),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<RegistryServiceServer<registry_api::RegistryApi>>()
        .await;
    health
        .set_serving::<ScreeningServiceServer<screening_api::ScreeningApi>>()
        .await;
    health.set_serving::<PingServiceServer<Ping>>().await;
    // Reflection v1 and, for older tools (grpcio-reflection, grpc_cli), v1alpha: both list
    // the same services, each reflection version among them.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .include_reflection_service(false)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("building the reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building the v1alpha reflection service")?;
    let model_calibration = embedder.model().card().calibration();
    let scoring = config.scoring(&model, model_calibration)?;
    let max_message = config.limits.max_message_bytes;
    let workers = config.workers();
    let embedder = if config.inference.batch_across_calls {
        let metrics = metrics.clone();
        embedder.with_batching(
            config.inference.batching(),
            Box::new(move |run| metrics.record_encoder_pass(run)),
        )
    } else {
        embedder
    };
    let core = Arc::new(Core {
        embedder: Arc::new(embedder),
        pool: InferencePool::new(workers, config.inference.queue_capacity, metrics.clone()),
        uploads: UploadBudget::new(
            config.limits.max_concurrent_uploads,
            config.limits.max_uploads_per_party,
            config.limits.max_buffered_bytes,
            metrics.clone(),
        ),
        registry,
        metrics,
        config,
        scoring: Arc::new(scoring),
    });
    tracing::info!(
        artists,
        voiceprints,
        registry_version = core.registry.version(),
        registry = %core.registry.location(),
        workers,
        "registry open"
    );
    log_access(&tokens, tls.is_some(), &core.config);
    let signalled = shutdown_signal()?;
    tracing::info!(
        "vocalguard {} listening on {local} with model {model}",
        env!("CARGO_PKG_VERSION")
    );
    let shutdown = async move {
        signalled.await;
        tracing::info!("shutting down: refusing new calls, finishing in-flight ones");
        health
            .set_not_serving::<RegistryServiceServer<registry_api::RegistryApi>>()
            .await;
        health
            .set_not_serving::<ScreeningServiceServer<screening_api::ScreeningApi>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = stop_tx.send(true);
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).context("configuring TLS")?;
    }
    server
        .layer(auth::AuthLayer::new(tokens, core.metrics.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(PingServiceServer::new(Ping { model }))
        .add_service(
            RegistryServiceServer::new(registry_api::RegistryApi::new(Arc::clone(&core)))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            ScreeningServiceServer::new(screening_api::ScreeningApi::new(Arc::clone(&core)))
                .max_decoding_message_size(max_message),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .context("serving gRPC")?;
    tracing::info!("vocalguard stopped");
    Ok(())
}
