//! Batching across calls through real servers on loopback: concurrent screenings that share
//! encoder passes get the answers each track gets alone from a server that does not batch
//! across calls.

mod common;

use std::path::PathBuf;

use common::grpc::{decision, enroll_first, flac_files, test_other_speakers, Clients};
use common::server::{metric, ServerProcess};
use vocalguard::proto::ScreenResponse;

/// Speakers enrolled, references each, and tracks screened.
const SPEAKERS: usize = 2;
const REFERENCES: usize = 2;
const TRACKS: usize = 6;

/// Enrolls the first [`SPEAKERS`] test-other speakers; returns the tracks to screen: some of
/// their held-out utterances and some train-clean utterances of other speakers.
async fn enroll(clients: &mut Clients, data: &std::path::Path) -> Vec<PathBuf> {
    let mut tracks = Vec::new();
    for (speaker, files) in test_other_speakers(data).into_iter().take(SPEAKERS) {
        clients.create_artist(&speaker, &speaker).await;
        let (_, rest) = enroll_first(clients, &speaker, &files, REFERENCES).await;
        tracks.extend(rest.into_iter().take(TRACKS / 2 / SPEAKERS));
    }
    tracks.extend(
        flac_files(&data.join("train-clean-100"))
            .into_iter()
            .take(TRACKS - tracks.len()),
    );
    tracks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_screenings_sharing_encoder_passes_get_the_answers_of_tracks_alone() {
    let Some(data) = common::librispeech_mini() else {
        return;
    };

    // A server that batches across calls and waits long enough for concurrent calls to meet.
    let batched_dir = tempfile::tempdir().unwrap();
    let batched = ServerProcess::start(batched_dir.path(), &["--max-wait-ms", "300"]);
    let mut clients = Clients::connect(&batched.url()).await;
    let tracks = enroll(&mut clients, &data).await;
    assert_eq!(tracks.len(), TRACKS);
    let passes_before = metric(
        &batched.metrics_page(),
        "vocalguard_encoder_pass_callers_count",
    );
    let calls: Vec<_> = tracks
        .iter()
        .map(|track| {
            let (url, track) = (batched.url(), track.clone());
            tokio::spawn(async move {
                Clients::connect(&url)
                    .await
                    .screen(&track, "uploader")
                    .await
            })
        })
        .collect();
    let mut together: Vec<ScreenResponse> = Vec::new();
    for call in calls {
        together.push(call.await.unwrap());
    }
    let page = batched.metrics_page();
    let passes = metric(&page, "vocalguard_encoder_pass_callers_count") - passes_before;
    let alone_passes = metric(&page, "vocalguard_encoder_pass_callers_bucket{le=\"1\"}");
    assert!(passes >= 1.0, "{page}");
    assert!(
        metric(&page, "vocalguard_encoder_pass_callers_bucket{le=\"+Inf\"}") > alone_passes,
        "no encoder pass held more than one call:\n{page}"
    );

    // A server that runs each call's encoder passes on its own, one track at a time.
    let single_dir = tempfile::tempdir().unwrap();
    let single = ServerProcess::start(single_dir.path(), &["--no-cross-call-batching"]);
    let mut clients = Clients::connect(&single.url()).await;
    assert_eq!(enroll(&mut clients, &data).await, tracks);
    for (track, shared) in tracks.iter().zip(&together) {
        let alone = clients.screen(track, "uploader").await;
        let name = track.display();
        assert_eq!(decision(&alone), decision(shared), "{name}");
        assert_eq!(alone.windows, shared.windows, "{name}");
        assert_eq!(alone.voiced_s, shared.voiced_s, "{name}");
        assert_eq!(alone.matches.len(), shared.matches.len(), "{name}");
        for (a, b) in alone.matches.iter().zip(&shared.matches) {
            assert_eq!(a.artist_id, b.artist_id, "{name}");
            assert!(
                (a.aggregate_score - b.aggregate_score).abs() < 1e-5,
                "{name}: {} vs {}",
                a.aggregate_score,
                b.aggregate_score
            );
        }
    }
    assert!(together
        .iter()
        .any(|r| decision(r) == "DECISION_UNAUTHORIZED_MATCH"));
    let page = single.metrics_page();
    assert_eq!(
        metric(&page, "vocalguard_encoder_pass_callers_count"),
        0.0,
        "{page}"
    );
    assert!(batched.terminate().success());
    assert!(single.terminate().success());
}
