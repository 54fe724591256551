//! The audit trail and purging through a real server on loopback: every change leaves one
//! event with the caller and the request id the client saw, refusals leave none, the trail
//! pages, filters and survives a restart; deletions leave no embedding in the registry file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::grpc::{enroll_first, enroll_messages, test_other_speakers, wav_bytes, Clients};
use common::server::ServerProcess;
use tonic::{Code, Request, Response};
use vocalguard::encoder::ModelId;
use vocalguard::proto::*;
use vocalguard::registry::backend::RegistryStore;
use vocalguard::registry::store::EmbeddedStore as Store;
use vocalguard::registry::{AuditQuery, Registry};

/// `message` as a request carrying `x-request-id: id`.
fn with_id<T>(message: T, id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

/// The `x-request-id` the server answered with.
fn request_id<T>(response: &Response<T>) -> String {
    response
        .metadata()
        .get("x-request-id")
        .expect("x-request-id in the response")
        .to_str()
        .unwrap()
        .to_string()
}

/// Every event matching `artist` (empty: all), read with `page_size` and the page tokens.
async fn read_trail(c: &mut Clients, artist: &str, page_size: u32) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .registry
            .list_audit_events(ListAuditEventsRequest {
                page_size,
                page_token: page_token.clone(),
                after_sequence: 0,
                artist_id: artist.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= page_size as usize);
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

fn sequences(events: &[AuditEvent]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

/// Enrolls the first of `files` the server accepts, each attempt with request id
/// `enroll-N`; returns the response and the request id of the accepted attempt.
async fn enroll_one(
    c: &mut Clients,
    artist: &str,
    files: &[PathBuf],
) -> (EnrollVoiceprintResponse, String) {
    for (i, file) in files.iter().enumerate() {
        let id = format!("enroll-{i}");
        let messages = enroll_messages(artist, &std::fs::read(file).unwrap());
        match c
            .registry
            .enroll_voiceprint(with_id(tokio_stream::iter(messages), &id))
            .await
        {
            Ok(response) => {
                assert_eq!(request_id(&response), id);
                return (response.into_inner(), id);
            }
            Err(s) if s.code() == Code::FailedPrecondition => continue,
            Err(s) => panic!("enrolling {}: {s:?}", file.display()),
        }
    }
    panic!("no reference of {artist} was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_records_each_change_with_caller_and_request_id_and_survives_a_restart() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (_, files) = test_other_speakers(&root).remove(0);
    let server = ServerProcess::start(data.path(), &[]);
    let mut c = Clients::connect(&server.url()).await;

    let created = c
        .registry
        .create_artist(with_id(
            CreateArtistRequest {
                artist_id: "alpha".into(),
                display_name: "Alpha".into(),
                ..Default::default()
            },
            "client-req-1",
        ))
        .await
        .unwrap();
    assert_eq!(request_id(&created), "client-req-1");
    let created_beta = c
        .registry
        .create_artist(CreateArtistRequest {
            artist_id: "beta".into(),
            display_name: "Beta".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let beta_request = request_id(&created_beta);
    assert_eq!(beta_request.len(), 16, "a fresh server-assigned id");

    // Refused changes leave no event.
    let duplicate = c
        .registry
        .create_artist(CreateArtistRequest {
            artist_id: "alpha".into(),
            display_name: "Again".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let samples = vocalguard::audio::load_file(&files[0], &Default::default())
        .unwrap()
        .samples;
    let short = wav_bytes(&samples[..16_000], 16_000);
    let refused = c.enroll_bytes("alpha", &short).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        read_trail(&mut c, "", 100).await.len(),
        2,
        "only the two creations"
    );

    let (enrolled, enroll_request) = enroll_one(&mut c, "alpha", &files).await;
    let voiceprint_id = enrolled.voiceprint.unwrap().voiceprint_id;
    assert_eq!(enrolled.context.unwrap().registry_version, 3);
    c.registry
        .grant_authorization(with_id(
            GrantAuthorizationRequest {
                artist_id: "alpha".into(),
                party_id: "label-x".into(),
                note: "contract 12".into(),
                ..Default::default()
            },
            "grant-1",
        ))
        .await
        .unwrap();
    let revoked = c
        .registry
        .revoke_authorization(with_id(
            RevokeAuthorizationRequest {
                artist_id: "alpha".into(),
                party_id: "label-x".into(),
                ..Default::default()
            },
            "revoke-1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.registry_version, 5);
    let deleted_vp = c
        .registry
        .delete_voiceprint(with_id(
            DeleteVoiceprintRequest {
                voiceprint_id: voiceprint_id.clone(),
                ..Default::default()
            },
            "delete-vp-1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted_vp.registry_version, 6);
    let deleted_beta = c
        .registry
        .delete_artist(with_id(
            DeleteArtistRequest {
                artist_id: "beta".into(),
                ..Default::default()
            },
            "delete-beta",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted_beta.registry_version, 7);

    let trail = read_trail(&mut c, "", 100).await;
    let seen: Vec<_> = trail
        .iter()
        .map(|e| {
            (
                e.sequence,
                AuditAction::try_from(e.action).unwrap(),
                e.artist_id.as_str(),
                e.voiceprint_id.as_str(),
                e.party_id.as_str(),
                e.request_id.as_str(),
                e.registry_version,
            )
        })
        .collect();
    let vp = voiceprint_id.as_str();
    assert_eq!(
        seen,
        [
            (
                1,
                AuditAction::CreateArtist,
                "alpha",
                "",
                "",
                "client-req-1",
                1
            ),
            (
                2,
                AuditAction::CreateArtist,
                "beta",
                "",
                "",
                beta_request.as_str(),
                2
            ),
            (
                3,
                AuditAction::EnrollVoiceprint,
                "alpha",
                vp,
                "",
                enroll_request.as_str(),
                3
            ),
            (
                4,
                AuditAction::GrantAuthorization,
                "alpha",
                "",
                "label-x",
                "grant-1",
                4
            ),
            (
                5,
                AuditAction::RevokeAuthorization,
                "alpha",
                "",
                "label-x",
                "revoke-1",
                5
            ),
            (
                6,
                AuditAction::DeleteVoiceprint,
                "alpha",
                vp,
                "",
                "delete-vp-1",
                6
            ),
            (
                7,
                AuditAction::DeleteArtist,
                "beta",
                "",
                "",
                "delete-beta",
                7
            ),
        ]
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for e in &trail {
        assert_eq!(e.actor, "anonymous");
        assert!(e.time_unix_ms <= now_ms && now_ms - e.time_unix_ms < 600_000);
    }

    // Paging and filters.
    assert_eq!(read_trail(&mut c, "", 3).await, trail);
    assert_eq!(read_trail(&mut c, "", 1).await, trail);
    assert_eq!(sequences(&read_trail(&mut c, "beta", 1).await), [2, 7]);
    assert_eq!(
        sequences(&read_trail(&mut c, "alpha", 2).await),
        [1, 3, 4, 5, 6]
    );
    assert!(read_trail(&mut c, "nobody", 10).await.is_empty());
    let after = c
        .registry
        .list_audit_events(ListAuditEventsRequest {
            after_sequence: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sequences(&after.events), [6, 7]);
    assert!(after.next_page_token.is_empty());
    let bad = c
        .registry
        .list_audit_events(ListAuditEventsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // The command-line client.
    let out = cli(
        &server.url(),
        &["--artist", "alpha", "--limit", "2", "--json"],
    );
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["action"], "AUDIT_ACTION_ENROLL_VOICEPRINT");
    assert_eq!(events[1]["voiceprint_id"], vp);
    assert_eq!(page["next_page_token"], "3");
    let text = cli(&server.url(), &["--after", "5"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("6\t")
            && lines[0].contains("\tanonymous\tdelete-vp-1\tdelete_voiceprint\talpha\tvoiceprint ")
            && lines[0].ends_with("\tversion 6"),
        "{text}"
    );

    // The trail survives a restart and goes on from where it was.
    assert!(server.terminate().success());
    let server = ServerProcess::start(data.path(), &[]);
    let mut c = Clients::connect(&server.url()).await;
    assert_eq!(read_trail(&mut c, "", 100).await, trail);
    c.create_artist("gamma", "Gamma").await;
    let last = read_trail(&mut c, "gamma", 10).await;
    assert_eq!(sequences(&last), [8]);
    assert_eq!(last[0].registry_version, 8);
    assert!(server.terminate().success());
}

/// Runs `vocalguard audit --server URL ARGS` and returns its stdout.
fn cli(url: &str, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vocalguard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VOCALGUARD_") {
            command.env_remove(key);
        }
    }
    let out = command
        .args(["audit", "--server", url])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vocalguard audit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The store's encoding of an embedding (JSON, as the voiceprint record holds it), cut into
/// 48-byte pieces: a piece found in a file means some of the embedding is still there.
fn pieces(embedding: &[f32]) -> Vec<Vec<u8>> {
    serde_json::to_vec(embedding)
        .unwrap()
        .chunks(48)
        .filter(|c| c.len() == 48)
        .map(<[u8]>::to_vec)
        .collect()
}

/// How many of `pieces` occur in the bytes of `path`.
fn found_in(path: &Path, pieces: &[Vec<u8>]) -> usize {
    let bytes = std::fs::read(path).unwrap();
    pieces
        .iter()
        .filter(|p| bytes.windows(p.len()).any(|w| w == p.as_slice()))
        .count()
}

/// Whether a screening response names `artist` among its matches at all.
fn names(response: &ScreenResponse, artist: &str) -> bool {
    response.matches.iter().any(|m| m.artist_id == artist)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_leaves_no_embedding_in_the_file_nor_a_match() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join(Registry::FILE_NAME);
    let speakers = test_other_speakers(&root);
    let (_, p_files) = &speakers[1];
    let (_, q_files) = &speakers[3];

    let server = ServerProcess::start(data.path(), &[]);
    let mut c = Clients::connect(&server.url()).await;
    c.create_artist("purged", "Purged").await;
    c.create_artist("kept", "Kept").await;
    let (_, rest) = enroll_first(&mut c, "purged", p_files, 2).await;
    enroll_first(&mut c, "kept", q_files, 1).await;
    let held_out = rest
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    let before = c.screen(&held_out, "nobody").await;
    assert!(
        before
            .matches
            .iter()
            .any(|m| m.artist_id == "purged" && m.matched),
        "the artist's own held-out recording matches before the deletion: {before:?}"
    );
    let context = before.context.unwrap();
    let model = ModelId {
        name: context.model,
        sha256: context.model_sha256,
    };
    let mut log = server.log_text();
    assert!(server.terminate().success());

    let (purged, kept) = {
        let store = Store::open(&file, &model).unwrap();
        let embeddings = |artist| {
            store
                .voiceprints_of(artist)
                .unwrap()
                .into_iter()
                .map(|v| (v.voiceprint_id, pieces(&v.embedding)))
                .collect::<Vec<_>>()
        };
        (embeddings("purged"), embeddings("kept"))
    };
    assert_eq!((purged.len(), kept.len()), (2, 1));
    for (id, pieces) in purged.iter().chain(&kept) {
        assert_eq!(
            found_in(&file, pieces),
            pieces.len(),
            "{id} is stored in the file"
        );
    }

    let server = ServerProcess::start(data.path(), &[]);
    let mut c = Clients::connect(&server.url()).await;
    c.registry
        .delete_voiceprint(DeleteVoiceprintRequest {
            voiceprint_id: purged[0].0.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        found_in(&file, &purged[0].1),
        0,
        "the deleted voiceprint left the file at once"
    );
    let deleted = c
        .registry
        .delete_artist(DeleteArtistRequest {
            artist_id: "purged".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.voiceprints_deleted, 1);
    let after = c.screen(&held_out, "nobody").await;
    assert!(
        !names(&after, "purged"),
        "the deleted artist is no longer matched: {after:?}"
    );
    log.push_str(&server.log_text());
    assert!(server.terminate().success());
    for (id, pieces) in purged.iter().chain(&kept) {
        let logged = pieces
            .iter()
            .any(|p| log.contains(std::str::from_utf8(p).unwrap()));
        assert!(!logged, "the server log holds part of {id}'s embedding");
    }

    for (id, pieces) in &purged {
        assert_eq!(found_in(&file, pieces), 0, "{id} is gone from the file");
    }
    assert_eq!(
        found_in(&file, &kept[0].1),
        kept[0].1.len(),
        "the other artist's voiceprint is untouched"
    );
    let leftovers: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != Registry::FILE_NAME)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let store = Store::open(&file, &model).unwrap();
    assert!(store.artist("purged").unwrap().is_none());
    assert!(store.voiceprints_of("purged").unwrap().is_empty());
    let remaining: Vec<_> = store
        .view_contents()
        .unwrap()
        .voiceprints
        .into_iter()
        .map(|v| v.voiceprint_id)
        .collect();
    assert_eq!(remaining, [kept[0].0.clone()]);
    let (history, _) = store
        .audit_events(&AuditQuery {
            artist_id: Some("purged".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    let actions: Vec<_> = history.iter().map(|e| e.action).collect();
    use vocalguard::registry::AuditAction as A;
    assert_eq!(
        actions,
        [
            A::CreateArtist,
            A::EnrollVoiceprint,
            A::EnrollVoiceprint,
            A::DeleteVoiceprint,
            A::DeleteArtist
        ],
        "the history of the deleted artist stays"
    );
}
