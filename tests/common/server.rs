//! A real `vocalguard serve` process on a loopback port, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A running server and what it printed.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    /// The gRPC address it listens on (`127.0.0.1:PORT`).
    pub addr: String,
    /// The metrics address it listens on, when it serves metrics.
    pub metrics_addr: Option<String>,
    /// Everything it wrote to stderr so far (collected by a thread).
    pub log: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts `vocalguard serve` on an ephemeral loopback port with `data_dir` and `extra`
    /// arguments, free of this environment's `VOCALGUARD_*` and `RUST_LOG` settings, and waits
    /// until it says where it listens. Panics with its output if it exits first.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// [`ServerProcess::start`], with the environment variables `env` set for the server.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on("127.0.0.1:0", data_dir, extra, env)
    }

    /// [`ServerProcess::start_with_env`], listening on `listen`.
    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vocalguard"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("VOCALGUARD_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        let mut child = command
            .env_remove("RUST_LOG")
            .args([
                "serve",
                "--listen",
                listen,
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting vocalguard serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr, metrics_addr) = wait_for_addresses(stderr, &log);
        let Some(addr) = addr else {
            let status = child.wait().expect("waiting for the server");
            panic!(
                "vocalguard serve exited ({status}) before listening:\n{}",
                log.lock().unwrap()
            );
        };
        Self {
            child,
            addr,
            metrics_addr,
            log,
        }
    }

    /// `http://ADDR`, for tonic clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.signal_term();
        self.wait()
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        signal(&self.child, "-TERM");
    }

    /// Waits for the process to exit.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("waiting for the server")
    }

    /// Sends SIGKILL and waits.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the server has written to stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The server's Prometheus page (`GET /metrics`).
    pub fn metrics_page(&self) -> String {
        use std::io::{Read, Write};
        let addr = self.metrics_addr.clone().expect("metrics address");
        let mut http = std::net::TcpStream::connect(addr).unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        http.read_to_string(&mut page).unwrap();
        page
    }
}

/// Polls `done` every 10 ms until it holds; panics, naming `what`, after `limit`.
pub fn eventually(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The value of the line of a metrics page that starts with `series ` (a name with its
/// labels, exactly as rendered).
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{page}"))
        .trim()
        .parse()
        .unwrap()
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {sig} failed");
}

/// Reads stderr until the "listening on" line (the gRPC address) has been seen, collecting
/// the metrics address too, then keeps collecting the log on a thread.
fn wait_for_addresses(
    stderr: ChildStderr,
    log: &Arc<Mutex<String>>,
) -> (Option<String>, Option<String>) {
    let mut reader = BufReader::new(stderr);
    let mut metrics = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return (None, metrics);
        }
        log.lock().unwrap().push_str(&line);
        if let Some(addr) = address_after(&line, "metrics on http://") {
            metrics = Some(addr);
        }
        if let Some(addr) = address_after(&line, "listening on ") {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    log.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
            return (Some(addr), metrics);
        }
    }
}

fn address_after(line: &str, marker: &str) -> Option<String> {
    line.split(marker)
        .nth(1)?
        .split(|c: char| c.is_whitespace() || c == '/' || c == '"')
        .next()
        .map(str::to_string)
}
