//! The decision policy on constructed evidence.

use super::*;

fn upload(disclosure: AiDisclosure, credited: &[&str]) -> Upload {
    Upload {
        track_id: "t1".into(),
        uploader_party_id: "label-x".into(),
        credited_artist_ids: credited.iter().map(|s| s.to_string()).collect(),
        ai_disclosure: disclosure,
    }
}

fn evidence(id: &str, matched: bool, authorized: bool, credited: bool) -> ArtistMatch {
    ArtistMatch {
        artist_id: id.into(),
        display_name: id.to_uppercase(),
        matched,
        uploader_authorized: authorized,
        credited,
        best_score: 0.9,
        aggregate_score: if matched { 0.85 } else { 0.7 },
        matching_windows: if matched { 4 } else { 0 },
        matched_voiced_share: 0.5,
        time_ranges: Vec::new(),
        aggregate_llr: None,
        llr_above_match: None,
        hubness: None,
    }
}

fn run(matches: &[ArtistMatch], voiced_s: f64, up: &Upload) -> (Decision, Vec<Flag>, String) {
    decide(
        matches,
        voiced_s,
        up,
        &up.credited_artist_ids,
        &ScreeningConfig::default(),
    )
}

#[test]
fn unauthorized_voice_without_disclosure_is_flagged_as_undisclosed() {
    let (d, flags, why) = run(
        &[evidence("ada", true, false, false)],
        30.0,
        &upload(AiDisclosure::None, &[]),
    );
    assert_eq!(d, Decision::UnauthorizedMatch);
    assert!(flags.contains(&Flag::UndisclosedProtectedVoice));
    assert!(flags.contains(&Flag::UncreditedProtectedVoice));
    assert!(
        why.contains("ADA (ada)") && why.contains("declares no AI"),
        "{why}"
    );
}

#[test]
fn disclosed_ai_imitation_without_consent_is_impersonation() {
    let (d, flags, _) = run(
        &[evidence("ada", true, false, true)],
        30.0,
        &upload(AiDisclosure::AiGeneratedVocals, &["ada"]),
    );
    assert_eq!(d, Decision::UnauthorizedMatch);
    assert_eq!(flags, vec![Flag::DisclosedAiImpersonation]);
}

#[test]
fn authorized_only_when_every_matched_artist_authorizes() {
    let up = upload(AiDisclosure::AiGeneratedVocals, &[]);
    let (d, flags, _) = run(&[evidence("ada", true, true, false)], 30.0, &up);
    assert_eq!(d, Decision::AuthorizedMatch);
    assert!(flags.contains(&Flag::AuthorizedAiVoice));
    let (d, _, why) = run(
        &[
            evidence("ada", true, true, false),
            evidence("bo", true, false, false),
        ],
        30.0,
        &up,
    );
    assert_eq!(d, Decision::UnauthorizedMatch);
    assert!(why.contains("BO (bo)") && !why.contains("ADA"), "{why}");
}

#[test]
fn grey_band_short_audio_and_silence() {
    let up = upload(AiDisclosure::None, &[]);
    assert_eq!(
        run(&[evidence("ada", false, false, false)], 30.0, &up).0,
        Decision::NeedsReview(ReviewReason::GreyBand)
    );
    assert_eq!(
        run(&[evidence("ada", true, false, false)], 1.0, &up).0,
        Decision::NeedsReview(ReviewReason::InsufficientVoice)
    );
    assert_eq!(run(&[], 0.0, &up).0, Decision::NoVoice);
    assert_eq!(run(&[], 30.0, &up).0, Decision::NoMatch);
}

#[test]
fn a_credited_artist_not_heard_is_flagged() {
    let up = upload(AiDisclosure::None, &["ada"]);
    let (d, flags, _) = run(&[], 30.0, &up);
    assert_eq!(d, Decision::NoMatch);
    assert_eq!(flags, vec![Flag::CreditedArtistNotFound]);
}

#[test]
fn config_validation_catches_inverted_thresholds() {
    let bad = ScreeningConfig {
        review_threshold: 0.9,
        match_threshold: 0.8,
        ..ScreeningConfig::default()
    };
    assert!(bad.validate(false).is_err());
    assert!(ScreeningConfig::default().validate(false).is_ok());
    let normalised = ScreeningConfig {
        match_threshold: 4.0,
        review_threshold: 3.0,
        ..ScreeningConfig::default()
    };
    assert!(normalised.validate(false).is_err());
    assert!(normalised.validate(true).is_ok());
}

#[test]
fn severity_puts_an_unauthorized_match_first_and_no_voice_last() {
    let order = [
        Decision::UnauthorizedMatch,
        Decision::NeedsReview(ReviewReason::GreyBand),
        Decision::AuthorizedMatch,
        Decision::NoMatch,
        Decision::NoVoice,
    ];
    for pair in order.windows(2) {
        assert!(pair[0].severity() > pair[1].severity(), "{pair:?}");
    }
}

#[test]
fn dc_offset_is_the_mean_sample() {
    assert_eq!(dc_offset(&[]), 0.0);
    assert!((dc_offset(&[0.5, 0.1, 0.3]) - 0.3).abs() < 1e-7);
}

#[test]
fn a_negative_dc_rescreen_bound_is_refused() {
    let config = ScreeningConfig {
        dc_offset_rescreen: -0.1,
        ..ScreeningConfig::default()
    };
    assert!(config.validate(false).is_err());
}
