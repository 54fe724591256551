//! `vocalguard.v1.RegistryService`: thin handlers over [`crate::registry::Registry`].

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, embed_status, pool_status, registry_status};
use super::request::{collect_files, write_key};
use super::Core;
use crate::audio;
use crate::proto::registry_service_server::RegistryService;
use crate::proto::*;
use crate::registry::references::MAX_REFERENCES;
use crate::registry::{AuditQuery, Enrolled};
use sha2::{Digest, Sha256};

/// `message` encoded with its request id cleared: what a write asks, for its write key.
fn asked<M: prost::Message + Clone>(
    message: &M,
    request_id: impl FnOnce(&mut M) -> &mut String,
) -> Vec<u8> {
    let mut asked = message.clone();
    request_id(&mut asked).clear();
    asked.encode_to_vec()
}

/// Most artists or audit events a page may hold.
const MAX_PAGE: usize = 1000;
/// Artists or audit events a page holds when the client does not say.
const DEFAULT_PAGE: usize = 100;

/// The registry service.
pub struct RegistryApi {
    core: Arc<Core>,
}

impl RegistryApi {
    /// Serves `core`'s registry.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl RegistryService for RegistryApi {
    async fn create_artist(
        &self,
        request: Request<CreateArtistRequest>,
    ) -> Result<Response<Artist>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("CreateArtist", request, |cx, r| async move {
                let reg = Arc::clone(&core.registry);
                let key = write_key(
                    "CreateArtist",
                    &r.request_id,
                    &[&asked(&r, |m| &mut m.request_id)],
                )?;
                let origin = cx.origin(key);
                let created = core
                    .blocking(move || reg.create_artist(&origin, &r.artist_id, &r.display_name))
                    .await?
                    .map_err(registry_status)?;
                core.registry_changed();
                tracing::info!(artist_id = %created.artist_id, "artist created");
                Ok(convert::artist(crate::registry::ArtistSummary {
                    artist: created,
                    voiceprints: 0,
                    authorizations: 0,
                }))
            })
            .await
    }

    async fn get_artist(
        &self,
        request: Request<GetArtistRequest>,
    ) -> Result<Response<Artist>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("GetArtist", request, |_, r| async move {
                let reg = Arc::clone(&core.registry);
                let found = core
                    .blocking(move || reg.artist(&r.artist_id))
                    .await?
                    .map_err(registry_status)?;
                Ok(convert::artist(found))
            })
            .await
    }

    async fn list_artists(
        &self,
        request: Request<ListArtistsRequest>,
    ) -> Result<Response<ListArtistsResponse>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("ListArtists", request, |_, r| async move {
                let limit = page_limit(r.page_size);
                let reg = Arc::clone(&core.registry);
                let after = (!r.page_token.is_empty()).then_some(r.page_token);
                let (page, total, more) = core
                    .blocking(move || reg.list_artists(after.as_deref(), limit))
                    .await?
                    .map_err(registry_status)?;
                let next_page_token = match (more, page.last()) {
                    (true, Some(last)) => last.artist.artist_id.clone(),
                    _ => String::new(),
                };
                Ok(ListArtistsResponse {
                    artists: page.into_iter().map(convert::artist).collect(),
                    next_page_token,
                    total,
                })
            })
            .await
    }

    async fn delete_artist(
        &self,
        request: Request<DeleteArtistRequest>,
    ) -> Result<Response<DeleteArtistResponse>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("DeleteArtist", request, |cx, r| async move {
                let reg = Arc::clone(&core.registry);
                let id = r.artist_id.clone();
                let key = write_key(
                    "DeleteArtist",
                    &r.request_id,
                    &[&asked(&r, |m| &mut m.request_id)],
                )?;
                let origin = cx.origin(key);
                let (counts, version) = core
                    .blocking(move || reg.delete_artist(&origin, &id))
                    .await?
                    .map_err(registry_status)?;
                core.registry_changed();
                tracing::info!(artist_id = %r.artist_id, voiceprints = counts.voiceprints, "artist deleted");
                Ok(DeleteArtistResponse {
                    voiceprints_deleted: counts.voiceprints,
                    authorizations_deleted: counts.authorizations,
                    registry_version: version,
                })
            })
            .await
    }

    async fn enroll_voiceprint(
        &self,
        request: Request<Streaming<EnrollVoiceprintRequest>>,
    ) -> Result<Response<EnrollVoiceprintResponse>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("EnrollVoiceprint", request, |cx, stream| async move {
                let mut permit = core.uploads.admit(&cx.party)?;
                let rules = core.upload_rules(MAX_REFERENCES);
                let (meta, files) =
                    collect_files(stream, rules, &mut permit, &core.metrics).await?;
                let label = convert::label(meta.label)?;
                let mut parts = vec![asked(&meta, |m| &mut m.request_id)];
                parts.extend(files.iter().map(|file| Sha256::digest(file).to_vec()));
                let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                let origin = cx.origin(write_key("EnrollVoiceprint", &meta.request_id, &parts)?);
                let reg = Arc::clone(&core.registry);
                let artist_id = meta.artist_id.clone();
                let asking = origin.clone();
                let replayed = core
                    .blocking(move || match reg.replayed::<Enrolled>(&asking)? {
                        Some(first) => Ok(Some(first)),
                        None => reg.artist(&artist_id).map(|_| None),
                    })
                    .await?
                    .map_err(registry_status)?;
                let (embedder, registry) = (Arc::clone(&core.embedder), Arc::clone(&core.registry));
                let decode_limits = core.decode_limits();
                let min_voiced_s = registry.policy().min_voiced_s;
                let metrics = core.metrics.clone();
                let replay = replayed.is_some();
                let enrolled = match replayed {
                    Some(first) => first,
                    None => core
                        .pool
                        .run(cx.deadline, move || {
                            let _permit = permit;
                            let count = files.len();
                            let prepared = files
                                .into_iter()
                                .enumerate()
                                .map(|(index, bytes)| {
                                    let which = |status| name_reference(status, index, count);
                                    let audio =
                                        audio::decode_to_16k_mono(bytes, None, &decode_limits)
                                            .map_err(|e| which(convert::audio_status(e)))?;
                                    embedder
                                        .prepare_samples(audio.samples)
                                        .map_err(|e| which(embed_status(e, min_voiced_s)))
                                })
                                .collect::<Result<Vec<_>, Status>>()?;
                            metrics.record_batch(prepared.iter().map(|p| p.n_partials).sum());
                            let embeddings = embedder
                                .embed_prepared(&prepared.iter().collect::<Vec<_>>())
                                .map_err(|e| embed_status(e, min_voiced_s))?;
                            registry
                                .enroll(
                                    &origin,
                                    &meta.artist_id,
                                    label,
                                    &meta.description,
                                    &embeddings,
                                )
                                .map_err(registry_status)
                        })
                        .await
                        .map_err(pool_status)??,
                };
                core.registry_changed();
                tracing::info!(
                    artist_id = %enrolled.voiceprint.artist_id,
                    voiceprint_id = %enrolled.voiceprint.voiceprint_id,
                    voiced_s = enrolled.voiceprint.voiced_s,
                    references = enrolled.references,
                    replay,
                    "voiceprint enrolled"
                );
                let (nearest_other_artist_id, nearest_other_artist_score) =
                    match enrolled.nearest_other {
                        Some((id, score)) => (id, Some(score)),
                        None => (String::new(), None),
                    };
                Ok(EnrollVoiceprintResponse {
                    voiceprint: Some(convert::voiceprint(enrolled.voiceprint)),
                    consistency_score: enrolled.consistency_score,
                    nearest_other_artist_score,
                    nearest_other_artist_id,
                    context: Some(core.context(enrolled.version)),
                    references: enrolled.references as u32,
                    reference_agreement_score: enrolled.reference_agreement,
                })
            })
            .await
    }

    async fn list_voiceprints(
        &self,
        request: Request<ListVoiceprintsRequest>,
    ) -> Result<Response<ListVoiceprintsResponse>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("ListVoiceprints", request, |_, r| async move {
                let reg = Arc::clone(&core.registry);
                let found = core
                    .blocking(move || reg.voiceprints(&r.artist_id))
                    .await?
                    .map_err(registry_status)?;
                Ok(ListVoiceprintsResponse {
                    voiceprints: found.into_iter().map(convert::voiceprint).collect(),
                })
            })
            .await
    }

    async fn delete_voiceprint(
        &self,
        request: Request<DeleteVoiceprintRequest>,
    ) -> Result<Response<DeleteVoiceprintResponse>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("DeleteVoiceprint", request, |cx, r| async move {
                let reg = Arc::clone(&core.registry);
                let id = r.voiceprint_id.clone();
                let key = write_key(
                    "DeleteVoiceprint",
                    &r.request_id,
                    &[&asked(&r, |m| &mut m.request_id)],
                )?;
                let origin = cx.origin(key);
                let registry_version = core
                    .blocking(move || reg.delete_voiceprint(&origin, &id))
                    .await?
                    .map_err(registry_status)?;
                core.registry_changed();
                tracing::info!(voiceprint_id = %r.voiceprint_id, "voiceprint deleted");
                Ok(DeleteVoiceprintResponse { registry_version })
            })
            .await
    }

    async fn grant_authorization(
        &self,
        request: Request<GrantAuthorizationRequest>,
    ) -> Result<Response<Authorization>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("GrantAuthorization", request, |cx, r| async move {
                let reg = Arc::clone(&core.registry);
                let key = write_key(
                    "GrantAuthorization",
                    &r.request_id,
                    &[&asked(&r, |m| &mut m.request_id)],
                )?;
                let origin = cx.origin(key);
                let grant = core
                    .blocking(move || reg.grant(&origin, &r.artist_id, &r.party_id, &r.note))
                    .await?
                    .map_err(registry_status)?;
                core.registry_changed();
                tracing::info!(artist_id = %grant.artist_id, "authorization granted");
                Ok(convert::authorization(grant))
            })
            .await
    }

    async fn revoke_authorization(
        &self,
        request: Request<RevokeAuthorizationRequest>,
    ) -> Result<Response<RevokeAuthorizationResponse>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("RevokeAuthorization", request, |cx, r| async move {
                let reg = Arc::clone(&core.registry);
                let artist_id = r.artist_id.clone();
                let key = write_key(
                    "RevokeAuthorization",
                    &r.request_id,
                    &[&asked(&r, |m| &mut m.request_id)],
                )?;
                let origin = cx.origin(key);
                let registry_version = core
                    .blocking(move || reg.revoke(&origin, &artist_id, &r.party_id))
                    .await?
                    .map_err(registry_status)?;
                core.registry_changed();
                tracing::info!(artist_id = %r.artist_id, "authorization revoked");
                Ok(RevokeAuthorizationResponse { registry_version })
            })
            .await
    }

    async fn list_authorizations(
        &self,
        request: Request<ListAuthorizationsRequest>,
    ) -> Result<Response<ListAuthorizationsResponse>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("ListAuthorizations", request, |_, r| async move {
                let reg = Arc::clone(&core.registry);
                let found = core
                    .blocking(move || reg.authorizations(&r.artist_id))
                    .await?
                    .map_err(registry_status)?;
                Ok(ListAuthorizationsResponse {
                    authorizations: found.into_iter().map(convert::authorization).collect(),
                })
            })
            .await
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("ListAuditEvents", request, |_, r| async move {
                let after_sequence = match r.page_token.as_str() {
                    "" => r.after_sequence,
                    token => token.parse().map_err(|_| {
                        Status::invalid_argument(format!(
                            "malformed page_token {}",
                            crate::echo::quote(token)
                        ))
                    })?,
                };
                let query = AuditQuery {
                    after_sequence,
                    artist_id: (!r.artist_id.is_empty()).then_some(r.artist_id),
                    limit: page_limit(r.page_size),
                };
                let reg = Arc::clone(&core.registry);
                let (events, more) = core
                    .blocking(move || reg.audit_events(&query))
                    .await?
                    .map_err(registry_status)?;
                let next_page_token = match (more, events.last()) {
                    (true, Some(last)) => last.sequence.to_string(),
                    _ => String::new(),
                };
                Ok(ListAuditEventsResponse {
                    events: events.into_iter().map(convert::audit_event).collect(),
                    next_page_token,
                })
            })
            .await
    }
}

/// The page size a client asked for: 0 means the default, and no page exceeds the maximum.
fn page_limit(page_size: u32) -> usize {
    match page_size as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// `status` with the reference it is about named first, when the enrollment has several.
fn name_reference(status: Status, index: usize, count: usize) -> Status {
    if count == 1 {
        return status;
    }
    Status::new(
        status.code(),
        format!("reference {} of {count}: {}", index + 1, status.message()),
    )
}
