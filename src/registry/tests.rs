//! The audit trail and purging, on real registry files in a temporary folder.

use std::path::Path;
use std::time::Duration;

use redb::{Database, TableDefinition};

use super::backend::RegistryStore;
use super::store::EmbeddedStore as Store;
use super::*;

const DIM: usize = 256;

fn model() -> ModelId {
    ModelId {
        name: "test-model".into(),
        sha256: "00".repeat(32),
    }
}

fn origin(actor: &str, request_id: &str) -> Origin {
    Origin {
        actor: actor.into(),
        request_id: request_id.into(),
        key: None,
    }
}

fn open(dir: &Path) -> Registry {
    Registry::open(dir, &model(), DIM, EnrollmentPolicy::default()).unwrap()
}

/// A unit vector along axis `axis`, nudged so that its text encoding is distinctive.
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

fn all_events(registry: &Registry) -> Vec<AuditEvent> {
    let query = AuditQuery {
        limit: usize::MAX - 1,
        ..AuditQuery::default()
    };
    let (events, more) = registry.audit_events(&query).unwrap();
    assert!(!more);
    events
}

/// How often the JSON text of `vector` (as the store encodes it) occurs in the file's bytes.
fn occurrences(path: &Path, vector: &[f32]) -> usize {
    let needle = serde_json::to_vec(vector).unwrap();
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(needle.len()).filter(|w| *w == needle).count()
}

#[test]
fn every_change_appends_one_event_in_its_transaction_and_refusals_none() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let admin = origin("admin-token", "req-1");
    registry.create_artist(&admin, "a", "Artist A").unwrap();
    registry.create_artist(&admin, "b", "Artist B").unwrap();
    let vp = registry
        .enroll(
            &origin("admin-token", "req-2"),
            "a",
            VoiceprintLabel::Singing,
            "",
            &[embedding(0, 0.01)],
        )
        .unwrap()
        .voiceprint
        .voiceprint_id;
    registry
        .grant(&origin("ops", "req-3"), "a", "label-1", "contract 7")
        .unwrap();
    let before = all_events(&registry).len();
    let refused = origin("ops", "req-refused");
    assert!(registry.create_artist(&refused, "a", "Again").is_err());
    assert!(registry.revoke(&refused, "a", "nobody").is_err());
    assert!(registry.delete_voiceprint(&refused, "vp-missing").is_err());
    assert!(registry.delete_artist(&refused, "missing").is_err());
    assert!(registry
        .enroll(
            &refused,
            "b",
            VoiceprintLabel::Speaking,
            "",
            &[embedding(0, 0.02)]
        )
        .is_err());
    assert_eq!(
        all_events(&registry).len(),
        before,
        "refusals write nothing"
    );
    registry
        .revoke(&origin("ops", "req-4"), "a", "label-1")
        .unwrap();
    registry
        .delete_voiceprint(&origin("ops", "req-5"), &vp)
        .unwrap();
    registry
        .delete_artist(&origin("ops", "req-6"), "a")
        .unwrap();

    let events = all_events(&registry);
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.sequence,
                e.action,
                e.artist_id.as_str(),
                e.voiceprint_id.as_deref(),
                e.party_id.as_deref(),
                e.actor.as_str(),
                e.request_id.as_str(),
                e.registry_version,
            )
        })
        .collect();
    use AuditAction::*;
    let vp = Some(vp.as_str());
    assert_eq!(
        summary,
        [
            (1, CreateArtist, "a", None, None, "admin-token", "req-1", 1),
            (2, CreateArtist, "b", None, None, "admin-token", "req-1", 2),
            (
                3,
                EnrollVoiceprint,
                "a",
                vp,
                None,
                "admin-token",
                "req-2",
                3
            ),
            (
                4,
                GrantAuthorization,
                "a",
                None,
                Some("label-1"),
                "ops",
                "req-3",
                4
            ),
            (
                5,
                RevokeAuthorization,
                "a",
                None,
                Some("label-1"),
                "ops",
                "req-4",
                5
            ),
            (6, DeleteVoiceprint, "a", vp, None, "ops", "req-5", 6),
            (7, DeleteArtist, "a", None, None, "ops", "req-6", 7),
        ]
    );
    assert_eq!(registry.version(), 7);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for pair in events.windows(2) {
        assert!(pair[0].at_unix_ms <= pair[1].at_unix_ms);
    }
    assert!((now_ms - events[0].at_unix_ms).abs() < 60_000);
}

#[test]
fn events_page_by_sequence_filter_by_artist_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let registry = open(dir.path());
        let o = origin("anonymous", "r");
        for id in ["a", "b", "c"] {
            registry.create_artist(&o, id, id).unwrap();
        }
        for party in ["p1", "p2", "p3"] {
            registry.grant(&o, "b", party, "").unwrap();
        }
        registry.delete_artist(&o, "b").unwrap();
    }
    let registry = open(dir.path());
    let every = all_events(&registry);
    assert_eq!(
        every.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );

    let page = |after_sequence, artist_id: Option<&str>, limit| {
        registry
            .audit_events(&AuditQuery {
                after_sequence,
                artist_id: artist_id.map(str::to_string),
                limit,
            })
            .unwrap()
    };
    let (first, more) = page(0, None, 3);
    assert_eq!(first, every[..3]);
    assert!(more);
    let (rest, more) = page(3, None, 10);
    assert_eq!(rest, every[3..]);
    assert!(!more);
    let (last, more) = page(4, None, 3);
    assert_eq!(last, every[4..]);
    assert!(!more, "exactly the last events: nothing more");

    let (of_b, more) = page(0, Some("b"), 100);
    assert!(!more);
    assert_eq!(
        of_b.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [2, 4, 5, 6, 7],
        "the deleted artist's history stays"
    );
    let (of_b_later, more) = page(4, Some("b"), 2);
    assert_eq!(
        of_b_later.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [5, 6]
    );
    assert!(more);
    assert!(page(0, Some("nobody"), 10).0.is_empty());
    assert_eq!(page(0, Some("a"), 10).0, every[..1]);
}

#[test]
fn a_plain_delete_leaves_the_bytes_and_the_purge_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Registry::FILE_NAME);
    let (kept, doomed) = (embedding(1, 0.0123), embedding(2, 0.0456));
    let doomed_id;
    {
        let registry = open(dir.path());
        let o = origin("anonymous", "r");
        registry.create_artist(&o, "a", "A").unwrap();
        registry.create_artist(&o, "b", "B").unwrap();
        registry
            .enroll(
                &o,
                "a",
                VoiceprintLabel::Speaking,
                "",
                std::slice::from_ref(&kept),
            )
            .unwrap();
        doomed_id = registry
            .enroll(
                &o,
                "b",
                VoiceprintLabel::Speaking,
                "",
                std::slice::from_ref(&doomed),
            )
            .unwrap()
            .voiceprint
            .voiceprint_id;
    }
    assert!(occurrences(&path, &doomed.vector) > 0);
    {
        // The store alone deletes without purging: the bytes stay, marked for purging.
        let store = Store::open(&path, &model()).unwrap();
        store
            .delete_voiceprint(&origin("anonymous", "r"), None, &doomed_id)
            .unwrap();
        assert!(store.purge_pending().unwrap());
        assert!(store.view_contents().unwrap().voiceprints.len() == 1);
        assert!(
            occurrences(&path, &doomed.vector) > 0,
            "redb keeps a deleted record's bytes in freed pages"
        );
    }
    // Opening finishes the pending purge.
    let registry = open(dir.path());
    assert_eq!(occurrences(&path, &doomed.vector), 0);
    assert_eq!(occurrences(&path, &kept.vector), 1);
    assert!(!registry.store().purge_pending().unwrap());
    assert_eq!(registry.mirror.read().index.len(), 1);
    assert_eq!(all_events(&registry).len(), 5, "the purge keeps the trail");
    assert!(!scratch_left(dir.path()));

    // Through the registry, a delete purges at once.
    registry
        .delete_artist(&origin("anonymous", "r2"), "a")
        .unwrap();
    assert_eq!(occurrences(&path, &kept.vector), 0);
    assert!(!registry.store().purge_pending().unwrap());
    assert_eq!(registry.mirror.read().index.len(), 0);
    assert!(registry
        .mirror
        .store()
        .view_contents()
        .unwrap()
        .voiceprints
        .is_empty());
    // Writes after the purge land in the new file and survive reopening.
    registry
        .create_artist(&origin("anonymous", "r3"), "c", "C")
        .unwrap();
    drop(registry);
    let registry = open(dir.path());
    assert!(registry.find_artist("c").unwrap().is_some());
    assert_eq!(all_events(&registry).len(), 7);
    assert_eq!(registry.version(), 7);
}

fn scratch_left(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .any(|e| e.unwrap().file_name() != Registry::FILE_NAME)
}

#[test]
fn a_schema_1_file_is_migrated_and_keeps_its_records() {
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    const ARTISTS: TableDefinition<&str, &[u8]> = TableDefinition::new("artists");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Registry::FILE_NAME);
    {
        // The layout the schema-1 store wrote.
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx.open_table(META).unwrap();
            meta.insert("schema_version", 1u64.to_le_bytes().as_slice())
                .unwrap();
            meta.insert("model_name", model().name.as_bytes()).unwrap();
            meta.insert("model_sha256", model().sha256.as_bytes())
                .unwrap();
            meta.insert("version", 1u64.to_le_bytes().as_slice())
                .unwrap();
            let artist = Artist {
                artist_id: "old".into(),
                display_name: "Old".into(),
                created_at_unix_s: 1,
            };
            tx.open_table(ARTISTS)
                .unwrap()
                .insert("old", serde_json::to_vec(&artist).unwrap().as_slice())
                .unwrap();
            for name in ["voiceprints", "authorizations"] {
                tx.open_table(TableDefinition::<&str, &[u8]>::new(name))
                    .unwrap();
            }
            tx.open_table(TableDefinition::<&str, &str>::new("voiceprint_owners"))
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let registry = open(dir.path());
    assert_eq!(
        registry.find_artist("old").unwrap().unwrap().display_name,
        "Old"
    );
    assert!(all_events(&registry).is_empty());
    registry
        .grant(&origin("anonymous", "r"), "old", "p", "")
        .unwrap();
    let events = all_events(&registry);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].registry_version, 2);
    drop(registry);
    let db = Database::open(&path).unwrap();
    let tx = db.begin_read().unwrap();
    let meta = tx.open_table(META).unwrap();
    let schema = meta.get("schema_version").unwrap().unwrap();
    assert_eq!(schema.value(), 3u64.to_le_bytes());
}

#[test]
fn the_leftover_of_an_interrupted_purge_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path())
        .create_artist(&origin("anonymous", "r"), "a", "A")
        .unwrap();
    let scratch = dir.path().join(format!("{}.rewrite", Registry::FILE_NAME));
    std::fs::write(&scratch, b"half a registry").unwrap();
    let registry = open(dir.path());
    assert!(!scratch.exists());
    assert!(registry.find_artist("a").unwrap().is_some());
}

/// Creates artists `a0`… `a{n-1}` with one voiceprint each along their own axis.
fn enroll_artists(registry: &Registry, o: &Origin, n: usize) {
    for a in 0..n {
        let artist = format!("a{a}");
        registry.create_artist(o, &artist, "A").unwrap();
        registry
            .enroll(
                o,
                &artist,
                VoiceprintLabel::Speaking,
                "",
                &[embedding(a, 0.01)],
            )
            .unwrap();
    }
}

#[test]
fn a_rebuild_keeps_the_changes_made_while_it_was_built() {
    let dir = tempfile::tempdir().unwrap();
    let config = index::SearchConfig {
        approximate_above: 3,
        build_threads: 1,
        ..index::SearchConfig::default()
    };
    let registry = open(dir.path()).with_search(config);
    let o = origin("admin", "r");
    enroll_artists(&registry, &o, 6);
    assert!(!registry.mirror.read().index.is_approximate());
    let pending = registry
        .mirror
        .prepare_rebuild()
        .expect("6 voiceprints are above 3");
    assert_eq!(pending.rows.ids.len(), 6);
    // Changes while the graph is built: an enrollment, a voiceprint and an artist deleted.
    registry.create_artist(&o, "late", "Late").unwrap();
    let late = registry
        .enroll(
            &o,
            "late",
            VoiceprintLabel::Speaking,
            "",
            &[embedding(10, 0.02)],
        )
        .unwrap();
    let doomed = registry.voiceprints("a1").unwrap()[0].voiceprint_id.clone();
    registry.delete_voiceprint(&o, &doomed).unwrap();
    registry.delete_artist(&o, "a2").unwrap();
    let built = index::SearchIndex::build(DIM, pending.config, pending.rows, &|_| {});
    let (replayed, version) = registry.mirror.swap_in(built, pending.from).unwrap();
    assert_eq!(replayed, 4, "an artist, its enrollment, two deletions");
    assert_eq!(version, registry.version());
    let snapshot = registry.mirror.read();
    assert!(snapshot.index.is_approximate());
    assert_eq!(snapshot.index.len(), 5);
    assert!(snapshot.index.embedding(&doomed).is_none());
    let hit = &snapshot.index.top_k(&embedding(10, 0.02).vector, 1)[0];
    assert_eq!(hit.voiceprint_id, late.voiceprint.voiceprint_id);
    drop(snapshot);
    registry.verify().unwrap();
}

#[test]
fn the_index_builder_switches_to_the_graph_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = index::SearchConfig {
        approximate_above: 3,
        build_threads: 1,
        ..index::SearchConfig::default()
    };
    let registry = Arc::new(open(dir.path()).with_search(config));
    let (tx, rx) = std::sync::mpsc::channel();
    registry
        .maintain_index(move |status| {
            let _ = tx.send(status);
        })
        .unwrap();
    let o = origin("admin", "r");
    enroll_artists(&registry, &o, 5);
    let wait = || loop {
        rx.recv_timeout(Duration::from_secs(120))
            .expect("the builder reports a rebuild");
        if !registry.mirror.read().index.needs_rebuild() {
            return registry.index_status();
        }
    };
    let status = wait();
    assert!(status.approximate);
    assert_eq!(registry.index_status().voiceprints, 5);
    registry.verify().unwrap();
    for a in 0..3 {
        registry.delete_artist(&o, &format!("a{a}")).unwrap();
    }
    let status = wait();
    assert!(!status.approximate, "2 voiceprints: exact again");
    assert_eq!(status.voiceprints, 2);
    assert_eq!(status.deleted, 0);
    registry.verify().unwrap();
}

/// Runs `f` with the query of a screening with one window near axis 0, for party `label`,
/// crediting `a`.
fn with_query_a<T>(f: impl FnOnce(&ScoreQuery<'_>) -> T) -> T {
    let window = embedding(0, 0.02).vector;
    f(&ScoreQuery {
        windows: &[window.as_slice()],
        top_k: 10,
        as_norm: None,
        party_id: "label",
        artist_ids: &["a".to_string()],
    })
}

/// [`with_query_a`]'s answer.
fn score_a(registry: &Registry) -> Scored {
    with_query_a(|query| registry.score(query).unwrap())
}

/// Creates artist `a` ("Artist A") with one voiceprint near axis 0.
fn create_a(registry: &Registry, admin: &Origin) {
    registry.create_artist(admin, "a", "Artist A").unwrap();
    registry
        .enroll(
            admin,
            "a",
            VoiceprintLabel::Singing,
            "",
            &[embedding(0, 0.01)],
        )
        .unwrap();
}

#[test]
fn a_grant_committed_while_an_answer_is_read_shows_in_the_next_answer_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let registry = std::sync::Arc::new(open(dir.path()));
    let admin = origin("admin", "req");
    create_a(&registry, &admin);
    let before = registry.version();
    let mut granting = None;
    let scored = with_query_a(|query| {
        registry.score_pausing(query, || {
            let r = std::sync::Arc::clone(&registry);
            granting = Some(std::thread::spawn(move || {
                r.grant(&origin("admin", "req-grant"), "a", "label", "")
                    .unwrap()
            }));
            // Between scoring and reading the authorizations, the grant commits to the store.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while registry.mirror.store().version().unwrap() == before {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the grant never committed"
                );
                std::thread::yield_now();
            }
            assert!(registry.is_authorized("a", "label").unwrap());
        })
    });
    assert_eq!(scored.windows[0][0].0, "a");
    assert_eq!(scored.version, before);
    assert!(!scored.artists["a"].party_authorized);
    assert_eq!(scored.artists["a"].display_name, "Artist A");
    granting.unwrap().join().unwrap();
    let after = score_a(&registry);
    assert_eq!(after.version, before + 1);
    assert!(after.artists["a"].party_authorized);
}

#[test]
fn every_answer_s_authorization_is_the_one_of_the_version_it_reports() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let admin = origin("admin", "req");
    create_a(&registry, &admin);
    let first = registry.version();
    // From `first` on, odd steps grant and even steps revoke.
    let toggles = 100;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..toggles {
                if i % 2 == 0 {
                    registry.grant(&admin, "a", "label", "").unwrap();
                } else {
                    registry.revoke(&admin, "a", "label").unwrap();
                }
            }
        });
        loop {
            let scored = score_a(&registry);
            let step = scored.version - first;
            assert_eq!(
                scored.artists["a"].party_authorized,
                step % 2 == 1,
                "at version {}",
                scored.version
            );
            if step == toggles {
                break;
            }
        }
    });
}

#[test]
fn the_view_follows_artists_and_grants_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let admin = origin("admin", "req");
    {
        let registry = open(dir.path());
        create_a(&registry, &admin);
        registry.create_artist(&admin, "b", "Artist B").unwrap();
        registry.grant(&admin, "a", "label", "").unwrap();
        registry.grant(&admin, "b", "label", "").unwrap();
        registry.delete_artist(&admin, "b").unwrap();
        assert_eq!(registry.size(), (1, 1));
    }
    let registry = open(dir.path());
    assert_eq!(registry.size(), (1, 1));
    let scored = score_a(&registry);
    assert_eq!(scored.artists.len(), 1);
    assert_eq!(scored.artists["a"].display_name, "Artist A");
    assert!(scored.artists["a"].party_authorized);
    registry.revoke(&admin, "a", "label").unwrap();
    assert!(!score_a(&registry).artists["a"].party_authorized);
}

/// `embedding` with `voiced_s` seconds of voice.
fn voiced(axis: usize, nudge: f32, voiced_s: f64) -> Embedding {
    Embedding {
        voiced_s,
        ..embedding(axis, nudge)
    }
}

#[test]
fn several_short_references_enroll_as_one_pooled_voiceprint() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let o = origin("admin", "r");
    registry.create_artist(&o, "a", "Artist A").unwrap();
    let min = EnrollmentPolicy::default().min_voiced_s;
    let short = [
        voiced(0, 0.01, min * 0.4),
        voiced(0, 0.02, min * 0.4),
        voiced(0, 0.03, min * 0.4),
    ];
    let enrolled = registry
        .enroll(&o, "a", VoiceprintLabel::Singing, "x", &short)
        .unwrap();
    assert_eq!(enrolled.references, 3);
    assert!(enrolled.reference_agreement.unwrap() > 0.9);
    assert!((enrolled.voiceprint.voiced_s - min * 1.2).abs() < 1e-9);
    assert_eq!(registry.voiceprints("a").unwrap().len(), 1);

    let single = registry
        .enroll(
            &o,
            "a",
            VoiceprintLabel::Singing,
            "",
            &[voiced(0, 0.04, min)],
        )
        .unwrap();
    assert_eq!((single.references, single.reference_agreement), (1, None));
}

#[test]
fn a_set_short_of_voice_says_how_much_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let o = origin("admin", "r");
    registry.create_artist(&o, "a", "Artist A").unwrap();
    let min = EnrollmentPolicy::default().min_voiced_s;
    let refused = registry
        .enroll(
            &o,
            "a",
            VoiceprintLabel::Singing,
            "",
            &[voiced(0, 0.01, min / 4.0), voiced(0, 0.02, min / 4.0)],
        )
        .unwrap_err();
    let message = refused.to_string();
    assert!(
        matches!(refused, RegistryError::TooLittleVoice { references: 2, .. }),
        "{message}"
    );
    assert!(
        message.contains("2 references")
            && message.contains(&format!("add {:.2} s more", min / 2.0)),
        "{message}"
    );
    assert!(registry.voiceprints("a").unwrap().is_empty());
}

#[test]
fn a_reference_of_another_voice_spoils_the_set() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let o = origin("admin", "r");
    registry.create_artist(&o, "a", "Artist A").unwrap();
    let refused = registry
        .enroll(
            &o,
            "a",
            VoiceprintLabel::Singing,
            "",
            &[embedding(0, 0.01), embedding(5, 0.01), embedding(0, 0.02)],
        )
        .unwrap_err();
    assert!(
        matches!(
            refused,
            RegistryError::ReferencesDisagree {
                index: 1,
                references: 3,
                ..
            }
        ),
        "{refused}"
    );
    assert!(
        refused.to_string().starts_with("reference 2 of 3"),
        "{refused}"
    );
    assert!(registry.voiceprints("a").unwrap().is_empty());
}

/// `actor`'s origin carrying the write key `request_id` over `asked`.
fn keyed(actor: &str, request_id: &str, asked: &str) -> Origin {
    Origin {
        key: Some(replay::WriteKey {
            request_id: request_id.into(),
            fingerprint: asked.into(),
        }),
        ..origin(actor, "req")
    }
}

#[test]
fn a_retried_keyed_write_returns_the_first_result_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let create = keyed("admin", "k-create", "create a");
    let artist = registry.create_artist(&create, "a", "Artist A").unwrap();
    assert_eq!(
        registry.create_artist(&create, "a", "Artist A").unwrap(),
        artist,
        "not ALREADY_EXISTS: the retry gets the first result"
    );
    let enroll = keyed("admin", "k-enroll", "enroll a");
    let first = registry
        .enroll(
            &enroll,
            "a",
            VoiceprintLabel::Speaking,
            "",
            &[embedding(0, 0.01)],
        )
        .unwrap();
    let events = all_events(&registry).len();
    drop(registry);

    let registry = open(dir.path());
    let again = registry
        .enroll(
            &enroll,
            "a",
            VoiceprintLabel::Speaking,
            "",
            &[embedding(0, 0.01)],
        )
        .unwrap();
    assert_eq!(
        again.voiceprint.voiceprint_id,
        first.voiceprint.voiceprint_id
    );
    assert_eq!(again.version, first.version);
    assert_eq!(again.consistency_score, first.consistency_score);
    assert!(
        again.voiceprint.embedding.is_empty(),
        "no embedding kept outside its record"
    );
    assert_eq!(
        Enrolled {
            voiceprint: Voiceprint {
                embedding: first.voiceprint.embedding.clone(),
                ..again.voiceprint.clone()
            },
            ..again.clone()
        },
        first
    );
    assert_eq!(registry.voiceprints("a").unwrap().len(), 1);
    assert_eq!(
        all_events(&registry).len(),
        events,
        "the retries wrote nothing"
    );

    // The same key for something else is refused; another caller's key is its own.
    let reused = registry
        .enroll(
            &keyed("admin", "k-enroll", "enroll a, other audio"),
            "a",
            VoiceprintLabel::Speaking,
            "",
            &[embedding(0, 0.02)],
        )
        .unwrap_err();
    assert!(matches!(reused, RegistryError::Invalid(_)), "{reused}");
    let other = registry
        .enroll(
            &keyed("ops", "k-enroll", "enroll a"),
            "a",
            VoiceprintLabel::Speaking,
            "",
            &[embedding(0, 0.02)],
        )
        .unwrap();
    assert_ne!(
        other.voiceprint.voiceprint_id,
        first.voiceprint.voiceprint_id
    );

    // Deletions replay too, and the purge that follows them keeps the keys.
    let delete = keyed("admin", "k-delete", "delete vp");
    let version = registry
        .delete_voiceprint(&delete, &first.voiceprint.voiceprint_id)
        .unwrap();
    assert_eq!(
        registry
            .delete_voiceprint(&delete, &first.voiceprint.voiceprint_id)
            .unwrap(),
        version,
        "not NOT_FOUND: the retry gets the first result"
    );
    let grant = keyed("admin", "k-grant", "grant");
    let granted = registry.grant(&grant, "a", "label", "n").unwrap();
    assert_eq!(registry.grant(&grant, "a", "label", "n").unwrap(), granted);
    let revoke = keyed("admin", "k-revoke", "revoke");
    let revoked = registry.revoke(&revoke, "a", "label").unwrap();
    assert_eq!(registry.revoke(&revoke, "a", "label").unwrap(), revoked);
    let remove = keyed("admin", "k-remove", "delete a");
    let removed = registry.delete_artist(&remove, "a").unwrap();
    assert_eq!(removed.0.voiceprints, 1);
    drop(registry);
    let registry = open(dir.path());
    assert_eq!(registry.delete_artist(&remove, "a").unwrap(), removed);
    assert_eq!(
        registry.create_artist(&create, "a", "Artist A").unwrap(),
        artist
    );
    assert!(registry.artist("a").is_err(), "a replay changes nothing");
}
