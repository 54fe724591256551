//! Overload: a real `vocalguard serve` on loopback driven at a multiple of its capacity.
//!
//! 1. Enrolls one voiceprint of each `test-other` speaker of librispeech-mini, and builds a
//!    screening clip (`--clip-s` seconds of one speaker's held-out speech, 16-bit WAV).
//! 2. Capacity: screens the clip closed-loop at concurrency 2 × workers for `--capacity-s`
//!    seconds; completed calls per second is the capacity.
//! 3. Overload: open-loop Poisson arrivals at `--factor` × capacity for `--duration-s`
//!    seconds (at most rate × duration × 1.5 calls in all), each call with a client deadline
//!    of `--deadline-ms`; the calls then still in flight get that deadline plus 5 s to end.
//!    Meanwhile a health check runs every second (1 s deadline), and the server's resident
//!    memory is sampled.
//!
//! Reports offered throughput (over the arrival window) and accepted throughput (over the wall
//! time, the drain included), shed calls (RESOURCE_EXHAUSTED) and how fast they
//! were refused, deadline-exceeded and other errors, p50/p99 latency of accepted calls, the
//! health checks, the server's peak RSS (VmHWM from /proc/PID/status) and its own counters of
//! refused and dropped work. Prints a table, then one JSON line.
//!
//! ```sh
//! cargo bench --bench overload                      # 5 minutes at 2x capacity
//! cargo bench --bench overload -- --duration-s 30  # a quick run
//! ```
//!
//! Every flag also reads an environment variable: `VOCALGUARD_OVERLOAD_DURATION_S`,
//! `_FACTOR`, `_DEADLINE_MS`, `_CAPACITY_S`, `_CLIP_S`. The data is read from
//! `VOCALGUARD_LIBRISPEECH_MINI`, else `../shared/data/librispeech-mini`. Only loopback is
//! used.

/// The test suite's server launcher.
#[path = "../tests/common/server.rs"]
#[allow(dead_code)]
mod server;

/// The test suite's gRPC helpers.
#[path = "../tests/common/grpc.rs"]
#[allow(dead_code)]
mod grpc;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc::{enroll_first, screen_messages, speech_clip, test_other_speakers, Clients};
use server::ServerProcess;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vocalguard::proto::screening_service_client::ScreeningServiceClient;
use vocalguard::proto::{AiDisclosure, TrackMetadata};
use vocalguard::server::ServerConfig;

/// Run parameters.
#[derive(Debug, Clone, Copy)]
struct Options {
    duration_s: f64,
    factor: f64,
    deadline_ms: u64,
    capacity_s: f64,
    clip_s: f64,
}

fn options() -> Options {
    let env = |name: &str, default: f64| {
        std::env::var(format!("VOCALGUARD_OVERLOAD_{name}"))
            .ok()
            .map(|v| parse(&v, name))
            .unwrap_or(default)
    };
    let mut o = Options {
        duration_s: env("DURATION_S", 300.0),
        factor: env("FACTOR", 2.0),
        deadline_ms: env("DEADLINE_MS", 5000.0) as u64,
        capacity_s: env("CAPACITY_S", 20.0),
        clip_s: env("CLIP_S", 10.0),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| parse(&args.next().unwrap_or_default(), name);
        match arg.as_str() {
            "--bench" => {}
            "--duration-s" => o.duration_s = value("--duration-s"),
            "--factor" => o.factor = value("--factor"),
            "--deadline-ms" => o.deadline_ms = value("--deadline-ms") as u64,
            "--capacity-s" => o.capacity_s = value("--capacity-s"),
            "--clip-s" => o.clip_s = value("--clip-s"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    o
}

fn parse(value: &str, name: &str) -> f64 {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or_else(|| usage(&format!("{name} needs a positive number, got {value:?}")))
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: cargo bench --bench overload -- [--duration-s S] [--factor F] \
         [--deadline-ms MS] [--capacity-s S] [--clip-s S]"
    );
    std::process::exit(2);
}

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("VOCALGUARD_LIBRISPEECH_MINI").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/librispeech-mini"),
        PathBuf::from,
    );
    if !dir.join("test-other").is_dir() {
        eprintln!(
            "librispeech-mini not found at {}; set VOCALGUARD_LIBRISPEECH_MINI",
            dir.display()
        );
        std::process::exit(1);
    }
    dir
}

/// How one screening call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Accepted,
    Shed,
    Deadline,
    Other(Code),
}

/// Screens `clip` once with a client deadline; returns how it ended and the client-side time.
async fn screen_once(
    channel: Channel,
    clip: Arc<Vec<u8>>,
    i: usize,
    deadline: Duration,
) -> (End, Duration) {
    let meta = TrackMetadata {
        track_id: format!("overload-{i}"),
        uploader_party_id: "overload-uploader".into(),
        credited_artist_ids: Vec::new(),
        ai_disclosure: AiDisclosure::None as i32,
    };
    let mut request = tonic::Request::new(tokio_stream::iter(screen_messages(meta, &clip)));
    request.set_timeout(deadline);
    let sent = Instant::now();
    let result = ScreeningServiceClient::new(channel).screen(request).await;
    let end = match result {
        Ok(_) => End::Accepted,
        Err(s) => match s.code() {
            Code::ResourceExhausted => End::Shed,
            // tonic's client reports a deadline it enforced itself as CANCELLED.
            Code::DeadlineExceeded | Code::Cancelled => End::Deadline,
            code => End::Other(code),
        },
    };
    (end, sent.elapsed())
}

/// Closed loop at `concurrency` for `seconds`: completed calls per second.
async fn capacity(channel: &Channel, clip: &Arc<Vec<u8>>, concurrency: usize, seconds: f64) -> f64 {
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (channel, clip) = (channel.clone(), Arc::clone(clip));
            tokio::spawn(async move {
                let mut done = 0usize;
                while Instant::now() < stop {
                    let (end, _) = screen_once(
                        channel.clone(),
                        Arc::clone(&clip),
                        t,
                        Duration::from_secs(60),
                    )
                    .await;
                    assert_eq!(end, End::Accepted, "capacity calls must all succeed");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        done += t.await.expect("a capacity task panicked");
    }
    done as f64 / started.elapsed().as_secs_f64()
}

/// A small deterministic generator (xorshift64*) for the Poisson arrivals.
struct Rng(u64);

impl Rng {
    /// Uniform in (0, 1].
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// The server's resident memory now and its peak (VmRSS, VmHWM), bytes.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The server's Prometheus page.
fn scrape(addr: &str) -> String {
    let mut http = std::net::TcpStream::connect(addr).expect("connecting to metrics");
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("asking for metrics");
    let mut page = String::new();
    http.read_to_string(&mut page).expect("reading metrics");
    page
}

/// The value of one series (exact name with labels) on a Prometheus page.
fn series(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The nearest-rank `p` quantile of `sorted`, milliseconds (0 when empty).
fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// Health checks made during the overload.
#[derive(Debug, Default)]
struct Health {
    ok: usize,
    failed: usize,
    max: Duration,
}

async fn watch_health(channel: Channel, running: Arc<AtomicBool>) -> Health {
    let mut client = HealthClient::new(channel);
    let mut health = Health::default();
    while running.load(Ordering::SeqCst) {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(Duration::from_secs(1));
        let sent = Instant::now();
        match client.check(request).await {
            Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => health.ok += 1,
            _ => health.failed += 1,
        }
        health.max = health.max.max(sent.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    health
}

/// Samples the server's VmRSS every 200 ms; returns the largest sample.
async fn watch_memory(pid: u32, running: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    while running.load(Ordering::SeqCst) {
        if let Some((rss, _)) = memory(pid) {
            peak.fetch_max(rss, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the overload phase measured.
struct Overload {
    rate: f64,
    wall: Duration,
    ends: Vec<(End, Duration)>,
    health: Health,
    rss_sampled_peak: u64,
}

async fn overload(
    channel: &Channel,
    clip: &Arc<Vec<u8>>,
    rate: f64,
    o: &Options,
    pid: u32,
) -> Overload {
    let running = Arc::new(AtomicBool::new(true));
    let rss_peak = Arc::new(AtomicU64::new(0));
    let health = tokio::spawn(watch_health(channel.clone(), Arc::clone(&running)));
    let memory = tokio::spawn(watch_memory(
        pid,
        Arc::clone(&running),
        Arc::clone(&rss_peak),
    ));
    let deadline = Duration::from_millis(o.deadline_ms);
    let max_calls = (rate * o.duration_s * 1.5).ceil() as usize;
    let started = Instant::now();
    let stop = started + Duration::from_secs_f64(o.duration_s);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next = started;
    let mut calls = Vec::new();
    while calls.len() < max_calls {
        next += Duration::from_secs_f64(-rng.next_f64().ln() / rate);
        if next >= stop {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        calls.push(tokio::spawn(screen_once(
            channel.clone(),
            Arc::clone(clip),
            calls.len(),
            deadline,
        )));
    }
    let mut ends = Vec::with_capacity(calls.len());
    for call in calls {
        let end = tokio::time::timeout(deadline + Duration::from_secs(5), call)
            .await
            .map(|r| r.expect("a call task panicked"))
            .unwrap_or((End::Other(Code::Unknown), deadline + Duration::from_secs(5)));
        ends.push(end);
    }
    let wall = started.elapsed();
    running.store(false, Ordering::SeqCst);
    let health = health.await.expect("the health task panicked");
    memory.await.expect("the memory task panicked");
    Overload {
        rate,
        wall,
        ends,
        health,
        rss_sampled_peak: rss_peak.load(Ordering::SeqCst),
    }
}

fn main() {
    let o = options();
    let data = data_dir();
    let speakers = test_other_speakers(&data);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start(dir.path(), &[]);
    let pid = server.child.id();
    let workers = ServerConfig::default().workers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    let (capacity_rate, result, clip_bytes) = runtime.block_on(async {
        let mut clients = Clients::connect(&server.url()).await;
        println!(
            "enrolling one voiceprint of each of {} speakers",
            speakers.len()
        );
        let mut held_out = Vec::new();
        for (speaker, files) in &speakers {
            clients.create_artist(speaker, speaker).await;
            let (_, rest) = enroll_first(&mut clients, speaker, files, 1).await;
            if held_out.is_empty() {
                held_out = rest;
            }
        }
        let clip = Arc::new(speech_clip(&held_out, o.clip_s));
        let channel = Channel::from_shared(server.url())
            .expect("a valid URL")
            .connect()
            .await
            .expect("connecting");
        let concurrency = 2 * workers;
        println!(
            "capacity: {:.1} s clip, closed loop at concurrency {concurrency} for {} s",
            o.clip_s, o.capacity_s
        );
        let capacity_rate = capacity(&channel, &clip, concurrency, o.capacity_s).await;
        let rate = capacity_rate * o.factor;
        println!(
            "overload: Poisson arrivals at {rate:.2} calls/s ({}x {capacity_rate:.2}) for {} s, \
             client deadline {} ms",
            o.factor, o.duration_s, o.deadline_ms
        );
        let result = overload(&channel, &clip, rate, &o, pid).await;
        (capacity_rate, result, clip.len())
    });
    let (_, vm_hwm) = memory(pid).expect("reading the server's /proc status");
    let page = server
        .metrics_addr
        .as_deref()
        .map(scrape)
        .unwrap_or_default();
    report(
        &o,
        workers,
        capacity_rate,
        clip_bytes,
        &result,
        vm_hwm,
        &page,
    );
    let status = server.terminate();
    assert!(
        status.success(),
        "the server did not stop cleanly: {status}"
    );
}

#[allow(clippy::too_many_arguments)]
fn report(
    o: &Options,
    workers: usize,
    capacity_rate: f64,
    clip_bytes: usize,
    r: &Overload,
    vm_hwm: u64,
    page: &str,
) {
    let wall = r.wall.as_secs_f64();
    let count = |f: &dyn Fn(End) -> bool| r.ends.iter().filter(|(e, _)| f(*e)).count();
    let times = |f: &dyn Fn(End) -> bool| {
        let mut t: Vec<Duration> = r
            .ends
            .iter()
            .filter(|(e, _)| f(*e))
            .map(|(_, t)| *t)
            .collect();
        t.sort();
        t
    };
    let offered = r.ends.len();
    let accepted = times(&|e| e == End::Accepted);
    let shed = times(&|e| e == End::Shed);
    let deadline = count(&|e| e == End::Deadline);
    let other = count(&|e| matches!(e, End::Other(_)));
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let rejected = series(page, "vocalguard_inference_rejected_total");
    let expired = series(
        page,
        r#"vocalguard_inference_dropped_total{reason="expired"}"#,
    );
    let cancelled = series(
        page,
        r#"vocalguard_inference_dropped_total{reason="cancelled"}"#,
    );
    let refused_slots = series(page, r#"vocalguard_uploads_refused_total{reason="slots"}"#);
    let refused_bytes = series(page, r#"vocalguard_uploads_refused_total{reason="bytes"}"#);
    println!();
    println!(
        "server: {workers} workers, queue {} (defaults); clip {:.1} s ({} bytes); capacity \
         {capacity_rate:.2} calls/s",
        ServerConfig::default().inference.queue_capacity,
        o.clip_s,
        clip_bytes
    );
    println!(
        "open loop at {:.1}x capacity = {:.2} calls/s offered for {:.0} s (wall {wall:.1} s), \
         client deadline {} ms",
        o.factor, r.rate, o.duration_s, o.deadline_ms
    );
    println!(
        "{:<28} {:>7} {:>8} {:>9} {:>9} {:>9}",
        "calls", "count", "per s", "p50 ms", "p99 ms", "max ms"
    );
    let row = |name: &str, t: &[Duration], n: usize, over_s: f64| {
        println!(
            "{name:<28} {n:>7} {:>8.2} {:>9.1} {:>9.1} {:>9.1}",
            n as f64 / over_s,
            quantile_ms(t, 0.5),
            quantile_ms(t, 0.99),
            t.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
        )
    };
    let all = times(&|_| true);
    row("offered (per arrival s)", &all, offered, o.duration_s);
    row("accepted (OK)", &accepted, accepted.len(), wall);
    row("shed (RESOURCE_EXHAUSTED)", &shed, shed.len(), wall);
    println!(
        "{:<28} {deadline:>7}\n{:<28} {other:>7}",
        "deadline exceeded", "other errors"
    );
    println!(
        "shed rate {:.1}%; accepted throughput {:.1}% of capacity",
        shed.len() as f64 / offered.max(1) as f64 * 100.0,
        accepted.len() as f64 / wall / capacity_rate * 100.0
    );
    println!(
        "health during overload: {} ok, {} failed, slowest {:.1} ms",
        r.health.ok,
        r.health.failed,
        r.health.max.as_secs_f64() * 1e3
    );
    println!(
        "server memory: peak RSS (VmHWM) {:.1} MiB, largest 200 ms sample {:.1} MiB",
        mib(vm_hwm),
        mib(r.rss_sampled_peak)
    );
    println!(
        "server counters: queue-full rejections {rejected}, jobs dropped unrun (expired \
         {expired}, caller gone {cancelled}), uploads refused (slots {refused_slots}, bytes \
         {refused_bytes})"
    );
    let json = serde_json::json!({
        "workers": workers,
        "clip_s": o.clip_s,
        "duration_s": o.duration_s,
        "factor": o.factor,
        "deadline_ms": o.deadline_ms,
        "capacity_calls_per_s": capacity_rate,
        "offered_calls": offered,
        "offered_per_s": offered as f64 / o.duration_s,
        "accepted_calls": accepted.len(),
        "accepted_per_s": accepted.len() as f64 / wall,
        "accepted_p50_ms": quantile_ms(&accepted, 0.5),
        "accepted_p99_ms": quantile_ms(&accepted, 0.99),
        "shed_calls": shed.len(),
        "shed_rate": shed.len() as f64 / offered.max(1) as f64,
        "shed_p50_ms": quantile_ms(&shed, 0.5),
        "shed_p99_ms": quantile_ms(&shed, 0.99),
        "deadline_exceeded": deadline,
        "other_errors": other,
        "health_ok": r.health.ok,
        "health_failed": r.health.failed,
        "health_max_ms": r.health.max.as_secs_f64() * 1e3,
        "peak_rss_mib": mib(vm_hwm),
        "server_rejected_total": rejected,
        "server_dropped_expired": expired,
        "server_dropped_cancelled": cancelled,
    });
    println!("{json}");
}
