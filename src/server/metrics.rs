//! Prometheus metrics of one server, and the tiny HTTP endpoint that exposes them.
//!
//! [`Metrics`] owns its registry (never the process-global default one), so servers and tests
//! in one process keep separate series. [`serve_metrics`] is a deliberately small HTTP/1.1
//! responder on tokio: one request per connection, and bounded time, memory and concurrency
//! per client.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::embed::BatchRun;
use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Upper bounds in seconds for request and inference durations: 1 ms to 120 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to receive the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// Pause after an accept error that is not the client's fault (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The Prometheus metrics of one server; clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    decisions: IntCounterVec,
    queue_depth: IntGauge,
    rejected: IntCounter,
    dropped: IntCounterVec,
    uploads_in_flight: IntGauge,
    upload_bytes: IntGauge,
    uploads_refused: IntCounterVec,
    upload_idle_timeouts: IntCounter,
    batch_windows: Histogram,
    pass_inputs: Histogram,
    pass_callers: Histogram,
    pass_wait: Histogram,
    inference_seconds: Histogram,
    registry_artists: IntGauge,
    registry_voiceprints: IntGauge,
    registry_version: IntGauge,
    search_approximate: IntGauge,
    search_index_bytes: IntGauge,
}

impl Metrics {
    /// Creates every metric, at zero, in a registry of its own.
    pub fn new() -> Self {
        let registry = Registry::new();
        let window_buckets: Vec<f64> = (0..=10).map(|power| f64::from(1u32 << power)).collect();
        let metrics = Self {
            requests: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "vocalguard_requests_total",
                        "Finished RPCs by method and gRPC status code.",
                    ),
                    &["method", "code"],
                ),
            ),
            request_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "vocalguard_request_duration_seconds",
                        "Wall time of finished RPCs by method.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["method"],
                ),
            ),
            decisions: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "vocalguard_screening_decisions_total",
                        "Screening decisions by outcome.",
                    ),
                    &["decision"],
                ),
            ),
            queue_depth: register(
                &registry,
                IntGauge::new(
                    "vocalguard_inference_queue_depth",
                    "Inference jobs waiting or running in the worker pool.",
                ),
            ),
            rejected: register(
                &registry,
                IntCounter::new(
                    "vocalguard_inference_rejected_total",
                    "Inference jobs refused because the queue was full.",
                ),
            ),
            dropped: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "vocalguard_inference_dropped_total",
                        "Queued inference jobs dropped unrun, by reason (expired: the deadline \
                         passed; cancelled: the caller went away).",
                    ),
                    &["reason"],
                ),
            ),
            uploads_in_flight: register(
                &registry,
                IntGauge::new(
                    "vocalguard_uploads_in_flight",
                    "Calls holding an upload slot (receiving audio, or waiting on its processing).",
                ),
            ),
            upload_bytes: register(
                &registry,
                IntGauge::new(
                    "vocalguard_upload_bytes",
                    "Upload bytes reserved by calls in flight.",
                ),
            ),
            uploads_refused: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "vocalguard_uploads_refused_total",
                        "Uploads refused admission, by reason (slots: too many uploads at once; \
                         party: the caller holds its share of the slots; bytes: the \
                         buffered-bytes budget was spent).",
                    ),
                    &["reason"],
                ),
            ),
            upload_idle_timeouts: register(
                &registry,
                IntCounter::new(
                    "vocalguard_upload_idle_timeouts_total",
                    "Uploads dropped because the client sent nothing for the idle timeout.",
                ),
            ),
            batch_windows: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "vocalguard_inference_batch_windows",
                        "Encoder windows (partials) per inference job.",
                    )
                    .buckets(window_buckets.clone()),
                ),
            ),
            pass_inputs: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "vocalguard_encoder_pass_inputs",
                        "Encoder inputs (partials or windows) per pass of the shared encoder \
                         thread, gathered across calls.",
                    )
                    .buckets(window_buckets),
                ),
            ),
            pass_callers: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "vocalguard_encoder_pass_callers",
                        "Calls whose inputs shared one encoder pass.",
                    )
                    .buckets((0..=6).map(|power| f64::from(1u32 << power)).collect()),
                ),
            ),
            pass_wait: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "vocalguard_encoder_pass_wait_seconds",
                        "How long the oldest input of an encoder pass waited for it to start.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                ),
            ),
            inference_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "vocalguard_inference_seconds",
                        "Wall time of one inference job.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                ),
            ),
            registry_artists: register(
                &registry,
                IntGauge::new(
                    "vocalguard_registry_artists",
                    "Artists in the loaded voice registry.",
                ),
            ),
            registry_voiceprints: register(
                &registry,
                IntGauge::new(
                    "vocalguard_registry_voiceprints",
                    "Voiceprints in the loaded voice registry.",
                ),
            ),
            registry_version: register(
                &registry,
                IntGauge::new(
                    "vocalguard_registry_version",
                    "Version of the loaded voice registry.",
                ),
            ),
            search_approximate: register(
                &registry,
                IntGauge::new(
                    "vocalguard_search_index_approximate",
                    "1 while screening searches the HNSW graph, 0 while it scans every voiceprint.",
                ),
            ),
            search_index_bytes: register(
                &registry,
                IntGauge::new(
                    "vocalguard_search_index_bytes",
                    "Memory held by the search index (embeddings, graph, ids), estimated.",
                ),
            ),
            registry,
        };
        for reason in ["expired", "cancelled"] {
            metrics.dropped.with_label_values(&[reason]);
        }
        for reason in ["slots", "party", "bytes"] {
            metrics.uploads_refused.with_label_values(&[reason]);
        }
        metrics
    }

    /// Records one finished RPC: its status `code` and how long it took.
    pub fn record_request(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        self.requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        self.request_duration
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one screening decision, e.g. `"UNAUTHORIZED_MATCH"`.
    pub fn record_decision(&self, decision: &str) {
        self.decisions.with_label_values(&[decision]).inc();
    }

    /// Sets the number of inference jobs waiting or running.
    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.set(saturating_i64(depth));
    }

    /// Counts one inference job refused because the queue was full.
    pub fn record_rejected(&self) {
        self.rejected.inc();
    }

    /// Counts one queued inference job dropped unrun: `"expired"` or `"cancelled"`.
    pub fn record_dropped(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }

    /// Sets the number of calls holding an upload slot.
    pub fn set_uploads_in_flight(&self, uploads: usize) {
        self.uploads_in_flight.set(saturating_i64(uploads));
    }

    /// Sets the upload bytes reserved by calls in flight.
    pub fn set_upload_bytes(&self, bytes: u64) {
        self.upload_bytes.set(saturating_i64(bytes));
    }

    /// Counts one upload refused admission: `"slots"`, `"party"` or `"bytes"`.
    pub fn record_upload_refused(&self, reason: &str) {
        self.uploads_refused.with_label_values(&[reason]).inc();
    }

    /// Counts one upload dropped for sending nothing within the idle timeout.
    pub fn record_upload_idle_timeout(&self) {
        self.upload_idle_timeouts.inc();
    }

    /// Records how many encoder windows (partials) one inference job ran.
    pub fn record_batch(&self, windows: usize) {
        self.batch_windows.observe(windows as f64);
    }

    /// Records one pass of the shared encoder thread.
    pub fn record_encoder_pass(&self, run: BatchRun) {
        self.pass_inputs.observe(run.inputs as f64);
        self.pass_callers.observe(run.callers as f64);
        self.pass_wait.observe(run.waited.as_secs_f64());
    }

    /// Records the wall time of one inference job.
    pub fn record_inference(&self, elapsed: Duration) {
        self.inference_seconds.observe(elapsed.as_secs_f64());
    }

    /// Sets the size and version of the loaded voice registry.
    pub fn set_registry(&self, artists: u64, voiceprints: u64, version: u64) {
        self.registry_artists.set(saturating_i64(artists));
        self.registry_voiceprints.set(saturating_i64(voiceprints));
        self.registry_version.set(saturating_i64(version));
    }

    /// Sets the search index gauges.
    pub fn set_search_index(&self, status: &crate::registry::IndexStatus) {
        self.search_approximate.set(i64::from(status.approximate));
        self.search_index_bytes
            .set(saturating_i64(status.memory_bytes as u64));
    }

    /// Every metric in the Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text) {
            tracing::error!(%error, "encoding metrics");
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` with `registry`. The definitions above are fixed, so an error is a bug.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn saturating_i64(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// The canonical upper-snake name of a gRPC status code.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` (text exposition) and `GET /healthz` (`ok`) over plain HTTP/1.1 on
/// `listener` until `shutdown` resolves. Any other path is 404, another method on these paths
/// 405. Each connection runs on its own task, answers one request and is closed; a client gets
/// 5 s to send a head of at most 8 KiB and 5 s to take the response, and at most 64 are served
/// at once. Accept errors are logged and retried; the only error returned is failing to read
/// the listener's address at start.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving metrics");
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::warn!(%error, "accepting a metrics connection");
                tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(error) = handle_connection(stream, &metrics).await {
                tracing::debug!(%error, "metrics connection");
            }
            drop(slot);
        });
    }
}

/// Errors that concern one client's connection, not the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// What arrived of a request head within the size cap.
enum Head {
    /// The bytes read, which include the empty line that ends the head.
    Complete(Vec<u8>),
    /// The cap was reached before the head ended.
    TooLarge,
    /// The client closed the connection before the head ended.
    Closed,
}

async fn handle_connection(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => response(
            "408 Request Timeout",
            TEXT_CONTENT_TYPE,
            "",
            "request timeout\n",
        ),
        Ok(head) => match head? {
            Head::Complete(head) => route(&head, metrics),
            Head::TooLarge => response(
                "431 Request Header Fields Too Large",
                TEXT_CONTENT_TYPE,
                "",
                "request head too large\n",
            ),
            Head::Closed => return Ok(()),
        },
    };
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
    written.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut buffer = vec![0; MAX_HEAD_BYTES];
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            return Ok(Head::TooLarge);
        }
        let read = stream.read(&mut buffer[filled..]).await?;
        if read == 0 {
            return Ok(Head::Closed);
        }
        filled += read;
        if head_is_complete(&buffer[..filled]) {
            buffer.truncate(filled);
            return Ok(Head::Complete(buffer));
        }
    }
}

/// Whether `bytes` contain the empty line that ends a request head (CRLF or bare LF lines).
fn head_is_complete(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|pair| pair == b"\n\n")
        || bytes.windows(3).any(|triple| triple == b"\n\r\n")
}

/// The full response to a complete request head.
fn route(head: &[u8], metrics: &Metrics) -> Vec<u8> {
    let Some((method, path)) = request_line(head) else {
        return response("400 Bad Request", TEXT_CONTENT_TYPE, "", "bad request\n");
    };
    match (method, path) {
        ("GET", "/metrics") => response("200 OK", METRICS_CONTENT_TYPE, "", &metrics.render()),
        ("GET", "/healthz") => response("200 OK", TEXT_CONTENT_TYPE, "", "ok"),
        (_, "/metrics" | "/healthz") => response(
            "405 Method Not Allowed",
            TEXT_CONTENT_TYPE,
            "Allow: GET\r\n",
            "method not allowed\n",
        ),
        _ => response("404 Not Found", TEXT_CONTENT_TYPE, "", "not found\n"),
    }
}

/// The method and path (query string dropped) of an HTTP/1.x request line.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&byte| byte == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Some((method, path))
}

/// An HTTP/1.1 response that closes the connection; `extra_headers` are CRLF-terminated lines.
fn response(status: &str, content_type: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_contains_recorded_series_with_their_labels() {
        let metrics = Metrics::new();
        metrics.record_request("Screen", tonic::Code::Ok, Duration::from_millis(3));
        metrics.record_request("Screen", tonic::Code::Ok, Duration::from_secs(2));
        metrics.record_request(
            "Screen",
            tonic::Code::InvalidArgument,
            Duration::from_millis(1),
        );
        metrics.record_decision("UNAUTHORIZED_MATCH");
        metrics.set_queue_depth(3);
        metrics.record_rejected();
        metrics.record_batch(10);
        metrics.record_encoder_pass(BatchRun {
            inputs: 24,
            callers: 3,
            waited: Duration::from_millis(2),
        });
        metrics.record_inference(Duration::from_millis(250));
        metrics.set_registry(12, 40, 7);

        let text = metrics.render();
        for line in [
            r#"vocalguard_requests_total{code="OK",method="Screen"} 2"#,
            r#"vocalguard_requests_total{code="INVALID_ARGUMENT",method="Screen"} 1"#,
            r#"vocalguard_request_duration_seconds_bucket{method="Screen",le="0.001"} 1"#,
            r#"vocalguard_request_duration_seconds_bucket{method="Screen",le="0.005"} 2"#,
            r#"vocalguard_request_duration_seconds_bucket{method="Screen",le="120"} 3"#,
            r#"vocalguard_request_duration_seconds_count{method="Screen"} 3"#,
            r#"vocalguard_screening_decisions_total{decision="UNAUTHORIZED_MATCH"} 1"#,
            "vocalguard_inference_queue_depth 3",
            "vocalguard_inference_rejected_total 1",
            r#"vocalguard_inference_batch_windows_bucket{le="8"} 0"#,
            r#"vocalguard_inference_batch_windows_bucket{le="16"} 1"#,
            r#"vocalguard_inference_batch_windows_bucket{le="1024"} 1"#,
            "vocalguard_inference_batch_windows_sum 10",
            r#"vocalguard_encoder_pass_inputs_bucket{le="32"} 1"#,
            r#"vocalguard_encoder_pass_callers_bucket{le="2"} 0"#,
            r#"vocalguard_encoder_pass_callers_bucket{le="4"} 1"#,
            r#"vocalguard_encoder_pass_wait_seconds_bucket{le="0.005"} 1"#,
            r#"vocalguard_inference_seconds_bucket{le="0.25"} 1"#,
            "vocalguard_inference_seconds_count 1",
            "vocalguard_registry_artists 12",
            "vocalguard_registry_voiceprints 40",
            "vocalguard_registry_version 7",
            "# TYPE vocalguard_request_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn metrics_are_per_instance_and_shared_by_clones() {
        let first = Metrics::new();
        let clone = first.clone();
        clone.record_rejected();
        assert!(first
            .render()
            .contains("vocalguard_inference_rejected_total 1"));
        assert!(Metrics::new()
            .render()
            .contains("vocalguard_inference_rejected_total 0"));
    }

    #[test]
    fn gauges_saturate_instead_of_wrapping() {
        let metrics = Metrics::new();
        metrics.set_registry(0, 0, u64::MAX);
        let text = metrics.render();
        let version: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix("vocalguard_registry_version "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(version, i64::MAX as f64);
    }

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(
            request_line(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"GET /healthz HTTP/1.0\n\n"),
            Some(("GET", "/healthz"))
        );
        assert_eq!(request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_line(b"GET /metrics HTTP/2 x\r\n\r\n"), None);
        assert_eq!(request_line(b"GET  /metrics HTTP/1.1\r\n\r\n"), None);
        assert!(head_is_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!head_is_complete(b"GET / HTTP/1.1\r\nHost: a\r\n"));
    }

    /// Sends `request` on a fresh connection and returns everything the server answers.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_metrics_and_health_over_loopback_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        metrics.record_decision("NO_MATCH");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_metrics(listener, metrics, async {
            let _ = stopped.await;
        }));

        let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(body.contains(r#"vocalguard_screening_decisions_total{decision="NO_MATCH"} 1"#));

        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");

        let answer = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");

        let answer = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\r\nAllow: GET\r\n"), "{answer}");

        let answer = exchange(addr, &[b'a'; MAX_HEAD_BYTES]).await;
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve_metrics returns after shutdown")
            .unwrap()
            .unwrap();
    }
}
