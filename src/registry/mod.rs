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
pub mod postgres;
mod purge;
pub mod store;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::embed::Embedding;
use crate::encoder::ModelId;
pub use audit::{AuditAction, AuditEvent, AuditQuery, Origin};
use backend::{Counts, IndexChange, RegistryStore, StoreLocation, VersionedChange};
use index::{SearchConfig, SearchIndex};
use store::EmbeddedStore;

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such record.
    #[error("{what} '{id}' not found")]
    NotFound {
        /// Kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The id is taken.
    #[error("{what} '{id}' already exists")]
    AlreadyExists {
        /// Kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A request field is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The reference recording holds too little voice.
    #[error("the reference has {voiced_s:.2} s of voiced audio; at least {min_s:.2} s is needed")]
    TooLittleVoice {
        /// Voiced audio found, seconds.
        voiced_s: f64,
        /// The configured minimum, seconds.
        min_s: f64,
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

/// What an enrollment stored and the scores it was checked with.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The new voiceprint.
    pub voiceprint: Voiceprint,
    /// Best score against the artist's earlier voiceprints, if any.
    pub consistency_score: Option<f32>,
    /// Best other artist and its score, if any other artist has voiceprints.
    pub nearest_other: Option<(String, f32)>,
    /// Registry version after the enrollment.
    pub version: u64,
}

/// The search index with the registry version it reflects.
pub struct Snapshot {
    /// Every voiceprint.
    pub index: SearchIndex,
    /// Registry version of that content.
    pub version: u64,
}

/// The registry: the store, the index mirroring it, and the enrollment checks.
pub struct Registry {
    store: Box<dyn RegistryStore>,
    snapshot: RwLock<Snapshot>,
    writer: Mutex<()>,
    policy: EnrollmentPolicy,
    location: String,
    dim: usize,
    /// Wakes the index builder (see [`Registry::maintain_index`]), once one runs.
    indexer: Mutex<Option<SyncSender<()>>>,
}

/// The live voiceprints copied for a rebuild, and the version they were copied at.
struct PendingRebuild {
    rows: index::Rows,
    config: SearchConfig,
    from: u64,
    dim: usize,
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

/// Times an enrollment's checks are run again when other replicas keep changing the registry.
const ENROLL_ATTEMPTS: usize = 8;

/// How long the index builder waits before trying again after a failed rebuild.
const REBUILD_RETRY: Duration = Duration::from_secs(5);

/// Most changes read from the store in one catch-up step.
const CATCH_UP_BATCH: usize = 1000;

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
        let mut index = SearchIndex::new(dim);
        let (voiceprints, version) = store.all_voiceprints()?;
        for vp in voiceprints {
            check_dim(&vp, dim)?;
            index.insert(&vp.voiceprint_id, &vp.artist_id, &vp.embedding);
        }
        Ok(Self {
            location: store.describe(),
            store,
            snapshot: RwLock::new(Snapshot { index, version }),
            writer: Mutex::new(()),
            policy,
            dim,
            indexer: Mutex::new(None),
        })
    }

    /// Sets how the index is searched; the graph itself is built by
    /// [`Registry::maintain_index`], without which the index stays exact.
    pub fn with_search(self, config: SearchConfig) -> Self {
        self.write_snapshot().index.configure(config);
        self
    }

    /// What the search index is now.
    pub fn index_status(&self) -> IndexStatus {
        let snapshot = self.snapshot();
        IndexStatus {
            voiceprints: snapshot.index.len(),
            approximate: snapshot.index.is_approximate(),
            deleted: snapshot.index.deleted(),
            memory_bytes: snapshot.index.memory_bytes(),
        }
    }

    /// Starts the thread that rebuilds the search index in the background whenever it needs
    /// it (see [`SearchIndex::needs_rebuild`]): at start when the registry is above the
    /// approximate-search threshold, when it crosses it, and when deletions leave too many
    /// tombstones in the graph. Meanwhile the current index keeps serving. A rebuild copies
    /// the live voiceprints at version V, builds without any lock, then under the writer lock
    /// replays the store's changes after V onto the new index and swaps it in, so no change
    /// made during the build is lost. `on_change` hears the new status after each swap. The
    /// thread stops when the registry is dropped.
    pub fn maintain_index(
        self: &Arc<Self>,
        on_change: impl Fn(IndexStatus) + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let weak: Weak<Self> = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("index-builder".into())
            .spawn(move || {
                let mut retry = false;
                loop {
                    let next = if retry {
                        woken.recv_timeout(REBUILD_RETRY)
                    } else {
                        woken.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    };
                    if next == Err(RecvTimeoutError::Disconnected) {
                        return;
                    }
                    match Self::rebuild_once(&weak) {
                        Ok(Some(status)) => {
                            retry = false;
                            on_change(status);
                        }
                        Ok(None) => retry = false,
                        Err(e) => {
                            tracing::warn!(error = %e, "rebuilding the search index failed; the current index keeps serving, retrying");
                            retry = true;
                        }
                    }
                }
            })?;
        *self.indexer.lock().unwrap_or_else(|e| e.into_inner()) = Some(wake);
        self.wake_indexer_if_needed();
        Ok(thread)
    }

    /// Wakes the index builder when the index needs a rebuild.
    fn wake_indexer_if_needed(&self) {
        if !self.snapshot().index.needs_rebuild() {
            return;
        }
        if let Some(wake) = &*self.indexer.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = wake.try_send(());
        }
    }

    /// One background rebuild, if the index (still) needs one and the registry still exists;
    /// returns the new status.
    fn rebuild_once(weak: &Weak<Self>) -> Result<Option<IndexStatus>, RegistryError> {
        let Some(pending) = weak.upgrade().and_then(|r| r.prepare_rebuild()) else {
            return Ok(None);
        };
        let voiceprints = pending.rows.ids.len();
        tracing::info!(
            voiceprints,
            approximate = voiceprints > pending.config.approximate_above,
            registry_version = pending.from,
            threads = pending.config.threads(),
            "building the search index in the background; the current one keeps serving"
        );
        let started = Instant::now();
        let built = SearchIndex::build(pending.dim, pending.config, pending.rows, &|linked| {
            tracing::info!(
                linked,
                of = voiceprints,
                elapsed_s = started.elapsed().as_secs_f64(),
                "building the search index"
            );
        });
        let build_s = started.elapsed().as_secs_f64();
        let Some(registry) = weak.upgrade() else {
            return Ok(None);
        };
        let (replayed, version) = registry.swap_in(built, pending.from)?;
        let status = registry.index_status();
        tracing::info!(
            voiceprints = status.voiceprints,
            approximate = status.approximate,
            build_s,
            replayed_changes = replayed,
            registry_version = version,
            memory_mib = status.memory_bytes as f64 / (1024.0 * 1024.0),
            "search index rebuilt and swapped in"
        );
        registry.wake_indexer_if_needed();
        Ok(Some(status))
    }

    /// The copy a rebuild starts from, if the index needs one.
    fn prepare_rebuild(&self) -> Option<PendingRebuild> {
        let snapshot = self.snapshot();
        snapshot.index.needs_rebuild().then(|| PendingRebuild {
            rows: snapshot.index.rows(),
            config: *snapshot.index.config(),
            from: snapshot.version,
            dim: self.dim,
        })
    }

    /// Under the writer lock, brings `index`, built at version `from`, up to date with the
    /// store and makes it the registry's index; returns the changes replayed and the version.
    fn swap_in(&self, mut index: SearchIndex, from: u64) -> Result<(usize, u64), RegistryError> {
        let _w = self.lock_writer();
        let mut version = from;
        let mut replayed = 0;
        loop {
            let changes = self.store.changes_after(version, CATCH_UP_BATCH)?;
            if changes.is_empty() {
                break;
            }
            replayed += changes.len();
            version = apply_changes(&mut index, version, &changes, self.dim)?;
        }
        let mut snapshot = self.write_snapshot();
        index.configure(*snapshot.index.config());
        snapshot.index = index;
        snapshot.version = version;
        Ok((replayed, version))
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
        if !self.store.shared() {
            return None;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("registry-follower".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    let Some(registry) = weak.upgrade() else { return };
                    let before = registry.version();
                    match registry.sync() {
                        Ok(after) => {
                            if failing {
                                tracing::info!(version = after, "registry follower caught up again");
                                failing = false;
                            }
                            if after != before {
                                on_change(&registry);
                            }
                        }
                        Err(e) if !failing => {
                            tracing::warn!(error = %e, "registry follower cannot read changes; retrying");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                    let known = registry.version();
                    let store = &registry.store;
                    store.wait_for_change(known, backend::POLL_INTERVAL);
                }
            })
            .expect("spawning the registry follower thread");
        Some(thread)
    }

    /// Applies every change the store has beyond the index's version; returns the version
    /// reached.
    fn sync(&self) -> Result<u64, RegistryError> {
        let _w = self.lock_writer();
        self.catch_up()
    }

    /// The enrollment checks in force.
    pub fn policy(&self) -> &EnrollmentPolicy {
        &self.policy
    }

    /// The search index and its version, for reading.
    pub fn snapshot(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Current registry version.
    pub fn version(&self) -> u64 {
        self.snapshot().version
    }

    /// Numbers of artists and voiceprints.
    pub fn size(&self) -> Result<(u64, u64), RegistryError> {
        let (_, artists) = self.store.artists_after(None, 0)?;
        Ok((artists, self.snapshot().index.len() as u64))
    }

    /// Creates an artist; an empty `artist_id` gets a generated one.
    pub fn create_artist(
        &self,
        origin: &Origin,
        artist_id: &str,
        display_name: &str,
    ) -> Result<Artist, RegistryError> {
        let artist_id = if artist_id.is_empty() {
            format!("artist-{}", random_hex(6))
        } else {
            validate_id("artist_id", artist_id, 64)?;
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
        let _w = self.lock_writer();
        let version = self.store.insert_artist(origin, &artist)?;
        self.advance(version, IndexChange::Unchanged)?;
        Ok(artist)
    }

    /// One artist with its counts.
    pub fn artist(&self, artist_id: &str) -> Result<ArtistSummary, RegistryError> {
        let artist = self
            .store
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
        let (mut page, total) = self.store.artists_after(after, limit + 1)?;
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
        let _w = self.lock_writer();
        let (counts, version) = self.store.delete_artist(origin, artist_id)?;
        self.advance(version, IndexChange::ArtistDeleted(artist_id.to_string()))?;
        self.purge_deleted();
        Ok((counts, version))
    }

    /// Checks `embedding` of a reference against the policy and stores it as a new voiceprint
    /// of `artist_id`.
    pub fn enroll(
        &self,
        origin: &Origin,
        artist_id: &str,
        label: VoiceprintLabel,
        description: &str,
        embedding: &Embedding,
    ) -> Result<Enrolled, RegistryError> {
        if description.chars().count() > MAX_TEXT {
            return Err(RegistryError::Invalid(format!(
                "description must be at most {MAX_TEXT} characters"
            )));
        }
        let _w = self.lock_writer();
        self.store
            .artist(artist_id)?
            .ok_or_else(|| RegistryError::NotFound {
                what: "artist",
                id: artist_id.to_string(),
            })?;
        if embedding.voiced_s < self.policy.min_voiced_s {
            return Err(RegistryError::TooLittleVoice {
                voiced_s: embedding.voiced_s,
                min_s: self.policy.min_voiced_s,
            });
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
            match self
                .store
                .insert_voiceprint(origin, &voiceprint, checked_at)
            {
                Ok(version) => {
                    self.advance(version, IndexChange::Enrolled(Some(voiceprint.clone())))?;
                    return Ok(Enrolled {
                        voiceprint,
                        consistency_score,
                        nearest_other,
                        version,
                    });
                }
                Err(RegistryError::Stale) => {
                    self.catch_up()?;
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
            let snapshot = self.snapshot();
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
                    .store
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
        self.store.voiceprints_of(artist_id)
    }

    /// Deletes one voiceprint from the store and the index, then purges it from the file;
    /// returns the new version.
    pub fn delete_voiceprint(
        &self,
        origin: &Origin,
        voiceprint_id: &str,
    ) -> Result<u64, RegistryError> {
        let _w = self.lock_writer();
        let (_, version) = self.store.delete_voiceprint(origin, voiceprint_id)?;
        self.advance(
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
        let _w = self.lock_writer();
        let version = self.store.put_authorization(origin, &grant)?;
        self.advance(version, IndexChange::Unchanged)?;
        Ok(grant)
    }

    /// Withdraws an authorization; returns the new version.
    pub fn revoke(
        &self,
        origin: &Origin,
        artist_id: &str,
        party_id: &str,
    ) -> Result<u64, RegistryError> {
        let _w = self.lock_writer();
        let version = self
            .store
            .delete_authorization(origin, artist_id, party_id)?;
        self.advance(version, IndexChange::Unchanged)?;
        Ok(version)
    }

    /// An artist's authorizations.
    pub fn authorizations(&self, artist_id: &str) -> Result<Vec<Authorization>, RegistryError> {
        self.artist(artist_id)?;
        self.store.authorizations_of(artist_id)
    }

    /// Whether `party_id` is authorized by `artist_id`.
    pub fn is_authorized(&self, artist_id: &str, party_id: &str) -> Result<bool, RegistryError> {
        Ok(self.store.authorization(artist_id, party_id)?.is_some())
    }

    /// A page of the audit trail (see [`AuditQuery`]) and whether more events follow.
    pub fn audit_events(
        &self,
        query: &AuditQuery,
    ) -> Result<(Vec<AuditEvent>, bool), RegistryError> {
        self.store.audit_events(query)
    }

    /// Cross-checks the store's tables, the audit trail and the search index (see
    /// [`consistency`]) under the writer lock; [`RegistryError::Corrupt`] lists every
    /// disagreement.
    pub fn verify(&self) -> Result<consistency::Verified, RegistryError> {
        let _w = self.lock_writer();
        let contents = self.store.contents()?;
        let problems = {
            let snapshot = self.snapshot();
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

    /// An artist's record, if it exists.
    pub fn find_artist(&self, artist_id: &str) -> Result<Option<Artist>, RegistryError> {
        self.store.artist(artist_id)
    }

    fn summarise(&self, artist: Artist) -> Result<ArtistSummary, RegistryError> {
        let counts = self.store.counts_of(&artist.artist_id)?;
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
        if let Err(e) = self.store.purge() {
            tracing::error!(error = %e, "purging deleted records from the registry file failed; retried after the next deletion or at the next start");
        }
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_snapshot(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.snapshot.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the index to `version` after this process committed `change` there: applies it
    /// directly when it is the next version, else catches up from the store (another replica
    /// committed in between). Called with the writer lock held.
    fn advance(&self, version: u64, change: IndexChange) -> Result<(), RegistryError> {
        let next = self.snapshot().version + 1;
        if version == next {
            self.apply(&[VersionedChange { version, change }])
        } else if version > next {
            self.catch_up().map(|_| ())
        } else {
            Ok(())
        }
    }

    /// Applies the store's changes beyond the index's version; called with the writer lock.
    fn catch_up(&self) -> Result<u64, RegistryError> {
        loop {
            let from = self.snapshot().version;
            let changes = self.store.changes_after(from, CATCH_UP_BATCH)?;
            if changes.is_empty() {
                return Ok(from);
            }
            self.apply(&changes)?;
        }
    }

    /// Applies changes, in version order, that are newer than the index; wakes the index
    /// builder when they leave the index needing a rebuild.
    fn apply(&self, changes: &[VersionedChange]) -> Result<(), RegistryError> {
        {
            let mut snapshot = self.write_snapshot();
            let Snapshot { index, version } = &mut *snapshot;
            *version = apply_changes(index, *version, changes, self.dim)?;
        }
        self.wake_indexer_if_needed();
        Ok(())
    }
}

/// Applies to `index`, at `version`, the `changes` newer than that, in order; returns the
/// version reached.
fn apply_changes(
    index: &mut SearchIndex,
    mut version: u64,
    changes: &[VersionedChange],
    dim: usize,
) -> Result<u64, RegistryError> {
    for VersionedChange {
        version: at,
        change,
    } in changes
    {
        if *at <= version {
            continue;
        }
        match change {
            IndexChange::Enrolled(Some(vp)) => {
                check_dim(vp, dim)?;
                index.insert(&vp.voiceprint_id, &vp.artist_id, &vp.embedding);
            }
            IndexChange::VoiceprintDeleted(id) => {
                index.remove(id);
            }
            IndexChange::ArtistDeleted(id) => {
                index.remove_artist(id);
            }
            IndexChange::Enrolled(None) | IndexChange::Unchanged => {}
        }
        version = *at;
    }
    Ok(version)
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

fn check_dim(vp: &Voiceprint, dim: usize) -> Result<(), RegistryError> {
    if vp.embedding.len() != dim {
        return Err(RegistryError::Corrupt(format!(
            "voiceprint {} has {} dimensions, the model {dim}",
            vp.voiceprint_id,
            vp.embedding.len()
        )));
    }
    Ok(())
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
            "{field} must be 1-{max} characters from [A-Za-z0-9._-], got {id:?}"
        )))
    }
}

/// Checks a party id: 1-128 printable characters, no control characters.
pub fn validate_party(party_id: &str) -> Result<(), RegistryError> {
    let n = party_id.chars().count();
    if n == 0 || n > 128 || party_id.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "party_id must be 1-128 printable characters, got {party_id:?}"
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
