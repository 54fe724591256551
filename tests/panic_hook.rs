//! The server's panic hook: a panic (caught or not) is one JSON log line through the
//! subscriber, with its message cut short and no backtrace unless one is asked for.

use std::io::Write;
use std::sync::{Arc, Mutex};

use vocalguard::server::telemetry::install_panic_hook;

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_caught_panic_is_one_short_log_line_without_a_backtrace() {
    // Only this test runs in this binary, so the process-wide settings are its own.
    std::env::remove_var("RUST_BACKTRACE");
    std::env::remove_var("RUST_LIB_BACKTRACE");
    let sink = Sink::default();
    let writer = sink.clone();
    tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .try_init()
        .expect("installing the test subscriber");
    install_panic_hook();
    let client_input = "\u{1b}[31m".to_string() + &"x".repeat(5_000_000);
    let caught = std::panic::catch_unwind(|| panic!("bad input {client_input}"));
    assert!(caught.is_err());

    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log:.2000}");
    assert!(
        lines[0].len() < 1_000,
        "{} bytes: {:.2000}",
        lines[0].len(),
        lines[0]
    );
    let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["level"], "ERROR");
    let fields = &event["fields"];
    assert_eq!(fields["message"], "panicked");
    let panic = fields["panic"].as_str().unwrap();
    assert!(panic.starts_with("bad input \u{1b}[31mxxx"), "{panic}");
    assert!(panic.ends_with('…'), "{panic}");
    assert!(
        fields["location"]
            .as_str()
            .unwrap()
            .starts_with("tests/panic_hook.rs:"),
        "{fields}"
    );
    assert!(fields.get("backtrace").is_none(), "{fields}");
}
