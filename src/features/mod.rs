//! Feature extraction: the front-end parameters a model card states, GE2E's mel spectrogram
//! (`mel`), SpeechBrain's filterbank (`sb_fbank`, ECAPA-TDNN) and Kaldi's (`kaldi_fbank`,
//! WeSpeaker's ResNet34), and [`UtteranceFrontend`], the one interface the pipeline uses for
//! the two filterbanks.

pub mod kaldi_fbank;
pub mod mel;
pub mod sb_fbank;

use serde::{Deserialize, Serialize};

use crate::audio::vad::VadConfig;
use kaldi_fbank::{KaldiFbank, KaldiFbankConfig};
use mel::MelConfig;
use sb_fbank::SbFbankConfig;

/// Errors of feature extraction.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// A front-end parameter is out of range.
    #[error("invalid front-end configuration: {0}")]
    InvalidConfig(String),
}

/// Every front-end parameter of a GE2E-style model: level, voice activity, mel, partials.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrontendConfig {
    /// Sample rate the model works at, Hz.
    pub sample_rate: u32,
    /// FFT size.
    pub n_fft: usize,
    /// Hop between mel frames, samples.
    pub hop_length: usize,
    /// Analysis window length, samples (equal to `n_fft` for the models supported).
    pub win_length: usize,
    /// Mel bands.
    pub n_mels: usize,
    /// Lowest mel band edge, Hz.
    pub fmin: f64,
    /// Highest mel band edge, Hz.
    pub fmax: f64,
    /// Frames per partial utterance.
    pub partial_frames: usize,
    /// Partial utterances per second of audio.
    pub partials_per_second: f64,
    /// Smallest share of a partial the audio must cover for the last partial to be kept.
    pub min_coverage: f64,
    /// Loudness the audio is raised to before analysis, dBFS.
    pub target_dbfs: f64,
    /// Voice activity window, ms.
    pub vad_window_ms: u32,
    /// WebRTC VAD aggressiveness.
    pub vad_mode: u8,
    /// Moving-average width over VAD decisions, windows.
    pub vad_moving_average_width: usize,
    /// Longest silence kept inside speech, windows.
    pub vad_max_silence_windows: usize,
}

impl FrontendConfig {
    /// The mel spectrogram parameters.
    pub fn mel(&self) -> Result<MelConfig, FeatureError> {
        if self.win_length != self.n_fft {
            return Err(FeatureError::InvalidConfig(format!(
                "win_length {} must equal n_fft {}",
                self.win_length, self.n_fft
            )));
        }
        Ok(MelConfig {
            sample_rate: self.sample_rate,
            n_fft: self.n_fft,
            hop_length: self.hop_length,
            n_mels: self.n_mels,
            fmin: self.fmin,
            fmax: self.fmax,
        })
    }

    /// The voice activity parameters.
    pub fn vad(&self) -> VadConfig {
        VadConfig {
            window_ms: self.vad_window_ms,
            mode: self.vad_mode,
            moving_average_width: self.vad_moving_average_width,
            max_silence_windows: self.vad_max_silence_windows,
        }
    }
}

/// A feature matrix: `frames` rows of `bins` values, row-major (the filterbank front ends'
/// output).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Number of frames (rows).
    pub frames: usize,
    /// Values per frame (columns).
    pub bins: usize,
    /// `frames * bins` values, frame after frame.
    pub data: Vec<f32>,
}

/// A filterbank front end that turns a whole utterance (or window) into mean-normalised
/// features, as the ECAPA-TDNN and ResNet34 references compute them.
pub enum UtteranceFrontend {
    /// SpeechBrain's `Fbank` with sentence mean normalisation.
    Speechbrain(SbFbankConfig),
    /// Kaldi's filterbank (dither off) with cepstral mean normalisation; built once.
    Kaldi(Box<KaldiFbank>),
}

impl UtteranceFrontend {
    /// The SpeechBrain front end.
    pub fn speechbrain(config: SbFbankConfig) -> Self {
        Self::Speechbrain(config)
    }

    /// The Kaldi front end, its window and filters built once.
    pub fn kaldi(config: KaldiFbankConfig) -> Result<Self, FeatureError> {
        Ok(Self::Kaldi(Box::new(KaldiFbank::new(config)?)))
    }

    /// Features per frame.
    pub fn bins(&self) -> usize {
        match self {
            Self::Speechbrain(c) => c.n_mels,
            Self::Kaldi(fbank) => fbank.config().num_mel_bins,
        }
    }

    /// Sample rate the front end expects, Hz.
    pub fn sample_rate(&self) -> u32 {
        match self {
            Self::Speechbrain(c) => c.sample_rate,
            Self::Kaldi(fbank) => fbank.config().sample_rate,
        }
    }

    /// Mean-normalised features of `samples`.
    pub fn compute(&self, samples: &[f32]) -> Result<Features, FeatureError> {
        match self {
            Self::Speechbrain(c) => sb_fbank::features(samples, c),
            Self::Kaldi(fbank) => Ok(fbank.compute(samples)),
        }
    }
}
