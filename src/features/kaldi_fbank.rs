//! Kaldi-style log mel filterbank with cepstral mean normalisation, as WeSpeaker computes it
//! for its ResNet models: torchaudio's `compliance.kaldi.fbank` on the waveform scaled to the
//! 16-bit integer range, then the per-bin mean over frames subtracted.
//!
//! Per frame (Kaldi's `snip_edges`: only frames that fit wholly in the signal, no dither):
//! remove the frame's DC offset, pre-emphasise, window, zero-pad to the FFT size, power
//! spectrum, triangular filters evenly spaced on Kaldi's mel scale (`1127 ln(1 + f/700)`), and
//! the log floored at `f32::EPSILON`. Computed in f64 throughout.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use super::{FeatureError, Features};

/// The analysis window of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KaldiWindow {
    /// Symmetric Hamming, `0.54 - 0.46 cos(2πn/(N-1))` (WeSpeaker's default).
    Hamming,
    /// Kaldi's default: the symmetric Hann window raised to the power 0.85.
    Povey,
}

/// Every parameter of the Kaldi filterbank front end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KaldiFbankConfig {
    /// Sample rate of the input, Hz.
    pub sample_rate: u32,
    /// Factor applied to samples in [-1, 1] before analysis (32768: the 16-bit integer range).
    pub waveform_scale: f64,
    /// Frame length, ms.
    pub frame_length_ms: f64,
    /// Frame shift, ms.
    pub frame_shift_ms: f64,
    /// Zero-pad each frame to the next power of two before the FFT.
    pub round_to_power_of_two: bool,
    /// Subtract each frame's mean before pre-emphasis.
    pub remove_dc_offset: bool,
    /// Pre-emphasis coefficient.
    pub preemphasis: f64,
    /// Analysis window.
    pub window: KaldiWindow,
    /// Mel bands.
    pub num_mel_bins: usize,
    /// Lowest band edge, Hz.
    pub low_freq: f64,
    /// Highest band edge, Hz; zero or negative is an offset from the Nyquist frequency.
    pub high_freq: f64,
}

impl KaldiFbankConfig {
    /// The front end of WeSpeaker's `wespeaker-voxceleb-resnet34-LM` (its `Speaker`
    /// embedding extraction): 80 bands, 25 ms frames every 10 ms, Hamming window, 512-point
    /// FFT, 20 Hz to Nyquist, samples scaled by 32768.
    pub const WESPEAKER: Self = Self {
        sample_rate: 16_000,
        waveform_scale: 32_768.0,
        frame_length_ms: 25.0,
        frame_shift_ms: 10.0,
        round_to_power_of_two: true,
        remove_dc_offset: true,
        preemphasis: 0.97,
        window: KaldiWindow::Hamming,
        num_mel_bins: 80,
        low_freq: 20.0,
        high_freq: 0.0,
    };
}

/// The filterbank for one configuration: window, FFT plan and mel filters, built once.
pub struct KaldiFbank {
    config: KaldiFbankConfig,
    window_size: usize,
    window_shift: usize,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
    /// Per band: the first FFT bin it covers and its weights from there.
    filters: Vec<(usize, Vec<f64>)>,
}

impl KaldiFbank {
    /// Checks the configuration and builds the window and filters.
    pub fn new(config: KaldiFbankConfig) -> Result<Self, FeatureError> {
        let invalid = |reason: String| Err(FeatureError::InvalidConfig(reason));
        let rate = f64::from(config.sample_rate);
        // Same arithmetic (and truncation) as torchaudio.
        let window_size = (rate * config.frame_length_ms * 0.001) as usize;
        let window_shift = (rate * config.frame_shift_ms * 0.001) as usize;
        if window_size < 2 || window_shift == 0 {
            return invalid(format!(
                "frame length {} ms and shift {} ms give {window_size} and {window_shift} samples",
                config.frame_length_ms, config.frame_shift_ms
            ));
        }
        let fft_size = if config.round_to_power_of_two {
            window_size.next_power_of_two()
        } else {
            window_size
        };
        if fft_size % 2 != 0 {
            return invalid(format!("FFT size {fft_size} must be even"));
        }
        if !(0.0..=1.0).contains(&config.preemphasis) || !config.waveform_scale.is_finite() {
            return invalid(format!(
                "preemphasis {} must be in [0, 1], waveform scale {} finite",
                config.preemphasis, config.waveform_scale
            ));
        }
        let nyquist = 0.5 * rate;
        let high_freq = if config.high_freq <= 0.0 {
            config.high_freq + nyquist
        } else {
            config.high_freq
        };
        if config.num_mel_bins < 3
            || !(0.0..nyquist).contains(&config.low_freq)
            || !(high_freq > 0.0 && high_freq <= nyquist && config.low_freq < high_freq)
        {
            return invalid(format!(
                "{} mel bins from {} Hz to {high_freq} Hz at Nyquist {nyquist} Hz",
                config.num_mel_bins, config.low_freq
            ));
        }
        let n = (window_size - 1) as f64;
        let window = (0..window_size)
            .map(|i| {
                let phase = 2.0 * std::f64::consts::PI * i as f64 / n;
                match config.window {
                    KaldiWindow::Hamming => 0.54 - 0.46 * phase.cos(),
                    KaldiWindow::Povey => (0.5 - 0.5 * phase.cos()).powf(0.85),
                }
            })
            .collect();
        let filters = mel_filters(
            config.num_mel_bins,
            fft_size,
            rate,
            config.low_freq,
            high_freq,
        );
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(fft_size);
        Ok(Self {
            config,
            window_size,
            window_shift,
            window,
            fft,
            filters,
        })
    }

    /// The parameters it was built with.
    pub fn config(&self) -> &KaldiFbankConfig {
        &self.config
    }

    /// Log mel filterbank of `samples` (mono, in [-1, 1], at the configured rate), with the
    /// mean of each band over the frames subtracted. Audio shorter than one frame gives zero
    /// frames.
    pub fn compute(&self, samples: &[f32]) -> Features {
        let bins = self.config.num_mel_bins;
        let (frames, mut values) = self.log_mel(samples);
        subtract_band_means(&mut values, bins);
        to_features(frames, bins, values)
    }

    /// The log mel filterbank before mean normalisation (Kaldi's `compute-fbank-feats`,
    /// torchaudio's `kaldi.fbank`).
    pub fn log_fbank(&self, samples: &[f32]) -> Features {
        let (frames, values) = self.log_mel(samples);
        to_features(frames, self.config.num_mel_bins, values)
    }

    /// The log mel energies before mean normalisation: frame count and `frames × bins` values.
    fn log_mel(&self, samples: &[f32]) -> (usize, Vec<f64>) {
        let bins = self.config.num_mel_bins;
        let frames = if samples.len() < self.window_size {
            0
        } else {
            1 + (samples.len() - self.window_size) / self.window_shift
        };
        let mut values = vec![0.0f64; frames * bins];
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f64; spectrum.len()];
        let scale = self.config.waveform_scale;
        let preemphasis = self.config.preemphasis;
        for (t, row) in values.chunks_exact_mut(bins).enumerate() {
            let start = t * self.window_shift;
            let raw = &samples[start..start + self.window_size];
            let mean = if self.config.remove_dc_offset {
                raw.iter().map(|&s| f64::from(s) * scale).sum::<f64>() / self.window_size as f64
            } else {
                0.0
            };
            let mut previous = f64::from(raw[0]) * scale - mean;
            for (j, (&s, w)) in raw.iter().zip(&self.window).enumerate() {
                let x = f64::from(s) * scale - mean;
                // Kaldi pre-emphasises the first sample against itself.
                let emphasised = if j == 0 {
                    x - preemphasis * x
                } else {
                    x - preemphasis * previous
                };
                previous = x;
                frame[j] = emphasised * w;
            }
            frame[self.window_size..].fill(0.0);
            self.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .expect("buffers come from the plan");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (value, (first, weights)) in row.iter_mut().zip(&self.filters) {
                let energy: f64 = weights
                    .iter()
                    .zip(&power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                *value = energy.max(f64::from(f32::EPSILON)).ln();
            }
        }
        (frames, values)
    }
}

/// Kaldi's mel filters over the FFT bins `0..fft_size/2` (the Nyquist bin gets no weight).
fn mel_filters(
    num_bins: usize,
    fft_size: usize,
    rate: f64,
    low_freq: f64,
    high_freq: f64,
) -> Vec<(usize, Vec<f64>)> {
    let mel = |f: f64| 1127.0 * (1.0 + f / 700.0).ln();
    let bin_width = rate / fft_size as f64;
    let mel_low = mel(low_freq);
    let delta = (mel(high_freq) - mel_low) / (num_bins + 1) as f64;
    let fft_mels: Vec<f64> = (0..fft_size / 2)
        .map(|k| mel(bin_width * k as f64))
        .collect();
    (0..num_bins)
        .map(|b| {
            let left = mel_low + b as f64 * delta;
            let center = mel_low + (b + 1) as f64 * delta;
            let right = mel_low + (b + 2) as f64 * delta;
            let weights: Vec<(usize, f64)> = fft_mels
                .iter()
                .enumerate()
                .map(|(k, &m)| {
                    let up = (m - left) / (center - left);
                    let down = (right - m) / (right - center);
                    (k, up.min(down).max(0.0))
                })
                .filter(|&(_, w)| w > 0.0)
                .collect();
            let first = weights.first().map_or(0, |&(k, _)| k);
            let last = weights.last().map_or(0, |&(k, _)| k + 1);
            let mut dense = vec![0.0; last.saturating_sub(first)];
            for (k, w) in weights {
                dense[k - first] = w;
            }
            (first, dense)
        })
        .collect()
}

fn to_features(frames: usize, bins: usize, values: Vec<f64>) -> Features {
    Features {
        frames,
        bins,
        data: values.into_iter().map(|v| v as f32).collect(),
    }
}

/// Cepstral mean normalisation: subtracts each band's mean over the frames.
fn subtract_band_means(values: &mut [f64], bins: usize) {
    let frames = values.len() / bins;
    if frames == 0 {
        return;
    }
    let mut means = vec![0.0f64; bins];
    for row in values.chunks_exact(bins) {
        for (m, v) in means.iter_mut().zip(row) {
            *m += v;
        }
    }
    for m in &mut means {
        *m /= frames as f64;
    }
    for row in values.chunks_exact_mut(bins) {
        for (v, m) in row.iter_mut().zip(&means) {
            *v -= m;
        }
    }
}

/// Mean-normalised Kaldi filterbank of `samples` (16 kHz mono f32 in [-1, 1]) under `cfg`.
/// Builds the filterbank each call; hold a [`KaldiFbank`] to reuse it.
pub fn features(samples: &[f32], cfg: &KaldiFbankConfig) -> Result<Features, FeatureError> {
    Ok(KaldiFbank::new(*cfg)?.compute(samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, seconds: f64) -> Vec<f32> {
        (0..(16_000.0 * seconds) as usize)
            .map(|i| (0.3 * (2.0 * std::f64::consts::PI * freq * i as f64 / 16_000.0).sin()) as f32)
            .collect()
    }

    #[test]
    fn frame_count_follows_snip_edges() {
        let fbank = KaldiFbank::new(KaldiFbankConfig::WESPEAKER).unwrap();
        assert_eq!(fbank.compute(&vec![0.1; 399]).frames, 0);
        assert_eq!(fbank.compute(&vec![0.1; 400]).frames, 1);
        assert_eq!(fbank.compute(&vec![0.1; 559]).frames, 1);
        assert_eq!(fbank.compute(&vec![0.1; 560]).frames, 2);
        assert_eq!(fbank.compute(&tone(440.0, 1.0)).frames, 98);
    }

    #[test]
    fn bands_have_zero_mean_after_normalisation() {
        let mut samples = tone(1000.0, 1.0);
        // A quieter second half, so that the frames differ and the means are not trivial.
        for s in &mut samples[8000..] {
            *s *= 0.1;
        }
        let feats = features(&samples, &KaldiFbankConfig::WESPEAKER).unwrap();
        assert_eq!((feats.frames, feats.bins), (98, 80));
        for b in 0..feats.bins {
            let column = (0..feats.frames).map(|t| f64::from(feats.data[t * feats.bins + b]));
            let mean = column.clone().sum::<f64>() / feats.frames as f64;
            assert!(mean.abs() < 1e-4, "band {b} mean {mean}");
            // Loud frames sit above the mean, quiet ones below (20 dB = ln(100) apart).
            let first = f64::from(feats.data[b]);
            let last = f64::from(feats.data[(feats.frames - 1) * feats.bins + b]);
            assert!(
                (first - last - 100f64.ln()).abs() < 1e-3,
                "band {b}: {first} {last}"
            );
        }
    }

    #[test]
    fn a_tone_peaks_in_its_band() {
        let fbank = KaldiFbank::new(KaldiFbankConfig::WESPEAKER).unwrap();
        let (frames, values) = fbank.log_mel(&tone(1000.0, 0.5));
        let row = &values[(frames / 2) * 80..(frames / 2 + 1) * 80];
        let peak = (0..80).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        let mel = |f: f64| 1127.0 * (1.0 + f / 700.0).ln();
        let delta = (mel(8000.0) - mel(20.0)) / 81.0;
        // Band b is centred at mel(20) + (b + 1) delta.
        let expected = ((mel(1000.0) - mel(20.0)) / delta - 1.0).round() as usize;
        assert!(
            peak.abs_diff(expected) <= 1,
            "peak band {peak}, expected {expected}"
        );
        // Scaled to 16-bit range, a 0.3-amplitude tone has a large log energy in its band.
        assert!(row[peak] > 20.0 && row[0] < row[peak] - 10.0, "{row:?}");
    }

    #[test]
    fn windows_match_their_formulas() {
        let mut cfg = KaldiFbankConfig::WESPEAKER;
        let hamming = KaldiFbank::new(cfg).unwrap();
        assert!((hamming.window[0] - 0.08).abs() < 1e-12);
        assert!((hamming.window[399] - 0.08).abs() < 1e-12);
        cfg.window = KaldiWindow::Povey;
        let povey = KaldiFbank::new(cfg).unwrap();
        assert_eq!(povey.window[0], 0.0);
        let mid = (0.5 - 0.5 * (std::f64::consts::PI * 200.0 / 199.5).cos()).powf(0.85);
        assert!((povey.window[200] - mid).abs() < 1e-12);
    }

    #[test]
    fn rejects_impossible_configurations() {
        let mut cfg = KaldiFbankConfig::WESPEAKER;
        cfg.high_freq = 9000.0;
        assert!(KaldiFbank::new(cfg).is_err());
        let mut cfg = KaldiFbankConfig::WESPEAKER;
        cfg.frame_shift_ms = 0.0;
        assert!(KaldiFbank::new(cfg).is_err());
        let mut cfg = KaldiFbankConfig::WESPEAKER;
        cfg.num_mel_bins = 2;
        assert!(KaldiFbank::new(cfg).is_err());
    }

    #[test]
    fn config_round_trips_through_json_and_refuses_unknown_fields() {
        let json = serde_json::to_string(&KaldiFbankConfig::WESPEAKER).unwrap();
        assert!(json.contains("\"window\":\"hamming\""), "{json}");
        let back: KaldiFbankConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, KaldiFbankConfig::WESPEAKER);
        let extra = json.replacen('{', "{\"dither\":1.0,", 1);
        assert!(serde_json::from_str::<KaldiFbankConfig>(&extra).is_err());
    }
}
