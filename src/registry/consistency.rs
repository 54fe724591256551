//! Consistency of the registry: the store's tables agree with each other (no voiceprint without
//! its artist or its owner row, no owner row without its voiceprint, no authorization without
//! its artist, every key naming the record it holds), the audit trail records the latest
//! change, and the in-memory index holds exactly the stored voiceprints. Used after a crash to
//! show that no change was left half-made.

use std::collections::{BTreeMap, BTreeSet};

use super::audit::AuditEvent;
use super::index::SearchIndex;
use super::types::{Artist, Authorization, Voiceprint};

/// Every record of the store, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// The registry version in `meta`.
    pub version: u64,
    /// Artist rows by key.
    pub artists: BTreeMap<String, Artist>,
    /// Voiceprint rows by key (`artist \0 voiceprint`).
    pub voiceprints: BTreeMap<String, Voiceprint>,
    /// Owner rows: voiceprint id → artist id.
    pub owners: BTreeMap<String, String>,
    /// Authorization rows by key (`artist \0 party`).
    pub authorizations: BTreeMap<String, Authorization>,
    /// Number of audit events.
    pub audit_events: u64,
    /// The newest audit event, if any.
    pub last_audit_event: Option<AuditEvent>,
}

/// What a consistent registry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Registry version.
    pub version: u64,
    /// Artists.
    pub artists: usize,
    /// Voiceprints (in the store and the index alike).
    pub voiceprints: usize,
    /// Authorizations.
    pub authorizations: usize,
    /// Audit events.
    pub audit_events: u64,
}

/// Every disagreement between the store's tables, its audit trail, and `index` (which claims
/// to reflect `index_version`); empty when they agree.
pub fn problems(contents: &Contents, index: &SearchIndex, index_version: u64) -> Vec<String> {
    let mut found = Vec::new();
    let c = contents;
    for (key, artist) in &c.artists {
        if *key != artist.artist_id {
            found.push(format!(
                "artist row {key:?} holds artist {:?}",
                artist.artist_id
            ));
        }
    }
    for (key, vp) in &c.voiceprints {
        if *key != format!("{}\0{}", vp.artist_id, vp.voiceprint_id) {
            found.push(format!(
                "voiceprint row {key:?} holds {} of {}",
                vp.voiceprint_id, vp.artist_id
            ));
        }
        if !c.artists.contains_key(&vp.artist_id) {
            found.push(format!(
                "voiceprint {} belongs to artist {}, who does not exist",
                vp.voiceprint_id, vp.artist_id
            ));
        }
        match c.owners.get(&vp.voiceprint_id) {
            Some(owner) if *owner == vp.artist_id => {}
            Some(owner) => found.push(format!(
                "voiceprint {} of {} has owner row {owner}",
                vp.voiceprint_id, vp.artist_id
            )),
            None => found.push(format!("voiceprint {} has no owner row", vp.voiceprint_id)),
        }
        match index.embedding(&vp.voiceprint_id) {
            Some(row) if row == vp.embedding.as_slice() => {}
            Some(_) => found.push(format!(
                "the index holds another embedding for voiceprint {}",
                vp.voiceprint_id
            )),
            None => found.push(format!(
                "voiceprint {} is stored but not in the index",
                vp.voiceprint_id
            )),
        }
    }
    let stored: BTreeSet<(&str, &str)> = c
        .voiceprints
        .values()
        .map(|vp| (vp.voiceprint_id.as_str(), vp.artist_id.as_str()))
        .collect();
    for (vp, owner) in &c.owners {
        if !stored.contains(&(vp.as_str(), owner.as_str())) {
            found.push(format!(
                "owner row {vp} -> {owner} has no voiceprint record"
            ));
        }
    }
    for (vp, artist) in index.entries() {
        if !stored.contains(&(vp, artist)) {
            found.push(format!(
                "the index holds voiceprint {vp} of {artist}, which is not stored"
            ));
        }
    }
    for (key, grant) in &c.authorizations {
        if *key != format!("{}\0{}", grant.artist_id, grant.party_id) {
            found.push(format!(
                "authorization row {key:?} holds {:?} of {}",
                grant.party_id, grant.artist_id
            ));
        }
        if !c.artists.contains_key(&grant.artist_id) {
            found.push(format!(
                "authorization of {:?} by artist {}, who does not exist",
                grant.party_id, grant.artist_id
            ));
        }
    }
    if index_version != c.version {
        found.push(format!(
            "the index reflects version {index_version}, the store holds version {}",
            c.version
        ));
    }
    if let Some(last) = &c.last_audit_event {
        if last.sequence != c.audit_events {
            found.push(format!(
                "the audit trail has {} events but its newest is number {}",
                c.audit_events, last.sequence
            ));
        }
        if last.registry_version != c.version {
            found.push(format!(
                "the newest audit event records version {}, the store holds version {}",
                last.registry_version, c.version
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::audit::Origin;
    use super::super::{EnrollmentPolicy, Registry, VoiceprintLabel};
    use crate::embed::Embedding;
    use crate::encoder::ModelId;
    use redb::{Database, TableDefinition};

    const DIM: usize = 8;

    fn model() -> ModelId {
        ModelId {
            name: "test-model".into(),
            sha256: "00".repeat(32),
        }
    }

    fn open(dir: &std::path::Path) -> Registry {
        Registry::open(dir, &model(), DIM, EnrollmentPolicy::default()).unwrap()
    }

    fn axis(i: usize) -> Embedding {
        let mut vector = vec![0.0; DIM];
        vector[i] = 1.0;
        Embedding {
            vector,
            duration_s: 10.0,
            voiced_s: 8.0,
            n_partials: 5,
        }
    }

    fn me() -> Origin {
        Origin {
            actor: "test".into(),
            request_id: "r".into(),
            key: None,
        }
    }

    #[test]
    fn a_registry_built_by_its_own_operations_is_consistent_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let registry = open(dir.path());
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            registry.create_artist(&me(), id, id).unwrap();
            registry
                .enroll(&me(), id, VoiceprintLabel::Speaking, "", &[axis(i)])
                .unwrap();
            registry.grant(&me(), id, "label", "").unwrap();
        }
        let doomed = registry.voiceprints("b").unwrap().remove(0).voiceprint_id;
        registry.delete_voiceprint(&me(), &doomed).unwrap();
        registry.delete_artist(&me(), "c").unwrap();
        registry.revoke(&me(), "a", "label").unwrap();
        let verified = registry.verify().unwrap();
        assert_eq!(
            (
                verified.artists,
                verified.voiceprints,
                verified.authorizations
            ),
            (2, 1, 1)
        );
        assert_eq!(verified.version, 12);
        assert_eq!(verified.audit_events, 12);
        drop(registry);
        assert_eq!(open(dir.path()).verify().unwrap(), verified);
    }

    #[test]
    fn half_made_changes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let registry = open(dir.path());
        registry.create_artist(&me(), "a", "A").unwrap();
        let vp = registry
            .enroll(&me(), "a", VoiceprintLabel::Speaking, "", &[axis(0)])
            .unwrap()
            .voiceprint;
        drop(registry);
        {
            let db = Database::create(dir.path().join(Registry::FILE_NAME)).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let owners: TableDefinition<&str, &str> = TableDefinition::new("voiceprint_owners");
                let mut owners = tx.open_table(owners).unwrap();
                owners.remove(vp.voiceprint_id.as_str()).unwrap();
                owners.insert("vp-ghost", "a").unwrap();
                let artists: TableDefinition<&str, &[u8]> = TableDefinition::new("artists");
                tx.open_table(artists).unwrap().remove("a").unwrap();
            }
            tx.commit().unwrap();
        }
        let refused = open(dir.path()).verify().unwrap_err().to_string();
        for expected in [
            "belongs to artist a, who does not exist",
            "has no owner row",
            "owner row vp-ghost -> a has no voiceprint record",
        ] {
            assert!(refused.contains(expected), "{expected:?} in {refused}");
        }
    }

    #[test]
    fn an_index_out_of_step_with_the_store_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let registry = open(dir.path());
        registry.create_artist(&me(), "a", "A").unwrap();
        let vp = registry
            .enroll(&me(), "a", VoiceprintLabel::Speaking, "", &[axis(0)])
            .unwrap()
            .voiceprint;
        let contents = registry.store().contents().unwrap();
        let mut index = registry.mirror.read().index.clone();
        assert!(super::problems(&contents, &index, contents.version).is_empty());
        index.insert("vp-stray", "a", &axis(1).vector);
        index.remove(&vp.voiceprint_id);
        let found = super::problems(&contents, &index, contents.version - 1).join("; ");
        assert!(found.contains("is stored but not in the index"), "{found}");
        assert!(
            found.contains("vp-stray of a, which is not stored"),
            "{found}"
        );
        assert!(found.contains("the index reflects version 1"), "{found}");
    }
}
