//! Screening: a track's windows are scored against the registry's voiceprints, the scores
//! are gathered into evidence per artist, and a policy turns the evidence, the uploader's
//! authorizations and the AI disclosure into a decision the platform can act on.

mod evidence;

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::embed::{EmbedError, Embedder, WindowConfig};
use crate::registry::{Registry, RegistryError, ScoreQuery};
use crate::scoring::asnorm::AsNorm;
use crate::scoring::calibration::Calibration;
use crate::scoring::hubness::{Hubness, NEAR_RATE};
pub use evidence::{gather, ArtistScores};

/// Errors of screening a track.
#[derive(Debug, thiserror::Error)]
pub enum ScreeningError {
    /// The audio could not be embedded.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The registry's database could not be reached.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Thresholds and windowing of screening.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScreeningConfig {
    /// A window matches an artist at or above this cosine score.
    pub match_threshold: f64,
    /// An artist whose aggregate score reaches this, but who does not match, puts the track in
    /// the grey band (NEEDS_REVIEW).
    pub review_threshold: f64,
    /// Less voiced audio than this, seconds, and the track needs review.
    pub min_voiced_s: f64,
    /// Window length, seconds of voiced audio.
    pub window_s: f64,
    /// Step between windows, seconds of voiced audio.
    pub hop_s: f64,
    /// Voiceprints retrieved per window from the search index.
    pub top_k: usize,
    /// A track whose mean sample (DC offset, full scale 1.0) exceeds this in magnitude is
    /// screened a second time with the offset removed, and the more severe verdict stands: the
    /// encoder, like its reference, sees DC, and an added offset can hide a voice.
    pub dc_offset_rescreen: f64,
}

impl Default for ScreeningConfig {
    /// Measured on librispeech-mini (see README, "Thresholds").
    fn default() -> Self {
        Self {
            match_threshold: 0.80,
            review_threshold: 0.74,
            min_voiced_s: 2.0,
            window_s: 3.1,
            hop_s: 1.5,
            top_k: 10,
            dc_offset_rescreen: 0.01,
        }
    }
}

impl ScreeningConfig {
    /// The windowing part.
    pub fn windows(&self) -> WindowConfig {
        WindowConfig {
            window_s: self.window_s,
            hop_s: self.hop_s,
        }
    }

    /// Checks that the values make sense together. Cosine thresholds lie in -1..1; with
    /// `normalised` (AS-Norm) scores they need only be finite.
    pub fn validate(&self, normalised: bool) -> Result<(), String> {
        let fits = |x: f64| x.is_finite() && (normalised || (-1.0..=1.0).contains(&x));
        if !fits(self.match_threshold) || !fits(self.review_threshold) {
            return Err(if normalised {
                "screening thresholds must be finite".into()
            } else {
                "screening thresholds must lie in -1..1 (cosine scores)".into()
            });
        }
        if self.review_threshold > self.match_threshold {
            return Err(format!(
                "review_threshold {} must not exceed match_threshold {}",
                self.review_threshold, self.match_threshold
            ));
        }
        if !(self.window_s > 0.0 && self.hop_s > 0.0 && self.min_voiced_s >= 0.0) {
            return Err("window_s and hop_s must be positive, min_voiced_s not negative".into());
        }
        if self.dc_offset_rescreen.is_nan() || self.dc_offset_rescreen < 0.0 {
            return Err("dc_offset_rescreen must not be negative".into());
        }
        if self.top_k == 0 {
            return Err("top_k must be at least 1".into());
        }
        Ok(())
    }
}

/// What the uploader declares about AI in the track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiDisclosure {
    /// No AI was used.
    None,
    /// AI assisted, vocals human.
    AiAssisted,
    /// AI-generated vocals.
    AiGeneratedVocals,
}

/// What the ingestion service says about an upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The platform's track id.
    pub track_id: String,
    /// The uploading party.
    pub uploader_party_id: String,
    /// Artists the track credits.
    pub credited_artist_ids: Vec<String>,
    /// The AI disclosure.
    pub ai_disclosure: AiDisclosure,
}

/// What the platform should do with the track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Protected voice, uploader not authorized.
    UnauthorizedMatch,
    /// Protected voice, uploader authorized by every matched artist.
    AuthorizedMatch,
    /// Voice, but no protected one.
    NoMatch,
    /// A person must decide.
    NeedsReview(ReviewReason),
    /// No voice.
    NoVoice,
}

impl Decision {
    /// How much the decision asks of the platform: an unauthorized match most, then review,
    /// an authorized match, no match, no voice.
    pub fn severity(&self) -> u8 {
        match self {
            Decision::UnauthorizedMatch => 4,
            Decision::NeedsReview(_) => 3,
            Decision::AuthorizedMatch => 2,
            Decision::NoMatch => 1,
            Decision::NoVoice => 0,
        }
    }

    /// The wire name, as metrics and logs use it.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::UnauthorizedMatch => "UNAUTHORIZED_MATCH",
            Decision::AuthorizedMatch => "AUTHORIZED_MATCH",
            Decision::NoMatch => "NO_MATCH",
            Decision::NeedsReview(_) => "NEEDS_REVIEW",
            Decision::NoVoice => "NO_VOICE",
        }
    }
}

/// Why a track needs review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewReason {
    /// Scores in the grey band.
    GreyBand,
    /// Too little voiced audio.
    InsufficientVoice,
}

/// What else a reviewer should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// Unauthorized protected voice with no AI disclosed.
    UndisclosedProtectedVoice,
    /// Disclosed AI vocals imitating an artist who did not authorize the uploader.
    DisclosedAiImpersonation,
    /// A matched artist is not credited.
    UncreditedProtectedVoice,
    /// A credited registered artist's voice was not found.
    CreditedArtistNotFound,
    /// Disclosed AI vocals of an artist who authorized the uploader.
    AuthorizedAiVoice,
    /// The track carries a large DC offset, and the verdict comes from screening it with the
    /// offset removed.
    DcOffsetRemoved,
    /// A matched artist's voice is a hub: many other registered voices score near it, so it
    /// attracts false matches more than an ordinary voice.
    HubVoiceprint,
}

/// The evidence for one artist.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtistMatch {
    /// Registry id.
    pub artist_id: String,
    /// Display name.
    pub display_name: String,
    /// Whether the evidence reaches the match threshold (else a grey-band candidate).
    pub matched: bool,
    /// Whether the uploader is authorized by the artist.
    pub uploader_authorized: bool,
    /// Whether the track credits the artist.
    pub credited: bool,
    /// Best window score.
    pub best_score: f32,
    /// Median of the best five window scores.
    pub aggregate_score: f32,
    /// Windows at or above the match threshold.
    pub matching_windows: usize,
    /// Share of voiced time covered by matching windows.
    pub matched_voiced_share: f64,
    /// Track-time ranges of the matching windows, merged.
    pub time_ranges: Vec<Range<f64>>,
    /// The aggregate score as a log-likelihood ratio, when a calibration is loaded.
    pub aggregate_llr: Option<f64>,
    /// How far the aggregate lies above (positive) or below the match point, as a difference
    /// of log-likelihood ratios, when a calibration is loaded.
    pub llr_above_match: Option<f64>,
    /// How crowded the artist's voice is among the registry's other artists, when the
    /// calibration has a non-target model and scores are not normalised.
    pub hubness: Option<Hubness>,
}

/// How window scores are computed and read: the thresholds, and optionally AS-Norm over a
/// cohort (the registry normalises scores with it before any threshold applies) and a
/// calibration (whose threshold is the match threshold, and which turns aggregates into
/// log-likelihood ratios).
pub struct Scoring {
    /// Thresholds and windows.
    pub config: ScreeningConfig,
    /// Score normalisation.
    pub as_norm: Option<AsNorm>,
    /// Score calibration.
    pub calibration: Option<Calibration>,
}

/// The answer for one track.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What to do.
    pub decision: Decision,
    /// One sentence for a person.
    pub explanation: String,
    /// Matched artists, then grey-band candidates, each by descending aggregate.
    pub matches: Vec<ArtistMatch>,
    /// What else a reviewer should know.
    pub flags: Vec<Flag>,
    /// Decoded duration, seconds.
    pub duration_s: f64,
    /// Voiced audio, seconds.
    pub voiced_s: f64,
    /// Windows scored.
    pub windows: usize,
    /// Window length used, seconds.
    pub window_s: f64,
    /// Step used, seconds.
    pub hop_s: f64,
    /// Registry version scored against.
    pub registry_version: u64,
}

/// Screens decoded `samples` (mono, 16 kHz) of `upload` against `registry`. A track with a DC
/// offset above `dc_offset_rescreen` is screened again without it; the more severe verdict
/// stands, flagged [`Flag::DcOffsetRemoved`] when it is the second.
pub fn screen(
    embedder: &Embedder,
    registry: &Registry,
    samples: Vec<f32>,
    upload: &Upload,
    scoring: &Scoring,
) -> Result<Verdict, ScreeningError> {
    let mean = dc_offset(&samples);
    if mean.abs() <= scoring.config.dc_offset_rescreen {
        return screen_once(embedder, registry, samples, upload, scoring);
    }
    let centred: Vec<f32> = samples
        .iter()
        .map(|s| (f64::from(*s) - mean) as f32)
        .collect();
    let as_sent = screen_once(embedder, registry, samples, upload, scoring)?;
    let mut without_dc = screen_once(embedder, registry, centred, upload, scoring)?;
    if without_dc.decision.severity() > as_sent.decision.severity() {
        without_dc.flags.push(Flag::DcOffsetRemoved);
        without_dc.explanation = format!(
            "{} (found after removing a DC offset of {mean:.3})",
            without_dc.explanation
        );
        Ok(without_dc)
    } else {
        Ok(as_sent)
    }
}

/// The mean sample value; 0 for no samples.
fn dc_offset(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(|s| f64::from(*s)).sum::<f64>() / samples.len() as f64
}

/// One screening pass over `samples`.
fn screen_once(
    embedder: &Embedder,
    registry: &Registry,
    samples: Vec<f32>,
    upload: &Upload,
    scoring: &Scoring,
) -> Result<Verdict, ScreeningError> {
    let config = &scoring.config;
    let track = embedder.embed_windows(samples, &config.windows())?;
    let windows: Vec<&[f32]> = track
        .windows
        .iter()
        .map(|w| w.embedding.as_slice())
        .collect();
    let scored = registry.score(&ScoreQuery {
        windows: &windows,
        top_k: config.top_k,
        as_norm: scoring.as_norm.as_ref(),
        party_id: &upload.uploader_party_id,
        artist_ids: &upload.credited_artist_ids,
    })?;
    let mut matches = Vec::new();
    for s in gather(&track, &scored.windows, config) {
        let Some(artist) = scored.artists.get(&s.artist_id) else {
            continue;
        };
        let hubness = hubness(registry, scoring, &s.artist_id);
        let llr = scoring.calibration.as_ref().map(|c| {
            (
                c.llr(f64::from(s.aggregate_score)),
                c.llr(config.match_threshold),
            )
        });
        matches.push(ArtistMatch {
            uploader_authorized: artist.party_authorized,
            credited: upload.credited_artist_ids.contains(&s.artist_id),
            display_name: artist.display_name.clone(),
            artist_id: s.artist_id,
            matched: s.matched,
            best_score: s.best_score,
            aggregate_score: s.aggregate_score,
            matching_windows: s.matching_windows,
            matched_voiced_share: s.matched_voiced_share,
            time_ranges: s.time_ranges,
            aggregate_llr: llr.map(|(aggregate, _)| aggregate),
            llr_above_match: llr.map(|(aggregate, at_match)| aggregate - at_match),
            hubness,
        });
    }
    let credited_registered: Vec<String> = upload
        .credited_artist_ids
        .iter()
        .filter(|id| scored.artists.contains_key(*id))
        .cloned()
        .collect();
    let (decision, mut flags, mut explanation) = decide(
        &matches,
        track.voiced_s,
        upload,
        &credited_registered,
        config,
    );
    if let Some((m, h)) = matches
        .iter()
        .find_map(|m| Some((m, m.hubness.filter(|h| h.is_hub && m.matched)?)))
    {
        flags.push(Flag::HubVoiceprint);
        explanation = format!(
            "{explanation} ({}'s voice is a hub: {} of {} other registered artists score {:.3} or more against it, {:.1} expected)",
            m.display_name, h.artists_near, h.other_artists, h.near_score, h.expected_near
        );
    }
    Ok(Verdict {
        decision,
        explanation,
        matches,
        flags,
        duration_s: track.duration_s,
        voiced_s: track.voiced_s,
        windows: track.windows.len(),
        window_s: track.window_s,
        hop_s: track.hop_s,
        registry_version: scored.version,
    })
}

/// The hub evidence of `artist_id`: its neighbours at the score the calibration's non-target
/// model reaches at [`NEAR_RATE`]; `None` without such a model or with AS-Norm (whose
/// thresholds are not cosines).
fn hubness(registry: &Registry, scoring: &Scoring, artist_id: &str) -> Option<Hubness> {
    if scoring.as_norm.is_some() {
        return None;
    }
    let near = scoring
        .calibration
        .as_ref()?
        .score_at_false_alarm(NEAR_RATE)?;
    let (artists_near, other_artists) = registry.artists_near(artist_id, near as f32)?;
    Some(Hubness::assess(near, artists_near, other_artists))
}

/// The policy: from the evidence (matched artists and grey-band candidates), the voiced
/// duration, the upload's metadata and which credited artists are registered, the decision,
/// its flags and a sentence saying why.
pub fn decide(
    matches: &[ArtistMatch],
    voiced_s: f64,
    upload: &Upload,
    credited_registered: &[String],
    config: &ScreeningConfig,
) -> (Decision, Vec<Flag>, String) {
    let mut flags = Vec::new();
    if voiced_s <= 0.0 {
        return (
            Decision::NoVoice,
            flags,
            "no voice was found in the audio".into(),
        );
    }
    let matched: Vec<&ArtistMatch> = matches.iter().filter(|m| m.matched).collect();
    let names = |ms: &[&ArtistMatch]| {
        ms.iter()
            .map(|m| format!("{} ({})", m.display_name, m.artist_id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if matched.iter().any(|m| !m.credited) {
        flags.push(Flag::UncreditedProtectedVoice);
    }
    if voiced_s >= config.min_voiced_s {
        let unheard = credited_registered
            .iter()
            .any(|id| !matches.iter().any(|m| &m.artist_id == id));
        if unheard {
            flags.push(Flag::CreditedArtistNotFound);
        }
    }
    if voiced_s < config.min_voiced_s {
        return (
            Decision::NeedsReview(ReviewReason::InsufficientVoice),
            flags,
            format!(
                "only {voiced_s:.1} s of voiced audio, less than the {:.1} s needed to decide",
                config.min_voiced_s
            ),
        );
    }
    if !matched.is_empty() {
        let unauthorized: Vec<&ArtistMatch> = matched
            .iter()
            .copied()
            .filter(|m| !m.uploader_authorized)
            .collect();
        if unauthorized.is_empty() {
            if upload.ai_disclosure == AiDisclosure::AiGeneratedVocals {
                flags.push(Flag::AuthorizedAiVoice);
            }
            return (
                Decision::AuthorizedMatch,
                flags,
                format!(
                    "the voice of {} was found, and uploader '{}' is authorized",
                    names(&matched),
                    upload.uploader_party_id
                ),
            );
        }
        let why = match upload.ai_disclosure {
            AiDisclosure::None => {
                flags.push(Flag::UndisclosedProtectedVoice);
                "and the upload declares no AI: an undisclosed voice clone, or the artist's own recording released without their authorization"
            }
            AiDisclosure::AiGeneratedVocals => {
                flags.push(Flag::DisclosedAiImpersonation);
                "and the upload declares AI-generated vocals: an AI imitation of a protected voice without consent"
            }
            AiDisclosure::AiAssisted => {
                "and the upload declares AI-assisted production with human vocals"
            }
        };
        return (
            Decision::UnauthorizedMatch,
            flags,
            format!(
                "the voice of {} was found, uploader '{}' is not authorized, {why}",
                names(&unauthorized),
                upload.uploader_party_id
            ),
        );
    }
    if let Some(top) = matches.first() {
        return (
            Decision::NeedsReview(ReviewReason::GreyBand),
            flags,
            format!(
                "{} ({}) scores {:.3}, in the grey band between {:.3} and {:.3}",
                top.display_name,
                top.artist_id,
                top.aggregate_score,
                config.review_threshold,
                config.match_threshold
            ),
        );
    }
    (
        Decision::NoMatch,
        flags,
        "no protected voice was found".into(),
    )
}

#[cfg(test)]
mod tests;
