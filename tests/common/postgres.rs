//! A throw-away PostgreSQL cluster for one test: `initdb` into a temporary directory, the
//! server on a free loopback port (no Unix socket outside that directory), trust
//! authentication, stopped and removed when dropped. PostgreSQL refuses to run as root, so
//! under root every PostgreSQL command runs as `$VOCALGUARD_PG_USER` (default `nobody`)
//! through `runuser`.
//!
//! The binaries are found on `PATH` or in `/usr/lib/postgresql/*/bin` (Debian's layout), or in
//! `$VOCALGUARD_PG_BIN`. When they are missing the test fails under CI (`CI=true`; `.ci/run`
//! installs Debian's `postgresql` package) and is skipped elsewhere.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A running cluster.
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    run_as: Option<String>,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, if any.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VOCALGUARD_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    debian.sort();
    debian.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Starts a new cluster, or returns None (after saying why) when PostgreSQL is not
    /// installed and this is not CI.
    pub fn start() -> Option<Self> {
        let Some(bin) = find_bin() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL server binaries (initdb, pg_ctl) not found; CI needs them (.ci/run installs Debian's postgresql package)");
            }
            eprintln!("skipping: PostgreSQL server binaries (initdb, pg_ctl) not found (set VOCALGUARD_PG_BIN)");
            return None;
        };
        let run_as = is_root()
            .then(|| std::env::var("VOCALGUARD_PG_USER").unwrap_or_else(|_| "nobody".into()));
        let dir = tempfile::Builder::new()
            .prefix("vocalguard-pg-")
            .tempdir()
            .expect("a temporary directory");
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .status()
                .expect("running chown");
            assert!(
                status.success(),
                "chown {user} {} failed",
                dir.path().display()
            );
        }
        let port = free_port();
        let cluster = Self {
            bin,
            dir,
            run_as,
            port,
        };
        let data = cluster.data_dir();
        cluster.pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "vocalguard",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        cluster.pg_start();
        Some(cluster)
    }

    /// `postgres://vocalguard@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://vocalguard@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (after [`PgCluster::stop`]) and waits until it accepts connections.
    pub fn pg_start(&self) {
        let data = self.data_dir();
        let options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: open sessions are ended).
    pub fn stop(&self) {
        let data = self.data_dir();
        self.pg(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// The server's log, for failure messages.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A PostgreSQL program's command line, run as the non-root user when this is root.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    /// Runs a PostgreSQL program (as the non-root user when root), panicking with its output
    /// on failure.
    fn pg(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{program} {args:?} failed ({}):\n{}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
        out
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

/// A port free on 127.0.0.1 now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
