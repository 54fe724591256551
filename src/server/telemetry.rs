//! Structured logging and request ids.
//!
//! [`init`] installs the process-wide `tracing` subscriber: text for people, JSON lines for log
//! pipelines. [`request_id_from`] picks the id that ties one call's log lines together.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use tonic::metadata::MetadataMap;
use tracing_subscriber::EnvFilter;

/// The metadata key under which a client may send its own request id.
pub const REQUEST_ID_KEY: &str = "x-request-id";

/// The longest request id accepted from a client.
const MAX_REQUEST_ID_LEN: usize = 64;

/// Log line format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured when stderr is a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber writing to stderr. `filter` is an `EnvFilter`
/// directive string (e.g. `"info"`); a non-empty `RUST_LOG` overrides it. JSON lines carry
/// timestamp, level, target, the event's fields (message included) and the fields of the
/// current span and its parents, so a request span's `request_id` appears on every line.
/// Fails, rather than panicking, if a global subscriber is already installed.
pub fn init(format: LogFormat, filter: &str) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .with_context(|| format!("parsing RUST_LOG={directives:?}"))?,
        _ => EnvFilter::try_new(filter)
            .with_context(|| format!("parsing the log filter {filter:?}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(format == LogFormat::Text && std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|error| anyhow!("installing the log subscriber: {error}"))
}

/// The most bytes of a panic's message that its log line carries.
const MAX_PANIC_MESSAGE_BYTES: usize = 300;

/// Replaces the default panic hook, which writes the message and, under `RUST_BACKTRACE`, a
/// backtrace of many lines to stderr, with one that logs a single error event through the
/// subscriber: where the panic happened, on which thread, and its message cut to 300 bytes.
/// A backtrace is attached (as a field of the same event) only when `RUST_BACKTRACE` or
/// `RUST_LIB_BACKTRACE` asks for one. Panics that are caught (a decoder library failing on
/// malformed input) are logged like any other, one line each.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let message = crate::echo::truncate(message, MAX_PANIC_MESSAGE_BYTES);
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(%location, thread, panic = %message, %backtrace, "panicked");
        } else {
            tracing::error!(%location, thread, panic = %message, "panicked");
        }
    }));
}

/// A fresh request id: 16 lower-case hex characters from the OS random number generator.
pub fn new_request_id() -> String {
    let mut bytes = [0; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS generator practically never fails; ids then need only be distinct.
        static FALLBACK: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        bytes = (nanos ^ FALLBACK.fetch_add(1, Ordering::Relaxed).rotate_right(16)).to_be_bytes();
    }
    hex::encode(bytes)
}

/// The request id a client sent in `x-request-id` metadata if it is 1-64 characters of
/// `[A-Za-z0-9._-]`, else a fresh one.
pub fn request_id_from(metadata: &MetadataMap) -> String {
    metadata
        .get(REQUEST_ID_KEY)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_acceptable_request_id(id))
        .map_or_else(new_request_id, str::to_owned)
}

fn is_acceptable_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn is_fresh_id(id: &str) -> bool {
        id.len() == 16
            && id
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    }

    fn with_id(value: MetadataValue<tonic::metadata::Ascii>) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(REQUEST_ID_KEY, value);
        metadata
    }

    #[test]
    fn fresh_ids_are_16_hex_characters_and_distinct() {
        let (first, second) = (new_request_id(), new_request_id());
        assert!(is_fresh_id(&first), "{first}");
        assert!(is_fresh_id(&second), "{second}");
        assert_ne!(first, second);
    }

    #[test]
    fn a_valid_client_id_is_kept() {
        for id in ["abc-123_X.y", "a", &"7".repeat(64)] {
            let metadata = with_id(MetadataValue::try_from(id).unwrap());
            assert_eq!(request_id_from(&metadata), id);
        }
    }

    #[test]
    fn a_missing_id_is_replaced_by_a_fresh_one() {
        assert!(is_fresh_id(&request_id_from(&MetadataMap::new())));
    }

    #[test]
    fn hostile_or_too_long_ids_are_replaced() {
        for id in [
            "",
            "has space",
            "../../etc/passwd",
            "id\"with'quotes",
            "{\"json\":1}",
            &"7".repeat(65),
        ] {
            let value = MetadataValue::try_from(id.as_bytes()).unwrap();
            let replaced = request_id_from(&with_id(value));
            assert!(is_fresh_id(&replaced), "{id:?} gave {replaced:?}");
        }
        let not_utf8 = MetadataValue::try_from(&b"id\xff"[..]).unwrap();
        assert!(is_fresh_id(&request_id_from(&with_id(not_utf8))));
    }
}
