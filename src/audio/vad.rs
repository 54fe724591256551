//! Voice activity: WebRTC VAD decisions on fixed windows, smoothed and dilated the way
//! Resemblyzer's `trim_long_silences` does it, so that trimming matches the reference.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use webrtc_vad::{SampleRate, Vad, VadMode};

/// Errors of voice activity detection.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    /// WebRTC VAD only runs at a few rates and window lengths.
    #[error("voice activity detection needs 8, 16, 32 or 48 kHz audio and 10, 20 or 30 ms windows (got {sample_rate} Hz, {window_ms} ms)")]
    UnsupportedFormat {
        /// Sample rate asked for.
        sample_rate: u32,
        /// Window length asked for.
        window_ms: u32,
    },
    /// Aggressiveness modes are 0 (least) to 3 (most).
    #[error("voice activity mode must be 0..=3 (got {0})")]
    InvalidMode(u8),
}

/// Parameters of voice activity detection and smoothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VadConfig {
    /// Window length of one VAD decision, ms.
    pub window_ms: u32,
    /// WebRTC aggressiveness, 0..=3.
    pub mode: u8,
    /// Width, in windows, of the moving average applied to the raw decisions.
    pub moving_average_width: usize,
    /// Longest run of silent windows kept inside speech.
    pub max_silence_windows: usize,
}

impl Default for VadConfig {
    /// Resemblyzer's parameters: 30 ms windows, mode 3, moving average 8, max silence 6.
    fn default() -> Self {
        Self {
            window_ms: 30,
            mode: 3,
            moving_average_width: 8,
            max_silence_windows: 6,
        }
    }
}

/// Which windows of a waveform hold voice.
#[derive(Debug, Clone)]
pub struct VoiceActivity {
    window_samples: usize,
    sample_rate: u32,
    raw: Vec<bool>,
    voiced: Vec<bool>,
}

impl VoiceActivity {
    /// Runs the VAD over `samples` (at `sample_rate`), one decision per whole window; a
    /// trailing partial window is not analysed.
    pub fn detect(samples: &[f32], sample_rate: u32, config: &VadConfig) -> Result<Self, VadError> {
        let rate = match sample_rate {
            8_000 => SampleRate::Rate8kHz,
            16_000 => SampleRate::Rate16kHz,
            32_000 => SampleRate::Rate32kHz,
            48_000 => SampleRate::Rate48kHz,
            _ => {
                return Err(VadError::UnsupportedFormat {
                    sample_rate,
                    window_ms: config.window_ms,
                })
            }
        };
        if ![10, 20, 30].contains(&config.window_ms) {
            return Err(VadError::UnsupportedFormat {
                sample_rate,
                window_ms: config.window_ms,
            });
        }
        let mode = match config.mode {
            0 => VadMode::Quality,
            1 => VadMode::LowBitrate,
            2 => VadMode::Aggressive,
            3 => VadMode::VeryAggressive,
            m => return Err(VadError::InvalidMode(m)),
        };
        let window_samples = (config.window_ms * sample_rate / 1000) as usize;
        let mut vad = Vad::new_with_rate_and_mode(rate, mode);
        let mut pcm = vec![0i16; window_samples];
        let raw: Vec<bool> = samples
            .chunks_exact(window_samples)
            .map(|window| {
                for (dst, &s) in pcm.iter_mut().zip(window) {
                    *dst = to_int16(s);
                }
                vad.is_voice_segment(&pcm)
                    .expect("window length and rate were validated above")
            })
            .collect();
        let voiced = dilate(
            &moving_majority(&raw, config.moving_average_width),
            config.max_silence_windows,
        );
        Ok(Self {
            window_samples,
            sample_rate,
            raw,
            voiced,
        })
    }

    /// The raw VAD decision of each window, before smoothing.
    pub fn raw_decisions(&self) -> &[bool] {
        &self.raw
    }

    /// Whether each window is kept as voice after smoothing and dilation.
    pub fn voiced_windows(&self) -> &[bool] {
        &self.voiced
    }

    /// Total voiced duration, seconds.
    pub fn voiced_seconds(&self) -> f64 {
        let n = self.voiced.iter().filter(|&&v| v).count();
        (n * self.window_samples) as f64 / self.sample_rate as f64
    }

    /// Maximal runs of voiced windows, as sample ranges of the analysed waveform.
    pub fn voiced_regions(&self) -> Vec<Range<usize>> {
        let mut regions = Vec::new();
        let mut start = None;
        for (i, &v) in self
            .voiced
            .iter()
            .chain(std::iter::once(&false))
            .enumerate()
        {
            match (v, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    regions.push(s * self.window_samples..i * self.window_samples);
                    start = None;
                }
                _ => {}
            }
        }
        regions
    }

    /// The voiced samples of `samples` (the waveform this was detected on), concatenated.
    pub fn trim(&self, samples: &[f32]) -> Vec<f32> {
        self.voiced_regions()
            .into_iter()
            .flat_map(|r| samples[r].iter().copied())
            .collect()
    }
}

/// `np.round(x * 32767).astype(np.int16)`, saturating instead of wrapping out-of-range values.
fn to_int16(s: f32) -> i16 {
    (s * 32767.0)
        .round_ties_even()
        .clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

/// Moving average of width `width` (centred as Resemblyzer pads it: `(width-1)/2` zeros
/// before, `width/2` after) rounded half-to-even: true where more than half the window votes.
fn moving_majority(flags: &[bool], width: usize) -> Vec<bool> {
    let width = width.max(1);
    let before = (width - 1) / 2;
    let after = width / 2;
    (0..flags.len())
        .map(|j| {
            let lo = j.saturating_sub(before);
            let hi = (j + after + 1).min(flags.len());
            let count = flags[lo..hi].iter().filter(|&&f| f).count();
            2 * count > width
        })
        .collect()
}

/// Binary dilation with a structuring element of `max_silence + 1` ones, centred as SciPy
/// centres it (index `len / 2`).
fn dilate(mask: &[bool], max_silence: usize) -> Vec<bool> {
    let len = max_silence + 1;
    let before = len / 2;
    let after = len - 1 - before;
    (0..mask.len())
        .map(|i| {
            let lo = i.saturating_sub(after);
            let hi = (i + before + 1).min(mask.len());
            mask[lo..hi].iter().any(|&m| m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_majority_needs_more_than_half_the_window() {
        let mut flags = vec![false; 20];
        flags[5..9].fill(true); // four voiced windows: exactly half of 8, rounds to 0
        assert!(moving_majority(&flags, 8).iter().all(|&m| !m));
        flags[9] = true; // five: a majority where the window covers all of them
        let m = moving_majority(&flags, 8);
        // Window j covers flags j-3..=j+4: it holds all five for j in 5..=8.
        let on: Vec<usize> = (0..20).filter(|&j| m[j]).collect();
        assert_eq!(on, vec![5, 6, 7, 8]);
    }

    #[test]
    fn dilation_bridges_short_gaps() {
        let mut mask = vec![false; 20];
        mask[10] = true;
        let d = dilate(&mask, 6);
        let on: Vec<usize> = (0..20).filter(|&i| d[i]).collect();
        assert_eq!(on, (7..=13).collect::<Vec<_>>());
    }

    #[test]
    fn silence_has_no_voiced_regions() {
        let silence = vec![0.0f32; 16_000];
        let va = VoiceActivity::detect(&silence, 16_000, &VadConfig::default()).unwrap();
        assert_eq!(va.raw_decisions().len(), 33);
        assert!(va.voiced_regions().is_empty());
        assert!(va.trim(&silence).is_empty());
        assert_eq!(va.voiced_seconds(), 0.0);
    }

    #[test]
    fn unsupported_rates_and_modes_are_refused() {
        let cfg = VadConfig::default();
        assert!(VoiceActivity::detect(&[0.0; 100], 22_050, &cfg).is_err());
        let bad_mode = VadConfig { mode: 4, ..cfg };
        assert!(VoiceActivity::detect(&[0.0; 100], 16_000, &bad_mode).is_err());
    }

    #[test]
    fn int16_conversion_scales_to_full_range_and_saturates() {
        assert_eq!(to_int16(1.0), i16::MAX);
        assert_eq!(to_int16(-1.0), -i16::MAX);
        assert_eq!(to_int16(3.0), i16::MAX);
        assert_eq!(to_int16(-3.0), i16::MIN);
    }
}
