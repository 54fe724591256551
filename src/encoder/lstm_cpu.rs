//! The LSTM stack fused for the CPU. Each step of each layer computes the four gates of a
//! block of batch rows as one affine product `b + [x_t, h_{t-1}] · [W_ihᵀ; W_hhᵀ]` (an AVX-512
//! kernel over packed weights when the CPU has AVX-512F, else `gemm`, the kernel Candle itself
//! uses on the CPU), then one loop applies the cell update. The layers advance together, one
//! step at a time (a wavefront), so a block only ever holds one step's gates and each layer's
//! state: no sequence is projected or stored whole. The batch splits into contiguous row
//! blocks, one per worker thread, which never synchronise.

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

    /// Advances `state` (its rows already holding this step's input) by one step; at the
    /// `first` step the state is zero and only the input weights contribute.
    fn step(
        &self,
        state: &mut LayerState,
        rows: usize,
        first: bool,
        gates: &mut [f32],
        scratch: &mut Vec<u16>,
    ) {
        let (input, hidden) = (self.input, self.hidden);
        let (depth, gates_len) = (input + hidden, 4 * hidden);
        let used = if first { input } else { depth };
        self.affine(&state.a, rows, used, gates, scratch);
        for (r, (row, c)) in state
            .a
            .chunks_exact_mut(depth)
            .zip(state.c.chunks_exact_mut(hidden))
            .enumerate()
        {
            cell_update(
                &gates[r * gates_len..][..gates_len],
                &mut row[input..],
                c,
                hidden,
            );
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

/// A stack of LSTM layers laid out for the CPU, each feeding the next.
pub struct CpuLstm {
    layers: Vec<CpuLstmLayer>,
}

/// One layer's part of a block's working state.
struct LayerState {
    /// Row r is `[x_t, h_{t-1}]` of batch row r: the cell update writes h in place.
    a: Vec<f32>,
    /// The cell state, `(rows, hidden)`.
    c: Vec<f32>,
}

impl CpuLstm {
    /// Stacks `layers`, each taking the previous one's hidden state as input.
    pub fn new(layers: Vec<CpuLstmLayer>) -> Self {
        assert!(!layers.is_empty(), "an LSTM has at least one layer");
        for pair in layers.windows(2) {
            assert_eq!(pair[1].input, pair[0].hidden, "layer sizes chain");
        }
        Self { layers }
    }

    /// The precision of the products (bfloat16 only with its AVX-512 kernel).
    pub fn precision(&self) -> Precision {
        self.layers[0].precision()
    }

    /// Runs the stack over `xs` `(batch, steps, input)`, batch-major; returns the top layer's
    /// last hidden state `(batch, hidden)`.
    pub fn forward(&self, xs: &[f32], batch: usize, steps: usize) -> Vec<f32> {
        let (input, hidden) = (self.layers[0].input, self.top().hidden);
        assert_eq!(xs.len(), batch * steps * input, "input size");
        let mut out = vec![0f32; batch * hidden];
        if batch == 0 || steps == 0 {
            return out;
        }
        let workers = rayon::current_num_threads().clamp(1, batch);
        let rows_per_block = batch.div_ceil(workers);
        xs.par_chunks(rows_per_block * steps * input)
            .zip(out.par_chunks_mut(rows_per_block * hidden))
            .for_each(|(xs, out)| self.run_block(xs, out, steps));
        out
    }

    fn top(&self) -> &CpuLstmLayer {
        &self.layers[self.layers.len() - 1]
    }

    /// The recurrence for one block of rows: `xs` `(rows, steps, input)`, `out`
    /// `(rows, hidden)`.
    fn run_block(&self, xs: &[f32], out: &mut [f32], steps: usize) {
        let input = self.layers[0].input;
        let rows = xs.len() / (steps * input);
        let mut states: Vec<LayerState> = self
            .layers
            .iter()
            .map(|l| LayerState {
                a: vec![0f32; rows * (l.input + l.hidden)],
                c: vec![0f32; rows * l.hidden],
            })
            .collect();
        let widest = self.layers.iter().map(|l| 4 * l.hidden).max().unwrap_or(0);
        let mut gates = vec![0f32; rows * widest];
        let mut scratch = Vec::new();
        for t in 0..steps {
            let depth = input + self.layers[0].hidden;
            for (r, row) in states[0].a.chunks_exact_mut(depth).enumerate() {
                row[..input].copy_from_slice(&xs[(r * steps + t) * input..][..input]);
            }
            for (l, layer) in self.layers.iter().enumerate() {
                let (done, rest) = states.split_at_mut(l + 1);
                let state = &mut done[l];
                layer.step(state, rows, t == 0, &mut gates, &mut scratch);
                if let (Some(next), Some(next_layer)) = (rest.first_mut(), self.layers.get(l + 1)) {
                    let depth = layer.input + layer.hidden;
                    let next_depth = next_layer.input + next_layer.hidden;
                    for (from, to) in state
                        .a
                        .chunks_exact(depth)
                        .zip(next.a.chunks_exact_mut(next_depth))
                    {
                        to[..layer.hidden].copy_from_slice(&from[layer.input..]);
                    }
                }
            }
        }
        let top = self.top();
        let depth = top.input + top.hidden;
        let last = &states[states.len() - 1];
        for (row, out) in last
            .a
            .chunks_exact(depth)
            .zip(out.chunks_exact_mut(top.hidden))
        {
            out.copy_from_slice(&row[top.input..]);
        }
    }
}

/// `c = σ(f)·c + σ(i)·tanh(g)`, `h = σ(o)·tanh(c)` for one row of gates (i, f, o, g),
/// compiled for AVX-512, or AVX2 and FMA, when the CPU has them.
#[inline]
fn cell_update(gates: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { cell_update_avx512(gates, h, c, hidden) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { cell_update_avx2(gates, h, c, hidden) };
        return;
    }
    cell_update_portable(gates, h, c, hidden);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn cell_update_avx512(gates: &[f32], h: &mut [f32], c: &mut [f32], hidden: usize) {
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
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / (50.0 * input as f32))
            .collect();
        let w_hh: Vec<f32> = (0..hidden * gates)
            .map(|i| ((i * 29 % 83) as f32 - 41.0) / 200.0)
            .collect();
        let bias = (0..gates).map(|i| ((i % 7) as f32 - 3.0) / 10.0).collect();
        CpuLstmLayer::new(&w_ih, &w_hh, bias, hidden, precision)
    }

    /// The textbook recurrence in f64, one row at a time: `(batch, steps, hidden)`.
    fn reference(layer: &CpuLstmLayer, xs: &[f64], batch: usize, steps: usize) -> Vec<f64> {
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
                                .map(|k| x[k] * f64::from(layer.weights[k * gates_len + j]))
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

    /// The last step's hidden state of each row of a `(batch, steps, hidden)` sequence.
    fn last_steps(seq: &[f64], batch: usize, steps: usize) -> Vec<f64> {
        let hidden = seq.len() / (batch * steps);
        (0..batch)
            .flat_map(|b| seq[(b * steps + steps - 1) * hidden..][..hidden].to_vec())
            .collect()
    }

    #[test]
    fn the_stack_follows_the_textbook_recurrence_with_both_kernels_in_any_number_of_blocks() {
        let (batch, steps, input, hidden) = (7, 5, 6, 16);
        let xs: Vec<f32> = (0..batch * steps * input)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let wide: Vec<f64> = xs.iter().map(|&x| f64::from(x)).collect();
        let first = reference(&layer(input, hidden, None), &wide, batch, steps);
        let second = reference(&layer(hidden, hidden, None), &first, batch, steps);
        let want = last_steps(&second, batch, steps);
        for precision in [None, Some(Precision::F32)] {
            let stack = CpuLstm::new(vec![
                layer(input, hidden, precision),
                layer(hidden, hidden, precision),
            ]);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got = pool.install(|| stack.forward(&xs, batch, steps));
                assert_eq!(got.len(), want.len());
                for (a, b) in got.iter().zip(&want) {
                    assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
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
