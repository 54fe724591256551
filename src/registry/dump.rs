//! A registry's whole content in one portable file, for `vocalguard registry export|import`:
//! JSON Lines, a header line (format, model, version, record counts) and then one record per
//! line — artists, voiceprints, authorizations, audit events, each in id or sequence order, so
//! the same registry always exports to the same bytes. Embeddings are written as JSON numbers,
//! which round-trip `f32` exactly.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::audit::AuditEvent;
use super::types::{Artist, Authorization, RegistryError, Voiceprint};
use crate::encoder::ModelId;

/// The `format` field of a dump's header.
pub const FORMAT: &str = "vocalguard-registry-dump";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Every record of a registry and its audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Dump {
    /// The model the embeddings were made with.
    pub model: ModelId,
    /// The registry version.
    pub version: u64,
    /// Artists, in id order.
    pub artists: Vec<Artist>,
    /// Voiceprints, in (artist, voiceprint) id order.
    pub voiceprints: Vec<Voiceprint>,
    /// Authorizations, in (artist, party) id order.
    pub authorizations: Vec<Authorization>,
    /// The audit trail, in sequence order.
    pub audit_events: Vec<AuditEvent>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    format_version: u32,
    model: ModelId,
    version: u64,
    artists: u64,
    voiceprints: u64,
    authorizations: u64,
    audit_events: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Record {
    Artist(Artist),
    Voiceprint(Voiceprint),
    Authorization(Authorization),
    AuditEvent(AuditEvent),
}

impl Dump {
    /// Writes the dump as JSON Lines.
    pub fn write(&self, mut out: impl Write) -> std::io::Result<()> {
        let header = Header {
            format: FORMAT.to_string(),
            format_version: FORMAT_VERSION,
            model: self.model.clone(),
            version: self.version,
            artists: self.artists.len() as u64,
            voiceprints: self.voiceprints.len() as u64,
            authorizations: self.authorizations.len() as u64,
            audit_events: self.audit_events.len() as u64,
        };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        let records = self
            .artists
            .iter()
            .cloned()
            .map(Record::Artist)
            .chain(self.voiceprints.iter().cloned().map(Record::Voiceprint))
            .chain(
                self.authorizations
                    .iter()
                    .cloned()
                    .map(Record::Authorization),
            )
            .chain(self.audit_events.iter().cloned().map(Record::AuditEvent));
        for record in records {
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Reads a dump, checking its header and that it holds exactly the records the header
    /// counts (a truncated file is refused).
    pub fn read(input: impl BufRead) -> Result<Self, RegistryError> {
        let mut lines = input.lines().enumerate();
        let bad = |line: usize, why: String| {
            RegistryError::Invalid(format!("dump line {}: {why}", line + 1))
        };
        let (_, first) = lines
            .next()
            .ok_or_else(|| RegistryError::Invalid("the dump is empty".into()))?;
        let first = first.map_err(|e| bad(0, e.to_string()))?;
        let header: Header = serde_json::from_str(&first)
            .map_err(|e| bad(0, format!("not a {FORMAT} header: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(
                0,
                format!("format is {:?}, not {FORMAT:?}", header.format),
            ));
        }
        if header.format_version != FORMAT_VERSION {
            return Err(bad(
                0,
                format!(
                    "format version {} is not the {FORMAT_VERSION} this build reads",
                    header.format_version
                ),
            ));
        }
        let mut dump = Dump {
            model: header.model,
            version: header.version,
            artists: Vec::new(),
            voiceprints: Vec::new(),
            authorizations: Vec::new(),
            audit_events: Vec::new(),
        };
        for (n, line) in lines {
            let line = line.map_err(|e| bad(n, e.to_string()))?;
            match serde_json::from_str(&line).map_err(|e| bad(n, e.to_string()))? {
                Record::Artist(a) => dump.artists.push(a),
                Record::Voiceprint(v) => dump.voiceprints.push(v),
                Record::Authorization(a) => dump.authorizations.push(a),
                Record::AuditEvent(e) => dump.audit_events.push(e),
            }
        }
        let counted = [
            ("artists", header.artists, dump.artists.len()),
            ("voiceprints", header.voiceprints, dump.voiceprints.len()),
            (
                "authorizations",
                header.authorizations,
                dump.authorizations.len(),
            ),
            ("audit events", header.audit_events, dump.audit_events.len()),
        ];
        for (what, declared, found) in counted {
            if declared != found as u64 {
                return Err(RegistryError::Invalid(format!(
                    "the dump's header declares {declared} {what} but it holds {found}: the file is truncated or was edited"
                )));
            }
        }
        Ok(dump)
    }

    /// Checks that every voiceprint and authorization names an artist of the dump.
    pub fn check(&self) -> Result<(), RegistryError> {
        let artists: std::collections::BTreeSet<&str> =
            self.artists.iter().map(|a| a.artist_id.as_str()).collect();
        for vp in &self.voiceprints {
            if !artists.contains(vp.artist_id.as_str()) {
                return Err(RegistryError::Invalid(format!(
                    "voiceprint {} belongs to artist {}, who is not in the dump",
                    vp.voiceprint_id, vp.artist_id
                )));
            }
        }
        for grant in &self.authorizations {
            if !artists.contains(grant.artist_id.as_str()) {
                return Err(RegistryError::Invalid(format!(
                    "authorization of {} names artist {}, who is not in the dump",
                    grant.party_id, grant.artist_id
                )));
            }
        }
        Ok(())
    }
}
