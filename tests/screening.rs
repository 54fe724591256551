//! Screening through a real server on loopback with real speech from librispeech-mini:
//! enrolled speakers are caught, authorized uploads pass, strangers do not match, and the
//! evidence points at the right part of a track.

mod common;

use common::grpc::{decision, enroll_first, flac_files, test_other_speakers, wav_bytes, Clients};
use common::server::ServerProcess;
use vocalguard::audio::{load_file, DecodeLimits};
use vocalguard::proto::{AiDisclosure, ReviewReason, ScreenResponse};

/// Speakers enrolled, references per speaker, held-out tracks per speaker.
const SPEAKERS: usize = 4;
const REFERENCES: usize = 3;
const HELD_OUT: usize = 3;
const STRANGERS: usize = 16;

fn top_artist(r: &ScreenResponse) -> &str {
    r.matches.first().map_or("", |m| m.artist_id.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_voices_are_caught_authorized_uploads_pass_and_strangers_do_not_match() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let mut clients = Clients::connect(&server.url()).await;

    let mut held_out = Vec::new();
    for (speaker, files) in test_other_speakers(&root).into_iter().take(SPEAKERS) {
        let artist = format!("spk-{speaker}");
        clients
            .create_artist(&artist, &format!("Speaker {speaker}"))
            .await;
        let (_, rest) = enroll_first(&mut clients, &artist, &files, REFERENCES).await;
        clients
            .registry
            .grant_authorization(vocalguard::proto::GrantAuthorizationRequest {
                artist_id: artist.clone(),
                party_id: "label-authorized".into(),
                note: "test grant".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        held_out.extend(rest.into_iter().take(HELD_OUT).map(|f| (artist.clone(), f)));
    }

    let mut report = Vec::new();
    let mut decided = 0;
    for (artist, file) in &held_out {
        let unauthorized = clients.screen(file, "uploader-unknown").await;
        let min_voiced_s = unauthorized.thresholds.as_ref().unwrap().min_voiced_s as f64;
        if unauthorized.voiced_s < min_voiced_s {
            assert_eq!(decision(&unauthorized), "DECISION_NEEDS_REVIEW");
            assert_eq!(
                unauthorized.review_reason,
                ReviewReason::InsufficientVoice as i32
            );
            report.push(format!(
                "{}: too short ({:.2} s voiced)",
                file.display(),
                unauthorized.voiced_s
            ));
            continue;
        }
        decided += 1;
        let authorized = clients.screen(file, "label-authorized").await;
        report.push(format!(
            "{} ({artist}): {} / {} top {} agg {:.3}",
            file.display(),
            decision(&unauthorized),
            decision(&authorized),
            top_artist(&unauthorized),
            unauthorized
                .matches
                .first()
                .map_or(-1.0, |m| m.aggregate_score)
        ));
        assert_eq!(
            decision(&unauthorized),
            "DECISION_UNAUTHORIZED_MATCH",
            "{}: {}",
            file.display(),
            unauthorized.explanation
        );
        assert_eq!(top_artist(&unauthorized), artist);
        assert!(!unauthorized.matches[0].uploader_authorized);
        // The model card's calibration: every candidate's LLR, and the rates the thresholds
        // stand for.
        assert!(unauthorized.matches[0].aggregate_llr.unwrap() > 0.0);
        assert!(unauthorized
            .matches
            .iter()
            .all(|m| m.aggregate_llr.is_some()));
        // Every candidate's neighbourhood among the other enrolled artists is stated; none of
        // these audiobook voices is a hub.
        assert!(unauthorized.matches.iter().all(|m| {
            let hub = m.hubness.as_ref().unwrap();
            hub.other_artists as usize == SPEAKERS - 1 && !hub.is_hub && hub.near_rate == 0.01
        }));
        // A match lies above the match point, a grey-band candidate below it.
        assert!(unauthorized.matches.iter().all(|m| {
            let margin = m.llr_above_match.unwrap();
            if m.matched {
                margin >= 0.0
            } else {
                margin < 0.0
            }
        }));
        let thresholds = unauthorized.thresholds.as_ref().unwrap();
        let match_rate = thresholds.match_false_alarm_rate.unwrap();
        assert!((5e-6..2e-5).contains(&match_rate), "{match_rate}");
        assert!(thresholds.review_false_alarm_rate.unwrap() > match_rate);
        assert_eq!(decision(&authorized), "DECISION_AUTHORIZED_MATCH");
        assert_eq!(top_artist(&authorized), artist);
        assert!(authorized.matches[0].uploader_authorized);
        let context = unauthorized.context.as_ref().unwrap();
        assert_eq!(context.model, vocalguard::encoder::source::DEFAULT_MODEL);
        assert_eq!(context.model_sha256.len(), 64);
        assert!(context.registry_version >= (SPEAKERS * (REFERENCES + 2)) as u64);
    }

    assert!(
        decided + 2 >= held_out.len(),
        "only {decided} of {} held-out tracks had enough voice",
        held_out.len()
    );

    let strangers: Vec<_> = flac_files(&root.join("train-clean-100"))
        .into_iter()
        .take(STRANGERS)
        .collect();
    let mut no_match = 0;
    for file in &strangers {
        let r = clients.screen(file, "uploader-unknown").await;
        report.push(format!(
            "{}: {} top {}",
            file.display(),
            decision(&r),
            top_artist(&r)
        ));
        assert!(
            r.matches.iter().all(|m| !m.matched),
            "a never-enrolled speaker matched: {}: {}",
            file.display(),
            r.explanation
        );
        match decision(&r) {
            "DECISION_NO_MATCH" => no_match += 1,
            "DECISION_NEEDS_REVIEW" => assert_eq!(r.review_reason, ReviewReason::GreyBand as i32),
            other => panic!("{}: unexpected {other}", file.display()),
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        no_match * 10 >= strangers.len() * 8,
        "only {no_match} of {} strangers had NO_MATCH",
        strangers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_covers_the_enrolled_speaker_in_a_mixed_track() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &[]);
    let mut clients = Clients::connect(&server.url()).await;
    let (speaker, files) = test_other_speakers(&root).remove(1);
    let artist = format!("spk-{speaker}");
    clients.create_artist(&artist, "Enrolled").await;
    let (_, rest) = enroll_first(&mut clients, &artist, &files, REFERENCES).await;

    let limits = DecodeLimits::default();
    let longest = |files: &[std::path::PathBuf]| {
        files
            .iter()
            .map(|f| load_file(f, &limits).unwrap().samples)
            .max_by_key(|s| s.len())
            .unwrap()
    };
    let stranger = longest(&flac_files(&root.join("train-clean-100"))[..6]);
    let enrolled = longest(&rest);
    let rate = 16_000.0;
    let start = stranger.len() as f64 / rate;
    let end = start + enrolled.len() as f64 / rate;
    let mut track = stranger;
    track.extend(&enrolled);
    track.extend(std::iter::repeat_n(0.0, 5 * 16_000));
    let r = clients
        .screen_bytes(
            "mixed",
            &wav_bytes(&track, 16_000),
            "uploader-unknown",
            AiDisclosure::AiGeneratedVocals,
        )
        .await
        .unwrap();
    assert_eq!(
        decision(&r),
        "DECISION_UNAUTHORIZED_MATCH",
        "{}",
        r.explanation
    );
    let m = &r.matches[0];
    assert_eq!(m.artist_id, artist);
    let hop = r.thresholds.as_ref().unwrap().hop_s as f64;
    let first = m.time_ranges.first().unwrap().start_s;
    let last = m.time_ranges.last().unwrap().end_s;
    eprintln!(
        "enrolled part {start:.2}-{end:.2} s, evidence {:?}, hop {hop:.2} s",
        m.time_ranges
            .iter()
            .map(|t| (t.start_s, t.end_s))
            .collect::<Vec<_>>()
    );
    assert!(
        (first - start).abs() <= hop,
        "evidence starts at {first:.2}, the voice at {start:.2}"
    );
    assert!(
        (last - end).abs() <= hop,
        "evidence ends at {last:.2}, the voice at {end:.2}"
    );
    assert!(m.matched_voiced_share > 0.2 && m.matched_voiced_share < 0.9);
    assert!(r.duration_s > end + 4.9);
    assert!(r
        .flags
        .contains(&(vocalguard::proto::Flag::DisclosedAiImpersonation as i32)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calibration_and_an_as_norm_cohort_from_eval_drive_the_server() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_string_lossy().into_owned();
    let strangers = flac_files(&root.join("train-clean-100"));
    let cohort_files: Vec<String> = strangers[8..]
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    let mut embed_args = vec!["embed"];
    embed_args.extend(cohort_files.iter().map(String::as_str));
    std::fs::write(path("cohort.jsonl"), common::run_vocalguard(&embed_args)).unwrap();
    let test_other = root.join("test-other").to_string_lossy().into_owned();
    common::run_vocalguard(&[
        "eval",
        "--trials",
        &test_other,
        "--cohort",
        &path("cohort.jsonl"),
        "--out",
        &path("eval"),
        "--cache-dir",
        &path("cache"),
        "--bootstrap",
        "10",
    ]);
    common::run_vocalguard(&[
        "calibrate",
        &format!("{}/scores.txt", path("eval")),
        "--target-fa-rate",
        "0.001",
        "--out",
        &path("calibration.json"),
    ]);
    let calibration: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path("calibration.json")).unwrap()).unwrap();
    let threshold = calibration["threshold"].as_f64().unwrap();
    let review = format!("{}", threshold - 1.0);

    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data.path(),
        &[
            "--calibration",
            &path("calibration.json"),
            "--as-norm-cohort",
            &path("cohort.jsonl"),
            "--review-threshold",
            &review,
        ],
    );
    let mut clients = Clients::connect(&server.url()).await;
    let (speaker, files) = test_other_speakers(&root).remove(4);
    let artist = format!("spk-{speaker}");
    clients.create_artist(&artist, "Calibrated").await;
    let (_, rest) = enroll_first(&mut clients, &artist, &files, REFERENCES).await;
    let held_out = rest
        .iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    let caught = clients.screen(held_out, "uploader-unknown").await;
    let thresholds = caught.thresholds.as_ref().unwrap();
    assert!((f64::from(thresholds.r#match) - threshold).abs() < 1e-4);
    assert_eq!(
        decision(&caught),
        "DECISION_UNAUTHORIZED_MATCH",
        "{}",
        caught.explanation
    );
    let m = &caught.matches[0];
    assert_eq!(m.artist_id, artist);
    assert!(m.aggregate_llr.unwrap() > 0.0, "{m:?}");
    for stranger in &strangers[..4] {
        let r = clients.screen(stranger, "uploader-unknown").await;
        assert!(r.matches.iter().all(|m| !m.matched), "{}", r.explanation);
    }
}
