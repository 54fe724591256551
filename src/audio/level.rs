//! Loudness normalisation of a waveform.

/// Scales `samples` so that their RMS level is `target_dbfs` (relative to int16 full scale, as
/// Resemblyzer measures it). With `increase_only`, a waveform already louder than the target is
/// left as it is. Silence (RMS 0) is left untouched.
pub fn normalize_volume(samples: &mut [f32], target_dbfs: f64, increase_only: bool) {
    if samples.is_empty() {
        return;
    }
    let int16_max = 32767.0f64;
    let mean_square = samples
        .iter()
        .map(|&s| {
            let v = s as f64 * int16_max;
            v * v
        })
        .sum::<f64>()
        / samples.len() as f64;
    let rms = mean_square.sqrt();
    if rms == 0.0 || !rms.is_finite() {
        return;
    }
    let wave_dbfs = 20.0 * (rms / int16_max).log10();
    let change = target_dbfs - wave_dbfs;
    if change < 0.0 && increase_only {
        return;
    }
    let gain = 10f64.powf(change / 20.0) as f32;
    for s in samples.iter_mut() {
        *s *= gain;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dbfs(samples: &[f32]) -> f64 {
        let ms = samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len() as f64;
        20.0 * ms.sqrt().log10()
    }

    #[test]
    fn quiet_audio_is_raised_to_the_target() {
        let mut x: Vec<f32> = (0..16_000)
            .map(|i| 0.001 * ((i as f32) * 0.05).sin())
            .collect();
        normalize_volume(&mut x, -30.0, true);
        assert!((dbfs(&x) - -30.0).abs() < 0.01, "{}", dbfs(&x));
    }

    #[test]
    fn loud_audio_is_kept_when_increase_only() {
        let mut x: Vec<f32> = (0..16_000)
            .map(|i| 0.5 * ((i as f32) * 0.05).sin())
            .collect();
        let before = x.clone();
        normalize_volume(&mut x, -30.0, true);
        assert_eq!(x, before);
        normalize_volume(&mut x, -30.0, false);
        assert!((dbfs(&x) - -30.0).abs() < 0.01);
    }

    #[test]
    fn silence_and_empty_input_are_left_alone() {
        let mut x = vec![0.0f32; 100];
        normalize_volume(&mut x, -30.0, true);
        assert!(x.iter().all(|&s| s == 0.0));
        normalize_volume(&mut [], -30.0, true);
    }
}
