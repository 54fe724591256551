//! 1:N search of the voice registry: exact scan against the HNSW graph, and server start-up.
//!
//! Synthetic voiceprints shaped like GE2E embeddings (256 dimensions, see `Voices`): artists
//! of 2 to 6 voiceprints, two of one artist about 0.8 apart in cosine, two artists about 0.56.
//! Queries are new recordings of registered artists and of unregistered voices, reported
//! apart and together. Per registry size:
//!
//! - exact and HNSW (for each `ef_search`) query latency p50/p99, timed one query at a time on
//!   this thread (one core), and HNSW recall@10 against the exact top 10;
//! - graph build time on 1 and on all threads, memory per voiceprint (the index's own count,
//!   and the process RSS growth while building it);
//! - cost of inserting into and deleting from the built graph, and recall with 20% deleted.
//!
//! Then `vocalguard serve` (the release binary) is started on an empty registry and on one of
//! 100,000 voiceprints, timed until gRPC health answers SERVING.
//!
//! ```sh
//! cargo bench --bench search
//! VOCALGUARD_SEARCH_SIZES=10000,100000 cargo bench --bench search    # quicker
//! ```
//!
//! Environment: `VOCALGUARD_SEARCH_SIZES` (default 10000,100000,1000000),
//! `VOCALGUARD_SEARCH_EF` (default 384,768,1024,1536; the server searches at 1024),
//! `VOCALGUARD_SEARCH_QUERIES` (per kind,
//! default 500), `VOCALGUARD_SEARCH_BUILD_THREADS` (default 1 and all cores; 1 is skipped
//! above 100,000), `VOCALGUARD_SEARCH_M` and `VOCALGUARD_SEARCH_EF_CONSTRUCTION` (default:
//! the server's), `VOCALGUARD_SEARCH_STARTUP` (0 skips the start-up part). Each result is a
//! JSON line; a summary follows.

/// The test suite's synthetic registries.
#[path = "../tests/common/synthetic.rs"]
mod synthetic;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vocalguard::encoder::ModelId;
use vocalguard::registry::backend::StoreLocation;
use vocalguard::registry::dump::Dump;
use vocalguard::registry::index::{Rows, SearchConfig, SearchIndex};
use vocalguard::registry::open_store;

const DIM: usize = 256;

/// Deterministic Gaussian noise (SplitMix64 and Box-Muller).
struct Noise(u64);

impl Noise {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn gaussian(&mut self) -> f32 {
        let u = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let v = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// A unit vector in a random direction.
    fn direction(&mut self, dim: usize) -> Vec<f32> {
        unit((0..dim).map(|_| self.gaussian()).collect())
    }
}

/// Voices shaped like GE2E embeddings, fitted to the 351 utterance embeddings of
/// librispeech-mini (between-speaker cosine 0.56 ± 0.08, a common direction, variance spread
/// over ~30 effective dimensions): a speaker is the common direction plus a random offset with
/// a decaying spectrum; a recording is its speaker plus smaller noise of the same spectrum,
/// which leaves two recordings of one speaker about 0.8 apart in cosine.
struct Voices {
    common: Vec<f32>,
    scale: Vec<f32>,
}

impl Voices {
    fn new(dim: usize, noise: &mut Noise) -> Self {
        let spectrum: Vec<f64> = (0..dim).map(|i| (i as f64 + 1.0).powf(-0.9)).collect();
        let total: f64 = spectrum.iter().sum();
        Self {
            common: noise.direction(dim),
            scale: spectrum.iter().map(|l| (l / total).sqrt() as f32).collect(),
        }
    }

    /// A new speaker (not normalised: recordings are).
    fn speaker(&self, noise: &mut Noise) -> Vec<f32> {
        self.common
            .iter()
            .zip(&self.scale)
            .map(|(c, s)| c + 0.7 * s * noise.gaussian())
            .collect()
    }

    /// A recording of `speaker`.
    fn recording(&self, speaker: &[f32], noise: &mut Noise) -> Vec<f32> {
        unit(
            speaker
                .iter()
                .zip(&self.scale)
                .map(|(c, s)| c + 0.6 * s * noise.gaussian())
                .collect(),
        )
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// `size` voiceprints of artists with 2-6 each, and the artists' centres.
fn synthetic(size: usize, voices: &Voices, noise: &mut Noise) -> (Rows, Vec<Vec<f32>>) {
    let mut rows = Rows {
        ids: Vec::with_capacity(size),
        rows: Vec::with_capacity(size * DIM),
    };
    let mut centres = Vec::new();
    while rows.ids.len() < size {
        let centre = voices.speaker(noise);
        let artist = centres.len();
        let count = (2 + noise.next_u64() % 5) as usize;
        for v in 0..count.min(size - rows.ids.len()) {
            rows.ids
                .push((format!("vp-{artist:07}-{v}"), format!("artist-{artist:07}")));
            rows.rows.extend(voices.recording(&centre, noise));
        }
        centres.push(centre);
    }
    (rows, centres)
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: {s:?} is not a number"))
        })
        .collect()
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// p50 and p99 of `samples`, milliseconds.
fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] * 1e3;
    (at(0.50), at(0.99))
}

struct Queries {
    registered: Vec<Vec<f32>>,
    unregistered: Vec<Vec<f32>>,
}

impl Queries {
    fn kinds(&self) -> [(&'static str, &[Vec<f32>]); 2] {
        [
            ("registered", &self.registered),
            ("unregistered", &self.unregistered),
        ]
    }
}

/// Times `search` on every query; returns the results and p50/p99 (ms).
fn timed<T>(queries: &[Vec<f32>], mut search: impl FnMut(&[f32]) -> T) -> (Vec<T>, f64, f64) {
    let mut samples = Vec::with_capacity(queries.len());
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let started = Instant::now();
        let r = search(q);
        samples.push(started.elapsed().as_secs_f64());
        out.push(r);
    }
    let (p50, p99) = percentiles(&mut samples);
    (out, p50, p99)
}

/// The default review threshold: hits at or above it are the ones screening decisions use.
const REVIEW: f32 = 0.74;

/// Share of the exact hits scoring at least `floor` that the search found.
fn recall(truth: &[Vec<(String, f32)>], found: &[Vec<(String, f32)>], floor: f32) -> f64 {
    let mut hit = 0;
    let mut total = 0;
    for (t, f) in truth.iter().zip(found) {
        for (id, _) in t.iter().filter(|(_, s)| *s >= floor) {
            total += 1;
            hit += usize::from(f.iter().any(|(x, _)| x == id));
        }
    }
    hit as f64 / total.max(1) as f64
}

fn ids(index: &SearchIndex, q: &[f32], exact: bool) -> Vec<(String, f32)> {
    let hits = if exact {
        index.top_k_exact(q, 10)
    } else {
        index.top_k(q, 10)
    };
    hits.into_iter()
        .map(|h| (h.voiceprint_id, h.score))
        .collect()
}

fn bench_size(
    size: usize,
    efs: &[usize],
    per_kind: usize,
    threads: &[usize],
    summary: &mut Vec<String>,
) {
    let all_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("== {size} voiceprints (load average {})", load_average());
    let mut noise = Noise(size as u64);
    let rss_before = rss_bytes();
    let voices = Voices::new(DIM, &mut noise);
    let (rows, centres) = synthetic(size, &voices, &mut noise);
    let queries = Queries {
        registered: (0..per_kind)
            .map(|i| voices.recording(&centres[(i * 7919) % centres.len()], &mut noise))
            .collect(),
        unregistered: (0..per_kind)
            .map(|_| voices.recording(&voices.speaker(&mut noise), &mut noise))
            .collect(),
    };
    let defaults = SearchConfig::default();
    let config = SearchConfig {
        approximate_above: 0,
        m: env_list("VOCALGUARD_SEARCH_M", &defaults.m.to_string())[0],
        ef_construction: env_list(
            "VOCALGUARD_SEARCH_EF_CONSTRUCTION",
            &defaults.ef_construction.to_string(),
        )[0],
        ..defaults
    };
    let exact = SearchIndex::build(
        DIM,
        SearchConfig {
            approximate_above: usize::MAX,
            ..config
        },
        rows.clone(),
        &|_| {},
    );
    let mut truth = Vec::new();
    for (kind, qs) in queries.kinds() {
        let (found, p50, p99) = timed(qs, |q| ids(&exact, q, true));
        println!(
            "{{\"size\":{size},\"search\":\"exact\",\"queries\":\"{kind}\",\"p50_ms\":{p50:.4},\"p99_ms\":{p99:.4},\"load\":\"{}\"}}",
            load_average()
        );
        summary.push(format!(
            "{size:>8} exact      {kind:<12} p50 {p50:7.3} ms  p99 {p99:7.3} ms"
        ));
        truth.push(found);
    }
    drop(exact);
    let mut index = None;
    for &t in threads {
        let t = if t == 0 { all_threads } else { t };
        if t == 1 && size > 100_000 && threads.len() > 1 {
            continue;
        }
        drop(index.take());
        let rss_start = rss_bytes();
        let copy = rows.clone();
        let started = Instant::now();
        let built = SearchIndex::build(
            DIM,
            SearchConfig {
                build_threads: t,
                ..config
            },
            copy,
            &|n| {
                eprintln!(
                    "  linked {n}/{size} ({:.0} s)",
                    started.elapsed().as_secs_f64()
                )
            },
        );
        let build_s = started.elapsed().as_secs_f64();
        let rss_delta = rss_bytes().saturating_sub(rss_start);
        let per_vp = built.memory_bytes() as f64 / size as f64;
        let rss_per_vp = rss_delta as f64 / size as f64;
        println!(
            "{{\"size\":{size},\"build_threads\":{t},\"build_s\":{build_s:.2},\"m\":{},\"ef_construction\":{},\"index_bytes_per_voiceprint\":{per_vp:.0},\"rss_bytes_per_voiceprint\":{rss_per_vp:.0},\"load\":\"{}\"}}",
            config.m,
            config.ef_construction,
            load_average()
        );
        summary.push(format!(
            "{size:>8} build      {t} thread(s)  {build_s:7.1} s   {per_vp:.0} B/voiceprint (index), {rss_per_vp:.0} B (RSS growth)"
        ));
        index = Some(built);
    }
    drop(rows);
    let Some(mut index) = index else { return };
    for &ef in efs {
        index.configure(SearchConfig {
            ef_search: ef,
            ..config
        });
        let mut all_truth = Vec::new();
        let mut all_found = Vec::new();
        let mut all_times = Vec::new();
        for ((kind, qs), truth) in queries.kinds().into_iter().zip(&truth) {
            let mut times = Vec::new();
            let found: Vec<Vec<(String, f32)>> = qs
                .iter()
                .map(|q| {
                    let started = Instant::now();
                    let r = ids(&index, q, false);
                    times.push(started.elapsed().as_secs_f64());
                    r
                })
                .collect();
            let r = recall(truth, &found, f32::NEG_INFINITY);
            let rr = recall(truth, &found, REVIEW);
            all_times.extend(times.iter().copied());
            let (p50, p99) = percentiles(&mut times);
            println!(
                "{{\"size\":{size},\"search\":\"hnsw\",\"ef_search\":{ef},\"queries\":\"{kind}\",\"p50_ms\":{p50:.4},\"p99_ms\":{p99:.4},\"recall_at_10\":{r:.4},\"recall_of_hits_above_review\":{rr:.4},\"load\":\"{}\"}}",
                load_average()
            );
            summary.push(format!(
                "{size:>8} hnsw ef={ef:<4} {kind:<12} p50 {p50:7.3} ms  p99 {p99:7.3} ms  recall@10 {r:.4}  (hits >= {REVIEW}: {rr:.4})"
            ));
            all_truth.extend(truth.iter().cloned());
            all_found.extend(found);
        }
        let r = recall(&all_truth, &all_found, f32::NEG_INFINITY);
        let rr = recall(&all_truth, &all_found, REVIEW);
        let (p50, p99) = percentiles(&mut all_times);
        println!(
            "{{\"size\":{size},\"search\":\"hnsw\",\"ef_search\":{ef},\"queries\":\"both\",\"p50_ms\":{p50:.4},\"p99_ms\":{p99:.4},\"recall_at_10\":{r:.4},\"recall_of_hits_above_review\":{rr:.4}}}"
        );
        summary.push(format!(
            "{size:>8} hnsw ef={ef:<4} {:<12} p50 {p50:7.3} ms  p99 {p99:7.3} ms  recall@10 {r:.4}  (hits >= {REVIEW}: {rr:.4})",
            "both"
        ));
    }
    index.configure(config);
    let added: Vec<Vec<f32>> = (0..1000)
        .map(|_| voices.recording(&voices.speaker(&mut noise), &mut noise))
        .collect();
    let started = Instant::now();
    for (i, v) in added.iter().enumerate() {
        index.insert(&format!("added-{i}"), &format!("added-artist-{i}"), v);
    }
    let insert_ms = started.elapsed().as_secs_f64() * 1e3 / added.len() as f64;
    let doomed: Vec<String> = index
        .entries()
        .map(|(v, _)| v.to_string())
        .step_by(5)
        .collect();
    let started = Instant::now();
    for id in &doomed {
        index.remove(id);
    }
    let delete_us = started.elapsed().as_secs_f64() * 1e6 / doomed.len() as f64;
    let mut truth = Vec::new();
    let mut found = Vec::new();
    for (_, qs) in queries.kinds() {
        for q in qs {
            truth.push(ids(&index, q, true));
            found.push(ids(&index, q, false));
        }
    }
    let r = recall(&truth, &found, f32::NEG_INFINITY);
    println!(
        "{{\"size\":{size},\"insert_ms\":{insert_ms:.3},\"delete_us\":{delete_us:.2},\"deleted_fraction\":0.2,\"recall_at_10_after_deletes\":{r:.4},\"rss_growth_total_bytes\":{}}}",
        rss_bytes().saturating_sub(rss_before)
    );
    summary.push(format!(
        "{size:>8} updates    insert {insert_ms:.3} ms, delete {delete_us:.1} µs each; recall@10 with 20% deleted {r:.4}"
    ));
}

fn model_of(server: &str) -> ModelId {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let mut client = vocalguard::proto::ping_service_client::PingServiceClient::connect(
            format!("http://{server}"),
        )
        .await
        .expect("connecting");
        let reply = client
            .ping(vocalguard::proto::PingRequest {})
            .await
            .expect("ping")
            .into_inner();
        ModelId {
            name: reply.model,
            sha256: reply.model_sha256,
        }
    })
}

/// Starts `vocalguard serve` on `data_dir`; returns the process, its address and the time
/// until health reported SERVING.
fn start_server(data_dir: &Path) -> (std::process::Child, String, f64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vocalguard"))
        .args(["serve", "--no-metrics", "--listen", &addr, "--data-dir"])
        .arg(data_dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting vocalguard serve");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let serving = runtime.block_on(async {
        loop {
            if started.elapsed() > Duration::from_secs(120) {
                return false;
            }
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("an endpoint")
                .connect()
                .await
            {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                if let Ok(r) = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                {
                    if r.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                    {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    if !serving {
        let _ = child.kill();
        panic!("vocalguard serve did not report SERVING within 120 s");
    }
    (child, addr, elapsed)
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// A dump of `size` synthetic voiceprints (4 per artist) with a consistent audit trail.
fn dump(model: ModelId, size: usize) -> Dump {
    let mut noise = Noise(42);
    let voices = Voices::new(DIM, &mut noise);
    synthetic::synthetic_dump(model, "artist", size.div_ceil(4), |a| {
        let centre = voices.speaker(&mut noise);
        (0..4.min(size - a * 4))
            .map(|_| voices.recording(&centre, &mut noise))
            .collect()
    })
}

fn startup(summary: &mut Vec<String>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let empty = dir.path().join("empty");
    let mut empty_s = Vec::new();
    let mut model = None;
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&empty);
        let (child, addr, s) = start_server(&empty);
        model.get_or_insert_with(|| model_of(&addr));
        stop(child);
        empty_s.push(s);
    }
    let model = model.expect("the server's model");
    let size = 100_000;
    let full: PathBuf = dir.path().join("full");
    let started = Instant::now();
    let store = open_store(&StoreLocation::Embedded(full.clone()), Some(&model)).expect("a store");
    store.load(&dump(model, size)).expect("loading the dump");
    drop(store);
    eprintln!(
        "registry of {size} voiceprints written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut full_s = Vec::new();
    for _ in 0..3 {
        let (child, _, s) = start_server(&full);
        stop(child);
        full_s.push(s);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    for (name, n, v) in [("empty", 0, &empty_s), ("full", size, &full_s)] {
        println!(
            "{{\"startup\":\"{name}\",\"voiceprints\":{n},\"serving_s_min\":{:.3},\"serving_s_max\":{:.3},\"load\":\"{}\"}}",
            best(v),
            worst(v),
            load_average()
        );
        summary.push(format!(
            "start-up, {n:>6} voiceprints: SERVING after {:.2}-{:.2} s (3 runs)",
            best(v),
            worst(v)
        ));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes = env_list("VOCALGUARD_SEARCH_SIZES", "10000,100000,1000000");
    let efs = env_list("VOCALGUARD_SEARCH_EF", "384,768,1024,1536");
    let per_kind = env_list("VOCALGUARD_SEARCH_QUERIES", "500")[0];
    let threads = env_list("VOCALGUARD_SEARCH_BUILD_THREADS", "1,0");
    let mut summary = vec![format!(
        "search bench, {DIM} dimensions, {} cores, load average at start {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average()
    )];
    for size in sizes {
        bench_size(size, &efs, per_kind, &threads, &mut summary);
    }
    if std::env::var("VOCALGUARD_SEARCH_STARTUP").as_deref() != Ok("0") {
        startup(&mut summary);
    }
    summary.push(format!("load average at end {}", load_average()));
    eprintln!("\n{}", summary.join("\n"));
}
