//! Several `vocalguard serve` replicas on one PostgreSQL registry (a real throw-away cluster,
//! real servers on loopback, librispeech-mini audio): what one replica changes, the other
//! screens by; a replica SIGKILLed in the middle of enrollments leaves no partial rows and
//! catches up when restarted; a database restarted under a running replica makes its calls
//! fail with UNAVAILABLE and then succeed again, with no restart of the replica.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::grpc::{decision, enroll_first, speech_clip, test_other_speakers, Clients};
use common::postgres::PgCluster;
use common::server::ServerProcess;
use tonic::Code;
use vocalguard::encoder::ModelId;
use vocalguard::proto::*;
use vocalguard::registry::backend::PoolSettings;
use vocalguard::registry::backend::StoreLocation;
use vocalguard::registry::{EnrollmentPolicy, Registry};

/// A replica on `url`, with its own (unused) data directory.
fn replica(url: &str, data: &tempfile::TempDir) -> ServerProcess {
    ServerProcess::start(data.path(), &["--registry", url, "--workers", "1"])
}

/// Screens `clip` through `clients` until `want` is the decision, or panics after 10 s;
/// returns the response and how long it took.
async fn screen_until(
    clients: &mut Clients,
    clip: &[u8],
    uploader: &str,
    want: &str,
) -> (ScreenResponse, Duration) {
    let start = Instant::now();
    loop {
        let r = clients
            .screen_bytes("track", clip, uploader, AiDisclosure::None)
            .await
            .unwrap();
        if decision(&r) == want {
            return (r, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {} after 10 s, wanted {want}",
            decision(&r)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn speakers() -> Option<Vec<(String, Vec<PathBuf>)>> {
    Some(test_other_speakers(&common::librispeech_mini()?))
}

/// The registry as the database holds it, opened in process and cross-checked.
fn verify(url: &str, model: &ModelId) -> vocalguard::registry::consistency::Verified {
    let location = StoreLocation::Postgres {
        url: url.to_string(),
        pool: PoolSettings::default(),
    };
    let dim = common::builtin_dim(model);
    let registry = Registry::open_at(&location, model, dim, EnrollmentPolicy::default()).unwrap();
    registry.verify().unwrap()
}

fn served_model(r: &ScreenResponse) -> ModelId {
    let context = r.context.as_ref().unwrap();
    ModelId {
        name: context.model.clone(),
        sha256: context.model_sha256.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_changes_the_other_screens_by() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let Some(speakers) = speakers() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        replica(&cluster.url(), &dir_a),
        replica(&cluster.url(), &dir_b),
    );
    let mut ca = Clients::connect(&a.url()).await;
    let mut cb = Clients::connect(&b.url()).await;
    let (_, files) = &speakers[0];
    let clip = speech_clip(files, 8.0);

    let before = cb
        .screen_bytes("track", &clip, "uploader", AiDisclosure::None)
        .await
        .unwrap();
    assert_eq!(decision(&before), "DECISION_NO_MATCH");
    ca.create_artist("singer", "Singer").await;
    let enrolled = ca.enroll_bytes("singer", &clip).await.unwrap();
    let (seen, delay) =
        screen_until(&mut cb, &clip, "uploader", "DECISION_UNAUTHORIZED_MATCH").await;
    assert_eq!(seen.matches[0].artist_id, "singer");
    assert!(
        seen.context.as_ref().unwrap().registry_version
            >= enrolled.context.as_ref().unwrap().registry_version
    );
    eprintln!("enrolled through A, screened as a match through B after {delay:?}");

    ca.registry
        .grant_authorization(GrantAuthorizationRequest {
            artist_id: "singer".into(),
            party_id: "label".into(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    let authorized = cb
        .screen_bytes("track", &clip, "label", AiDisclosure::None)
        .await
        .unwrap();
    assert_eq!(decision(&authorized), "DECISION_AUTHORIZED_MATCH");

    cb.registry
        .delete_artist(DeleteArtistRequest {
            artist_id: "singer".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, delay) = screen_until(&mut ca, &clip, "uploader", "DECISION_NO_MATCH").await;
    eprintln!("deleted through B, gone from A after {delay:?}");
    let listed = ca
        .registry
        .list_artists(ListArtistsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.artists.is_empty());
    verify(&cluster.url(), &served_model(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_enrollment_leaves_no_partial_rows_and_catches_up() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let Some(speakers) = speakers() else { return };
    let url = cluster.url();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&url, &dir_a);
    let b = replica(&url, &dir_b);
    let mut cb = Clients::connect(&b.url()).await;
    for (name, _) in &speakers[..4] {
        cb.create_artist(name, name).await;
    }
    // Four clients enroll every utterance of their speaker through A, which is killed
    // while they are at it.
    let mut tasks = Vec::new();
    for (name, files) in &speakers[..4] {
        let (url, name, files) = (a.url(), name.clone(), files.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Clients::connect(&url).await;
            let mut acknowledged = 0;
            for file in &files {
                match c.enroll(&name, file).await {
                    Ok(_) => acknowledged += 1,
                    Err(s) if s.code() == Code::FailedPrecondition => {}
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill();
    let mut acknowledged = 0;
    for t in tasks {
        acknowledged += t.await.unwrap();
    }
    // B keeps serving, and the database is whole: every voiceprint with its artist and its
    // audit event, the version equal to the last event's.
    let clip = speech_clip(&speakers[5].1, 8.0);
    let screened = cb
        .screen_bytes("t", &clip, "u", AiDisclosure::None)
        .await
        .unwrap();
    let model = served_model(&screened);
    let verified = tokio::task::block_in_place(|| verify(&url, &model));
    assert!(
        verified.voiceprints >= acknowledged,
        "{verified:?} < {acknowledged} acknowledged"
    );
    eprintln!("killed after {acknowledged} acknowledged enrollments; database: {verified:?}");

    // B enrolls a new artist while A is down; the restarted A screens by it.
    cb.create_artist("late", "Late").await;
    enroll_first(&mut cb, "late", &speakers[5].1, 1).await;
    let a = replica(&url, &dir_a);
    let mut ca = Clients::connect(&a.url()).await;
    let (seen, _) = screen_until(&mut ca, &clip, "u", "DECISION_UNAUTHORIZED_MATCH").await;
    assert_eq!(seen.matches[0].artist_id, "late");
    // And what B enrolls now, A follows.
    cb.create_artist("later", "Later").await;
    let clip7 = speech_clip(&speakers[7].1, 8.0);
    cb.enroll_bytes("later", &clip7).await.unwrap();
    let (seen, delay) = screen_until(&mut ca, &clip7, "u", "DECISION_UNAUTHORIZED_MATCH").await;
    assert_eq!(seen.matches[0].artist_id, "later");
    eprintln!("restarted A followed B's enrollment after {delay:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_is_unavailable_then_serves_again_without_a_replica_restart() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let Some(speakers) = speakers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&cluster.url(), &dir);
    let mut ca = Clients::connect(&a.url()).await;
    ca.create_artist("singer", "Singer").await;
    let clip = speech_clip(&speakers[0].1, 8.0);
    ca.enroll_bytes("singer", &clip).await.unwrap();

    tokio::task::block_in_place(|| cluster.stop());
    let down = ca
        .registry
        .create_artist(CreateArtistRequest {
            artist_id: "other".into(),
            display_name: "Other".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    let screened = ca
        .screen_bytes("t", &clip, "u", AiDisclosure::None)
        .await
        .unwrap_err();
    assert_eq!(screened.code(), Code::Unavailable, "{screened:?}");
    let enroll = ca.enroll_bytes("singer", &clip).await.unwrap_err();
    assert_eq!(enroll.code(), Code::Unavailable, "{enroll:?}");

    tokio::task::block_in_place(|| cluster.pg_start());
    let start = Instant::now();
    loop {
        match ca
            .registry
            .create_artist(CreateArtistRequest {
                artist_id: "other".into(),
                display_name: "Other".into(),
                ..Default::default()
            })
            .await
        {
            Ok(_) => break,
            Err(s)
                if s.code() == Code::Unavailable && start.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("after the database restart: {s:?}"),
        }
    }
    eprintln!(
        "served again {:?} after the database restart",
        start.elapsed()
    );
    let r = ca
        .screen_bytes("t", &clip, "u", AiDisclosure::None)
        .await
        .unwrap();
    assert_eq!(decision(&r), "DECISION_UNAUTHORIZED_MATCH");
}
