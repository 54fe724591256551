//! Conversions between wire types and core types, and from core errors to gRPC statuses with
//! a reason a person can read.

use tonic::Status;

use super::pool::PoolError;
use crate::audio::AudioError;
use crate::embed::EmbedError;
use crate::proto;
use crate::registry::{self, ArtistSummary, AuditAction, RegistryError, VoiceprintLabel};
use crate::scoring::hubness::NEAR_RATE;
use crate::screening::{self, AiDisclosure, Decision, Flag, ReviewReason, ScreeningError, Verdict};

/// The longest track id, in characters.
pub const MAX_TRACK_ID_CHARS: usize = 256;

/// The most artists one upload may credit.
pub const MAX_CREDITED_ARTISTS: usize = 100;

/// A registry error as a status.
pub fn registry_status(e: RegistryError) -> Status {
    let message = e.to_string();
    match e {
        RegistryError::NotFound { .. } => Status::not_found(message),
        RegistryError::AlreadyExists { .. } => Status::already_exists(message),
        RegistryError::Invalid(_) => Status::invalid_argument(message),
        RegistryError::TooLittleVoice { .. }
        | RegistryError::ReferencesDisagree { .. }
        | RegistryError::Inconsistent { .. }
        | RegistryError::Collision { .. }
        | RegistryError::ModelMismatch { .. } => Status::failed_precondition(message),
        RegistryError::AlreadyApplied => Status::aborted(message),
        RegistryError::Unavailable(_) | RegistryError::Stale => {
            tracing::warn!(error = %message, "registry unavailable");
            Status::unavailable(message)
        }
        RegistryError::Storage(_) | RegistryError::Corrupt(_) => {
            tracing::error!(error = %message, "registry failure");
            Status::internal(message)
        }
    }
}

/// An audio error as a status: bad input is the client's, an I/O failure the server's.
pub fn audio_status(e: AudioError) -> Status {
    match e {
        AudioError::Io { .. } => Status::internal(e.to_string()),
        _ => Status::invalid_argument(format!("unusable audio: {e}")),
    }
}

/// An embedding error as a status; `min_voiced_s` is the enrollment minimum, reported when a
/// reference holds no voice at all.
pub fn embed_status(e: EmbedError, min_voiced_s: f64) -> Status {
    match e {
        EmbedError::Audio(a) => audio_status(a),
        EmbedError::NoVoice { duration_s } => Status::failed_precondition(format!(
            "the reference has 0.00 s of voiced audio in {duration_s:.2} s; at least {min_voiced_s:.2} s is needed"
        )),
        e @ EmbedError::TooShort { .. } => Status::failed_precondition(e.to_string()),
        other => {
            tracing::error!(error = %other, "embedding failure");
            Status::internal(other.to_string())
        }
    }
}

/// A screening error as a status.
pub fn screening_status(e: ScreeningError) -> Status {
    match e {
        ScreeningError::Embed(e) => embed_status(e, 0.0),
        ScreeningError::Registry(e) => registry_status(e),
    }
}

/// A pool refusal as a status.
pub fn pool_status(e: PoolError) -> Status {
    match e {
        PoolError::Busy { .. } => Status::resource_exhausted(e.to_string()),
        PoolError::Expired => Status::deadline_exceeded(e.to_string()),
        PoolError::Stopped => Status::unavailable(e.to_string()),
    }
}

/// Wire artist from a summary.
pub fn artist(s: ArtistSummary) -> proto::Artist {
    proto::Artist {
        artist_id: s.artist.artist_id,
        display_name: s.artist.display_name,
        created_at_unix_s: s.artist.created_at_unix_s,
        voiceprint_count: s.voiceprints,
        authorization_count: s.authorizations,
    }
}

/// Wire voiceprint (without its embedding).
pub fn voiceprint(v: registry::Voiceprint) -> proto::Voiceprint {
    proto::Voiceprint {
        voiceprint_id: v.voiceprint_id,
        artist_id: v.artist_id,
        label: match v.label {
            VoiceprintLabel::Speaking => proto::VoiceprintLabel::Speaking,
            VoiceprintLabel::Singing => proto::VoiceprintLabel::Singing,
            VoiceprintLabel::Other => proto::VoiceprintLabel::Other,
        } as i32,
        description: v.description,
        voiced_s: v.voiced_s,
        duration_s: v.duration_s,
        created_at_unix_s: v.created_at_unix_s,
    }
}

/// Core label from the wire; unspecified or unknown is refused.
pub fn label(value: i32) -> Result<VoiceprintLabel, Status> {
    match proto::VoiceprintLabel::try_from(value) {
        Ok(proto::VoiceprintLabel::Speaking) => Ok(VoiceprintLabel::Speaking),
        Ok(proto::VoiceprintLabel::Singing) => Ok(VoiceprintLabel::Singing),
        Ok(proto::VoiceprintLabel::Other) => Ok(VoiceprintLabel::Other),
        _ => Err(Status::invalid_argument(
            "label must be VOICEPRINT_LABEL_SPEAKING, _SINGING or _OTHER",
        )),
    }
}

/// Wire authorization.
pub fn authorization(a: registry::Authorization) -> proto::Authorization {
    proto::Authorization {
        artist_id: a.artist_id,
        party_id: a.party_id,
        note: a.note,
        granted_at_unix_s: a.granted_at_unix_s,
    }
}

/// Wire audit event.
pub fn audit_event(e: registry::AuditEvent) -> proto::AuditEvent {
    let action = match e.action {
        AuditAction::CreateArtist => proto::AuditAction::CreateArtist,
        AuditAction::DeleteArtist => proto::AuditAction::DeleteArtist,
        AuditAction::EnrollVoiceprint => proto::AuditAction::EnrollVoiceprint,
        AuditAction::DeleteVoiceprint => proto::AuditAction::DeleteVoiceprint,
        AuditAction::GrantAuthorization => proto::AuditAction::GrantAuthorization,
        AuditAction::RevokeAuthorization => proto::AuditAction::RevokeAuthorization,
    };
    proto::AuditEvent {
        sequence: e.sequence,
        time_unix_ms: e.at_unix_ms,
        actor: e.actor,
        request_id: e.request_id,
        action: action as i32,
        artist_id: e.artist_id,
        voiceprint_id: e.voiceprint_id.unwrap_or_default(),
        party_id: e.party_id.unwrap_or_default(),
        registry_version: e.registry_version,
    }
}

/// Core upload description from wire metadata, checked.
pub fn upload(m: proto::TrackMetadata) -> Result<screening::Upload, Status> {
    if m.track_id.is_empty()
        || m.track_id.chars().count() > MAX_TRACK_ID_CHARS
        || m.track_id.chars().any(char::is_control)
    {
        return Err(Status::invalid_argument(format!(
            "metadata.track_id must be 1-{MAX_TRACK_ID_CHARS} printable characters, got {}",
            crate::echo::quote(&m.track_id)
        )));
    }
    registry::validate_party(&m.uploader_party_id)
        .map_err(|e| Status::invalid_argument(format!("metadata.uploader_party_id: {e}")))?;
    if m.credited_artist_ids.len() > MAX_CREDITED_ARTISTS {
        return Err(Status::invalid_argument(format!(
            "metadata.credited_artist_ids: at most {MAX_CREDITED_ARTISTS} credited artists, got {}",
            m.credited_artist_ids.len()
        )));
    }
    for (i, id) in m.credited_artist_ids.iter().enumerate() {
        registry::validate_artist_id(id).map_err(|e| {
            Status::invalid_argument(format!("metadata.credited_artist_ids[{i}]: {e}"))
        })?;
    }
    let ai_disclosure = match proto::AiDisclosure::try_from(m.ai_disclosure) {
        Ok(proto::AiDisclosure::None) => AiDisclosure::None,
        Ok(proto::AiDisclosure::AiAssisted) => AiDisclosure::AiAssisted,
        Ok(proto::AiDisclosure::AiGeneratedVocals) => AiDisclosure::AiGeneratedVocals,
        _ => {
            return Err(Status::invalid_argument(
                "metadata.ai_disclosure is required: AI_DISCLOSURE_NONE, _AI_ASSISTED or _AI_GENERATED_VOCALS",
            ))
        }
    };
    Ok(screening::Upload {
        track_id: m.track_id,
        uploader_party_id: m.uploader_party_id,
        credited_artist_ids: m.credited_artist_ids,
        ai_disclosure,
    })
}

/// Wire decision name pieces.
fn decision(d: Decision) -> (proto::Decision, proto::ReviewReason) {
    match d {
        Decision::UnauthorizedMatch => (
            proto::Decision::UnauthorizedMatch,
            proto::ReviewReason::Unspecified,
        ),
        Decision::AuthorizedMatch => (
            proto::Decision::AuthorizedMatch,
            proto::ReviewReason::Unspecified,
        ),
        Decision::NoMatch => (proto::Decision::NoMatch, proto::ReviewReason::Unspecified),
        Decision::NoVoice => (proto::Decision::NoVoice, proto::ReviewReason::Unspecified),
        Decision::NeedsReview(ReviewReason::GreyBand) => {
            (proto::Decision::NeedsReview, proto::ReviewReason::GreyBand)
        }
        Decision::NeedsReview(ReviewReason::InsufficientVoice) => (
            proto::Decision::NeedsReview,
            proto::ReviewReason::InsufficientVoice,
        ),
    }
}

fn flag(f: Flag) -> proto::Flag {
    match f {
        Flag::UndisclosedProtectedVoice => proto::Flag::UndisclosedProtectedVoice,
        Flag::DisclosedAiImpersonation => proto::Flag::DisclosedAiImpersonation,
        Flag::UncreditedProtectedVoice => proto::Flag::UncreditedProtectedVoice,
        Flag::CreditedArtistNotFound => proto::Flag::CreditedArtistNotFound,
        Flag::AuthorizedAiVoice => proto::Flag::AuthorizedAiVoice,
        Flag::DcOffsetRemoved => proto::Flag::DcOffsetRemoved,
        Flag::HubVoiceprint => proto::Flag::HubVoiceprint,
    }
}

/// The wire answer for a screened track.
pub fn screen_response(
    track_id: String,
    v: Verdict,
    context: proto::ScoringContext,
    scoring: &screening::Scoring,
) -> proto::ScreenResponse {
    let config = &scoring.config;
    let false_alarm_at = |threshold: f64| {
        scoring
            .calibration
            .as_ref()
            .and_then(|c| c.false_alarm_at(threshold))
    };
    let (decision, review_reason) = decision(v.decision);
    proto::ScreenResponse {
        track_id,
        decision: decision as i32,
        review_reason: review_reason as i32,
        explanation: v.explanation,
        matches: v
            .matches
            .into_iter()
            .map(|m| proto::ArtistMatch {
                artist_id: m.artist_id,
                display_name: m.display_name,
                matched: m.matched,
                uploader_authorized: m.uploader_authorized,
                credited: m.credited,
                best_score: m.best_score,
                aggregate_score: m.aggregate_score,
                matching_windows: m.matching_windows as u32,
                matched_voiced_share: m.matched_voiced_share as f32,
                aggregate_llr: m.aggregate_llr.map(|l| l as f32),
                llr_above_match: m.llr_above_match.map(|l| l as f32),
                hubness: m.hubness.map(|h| proto::Hubness {
                    near_score: h.near_score as f32,
                    near_rate: NEAR_RATE,
                    artists_near: h.artists_near as u32,
                    other_artists: h.other_artists as u32,
                    expected_near: h.expected_near as f32,
                    p_value: h.p_value,
                    is_hub: h.is_hub,
                }),
                time_ranges: m
                    .time_ranges
                    .into_iter()
                    .map(|r| proto::TimeRange {
                        start_s: r.start,
                        end_s: r.end,
                    })
                    .collect(),
            })
            .collect(),
        flags: v.flags.into_iter().map(|f| flag(f) as i32).collect(),
        duration_s: v.duration_s,
        voiced_s: v.voiced_s,
        windows: v.windows as u32,
        context: Some(context),
        thresholds: Some(proto::Thresholds {
            r#match: config.match_threshold as f32,
            review: config.review_threshold as f32,
            min_voiced_s: config.min_voiced_s as f32,
            window_s: v.window_s as f32,
            hop_s: v.hop_s as f32,
            match_false_alarm_rate: false_alarm_at(config.match_threshold),
            review_false_alarm_rate: false_alarm_at(config.review_threshold),
        }),
    }
}
