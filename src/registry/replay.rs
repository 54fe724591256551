//! Idempotent writes (AIP-155): a client names one intended change with a request id; the
//! store keeps that id, a hash of what was asked and the call's result in the same
//! transaction as the change, so a retry of a call whose reply was lost (the server died after
//! committing, the connection broke) gets the first call's result instead of a second change,
//! even after a restart. Keys are scoped to the caller (the audit actor): two callers' ids
//! never collide.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::backend::Counts;
use super::types::{Artist, Authorization, Enrolled, RegistryError};

/// The longest request id, in characters (all from `[A-Za-z0-9._-]`).
pub const MAX_REQUEST_ID_CHARS: usize = 64;

/// A client's key for one write, and the hash of what the write asks (method and fields):
/// a retry must ask the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteKey {
    /// The client's request id.
    pub request_id: String,
    /// Hex digest of the method and request fields.
    pub fingerprint: String,
}

/// What a keyed write left in the store beside its change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// The request's fingerprint.
    pub fingerprint: String,
    /// The call's result, as JSON (its registry version set from `version` on replay).
    pub outcome: serde_json::Value,
    /// Registry version after the change.
    pub version: u64,
    /// When it was committed, milliseconds since the Unix epoch (UTC).
    pub at_unix_ms: i64,
}

/// The record a store writes with a keyed change; the store adds the version and time.
#[derive(Debug, Clone, PartialEq)]
pub struct ToRecord {
    /// The client's request id.
    pub request_id: String,
    /// The request's fingerprint.
    pub fingerprint: String,
    /// The call's result, its version not yet known.
    pub outcome: serde_json::Value,
}

/// A write result that can be recorded and replayed: everything but the registry version is
/// known before the change commits.
pub trait Replayable: Serialize + DeserializeOwned {
    /// The result with the committed registry version in place.
    fn at_version(self, version: u64) -> Self;

    /// What is recorded of the result.
    fn outcome(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("write results serialise")
    }
}

impl Replayable for u64 {
    fn at_version(self, version: u64) -> Self {
        version
    }
}

impl Replayable for (Counts, u64) {
    fn at_version(self, version: u64) -> Self {
        (self.0, version)
    }
}

impl Replayable for Enrolled {
    fn at_version(self, version: u64) -> Self {
        Enrolled { version, ..self }
    }

    /// The enrollment without its embedding: an embedding is kept only in its voiceprint's
    /// record, so that deleting the voiceprint purges it from the store. A replayed
    /// enrollment's voiceprint carries none.
    fn outcome(&self) -> serde_json::Value {
        let mut voiceprint = self.voiceprint.clone();
        voiceprint.embedding = Vec::new();
        let recorded = Enrolled {
            voiceprint,
            ..self.clone()
        };
        serde_json::to_value(recorded).expect("write results serialise")
    }
}

impl Replayable for Artist {
    fn at_version(self, _: u64) -> Self {
        self
    }
}

impl Replayable for Authorization {
    fn at_version(self, _: u64) -> Self {
        self
    }
}

/// The record to keep with a keyed change whose result (before its version) is `pending`.
pub fn to_record<T: Replayable>(key: &WriteKey, pending: &T) -> ToRecord {
    ToRecord {
        request_id: key.request_id.clone(),
        fingerprint: key.fingerprint.clone(),
        outcome: pending.outcome(),
    }
}

/// The first call's result from its record, or why a retry cannot have it: the key was used
/// for a different request.
pub fn replay<T: Replayable>(key: &WriteKey, recorded: Recorded) -> Result<T, RegistryError> {
    if recorded.fingerprint != key.fingerprint {
        return Err(RegistryError::Invalid(format!(
            "request_id {} was already used for a different request; use a fresh id for each change",
            crate::echo::quote(&key.request_id)
        )));
    }
    let outcome: T = serde_json::from_value(recorded.outcome)
        .map_err(|e| RegistryError::Corrupt(format!("unreadable recorded result: {e}")))?;
    Ok(outcome.at_version(recorded.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fingerprint: &str) -> WriteKey {
        WriteKey {
            request_id: "r-1".into(),
            fingerprint: fingerprint.into(),
        }
    }

    #[test]
    fn a_record_replays_with_its_version() {
        let counts = Counts {
            voiceprints: 2,
            authorizations: 1,
        };
        let record = to_record(&key("f"), &(counts, 0u64));
        let recorded = Recorded {
            fingerprint: record.fingerprint,
            outcome: record.outcome,
            version: 9,
            at_unix_ms: 0,
        };
        assert_eq!(
            replay::<(Counts, u64)>(&key("f"), recorded.clone()).unwrap(),
            (counts, 9)
        );
        let err = replay::<(Counts, u64)>(&key("g"), recorded).unwrap_err();
        assert!(err.to_string().contains("different request"), "{err}");
    }
}
