//! The registry's record types (artists, voiceprints, authorizations), the enrollment policy,
//! what its calls ask and report (a screening's [`ScoreQuery`] and [`Scored`] answer), and
//! [`RegistryError`]. Every other registry file builds on these; this one imports none of them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::encoder::ModelId;
use crate::scoring::asnorm::AsNorm;

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such record.
    #[error("{what} {} not found", crate::echo::quote(.id))]
    NotFound {
        /// Kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The id is taken.
    #[error("{what} {} already exists", crate::echo::quote(.id))]
    AlreadyExists {
        /// Kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A keyed write's request id is recorded already: its change was made by an earlier
    /// call (the registry then replays that call's result).
    #[error("the change of this request id was made already")]
    AlreadyApplied,
    /// A request field is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The reference recordings hold too little voice in total.
    #[error("{}", too_little_voice(*.voiced_s, *.min_s, *.references))]
    TooLittleVoice {
        /// Voiced audio found in all the references, seconds.
        voiced_s: f64,
        /// The configured minimum, seconds.
        min_s: f64,
        /// Reference recordings in the enrollment.
        references: usize,
    },
    /// One of several references does not sound like the others.
    #[error("reference {} of {references} does not sound like the others: it scores {score:.3} against their pool, below the consistency threshold {threshold:.3}; enroll it separately or leave it out", .index + 1)]
    ReferencesDisagree {
        /// The reference, from 0.
        index: usize,
        /// Reference recordings in the enrollment.
        references: usize,
        /// Its score against the pool of the others.
        score: f32,
        /// The configured threshold.
        threshold: f64,
    },
    /// The reference does not sound like the artist's existing voiceprints.
    #[error("the reference does not match artist '{artist_id}''s existing voiceprints: best score {score:.3} is below the consistency threshold {threshold:.3}")]
    Inconsistent {
        /// The artist enrolled into.
        artist_id: String,
        /// Best score against the artist's voiceprints.
        score: f32,
        /// The configured threshold.
        threshold: f64,
    },
    /// The reference matches a different artist.
    #[error("the reference matches another registered artist, '{other_artist_id}' ({other_display_name}), with score {score:.3} (collision threshold {threshold:.3}); it was not enrolled")]
    Collision {
        /// The other artist.
        other_artist_id: String,
        /// Its display name.
        other_display_name: String,
        /// The score.
        score: f32,
        /// The configured threshold.
        threshold: f64,
    },
    /// The registry was built with another model.
    #[error("the registry {path} was built with model {registry}, but this server loaded {loaded}. Embeddings of different models cannot be compared, and raw audio is not stored, so they cannot be recomputed: start with `--model {registry_name}` to use this registry, or use a new `--data-dir` with the new model and re-enroll every artist's reference recordings", registry_name = registry.name)]
    ModelMismatch {
        /// The registry file.
        path: String,
        /// The model it was built with.
        registry: ModelId,
        /// The model loaded now.
        loaded: ModelId,
    },
    /// The store file could not be read or written.
    #[error("registry storage: {0}")]
    Storage(String),
    /// The registry database cannot be reached now; the call may be retried.
    #[error("registry database unavailable: {0}")]
    Unavailable(String),
    /// Another replica changed the registry after the enrollment checks ran; they are run
    /// again (never reported to callers unless that keeps happening).
    #[error("the registry kept changing under the enrollment checks; retry")]
    Stale,
    /// A stored record cannot be read.
    #[error("registry is corrupt: {0}")]
    Corrupt(String),
}

/// A protected artist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artist {
    /// Stable id.
    pub artist_id: String,
    /// Name shown to people.
    pub display_name: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_unix_s: i64,
}

/// What a reference recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoiceprintLabel {
    /// Spoken voice.
    Speaking,
    /// Sung voice.
    Singing,
    /// Anything else.
    Other,
}

/// A stored voiceprint: an utterance embedding of one reference recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Voiceprint {
    /// Server-assigned id.
    pub voiceprint_id: String,
    /// Owner.
    pub artist_id: String,
    /// What the reference held.
    pub label: VoiceprintLabel,
    /// Free text given at enrollment.
    pub description: String,
    /// Voiced audio embedded, seconds.
    pub voiced_s: f64,
    /// Whole reference duration, seconds.
    pub duration_s: f64,
    /// Enrollment time, seconds since the Unix epoch.
    pub created_at_unix_s: i64,
    /// Unit-norm embedding.
    pub embedding: Vec<f32>,
}

/// A party allowed to release music in an artist's voice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authorization {
    /// The artist granting it.
    pub artist_id: String,
    /// The party.
    pub party_id: String,
    /// Free text.
    pub note: String,
    /// Grant time, seconds since the Unix epoch.
    pub granted_at_unix_s: i64,
}

/// An artist with the sizes of what hangs off it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtistSummary {
    /// The artist.
    pub artist: Artist,
    /// Voiceprints enrolled.
    pub voiceprints: u32,
    /// Parties authorized.
    pub authorizations: u32,
}

/// The checks a new reference must pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentPolicy {
    /// Least voiced audio a reference must hold, seconds.
    pub min_voiced_s: f64,
    /// A new reference must score at least this against the artist's existing voiceprints.
    pub consistency_threshold: f64,
    /// A new reference scoring this or more against another artist is refused.
    pub collision_threshold: f64,
}

impl Default for EnrollmentPolicy {
    /// Measured on librispeech-mini utterance embeddings (see README, "Thresholds").
    fn default() -> Self {
        Self {
            min_voiced_s: 4.0,
            consistency_threshold: 0.72,
            collision_threshold: 0.80,
        }
    }
}

/// The refusal message for too little voice: what was found, what is needed, and how much
/// more to add.
fn too_little_voice(voiced_s: f64, min_s: f64, references: usize) -> String {
    let found = if references == 1 {
        format!("the reference has {voiced_s:.2} s of voiced audio")
    } else {
        format!("the {references} references have {voiced_s:.2} s of voiced audio in total")
    };
    format!(
        "{found}; at least {min_s:.2} s is needed: add {:.2} s more (further references of the same voice count toward the total)",
        (min_s - voiced_s).max(0.01)
    )
}

/// What an enrollment stored and the scores it was checked with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The new voiceprint.
    pub voiceprint: Voiceprint,
    /// Best score against the artist's earlier voiceprints, if any.
    pub consistency_score: Option<f32>,
    /// Best other artist and its score, if any other artist has voiceprints.
    pub nearest_other: Option<(String, f32)>,
    /// Reference recordings pooled into the voiceprint.
    pub references: usize,
    /// With several references, the weakest one's score against the pool of the others.
    pub reference_agreement: Option<f32>,
    /// Registry version after the enrollment.
    pub version: u64,
}

/// What the search index is, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStatus {
    /// Voiceprints indexed.
    pub voiceprints: usize,
    /// Whether screening searches the HNSW graph (else it scans every voiceprint).
    pub approximate: bool,
    /// Deleted voiceprints the graph still holds.
    pub deleted: usize,
    /// Bytes held by the index (estimate).
    pub memory_bytes: usize,
}

/// What one screening asks the registry (see [`super::Registry::score`]).
#[derive(Debug, Clone, Copy)]
pub struct ScoreQuery<'a> {
    /// The track's window embeddings.
    pub windows: &'a [&'a [f32]],
    /// Voiceprints retrieved per window.
    pub top_k: usize,
    /// When a cohort is loaded, each hit's cosine score is AS-Norm normalised by it (the
    /// window's and the voiceprint's cohort statistics).
    pub as_norm: Option<&'a AsNorm>,
    /// The party whose authorizations the answer reports (the uploader).
    pub party_id: &'a str,
    /// Artists to report on even when no window scores them (the credited ones), if they
    /// are registered.
    pub artist_ids: &'a [String],
}

/// A registry artist as one answer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtistStanding {
    /// Name shown to people.
    pub display_name: String,
    /// Whether the query's party is authorized by the artist.
    pub party_authorized: bool,
}

/// The registry's answer to a [`ScoreQuery`], read from one consistent view.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Registry version of the view every part of the answer was read from.
    pub version: u64,
    /// Per window, in the query's order: each artist's best score among the `top_k` nearest
    /// voiceprints, best first.
    pub windows: Vec<Vec<(String, f32)>>,
    /// Every artist scored in any window, and each registered artist of the query's
    /// `artist_ids`, by id.
    pub artists: HashMap<String, ArtistStanding>,
}
