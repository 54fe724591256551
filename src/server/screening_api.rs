//! `vocalguard.v1.ScreeningService`: collects the upload, then decodes and screens it on the
//! inference pool.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status, Streaming};

use super::admission::UploadPermit;
use super::convert::{self, pool_status, screening_status};
use super::request::{collect_upload, upload_too_large};
use super::Core;
use crate::audio;
use crate::proto::screening_service_server::ScreeningService;
use crate::proto::{ScreenClipRequest, ScreenRequest, ScreenResponse, TrackMetadata};
use crate::screening;

/// The screening service.
pub struct ScreeningApi {
    core: Arc<Core>,
}

impl ScreeningApi {
    /// Screens against `core`'s registry.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl ScreeningService for ScreeningApi {
    async fn screen(
        &self,
        request: Request<Streaming<ScreenRequest>>,
    ) -> Result<Response<ScreenResponse>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("Screen", request, |cx, stream| async move {
                let deadline = cx.deadline;
                let mut permit = core.uploads.admit(&cx.party)?;
                let (meta, bytes) =
                    collect_upload(stream, core.upload_rules(1), &mut permit, &core.metrics)
                        .await?;
                screen_bytes(core, meta, bytes, permit, deadline).await
            })
            .await
    }

    async fn screen_clip(
        &self,
        request: Request<ScreenClipRequest>,
    ) -> Result<Response<ScreenResponse>, Status> {
        let core = Arc::clone(&self.core);
        self.core
            .call("ScreenClip", request, |cx, r| async move {
                let deadline = cx.deadline;
                let meta = r
                    .metadata
                    .ok_or_else(|| Status::invalid_argument("metadata is required"))?;
                let limit = core.config.limits.max_upload_bytes;
                if r.audio.len() as u64 > limit {
                    return Err(upload_too_large(limit));
                }
                if r.audio.is_empty() {
                    return Err(Status::invalid_argument("no audio: the clip is empty"));
                }
                let mut permit = core.uploads.admit(&cx.party)?;
                permit.reserve(r.audio.len())?;
                screen_bytes(core, meta, r.audio, permit, deadline).await
            })
            .await
    }
}

/// Checks the metadata, then decodes and screens `bytes` on the inference pool; `permit`, the
/// bytes' admission, is given back when the job lets go of them.
async fn screen_bytes(
    core: Arc<Core>,
    meta: TrackMetadata,
    bytes: Vec<u8>,
    permit: UploadPermit,
    deadline: Instant,
) -> Result<ScreenResponse, Status> {
    let upload = convert::upload(meta)?;
    let track_id = upload.track_id.clone();
    let (embedder, registry) = (Arc::clone(&core.embedder), Arc::clone(&core.registry));
    let limits = core.decode_limits();
    let scoring = Arc::clone(&core.scoring);
    let verdict = core
        .pool
        .run(deadline, move || {
            let _permit = permit;
            let audio =
                audio::decode_to_16k_mono(bytes, None, &limits).map_err(convert::audio_status)?;
            screening::screen(&embedder, &registry, audio.samples, &upload, &scoring)
                .map_err(screening_status)
        })
        .await
        .map_err(pool_status)??;
    core.metrics.record_decision(verdict.decision.name());
    core.metrics.record_batch(verdict.windows);
    tracing::info!(
        track_id = %track_id,
        decision = verdict.decision.name(),
        top_artist = verdict.matches.first().map_or("", |m| m.artist_id.as_str()),
        voiced_s = verdict.voiced_s,
        windows = verdict.windows,
        "screened"
    );
    let context = core.context(verdict.registry_version);
    Ok(convert::screen_response(
        track_id,
        verdict,
        context,
        &core.scoring,
    ))
}
