//! The registry through a real server on loopback: enrollment checks, durability across a
//! restart, the one-model rule, bad input, and the command-line client.

mod common;

use std::path::Path;
use std::process::Command;

use common::grpc::{
    enroll_first, enroll_set_messages, flac_files, speech_clip, test_other_speakers, wav_bytes,
    Clients,
};
use common::server::ServerProcess;
use tonic::Code;
use vocalguard::proto::*;

fn vocalguard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vocalguard"));
    c.env_remove("VOCALGUARD_MODEL");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_refuses_short_inconsistent_and_colliding_references() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let mut c = Clients::connect(&server.url()).await;
    let speakers = test_other_speakers(&root);
    let (a, a_files) = &speakers[0];
    let (_, b_files) = &speakers[2];
    c.create_artist("artist-a", &format!("Speaker {a}")).await;
    let (enrolled, rest) = enroll_first(&mut c, "artist-a", a_files, 2).await;

    let short = wav_bytes(
        &vocalguard::audio::load_file(&rest[0], &Default::default())
            .unwrap()
            .samples[..16_000],
        16_000,
    );
    let refused = c.enroll_bytes("artist-a", &short).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("voiced audio") && refused.message().contains("4.00 s"),
        "{}",
        refused.message()
    );

    let wrong = c.enroll("artist-a", &b_files[0]).await.unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition);
    assert!(
        wrong.message().contains("does not match artist 'artist-a'")
            && wrong.message().contains("best score 0."),
        "{}",
        wrong.message()
    );

    c.create_artist("impostor", "Impostor").await;
    let stolen = c.enroll("impostor", &rest[1]).await.unwrap_err();
    assert_eq!(stolen.code(), Code::FailedPrecondition);
    assert!(
        stolen.message().contains("'artist-a'")
            && stolen.message().contains(&format!("Speaker {a}")),
        "{}",
        stolen.message()
    );

    let listed = c
        .registry
        .list_voiceprints(ListVoiceprintsRequest {
            artist_id: "artist-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.voiceprints.len(),
        enrolled.len(),
        "refused references left nothing behind"
    );
    let impostor = c
        .registry
        .get_artist(GetArtistRequest {
            artist_id: "impostor".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(impostor.voiceprint_count, 0);

    let accepted = c.enroll("artist-a", &rest[1]).await.unwrap();
    assert!(accepted.consistency_score.unwrap() >= 0.72);
    assert_eq!(
        accepted.context.unwrap().model,
        vocalguard::encoder::source::DEFAULT_MODEL
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_short_references_protect_a_voice_none_of_them_could_alone() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let mut c = Clients::connect(&server.url()).await;
    let (speaker, files) = test_other_speakers(&root).remove(4);
    c.create_artist("short-clips", &format!("Speaker {speaker}"))
        .await;
    // 2 s from each of three utterances: each alone is under the 4 s minimum.
    let clips: Vec<Vec<u8>> = files[..3]
        .iter()
        .map(|f| speech_clip(std::slice::from_ref(f), 2.0))
        .collect();

    let alone = c.enroll_bytes("short-clips", &clips[0]).await.unwrap_err();
    assert_eq!(alone.code(), Code::FailedPrecondition);
    assert!(
        alone.message().contains("the reference has") && alone.message().contains("s more"),
        "{}",
        alone.message()
    );
    let two_short: Vec<Vec<u8>> = clips[..2]
        .iter()
        .map(|_| speech_clip(&files[..1], 1.0))
        .collect();
    let pair = c
        .enroll_references("short-clips", &two_short)
        .await
        .unwrap_err();
    assert_eq!(pair.code(), Code::FailedPrecondition);
    assert!(
        pair.message().contains("the 2 references have")
            && pair.message().contains("in total")
            && pair.message().contains("s more"),
        "{}",
        pair.message()
    );

    let mut trailing = enroll_set_messages("short-clips", &clips[..1]);
    trailing.push(EnrollVoiceprintRequest {
        part: Some(enroll_voiceprint_request::Part::NextReference(
            NextReference {},
        )),
    });
    let cut = c
        .registry
        .enroll_voiceprint(tokio_stream::iter(trailing))
        .await
        .unwrap_err();
    assert_eq!(cut.code(), Code::InvalidArgument);
    assert!(cut.message().contains("reference 2"), "{}", cut.message());

    let mut with_noise = clips.clone();
    with_noise.insert(1, b"not audio at all".to_vec());
    let bad = c
        .enroll_references("short-clips", &with_noise)
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{}", bad.message());
    assert!(
        bad.message().starts_with("reference 2 of 4:"),
        "{}",
        bad.message()
    );

    let enrolled = c.enroll_references("short-clips", &clips).await.unwrap();
    assert_eq!(enrolled.references, 3);
    assert!(enrolled.reference_agreement_score.is_some());
    let vp = enrolled.voiceprint.unwrap();
    assert!(vp.voiced_s >= 4.0 && vp.voiced_s <= 6.0, "{}", vp.voiced_s);
    let listed = c
        .registry
        .list_voiceprints(ListVoiceprintsRequest {
            artist_id: "short-clips".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.voiceprints.len(), 1, "one pooled voiceprint");

    let held_out = c.screen(&files[5], "someone-else").await;
    assert_eq!(
        common::grpc::decision(&held_out),
        "DECISION_UNAUTHORIZED_MATCH"
    );
    assert_eq!(held_out.matches[0].artist_id, "short-clips");

    // The command-line client sends several files in one enrollment.
    let dir = tempfile::tempdir().unwrap();
    let (other, other_files) = test_other_speakers(&root).remove(6);
    let paths: Vec<String> = other_files[..3]
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let path = dir.path().join(format!("clip-{i}.wav"));
            std::fs::write(&path, speech_clip(std::slice::from_ref(f), 2.0)).unwrap();
            path.to_string_lossy().into_owned()
        })
        .collect();
    c.create_artist("cli-clips", &format!("Speaker {other}"))
        .await;
    let out = vocalguard()
        .args(["enroll", "--artist", "cli-clips"])
        .args(&paths)
        .args(["--server", &server.url(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["references"], 3, "{reply}");
    assert_eq!(
        reply["voiceprint"]["description"],
        "clip-0.wav, clip-1.wav, clip-2.wav"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_survives_a_restart_and_refuses_another_model() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (_, files) = test_other_speakers(&root).remove(2);
    let held_out;
    let version;
    {
        let server = ServerProcess::start(data.path(), &[]);
        let mut c = Clients::connect(&server.url()).await;
        c.create_artist("keeper", "Keeper").await;
        let (_, rest) = enroll_first(&mut c, "keeper", &files, 2).await;
        held_out = rest
            .into_iter()
            .max_by_key(|f| std::fs::metadata(f).unwrap().len())
            .unwrap();
        let grant = c
            .registry
            .grant_authorization(GrantAuthorizationRequest {
                artist_id: "keeper".into(),
                party_id: "label-k".into(),
                note: String::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(grant.party_id, "label-k");
        version = c
            .screen(&held_out, "label-k")
            .await
            .context
            .unwrap()
            .registry_version;
        drop(c);
        assert!(server.terminate().success());
    }
    {
        let server = ServerProcess::start(data.path(), &[]);
        let mut c = Clients::connect(&server.url()).await;
        let artist = c
            .registry
            .get_artist(GetArtistRequest {
                artist_id: "keeper".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (artist.voiceprint_count, artist.authorization_count),
            (2, 1)
        );
        let again = c.screen(&held_out, "label-k").await;
        assert_eq!(
            again.decision,
            Decision::AuthorizedMatch as i32,
            "{}",
            again.explanation
        );
        assert_eq!(again.context.unwrap().registry_version, version);
        let other = c.screen(&held_out, "someone-else").await;
        assert_eq!(other.decision, Decision::UnauthorizedMatch as i32);
        drop(c);
        server.kill();
    }

    let model_dir = tempfile::tempdir().unwrap();
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ge2e-resemblyzer");
    std::fs::copy(
        builtin.join("model.safetensors"),
        model_dir.path().join("model.safetensors"),
    )
    .unwrap();
    let card = std::fs::read_to_string(builtin.join("model.json")).unwrap();
    let renamed = card.replacen("\"ge2e-resemblyzer\"", "\"ge2e-other\"", 1);
    assert_ne!(card, renamed);
    std::fs::write(model_dir.path().join("model.json"), renamed).unwrap();
    let refused = vocalguard()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--model",
        ])
        .arg(model_dir.path())
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains(&format!(
            "was built with model {}",
            vocalguard::encoder::source::DEFAULT_MODEL
        )) && stderr.contains("this server loaded ge2e-other")
            && stderr.contains("re-enroll"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_a_reason_and_the_server_keeps_serving() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &["--max-upload-bytes", "2000000"]);
    let mut c = Clients::connect(&server.url()).await;
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let flac = std::fs::read(&flac_files(&root.join("train-clean-100"))[0]).unwrap();
    let wav = wav_bytes(
        &vocalguard::audio::load_file(
            &flac_files(&root.join("train-clean-100"))[0],
            &Default::default(),
        )
        .unwrap()
        .samples,
        16_000,
    );
    let mut noise = vec![0u8; 50_000];
    let mut x: u32 = 12345;
    for b in &mut noise {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *b = (x >> 24) as u8;
    }
    let meta = |track: &str| TrackMetadata {
        track_id: track.into(),
        uploader_party_id: "p".into(),
        credited_artist_ids: vec![],
        ai_disclosure: AiDisclosure::None as i32,
    };
    let chunk = |b: &[u8]| ScreenRequest {
        part: Some(screen_request::Part::Chunk(AudioChunk { data: b.to_vec() })),
    };
    let head = |m: TrackMetadata| ScreenRequest {
        part: Some(screen_request::Part::Metadata(m)),
    };
    let cases: Vec<(&str, Vec<ScreenRequest>, Code)> = vec![
        (
            "random bytes",
            vec![head(meta("t")), chunk(&noise)],
            Code::InvalidArgument,
        ),
        (
            "text",
            vec![
                head(meta("t")),
                chunk(b"this is not audio at all, just words"),
            ],
            Code::InvalidArgument,
        ),
        (
            "truncated FLAC",
            vec![head(meta("t")), chunk(&flac[..flac.len() / 50])],
            Code::InvalidArgument,
        ),
        (
            "truncated WAV header",
            vec![head(meta("t")), chunk(&wav[..30])],
            Code::InvalidArgument,
        ),
        ("no audio", vec![head(meta("t"))], Code::InvalidArgument),
        ("empty stream", vec![], Code::InvalidArgument),
        (
            "chunk before metadata",
            vec![chunk(&wav), head(meta("t"))],
            Code::InvalidArgument,
        ),
        (
            "metadata twice",
            vec![head(meta("t")), head(meta("t")), chunk(&wav)],
            Code::InvalidArgument,
        ),
        (
            "empty message",
            vec![head(meta("t")), ScreenRequest { part: None }],
            Code::InvalidArgument,
        ),
        (
            "no track id",
            vec![head(meta("")), chunk(&wav)],
            Code::InvalidArgument,
        ),
        (
            "no disclosure",
            vec![
                head(TrackMetadata {
                    ai_disclosure: 0,
                    ..meta("t")
                }),
                chunk(&wav),
            ],
            Code::InvalidArgument,
        ),
        (
            "over the size limit",
            vec![
                head(meta("t")),
                chunk(&vec![0u8; 1_500_000]),
                chunk(&vec![0u8; 1_500_000]),
            ],
            Code::ResourceExhausted,
        ),
    ];
    for (name, messages, code) in cases {
        let status = c
            .screening
            .screen(tokio_stream::iter(messages))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(
            status.message().len() > 10,
            "{name}: no reason in {status:?}"
        );
        let served = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(served, 1, "health after {name}");
    }
    let clip = c
        .screening
        .screen_clip(ScreenClipRequest {
            metadata: Some(meta("clip")),
            audio: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(clip.code(), Code::InvalidArgument);
    let ok = c
        .screen_bytes("fine", &wav, "p", AiDisclosure::None)
        .await
        .unwrap();
    assert_eq!(ok.decision, Decision::NoMatch as i32);
    let silence = c
        .screen_bytes(
            "silence",
            &wav_bytes(&vec![0.0; 16_000 * 5], 16_000),
            "p",
            AiDisclosure::None,
        )
        .await
        .unwrap();
    assert_eq!(silence.decision, Decision::NoVoice as i32);

    let missing = c
        .registry
        .get_artist(GetArtistRequest {
            artist_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    c.create_artist("dup", "Dup").await;
    let dup = c
        .registry
        .create_artist(CreateArtistRequest {
            artist_id: "dup".into(),
            display_name: "Again".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let bad_id = c
        .registry
        .create_artist(CreateArtistRequest {
            artist_id: "no spaces/allowed".into(),
            display_name: "X".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    let orphan = c.enroll_bytes("nobody", &wav).await.unwrap_err();
    assert_eq!(orphan.code(), Code::NotFound);
    let revoke = c
        .registry
        .revoke_authorization(RevokeAuthorizationRequest {
            artist_id: "dup".into(),
            party_id: "never".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(revoke.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_client_drives_every_registry_call() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let url = server.url();
    let run = |args: &[&str]| -> serde_json::Value {
        let out = vocalguard()
            .args(args)
            .args(["--server", &url, "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let (_, files) = test_other_speakers(&root).remove(3);
    let paths: Vec<String> = files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    let created = run(&[
        "artist",
        "create",
        "--display-name",
        "CLI Artist",
        "--id",
        "cli-artist",
    ]);
    assert_eq!(created["artist_id"], "cli-artist");
    let mut enrolled = 0;
    for path in &paths[..4] {
        let out = vocalguard()
            .args([
                "enroll",
                "--artist",
                "cli-artist",
                "--label",
                "singing",
                path,
                "--server",
                &url,
                "--json",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(reply["voiceprint"]["label"], "VOICEPRINT_LABEL_SINGING");
            enrolled += 1;
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("FailedPrecondition") && err.contains("voiced audio"),
                "{err}"
            );
        }
    }
    assert!(enrolled >= 2);
    run(&[
        "authorize",
        "--artist",
        "cli-artist",
        "--party",
        "label-cli",
        "--note",
        "deal 1",
    ]);
    let grants = run(&["authorizations", "cli-artist"]);
    assert_eq!(grants["authorizations"][0]["note"], "deal 1");
    let listed = run(&["artist", "list", "--page-size", "10"]);
    assert_eq!(listed["total"], 1);
    let screened = run(&[
        "screen",
        &paths[6],
        "--uploader",
        "label-cli",
        "--ai-disclosure",
        "ai-generated",
        "--credit",
        "cli-artist",
    ]);
    assert_eq!(
        screened["decision"], "DECISION_AUTHORIZED_MATCH",
        "{screened}"
    );
    assert_eq!(screened["flags"][0], "FLAG_AUTHORIZED_AI_VOICE");
    let unary = run(&[
        "screen",
        &paths[6],
        "--uploader",
        "label-cli",
        "--ai-disclosure",
        "ai-generated",
        "--unary",
    ]);
    assert_eq!(
        unary["matches"][0]["aggregate_score"],
        screened["matches"][0]["aggregate_score"]
    );
    run(&["revoke", "--artist", "cli-artist", "--party", "label-cli"]);
    let after = run(&[
        "screen",
        &paths[6],
        "--uploader",
        "label-cli",
        "--ai-disclosure",
        "none",
    ]);
    assert_eq!(after["decision"], "DECISION_UNAUTHORIZED_MATCH");
    let prints = run(&["voiceprint", "list", "cli-artist"]);
    let first = prints["voiceprints"][0]["voiceprint_id"]
        .as_str()
        .unwrap()
        .to_string();
    run(&["voiceprint", "delete", &first]);
    let deleted = run(&["artist", "delete", "cli-artist"]);
    assert_eq!(deleted["voiceprints_deleted"], enrolled - 1);
    let gone = vocalguard()
        .args(["artist", "get", "cli-artist", "--server", &url])
        .output()
        .unwrap();
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
}
