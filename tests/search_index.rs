//! The approximate search index in a real server: a registry above the threshold is served at
//! once (exact search) while the HNSW graph is built in the background; changes made during
//! the build are replayed onto the new index before it is swapped in; enrollments after that
//! are linked into the graph, and screening with real speech from librispeech-mini finds the
//! enrolled speakers through it.

mod common;

use std::time::{Duration, Instant};

use common::grpc::{decision, enroll_first, flac_files, test_other_speakers, Clients};
use common::server::{metric, ServerProcess};
use vocalguard::encoder::ModelId;
use vocalguard::proto::ping_service_client::PingServiceClient;
use vocalguard::proto::{DeleteArtistRequest, PingRequest};
use vocalguard::registry::backend::StoreLocation;
use vocalguard::registry::dump::Dump;
use vocalguard::registry::open_store;

/// Synthetic artists in the registry before the server starts, and voiceprints of each.
const SYNTHETIC_ARTISTS: usize = 2500;
const PER_ARTIST: usize = 4;
const DIM: usize = 256;

/// A registry of random voiceprints (uniform directions, so no real voice comes near them)
/// with a consistent audit trail.
fn synthetic_dump(model: ModelId) -> Dump {
    let mut state = 1u64;
    let mut gaussian = move || {
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (u, v) = (next(), next());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    common::synthetic::synthetic_dump(model, "synthetic", SYNTHETIC_ARTISTS, |_| {
        (0..PER_ARTIST)
            .map(|_| {
                let mut embedding: Vec<f32> = (0..DIM).map(|_| gaussian()).collect();
                let norm = embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
                embedding.iter_mut().for_each(|x| *x /= norm);
                embedding
            })
            .collect()
    })
}

/// The number after `key=` in the first log line holding `message`.
fn logged(log: &str, message: &str, key: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(message))?;
    let value = line.split(&format!("{key}=")).nth(1)?;
    value
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_is_built_in_the_background_keeps_every_change_and_finds_real_voices() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let model = {
        // GE2E: the synthetic voiceprints are shaped like its 256-d embeddings.
        let probe =
            ServerProcess::start(&data.path().join("probe"), &["--model", "ge2e-resemblyzer"]);
        let reply = PingServiceClient::connect(probe.url())
            .await
            .unwrap()
            .ping(PingRequest {})
            .await
            .unwrap()
            .into_inner();
        probe.terminate();
        ModelId {
            name: reply.model,
            sha256: reply.model_sha256,
        }
    };
    let dir = data.path().join("registry");
    let dump = synthetic_dump(model);
    let loaded_version = dump.version;
    open_store(&StoreLocation::Embedded(dir.clone()), Some(&dump.model))
        .unwrap()
        .load(&dump)
        .unwrap();
    drop(dump);

    let server = ServerProcess::start(
        &dir,
        &["--approximate-above", "1000", "--model", "ge2e-resemblyzer"],
    );
    let mut clients = Clients::connect(&server.url()).await;
    // Right after start: the graph is being built, exact search serves, and changes go on.
    clients
        .registry
        .delete_artist(DeleteArtistRequest {
            artist_id: "synthetic-000000".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let speakers: Vec<_> = test_other_speakers(&root).into_iter().take(2).collect();
    let (early_speaker, early_files) = &speakers[0];
    let early = format!("spk-{early_speaker}");
    clients.create_artist(&early, "Early").await;
    let (_, early_rest) = enroll_first(&mut clients, &early, early_files, 3).await;

    let until = Instant::now() + Duration::from_secs(600);
    while !server
        .log_text()
        .contains("search index rebuilt and swapped in")
    {
        assert!(
            Instant::now() < until,
            "the graph was never swapped in:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = server.log_text();
    let built_from = logged(
        &log,
        "building the search index in the background",
        "registry_version",
    )
    .expect("the build's starting version is logged");
    let replayed = logged(
        &log,
        "search index rebuilt and swapped in",
        "replayed_changes",
    )
    .expect("the replayed changes are logged");
    eprintln!("graph built from version {built_from}; {replayed} changes replayed at the swap");
    if built_from == loaded_version {
        assert!(
            replayed >= 1,
            "the deletion came after the copy, so the swap must replay it"
        );
    }
    assert_eq!(
        metric(
            &server.metrics_page(),
            "vocalguard_search_index_approximate"
        ),
        1.0
    );

    // After the swap: enrollments are linked into the graph.
    let (late_speaker, late_files) = &speakers[1];
    let late = format!("spk-{late_speaker}");
    clients.create_artist(&late, "Late").await;
    let (_, late_rest) = enroll_first(&mut clients, &late, late_files, 3).await;
    let expected = (SYNTHETIC_ARTISTS - 1) * PER_ARTIST + 6;
    assert_eq!(
        metric(&server.metrics_page(), "vocalguard_registry_voiceprints"),
        expected as f64,
        "the deleted artist's voiceprints are gone and both speakers' are there"
    );

    for (artist, rest) in [(&early, &early_rest), (&late, &late_rest)] {
        let mut matched = 0;
        for file in rest.iter().take(3) {
            let r = clients.screen(file, "uploader-unknown").await;
            if r.voiced_s < r.thresholds.as_ref().unwrap().min_voiced_s as f64 {
                continue;
            }
            assert_eq!(
                decision(&r),
                "DECISION_UNAUTHORIZED_MATCH",
                "{}: {}",
                file.display(),
                r.explanation
            );
            assert_eq!(r.matches[0].artist_id, *artist);
            matched += 1;
        }
        assert!(
            matched >= 2,
            "only {matched} held-out tracks of {artist} had enough voice"
        );
    }
    for file in flac_files(&root.join("train-clean-100")).iter().take(4) {
        let r = clients.screen(file, "uploader-unknown").await;
        assert!(
            r.matches.iter().all(|m| !m.matched),
            "a never-enrolled speaker matched: {}: {}",
            file.display(),
            r.explanation
        );
    }
    server.terminate();
}
