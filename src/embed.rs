//! The one path from audio to speaker embeddings, shared by the CLI, the server and the
//! evaluator. GE2E: level normalisation → voice activity trimming → mel → partial windows →
//! batched encoder → mean of partials, L2-normalised. Filterbank models (ECAPA-TDNN,
//! ResNet34): voice activity trimming (found on a level-normalised copy, cut from the audio as
//! decoded) → mean-normalised filterbank of the whole utterance → encoder → L2-normalised;
//! with [`Trim::Off`] this is exactly the reference's embedding of the whole file.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::audio::{self, level, vad::VoiceActivity, AudioError, DecodeLimits};
use crate::encoder::{Architecture, ModelId, SpeakerModel, TrimConfig};
use crate::features::{mel::MelSpectrogram, FeatureError, FrontendConfig, UtteranceFrontend};

mod batcher;

pub use batcher::{BatchConfig, BatchObserver, BatchRun};

/// Errors of turning audio into an embedding.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The audio could not be decoded.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// Voice activity detection refused the audio.
    #[error(transparent)]
    Vad(#[from] crate::audio::vad::VadError),
    /// The model's front end is misconfigured.
    #[error(transparent)]
    Features(#[from] FeatureError),
    /// Nothing voiced was found.
    #[error("no voiced audio found in {duration_s:.2} s of audio")]
    NoVoice {
        /// Decoded duration, seconds.
        duration_s: f64,
    },
    /// Too little audio for a filterbank model.
    #[error("{voiced_s:.2} s of voiced audio is too short to embed: the model needs at least {min_s:.2} s")]
    TooShort {
        /// Voiced duration, seconds.
        voiced_s: f64,
        /// The least the model takes, seconds.
        min_s: f64,
    },
    /// The encoder failed.
    #[error("encoder failed: {0}")]
    Encoder(#[from] candle_core::Error),
    /// The encoder failed on a batch this file was part of.
    #[error("encoder failed on the batch holding this file: {0}")]
    Batch(String),
}

/// How the front end treats silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    /// Cut long silences with voice activity detection (GE2E's reference does; for the
    /// filterbank models VocalGuard does it the same way, as their references embed whatever
    /// they are given).
    Silences,
    /// Keep all the audio (the filterbank models then match their references on a whole file).
    Off,
}

/// Least voiced audio a filterbank model embeds, seconds: shorter inputs leave the
/// convolutions fewer frames than their kernels span.
pub const MIN_FBANK_SECONDS: f64 = 0.5;

/// Audio made ready for the encoder: its encoder inputs, each `frames` frames of features.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Decoded duration, seconds.
    pub duration_s: f64,
    /// Duration kept after trimming, seconds.
    pub voiced_s: f64,
    /// Number of encoder inputs: GE2E's partial windows, or 1 (the whole utterance) for the
    /// fbank models.
    pub n_partials: usize,
    /// Frames per input.
    frames: usize,
    /// `n_partials * frames * bins` feature values.
    features: Vec<f32>,
}

/// One utterance embedding with what it was computed from.
#[derive(Debug, Clone, Serialize)]
pub struct Embedding {
    /// Unit-norm embedding.
    pub vector: Vec<f32>,
    /// Decoded duration, seconds.
    pub duration_s: f64,
    /// Duration kept after trimming, seconds.
    pub voiced_s: f64,
    /// Partial windows averaged.
    pub n_partials: usize,
}

/// Start frames of the partial windows over `n_samples` samples, as Resemblyzer's
/// `compute_partial_slices` places them, and the number of samples the audio must be
/// zero-padded to so that every window is covered.
pub fn partial_starts(n_samples: usize, frontend: &FrontendConfig) -> (Vec<usize>, usize) {
    let hop = frontend.hop_length;
    let frames = frontend.partial_frames;
    let n_frames = (n_samples + 1).div_ceil(hop);
    let frame_step = partial_step_frames(frontend);
    let steps = (n_frames + frame_step + 1).saturating_sub(frames).max(1);
    let mut starts: Vec<usize> = (0..steps).step_by(frame_step).collect();
    let last = *starts.last().expect("at least one window");
    let coverage = (n_samples as f64 - (last * hop) as f64) / (frames * hop) as f64;
    if coverage < frontend.min_coverage && starts.len() > 1 {
        starts.pop();
    }
    let padded = (starts.last().expect("at least one window") + frames) * hop;
    (starts, padded)
}

/// Frames between the starts of consecutive partial windows.
fn partial_step_frames(frontend: &FrontendConfig) -> usize {
    ((frontend.sample_rate as f64 / frontend.partials_per_second) / frontend.hop_length as f64)
        .round_ties_even()
        .max(1.0) as usize
}

/// Sliding windows over a track's voiced audio, as asked for in seconds. A window is a run of
/// consecutive partials, so the lengths actually used are the nearest the partial grid allows
/// (reported in [`WindowedTrack`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Window length, seconds of voiced audio.
    pub window_s: f64,
    /// Step between window starts, seconds of voiced audio.
    pub hop_s: f64,
}

/// One window of a track with its embedding.
#[derive(Debug, Clone)]
pub struct TrackWindow {
    /// Where it lies in the voiced audio (the voiced regions concatenated), seconds.
    pub voiced: Range<f64>,
    /// The stretches of the original track it covers, seconds; silences between voiced
    /// regions are not included.
    pub spans: Vec<Range<f64>>,
    /// Unit-norm embedding of the window (mean of its partials).
    pub embedding: Vec<f32>,
}

/// A track embedded window by window over its voiced regions.
#[derive(Debug, Clone)]
pub struct WindowedTrack {
    /// Decoded duration, seconds.
    pub duration_s: f64,
    /// Voiced audio, seconds.
    pub voiced_s: f64,
    /// Window length used, seconds.
    pub window_s: f64,
    /// Step used, seconds.
    pub hop_s: f64,
    /// Partial windows run through the encoder.
    pub n_partials: usize,
    /// Windows in voiced-time order; empty when there is no voice.
    pub windows: Vec<TrackWindow>,
}

/// How a model's front end turns audio into encoder inputs.
enum Analysis {
    /// GE2E: level, voice activity, mel, partial windows (as Resemblyzer does).
    Partials {
        frontend: FrontendConfig,
        mel: MelSpectrogram,
    },
    /// Filterbank models: trimming, then features of the whole utterance or window.
    Utterance {
        frontend: UtteranceFrontend,
        trim: TrimConfig,
    },
}

/// The embedding pipeline for one model.
pub struct Embedder {
    model: Arc<SpeakerModel>,
    analysis: Analysis,
    limits: DecodeLimits,
    trim: Trim,
    max_batch: usize,
    /// The shared encoder thread, when inputs are batched across callers.
    batcher: Option<batcher::Batcher>,
}

impl Embedder {
    /// Partials run through the encoder at once unless configured otherwise.
    pub const DEFAULT_MAX_BATCH: usize = 128;

    /// A pipeline for `model`, decoding under `limits`.
    pub fn new(model: SpeakerModel, limits: DecodeLimits) -> Result<Self, EmbedError> {
        let analysis = match &model.card().architecture {
            Architecture::Ge2e(card) => Analysis::Partials {
                frontend: card.frontend,
                mel: MelSpectrogram::new(card.frontend.mel()?)?,
            },
            Architecture::Ecapa(card) => Analysis::Utterance {
                frontend: UtteranceFrontend::speechbrain(card.frontend),
                trim: card.trim,
            },
            Architecture::Resnet34(card) => Analysis::Utterance {
                frontend: UtteranceFrontend::kaldi(card.frontend)?,
                trim: card.trim,
            },
            Architecture::Campp(card) => Analysis::Utterance {
                frontend: UtteranceFrontend::kaldi(card.frontend)?,
                trim: card.trim,
            },
        };
        Ok(Self {
            model: Arc::new(model),
            analysis,
            limits,
            trim: Trim::Silences,
            max_batch: Self::DEFAULT_MAX_BATCH,
            batcher: None,
        })
    }

    /// Sets how silences are treated.
    pub fn with_trim(mut self, trim: Trim) -> Self {
        self.trim = trim;
        self
    }

    /// Sets the largest number of partials run through the encoder at once.
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Batches encoder inputs across the threads that call this embedder: one encoder
    /// thread runs them, gathered as `config` says (its `max_batch` also replaces the
    /// embedder's); `observer` hears of every pass.
    pub fn with_batching(mut self, config: BatchConfig, observer: BatchObserver) -> Self {
        self.max_batch = config.max_batch.max(1);
        let config = BatchConfig {
            max_batch: self.max_batch,
            ..config
        };
        self.batcher = Some(batcher::Batcher::start(
            Arc::clone(&self.model),
            self.bins(),
            config,
            observer,
        ));
        self
    }

    /// The model's name and weights hash.
    pub fn model_id(&self) -> &ModelId {
        self.model.id()
    }

    /// The loaded model.
    pub fn model(&self) -> &SpeakerModel {
        &self.model
    }

    /// Decodes and prepares a file.
    pub fn prepare_file(&self, path: &Path) -> Result<Prepared, EmbedError> {
        let decoded = audio::load_file(path, &self.limits)?;
        self.prepare_samples(decoded.samples)
    }

    /// Prepares mono samples at the model's sample rate.
    pub fn prepare_samples(&self, samples: Vec<f32>) -> Result<Prepared, EmbedError> {
        match &self.analysis {
            Analysis::Partials { frontend, mel } => self.prepare_partials(samples, frontend, mel),
            Analysis::Utterance { frontend, trim } => {
                self.prepare_utterance(samples, frontend, trim)
            }
        }
    }

    /// Features per frame of the encoder's input.
    fn bins(&self) -> usize {
        match &self.analysis {
            Analysis::Partials { frontend, .. } => frontend.n_mels,
            Analysis::Utterance { frontend, .. } => frontend.bins(),
        }
    }

    /// Filterbank models: trimming (with `Trim::Silences`), then the mean-normalised features
    /// of the whole voiced audio as one encoder input.
    fn prepare_utterance(
        &self,
        samples: Vec<f32>,
        frontend: &UtteranceFrontend,
        trim: &TrimConfig,
    ) -> Result<Prepared, EmbedError> {
        let rate = frontend.sample_rate() as f64;
        let duration_s = samples.len() as f64 / rate;
        let voiced = match self.trim {
            Trim::Silences => voiced_regions(&samples, frontend.sample_rate(), trim)?
                .into_iter()
                .flat_map(|r| samples[r].iter().copied())
                .collect(),
            Trim::Off => samples,
        };
        if voiced.is_empty() {
            return Err(EmbedError::NoVoice { duration_s });
        }
        let voiced_s = voiced.len() as f64 / rate;
        if voiced_s < MIN_FBANK_SECONDS {
            return Err(EmbedError::TooShort {
                voiced_s,
                min_s: MIN_FBANK_SECONDS,
            });
        }
        let features = frontend.compute(&voiced)?;
        Ok(Prepared {
            duration_s,
            voiced_s,
            n_partials: 1,
            frames: features.frames,
            features: features.data,
        })
    }

    /// GE2E: level normalisation, trimming, mel, partial windows.
    fn prepare_partials(
        &self,
        mut samples: Vec<f32>,
        frontend: &FrontendConfig,
        mel: &MelSpectrogram,
    ) -> Result<Prepared, EmbedError> {
        let rate = frontend.sample_rate as f64;
        let duration_s = samples.len() as f64 / rate;
        level::normalize_volume(&mut samples, frontend.target_dbfs, true);
        if self.trim == Trim::Silences {
            let activity = VoiceActivity::detect(&samples, frontend.sample_rate, &frontend.vad())?;
            samples = activity.trim(&samples);
        }
        if samples.is_empty() {
            return Err(EmbedError::NoVoice { duration_s });
        }
        Ok(partials_of_voiced(samples, duration_s, frontend, mel))
    }
    /// Embeds every encoder input of `items` and returns each item's input embeddings,
    /// `n_partials * dim` values. Inputs of equal length are batched together, across items,
    /// up to the largest batch.
    pub fn embed_partials(&self, items: &[&Prepared]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let bins = self.bins();
        let dim = self.model.embedding_dim();
        let all: Vec<(usize, &[f32])> = items
            .iter()
            .flat_map(|p| {
                p.features
                    .chunks_exact(p.frames * bins)
                    .map(move |input| (p.frames, input))
            })
            .collect();
        let mut vectors = Vec::with_capacity(all.len() * dim);
        let mut rest = all.as_slice();
        while let Some(&(frames, _)) = rest.first() {
            // The encoder thread cuts its passes to the largest batch itself.
            let cap = if self.batcher.is_some() {
                usize::MAX
            } else {
                self.max_batch
            };
            let run = rest
                .iter()
                .take(cap)
                .take_while(|(f, _)| *f == frames)
                .count();
            let (batch, tail) = rest.split_at(run);
            rest = tail;
            let data: Vec<f32> = batch.iter().flat_map(|(_, x)| x.iter().copied()).collect();
            vectors.extend(self.encode(frames, batch.len(), data)?);
        }
        let mut out = Vec::with_capacity(items.len());
        let mut offset = 0;
        for item in items {
            let len = item.n_partials * dim;
            out.push(vectors[offset..offset + len].to_vec());
            offset += len;
        }
        Ok(out)
    }

    /// Runs `count` inputs of `frames` frames through the encoder: on the shared encoder
    /// thread when batching across callers, else here.
    fn encode(&self, frames: usize, count: usize, data: Vec<f32>) -> Result<Vec<f32>, EmbedError> {
        if let Some(batcher) = &self.batcher {
            return batcher.embed(frames, count, data);
        }
        let inputs = Tensor::from_vec(data, (count, frames, self.bins()), self.model.device())?;
        Ok(self
            .model
            .embed_partials(&inputs)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// Embeds prepared items, batching their partials together.
    pub fn embed_prepared(&self, items: &[&Prepared]) -> Result<Vec<Embedding>, EmbedError> {
        let dim = self.model.embedding_dim();
        let partials = self.embed_partials(items)?;
        Ok(items
            .iter()
            .zip(partials)
            .map(|(item, partials)| Embedding {
                vector: mean_unit(&partials, dim),
                duration_s: item.duration_s,
                voiced_s: item.voiced_s,
                n_partials: item.n_partials,
            })
            .collect())
    }

    /// Embeds many files, preparing them in parallel on the current rayon pool and batching
    /// their partials through the encoder; `sink` gets each file's index and result in order.
    pub fn embed_files<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
        mut sink: impl FnMut(usize, Result<Embedding, EmbedError>),
    ) {
        use rayon::prelude::*;
        const FILES_PER_ROUND: usize = 16;
        for (round, chunk) in paths.chunks(FILES_PER_ROUND).enumerate() {
            let prepared: Vec<Result<Prepared, EmbedError>> = chunk
                .par_iter()
                .map(|p| self.prepare_file(p.as_ref()))
                .collect();
            let ready: Vec<&Prepared> = prepared.iter().filter_map(|p| p.as_ref().ok()).collect();
            let mut embedded = match self.embed_prepared(&ready) {
                Ok(embeddings) => embeddings.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => {
                    let reason = e.to_string();
                    ready
                        .iter()
                        .map(|_| Err(EmbedError::Batch(reason.clone())))
                        .collect()
                }
            }
            .into_iter();
            for (i, prep) in prepared.into_iter().enumerate() {
                let result = match prep {
                    Ok(_) => embedded.next().expect("one result per prepared file"),
                    Err(e) => Err(e),
                };
                sink(round * FILES_PER_ROUND + i, result);
            }
        }
    }

    /// Embeds `samples` (mono, at the model's rate) window by window over its voiced regions,
    /// each window keeping its place in the track. GE2E: the level is normalised, voice
    /// activity found, the voiced regions concatenated and cut into partials that are embedded
    /// in batches; a window is a run of partials and its embedding their mean, as an utterance
    /// embedding is.
    pub fn embed_windows(
        &self,
        samples: Vec<f32>,
        config: &WindowConfig,
    ) -> Result<WindowedTrack, EmbedError> {
        match &self.analysis {
            Analysis::Partials { frontend, mel } => {
                self.partial_windows(samples, config, frontend, mel)
            }
            Analysis::Utterance { frontend, trim } => {
                self.utterance_windows(samples, config, frontend, trim)
            }
        }
    }

    /// Filterbank models: voice activity found as for [`Trim::Silences`], the voiced regions
    /// concatenated and cut into windows of exactly `window_s` every `hop_s` (the last one
    /// ending with the voiced audio; one shorter window when all of it is shorter), each
    /// window's features computed on its own samples, windows batched through the encoder.
    fn utterance_windows(
        &self,
        samples: Vec<f32>,
        config: &WindowConfig,
        frontend: &UtteranceFrontend,
        trim: &TrimConfig,
    ) -> Result<WindowedTrack, EmbedError> {
        let rate = frontend.sample_rate() as f64;
        let regions = voiced_regions(&samples, frontend.sample_rate(), trim)?;
        let voiced: Vec<f32> = regions
            .iter()
            .flat_map(|r| samples[r.clone()].iter().copied())
            .collect();
        let window = ((config.window_s * rate).round() as usize).max(1);
        let hop = ((config.hop_s * rate).round() as usize).max(1);
        let mut track = WindowedTrack {
            duration_s: samples.len() as f64 / rate,
            voiced_s: voiced.len() as f64 / rate,
            window_s: window as f64 / rate,
            hop_s: hop as f64 / rate,
            n_partials: 0,
            windows: Vec::new(),
        };
        if track.voiced_s < MIN_FBANK_SECONDS {
            return Ok(track);
        }
        let ranges = window_ranges(voiced.len(), window, hop);
        let prepared = ranges
            .iter()
            .map(|r| {
                let features = frontend.compute(&voiced[r.clone()])?;
                Ok(Prepared {
                    duration_s: track.duration_s,
                    voiced_s: r.len() as f64 / rate,
                    n_partials: 1,
                    frames: features.frames,
                    features: features.data,
                })
            })
            .collect::<Result<Vec<_>, EmbedError>>()?;
        let embeddings = self.embed_prepared(&prepared.iter().collect::<Vec<_>>())?;
        track.n_partials = ranges.len();
        for (range, embedding) in ranges.into_iter().zip(embeddings) {
            track.windows.push(TrackWindow {
                voiced: range.start as f64 / rate..range.end as f64 / rate,
                spans: track_spans(&regions, range, rate),
                embedding: embedding.vector,
            });
        }
        Ok(track)
    }

    fn partial_windows(
        &self,
        mut samples: Vec<f32>,
        config: &WindowConfig,
        frontend: &FrontendConfig,
        mel: &MelSpectrogram,
    ) -> Result<WindowedTrack, EmbedError> {
        let rate = frontend.sample_rate as f64;
        let duration_s = samples.len() as f64 / rate;
        level::normalize_volume(&mut samples, frontend.target_dbfs, true);
        let regions = VoiceActivity::detect(&samples, frontend.sample_rate, &frontend.vad())?
            .voiced_regions();
        let voiced: Vec<f32> = regions
            .iter()
            .flat_map(|r| samples[r.clone()].iter().copied())
            .collect();
        let hop = frontend.hop_length;
        let step = partial_step_frames(frontend);
        let window_partials =
            ((config.window_s * rate / hop as f64 - frontend.partial_frames as f64) / step as f64)
                .round()
                .max(0.0) as usize
                + 1;
        let hop_partials = ((config.hop_s * rate / hop as f64) / step as f64)
            .round()
            .max(1.0) as usize;
        let mut track = WindowedTrack {
            duration_s,
            voiced_s: voiced.len() as f64 / rate,
            window_s: ((window_partials - 1) * step + frontend.partial_frames) as f64 * hop as f64
                / rate,
            hop_s: (hop_partials * step * hop) as f64 / rate,
            n_partials: 0,
            windows: Vec::new(),
        };
        if voiced.is_empty() {
            return Ok(track);
        }
        let voiced_len = voiced.len();
        let prepared = partials_of_voiced(voiced, duration_s, frontend, mel);
        let (starts, _) = partial_starts(voiced_len, frontend);
        let dim = self.model.embedding_dim();
        let partials = self.embed_partials(&[&prepared])?.remove(0);
        track.n_partials = starts.len();
        let n = starts.len();
        let mut first: Vec<usize> = (0..n.saturating_sub(window_partials) + 1)
            .step_by(hop_partials)
            .collect();
        if let Some(&last) = first.last() {
            if last + window_partials < n {
                first.push(n - window_partials);
            }
        }
        let partial_samples = frontend.partial_frames * hop;
        for i in first {
            let end = (i + window_partials).min(n);
            let from = starts[i] * hop;
            let to = (starts[end - 1] * hop + partial_samples).min(voiced_len);
            track.windows.push(TrackWindow {
                voiced: from as f64 / rate..to as f64 / rate,
                spans: track_spans(&regions, from..to, rate),
                embedding: mean_unit(&partials[i * dim..end * dim], dim),
            });
        }
        Ok(track)
    }

    /// Decodes, prepares and embeds one file.
    pub fn embed_file(&self, path: &Path) -> Result<Embedding, EmbedError> {
        let prepared = self.prepare_file(path)?;
        Ok(self.embed_prepared(&[&prepared])?.remove(0))
    }
}

/// Cuts level-normalised, non-empty voiced samples into GE2E partials of mel frames.
fn partials_of_voiced(
    mut samples: Vec<f32>,
    duration_s: f64,
    frontend: &FrontendConfig,
    mel: &MelSpectrogram,
) -> Prepared {
    let voiced_s = samples.len() as f64 / frontend.sample_rate as f64;
    let (starts, padded_len) = partial_starts(samples.len(), frontend);
    samples.resize(padded_len.max(samples.len()), 0.0);
    let mel = mel.compute(&samples);
    let n_mels = frontend.n_mels;
    let window = frontend.partial_frames * n_mels;
    let mut partial_mels = Vec::with_capacity(starts.len() * window);
    for &start in &starts {
        partial_mels.extend_from_slice(&mel[start * n_mels..start * n_mels + window]);
    }
    Prepared {
        duration_s,
        voiced_s,
        n_partials: starts.len(),
        frames: frontend.partial_frames,
        features: partial_mels,
    }
}

/// The voiced regions of `samples` (sample ranges of it), found by voice activity detection on
/// a copy raised to the trim's loudness, so quiet recordings are not taken for silence; the
/// filterbank models then read the samples as decoded.
fn voiced_regions(
    samples: &[f32],
    sample_rate: u32,
    trim: &TrimConfig,
) -> Result<Vec<Range<usize>>, EmbedError> {
    let mut levelled = samples.to_vec();
    level::normalize_volume(&mut levelled, trim.target_dbfs, true);
    Ok(VoiceActivity::detect(&levelled, sample_rate, &trim.vad)?.voiced_regions())
}

/// Windows of `window` samples every `hop` over `len` samples; a last window ends at `len`
/// when the hops leave a tail, and audio shorter than a window is one window.
pub fn window_ranges(len: usize, window: usize, hop: usize) -> Vec<Range<usize>> {
    if len <= window {
        return std::iter::once(0..len).collect();
    }
    let mut ranges: Vec<Range<usize>> = (0..=len - window)
        .step_by(hop)
        .map(|s| s..s + window)
        .collect();
    if ranges.last().is_some_and(|r| r.end < len) {
        ranges.push(len - window..len);
    }
    ranges
}

/// The stretches of the original track, in seconds, that the voiced-time sample range `range`
/// covers, given the voiced `regions` (track sample ranges) that were concatenated.
fn track_spans(regions: &[Range<usize>], range: Range<usize>, rate: f64) -> Vec<Range<f64>> {
    let mut spans = Vec::new();
    let mut offset = 0;
    for region in regions {
        let len = region.len();
        let from = range.start.max(offset);
        let to = range.end.min(offset + len);
        if from < to {
            let start = region.start + (from - offset);
            let end = region.start + (to - offset);
            spans.push(start as f64 / rate..end as f64 / rate);
        }
        offset += len;
    }
    spans
}

/// L2-normalised mean of the `dim`-long rows of `rows`.
pub fn mean_unit(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut mean = vec![0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64;
        }
    }
    let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
    mean.iter()
        .map(|&m| if norm > 0.0 { (m / norm) as f32 } else { 0.0 })
        .collect()
}

/// Cosine similarity of two embeddings.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontend() -> FrontendConfig {
        FrontendConfig {
            sample_rate: 16_000,
            n_fft: 400,
            hop_length: 160,
            win_length: 400,
            n_mels: 40,
            fmin: 0.0,
            fmax: 8000.0,
            partial_frames: 160,
            partials_per_second: 1.3,
            min_coverage: 0.75,
            target_dbfs: -30.0,
            vad_window_ms: 30,
            vad_mode: 3,
            vad_moving_average_width: 8,
            vad_max_silence_windows: 6,
        }
    }

    #[test]
    fn partials_match_the_reference_slices() {
        // 533-1066-0005 trimmed: 97,440 samples → 7 partials 77 frames apart, padded to 99,520.
        let (starts, padded) = partial_starts(97_440, &frontend());
        assert_eq!(starts, vec![0, 77, 154, 231, 308, 385, 462]);
        assert_eq!(padded, 99_520);
    }

    #[test]
    fn short_audio_still_gets_one_partial() {
        let (starts, padded) = partial_starts(1_000, &frontend());
        assert_eq!(starts, vec![0]);
        assert_eq!(padded, 25_600);
    }

    #[test]
    fn windows_cover_the_voiced_audio() {
        assert_eq!(window_ranges(10, 4, 2), vec![0..4, 2..6, 4..8, 6..10]);
        assert_eq!(window_ranges(11, 4, 3), vec![0..4, 3..7, 6..10, 7..11]);
        assert_eq!(window_ranges(3, 4, 2), vec![0..3]);
        assert_eq!(window_ranges(4, 4, 2), vec![0..4]);
    }

    #[test]
    fn cosine_and_mean_behave() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        let m = mean_unit(&[1.0, 0.0, 0.0, 1.0], 2);
        assert!((m[0] - m[1]).abs() < 1e-6 && (m[0] * m[0] + m[1] * m[1] - 1.0).abs() < 1e-6);
    }
}
