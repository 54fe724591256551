//! The PostgreSQL registry store on a real throw-away cluster, in process: the registry's
//! operations behave as on the embedded store, replicas sharing the database follow each
//! other (and the enrollment checks see the other replica's voiceprints even before its
//! notification arrives), schema migrations refuse a newer database, and
//! `vocalguard registry export|import` moves a registry between the two stores without loss.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::postgres::PgCluster;
use vocalguard::embed::Embedding;
use vocalguard::encoder::ModelId;
use vocalguard::registry::backend::{PoolSettings, RegistryStore, StoreLocation};
use vocalguard::registry::postgres::{migrations, PgStore};
use vocalguard::registry::replay::WriteKey;
use vocalguard::registry::{
    open_store, AuditQuery, EnrollmentPolicy, Origin, Registry, RegistryError, ScoreQuery, Scored,
    VoiceprintLabel,
};

const DIM: usize = 256;

fn model() -> ModelId {
    ModelId {
        name: "test-model".into(),
        sha256: "ab".repeat(32),
    }
}

fn me() -> Origin {
    Origin {
        actor: "test".into(),
        request_id: "req-1".into(),
        key: None,
    }
}

fn pg(cluster: &PgCluster) -> StoreLocation {
    StoreLocation::Postgres {
        url: cluster.url(),
        pool: PoolSettings::default(),
    }
}

fn open(location: &StoreLocation) -> Registry {
    Registry::open_at(location, &model(), DIM, EnrollmentPolicy::default()).unwrap()
}

/// A unit vector near axis `axis` (distinct axes are far apart: cosine about 0).
fn embedding(axis: usize, nudge: f32) -> Embedding {
    let mut vector = vec![nudge; DIM];
    vector[axis] = 1.0;
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    vector.iter_mut().for_each(|x| *x /= norm);
    Embedding {
        vector,
        duration_s: 10.0,
        voiced_s: 8.0,
        n_partials: 5,
    }
}

/// The same script of operations, with the answers the embedded store gives.
fn exercise(registry: &Registry) {
    let o = me();
    registry.create_artist(&o, "ana", "Ana").unwrap();
    registry.create_artist(&o, "bo", "Bo").unwrap();
    assert!(matches!(
        registry.create_artist(&o, "ana", "Again"),
        Err(RegistryError::AlreadyExists { .. })
    ));
    let first = registry
        .enroll(
            &o,
            "ana",
            VoiceprintLabel::Singing,
            "ref 1",
            &[embedding(1, 0.01)],
        )
        .unwrap();
    registry
        .enroll(
            &o,
            "ana",
            VoiceprintLabel::Speaking,
            "ref 2",
            &[embedding(1, 0.02)],
        )
        .unwrap();
    assert!(matches!(
        registry.enroll(
            &o,
            "ana",
            VoiceprintLabel::Other,
            "far",
            &[embedding(7, 0.0)]
        ),
        Err(RegistryError::Inconsistent { .. })
    ));
    assert!(matches!(
        registry.enroll(
            &o,
            "bo",
            VoiceprintLabel::Other,
            "look-alike",
            &[embedding(1, 0.015)]
        ),
        Err(RegistryError::Collision { .. })
    ));
    assert!(matches!(
        registry.enroll(
            &o,
            "nobody",
            VoiceprintLabel::Other,
            "x",
            &[embedding(3, 0.0)]
        ),
        Err(RegistryError::NotFound { .. })
    ));
    registry
        .enroll(
            &o,
            "bo",
            VoiceprintLabel::Speaking,
            "bo",
            &[embedding(2, 0.0)],
        )
        .unwrap();
    registry.grant(&o, "ana", "label-1", "contract").unwrap();
    registry.grant(&o, "ana", "label-1", "renewed").unwrap();
    registry.grant(&o, "bo", "label-2", "").unwrap();
    assert!(registry.is_authorized("ana", "label-1").unwrap());
    assert_eq!(registry.authorizations("ana").unwrap()[0].note, "renewed");
    registry.revoke(&o, "bo", "label-2").unwrap();
    assert!(matches!(
        registry.revoke(&o, "bo", "label-2"),
        Err(RegistryError::NotFound { .. })
    ));
    registry
        .delete_voiceprint(&o, &first.voiceprint.voiceprint_id)
        .unwrap();
    let (counts, _) = registry.delete_artist(&o, "bo").unwrap();
    assert_eq!((counts.voiceprints, counts.authorizations), (1, 0));
    let (page, total, more) = registry.list_artists(None, 10).unwrap();
    assert_eq!((page.len(), total, more), (1, 1, false));
    assert_eq!(page[0].voiceprints, 1);
    assert_eq!(page[0].authorizations, 1);
    // 2 artists + 3 enrollments + 3 grants + 1 revoke + 2 deletions.
    assert_eq!(registry.version(), 11);
    let (events, _) = registry
        .audit_events(&AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(events.len(), 11);
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.sequence == i as u64 + 1
            && e.registry_version == i as u64 + 1
            && e.actor == "test"));
    let verified = registry.verify().unwrap();
    assert_eq!((verified.artists, verified.voiceprints), (1, 1));
    keyed_writes_replay(registry);
}

/// [`me`] with the write key `request_id` over `asked`.
fn keyed(request_id: &str, asked: &str) -> Origin {
    Origin {
        key: Some(WriteKey {
            request_id: request_id.into(),
            fingerprint: asked.into(),
        }),
        ..me()
    }
}

/// A keyed enrollment and a keyed deletion, each retried: the retries get the first results
/// and change nothing; the key reused for other audio is refused. Ends at version 13.
fn keyed_writes_replay(registry: &Registry) {
    let enroll = keyed("k-enroll", "ana ref 4");
    let first = registry
        .enroll(
            &enroll,
            "ana",
            VoiceprintLabel::Speaking,
            "ref 4",
            &[embedding(1, 0.03)],
        )
        .unwrap();
    let again = registry
        .enroll(
            &enroll,
            "ana",
            VoiceprintLabel::Speaking,
            "ref 4",
            &[embedding(1, 0.03)],
        )
        .unwrap();
    assert_eq!(
        (&again.voiceprint.voiceprint_id, again.version),
        (&first.voiceprint.voiceprint_id, first.version)
    );
    assert!(matches!(
        registry.enroll(
            &keyed("k-enroll", "ana ref 5"),
            "ana",
            VoiceprintLabel::Speaking,
            "ref 5",
            &[embedding(1, 0.04)]
        ),
        Err(RegistryError::Invalid(_))
    ));
    let delete = keyed("k-delete", "delete ref 4");
    let version = registry
        .delete_voiceprint(&delete, &first.voiceprint.voiceprint_id)
        .unwrap();
    assert_eq!(
        registry
            .delete_voiceprint(&delete, &first.voiceprint.voiceprint_id)
            .unwrap(),
        version
    );
    assert_eq!(registry.version(), 13);
    assert_eq!(registry.voiceprints("ana").unwrap().len(), 1);
}

#[test]
fn registry_operations_behave_alike_on_both_stores() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    exercise(&open(&StoreLocation::Embedded(dir.path().to_path_buf())));
    let registry = open(&pg(&cluster));
    exercise(&registry);
    drop(registry);
    // Reopened, the index is rebuilt from the database, and keyed writes still replay.
    let again = open(&pg(&cluster));
    assert_eq!(again.version(), 13);
    let retried = keyed("k-delete", "delete ref 4");
    assert_eq!(
        again.delete_voiceprint(&retried, "vp-gone-by-now").unwrap(),
        13
    );
    assert_eq!(again.index_status().voiceprints, 1);
    again.verify().unwrap();
}

#[test]
fn replicas_follow_each_other_and_check_enrollments_against_each_other() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let a = Arc::new(open(&pg(&cluster)));
    let b = Arc::new(open(&pg(&cluster)));
    let o = me();
    a.create_artist(&o, "ana", "Ana").unwrap();
    b.create_artist(&o, "bo", "Bo").unwrap();
    // B has not heard of A's voiceprint (no follower yet): its checks run, the version moved
    // under them, and after catching up the collision with Ana is found.
    a.enroll(
        &o,
        "ana",
        VoiceprintLabel::Singing,
        "",
        &[embedding(1, 0.0)],
    )
    .unwrap();
    let refused = b.enroll(
        &o,
        "bo",
        VoiceprintLabel::Singing,
        "",
        &[embedding(1, 0.001)],
    );
    assert!(
        matches!(&refused, Err(RegistryError::Collision { other_artist_id, .. }) if other_artist_id == "ana"),
        "{refused:?}"
    );
    assert_eq!(b.index_status().voiceprints, 1);

    a.follow(|_| {}).unwrap();
    b.follow(|_| {}).unwrap();
    let wait_for = |r: &Registry, version: u64| {
        let start = Instant::now();
        while r.version() < version {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no catch-up to {version}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        start.elapsed()
    };
    let mut delays = Vec::new();
    for i in 0..20 {
        let enrolled = a
            .enroll(
                &o,
                "ana",
                VoiceprintLabel::Singing,
                &format!("{i}"),
                &[embedding(1, 0.001 * i as f32)],
            )
            .unwrap();
        delays.push(wait_for(&b, enrolled.version));
        assert!(b.is_indexed(&enrolled.voiceprint.voiceprint_id));
    }
    delays.sort();
    eprintln!(
        "sync delay A→B over 20 enrollments: median {:?}, max {:?}",
        delays[10], delays[19]
    );
    // Every connection of the replicas is cut, the listeners' too: B catches up on A's next
    // change once it has reconnected (or at its next poll).
    let rt = runtime();
    let (client, connection) = rt
        .block_on(tokio_postgres::connect(
            &cluster.url(),
            tokio_postgres::NoTls,
        ))
        .unwrap();
    rt.spawn(connection);
    let cut = rt
        .block_on(client.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'vocalguard' AND pid <> pg_backend_pid()",
            &[],
        ))
        .unwrap();
    assert!(cut >= 2, "{cut} connections cut");
    let enrolled = loop {
        match a.enroll(
            &o,
            "ana",
            VoiceprintLabel::Singing,
            "after",
            &[embedding(1, 0.05)],
        ) {
            Ok(e) => break e,
            Err(RegistryError::Unavailable(_)) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{e}"),
        }
    };
    let delay = wait_for(&b, enrolled.version);
    eprintln!("after the connections were cut, B caught up in {delay:?}");
    let version = b.delete_artist(&o, "ana").unwrap().1;
    wait_for(&a, version);
    assert_eq!(a.index_status().voiceprints, 0);
    a.verify().unwrap();
    b.verify().unwrap();
}

/// A screening's question to `registry`: one window near axis 0, for party `label`,
/// crediting `ana`.
fn score_ana(registry: &Registry) -> Scored {
    let window = embedding(0, 0.001).vector;
    registry
        .score(&ScoreQuery {
            windows: &[window.as_slice()],
            top_k: 10,
            as_norm: None,
            party_id: "label",
            artist_ids: &["ana".to_string()],
        })
        .unwrap()
}

#[test]
fn a_replica_answers_with_the_artists_and_grants_other_replicas_made() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let a = open(&pg(&cluster));
    let b = Arc::new(open(&pg(&cluster)));
    b.follow(|_| {}).unwrap();
    let o = me();
    a.create_artist(&o, "ana", "Ana").unwrap();
    a.enroll(
        &o,
        "ana",
        VoiceprintLabel::Singing,
        "",
        &[embedding(0, 0.0)],
    )
    .unwrap();
    a.create_artist(&o, "bo", "Bo").unwrap();
    a.grant(&o, "ana", "label", "").unwrap();
    let granted = a.version();
    let revoked = a.revoke(&o, "ana", "label").unwrap();
    // B's answers move from version to version, each with that version's authorization.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scored = score_ana(&b);
        assert!(scored.version <= revoked);
        if let Some(ana) = scored.artists.get("ana") {
            assert_eq!(ana.display_name, "Ana");
            assert_eq!(ana.party_authorized, scored.version == granted);
        }
        if scored.version == revoked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica B never reached {revoked}"
        );
        std::thread::yield_now();
    }
    assert_eq!(b.size(), (2, 1));
    // Opened afresh, the view is read from the tables; a replica that follows nothing still
    // answers at the store's version, catching up when asked.
    let c = open(&pg(&cluster));
    assert!(!score_ana(&c).artists["ana"].party_authorized);
    a.grant(&o, "ana", "label", "").unwrap();
    let scored = score_ana(&c);
    assert!(scored.artists["ana"].party_authorized);
    assert_eq!(scored.version, a.version());
}

#[test]
fn a_newer_schema_and_another_model_are_refused() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.url();
    let store = PgStore::connect(&url, &PoolSettings::default(), Some(&model())).unwrap();
    assert_eq!(store.version().unwrap(), 0);
    drop(store);
    let other = ModelId {
        name: "other".into(),
        sha256: "cd".repeat(32),
    };
    let mismatch = PgStore::connect(&url, &PoolSettings::default(), Some(&other))
        .err()
        .unwrap();
    assert!(
        matches!(mismatch, RegistryError::ModelMismatch { .. }),
        "{mismatch}"
    );

    // A later release migrated the database: this build must not write to it.
    let rt = runtime();
    let (client, connection) = rt
        .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(connection);
    rt.block_on(client.execute(
        "INSERT INTO schema_migrations (version, description) VALUES ($1, 'from the future')",
        &[&(migrations::latest() + 1)],
    ))
    .unwrap();
    let newer = PgStore::connect(&url, &PoolSettings::default(), Some(&model()))
        .err()
        .unwrap();
    let message = newer.to_string();
    assert!(message.contains("newer than this build"), "{message}");
}

#[test]
fn an_unreachable_database_is_unavailable_within_the_timeouts() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let registry = open(&pg(&cluster));
    registry.create_artist(&me(), "ana", "Ana").unwrap();
    cluster.stop();
    let start = Instant::now();
    let down = registry.create_artist(&me(), "bo", "Bo");
    assert!(
        matches!(down, Err(RegistryError::Unavailable(_))),
        "{down:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(
        registry.is_authorized("ana", "x"),
        Err(RegistryError::Unavailable(_))
    ));
    cluster.pg_start();
    let start = Instant::now();
    loop {
        match registry.create_artist(&me(), "bo", "Bo") {
            Ok(_) => break,
            Err(RegistryError::Unavailable(_)) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("after the restart: {e}"),
        }
    }
    registry.verify().unwrap();
    // Nothing of the failed attempt was written.
    assert_eq!(registry.version(), 2);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn vocalguard(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vocalguard"))
        .args(args)
        .env_remove("VOCALGUARD_REGISTRY")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) {
    let out = vocalguard(args);
    assert!(
        out.status.success(),
        "vocalguard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn export_and_import_move_a_registry_between_stores_without_loss() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let embedded = work.path().join("embedded");
    {
        let registry = open(&StoreLocation::Embedded(embedded.clone()));
        exercise(&registry);
        // Embeddings with values that print long, to prove exact f32 round trips.
        registry.create_artist(&me(), "cy", "Cy Ünïcödé").unwrap();
        let mut odd = embedding(9, 0.0);
        odd.vector
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v += (i as f32).sin() * 1e-7);
        registry
            .enroll(
                &me(),
                "cy",
                VoiceprintLabel::Other,
                "tab\there \"quoted\"",
                std::slice::from_ref(&odd),
            )
            .unwrap();
    }
    let url = cluster.url();
    let path = |name: &str| work.path().join(name);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&[
        "registry",
        "export",
        "--registry",
        &s(&embedded),
        "--out",
        &s(&path("1.jsonl")),
    ]);
    ok(&[
        "registry",
        "import",
        "--registry",
        &url,
        "--in",
        &s(&path("1.jsonl")),
    ]);
    ok(&[
        "registry",
        "export",
        "--registry",
        &url,
        "--out",
        &s(&path("2.jsonl")),
    ]);
    let back = work.path().join("back");
    ok(&[
        "registry",
        "import",
        "--registry",
        &s(&back),
        "--in",
        &s(&path("2.jsonl")),
    ]);
    ok(&[
        "registry",
        "export",
        "--registry",
        &s(&back),
        "--out",
        &s(&path("3.jsonl")),
    ]);
    let first = std::fs::read(path("1.jsonl")).unwrap();
    assert_eq!(
        first,
        std::fs::read(path("2.jsonl")).unwrap(),
        "embedded → PostgreSQL changed the dump"
    );
    assert_eq!(
        first,
        std::fs::read(path("3.jsonl")).unwrap(),
        "PostgreSQL → embedded changed the dump"
    );
    assert_eq!(
        String::from_utf8_lossy(&first).lines().count(),
        1 + 2 + 2 + 1 + 15
    );

    // The imported registries work: the PostgreSQL one serves and verifies.
    let imported = open(&pg(&cluster));
    assert_eq!(imported.version(), 15);
    assert_eq!(imported.index_status().voiceprints, 2);
    imported.verify().unwrap();
    drop(imported);

    // A registry that already holds something is never overwritten.
    let again = vocalguard(&[
        "registry",
        "import",
        "--registry",
        &url,
        "--in",
        &s(&path("1.jsonl")),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    // A truncated dump is refused before anything is written.
    let text = String::from_utf8(first).unwrap();
    let cut: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
    std::fs::write(path("cut.jsonl"), cut).unwrap();
    let truncated = vocalguard(&[
        "registry",
        "import",
        "--registry",
        &s(&work.path().join("cut")),
        "--in",
        &s(&path("cut.jsonl")),
    ]);
    assert!(!truncated.status.success());
    assert!(String::from_utf8_lossy(&truncated.stderr).contains("truncated"));
    assert!(open_store(&StoreLocation::Embedded(work.path().join("cut")), None).is_err());
}
