//! The audit trail: an append-only record of every registry change (who, what, when, in
//! which request), kept in the registry file and written in the same transaction as the change
//! it records. Events name ids only: never an embedding, audio or a token. Nothing rewrites or
//! deletes them; deleting an artist leaves its history in place.

use std::ops::Bound;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::replay::WriteKey;
use super::types::RegistryError;

/// `audit_events`: sequence number → JSON [`AuditEvent`].
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_events");
/// `audit_by_artist`: (artist id, sequence number) → nothing; the events of one artist.
pub(super) const BY_ARTIST: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("audit_by_artist");

/// What a registry change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// An artist was created.
    CreateArtist,
    /// An artist was deleted, with its voiceprints and authorizations.
    DeleteArtist,
    /// A voiceprint was enrolled.
    EnrollVoiceprint,
    /// A voiceprint was deleted.
    DeleteVoiceprint,
    /// A party was authorized (or its grant renewed).
    GrantAuthorization,
    /// A party's authorization was withdrawn.
    RevokeAuthorization,
}

/// Who asked for a change, and in which request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The caller's name (the API token's name, or "anonymous").
    pub actor: String,
    /// The id of the request that made the change.
    pub request_id: String,
    /// The client's key for this write, when it sent one: a retry with the same key gets the
    /// first call's result instead of a second change (see [`super::replay`]).
    pub key: Option<WriteKey>,
}

/// The change a transaction makes: its action and the ids it touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What was done.
    pub action: AuditAction,
    /// The artist concerned.
    pub artist_id: String,
    /// The voiceprint concerned, for enrollments and voiceprint deletions.
    pub voiceprint_id: Option<String>,
    /// The party concerned, for grants and revocations.
    pub party_id: Option<String>,
}

impl Change {
    /// A change to an artist alone.
    pub fn artist(action: AuditAction, artist_id: &str) -> Self {
        Self {
            action,
            artist_id: artist_id.to_string(),
            voiceprint_id: None,
            party_id: None,
        }
    }

    /// A change to one of an artist's voiceprints.
    pub fn voiceprint(action: AuditAction, artist_id: &str, voiceprint_id: &str) -> Self {
        Self {
            voiceprint_id: Some(voiceprint_id.to_string()),
            ..Self::artist(action, artist_id)
        }
    }

    /// A change to one of an artist's authorizations.
    pub fn party(action: AuditAction, artist_id: &str, party_id: &str) -> Self {
        Self {
            party_id: Some(party_id.to_string()),
            ..Self::artist(action, artist_id)
        }
    }
}

/// One event of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the trail: 1, 2, 3... with no gaps.
    pub sequence: u64,
    /// When the change was committed, milliseconds since the Unix epoch (UTC).
    pub at_unix_ms: i64,
    /// Who asked for it.
    pub actor: String,
    /// The request that made it.
    pub request_id: String,
    /// What was done.
    pub action: AuditAction,
    /// The artist concerned.
    pub artist_id: String,
    /// The voiceprint concerned, if any.
    pub voiceprint_id: Option<String>,
    /// The party concerned, if any.
    pub party_id: Option<String>,
    /// Registry version after the change.
    pub registry_version: u64,
}

/// Which events to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditQuery {
    /// Only events with a larger sequence number.
    pub after_sequence: u64,
    /// Only events of this artist.
    pub artist_id: Option<String>,
    /// Most events to return.
    pub limit: usize,
}

/// Creates the audit tables if the file lacks them.
pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), RegistryError> {
    tx.open_table(EVENTS)?;
    tx.open_table(BY_ARTIST)?;
    Ok(())
}

/// Appends the event recording `change`, made by `origin` and leaving the registry at
/// `registry_version`, inside `tx` (the change's own transaction).
pub(super) fn append(
    tx: &WriteTransaction,
    origin: &Origin,
    change: Change,
    registry_version: u64,
) -> Result<AuditEvent, RegistryError> {
    let mut events = tx.open_table(EVENTS)?;
    let sequence = events.last()?.map_or(0, |(key, _)| key.value()) + 1;
    let event = AuditEvent {
        sequence,
        at_unix_ms: now_ms(),
        actor: origin.actor.clone(),
        request_id: origin.request_id.clone(),
        action: change.action,
        artist_id: change.artist_id,
        voiceprint_id: change.voiceprint_id,
        party_id: change.party_id,
        registry_version,
    };
    let encoded = serde_json::to_vec(&event).expect("audit events serialise");
    events.insert(sequence, encoded.as_slice())?;
    tx.open_table(BY_ARTIST)?
        .insert((event.artist_id.as_str(), sequence), ())?;
    Ok(event)
}

/// Writes `events` as they are (an imported trail) inside `tx`.
pub(super) fn insert_all(
    tx: &WriteTransaction,
    events: &[AuditEvent],
) -> Result<(), RegistryError> {
    let mut table = tx.open_table(EVENTS)?;
    let mut by_artist = tx.open_table(BY_ARTIST)?;
    for event in events {
        let encoded = serde_json::to_vec(event).expect("audit events serialise");
        table.insert(event.sequence, encoded.as_slice())?;
        by_artist.insert((event.artist_id.as_str(), event.sequence), ())?;
    }
    Ok(())
}

/// Up to `query.limit` events matching `query` in sequence order, and whether more follow.
pub(super) fn list(
    tx: &ReadTransaction,
    query: &AuditQuery,
) -> Result<(Vec<AuditEvent>, bool), RegistryError> {
    let events = tx.open_table(EVENTS)?;
    let wanted = query.limit.saturating_add(1);
    let mut page = Vec::new();
    match &query.artist_id {
        None => {
            let from = (Bound::Excluded(query.after_sequence), Bound::Unbounded);
            for entry in events.range::<u64>(from)?.take(wanted) {
                page.push(decode(entry?.1.value())?);
            }
        }
        Some(artist) => {
            let by_artist = tx.open_table(BY_ARTIST)?;
            let from = (artist.as_str(), query.after_sequence);
            let to = (artist.as_str(), u64::MAX);
            for entry in by_artist
                .range::<(&str, u64)>((Bound::Excluded(from), Bound::Included(to)))?
                .take(wanted)
            {
                let sequence = entry?.0.value().1;
                let event = events.get(sequence)?.ok_or_else(|| {
                    RegistryError::Corrupt(format!("audit event {sequence} is indexed but absent"))
                })?;
                page.push(decode(event.value())?);
            }
        }
    }
    let more = page.len() > query.limit;
    page.truncate(query.limit);
    Ok((page, more))
}

fn decode(bytes: &[u8]) -> Result<AuditEvent, RegistryError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::Corrupt(format!("unreadable audit event: {e}")))
}

/// Now, in milliseconds since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
