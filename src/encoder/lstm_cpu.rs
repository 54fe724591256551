//! The LSTM layers fused for the CPU. Each step computes the four gates of a block of batch
//! rows as one affine product `b + [x_t, h_{t-1}] · [W_ihᵀ; W_hhᵀ]` (an AVX-512 kernel over
//! packed weights when the CPU has AVX-512F, else `gemm`, the kernel Candle itself uses on the
//! CPU), then one loop applies the cell update. Working step by step keeps what a block needs
//! (one step's gates, the state, the weights) in cache instead of projecting whole sequences
//! first. The batch splits into contiguous row blocks, one per worker thread, which never
//! synchronise.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::gemm_avx512::{Panels, PanelsBf16};
use super::Precision;

/// How the gates' affine product is computed.
enum GateKernel {
    /// `gemm` over the f32 weights, on any CPU.
    Gemm,
    /// The AVX-512 kernel over f32 panels.
    #[cfg(target_arch = "x86_64")]
    F32(Panels),
    /// The AVX-512 kernel over bfloat16 panels.
    #[cfg(target_arch = "x86_64")]
    Bf16(PanelsBf16),
}

/// One LSTM layer's weights laid out for the CPU.
pub struct CpuLstmLayer {
    input: usize,
    hidden: usize,
    /// `(input + hidden, 4 * hidden)`: `[W_ihᵀ; W_hhᵀ]`, gate blocks in order i, f, o, g.
    weights: Vec<f32>,
    /// `b_ih + b_hh`, `4 * hidden`, same gate order.
    bias: Vec<f32>,
    kernel: GateKernel,
}

impl CpuLstmLayer {
    /// A layer from its transposed weights `w_ih_t` `(input, 4 * hidden)` and `w_hh_t`
    /// `(hidden, 4 * hidden)` and summed bias, gate blocks in order i, f, o, g. With a
    /// `precision`, the AVX-512 kernel of that precision computes the gates when the CPU has
    /// it (bfloat16 falls back to f32, f32 to `gemm`); without, `gemm` does.
    pub fn new(
        w_ih_t: &[f32],
        w_hh_t: &[f32],
        bias: Vec<f32>,
        hidden: usize,
        precision: Option<Precision>,
    ) -> Self {
        let gates = 4 * hidden;
        assert_eq!(w_hh_t.len(), hidden * gates, "recurrent weights");
        assert_eq!(w_ih_t.len() % gates, 0, "input weights");
        assert_eq!(bias.len(), gates, "bias");
        let input = w_ih_t.len() / gates;
        let weights = [w_ih_t, w_hh_t].concat();
        let depth = input + hidden;
        #[cfg(target_arch = "x86_64")]
        let kernel = {
            let bf16 = (precision == Some(Precision::Bf16))
                .then(|| PanelsBf16::pack(&weights, depth, gates).map(GateKernel::Bf16))
                .flatten();
            bf16.or_else(|| {
                precision
                    .and_then(|_| Panels::pack(&weights, depth, gates))
                    .map(GateKernel::F32)
            })
            .unwrap_or(GateKernel::Gemm)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let kernel = {
            let _ = (precision, depth);
            GateKernel::Gemm
        };
        Self {
            input,
            hidden,
            weights,
            bias,
            kernel,
        }
    }

    /// The precision of the products (bfloat16 only with its AVX-512 kernel).
    pub fn precision(&self) -> Precision {
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            GateKernel::Bf16(_) => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// Whether an AVX-512 kernel computes the gates.
    #[cfg(test)]
    fn uses_avx512(&self) -> bool {
        !matches!(self.kernel, GateKernel::Gemm)
    }

    /// Runs the layer over `xs` `(batch, steps, input)`, batch-major; returns every step's
    /// hidden state `(batch, steps, hidden)` when `keep_sequence`, else the last one
    /// `(batch, hidden)`.
    pub fn forward(&self, xs: &[f32], batch: usize, steps: usize, keep_sequence: bool) -> Vec<f32> {
        assert_eq!(xs.len(), batch * steps * self.input, "input size");
        let out_steps = if keep_sequence { steps } else { 1 };
        let mut out = vec![0f32; batch * out_steps * self.hidden];
        if batch == 0 || steps == 0 {
            return out;
        }
        let workers = rayon::current_num_threads().clamp(1, batch);
        let rows_per_block = batch.div_ceil(workers);
        xs.par_chunks(rows_per_block * steps * self.input)
            .zip(out.par_chunks_mut(rows_per_block * out_steps * self.hidden))
            .for_each(|(xs, out)| self.run_block(xs, out, steps, keep_sequence));
        out
    }

    /// The recurrence for one block of rows: `xs` `(rows, steps, input)`, `out`
    /// `(rows, steps or 1, hidden)`.
    fn run_block(&self, xs: &[f32], out: &mut [f32], steps: usize, keep_sequence: bool) {
        let (input, hidden) = (self.input, self.hidden);
        let (depth, gates_len) = (input + hidden, 4 * hidden);
        let rows = xs.len() / (steps * input);
        // Row r of `a` is [x_t, h_{t-1}] of batch row r: the cell update writes h in place.
        let mut a = vec![0f32; rows * depth];
        let mut gates = vec![0f32; rows * gates_len];
        let mut c = vec![0f32; rows * hidden];
        let mut scratch = Vec::new();
        for t in 0..steps {
            for (r, row) in a.chunks_exact_mut(depth).enumerate() {
                row[..input].copy_from_slice(&xs[(r * steps + t) * input..][..input]);
            }
            // The state starts at zero: at the first step only the input weights contribute.
            let used = if t == 0 { input } else { depth };
            self.affine(&a, rows, used, &mut gates, &mut scratch);
            for (r, (row, c)) in a
                .chunks_exact_mut(depth)
                .zip(c.chunks_exact_mut(hidden))
                .enumerate()
            {
                let h = &mut row[input..];
                cell_update(&gates[r * gates_len..][..gates_len], h, c, hidden);
                if keep_sequence {
                    out[(r * steps + t) * hidden..][..hidden].copy_from_slice(h);
                }
            }
        }
        if !keep_sequence {
            for (row, out) in a.chunks_exact(depth).zip(out.chunks_exact_mut(hidden)) {
                out.copy_from_slice(&row[input..]);
            }
        }
    }

    /// `gates[r, :] = bias + a[r, ..used] · weights[..used, :]` for the `rows` rows of `a`;
    /// `scratch` holds the bfloat16 kernel's rounded copy of `a`.
    fn affine(
        &self,
        a: &[f32],
        rows: usize,
        used: usize,
        gates: &mut [f32],
        scratch: &mut Vec<u16>,
    ) {
        let (depth, gates_len) = (self.input + self.hidden, 4 * self.hidden);
        match &self.kernel {
            #[cfg(target_arch = "x86_64")]
            GateKernel::F32(panels) => {
                return panels.affine(a, depth, rows, used, &self.bias, gates);
            }
            #[cfg(target_arch = "x86_64")]
            GateKernel::Bf16(panels) => {
                return panels.affine(a, depth, rows, used, &self.bias, gates, scratch);
            }
            GateKernel::Gemm => {}
        }
        let _ = scratch;
        for row in gates.chunks_exact_mut(gates_len) {
            row.copy_from_slice(&self.bias);
        }
        // SAFETY: every pointer and stride stays inside its slice for the shapes given, and
        // `gates` aliases neither `a` nor the weights.
        unsafe {
            gemm::gemm(
                rows,
                gates_len,
                used,
                gates.as_mut_ptr(),
                1,
                gates_len as isize,
                true,
                a.as_ptr(),
                1,
                depth as isize,
                self.weights.as_ptr(),
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

    /// A layer of `hidden` units over `input` features with deterministic weights.
    fn layer(input: usize, hidden: usize, precision: Option<Precision>) -> CpuLstmLayer {
        let gates = 4 * hidden;
        let w_ih: Vec<f32> = (0..input * gates)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 150.0)
            .collect();
        let w_hh: Vec<f32> = (0..hidden * gates)
            .map(|i| ((i * 29 % 83) as f32 - 41.0) / 200.0)
            .collect();
        let bias = (0..gates).map(|i| ((i % 7) as f32 - 3.0) / 10.0).collect();
        CpuLstmLayer::new(&w_ih, &w_hh, bias, hidden, precision)
    }

    /// The textbook recurrence in f64, one row at a time: `(batch, steps, hidden)`.
    fn reference(layer: &CpuLstmLayer, xs: &[f32], batch: usize, steps: usize) -> Vec<f64> {
        let (input, hidden) = (layer.input, layer.hidden);
        let gates_len = 4 * hidden;
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let mut out = Vec::new();
        for b in 0..batch {
            let (mut h, mut c) = (vec![0f64; hidden], vec![0f64; hidden]);
            for t in 0..steps {
                let x = &xs[(b * steps + t) * input..][..input];
                let g: Vec<f64> = (0..gates_len)
                    .map(|j| {
                        f64::from(layer.bias[j])
                            + (0..input)
                                .map(|k| f64::from(x[k] * layer.weights[k * gates_len + j]))
                                .sum::<f64>()
                            + (0..hidden)
                                .map(|k| {
                                    h[k] * f64::from(layer.weights[(input + k) * gates_len + j])
                                })
                                .sum::<f64>()
                    })
                    .collect();
                for u in 0..hidden {
                    let (i, f, o, gg) = (g[u], g[hidden + u], g[2 * hidden + u], g[3 * hidden + u]);
                    c[u] = sig(f) * c[u] + sig(i) * gg.tanh();
                    h[u] = sig(o) * c[u].tanh();
                }
                out.extend_from_slice(&h);
            }
        }
        out
    }

    #[test]
    fn both_kernels_follow_the_textbook_recurrence_in_any_number_of_blocks() {
        let (batch, steps, input, hidden) = (7, 5, 6, 16);
        let xs: Vec<f32> = (0..batch * steps * input)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let want = reference(&layer(input, hidden, None), &xs, batch, steps);
        for precision in [None, Some(Precision::F32)] {
            let layer = layer(input, hidden, precision);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let seq = pool.install(|| layer.forward(&xs, batch, steps, true));
                for (a, b) in seq.iter().zip(&want) {
                    assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
                }
                let last = pool.install(|| layer.forward(&xs, batch, steps, false));
                for (r, row) in last.chunks_exact(hidden).enumerate() {
                    assert_eq!(row, &seq[(r * steps + steps - 1) * hidden..][..hidden]);
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_kernel_is_used_where_the_cpu_has_it() {
        let wanted = std::arch::is_x86_feature_detected!("avx512f");
        assert_eq!(layer(40, 16, Some(Precision::F32)).uses_avx512(), wanted);
        assert!(!layer(40, 16, None).uses_avx512());
        let bf16 = std::arch::is_x86_feature_detected!("avx512bf16");
        let layer = layer(40, 16, Some(Precision::Bf16));
        assert_eq!(layer.uses_avx512(), wanted);
        let expected = if bf16 {
            Precision::Bf16
        } else {
            Precision::F32
        };
        assert_eq!(layer.precision(), expected);
    }
}
