//! Band-limited resampling of mono `f32` audio with rubato's windowed-sinc resampler.

use rubato::{
    calculate_cutoff, Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use super::AudioError;

/// Input frames handed to the resampler per call.
const CHUNK_FRAMES: usize = 4096;
/// Length of the windowed-sinc filter, in taps at the lower of the two rates.
const SINC_LEN: usize = 256;
const WINDOW: WindowFunction = WindowFunction::BlackmanHarris2;

/// Resamples mono `samples` from `from_rate` to `to_rate` Hz.
///
/// The output has `round(len * to_rate / from_rate)` samples and is time-aligned with the
/// input to within half an output sample; the tail is flushed through the filter. Input
/// already at `to_rate` is returned untouched.
pub fn resample_mono(
    samples: Vec<f32>,
    from_rate: u32,
    to_rate: u32,
) -> Result<Vec<f32>, AudioError> {
    if from_rate == to_rate || samples.is_empty() {
        return Ok(samples);
    }
    let fail = |reason: String| AudioError::Resample {
        from_rate,
        to_rate,
        reason,
    };
    let ratio = f64::from(to_rate) / f64::from(from_rate);
    let params = SincInterpolationParameters {
        sinc_len: SINC_LEN,
        f_cutoff: calculate_cutoff(SINC_LEN, WINDOW),
        oversampling_factor: 256,
        interpolation: SincInterpolationType::Cubic,
        window: WINDOW,
    };
    let mut resampler = SincFixedIn::<f32>::new(ratio, 1.0, params, CHUNK_FRAMES, 1)
        .map_err(|err| fail(err.to_string()))?;

    let (lead, skip) = alignment(ratio);
    let expected = (samples.len() as f64 * ratio).round() as usize;
    let mut output = Vec::with_capacity(skip + expected + resampler.output_frames_max());
    let mut chunk_out = resampler.output_buffer_allocate(true);
    let mut input = std::iter::repeat_n(0.0, lead).chain(samples.iter().copied());
    let mut chunk = Vec::with_capacity(CHUNK_FRAMES);
    loop {
        chunk.clear();
        chunk.extend(input.by_ref().take(CHUNK_FRAMES));
        let (_, written) = if chunk.len() == CHUNK_FRAMES {
            resampler.process_into_buffer(&[&chunk], &mut chunk_out, None)
        } else if chunk.is_empty() {
            break;
        } else {
            resampler.process_partial_into_buffer(Some(&[&chunk]), &mut chunk_out, None)
        }
        .map_err(|err| fail(err.to_string()))?;
        output.extend_from_slice(&chunk_out[0][..written]);
    }
    // Flush the filter with silence until every expected output frame has been produced.
    while output.len() < skip + expected {
        let (_, written) = resampler
            .process_partial_into_buffer(None::<&[&[f32]]>, &mut chunk_out, None)
            .map_err(|err| fail(err.to_string()))?;
        output.extend_from_slice(&chunk_out[0][..written]);
    }
    output.drain(..skip);
    output.truncate(expected);
    Ok(output)
}

/// Zero frames to prepend to the input and output frames to drop so the output is
/// time-aligned with the input.
///
/// rubato's `SincFixedIn` computes output frame `k` at input position `(k + 1) / ratio - 1`:
/// the output lags by `ratio - 1` output frames. Prepending `lead` frames adds `lead * ratio`
/// frames of lag and dropping `skip` frames removes `skip`, leaving a residual lag of
/// `ratio * (lead + 1) - (skip + 1)`, which this choice keeps within half an output frame.
fn alignment(ratio: f64) -> (usize, usize) {
    let lead = ((1.0 / ratio).round() as usize).saturating_sub(1);
    let skip = ((ratio * (lead + 1) as f64).round() as usize).saturating_sub(1);
    (lead, skip)
}
