//! The LSTM recurrence fused for the CPU. Candle computes each layer's input projection as
//! one large matrix product; this runs the step-by-step part without a tensor op per gate:
//! the recurrent product accumulates in place into the projected gates (with `gemm`, the
//! kernel Candle itself uses on the CPU) and one loop applies the cell update. The batch is
//! split into contiguous row blocks, one per worker thread, which never synchronise.

use rayon::prelude::*;

/// Runs the recurrence of one layer.
///
/// `projected` is `(steps, batch, 4 * hidden)`: `x_t · W_ihᵀ + b_ih + b_hh` with gate blocks in
/// order i, f, o, g. `w_hh_t` is `(hidden, 4 * hidden)`, same gate order. Returns the hidden
/// state of every step `(steps, batch, hidden)` when `keep_sequence`, else the last one
/// `(batch, hidden)`.
pub fn recur(
    projected: &[f32],
    steps: usize,
    batch: usize,
    hidden: usize,
    w_hh_t: &[f32],
    keep_sequence: bool,
) -> Vec<f32> {
    let gates_len = 4 * hidden;
    assert_eq!(projected.len(), steps * batch * gates_len);
    assert_eq!(w_hh_t.len(), hidden * gates_len);
    let workers = rayon::current_num_threads().clamp(1, batch.max(1));
    let rows_per_block = batch.div_ceil(workers);
    let blocks: Vec<(usize, usize)> = (0..batch)
        .step_by(rows_per_block.max(1))
        .map(|start| (start, (start + rows_per_block).min(batch)))
        .collect();
    let outputs: Vec<Vec<f32>> = blocks
        .par_iter()
        .map(|&(r0, r1)| {
            recur_block(
                projected,
                steps,
                batch,
                hidden,
                w_hh_t,
                r0..r1,
                keep_sequence,
            )
        })
        .collect();
    if blocks.len() == 1 {
        return outputs.into_iter().next().expect("one block");
    }
    let out_steps = if keep_sequence { steps } else { 1 };
    let mut out = vec![0f32; out_steps * batch * hidden];
    for (&(r0, r1), block) in blocks.iter().zip(&outputs) {
        let rows = r1 - r0;
        for t in 0..out_steps {
            let dst = (t * batch + r0) * hidden;
            let src = t * rows * hidden;
            out[dst..dst + rows * hidden].copy_from_slice(&block[src..src + rows * hidden]);
        }
    }
    out
}

/// The recurrence for batch rows `rows`, output laid out `(steps or 1, rows, hidden)`.
fn recur_block(
    projected: &[f32],
    steps: usize,
    batch: usize,
    hidden: usize,
    w_hh_t: &[f32],
    rows: std::ops::Range<usize>,
    keep_sequence: bool,
) -> Vec<f32> {
    let n = rows.len();
    let gates_len = 4 * hidden;
    let mut gates = vec![0f32; n * gates_len];
    let mut h = vec![0f32; n * hidden];
    let mut c = vec![0f32; n * hidden];
    let mut sequence = Vec::with_capacity(if keep_sequence { steps * n * hidden } else { 0 });
    for t in 0..steps {
        let start = (t * batch + rows.start) * gates_len;
        gates.copy_from_slice(&projected[start..start + n * gates_len]);
        if t > 0 {
            // gates += h · W_hhᵀ  (n × hidden) · (hidden × 4·hidden), all row-major.
            // SAFETY: the pointers cover exactly the row-major matrices whose shapes and
            // strides are passed, and `gates` does not alias `h` or `w_hh_t`.
            unsafe {
                gemm::gemm(
                    n,
                    gates_len,
                    hidden,
                    gates.as_mut_ptr(),
                    1,
                    gates_len as isize,
                    true,
                    h.as_ptr(),
                    1,
                    hidden as isize,
                    w_hh_t.as_ptr(),
                    1,
                    gates_len as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        cell_update_rows(&gates, &mut h, &mut c, hidden);
        if keep_sequence {
            sequence.extend_from_slice(&h);
        }
    }
    if keep_sequence {
        sequence
    } else {
        h
    }
}

/// The cell update for every row, compiled for AVX2 and FMA when the CPU has them.
fn cell_update_rows(gates: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { cell_update_rows_avx2(gates, h, c, hidden) };
        return;
    }
    cell_update_rows_portable(gates, h, c, hidden);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cell_update_rows_avx2(gates: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
    cell_update_rows_portable(gates, h, c, hidden);
}

#[inline(always)]
fn cell_update_rows_portable(gates: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
    for ((g, h), c) in gates
        .chunks_exact(4 * hidden)
        .zip(h.chunks_exact_mut(hidden))
        .zip(c.chunks_exact_mut(hidden))
    {
        cell_update(g, h, c, hidden);
    }
}

/// `c = σ(f)·c + σ(i)·tanh(g)`, `h = σ(o)·tanh(c)` for one row of gates (i, f, o, g).
#[inline(always)]
fn cell_update(gates: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
    let (i, rest) = gates.split_at(hidden);
    let (f, rest) = rest.split_at(hidden);
    let (o, g) = rest.split_at(hidden);
    for k in 0..hidden {
        let c_new = sigmoid(f[k]) * c[k] + sigmoid(i[k]) * tanh(g[k]);
        c[k] = c_new;
        h[k] = sigmoid(o[k]) * tanh(c_new);
    }
}

/// `eˣ` in f32 without branches, so loops over it vectorise: Cody–Waite range reduction and a
/// degree-6 polynomial; relative error within a few ulp over the clamped range.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding and subtracting rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (1.0 + exp(2.0 * x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcendental_functions_are_accurate() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            let e = exp(x) as f64;
            let want = (x as f64).exp();
            assert!(((e - want) / want).abs() < 1e-6, "exp({x})");
            assert!(
                (sigmoid(x) as f64 - 1.0 / (1.0 + (-x as f64).exp())).abs() < 1e-7,
                "sigmoid({x})"
            );
            assert!(
                (tanh(x) as f64 - (x as f64).tanh()).abs() < 2e-7,
                "tanh({x})"
            );
        }
        assert!(sigmoid(-1e4) < 1e-37 && sigmoid(1e4) == 1.0);
        assert_eq!(tanh(1e4), 1.0);
        assert_eq!(tanh(-1e4), -1.0);
    }

    #[test]
    fn blocks_agree_with_one_block() {
        let (steps, batch, hidden) = (5, 7, 8);
        let projected: Vec<f32> = (0..steps * batch * 4 * hidden)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let w: Vec<f32> = (0..hidden * 4 * hidden)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 200.0)
            .collect();
        let whole = recur_block(&projected, steps, batch, hidden, &w, 0..batch, true);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let split = pool.install(|| recur(&projected, steps, batch, hidden, &w, true));
        assert_eq!(whole.len(), split.len());
        for (a, b) in whole.iter().zip(&split) {
            assert!((a - b).abs() < 1e-6);
        }
        let last = pool.install(|| recur(&projected, steps, batch, hidden, &w, false));
        assert_eq!(last, split[(steps - 1) * batch * hidden..]);
    }
}
