//! SpeechBrain's `Fbank` front end as `speechbrain/spkrec-ecapa-voxceleb` configures it
//! (`Fbank(n_mels=80)` followed by `InputNormalization(norm_type="sentence", std_norm=False)`),
//! reproduced step by step from SpeechBrain's `processing/features.py`:
//!
//! 1. `STFT`: periodic Hamming window of `win_length_ms` (`torch.hamming_window`), hop of
//!    `hop_length_ms`, `torch.stft(center=True, pad_mode="constant")` — the signal is padded
//!    with `n_fft / 2` zeros on both sides, so there are `1 + len / hop` frames.
//! 2. `spectral_magnitude(power=1)`: the power spectrum `re² + im²`.
//! 3. `Filterbank`: triangular filters on the HTK mel scale (`2595 log10(1 + f/700)`), centres
//!    evenly spaced in mel between `f_min` and `f_max`, each rising from the previous centre
//!    and falling to the next one, evaluated on the FFT bin frequencies without area
//!    normalisation; then `10 log10(max(x, amin)) - 10 log10(max(amin, ref_value))`, and every
//!    value is raised to at least `top_db` below the largest value of the whole utterance.
//! 4. Sentence mean normalisation: the mean over all frames of each band is subtracted; the
//!    variance is left alone (`std_norm: False`).
//!
//! Computed in f64 and returned as f32, so it differs from SpeechBrain's float32 arithmetic
//! only by that arithmetic's rounding.

use realfft::RealFftPlanner;
use serde::{Deserialize, Serialize};

use super::{FeatureError, Features};

/// Parameters of SpeechBrain's `Fbank` and sentence mean normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SbFbankConfig {
    /// Sample rate of the input, Hz.
    pub sample_rate: u32,
    /// FFT size.
    pub n_fft: usize,
    /// Window length, ms (SpeechBrain rounds `sample_rate / 1000 * ms` to samples).
    pub win_length_ms: f64,
    /// Hop between frames, ms.
    pub hop_length_ms: f64,
    /// Number of mel bands.
    pub n_mels: usize,
    /// Lowest filter edge, Hz.
    pub f_min: f64,
    /// Highest filter edge, Hz.
    pub f_max: f64,
    /// Floor applied to band energies before the logarithm.
    pub amin: f64,
    /// Reference energy of 0 dB.
    pub ref_value: f64,
    /// Dynamic range kept below the utterance's largest value, dB.
    pub top_db: f64,
}

impl Default for SbFbankConfig {
    /// The front end of `speechbrain/spkrec-ecapa-voxceleb`: `Fbank(n_mels=80)` with
    /// SpeechBrain's defaults for everything else.
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            n_fft: 400,
            win_length_ms: 25.0,
            hop_length_ms: 10.0,
            n_mels: 80,
            f_min: 0.0,
            f_max: 8_000.0,
            amin: 1e-10,
            ref_value: 1.0,
            top_db: 80.0,
        }
    }
}

impl SbFbankConfig {
    /// Window length in samples, rounded as SpeechBrain's `STFT` rounds it.
    pub fn win_length(&self) -> usize {
        (self.sample_rate as f64 / 1000.0 * self.win_length_ms).round() as usize
    }

    /// Hop length in samples, rounded as SpeechBrain's `STFT` rounds it.
    pub fn hop_length(&self) -> usize {
        (self.sample_rate as f64 / 1000.0 * self.hop_length_ms).round() as usize
    }

    fn validate(&self) -> Result<(), FeatureError> {
        let invalid = |what: String| Err(FeatureError::InvalidConfig(what));
        if self.n_fft < 2 || self.n_mels == 0 || self.hop_length() == 0 {
            return invalid(format!(
                "n_fft {} n_mels {} hop {} samples",
                self.n_fft,
                self.n_mels,
                self.hop_length()
            ));
        }
        if self.win_length() == 0 || self.win_length() > self.n_fft {
            return invalid(format!(
                "window of {} samples must be 1..=n_fft {}",
                self.win_length(),
                self.n_fft
            ));
        }
        if !(self.f_min >= 0.0 && self.f_max > self.f_min) {
            return invalid(format!("f_min {} f_max {}", self.f_min, self.f_max));
        }
        if !(self.amin > 0.0 && self.ref_value > 0.0 && self.top_db >= 0.0) {
            return invalid(format!(
                "amin {} ref_value {} top_db {}",
                self.amin, self.ref_value, self.top_db
            ));
        }
        Ok(())
    }
}

/// The periodic Hamming window of `torch.hamming_window(win_length)`, zero-padded on both
/// sides to `n_fft` as `torch.stft` centres a shorter window.
fn window(cfg: &SbFbankConfig) -> Vec<f64> {
    let win = cfg.win_length();
    let left = (cfg.n_fft - win) / 2;
    let mut out = vec![0.0; cfg.n_fft];
    for (i, w) in out[left..left + win].iter_mut().enumerate() {
        *w = 0.54 - 0.46 * (2.0 * std::f64::consts::PI * i as f64 / win as f64).cos();
    }
    out
}

fn hz_to_mel(hz: f64) -> f64 {
    2595.0 * (1.0 + hz / 700.0).log10()
}

fn mel_to_hz(mel: f64) -> f64 {
    700.0 * (10f64.powf(mel / 2595.0) - 1.0)
}

/// SpeechBrain's triangular filterbank, `(n_mels, n_fft / 2 + 1)` row-major.
fn filterbank(cfg: &SbFbankConfig) -> Vec<f64> {
    let n_bins = cfg.n_fft / 2 + 1;
    let (lo, hi) = (hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max));
    let hz: Vec<f64> = (0..cfg.n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (cfg.n_mels + 1) as f64))
        .collect();
    // Bin frequencies: torch.linspace(0, sample_rate // 2, n_bins).
    let nyquist = (cfg.sample_rate / 2) as f64;
    let mut out = Vec::with_capacity(cfg.n_mels * n_bins);
    for m in 0..cfg.n_mels {
        let (central, band) = (hz[m + 1], hz[m + 1] - hz[m]);
        for k in 0..n_bins {
            let freq = nyquist * k as f64 / (n_bins - 1) as f64;
            let slope = (freq - central) / band;
            out.push((slope + 1.0).min(1.0 - slope).max(0.0));
        }
    }
    out
}

/// The mean-normalised log mel filterbank of `samples` (16 kHz mono in [-1, 1]), exactly as
/// `spkrec-ecapa-voxceleb` computes the encoder's input: `1 + len / hop` frames of `n_mels`.
pub fn features(samples: &[f32], cfg: &SbFbankConfig) -> Result<Features, FeatureError> {
    cfg.validate()?;
    let n_mels = cfg.n_mels;
    let db = log_fbank(samples, cfg);
    let frames = db.len() / n_mels;
    let mut mean = vec![0f64; n_mels];
    for row in db.chunks_exact(n_mels) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    for m in &mut mean {
        *m /= frames as f64;
    }
    let data = db
        .chunks_exact(n_mels)
        .flat_map(|row| row.iter().zip(&mean).map(|(v, m)| (v - m) as f32))
        .collect();
    Ok(Features {
        frames,
        bins: n_mels,
        data,
    })
}

/// `Fbank`'s output before normalisation: band energies in dB with the `top_db` floor,
/// `(frames, n_mels)` row-major. `cfg` must be valid.
fn log_fbank(samples: &[f32], cfg: &SbFbankConfig) -> Vec<f64> {
    let n_fft = cfg.n_fft;
    let hop = cfg.hop_length();
    let n_bins = n_fft / 2 + 1;
    let n_mels = cfg.n_mels;
    let frames = 1 + samples.len() / hop;
    let window = window(cfg);
    let fbank = filterbank(cfg);
    let fft = RealFftPlanner::<f64>::new().plan_fft_forward(n_fft);
    let mut frame = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let mut power = vec![0f64; n_bins];
    let db_offset = 10.0 * cfg.amin.max(cfg.ref_value).log10();
    let pad = (n_fft / 2) as isize;
    let mut db = Vec::with_capacity(frames * n_mels);
    for t in 0..frames {
        // Frame t covers padded[t * hop .. t * hop + n_fft], padded = zeros(n_fft / 2) ++
        // samples ++ zeros(n_fft / 2).
        let start = (t * hop) as isize - pad;
        for (i, slot) in frame.iter_mut().enumerate() {
            let idx = start + i as isize;
            let x = usize::try_from(idx)
                .ok()
                .and_then(|idx| samples.get(idx))
                .map_or(0.0, |&x| x as f64);
            *slot = x * window[i];
        }
        fft.process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
            .expect("buffers come from the same plan");
        for (p, c) in power.iter_mut().zip(&spectrum) {
            *p = c.re * c.re + c.im * c.im;
        }
        for weights in fbank.chunks_exact(n_bins) {
            let energy: f64 = weights.iter().zip(&power).map(|(w, p)| w * p).sum();
            db.push(10.0 * energy.max(cfg.amin).log10() - db_offset);
        }
    }
    let floor = db.iter().copied().fold(f64::NEG_INFINITY, f64::max) - cfg.top_db;
    for v in &mut db {
        *v = v.max(floor);
    }
    db
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_follows_centred_stft() {
        let cfg = SbFbankConfig::default();
        for len in [0, 1, 159, 160, 16_000, 16_159] {
            let samples = vec![0.1f32; len];
            let f = features(&samples, &cfg).unwrap();
            assert_eq!(f.frames, 1 + len / 160, "len {len}");
            assert_eq!(f.bins, 80);
            assert_eq!(f.data.len(), f.frames * 80);
        }
    }

    #[test]
    fn every_band_has_zero_mean_over_the_utterance() {
        let samples: Vec<f32> = (0..8_000)
            .map(|i| (i as f32 * 0.05).sin() * 0.3 + (i as f32 * 0.71).sin() * 0.05)
            .collect();
        let f = features(&samples, &SbFbankConfig::default()).unwrap();
        for band in 0..f.bins {
            let mean: f64 = (0..f.frames)
                .map(|t| f.data[t * f.bins + band] as f64)
                .sum::<f64>()
                / f.frames as f64;
            assert!(mean.abs() < 1e-4, "band {band} mean {mean}");
        }
    }

    #[test]
    fn top_db_bounds_the_dynamic_range() {
        // A loud tone and digital silence: without the 80 dB floor the silent frames would
        // sit at 10 log10(1e-10) = -100 dB, far below the tone.
        let mut samples = vec![0f32; 16_000];
        for (i, s) in samples[..8_000].iter_mut().enumerate() {
            *s = (i as f32 * 0.3).sin() * 0.9;
        }
        let db = log_fbank(&samples, &SbFbankConfig::default());
        let max = db.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = db.iter().copied().fold(f64::INFINITY, f64::min);
        assert!((max - min - 80.0).abs() < 1e-9, "range {}", max - min);
        // The last frame is silent: every band sits on the floor.
        assert!(db[db.len() - 80..].iter().all(|&v| v == min));
    }

    #[test]
    fn filters_are_triangles_between_neighbouring_centres() {
        let cfg = SbFbankConfig::default();
        let fb = filterbank(&cfg);
        assert!(fb.iter().all(|&w| (0.0..=1.0).contains(&w)));
        let hz: Vec<f64> = (0..82)
            .map(|i| mel_to_hz(hz_to_mel(8000.0) * i as f64 / 81.0))
            .collect();
        // Band 40 (centred near 1.4 kHz, 40 Hz bins): non-zero strictly between the
        // neighbouring centres, rising then falling.
        let row = &fb[40 * 201..41 * 201];
        let nonzero: Vec<usize> = (0..201).filter(|&k| row[k] > 0.0).collect();
        let (lo, hi) = (nonzero[0], *nonzero.last().unwrap());
        assert!(lo as f64 * 40.0 > hz[40] && hi as f64 * 40.0 < hz[42]);
        assert_eq!(nonzero.len(), hi - lo + 1);
        let peak = (lo..=hi)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        assert!(row[lo..=peak].windows(2).all(|w| w[0] < w[1]));
        assert!(row[peak..=hi].windows(2).all(|w| w[0] > w[1]));
        assert!((peak as f64 * 40.0 - hz[41]).abs() <= 40.0);
    }

    #[test]
    fn invalid_configuration_is_refused() {
        let cfg = SbFbankConfig {
            f_max: 0.0,
            ..SbFbankConfig::default()
        };
        assert!(matches!(
            features(&[0.0; 400], &cfg),
            Err(FeatureError::InvalidConfig(_))
        ));
    }
}
