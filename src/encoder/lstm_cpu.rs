//! The LSTM recurrence fused for the CPU. Candle computes each layer's input projection as
//! one large matrix product; this runs the step-by-step part without a tensor op per gate:
//! the recurrent product accumulates in place into the projected gates (with `gemm`, the
//! kernel Candle itself uses on the CPU) and one loop applies the cell update. Data is
//! batch-major, so the batch splits into contiguous row blocks, one per worker thread, which
//! never synchronise.

use rayon::prelude::*;

/// Runs the recurrence of one layer, batch-major.
///
/// `projected` is `(batch, steps, 4 * hidden)`: `x_t · W_ihᵀ + b_ih + b_hh` with gate blocks in
/// order i, f, o, g; it is overwritten with the pre-activation gates. `w_hh_t` is
/// `(hidden, 4 * hidden)`, same gate order. Returns the hidden state of every step
/// `(batch, steps, hidden)` when `keep_sequence`, else the last one `(batch, hidden)`.
pub fn recur(
    projected: &mut [f32],
    batch: usize,
    steps: usize,
    hidden: usize,
    w_hh_t: &[f32],
    keep_sequence: bool,
) -> Vec<f32> {
    let gates_len = 4 * hidden;
    assert_eq!(projected.len(), batch * steps * gates_len);
    assert_eq!(w_hh_t.len(), hidden * gates_len);
    let out_steps = if keep_sequence { steps } else { 1 };
    let mut out = vec![0f32; batch * out_steps * hidden];
    if batch == 0 || steps == 0 {
        return out;
    }
    let workers = rayon::current_num_threads().clamp(1, batch);
    let rows_per_block = batch.div_ceil(workers);
    projected
        .par_chunks_mut(rows_per_block * steps * gates_len)
        .zip(out.par_chunks_mut(rows_per_block * out_steps * hidden))
        .for_each(|(gates, out)| recur_block(gates, out, steps, hidden, w_hh_t, keep_sequence));
    out
}

/// The recurrence for one block of rows: `gates` `(rows, steps, 4 * hidden)`, `out`
/// `(rows, steps or 1, hidden)`.
fn recur_block(
    gates: &mut [f32],
    out: &mut [f32],
    steps: usize,
    hidden: usize,
    w_hh_t: &[f32],
    keep_sequence: bool,
) {
    let gates_len = 4 * hidden;
    let rows = gates.len() / (steps * gates_len);
    let mut h = vec![0f32; rows * hidden];
    let mut c = vec![0f32; rows * hidden];
    let row_stride = steps * gates_len;
    for t in 0..steps {
        if t > 0 {
            // gates[:, t, :] += h · W_hhᵀ: (rows × hidden) · (hidden × 4·hidden), the
            // destination rows `steps · 4·hidden` apart.
            // SAFETY: every pointer and stride stays inside its slice for the shapes given,
            // and `gates` does not alias `h` or `w_hh_t`.
            unsafe {
                gemm::gemm(
                    rows,
                    gates_len,
                    hidden,
                    gates.as_mut_ptr().add(t * gates_len),
                    1,
                    row_stride as isize,
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
        for (r, (h, c)) in h
            .chunks_exact_mut(hidden)
            .zip(c.chunks_exact_mut(hidden))
            .enumerate()
        {
            let g = &gates[r * row_stride + t * gates_len..][..gates_len];
            cell_update(g, h, c, hidden);
            if keep_sequence {
                out[(r * steps + t) * hidden..][..hidden].copy_from_slice(h);
            }
        }
    }
    if !keep_sequence {
        out.copy_from_slice(&h);
    }
}

/// `c = σ(f)·c + σ(i)·tanh(g)`, `h = σ(o)·tanh(c)` for one row of gates (i, f, o, g),
/// compiled for AVX2 and FMA when the CPU has them.
#[inline]
fn cell_update(gates: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { cell_update_avx2(gates, h, c, hidden) };
        return;
    }
    cell_update_portable(gates, h, c, hidden);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cell_update_avx2(gates: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
    cell_update_portable(gates, h, c, hidden);
}

#[inline(always)]
fn cell_update_portable(gates: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
    let (i, rest) = gates.split_at(hidden);
    let (f, rest) = rest.split_at(hidden);
    let (o, g) = rest.split_at(hidden);
    let cells = h.iter_mut().zip(c.iter_mut()).zip(i).zip(f).zip(o).zip(g);
    for (((((h, c), &i), &f), &o), &g) in cells {
        let c_new = sigmoid(f) * *c + sigmoid(i) * tanh(g);
        *c = c_new;
        *h = sigmoid(o) * tanh(c_new);
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
                                     // Not `clamp`: max/min map to plain vector min/max and turn NaN into a finite value.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    // `shifted` holds n in its low mantissa bits: taking it from there (rather than `n as i32`,
    // a saturating cast) keeps the whole function in vector registers.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
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
        let (batch, steps, hidden) = (7, 5, 8);
        let projected: Vec<f32> = (0..batch * steps * 4 * hidden)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let w: Vec<f32> = (0..hidden * 4 * hidden)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 200.0)
            .collect();
        let run = |threads: usize, keep: bool| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| recur(&mut projected.clone(), batch, steps, hidden, &w, keep))
        };
        let whole = run(1, true);
        let split = run(3, true);
        assert_eq!(whole.len(), batch * steps * hidden);
        for (a, b) in whole.iter().zip(&split) {
            assert!((a - b).abs() < 1e-6);
        }
        let last: Vec<f32> = (0..batch)
            .flat_map(|r| whole[(r * steps + steps - 1) * hidden..][..hidden].to_vec())
            .collect();
        for (a, b) in run(3, false).iter().zip(&last) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
