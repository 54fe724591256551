//! The registry of protected voices: artists, their voiceprints (embeddings, never audio) and
//! the parties they authorize, kept in an embedded transactional [`store`] and mirrored in an
//! in-memory [`index`] for search. Enrollment's safety checks (enough voice, consistency with
//! the artist's voiceprints, no collision with another artist) live here, under the same lock
//! as the write, so concurrent enrollments cannot slip past them. Every change names its
//! [`audit::Origin`] and leaves an event in the [`audit`] trail; deletions purge the deleted
//! records from the index and from the file ([`purge`]).

pub mod audit;
pub mod backend;
pub mod consistency;
pub mod dump;
pub mod index;
mod mirror;
pub mod postgres;
mod purge;
pub mod references;
pub mod replay;
pub mod store;
#[cfg(test)]
mod tests;
mod types;
mod view;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::embed::Embedding;
use crate::encoder::ModelId;
pub use audit::{AuditAction, AuditEvent, AuditQuery, Origin};
use backend::{Counts, IndexChange, RegistryStore, StoreLocation};
use index::SearchConfig;
use mirror::Mirror;
use replay::{Replayable, ToRecord};
use store::EmbeddedStore;
pub use types::{
    Artist, ArtistStanding, ArtistSummary, Authorization, Enrolled, EnrollmentPolicy, IndexStatus,
    RegistryError, ScoreQuery, Scored, Voiceprint, VoiceprintLabel,
};

/// The registry: the store, the index mirroring it, and the enrollment checks.
pub struct Registry {
    mirror: Arc<Mirror>,
    policy: EnrollmentPolicy,
    location: String,
}

/// Times an enrollment's checks are run again when other replicas keep changing the registry.
const ENROLL_ATTEMPTS: usize = 8;

/// Most characters of a description or note.
const MAX_TEXT: usize = 256;

impl Registry {
    /// File name of the store inside the data directory.
    pub const FILE_NAME: &'static str = "registry.redb";

    /// Opens the embedded registry in `data_dir` (created if missing) for `model` embeddings
    /// of length `dim`, and builds the search index from it.
    pub fn open(
        data_dir: &Path,
        model: &ModelId,
        dim: usize,
        policy: EnrollmentPolicy,
    ) -> Result<Self, RegistryError> {
        Self::open_at(
            &StoreLocation::Embedded(data_dir.to_path_buf()),
            model,
            dim,
            policy,
        )
    }

    /// Opens the registry at `location` (the embedded store, or PostgreSQL with its migrations
    /// applied) for `model` embeddings of length `dim`.
    pub fn open_at(
        location: &StoreLocation,
        model: &ModelId,
        dim: usize,
        policy: EnrollmentPolicy,
    ) -> Result<Self, RegistryError> {
        Self::with_store(open_store(location, Some(model))?, dim, policy)
    }

    /// A registry over an open store; builds the search index from it.
    fn with_store(
        store: Box<dyn RegistryStore>,
        dim: usize,
        policy: EnrollmentPolicy,
    ) -> Result<Self, RegistryError> {
        Ok(Self {
            location: store.describe(),
            mirror: Arc::new(Mirror::open(store, dim)?),
            policy,
        })
    }

    /// Sets how the index is searched; the graph itself is built by
    /// [`Registry::maintain_index`], without which the index stays exact.
    pub fn with_search(self, config: SearchConfig) -> Self {
        self.mirror.configure(config);
        self
    }

    /// What the search index is now.
    pub fn index_status(&self) -> IndexStatus {
        self.mirror.status()
    }

    /// Starts the thread that rebuilds the search index in the background whenever it needs
    /// it (see [`index::SearchIndex::needs_rebuild`]): at start when the registry is above the
    /// approximate-search threshold, when it crosses it, and when deletions leave too many
    /// tombstones in the graph. Meanwhile the current index keeps serving. A rebuild copies
    /// the live voiceprints at version V, builds without any lock, then under the writer lock
    /// replays the store's changes after V onto the new index and swaps it in, so no change
    /// made during the build is lost. `on_change` hears the new status after each swap. The
    /// thread stops when the registry is dropped.
    pub fn maintain_index(
        &self,
        on_change: impl Fn(IndexStatus) + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        self.mirror.maintain(on_change)
    }

    /// Where the store is (a file path, or the database without its password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// For a shared store, starts a thread that keeps the index in step with changes other
    /// replicas make: woken by the store's notifications, and at least every
    /// [`backend::POLL_INTERVAL`] in case one was lost; `on_change` runs after each catch-up
    /// that moved the version. It stops when the registry is dropped.
    pub fn follow(
        self: &Arc<Self>,
        on_change: impl Fn(&Registry) + Send + 'static,
    ) -> Option<std::thread::JoinHandle<()>> {
        let weak = Arc::downgrade(self);
        self.mirror.follow(move || {
            if let Some(registry) = weak.upgrade() {
                on_change(&registry);
            }
        })
    }

    /// The enrollment checks in force.
    pub fn policy(&self) -> &EnrollmentPolicy {
        &self.policy
    }

    /// Whether the search index holds the voiceprint `voiceprint_id`.
    pub fn is_indexed(&self, voiceprint_id: &str) -> bool {
        self.mirror.read().index.embedding(voiceprint_id).is_some()
    }

    /// Current registry version.
    pub fn version(&self) -> u64 {
        self.mirror.read().version
    }

    /// Numbers of artists and voiceprints.
    pub fn size(&self) -> (u64, u64) {
        self.mirror.read().size()
    }

    /// Answers one screening from one view of the registry: each window's artists with their
    /// best scores among the `top_k` nearest voiceprints (AS-Norm normalised when the query
    /// carries a cohort), the display name of every artist named and whether the query's party
    /// is authorized by it, all at the version the answer reports. No change is applied to the
    /// view while it is read.
    ///
    /// On a shared store the call first reads the store's version: a replica that cannot reach
    /// its database answers [`RegistryError::Unavailable`] rather than from a view that may
    /// lack another replica's revocation, and one whose follower is behind applies the missing
    /// changes first, so an answer is never older than the call.
    pub fn score(&self, query: &ScoreQuery<'_>) -> Result<Scored, RegistryError> {
        if self.store().shared() && self.store().version()? > self.version() {
            let w = self.mirror.lock_writer();
            self.mirror.catch_up(&w)?;
        }
        Ok(self.score_pausing(query, || {}))
    }

    /// [`Registry::score`], running `between` after the windows are scored and before the
    /// artists are read, still within the same view (tests commit changes there).
    fn score_pausing(&self, query: &ScoreQuery<'_>, between: impl FnOnce()) -> Scored {
        let view = self.mirror.read();
        let windows = view.window_scores(query);
        between();
        view.standings(query, windows)
    }

    /// Creates an artist; an empty `artist_id` gets a generated one.
    pub fn create_artist(
        &self,
        origin: &Origin,
        artist_id: &str,
        display_name: &str,
    ) -> Result<Artist, RegistryError> {
        if let Some(done) = self.replayed(origin)? {
            return Ok(done);
        }
        let artist_id = if artist_id.is_empty() {
            format!("artist-{}", random_hex(6))
        } else {
            validate_artist_id(artist_id)?;
            artist_id.to_string()
        };
        let display_name = display_name.trim();
        if display_name.is_empty() || display_name.chars().count() > MAX_TEXT {
            return Err(RegistryError::Invalid(format!(
                "display_name must be 1-{MAX_TEXT} characters"
            )));
        }
        let artist = Artist {
            artist_id,
            display_name: display_name.to_string(),
            created_at_unix_s: now(),
        };
        let w = self.mirror.lock_writer();
        let record = record_for(origin, &artist);
        let version = match self.store().insert_artist(origin, record.as_ref(), &artist) {
            Err(RegistryError::AlreadyApplied) => return self.applied_meanwhile(origin),
            written => written?,
        };
        let change = IndexChange::ArtistCreated {
            artist_id: artist.artist_id.clone(),
            display_name: Some(artist.display_name.clone()),
        };
        self.mirror.advance(&w, version, change)?;
        Ok(artist)
    }

    /// One artist with its counts.
    pub fn artist(&self, artist_id: &str) -> Result<ArtistSummary, RegistryError> {
        validate_artist_id(artist_id)?;
        let artist = self
            .store()
            .artist(artist_id)?
            .ok_or_else(|| RegistryError::NotFound {
                what: "artist",
                id: artist_id.to_string(),
            })?;
        self.summarise(artist)
    }

    /// A page of up to `limit` artists after `after`, the total, and whether more follow.
    pub fn list_artists(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ArtistSummary>, u64, bool), RegistryError> {
        if let Some(after) = after {
            validate_id("page_token", after, MAX_ID_CHARS)?;
        }
        let (mut page, total) = self.store().artists_after(after, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let page = page
            .into_iter()
            .map(|a| self.summarise(a))
            .collect::<Result<_, _>>()?;
        Ok((page, total, more))
    }

    /// Deletes an artist with everything hanging off it; returns the counts removed and the
    /// new version. The index forgets the artist's voiceprints at once, then the file is
    /// purged of them.
    pub fn delete_artist(
        &self,
        origin: &Origin,
        artist_id: &str,
    ) -> Result<(Counts, u64), RegistryError> {
        validate_artist_id(artist_id)?;
        if let Some(done) = self.replayed(origin)? {
            return Ok(done);
        }
        let w = self.mirror.lock_writer();
        // The counts are recorded before the deletion commits: the writer lock keeps this
        // server's writes out meanwhile (another replica's could still change them).
        let record = match &origin.key {
            Some(_) => record_for(origin, &(self.store().counts_of(artist_id)?, 0u64)),
            None => None,
        };
        let (counts, version) = match self
            .store()
            .delete_artist(origin, record.as_ref(), artist_id)
        {
            Err(RegistryError::AlreadyApplied) => return self.applied_meanwhile(origin),
            written => written?,
        };
        self.mirror.advance(
            &w,
            version,
            IndexChange::ArtistDeleted(artist_id.to_string()),
        )?;
        self.purge_deleted();
        Ok((counts, version))
    }

    /// Checks the embeddings of one or more reference recordings of a voice against the
    /// policy as a set (their total voiced audio, their agreement with each other, then the
    /// pool's consistency with the artist's voiceprints and collision with other artists) and
    /// stores their pool as a new voiceprint of `artist_id`.
    pub fn enroll(
        &self,
        origin: &Origin,
        artist_id: &str,
        label: VoiceprintLabel,
        description: &str,
        references: &[Embedding],
    ) -> Result<Enrolled, RegistryError> {
        validate_artist_id(artist_id)?;
        if let Some(done) = self.replayed(origin)? {
            return Ok(done);
        }
        if description.chars().count() > MAX_TEXT {
            return Err(RegistryError::Invalid(format!(
                "description must be at most {MAX_TEXT} characters"
            )));
        }
        if references.len() > references::MAX_REFERENCES {
            return Err(RegistryError::Invalid(format!(
                "{} references given; one enrollment takes at most {}",
                references.len(),
                references::MAX_REFERENCES
            )));
        }
        let embedding = references::pool_references(references).ok_or_else(|| {
            RegistryError::Invalid("an enrollment needs at least one reference".into())
        })?;
        let w = self.mirror.lock_writer();
        self.store()
            .artist(artist_id)?
            .ok_or_else(|| RegistryError::NotFound {
                what: "artist",
                id: artist_id.to_string(),
            })?;
        if embedding.voiced_s < self.policy.min_voiced_s {
            return Err(RegistryError::TooLittleVoice {
                voiced_s: embedding.voiced_s,
                min_s: self.policy.min_voiced_s,
                references: references.len(),
            });
        }
        let reference_agreement = references::weakest_reference(references);
        if let Some((index, score)) = reference_agreement {
            if f64::from(score) < self.policy.consistency_threshold {
                return Err(RegistryError::ReferencesDisagree {
                    index,
                    references: references.len(),
                    score,
                    threshold: self.policy.consistency_threshold,
                });
            }
        }
        let voiceprint = Voiceprint {
            voiceprint_id: format!("vp-{}", random_hex(8)),
            artist_id: artist_id.to_string(),
            label,
            description: description.to_string(),
            voiced_s: embedding.voiced_s,
            duration_s: embedding.duration_s,
            created_at_unix_s: now(),
            embedding: embedding.vector.clone(),
        };
        for _ in 0..ENROLL_ATTEMPTS {
            let (checked_at, consistency_score, nearest_other) =
                self.check_enrollment(artist_id, &embedding.vector)?;
            let enrolled = Enrolled {
                voiceprint: voiceprint.clone(),
                consistency_score,
                nearest_other,
                references: references.len(),
                reference_agreement: reference_agreement.map(|(_, score)| score),
                version: 0,
            };
            let record = record_for(origin, &enrolled);
            match self
                .store()
                .insert_voiceprint(origin, record.as_ref(), &voiceprint, checked_at)
            {
                Ok(version) => {
                    self.mirror
                        .advance(&w, version, IndexChange::Enrolled(Some(voiceprint)))?;
                    return Ok(enrolled.at_version(version));
                }
                Err(RegistryError::AlreadyApplied) => return self.applied_meanwhile(origin),
                Err(RegistryError::Stale) => {
                    self.mirror.catch_up(&w)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Stale)
    }

    /// Runs the consistency and collision checks of a new reference of `artist_id` against
    /// the index; returns the version they saw and the scores.
    #[allow(clippy::type_complexity)]
    fn check_enrollment(
        &self,
        artist_id: &str,
        vector: &[f32],
    ) -> Result<(u64, Option<f32>, Option<(String, f32)>), RegistryError> {
        let (checked_at, consistency_score, nearest_other) = {
            let snapshot = self.mirror.read();
            let (own, other) = snapshot.index.own_and_nearest_other(vector, artist_id);
            (snapshot.version, own, other)
        };
        if let Some(score) = consistency_score {
            if f64::from(score) < self.policy.consistency_threshold {
                return Err(RegistryError::Inconsistent {
                    artist_id: artist_id.to_string(),
                    score,
                    threshold: self.policy.consistency_threshold,
                });
            }
        }
        if let Some((other, score)) = &nearest_other {
            if f64::from(*score) >= self.policy.collision_threshold {
                let other_display_name = self
                    .store()
                    .artist(other)?
                    .map(|a| a.display_name)
                    .unwrap_or_default();
                return Err(RegistryError::Collision {
                    other_artist_id: other.clone(),
                    other_display_name,
                    score: *score,
                    threshold: self.policy.collision_threshold,
                });
            }
        }
        Ok((checked_at, consistency_score, nearest_other))
    }

    /// An artist's voiceprints.
    pub fn voiceprints(&self, artist_id: &str) -> Result<Vec<Voiceprint>, RegistryError> {
        self.artist(artist_id)?;
        self.store().voiceprints_of(artist_id)
    }

    /// Of the other artists, how many have a voiceprint scoring `near` or more against one of
    /// `artist_id`'s voiceprints, and how many there are, in the current view; `None` for an
    /// artist without voiceprints. An exact scan of every voiceprint per voiceprint of the
    /// artist (the hub evidence of a screening candidate).
    pub fn artists_near(&self, artist_id: &str, near: f32) -> Option<(usize, usize)> {
        self.mirror.read().index.artists_near(artist_id, near)
    }

    /// Deletes one voiceprint from the store and the index, then purges it from the file;
    /// returns the new version.
    pub fn delete_voiceprint(
        &self,
        origin: &Origin,
        voiceprint_id: &str,
    ) -> Result<u64, RegistryError> {
        validate_id("voiceprint_id", voiceprint_id, MAX_ID_CHARS)?;
        if let Some(done) = self.replayed(origin)? {
            return Ok(done);
        }
        let w = self.mirror.lock_writer();
        let record = record_for(origin, &0u64);
        let (_, version) =
            match self
                .store()
                .delete_voiceprint(origin, record.as_ref(), voiceprint_id)
            {
                Err(RegistryError::AlreadyApplied) => return self.applied_meanwhile(origin),
                written => written?,
            };
        self.mirror.advance(
            &w,
            version,
            IndexChange::VoiceprintDeleted(voiceprint_id.to_string()),
        )?;
        self.purge_deleted();
        Ok(version)
    }

    /// Authorizes `party_id` for `artist_id` (replacing an earlier grant's note).
    pub fn grant(
        &self,
        origin: &Origin,
        artist_id: &str,
        party_id: &str,
        note: &str,
    ) -> Result<Authorization, RegistryError> {
        validate_artist_id(artist_id)?;
        validate_party(party_id)?;
        if note.chars().count() > MAX_TEXT {
            return Err(RegistryError::Invalid(format!(
                "note must be at most {MAX_TEXT} characters"
            )));
        }
        let grant = Authorization {
            artist_id: artist_id.to_string(),
            party_id: party_id.to_string(),
            note: note.to_string(),
            granted_at_unix_s: now(),
        };
        if let Some(done) = self.replayed(origin)? {
            return Ok(done);
        }
        let w = self.mirror.lock_writer();
        let record = record_for(origin, &grant);
        let version = match self
            .store()
            .put_authorization(origin, record.as_ref(), &grant)
        {
            Err(RegistryError::AlreadyApplied) => return self.applied_meanwhile(origin),
            written => written?,
        };
        let change = IndexChange::Granted {
            artist_id: grant.artist_id.clone(),
            party_id: grant.party_id.clone(),
        };
        self.mirror.advance(&w, version, change)?;
        Ok(grant)
    }

    /// Withdraws an authorization; returns the new version.
    pub fn revoke(
        &self,
        origin: &Origin,
        artist_id: &str,
        party_id: &str,
    ) -> Result<u64, RegistryError> {
        validate_artist_id(artist_id)?;
        validate_party(party_id)?;
        if let Some(done) = self.replayed(origin)? {
            return Ok(done);
        }
        let w = self.mirror.lock_writer();
        let record = record_for(origin, &0u64);
        let version =
            match self
                .store()
                .delete_authorization(origin, record.as_ref(), artist_id, party_id)
            {
                Err(RegistryError::AlreadyApplied) => return self.applied_meanwhile(origin),
                written => written?,
            };
        let change = IndexChange::Revoked {
            artist_id: artist_id.to_string(),
            party_id: party_id.to_string(),
        };
        self.mirror.advance(&w, version, change)?;
        Ok(version)
    }

    /// An artist's authorizations.
    pub fn authorizations(&self, artist_id: &str) -> Result<Vec<Authorization>, RegistryError> {
        self.artist(artist_id)?;
        self.store().authorizations_of(artist_id)
    }

    /// Whether `party_id` is authorized by `artist_id`.
    pub fn is_authorized(&self, artist_id: &str, party_id: &str) -> Result<bool, RegistryError> {
        validate_artist_id(artist_id)?;
        validate_party(party_id)?;
        Ok(self.store().authorization(artist_id, party_id)?.is_some())
    }

    /// A page of the audit trail (see [`AuditQuery`]) and whether more events follow.
    pub fn audit_events(
        &self,
        query: &AuditQuery,
    ) -> Result<(Vec<AuditEvent>, bool), RegistryError> {
        if let Some(artist_id) = &query.artist_id {
            validate_artist_id(artist_id)?;
        }
        self.store().audit_events(query)
    }

    /// Cross-checks the store's tables, the audit trail and the search index (see
    /// [`consistency`]) under the writer lock; [`RegistryError::Corrupt`] lists every
    /// disagreement.
    pub fn verify(&self) -> Result<consistency::Verified, RegistryError> {
        let _w = self.mirror.lock_writer();
        let contents = self.store().contents()?;
        let problems = {
            let snapshot = self.mirror.read();
            consistency::problems(&contents, &snapshot.index, snapshot.version)
        };
        if !problems.is_empty() {
            return Err(RegistryError::Corrupt(problems.join("; ")));
        }
        Ok(consistency::Verified {
            version: contents.version,
            artists: contents.artists.len(),
            voiceprints: contents.voiceprints.len(),
            authorizations: contents.authorizations.len(),
            audit_events: contents.audit_events,
        })
    }

    /// The first call's result when `origin` carries a write key that was recorded already
    /// (a retry), `None` otherwise. Every write checks this itself; a caller about to do
    /// costly work for a write (decoding and embedding an enrollment) may ask first.
    pub fn replayed<T: Replayable>(&self, origin: &Origin) -> Result<Option<T>, RegistryError> {
        let Some(key) = &origin.key else {
            return Ok(None);
        };
        self.store()
            .recorded(&origin.actor, &key.request_id)?
            .map(|recorded| replay::replay(key, recorded))
            .transpose()
    }

    /// The result of a keyed write whose store refused it as applied already: a concurrent
    /// call with the same key committed first.
    fn applied_meanwhile<T: Replayable>(&self, origin: &Origin) -> Result<T, RegistryError> {
        self.replayed(origin)?.ok_or_else(|| {
            RegistryError::Corrupt("a write key the store refused is not recorded".into())
        })
    }

    /// An artist's record, if it exists.
    pub fn find_artist(&self, artist_id: &str) -> Result<Option<Artist>, RegistryError> {
        validate_artist_id(artist_id)?;
        self.store().artist(artist_id)
    }

    fn summarise(&self, artist: Artist) -> Result<ArtistSummary, RegistryError> {
        let counts = self.store().counts_of(&artist.artist_id)?;
        Ok(ArtistSummary {
            artist,
            voiceprints: counts.voiceprints,
            authorizations: counts.authorizations,
        })
    }

    /// Purges a committed deletion from the file. The deletion stands if this fails: it is
    /// already durable and gone from the index, and its purge stays marked pending, to be
    /// retried after the next deletion or when the registry is next opened.
    fn purge_deleted(&self) {
        if let Err(e) = self.store().purge() {
            tracing::error!(error = %e, "purging deleted records from the registry file failed; retried after the next deletion or at the next start");
        }
    }

    fn store(&self) -> &dyn RegistryStore {
        self.mirror.store()
    }
}

/// Opens the store at `location`; with `model`, a new store is stamped with it and an
/// existing one must match it; without, the store must exist (export).
pub fn open_store(
    location: &StoreLocation,
    model: Option<&ModelId>,
) -> Result<Box<dyn RegistryStore>, RegistryError> {
    Ok(match location {
        StoreLocation::Embedded(data_dir) => {
            let path = data_dir.join(Registry::FILE_NAME);
            match model {
                Some(model) => {
                    std::fs::create_dir_all(data_dir).map_err(|e| {
                        RegistryError::Storage(format!("creating {}: {e}", data_dir.display()))
                    })?;
                    Box::new(EmbeddedStore::open(&path, model)?)
                }
                None => Box::new(EmbeddedStore::open_existing(&path)?),
            }
        }
        StoreLocation::Postgres { url, pool } => {
            Box::new(postgres::PgStore::connect(url, pool, model)?)
        }
    })
}

/// The record to keep with `origin`'s write when it carries a key.
fn record_for<T: Replayable>(origin: &Origin, pending: &T) -> Option<ToRecord> {
    origin
        .key
        .as_ref()
        .map(|key| replay::to_record(key, pending))
}

/// The longest artist or voiceprint id, in characters (all from `[A-Za-z0-9._-]`).
pub const MAX_ID_CHARS: usize = 64;

/// The longest party id, in characters.
pub const MAX_PARTY_CHARS: usize = 128;

/// Checks an artist id: 1-[`MAX_ID_CHARS`] characters from `[A-Za-z0-9._-]`.
pub fn validate_artist_id(artist_id: &str) -> Result<(), RegistryError> {
    validate_id("artist_id", artist_id, MAX_ID_CHARS)
}

/// Checks a write's request id: 1-[`replay::MAX_REQUEST_ID_CHARS`] characters from
/// `[A-Za-z0-9._-]`.
pub fn validate_request_id(request_id: &str) -> Result<(), RegistryError> {
    validate_id("request_id", request_id, replay::MAX_REQUEST_ID_CHARS)
}

/// Checks an id: 1-`max` characters from `[A-Za-z0-9._-]`.
fn validate_id(field: &str, id: &str, max: usize) -> Result<(), RegistryError> {
    let ok = !id.is_empty()
        && id.len() <= max
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "{field} must be 1-{max} characters from [A-Za-z0-9._-], got {}",
            crate::echo::quote(id)
        )))
    }
}

/// Checks a party id: 1-[`MAX_PARTY_CHARS`] printable characters, no control characters.
pub fn validate_party(party_id: &str) -> Result<(), RegistryError> {
    let n = party_id.chars().count();
    if n == 0 || n > MAX_PARTY_CHARS || party_id.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "party_id must be 1-{MAX_PARTY_CHARS} printable characters, got {}",
            crate::echo::quote(party_id)
        )));
    }
    Ok(())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `bytes` random bytes from the OS, as lower-case hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random number generator");
    hex::encode(buf)
}
