//! The embedded registry store: one `redb` file, every change one transaction that is
//! durable when the call returns and that appends its [`audit`](super::audit) event. It also
//! pins the model the registry was built with, and purges deleted records from the file.

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::audit::{self, AuditAction, AuditEvent, AuditQuery, Change, Origin};
use super::backend::{Counts, IndexChange, RegistryStore, VersionedChange, ViewContents};
use super::consistency::Contents;
use super::dump::Dump;
use super::purge;
use super::replay::{Recorded, ToRecord};
use super::types::{Artist, Authorization, RegistryError, Voiceprint};
use crate::encoder::ModelId;

/// `meta`: schema version, model identity, registry version, and `purge_pending` while a
/// deletion's bytes may still be in the file.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `artists`: artist id → JSON [`Artist`].
const ARTISTS: TableDefinition<&str, &[u8]> = TableDefinition::new("artists");
/// `voiceprints`: `artist id \0 voiceprint id` → JSON [`Voiceprint`].
const VOICEPRINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("voiceprints");
/// `voiceprint_owners`: voiceprint id → artist id.
const OWNERS: TableDefinition<&str, &str> = TableDefinition::new("voiceprint_owners");
/// `authorizations`: `artist id \0 party id` → JSON [`Authorization`].
const AUTHORIZATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("authorizations");
/// `write_keys`: `actor \0 request id` → JSON [`Recorded`] of a keyed write.
const WRITE_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("write_keys");

/// Layout version of the file; a file written by a newer layout is refused. Version 2 added
/// the audit trail; a version 1 file is migrated when opened, and older builds refuse version
/// 2 so that none can change the registry without recording it. Version 3 added the write
/// keys of idempotent writes (older builds would not keep them, nor their table in a purge).
const SCHEMA_VERSION: u64 = 3;

/// The `meta` key present while a committed deletion has not yet been purged from the file.
const PURGE_PENDING: &str = "purge_pending";

impl From<redb::Error> for RegistryError {
    fn from(e: redb::Error) -> Self {
        RegistryError::Storage(e.to_string())
    }
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for RegistryError {
            fn from(e: $t) -> Self {
                RegistryError::Storage(e.to_string())
            }
        }
    )*};
}
storage_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Keys of one artist's rows in a table keyed `artist \0 rest`: from `artist\0` up to, not
/// including, `artist\x01`.
fn artist_prefix(artist_id: &str) -> (String, String) {
    (format!("{artist_id}\0"), format!("{artist_id}\u{1}"))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("registry records serialise")
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::Corrupt(format!("unreadable {what} record: {e}")))
}

/// The registry file.
pub struct EmbeddedStore {
    /// The open database; replaced by a purged copy after deletions.
    db: RwLock<Database>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (or creates) `path`. A new file is stamped with `model`; an existing one must have
    /// been built with the same model, else [`RegistryError::ModelMismatch`]. A file of schema
    /// version 1 gains the audit tables; a purge a crash interrupted is finished.
    pub fn open(path: &Path, model: &ModelId) -> Result<Self, RegistryError> {
        let db = Database::create(path)?;
        // Only once this process holds the file: the leftover of an interrupted purge.
        purge::remove_if_present(&purge::scratch_path(path))?;
        let tx = db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let schema = meta.get("schema_version")?.map(|v| read_u64(v.value()));
            match schema {
                Some(Some(v)) if v > SCHEMA_VERSION => {
                    return Err(RegistryError::Corrupt(format!(
                        "{} has registry schema version {v}, newer than this build's {SCHEMA_VERSION}: run a newer vocalguard",
                        path.display()
                    )))
                }
                Some(v) => {
                    if v.is_some_and(|v| v < SCHEMA_VERSION) {
                        meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                    }
                    let stored = ModelId {
                        name: text(meta.get("model_name")?.as_ref().map(|v| v.value())),
                        sha256: text(meta.get("model_sha256")?.as_ref().map(|v| v.value())),
                    };
                    if stored != *model {
                        return Err(RegistryError::ModelMismatch {
                            path: path.display().to_string(),
                            registry: stored,
                            loaded: model.clone(),
                        });
                    }
                }
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                    meta.insert("model_name", model.name.as_bytes())?;
                    meta.insert("model_sha256", model.sha256.as_bytes())?;
                    meta.insert("version", 0u64.to_le_bytes().as_slice())?;
                }
            }
            tx.open_table(ARTISTS)?;
            tx.open_table(VOICEPRINTS)?;
            tx.open_table(OWNERS)?;
            tx.open_table(AUTHORIZATIONS)?;
            tx.open_table(WRITE_KEYS)?;
            audit::create_tables(&tx)?;
        }
        tx.commit()?;
        let store = Self {
            db: RwLock::new(db),
            path: path.to_path_buf(),
        };
        if store.purge_pending()? {
            store.purge()?;
        }
        Ok(store)
    }

    /// Opens an existing registry file with whatever model it was built with.
    pub fn open_existing(path: &Path) -> Result<Self, RegistryError> {
        if !path.is_file() {
            return Err(RegistryError::NotFound {
                what: "registry file",
                id: path.display().to_string(),
            });
        }
        let model = {
            let db = Database::open(path)?;
            let tx = db.begin_read()?;
            let meta = tx.open_table(META)?;
            ModelId {
                name: text(meta.get("model_name")?.as_ref().map(|v| v.value())),
                sha256: text(meta.get("model_sha256")?.as_ref().map(|v| v.value())),
            }
        };
        Self::open(path, &model)
    }

    /// The open database, for reading or for a write transaction.
    fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `apply` in a write transaction, bumps the registry version, appends the audit event
    /// of the change `apply` reports (made by `origin`), keeps `record` under the origin's
    /// actor and request id, and commits; nothing is written when `apply` fails or the request
    /// id is recorded already ([`RegistryError::AlreadyApplied`]). Returns the new version.
    fn change(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        apply: impl FnOnce(&redb::WriteTransaction) -> Result<Change, RegistryError>,
    ) -> Result<u64, RegistryError> {
        let db = self.db();
        let tx = db.begin_write()?;
        let key = record.map(|r| write_key(&origin.actor, &r.request_id));
        if let Some(key) = &key {
            if tx.open_table(WRITE_KEYS)?.get(key.as_str())?.is_some() {
                tx.abort()?;
                return Err(RegistryError::AlreadyApplied);
            }
        }
        let change = match apply(&tx) {
            Ok(change) => change,
            Err(e) => {
                tx.abort()?;
                return Err(e);
            }
        };
        let version = {
            let mut meta = tx.open_table(META)?;
            let version = meta
                .get("version")?
                .and_then(|v| read_u64(v.value()))
                .unwrap_or(0)
                + 1;
            meta.insert("version", version.to_le_bytes().as_slice())?;
            version
        };
        audit::append(&tx, origin, change, version)?;
        if let (Some(key), Some(record)) = (key, record) {
            let recorded = Recorded {
                fingerprint: record.fingerprint.clone(),
                outcome: record.outcome.clone(),
                version,
                at_unix_ms: audit::now_ms(),
            };
            tx.open_table(WRITE_KEYS)?
                .insert(key.as_str(), encode(&recorded).as_slice())?;
        }
        tx.commit()?;
        Ok(version)
    }
}

/// The `write_keys` key of `actor`'s `request_id`.
fn write_key(actor: &str, request_id: &str) -> String {
    format!("{actor}\0{request_id}")
}

impl RegistryStore for EmbeddedStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    /// The registry version: the number of committed changes.
    fn version(&self) -> Result<u64, RegistryError> {
        read_version(&self.db().begin_read()?)
    }

    /// One artist.
    fn artist(&self, artist_id: &str) -> Result<Option<Artist>, RegistryError> {
        let tx = self.db().begin_read()?;
        let artists = tx.open_table(ARTISTS)?;
        let found = artists.get(artist_id)?;
        found.map(|v| decode(v.value(), "artist")).transpose()
    }

    /// Up to `limit` artists with ids after `after`, in id order, and the total count.
    fn artists_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Artist>, u64), RegistryError> {
        let tx = self.db().begin_read()?;
        let artists = tx.open_table(ARTISTS)?;
        let total = artists.len()?;
        let mut page = Vec::new();
        let range = match after {
            Some(after) => artists
                .range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?,
            None => artists.range::<&str>(..)?,
        };
        for entry in range.take(limit) {
            let (_, value) = entry?;
            page.push(decode(value.value(), "artist")?);
        }
        Ok((page, total))
    }

    /// Every voiceprint of one artist, in id order.
    fn voiceprints_of(&self, artist_id: &str) -> Result<Vec<Voiceprint>, RegistryError> {
        let tx = self.db().begin_read()?;
        let table = tx.open_table(VOICEPRINTS)?;
        let (from, to) = artist_prefix(artist_id);
        let mut out = Vec::new();
        for entry in table.range(from.as_str()..to.as_str())? {
            out.push(decode(entry?.1.value(), "voiceprint")?);
        }
        Ok(out)
    }

    /// Every voiceprint in the registry (to build the search index).
    fn view_contents(&self) -> Result<ViewContents, RegistryError> {
        read_records(&self.db().begin_read()?)
    }

    /// Numbers of voiceprints and authorizations of one artist.
    fn counts_of(&self, artist_id: &str) -> Result<Counts, RegistryError> {
        let tx = self.db().begin_read()?;
        let (from, to) = artist_prefix(artist_id);
        let voiceprints = tx
            .open_table(VOICEPRINTS)?
            .range(from.as_str()..to.as_str())?
            .count() as u32;
        let authorizations = tx
            .open_table(AUTHORIZATIONS)?
            .range(from.as_str()..to.as_str())?
            .count() as u32;
        Ok(Counts {
            voiceprints,
            authorizations,
        })
    }

    /// One authorization, if granted.
    fn authorization(
        &self,
        artist_id: &str,
        party_id: &str,
    ) -> Result<Option<Authorization>, RegistryError> {
        let tx = self.db().begin_read()?;
        let table = tx.open_table(AUTHORIZATIONS)?;
        let found = table.get(format!("{artist_id}\0{party_id}").as_str())?;
        found
            .map(|v| decode(v.value(), "authorization"))
            .transpose()
    }

    /// Every authorization of one artist, in party order.
    fn authorizations_of(&self, artist_id: &str) -> Result<Vec<Authorization>, RegistryError> {
        let tx = self.db().begin_read()?;
        let table = tx.open_table(AUTHORIZATIONS)?;
        let (from, to) = artist_prefix(artist_id);
        let mut out = Vec::new();
        for entry in table.range(from.as_str()..to.as_str())? {
            out.push(decode(entry?.1.value(), "authorization")?);
        }
        Ok(out)
    }

    /// Inserts a new artist; `AlreadyExists` if the id is taken. Returns the new version.
    fn recorded(&self, actor: &str, request_id: &str) -> Result<Option<Recorded>, RegistryError> {
        let tx = self.db().begin_read()?;
        let table = tx.open_table(WRITE_KEYS)?;
        let found = table.get(write_key(actor, request_id).as_str())?;
        found
            .map(|bytes| decode(bytes.value(), "write key"))
            .transpose()
    }

    fn insert_artist(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        artist: &Artist,
    ) -> Result<u64, RegistryError> {
        self.change(origin, record, |tx| {
            let mut artists = tx.open_table(ARTISTS)?;
            if artists.get(artist.artist_id.as_str())?.is_some() {
                return Err(RegistryError::AlreadyExists {
                    what: "artist",
                    id: artist.artist_id.clone(),
                });
            }
            artists.insert(artist.artist_id.as_str(), encode(artist).as_slice())?;
            Ok(Change::artist(AuditAction::CreateArtist, &artist.artist_id))
        })
    }

    /// Deletes an artist with its voiceprints and authorizations, in one transaction that
    /// marks a purge pending (see [`EmbeddedStore::purge`]).
    fn delete_artist(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        artist_id: &str,
    ) -> Result<(Counts, u64), RegistryError> {
        let mut counts = Counts {
            voiceprints: 0,
            authorizations: 0,
        };
        let version = self.change(origin, record, |tx| {
            if tx.open_table(ARTISTS)?.remove(artist_id)?.is_none() {
                return Err(RegistryError::NotFound {
                    what: "artist",
                    id: artist_id.to_string(),
                });
            }
            let (from, to) = artist_prefix(artist_id);
            let mut voiceprints = tx.open_table(VOICEPRINTS)?;
            let mut owners = tx.open_table(OWNERS)?;
            for entry in voiceprints.extract_from_if(from.as_str()..to.as_str(), |_, _| true)? {
                let (key, _) = entry?;
                let key = key.value();
                let id = key.split('\0').nth(1).unwrap_or_default();
                owners.remove(id)?;
                counts.voiceprints += 1;
            }
            let mut authorizations = tx.open_table(AUTHORIZATIONS)?;
            for entry in authorizations.extract_from_if(from.as_str()..to.as_str(), |_, _| true)? {
                entry?;
                counts.authorizations += 1;
            }
            mark_purge_pending(tx)?;
            Ok(Change::artist(AuditAction::DeleteArtist, artist_id))
        })?;
        Ok((counts, version))
    }

    /// Stores a new voiceprint of an existing artist.
    fn insert_voiceprint(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        voiceprint: &Voiceprint,
        checked_at: u64,
    ) -> Result<u64, RegistryError> {
        self.change(origin, record, |tx| {
            let version = tx
                .open_table(META)?
                .get("version")?
                .and_then(|v| read_u64(v.value()));
            if version.unwrap_or(0) != checked_at {
                return Err(RegistryError::Stale);
            }
            if tx
                .open_table(ARTISTS)?
                .get(voiceprint.artist_id.as_str())?
                .is_none()
            {
                return Err(RegistryError::NotFound {
                    what: "artist",
                    id: voiceprint.artist_id.clone(),
                });
            }
            let key = format!("{}\0{}", voiceprint.artist_id, voiceprint.voiceprint_id);
            tx.open_table(VOICEPRINTS)?
                .insert(key.as_str(), encode(voiceprint).as_slice())?;
            tx.open_table(OWNERS)?.insert(
                voiceprint.voiceprint_id.as_str(),
                voiceprint.artist_id.as_str(),
            )?;
            Ok(Change::voiceprint(
                AuditAction::EnrollVoiceprint,
                &voiceprint.artist_id,
                &voiceprint.voiceprint_id,
            ))
        })
    }

    /// Deletes one voiceprint in a transaction that marks a purge pending (see
    /// [`EmbeddedStore::purge`]); returns its artist and the new version.
    fn delete_voiceprint(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        voiceprint_id: &str,
    ) -> Result<(String, u64), RegistryError> {
        let mut artist = String::new();
        let version = self.change(origin, record, |tx| {
            let mut owners = tx.open_table(OWNERS)?;
            let owner = owners.remove(voiceprint_id)?.map(|v| v.value().to_string());
            let Some(owner) = owner else {
                return Err(RegistryError::NotFound {
                    what: "voiceprint",
                    id: voiceprint_id.to_string(),
                });
            };
            let key = format!("{owner}\0{voiceprint_id}");
            tx.open_table(VOICEPRINTS)?.remove(key.as_str())?;
            mark_purge_pending(tx)?;
            let change = Change::voiceprint(AuditAction::DeleteVoiceprint, &owner, voiceprint_id);
            artist = owner;
            Ok(change)
        })?;
        Ok((artist, version))
    }

    /// Grants (or re-grants) an authorization to a party of an existing artist.
    fn put_authorization(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        grant: &Authorization,
    ) -> Result<u64, RegistryError> {
        self.change(origin, record, |tx| {
            if tx
                .open_table(ARTISTS)?
                .get(grant.artist_id.as_str())?
                .is_none()
            {
                return Err(RegistryError::NotFound {
                    what: "artist",
                    id: grant.artist_id.clone(),
                });
            }
            let key = format!("{}\0{}", grant.artist_id, grant.party_id);
            tx.open_table(AUTHORIZATIONS)?
                .insert(key.as_str(), encode(grant).as_slice())?;
            Ok(Change::party(
                AuditAction::GrantAuthorization,
                &grant.artist_id,
                &grant.party_id,
            ))
        })
    }

    /// Revokes an authorization; `NotFound` if it was not granted.
    fn delete_authorization(
        &self,
        origin: &Origin,
        record: Option<&ToRecord>,
        artist_id: &str,
        party_id: &str,
    ) -> Result<u64, RegistryError> {
        self.change(origin, record, |tx| {
            let key = format!("{artist_id}\0{party_id}");
            if tx
                .open_table(AUTHORIZATIONS)?
                .remove(key.as_str())?
                .is_none()
            {
                return Err(RegistryError::NotFound {
                    what: "authorization",
                    id: format!("{party_id} of artist {artist_id}"),
                });
            }
            Ok(Change::party(
                AuditAction::RevokeAuthorization,
                artist_id,
                party_id,
            ))
        })
    }

    /// Up to `query.limit` audit events matching `query`, in sequence order, and whether more
    /// follow.
    fn audit_events(&self, query: &AuditQuery) -> Result<(Vec<AuditEvent>, bool), RegistryError> {
        audit::list(&self.db().begin_read()?, query)
    }

    /// Every record, read in one transaction, for [`consistency`](super::consistency) checks.
    fn contents(&self) -> Result<Contents, RegistryError> {
        let tx = self.db().begin_read()?;
        let mut contents = Contents {
            version: read_version(&tx)?,
            ..Contents::default()
        };
        for entry in tx.open_table(ARTISTS)?.iter()? {
            let (key, value) = entry?;
            let artist = decode(value.value(), "artist")?;
            contents.artists.insert(key.value().to_string(), artist);
        }
        for entry in tx.open_table(VOICEPRINTS)?.iter()? {
            let (key, value) = entry?;
            let voiceprint = decode(value.value(), "voiceprint")?;
            contents
                .voiceprints
                .insert(key.value().to_string(), voiceprint);
        }
        for entry in tx.open_table(OWNERS)?.iter()? {
            let (key, value) = entry?;
            contents
                .owners
                .insert(key.value().to_string(), value.value().to_string());
        }
        for entry in tx.open_table(AUTHORIZATIONS)?.iter()? {
            let (key, value) = entry?;
            let grant = decode(value.value(), "authorization")?;
            contents
                .authorizations
                .insert(key.value().to_string(), grant);
        }
        let events = tx.open_table(audit::EVENTS)?;
        contents.audit_events = events.len()?;
        contents.last_audit_event = events
            .last()?
            .map(|(_, value)| decode(value.value(), "audit event"))
            .transpose()?;
        Ok(contents)
    }

    /// Whether a committed deletion still awaits its purge.
    fn purge_pending(&self) -> Result<bool, RegistryError> {
        let tx = self.db().begin_read()?;
        let meta = tx.open_table(META)?;
        let pending = meta.get(PURGE_PENDING)?.is_some();
        Ok(pending)
    }

    /// Rewrites the file with only its live records (see [`purge`](super::purge)), so that
    /// nothing deleted can be read back from it, and clears the pending mark. Reads and writes
    /// wait while it runs.
    fn purge(&self) -> Result<(), RegistryError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        let fresh = purge::rewrite(&db, &self.path, |from, to| {
            purge::copy_table(from, to, META)?;
            purge::copy_table(from, to, ARTISTS)?;
            purge::copy_table(from, to, VOICEPRINTS)?;
            purge::copy_table(from, to, OWNERS)?;
            purge::copy_table(from, to, AUTHORIZATIONS)?;
            purge::copy_table(from, to, WRITE_KEYS)?;
            purge::copy_table(from, to, audit::EVENTS)?;
            purge::copy_table(from, to, audit::BY_ARTIST)?;
            to.open_table(META)?.remove(PURGE_PENDING)?;
            Ok(())
        })?;
        *db = fresh;
        Ok(())
    }

    fn changes_after(
        &self,
        version: u64,
        limit: usize,
    ) -> Result<Vec<VersionedChange>, RegistryError> {
        let tx = self.db().begin_read()?;
        let events = tx.open_table(audit::EVENTS)?;
        let artists = tx.open_table(ARTISTS)?;
        let owners = tx.open_table(OWNERS)?;
        let voiceprints = tx.open_table(VOICEPRINTS)?;
        let mut newest_first = Vec::new();
        for entry in events.iter()?.rev() {
            let event: AuditEvent = decode(entry?.1.value(), "audit event")?;
            if event.registry_version <= version {
                break;
            }
            newest_first.push(event);
        }
        let mut out = Vec::new();
        for event in newest_first.into_iter().rev().take(limit) {
            let (sequence, action) = (event.sequence, event.action);
            let party = |party_id: Option<String>| {
                party_id.ok_or_else(|| {
                    RegistryError::Corrupt(format!(
                        "audit event {sequence} ({action:?}) names no party"
                    ))
                })
            };
            let change = match (event.action, event.voiceprint_id) {
                (AuditAction::CreateArtist, _) => {
                    let stored: Option<Artist> = artists
                        .get(event.artist_id.as_str())?
                        .map(|a| decode(a.value(), "artist"))
                        .transpose()?;
                    IndexChange::ArtistCreated {
                        display_name: stored.map(|a| a.display_name),
                        artist_id: event.artist_id,
                    }
                }
                (AuditAction::GrantAuthorization, _) => IndexChange::Granted {
                    party_id: party(event.party_id)?,
                    artist_id: event.artist_id,
                },
                (AuditAction::RevokeAuthorization, _) => IndexChange::Revoked {
                    party_id: party(event.party_id)?,
                    artist_id: event.artist_id,
                },
                (AuditAction::EnrollVoiceprint, Some(id)) => {
                    let stored = match owners.get(id.as_str())? {
                        Some(owner) => {
                            let key = format!("{}\0{id}", owner.value());
                            voiceprints
                                .get(key.as_str())?
                                .map(|v| decode(v.value(), "voiceprint"))
                                .transpose()?
                        }
                        None => None,
                    };
                    IndexChange::Enrolled(stored)
                }
                (AuditAction::DeleteVoiceprint, Some(id)) => IndexChange::VoiceprintDeleted(id),
                (AuditAction::DeleteArtist, _) => IndexChange::ArtistDeleted(event.artist_id),
                (AuditAction::EnrollVoiceprint | AuditAction::DeleteVoiceprint, None) => {
                    return Err(RegistryError::Corrupt(format!(
                        "audit event {sequence} ({action:?}) names no voiceprint"
                    )))
                }
            };
            out.push(VersionedChange {
                version: event.registry_version,
                change,
            });
        }
        Ok(out)
    }

    fn dump(&self) -> Result<Dump, RegistryError> {
        let tx = self.db().begin_read()?;
        let meta = tx.open_table(META)?;
        let model = ModelId {
            name: text(meta.get("model_name")?.as_ref().map(|v| v.value())),
            sha256: text(meta.get("model_sha256")?.as_ref().map(|v| v.value())),
        };
        let records = read_records(&tx)?;
        let mut dump = Dump {
            model,
            version: records.version,
            artists: records.artists,
            voiceprints: records.voiceprints,
            authorizations: records.authorizations,
            audit_events: Vec::new(),
        };
        for entry in tx.open_table(audit::EVENTS)?.iter()? {
            dump.audit_events
                .push(decode(entry?.1.value(), "audit event")?);
        }
        Ok(dump)
    }

    fn load(&self, dump: &Dump) -> Result<(), RegistryError> {
        let db = self.db();
        let tx = db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let version = meta
                .get("version")?
                .and_then(|v| read_u64(v.value()))
                .unwrap_or(0);
            if version != 0 || !tx.open_table(ARTISTS)?.is_empty()? {
                return Err(RegistryError::Invalid(format!(
                    "{} is not empty (registry version {version}); import only into a new registry",
                    self.path.display()
                )));
            }
            meta.insert("version", dump.version.to_le_bytes().as_slice())?;
            let mut artists = tx.open_table(ARTISTS)?;
            for artist in &dump.artists {
                artists.insert(artist.artist_id.as_str(), encode(artist).as_slice())?;
            }
            let mut voiceprints = tx.open_table(VOICEPRINTS)?;
            let mut owners = tx.open_table(OWNERS)?;
            for vp in &dump.voiceprints {
                let key = format!("{}\0{}", vp.artist_id, vp.voiceprint_id);
                voiceprints.insert(key.as_str(), encode(vp).as_slice())?;
                owners.insert(vp.voiceprint_id.as_str(), vp.artist_id.as_str())?;
            }
            let mut authorizations = tx.open_table(AUTHORIZATIONS)?;
            for grant in &dump.authorizations {
                let key = format!("{}\0{}", grant.artist_id, grant.party_id);
                authorizations.insert(key.as_str(), encode(grant).as_slice())?;
            }
            audit::insert_all(&tx, &dump.audit_events)?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Marks, inside a deletion's transaction, that its bytes must be purged from the file.
fn mark_purge_pending(tx: &redb::WriteTransaction) -> Result<(), RegistryError> {
    tx.open_table(META)?
        .insert(PURGE_PENDING, [1u8].as_slice())?;
    Ok(())
}

/// The registry version `meta` holds, as `tx` sees it.
/// Every artist, voiceprint and authorization, and the version, as `tx` reads them.
fn read_records(tx: &redb::ReadTransaction) -> Result<ViewContents, RegistryError> {
    let mut records = ViewContents {
        version: read_version(tx)?,
        artists: Vec::new(),
        voiceprints: Vec::new(),
        authorizations: Vec::new(),
    };
    for entry in tx.open_table(ARTISTS)?.iter()? {
        records.artists.push(decode(entry?.1.value(), "artist")?);
    }
    for entry in tx.open_table(VOICEPRINTS)?.iter()? {
        records
            .voiceprints
            .push(decode(entry?.1.value(), "voiceprint")?);
    }
    for entry in tx.open_table(AUTHORIZATIONS)?.iter()? {
        records
            .authorizations
            .push(decode(entry?.1.value(), "authorization")?);
    }
    Ok(records)
}

fn read_version(tx: &redb::ReadTransaction) -> Result<u64, RegistryError> {
    let meta = tx.open_table(META)?;
    let version = meta.get("version")?;
    Ok(version.and_then(|v| read_u64(v.value())).unwrap_or(0))
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn text(bytes: Option<&[u8]>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}
