//! Power mel spectrogram computed exactly as `librosa.feature.melspectrogram` does it:
//! periodic Hann window, centred frames with zero padding, power 2, Slaney mel scale and
//! Slaney area normalisation. The output is `(frames, n_mels)` in row-major order.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use super::FeatureError;

/// Parameters of a power mel spectrogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MelConfig {
    /// Sample rate of the input, Hz.
    pub sample_rate: u32,
    /// FFT size (also the window length).
    pub n_fft: usize,
    /// Hop between frames, in samples.
    pub hop_length: usize,
    /// Number of mel bands.
    pub n_mels: usize,
    /// Lowest band edge, Hz.
    pub fmin: f64,
    /// Highest band edge, Hz.
    pub fmax: f64,
}

/// A reusable mel spectrogram: FFT plan, window and filterbank computed once.
pub struct MelSpectrogram {
    config: MelConfig,
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    /// `(n_mels, n_fft / 2 + 1)` Slaney filterbank, row-major, stored as f32 like librosa's.
    filterbank: Vec<f32>,
    /// For each mel band, the range of FFT bins where its weights are non-zero.
    band_bins: Vec<std::ops::Range<usize>>,
}

impl MelSpectrogram {
    /// Plans the FFT and builds the window and filterbank for `config`.
    pub fn new(config: MelConfig) -> Result<Self, FeatureError> {
        if config.n_fft < 2 || config.hop_length == 0 || config.n_mels == 0 {
            return Err(FeatureError::InvalidConfig(format!(
                "n_fft {} hop {} n_mels {}",
                config.n_fft, config.hop_length, config.n_mels
            )));
        }
        if !(config.fmin >= 0.0 && config.fmax > config.fmin) {
            return Err(FeatureError::InvalidConfig(format!(
                "fmin {} fmax {}",
                config.fmin, config.fmax
            )));
        }
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(config.n_fft);
        let n = config.n_fft as f64;
        let window = (0..config.n_fft)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos())
            .collect();
        let filterbank = slaney_filterbank(&config);
        let n_bins = config.n_fft / 2 + 1;
        let band_bins = filterbank
            .chunks(n_bins)
            .map(|row| {
                let start = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = row.iter().rposition(|&w| w != 0.0).map_or(start, |e| e + 1);
                start..end
            })
            .collect();
        Ok(Self {
            config,
            fft,
            window,
            filterbank,
            band_bins,
        })
    }

    /// The parameters this spectrogram was built with.
    pub fn config(&self) -> &MelConfig {
        &self.config
    }

    /// The Slaney filterbank, `(n_mels, n_fft / 2 + 1)` row-major.
    pub fn filterbank(&self) -> &[f32] {
        &self.filterbank
    }

    /// Number of frames `compute` returns for `n_samples` input samples.
    pub fn num_frames(&self, n_samples: usize) -> usize {
        1 + n_samples / self.config.hop_length
    }

    /// Computes the power mel spectrogram of `samples`: `num_frames(len) * n_mels` values,
    /// frame after frame.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let MelConfig {
            n_fft,
            hop_length,
            n_mels,
            ..
        } = self.config;
        let pad = n_fft / 2;
        let n_frames = self.num_frames(samples.len());
        let n_bins = n_fft / 2 + 1;
        let mut out = Vec::with_capacity(n_frames * n_mels);
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; n_bins];
        for t in 0..n_frames {
            // Frame t covers padded[t * hop .. t * hop + n_fft], padded = zeros(pad) ++ samples ++ zeros(pad).
            let start = (t * hop_length) as isize - pad as isize;
            for (i, slot) in frame.iter_mut().enumerate() {
                let idx = start + i as isize;
                let x = if idx >= 0 && (idx as usize) < samples.len() {
                    samples[idx as usize] as f64
                } else {
                    0.0
                };
                *slot = x * self.window[i];
            }
            self.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .expect("buffers come from the same plan");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = (c.re * c.re + c.im * c.im) as f32;
            }
            for (band, bins) in self.band_bins.iter().enumerate() {
                let weights = &self.filterbank[band * n_bins..(band + 1) * n_bins];
                let mut acc = 0f64;
                for k in bins.clone() {
                    acc += weights[k] as f64 * power[k] as f64;
                }
                out.push(acc as f32);
            }
        }
        out
    }
}

/// Slaney's mel scale (librosa's default, `htk=False`): linear below 1 kHz, logarithmic above.
const SLANEY_HZ_PER_MEL: f64 = 200.0 / 3.0;
const SLANEY_LOG_START_HZ: f64 = 1000.0;
const SLANEY_LOG_START_MEL: f64 = SLANEY_LOG_START_HZ / SLANEY_HZ_PER_MEL;

/// Mel per natural-log step of frequency above 1 kHz: `ln(6.4) / 27`.
fn slaney_logstep() -> f64 {
    6.4f64.ln() / 27.0
}

/// Hz to Slaney mel.
fn hz_to_mel(hz: f64) -> f64 {
    if hz >= SLANEY_LOG_START_HZ {
        SLANEY_LOG_START_MEL + (hz / SLANEY_LOG_START_HZ).ln() / slaney_logstep()
    } else {
        hz / SLANEY_HZ_PER_MEL
    }
}

/// Inverse of [`hz_to_mel`].
fn mel_to_hz(mel: f64) -> f64 {
    if mel >= SLANEY_LOG_START_MEL {
        SLANEY_LOG_START_HZ * (slaney_logstep() * (mel - SLANEY_LOG_START_MEL)).exp()
    } else {
        SLANEY_HZ_PER_MEL * mel
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm='slaney')`, as f32.
fn slaney_filterbank(config: &MelConfig) -> Vec<f32> {
    let n_bins = config.n_fft / 2 + 1;
    let sr = config.sample_rate as f64;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|k| k as f64 * (sr / 2.0) / (n_bins - 1) as f64)
        .collect();
    let (mel_lo, mel_hi) = (hz_to_mel(config.fmin), hz_to_mel(config.fmax));
    let n_points = config.n_mels + 2;
    let mel_points: Vec<f64> = (0..n_points)
        .map(|i| mel_to_hz(mel_lo + (mel_hi - mel_lo) * i as f64 / (n_points - 1) as f64))
        .collect();
    let mut weights = vec![0f32; config.n_mels * n_bins];
    for band in 0..config.n_mels {
        let (left, centre, right) = (mel_points[band], mel_points[band + 1], mel_points[band + 2]);
        let enorm = 2.0 / (right - left);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - left) / (centre - left);
            let upper = (right - f) / (right - centre);
            let w = lower.min(upper).max(0.0);
            weights[band * n_bins + k] = (w * enorm) as f32;
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ge2e() -> MelSpectrogram {
        MelSpectrogram::new(MelConfig {
            sample_rate: 16_000,
            n_fft: 400,
            hop_length: 160,
            n_mels: 40,
            fmin: 0.0,
            fmax: 8000.0,
        })
        .unwrap()
    }

    #[test]
    fn frame_count_follows_centre_padding() {
        let mel = ge2e();
        assert_eq!(mel.compute(&[0.0; 1600]).len(), 11 * 40);
        assert_eq!(mel.compute(&[]).len(), 40);
        assert_eq!(mel.num_frames(159), 1);
    }

    #[test]
    fn a_tone_lands_in_the_band_that_holds_its_frequency() {
        let mel = ge2e();
        let tone: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let out = mel.compute(&tone);
        let frame = &out[50 * 40..51 * 40];
        let loudest = (0..40)
            .max_by(|&a, &b| frame[a].total_cmp(&frame[b]))
            .unwrap();
        let n_bins = 201;
        let fb = mel.filterbank();
        let bin_1k = 25; // 1000 Hz / (8000 Hz / 200 bins)
        let best_band = (0..40)
            .max_by(|&a, &b| fb[a * n_bins + bin_1k].total_cmp(&fb[b * n_bins + bin_1k]))
            .unwrap();
        assert_eq!(loudest, best_band);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let mut config = *ge2e().config();
        config.hop_length = 0;
        assert!(MelSpectrogram::new(config).is_err());
        config.hop_length = 160;
        config.fmax = 0.0;
        assert!(MelSpectrogram::new(config).is_err());
    }
}
