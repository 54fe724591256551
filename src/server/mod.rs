//! The gRPC server: thin tonic services over the core. For now, `PingService` and the
//! standard `grpc.health.v1` health service.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tonic::{Request, Response, Status};

use crate::encoder::ModelId;
use crate::proto::ping_service_server::{PingService, PingServiceServer};
use crate::proto::{PingRequest, PingResponse};

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

/// Resolves when the process receives SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Serves on `addr` until SIGINT or SIGTERM; in-flight calls finish before it returns.
pub async fn serve(addr: SocketAddr, model: ModelId) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<PingServiceServer<Ping>>()
        .await;
    eprintln!(
        "vocalguard {} listening on {local} with model {model}",
        env!("CARGO_PKG_VERSION")
    );
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(PingServiceServer::new(Ping { model }))
        .serve_with_incoming_shutdown(tokio_stream_listener(listener), shutdown_signal())
        .await
        .context("serving gRPC")?;
    eprintln!("vocalguard stopped");
    Ok(())
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}
