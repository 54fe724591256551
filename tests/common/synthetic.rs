//! Registries of synthetic voiceprints, written through a store's import: for tests and
//! benchmarks that need many voiceprints without embedding audio.

use vocalguard::encoder::ModelId;
use vocalguard::registry::audit::{AuditAction, AuditEvent};
use vocalguard::registry::dump::Dump;
use vocalguard::registry::{Artist, Voiceprint, VoiceprintLabel};

/// A dump of `artists` artists `{prefix}-{a:06}`, each with the voiceprints
/// `voiceprints(a)` returns (`vp-{prefix}-{a:06}-{v}`), and the audit trail of creating and
/// enrolling them in that order.
pub fn synthetic_dump(
    model: ModelId,
    prefix: &str,
    artists: usize,
    mut voiceprints: impl FnMut(usize) -> Vec<Vec<f32>>,
) -> Dump {
    let mut dump = Dump {
        model,
        version: 0,
        artists: Vec::new(),
        voiceprints: Vec::new(),
        authorizations: Vec::new(),
        audit_events: Vec::new(),
    };
    let event = |dump: &mut Dump, action, artist: &str, voiceprint: Option<String>| {
        dump.version += 1;
        dump.audit_events.push(AuditEvent {
            sequence: dump.version,
            at_unix_ms: 0,
            actor: "synthetic".into(),
            request_id: "synthetic".into(),
            action,
            artist_id: artist.to_string(),
            voiceprint_id: voiceprint,
            party_id: None,
            registry_version: dump.version,
        });
    };
    for a in 0..artists {
        let artist_id = format!("{prefix}-{a:06}");
        dump.artists.push(Artist {
            artist_id: artist_id.clone(),
            display_name: format!("Synthetic {a}"),
            created_at_unix_s: 0,
        });
        event(&mut dump, AuditAction::CreateArtist, &artist_id, None);
        for (v, embedding) in voiceprints(a).into_iter().enumerate() {
            let voiceprint_id = format!("vp-{prefix}-{a:06}-{v}");
            dump.voiceprints.push(Voiceprint {
                voiceprint_id: voiceprint_id.clone(),
                artist_id: artist_id.clone(),
                label: VoiceprintLabel::Speaking,
                description: String::new(),
                voiced_s: 10.0,
                duration_s: 10.0,
                created_at_unix_s: 0,
                embedding,
            });
            event(
                &mut dump,
                AuditAction::EnrollVoiceprint,
                &artist_id,
                Some(voiceprint_id),
            );
        }
    }
    dump
}
