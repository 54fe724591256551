//! What a registry store must do, whichever engine holds it: the embedded [`store`](super::store)
//! file (the default) or a shared [`postgres`](super::postgres) database. The [`Registry`](super::Registry)
//! keeps its search index in step with a store through [`RegistryStore::changes_after`], which
//! is how replicas sharing one database see each other's changes.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::audit::{AuditEvent, AuditQuery, Origin};
use super::consistency::Contents;
use super::dump::Dump;
use super::replay::{Recorded, ToRecord};
use super::types::{Artist, Authorization, RegistryError, Voiceprint};

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreLocation {
    /// The embedded file `registry.redb` in this directory.
    Embedded(PathBuf),
    /// A PostgreSQL database.
    Postgres {
        /// Its `postgres://` URL.
        url: String,
        /// How connections to it are pooled.
        pool: PoolSettings,
    },
}

impl StoreLocation {
    /// Reads a `--registry` value: a `postgres://` or `postgresql://` URL, else a directory
    /// for the embedded store.
    pub fn parse(value: &str) -> Self {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Self::Postgres {
                url: value.to_string(),
                pool: PoolSettings::default(),
            }
        } else {
            Self::Embedded(PathBuf::from(value))
        }
    }
}

/// Connection pool settings (`[postgres]` in the server configuration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait to open a connection, ms.
    pub connect_timeout_ms: u64,
    /// Longest wait for a free connection from the pool, ms.
    pub acquire_timeout_ms: u64,
    /// Longest a statement may run before the database cancels it, ms.
    pub statement_timeout_ms: u64,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout_ms: 3000,
            acquire_timeout_ms: 5000,
            statement_timeout_ms: 10_000,
        }
    }
}

/// Numbers of records one deletion removed, or one artist holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Voiceprints.
    pub voiceprints: u32,
    /// Authorizations.
    pub authorizations: u32,
}

/// What one committed change did, for the registry's in-memory view (the search index, the
/// artists' names and the parties they authorize).
#[derive(Debug, Clone, PartialEq)]
pub enum IndexChange {
    /// An artist was created; its display name is `None` when it has been deleted since.
    ArtistCreated {
        /// The artist.
        artist_id: String,
        /// Its display name, as stored.
        display_name: Option<String>,
    },
    /// An artist was deleted with all its voiceprints and authorizations.
    ArtistDeleted(String),
    /// A voiceprint was enrolled; `None` when it has been deleted since.
    Enrolled(Option<Voiceprint>),
    /// A voiceprint was deleted.
    VoiceprintDeleted(String),
    /// A party was authorized by an artist (or its grant renewed).
    Granted {
        /// The artist granting it.
        artist_id: String,
        /// The party.
        party_id: String,
    },
    /// A party's authorization was withdrawn.
    Revoked {
        /// The artist.
        artist_id: String,
        /// The party.
        party_id: String,
    },
}

/// What the registry's in-memory view is built from at open, read in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewContents {
    /// Registry version of the contents.
    pub version: u64,
    /// Every artist.
    pub artists: Vec<Artist>,
    /// Every voiceprint.
    pub voiceprints: Vec<Voiceprint>,
    /// Every authorization.
    pub authorizations: Vec<Authorization>,
}

/// A change of the registry with the version it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedChange {
    /// Registry version after the change.
    pub version: u64,
    /// What it did.
    pub change: IndexChange,
}

/// A registry store. Every change is one transaction that bumps the registry version by one
/// and appends its audit event; a failed change writes nothing.
pub trait RegistryStore: Send + Sync {
    /// Where the store is, for logs and messages (never a password).
    fn describe(&self) -> String;
    /// The registry version: the number of committed changes.
    fn version(&self) -> Result<u64, RegistryError>;
    /// One artist.
    fn artist(&self, artist_id: &str) -> Result<Option<Artist>, RegistryError>;
    /// Up to `limit` artists with ids after `after`, in id order, and the total count.
    fn artists_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Artist>, u64), RegistryError>;
    /// Every voiceprint of one artist, in id order.
    fn voiceprints_of(&self, artist_id: &str) -> Result<Vec<Voiceprint>, RegistryError>;
    /// Every artist, voiceprint and authorization, with the registry version they were read
    /// at (to build the in-memory view).
    fn view_contents(&self) -> Result<ViewContents, RegistryError>;
    /// Numbers of voiceprints and authorizations of one artist.
    fn counts_of(&self, artist_id: &str) -> Result<Counts, RegistryError>;
    /// One authorization, if granted.
    fn authorization(
        &self,
        artist_id: &str,
        party_id: &str,
    ) -> Result<Option<Authorization>, RegistryError>;
    /// Every authorization of one artist, in party order.
    fn authorizations_of(&self, artist_id: &str) -> Result<Vec<Authorization>, RegistryError>;
    /// The record a keyed write by `actor` with `request_id` left, if any (see
    /// [`super::replay`]).
    fn recorded(&self, actor: &str, request_id: &str) -> Result<Option<Recorded>, RegistryError>;
    /// Inserts a new artist; `AlreadyExists` if the id is taken. Returns the new version.
    ///
    /// Every change below also writes `record`, when given, under `origin`'s actor and its
    /// request id, in the same transaction; when that id is recorded already, nothing is
    /// written and the change fails with [`RegistryError::AlreadyApplied`].
    fn insert_artist(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        artist: &Artist,
    ) -> Result<u64, RegistryError>;
    /// Deletes an artist with its voiceprints and authorizations.
    fn delete_artist(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        artist_id: &str,
    ) -> Result<(Counts, u64), RegistryError>;
    /// Stores a new voiceprint of an existing artist, provided the registry is still at
    /// `checked_at`, the version the enrollment checks saw; else [`RegistryError::Stale`].
    fn insert_voiceprint(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        voiceprint: &Voiceprint,
        checked_at: u64,
    ) -> Result<u64, RegistryError>;
    /// Deletes one voiceprint; returns its artist and the new version.
    fn delete_voiceprint(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        voiceprint_id: &str,
    ) -> Result<(String, u64), RegistryError>;
    /// Grants (or re-grants) an authorization to a party of an existing artist.
    fn put_authorization(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        grant: &Authorization,
    ) -> Result<u64, RegistryError>;
    /// Revokes an authorization; `NotFound` if it was not granted.
    fn delete_authorization(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        artist_id: &str,
        party_id: &str,
    ) -> Result<u64, RegistryError>;
    /// Up to `query.limit` audit events matching `query`, in sequence order, and whether more
    /// follow.
    fn audit_events(&self, query: &AuditQuery) -> Result<(Vec<AuditEvent>, bool), RegistryError>;
    /// Up to `limit` changes after `version`, in order, for catching the index up.
    fn changes_after(
        &self,
        version: u64,
        limit: usize,
    ) -> Result<Vec<VersionedChange>, RegistryError>;
    /// Every record, read in one transaction, for consistency checks.
    fn contents(&self) -> Result<Contents, RegistryError>;
    /// Makes deleted records unreadable from the storage, after a deletion.
    fn purge(&self) -> Result<(), RegistryError>;
    /// Whether a committed deletion still awaits its purge.
    fn purge_pending(&self) -> Result<bool, RegistryError>;
    /// Every record and the whole audit trail, read in one transaction (export).
    fn dump(&self) -> Result<Dump, RegistryError>;
    /// Writes a dump into this store, which must be empty, in one transaction (import).
    fn load(&self, dump: &Dump) -> Result<(), RegistryError>;
    /// Whether other processes write to this store too, so that the index must follow it.
    fn shared(&self) -> bool {
        false
    }
    /// Blocks until another process may have changed the registry past `known`, or `timeout`
    /// passes; a store only this process writes just waits.
    fn wait_for_change(&self, known: u64, timeout: Duration) {
        let _ = known;
        std::thread::sleep(timeout);
    }
}

/// How long a shared store's follower waits for a notification before it checks the version
/// anyway: the bound on the delay when notifications are lost.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
