//! The PostgreSQL registry against the embedded one, and how fast replicas see each other's
//! changes. Needs PostgreSQL's server binaries (a throw-away cluster is started on loopback,
//! as the tests do) and librispeech-mini.
//!
//! 1. Registry alone, in process, synthetic 256-dimensional voiceprints: enrollments per
//!    second (the checks, the write transaction with its audit event) from 1 and from 4
//!    threads, and the registry part of one screening per second: before, the store reads
//!    screening made after the search (`find_artist` + `is_authorized` of the scored artist,
//!    `find_artist` of the credited one); now one `Registry::score` call (the search of one
//!    window, names and authorizations from the same in-memory view).
//! 2. Sync delay: two registries on one database, each with its follower; 200 enrollments on
//!    A, 20 ms apart; the time from A's commit returning to B's index holding it.
//! 3. Through the real server: a `vocalguard serve` on each store, enrolling 8 s speech clips
//!    one after another and screening an 8 s clip of an enrolled artist (so every call reads
//!    the registry) from 2 concurrent clients.
//!
//! ```sh
//! tools/with-postgres cargo bench --bench registry_backends
//! ```

#[path = "../tests/common/server.rs"]
#[allow(dead_code)]
mod server;

#[path = "../tests/common/grpc.rs"]
#[allow(dead_code)]
mod grpc;

#[path = "../tests/common/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc::Clients;
use postgres::PgCluster;
use server::ServerProcess;
use vocalguard::embed::Embedding;
use vocalguard::encoder::ModelId;
use vocalguard::proto::AiDisclosure;
use vocalguard::registry::backend::PoolSettings;
use vocalguard::registry::backend::StoreLocation;
use vocalguard::registry::{EnrollmentPolicy, Origin, Registry, ScoreQuery, VoiceprintLabel};

const DIM: usize = 256;
const ARTISTS: usize = 200;
const PER_ARTIST: usize = 5;

fn model() -> ModelId {
    ModelId {
        name: "bench-model".into(),
        sha256: "ab".repeat(32),
    }
}

fn origin() -> Origin {
    Origin {
        actor: "bench".into(),
        request_id: "bench".into(),
        key: None,
    }
}

/// A deterministic pseudo-random unit vector (xorshift), near `base` when given.
fn vector(seed: u64, base: Option<&[f32]>, spread: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..DIM)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
            base.map_or(r, |b| b[i] + spread * r)
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

fn embedding(vector: Vec<f32>) -> Embedding {
    Embedding {
        vector,
        duration_s: 10.0,
        voiced_s: 8.0,
        n_partials: 5,
    }
}

/// Enrollments per second from `threads` threads over fresh artists, and the registry part
/// of one screening per second, as store reads and as one `Registry::score`.
fn registry_alone(location: &StoreLocation) -> (f64, f64, f64, f64) {
    let registry =
        Arc::new(Registry::open_at(location, &model(), DIM, EnrollmentPolicy::default()).unwrap());
    let bases: Vec<Vec<f32>> = (0..ARTISTS as u64 * 2)
        .map(|a| vector(a + 1, None, 0.0))
        .collect();
    for a in 0..ARTISTS * 2 {
        registry
            .create_artist(&origin(), &format!("a{a}"), "Artist")
            .unwrap();
    }
    let enroll = |first: usize, threads: usize| {
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let (registry, bases) = (&registry, &bases);
                s.spawn(move || {
                    for a in (first + t..first + ARTISTS).step_by(threads) {
                        for k in 0..PER_ARTIST {
                            let v = vector((a * 100 + k) as u64 + 7, Some(&bases[a]), 0.02);
                            registry
                                .enroll(
                                    &origin(),
                                    &format!("a{a}"),
                                    VoiceprintLabel::Singing,
                                    "",
                                    &[embedding(v)],
                                )
                                .unwrap();
                        }
                    }
                });
            }
        });
        (ARTISTS * PER_ARTIST) as f64 / start.elapsed().as_secs_f64()
    };
    let one = enroll(0, 1);
    let four = enroll(ARTISTS, 4);
    let reads = 2000;
    let start = Instant::now();
    for i in 0..reads {
        let id = format!("a{}", i % (ARTISTS * 2));
        registry.find_artist(&id).unwrap().unwrap();
        registry.is_authorized(&id, "label").unwrap();
        registry.find_artist(&id).unwrap().unwrap();
    }
    let store_reads = reads as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..reads {
        let a = i % (ARTISTS * 2);
        let window = vector(a as u64 + 1_000_000, Some(&bases[a]), 0.02);
        let credited = [format!("a{a}")];
        let scored = registry
            .score(&ScoreQuery {
                windows: &[&window],
                top_k: 10,
                as_norm: None,
                party_id: "label",
                artist_ids: &credited,
            })
            .unwrap();
        assert!(scored.artists.contains_key(&credited[0]));
    }
    let score = reads as f64 / start.elapsed().as_secs_f64();
    (one, four, store_reads, score)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Delays from A's commit to B's index, over `n` enrollments.
fn sync_delay(url: &str, n: usize) -> Vec<Duration> {
    let location = StoreLocation::Postgres {
        url: url.to_string(),
        pool: PoolSettings::default(),
    };
    let open = || {
        Arc::new(Registry::open_at(&location, &model(), DIM, EnrollmentPolicy::default()).unwrap())
    };
    let (a, b) = (open(), open());
    a.follow(|_| {});
    b.follow(|_| {});
    a.create_artist(&origin(), "sync", "Sync").unwrap();
    let base = vector(999_999, None, 0.0);
    let mut delays = Vec::with_capacity(n);
    for k in 0..n {
        let v = vector(k as u64 + 5, Some(&base), 0.02);
        let version = a
            .enroll(
                &origin(),
                "sync",
                VoiceprintLabel::Singing,
                "",
                &[embedding(v)],
            )
            .unwrap()
            .version;
        let start = Instant::now();
        while b.version() < version {
            std::hint::spin_loop();
        }
        delays.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    delays.sort();
    delays
}

/// Through a real server: enrollments per second (sequential) and screenings per second
/// (2 clients).
async fn through_server(extra: &[&str], clips: &[Vec<u8>]) -> (f64, f64) {
    let data = tempfile::tempdir().unwrap();
    let mut args = vec!["--workers", "2"];
    args.extend_from_slice(extra);
    let server = ServerProcess::start(data.path(), &args);
    let mut c = Clients::connect(&server.url()).await;
    let start = Instant::now();
    for (i, clip) in clips.iter().enumerate() {
        let id = format!("s{i}");
        c.create_artist(&id, &id).await;
        c.enroll_bytes(&id, clip).await.unwrap();
    }
    let enroll = clips.len() as f64 / start.elapsed().as_secs_f64();
    let calls = 40;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for clip in &clips[..2] {
        let (url, clip) = (server.url(), clip.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Clients::connect(&url).await;
            for _ in 0..calls / 2 {
                let r = c
                    .screen_bytes("t", &clip, "u", AiDisclosure::None)
                    .await
                    .unwrap();
                assert_eq!(grpc::decision(&r), "DECISION_UNAUTHORIZED_MATCH");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let screen = calls as f64 / start.elapsed().as_secs_f64();
    (enroll, screen)
}

fn main() {
    let cluster =
        PgCluster::start().expect("PostgreSQL server binaries (run through tools/with-postgres)");
    let embedded_dir = tempfile::tempdir().unwrap();
    let embedded = StoreLocation::Embedded(embedded_dir.path().to_path_buf());
    let pg = StoreLocation::Postgres {
        url: cluster.url(),
        pool: PoolSettings::default(),
    };

    println!(
        "1. registry alone ({} enrollments per run, synthetic {DIM}-d voiceprints)",
        ARTISTS * PER_ARTIST
    );
    let (e1, e4, er, es) = registry_alone(&embedded);
    let (p1, p4, pr, ps) = registry_alone(&pg);
    println!("| store | enroll/s, 1 thread | enroll/s, 4 threads | screening's store reads/s (before) | Registry::score/s |");
    println!("|---|---|---|---|---|");
    println!("| embedded | {e1:.0} | {e4:.0} | {er:.0} | {es:.0} |");
    println!("| PostgreSQL | {p1:.0} | {p4:.0} | {pr:.0} | {ps:.0} |");
    println!(
        "| PostgreSQL / embedded | {:.2} | {:.2} | {:.2} | {:.2} |",
        p1 / e1,
        p4 / e4,
        pr / er,
        ps / es
    );

    // A fresh database for the sync measurement.
    drop(cluster);
    let cluster = PgCluster::start().unwrap();
    let delays = sync_delay(&cluster.url(), 200);
    println!(
        "\n2. sync delay A → B over {} enrollments: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        delays.len(),
        percentile(&delays, 0.5).as_secs_f64() * 1e3,
        percentile(&delays, 0.99).as_secs_f64() * 1e3,
        delays.last().unwrap().as_secs_f64() * 1e3
    );

    drop(cluster);
    let cluster = PgCluster::start().unwrap();
    let data = std::env::var_os("VOCALGUARD_LIBRISPEECH_MINI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/librispeech-mini")
        });
    let speakers = grpc::test_other_speakers(&data);
    let clips: Vec<Vec<u8>> = speakers
        .iter()
        .take(8)
        .map(|(_, f)| grpc::speech_clip(f, 8.0))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ee, es) = rt.block_on(through_server(&[], &clips));
    let url = cluster.url();
    let (pe, ps) = rt.block_on(through_server(&["--registry", &url], &clips));
    println!("\n3. through the server ({} enrollments of 8 s clips, sequential; 40 screenings of 8 s clips, 2 clients)", clips.len());
    println!("| store | enroll/s | screen/s |");
    println!("|---|---|---|");
    println!("| embedded | {ee:.2} | {es:.2} |");
    println!("| PostgreSQL | {pe:.2} | {ps:.2} |");
    println!(
        "| PostgreSQL / embedded | {:.2} | {:.2} |",
        pe / ee,
        ps / es
    );
}
