//! Screening throughput and latency: the gRPC server against the in-process pipeline.
//!
//! Both paths enroll the same registry (the 10 `test-other` speakers of librispeech-mini, the
//! first 3 utterances of each that enrollment accepts) and screen the same files (the 251
//! `train-clean-100` utterances and the remaining `test-other` ones), read into memory first:
//!
//! - in process: `audio::decode_to_16k_mono` then `screening::screen`, set up from
//!   `ServerConfig::default()` as the server is, twice: each call on its own (one thread per
//!   core, each running its tracks' encoder passes itself), and batched across calls (the
//!   server's default worker count sharing one encoder thread, as the server runs them);
//! - gRPC: the real `vocalguard serve` binary on loopback, `ScreeningService.Screen` streamed
//!   in 1 MiB chunks by 8 concurrent client tasks; once with the defaults (batching across
//!   calls) and once with `--no-cross-call-batching`.
//!
//! Throughput is audio seconds per wall second; the goal is gRPC ≥ 90% of the faster
//! in-process run. Then a
//! 30 s clip of one enrolled speaker is screened through gRPC N times at concurrency 1 and N
//! times at concurrency 4 (4 tasks sharing the N calls), reporting the p50 and p99 of the
//! client-side time per call (nearest rank: with 40 calls, p99 is the slowest) and calls per
//! second. A table and one JSON line are printed.
//!
//! ```sh
//! cargo bench --bench screening              # full: every file, N = 40
//! cargo bench --bench screening -- --quick   # smoke test: every 6th file, N = 8
//! cargo bench --bench screening -- --calls 100
//! ```
//!
//! The data is read from `VOCALGUARD_LIBRISPEECH_MINI`, else `../shared/data/librispeech-mini`.

/// The test suite's server launcher (not every helper of it is used here).
#[path = "../tests/common/server.rs"]
#[allow(dead_code)]
mod server;

/// The test suite's gRPC helpers (the speech clip).
#[path = "../tests/common/grpc.rs"]
#[allow(dead_code)]
mod grpc;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use server::ServerProcess;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use vocalguard::audio::{self, DecodeLimits};
use vocalguard::embed::{EmbedError, Embedder};
use vocalguard::encoder::{ResolveOptions, SpeakerModel};
use vocalguard::proto::{self, registry_service_client::RegistryServiceClient};
use vocalguard::proto::{screening_service_client::ScreeningServiceClient, ScreenResponse};
use vocalguard::registry::{Origin, Registry, RegistryError, VoiceprintLabel};
use vocalguard::screening::{self, AiDisclosure, Scoring, Upload};
use vocalguard::server::ServerConfig;

/// The server binary uses mimalloc; so does the in-process path, for a fair comparison.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Utterances enrolled per speaker.
const ENROLL_PER_SPEAKER: usize = 3;
/// Concurrent calls of the gRPC throughput run.
const GRPC_CONCURRENCY: usize = 8;
/// Concurrency levels of the latency runs.
const LATENCY_CONCURRENCY: [usize; 2] = [1, 4];
/// Length of the latency clip, seconds.
const CLIP_S: usize = 30;
/// Bytes per streamed audio chunk, as the CLI client sends them.
const CHUNK_BYTES: usize = 1024 * 1024;
/// The uploader every screened track names (authorized by nobody).
const UPLOADER: &str = "bench-uploader";
/// The quick run screens every this-many-th file.
const QUICK_STRIDE: usize = 6;

/// Command-line options (`cargo bench` adds `--bench`, which is ignored).
struct Options {
    quick: bool,
    calls: usize,
}

fn options() -> Options {
    let mut quick = false;
    let mut calls = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--quick" => quick = true,
            "--calls" => {
                calls = args.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0);
                if calls.is_none() {
                    usage("--calls needs a positive number");
                }
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    Options {
        quick,
        calls: calls.unwrap_or(if quick { 8 } else { 40 }),
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: cargo bench --bench screening -- [--quick] [--calls N]");
    std::process::exit(2);
}

/// One `test-other` speaker and their utterances, sorted by name.
struct Speaker {
    id: String,
    utterances: Vec<PathBuf>,
}

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("VOCALGUARD_LIBRISPEECH_MINI").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/librispeech-mini"),
        PathBuf::from,
    );
    if !dir.join("test-other").is_dir() || !dir.join("train-clean-100").is_dir() {
        eprintln!(
            "librispeech-mini not found at {} (no test-other/ and train-clean-100/ there); \
             set VOCALGUARD_LIBRISPEECH_MINI to its folder",
            dir.display()
        );
        std::process::exit(1);
    }
    dir
}

/// The `.flac` files directly in `dir`, sorted.
fn flac_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("reading a directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "flac"))
        .collect();
    files.sort();
    files
}

fn speakers(data: &Path) -> Vec<Speaker> {
    let root = data.join("test-other");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("listing {}: {e}", root.display()))
        .map(|entry| entry.expect("reading a directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| Speaker {
            id: file_name(&dir),
            utterances: flac_files(&dir),
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

fn display_name(speaker: &Speaker) -> String {
    format!("LibriSpeech speaker {}", speaker.id)
}

/// The server's pipeline in this process, set up as `vocalguard serve` sets it up from its
/// default configuration, with a fresh registry.
struct Pipeline {
    embedder: Embedder,
    /// The same model, its encoder inputs batched across calls as the server does.
    batched: Embedder,
    registry: Registry,
    scoring: Scoring,
    limits: DecodeLimits,
    _registry_dir: tempfile::TempDir,
}

impl Pipeline {
    fn new() -> Self {
        let config = ServerConfig::default();
        let model = SpeakerModel::load(&config.model, &ResolveOptions::from_env())
            .expect("loading the model");
        let limits = DecodeLimits {
            max_duration_s: config.limits.max_duration_s,
        };
        let embedder = Embedder::new(model, limits.clone())
            .expect("building the pipeline")
            .with_max_batch(config.inference.max_batch);
        let batched = Embedder::new(
            SpeakerModel::load(&config.model, &ResolveOptions::from_env())
                .expect("loading the model"),
            limits.clone(),
        )
        .expect("building the pipeline")
        .with_batching(config.inference.batching(), Box::new(|_| {}));
        let registry_dir = tempfile::tempdir().expect("a temporary directory");
        let registry = Registry::open(
            registry_dir.path(),
            embedder.model_id(),
            embedder.model().card().embedding_dim,
            config.enrollment,
        )
        .expect("opening the registry");
        let scoring = config
            .scoring(embedder.model_id(), embedder.model().card().calibration())
            .expect("the default scoring");
        Self {
            embedder,
            batched,
            registry,
            scoring,
            limits,
            _registry_dir: registry_dir,
        }
    }
}

/// Enrolls each speaker's first accepted utterances in process; returns them per speaker.
fn enroll_in_process(pipeline: &Pipeline, speakers: &[Speaker]) -> Vec<Vec<PathBuf>> {
    let Pipeline {
        embedder, registry, ..
    } = pipeline;
    let origin = Origin {
        actor: "screening-bench".into(),
        request_id: "in-process".into(),
        key: None,
    };
    speakers
        .iter()
        .map(|speaker| {
            registry
                .create_artist(&origin, &speaker.id, &display_name(speaker))
                .expect("creating an artist");
            let mut enrolled = Vec::new();
            for path in &speaker.utterances {
                if enrolled.len() == ENROLL_PER_SPEAKER {
                    break;
                }
                let embedding = match embedder.embed_file(path) {
                    Ok(embedding) => embedding,
                    Err(EmbedError::NoVoice { .. }) => continue,
                    Err(e) => panic!("embedding {}: {e}", path.display()),
                };
                let description = file_name(path);
                match registry.enroll(
                    &origin,
                    &speaker.id,
                    VoiceprintLabel::Speaking,
                    &description,
                    std::slice::from_ref(&embedding),
                ) {
                    Ok(_) => enrolled.push(path.clone()),
                    Err(
                        RegistryError::TooLittleVoice { .. }
                        | RegistryError::Inconsistent { .. }
                        | RegistryError::Collision { .. },
                    ) => {}
                    Err(e) => panic!("enrolling {}: {e}", path.display()),
                }
            }
            enrolled
        })
        .collect()
}

/// An audio file read into memory.
struct Track {
    name: String,
    bytes: Vec<u8>,
}

/// What screening one track gave: its decision (wire name without prefix) and duration.
struct Screened {
    decision: String,
    duration_s: f64,
}

fn read_tracks(paths: &[PathBuf]) -> Vec<Track> {
    paths
        .iter()
        .map(|p| Track {
            name: file_name(p),
            bytes: std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display())),
        })
        .collect()
}

/// Screens every track in process with `embedder` on `threads` threads; returns the results
/// in track order and the wall time.
fn screen_in_process(
    pipeline: &Pipeline,
    embedder: &Embedder,
    threads: usize,
    tracks: &[Track],
) -> (Vec<Screened>, Duration) {
    let Pipeline {
        registry,
        scoring,
        limits,
        ..
    } = pipeline;
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let mut results: Vec<(usize, Screened)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(track) = tracks.get(i) else {
                            break done;
                        };
                        let upload = Upload {
                            track_id: track.name.clone(),
                            uploader_party_id: UPLOADER.to_string(),
                            credited_artist_ids: Vec::new(),
                            ai_disclosure: AiDisclosure::None,
                        };
                        let decoded = audio::decode_to_16k_mono(track.bytes.clone(), None, limits)
                            .unwrap_or_else(|e| panic!("decoding {}: {e}", track.name));
                        let verdict = screening::screen(
                            embedder,
                            registry,
                            decoded.samples,
                            &upload,
                            scoring,
                        )
                        .unwrap_or_else(|e| panic!("screening {}: {e}", track.name));
                        done.push((
                            i,
                            Screened {
                                decision: verdict.decision.name().to_string(),
                                duration_s: verdict.duration_s,
                            },
                        ));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("an in-process worker panicked"))
            .collect()
    });
    let elapsed = started.elapsed();
    results.sort_by_key(|(i, _)| *i);
    (results.into_iter().map(|(_, s)| s).collect(), elapsed)
}

/// Warning and error lines the server logged (refusals of bad requests log at info).
fn problems(server: &ServerProcess) -> Vec<String> {
    server
        .log_text()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_string)
        .collect()
}

/// Sends SIGTERM and waits up to `grace` for the exit; returns the status and the time it
/// took, or `None` if the server was still running (it is then killed when dropped).
fn stop(server: &mut ServerProcess, grace: Duration) -> Option<(ExitStatus, Duration)> {
    let sent = Instant::now();
    server.signal_term();
    while sent.elapsed() < grace {
        if let Some(status) = server.child.try_wait().expect("polling the server") {
            return Some((status, sent.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Creates the speakers' artists through gRPC and enrolls each one's first accepted
/// utterances (a FAILED_PRECONDITION refusal skips the file); returns them per speaker.
async fn enroll_grpc(channel: Channel, speakers: &[Speaker]) -> Vec<Vec<PathBuf>> {
    let mut client = RegistryServiceClient::new(channel);
    let mut all = Vec::new();
    for speaker in speakers {
        client
            .create_artist(proto::CreateArtistRequest {
                artist_id: speaker.id.clone(),
                display_name: display_name(speaker),
                ..Default::default()
            })
            .await
            .expect("CreateArtist");
        let mut enrolled = Vec::new();
        for path in &speaker.utterances {
            if enrolled.len() == ENROLL_PER_SPEAKER {
                break;
            }
            let bytes = std::fs::read(path).expect("reading a reference");
            let mut messages = vec![proto::EnrollVoiceprintRequest {
                part: Some(proto::enroll_voiceprint_request::Part::Metadata(
                    proto::EnrollMetadata {
                        artist_id: speaker.id.clone(),
                        label: proto::VoiceprintLabel::Speaking as i32,
                        description: file_name(path),
                        ..Default::default()
                    },
                )),
            }];
            messages.extend(
                bytes
                    .chunks(CHUNK_BYTES)
                    .map(|c| proto::EnrollVoiceprintRequest {
                        part: Some(proto::enroll_voiceprint_request::Part::Chunk(
                            proto::AudioChunk { data: c.to_vec() },
                        )),
                    }),
            );
            match client.enroll_voiceprint(tokio_stream::iter(messages)).await {
                Ok(_) => enrolled.push(path.clone()),
                Err(s) if s.code() == Code::FailedPrecondition => {}
                Err(s) => panic!(
                    "EnrollVoiceprint {}: {:?}: {}",
                    path.display(),
                    s.code(),
                    s.message()
                ),
            }
        }
        all.push(enrolled);
    }
    all
}

/// Screens `bytes` through `ScreeningService.Screen`, metadata then 1 MiB chunks.
async fn screen_grpc(
    mut client: ScreeningServiceClient<Channel>,
    track_id: String,
    bytes: &[u8],
) -> ScreenResponse {
    let mut messages = vec![proto::ScreenRequest {
        part: Some(proto::screen_request::Part::Metadata(
            proto::TrackMetadata {
                track_id: track_id.clone(),
                uploader_party_id: UPLOADER.to_string(),
                credited_artist_ids: Vec::new(),
                ai_disclosure: proto::AiDisclosure::None as i32,
            },
        )),
    }];
    messages.extend(bytes.chunks(CHUNK_BYTES).map(|c| proto::ScreenRequest {
        part: Some(proto::screen_request::Part::Chunk(proto::AudioChunk {
            data: c.to_vec(),
        })),
    }));
    client
        .screen(tokio_stream::iter(messages))
        .await
        .unwrap_or_else(|s| panic!("Screen {track_id}: {:?}: {}", s.code(), s.message()))
        .into_inner()
}

/// The wire decision without its `DECISION_` prefix, as the core names it.
fn decision_name(response: &ScreenResponse) -> String {
    proto::Decision::try_from(response.decision).map_or_else(
        |_| response.decision.to_string(),
        |d| d.as_str_name().trim_start_matches("DECISION_").to_string(),
    )
}

/// Makes `calls` calls from `tasks` concurrent tasks, each taking the next call index from a
/// shared counter; returns each call's index, result and client-side time, and the wall time.
async fn drive<T, F, Fut>(
    tasks: usize,
    calls: usize,
    call: F,
) -> (Vec<(usize, T, Duration)>, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (call, next) = (Arc::clone(&call), Arc::clone(&next));
            tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= calls {
                        break done;
                    }
                    let sent = Instant::now();
                    let result = call(i).await;
                    done.push((i, result, sent.elapsed()));
                }
            })
        })
        .collect();
    let mut results = Vec::with_capacity(calls);
    for handle in handles {
        results.extend(handle.await.expect("a client task panicked"));
    }
    let elapsed = started.elapsed();
    results.sort_by_key(|(i, _, _)| *i);
    (results, elapsed)
}

/// Latency figures of one concurrency level.
struct Latency {
    concurrency: usize,
    calls: usize,
    p50_ms: f64,
    p99_ms: f64,
    calls_per_s: f64,
    decision: String,
}

/// The nearest-rank `p` quantile of `sorted`, milliseconds.
fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// Screens the clip `calls` times from `concurrency` tasks sharing the calls.
async fn latency(
    channel: &Channel,
    clip: &Arc<Vec<u8>>,
    concurrency: usize,
    calls: usize,
) -> Latency {
    let (channel, clip) = (channel.clone(), Arc::clone(clip));
    let (results, wall) = drive(concurrency, calls, move |i| {
        let client = ScreeningServiceClient::new(channel.clone());
        let clip = Arc::clone(&clip);
        async move { screen_grpc(client, format!("clip-{i}"), &clip).await }
    })
    .await;
    let mut times: Vec<Duration> = results.iter().map(|(_, _, t)| *t).collect();
    times.sort();
    Latency {
        concurrency,
        calls,
        p50_ms: quantile_ms(&times, 0.50),
        p99_ms: quantile_ms(&times, 0.99),
        calls_per_s: calls as f64 / wall.as_secs_f64(),
        decision: decision_name(&results[0].1),
    }
}

/// Enrolls through gRPC, screens the tracks at [`GRPC_CONCURRENCY`], then (given a number of
/// calls) measures the clip's latency; returns the responses in track order, the screening wall time and the latencies.
async fn grpc_phase(
    addr: &str,
    speakers: &[Speaker],
    enrolled: &[Vec<PathBuf>],
    tracks: &Arc<Vec<Track>>,
    latency_calls: Option<usize>,
) -> (Vec<ScreenResponse>, Duration, Vec<Latency>) {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URL")
        .connect()
        .await
        .expect("connecting to the server");
    println!("gRPC: enrolling {} speakers", speakers.len());
    let remote_enrolled = enroll_grpc(channel.clone(), speakers).await;
    assert!(
        remote_enrolled == enrolled,
        "the server enrolled other utterances than the in-process registry"
    );

    println!(
        "gRPC: screening {} files, {GRPC_CONCURRENCY} concurrent calls",
        tracks.len()
    );
    let (screening_channel, files) = (channel.clone(), Arc::clone(tracks));
    let (results, wall) = drive(GRPC_CONCURRENCY, tracks.len(), move |i| {
        let client = ScreeningServiceClient::new(screening_channel.clone());
        let files = Arc::clone(&files);
        async move { screen_grpc(client, files[i].name.clone(), &files[i].bytes).await }
    })
    .await;
    let responses = results.into_iter().map(|(_, r, _)| r).collect();
    let Some(calls) = latency_calls else {
        return (responses, wall, Vec::new());
    };

    let (speaker, used) = speakers
        .iter()
        .zip(enrolled)
        .find(|(_, e)| !e.is_empty())
        .expect("at least one enrolled speaker");
    let held_out: Vec<PathBuf> = speaker
        .utterances
        .iter()
        .filter(|p| !used.contains(p))
        .cloned()
        .collect();
    let clip = Arc::new(grpc::speech_clip(&held_out, CLIP_S as f64));
    let mut latencies = Vec::new();
    for concurrency in LATENCY_CONCURRENCY {
        println!(
            "gRPC: {CLIP_S} s clip of speaker {}, {calls} calls at concurrency {concurrency}",
            speaker.id
        );
        latencies.push(latency(&channel, &clip, concurrency, calls).await);
    }
    (responses, wall, latencies)
}

/// What a run measured.
struct Report {
    quick: bool,
    files: usize,
    audio_s: f64,
    speakers: usize,
    voiceprints: usize,
    /// In-process runs: (label, threads, wall time).
    local: Vec<(&'static str, usize, Duration)>,
    /// gRPC runs: (label, wall time, audio seconds the server reported).
    remote: Vec<(&'static str, Duration, f64)>,
    mismatches: usize,
    latencies: Vec<Latency>,
    stopped: Option<(ExitStatus, Duration)>,
    problems: Vec<String>,
}

impl Report {
    /// The faster in-process run's audio seconds per second.
    fn local_rate(&self) -> f64 {
        self.local
            .iter()
            .map(|(_, _, wall)| self.audio_s / wall.as_secs_f64())
            .fold(0.0, f64::max)
    }

    /// The default server's audio seconds per second.
    fn remote_rate(&self) -> f64 {
        let (_, wall, audio_s) = self.remote[0];
        audio_s / wall.as_secs_f64()
    }

    fn print_table(&self) {
        println!();
        println!(
            "screening {} files ({:.1} s of audio), {} voiceprints of {} speakers{}",
            self.files,
            self.audio_s,
            self.voiceprints,
            self.speakers,
            if self.quick { ", quick run" } else { "" }
        );
        println!("{:<48} {:>8} {:>14}", "path", "wall s", "audio s / s");
        for (label, threads, wall) in &self.local {
            println!(
                "{:<48} {:>8.2} {:>14.1}",
                format!("in-process, {label}, {threads} threads"),
                wall.as_secs_f64(),
                self.audio_s / wall.as_secs_f64()
            );
        }
        for (label, wall, audio_s) in &self.remote {
            println!(
                "{:<48} {:>8.2} {:>14.1}",
                format!("gRPC, {label}, {GRPC_CONCURRENCY} concurrent"),
                wall.as_secs_f64(),
                audio_s / wall.as_secs_f64()
            );
        }
        println!(
            "gRPC (default) / faster in-process: {:.1}% (goal >= 90%); tracks whose decision or \
             duration differs between any two paths: {}",
            self.remote_rate() / self.local_rate() * 100.0,
            self.mismatches
        );
        println!();
        println!(
            "{CLIP_S} s clip through gRPC ({}), client time per call:",
            self.latencies[0].decision
        );
        println!(
            "{:>11} {:>6} {:>8} {:>8} {:>8}",
            "concurrency", "calls", "p50 ms", "p99 ms", "calls/s"
        );
        for l in &self.latencies {
            println!(
                "{:>11} {:>6} {:>8.1} {:>8.1} {:>8.2}",
                l.concurrency, l.calls, l.p50_ms, l.p99_ms, l.calls_per_s
            );
        }
        match self.stopped {
            Some((status, took)) => println!(
                "server stopped on SIGTERM in {:.2} s ({status})",
                took.as_secs_f64()
            ),
            None => println!("server still running 30 s after SIGTERM; killed"),
        }
        if !self.problems.is_empty() {
            println!("server warnings and errors:");
            for line in &self.problems {
                println!("  {line}");
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "quick": self.quick,
            "files": self.files,
            "audio_s": r3(self.audio_s),
            "voiceprints": self.voiceprints,
            "grpc_concurrency": GRPC_CONCURRENCY,
            "inprocess_audio_s_per_s": r3(self.local_rate()),
            "grpc_audio_s_per_s": r3(self.remote_rate()),
            "ratio": r3(self.remote_rate() / self.local_rate()),
            "mismatches": self.mismatches,
            "server_stopped": self.stopped.is_some_and(|(status, _)| status.success()),
            "server_warnings": self.problems.len(),
        });
        for (label, threads, wall) in &self.local {
            json[format!("inprocess_{label}_threads")] = (*threads).into();
            json[format!("inprocess_{label}_audio_s_per_s")] =
                r3(self.audio_s / wall.as_secs_f64()).into();
        }
        for (label, wall, audio_s) in &self.remote {
            json[format!("grpc_{label}_audio_s_per_s")] = r3(audio_s / wall.as_secs_f64()).into();
        }
        for l in &self.latencies {
            let key = |what: &str| format!("latency_{CLIP_S}s_c{}_{what}", l.concurrency);
            json[key("calls")] = l.calls.into();
            json[key("p50_ms")] = r3(l.p50_ms).into();
            json[key("p99_ms")] = r3(l.p99_ms).into();
            json[key("calls_per_s")] = r3(l.calls_per_s).into();
        }
        json
    }
}

/// `x` rounded to 3 decimals, for the JSON line.
fn r3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn main() {
    let opts = options();
    let data = data_dir();
    let speakers = speakers(&data);
    assert!(!speakers.is_empty(), "no speakers under test-other/");

    println!(
        "in-process: loading the model and enrolling {} speakers",
        speakers.len()
    );
    let pipeline = Pipeline::new();
    let enrolled = enroll_in_process(&pipeline, &speakers);

    let mut screening_paths: Vec<PathBuf> = speakers
        .iter()
        .zip(&enrolled)
        .flat_map(|(s, e)| s.utterances.iter().filter(|p| !e.contains(p)).cloned())
        .chain(flac_files(&data.join("train-clean-100")))
        .collect();
    if opts.quick {
        screening_paths = screening_paths.into_iter().step_by(QUICK_STRIDE).collect();
    }
    let tracks = Arc::new(read_tracks(&screening_paths));

    let config = ServerConfig::default();
    let per_call_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut local = Vec::new();
    let mut local_results = Vec::new();
    for (label, embedder, threads) in [
        ("per-call", &pipeline.embedder, per_call_threads),
        ("batched", &pipeline.batched, config.workers()),
    ] {
        println!(
            "in-process: screening {} files on {threads} threads, {label}",
            tracks.len()
        );
        let (results, wall) = screen_in_process(&pipeline, embedder, threads, &tracks);
        local.push((label, threads, wall));
        local_results.push(results);
    }
    drop(pipeline);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    let mut remote = Vec::new();
    let mut remote_results = Vec::new();
    let mut latencies = Vec::new();
    let (mut problems, mut stopped) = (Vec::new(), None);
    for (label, flags, latency_calls) in [
        ("batched", &[][..], Some(opts.calls)),
        ("per-call", &["--no-cross-call-batching"][..], None),
    ] {
        let server_dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = ServerProcess::start(server_dir.path(), flags);
        println!("gRPC: server on {} ({label})", server.addr);
        let (responses, wall, measured) = runtime.block_on(grpc_phase(
            &server.addr,
            &speakers,
            &enrolled,
            &tracks,
            latency_calls,
        ));
        latencies.extend(measured);
        problems.extend(self::problems(&server));
        let this_stop = stop(&mut server, Duration::from_secs(30));
        if stopped.is_none() || this_stop.is_none() {
            stopped = this_stop;
        }
        remote.push((label, wall, responses.iter().map(|r| r.duration_s).sum()));
        remote_results.push(responses);
    }

    let reference = &local_results[0];
    let mismatches = (0..tracks.len())
        .filter(|&i| {
            let (decision, duration) = (&reference[i].decision, reference[i].duration_s);
            local_results
                .iter()
                .map(|r| (r[i].decision.clone(), r[i].duration_s))
                .chain(
                    remote_results
                        .iter()
                        .map(|r| (decision_name(&r[i]), r[i].duration_s)),
                )
                .any(|(d, s)| d != *decision || (s - duration).abs() > 1e-6)
        })
        .count();
    let report = Report {
        quick: opts.quick,
        files: tracks.len(),
        audio_s: reference.iter().map(|s| s.duration_s).sum(),
        speakers: speakers.len(),
        voiceprints: enrolled.iter().map(Vec::len).sum(),
        local,
        remote,
        mismatches,
        latencies,
        stopped,
        problems,
    };
    report.print_table();
    println!("{}", report.json());
}
