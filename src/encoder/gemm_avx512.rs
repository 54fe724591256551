//! The affine product `bias + a · w` with AVX-512 kernels, for the LSTM's gates on CPUs that
//! have AVX-512F. `w` is packed once into column panels stored contiguously, so a tile of
//! output streams one panel; each tile keeps up to 6 rows × 64 columns of sums in 24 vector
//! registers and adds one rank-1 update per inner index. The optional bfloat16 variant (CPUs
//! with AVX512_BF16) stores `w` and rounds `a` to bfloat16, and adds two inner indices per
//! instruction (`vdpbf16ps`), accumulating in f32.

use std::arch::x86_64::{
    __m512, __m512bh, __m512i, _mm512_cvtne2ps_pbh, _mm512_dpbf16_ps, _mm512_fmadd_ps,
    _mm512_loadu_ps, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_storeu_ps, _mm512_storeu_si512,
};

/// Columns per panel: four 16-lane vectors.
const PANEL: usize = 64;
/// Lanes of one vector.
const LANES: usize = 16;
/// Rows per tile.
const TILE_ROWS: usize = 6;

/// A `(depth, width)` row-major matrix repacked in panels of [`PANEL`] columns (the last may
/// be narrower), each panel row-major and contiguous.
pub struct Panels {
    depth: usize,
    width: usize,
    data: Vec<f32>,
}

impl Panels {
    /// Packs `w`, `(depth, width)` row-major, when the CPU has AVX-512F and `width` is a
    /// multiple of 16; `None` otherwise (the caller uses another kernel).
    pub fn pack(w: &[f32], depth: usize, width: usize) -> Option<Self> {
        if !std::arch::is_x86_feature_detected!("avx512f") || !width.is_multiple_of(LANES) {
            return None;
        }
        assert_eq!(w.len(), depth * width, "matrix size");
        let mut data = Vec::with_capacity(w.len());
        for start in (0..width).step_by(PANEL) {
            let cols = PANEL.min(width - start);
            for row in w.chunks_exact(width) {
                data.extend_from_slice(&row[start..start + cols]);
            }
        }
        Some(Self { depth, width, data })
    }

    /// `out[r, :] = bias + a[r, ..depth] · w[..depth, :]` for `rows` rows; `a` has row stride
    /// `lda`, `out` has row stride `width`. Only the first `depth` rows of `w` are used.
    pub fn affine(
        &self,
        a: &[f32],
        lda: usize,
        rows: usize,
        depth: usize,
        bias: &[f32],
        out: &mut [f32],
    ) {
        assert!(depth <= self.depth && depth <= lda, "inner size");
        assert_eq!(bias.len(), self.width, "bias length");
        assert!(out.len() >= rows * self.width, "output size");
        assert!(
            rows == 0 || a.len() >= (rows - 1) * lda + depth,
            "input size"
        );
        // SAFETY: `pack` only builds panels when the CPU has AVX-512F; the sizes are checked
        // above, and every tile stays inside them.
        unsafe { self.affine_avx512(a, lda, rows, depth, bias, out) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn affine_avx512(
        &self,
        a: &[f32],
        lda: usize,
        rows: usize,
        depth: usize,
        bias: &[f32],
        out: &mut [f32],
    ) {
        let width = self.width;
        // SAFETY: this function is compiled for AVX-512F, which the caller checked; each tile
        // starts inside `a`, the panels, `bias` and `out`, whose sizes `affine` checked.
        unsafe {
            for_each_tile(rows, width, |row, start, cols| Tile {
                a: a[row * lda..].as_ptr(),
                lda,
                depth,
                panel: self.data[start * self.depth..].as_ptr(),
                panel_width: cols,
                bias: bias[start..].as_ptr(),
                out: out[row * width + start..].as_mut_ptr(),
                ldo: width,
            });
        }
    }
}

/// An output tile of one of the kernels.
trait TileKernel {
    /// Computes `R` rows × `V` vectors of output.
    ///
    /// # Safety
    /// The CPU has the kernel's features, and the tile's pointers cover its rows and columns.
    unsafe fn run<const R: usize, const V: usize>(&self);
}

/// Runs the tile `make(row, start, cols)` for every block of up to [`TILE_ROWS`] of `rows`
/// rows and every panel of `width` columns.
///
/// # Safety
/// As for [`TileKernel::run`], for every tile `make` returns.
unsafe fn for_each_tile<T: TileKernel>(
    rows: usize,
    width: usize,
    mut make: impl FnMut(usize, usize, usize) -> T,
) {
    for start in (0..width).step_by(PANEL) {
        let cols = PANEL.min(width - start);
        let mut row = 0;
        while row < rows {
            let tile_rows = TILE_ROWS.min(rows - row);
            let t = make(row, start, cols);
            macro_rules! dispatch {
                ($($r:literal),*) => {
                    match (tile_rows, cols / LANES) {
                        $(
                            ($r, 4) => t.run::<$r, 4>(),
                            ($r, 3) => t.run::<$r, 3>(),
                            ($r, 2) => t.run::<$r, 2>(),
                            ($r, 1) => t.run::<$r, 1>(),
                        )*
                        _ => unreachable!("tile shape"),
                    }
                };
            }
            // SAFETY: the caller guarantees the kernel's features and that every tile `make`
            // returns covers `tile_rows` rows and `cols` columns.
            unsafe {
                dispatch!(1, 2, 3, 4, 5, 6);
            }
            row += tile_rows;
        }
    }
}

/// `R` rows of accumulators, each starting at the `V × 16` biases from `bias`.
///
/// # Safety
/// The CPU must support AVX-512F; `bias` must hold `V × 16` floats.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn biased<const R: usize, const V: usize>(bias: *const f32) -> [[__m512; V]; R] {
    let mut acc: [[__m512; V]; R] = [[_mm512_setzero_ps(); V]; R];
    for v in 0..V {
        // SAFETY: `bias` holds `V × 16` floats (the caller's guarantee).
        let b = unsafe { _mm512_loadu_ps(bias.add(v * LANES)) };
        for row in acc.iter_mut() {
            row[v] = b;
        }
    }
    acc
}

/// Writes accumulator row `r` to `out + r × ldo`.
///
/// # Safety
/// The CPU must support AVX-512F; each of the `R` output rows must have room for `V × 16`
/// floats.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store<const R: usize, const V: usize>(acc: &[[__m512; V]; R], out: *mut f32, ldo: usize) {
    for (r, row) in acc.iter().enumerate() {
        for (v, sum) in row.iter().enumerate() {
            // SAFETY: output row `r` has room for `V × 16` floats (the caller's guarantee).
            unsafe { _mm512_storeu_ps(out.add(r * ldo + v * LANES), *sum) };
        }
    }
}

/// One output tile: where its inputs and outputs are.
struct Tile {
    a: *const f32,
    lda: usize,
    depth: usize,
    panel: *const f32,
    panel_width: usize,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
}

impl TileKernel for Tile {
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const R: usize, const V: usize>(&self) {
        // SAFETY: the tile's bias covers its `V × 16` columns (the caller's guarantee).
        let mut acc = unsafe { biased::<R, V>(self.bias) };
        for k in 0..self.depth {
            // SAFETY: the panel holds `depth` rows of `panel_width` (≥ `V × 16`) floats.
            let w_row = unsafe { self.panel.add(k * self.panel_width) };
            let mut w = [_mm512_setzero_ps(); V];
            for (v, wv) in w.iter_mut().enumerate() {
                // SAFETY: as above, `V × 16` floats from the start of panel row `k`.
                *wv = unsafe { _mm512_loadu_ps(w_row.add(v * LANES)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: the tile's input covers `R` rows of stride `lda` and `depth` columns.
                let x = _mm512_set1_ps(unsafe { *self.a.add(r * self.lda + k) });
                for v in 0..V {
                    row[v] = _mm512_fmadd_ps(x, w[v], row[v]);
                }
            }
        }
        // SAFETY: the tile's output covers `R` rows of stride `ldo` and `V × 16` columns.
        unsafe { store::<R, V>(&acc, self.out, self.ldo) };
    }
}

/// A `(depth, width)` row-major matrix in bfloat16, packed in panels of [`PANEL`] columns
/// whose rows hold the pairs `(w[2p, c], w[2p + 1, c])` side by side, as `vdpbf16ps` reads
/// them.
pub struct PanelsBf16 {
    depth: usize,
    width: usize,
    data: Vec<u16>,
}

impl PanelsBf16 {
    /// Packs `w`, `(depth, width)` row-major, when the CPU has AVX-512F and AVX512_BF16,
    /// `width` is a multiple of 16 and `depth` is even; `None` otherwise.
    pub fn pack(w: &[f32], depth: usize, width: usize) -> Option<Self> {
        if !std::arch::is_x86_feature_detected!("avx512f")
            || !std::arch::is_x86_feature_detected!("avx512bf16")
            || !width.is_multiple_of(LANES)
            || !depth.is_multiple_of(2)
        {
            return None;
        }
        assert_eq!(w.len(), depth * width, "matrix size");
        let mut data = Vec::with_capacity(w.len());
        for start in (0..width).step_by(PANEL) {
            let cols = PANEL.min(width - start);
            for pair in w.chunks_exact(2 * width) {
                let (even, odd) = pair.split_at(width);
                for c in start..start + cols {
                    data.push(to_bf16(even[c]));
                    data.push(to_bf16(odd[c]));
                }
            }
        }
        Some(Self { depth, width, data })
    }

    /// `out[r, :] = bias + a[r, ..depth] · w[..depth, :]` for `rows` rows, with `a` rounded
    /// to bfloat16 into `scratch`; `a` has row stride `lda`, `out` has row stride `width`,
    /// `depth` must be even.
    #[allow(clippy::too_many_arguments)]
    pub fn affine(
        &self,
        a: &[f32],
        lda: usize,
        rows: usize,
        depth: usize,
        bias: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<u16>,
    ) {
        assert!(
            depth <= self.depth && depth <= lda && depth.is_multiple_of(2),
            "inner size"
        );
        assert_eq!(bias.len(), self.width, "bias length");
        assert!(out.len() >= rows * self.width, "output size");
        assert!(
            rows == 0 || a.len() >= (rows - 1) * lda + depth,
            "input size"
        );
        // SAFETY: `pack` only builds panels when the CPU has AVX-512F and AVX512_BF16; the
        // sizes are checked above, and every tile stays inside them.
        unsafe { self.affine_bf16(a, lda, rows, depth, bias, out, scratch) }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn affine_bf16(
        &self,
        a: &[f32],
        lda: usize,
        rows: usize,
        depth: usize,
        bias: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<u16>,
    ) {
        // Rows of `a` in bfloat16, `depth` padded to a multiple of 32 for whole conversions.
        let stride = depth.next_multiple_of(2 * LANES);
        scratch.clear();
        scratch.resize(rows * stride, 0);
        let mut padded = [0f32; 2 * LANES];
        for r in 0..rows {
            let row = &a[r * lda..r * lda + depth];
            for (k, dst) in (0..depth)
                .step_by(2 * LANES)
                .zip(scratch[r * stride..].chunks_exact_mut(2 * LANES))
            {
                let n = (2 * LANES).min(depth - k);
                padded[..n].copy_from_slice(&row[k..k + n]);
                padded[n..].fill(0.0);
                // SAFETY: `padded` holds 32 floats: 16 from its start and 16 from `LANES`.
                let (lo, hi) = unsafe {
                    (
                        _mm512_loadu_ps(padded.as_ptr()),
                        _mm512_loadu_ps(padded.as_ptr().add(LANES)),
                    )
                };
                // SAFETY: `__m512bh` and `__m512i` are both 512 bits of plain data.
                let packed: __m512i = unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo)) };
                // SAFETY: `dst` is a chunk of 32 `u16`s, 512 bits.
                unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), packed) };
            }
        }
        let width = self.width;
        // SAFETY: this function is compiled for AVX-512F and AVX512_BF16, which the caller
        // checked; each tile starts inside `scratch`, the panels, `bias` and `out`, whose sizes
        // `affine` checked and `scratch` was resized to.
        unsafe {
            for_each_tile(rows, width, |row, start, cols| TileBf16 {
                a: scratch[row * stride..].as_ptr(),
                lda: stride,
                pairs: depth / 2,
                panel: self.data[start * self.depth..].as_ptr(),
                panel_width: cols,
                bias: bias[start..].as_ptr(),
                out: out[row * width + start..].as_mut_ptr(),
                ldo: width,
            });
        }
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even), as `vcvtne2ps2bf16` rounds.
fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    ((bits + rounding) >> 16) as u16
}

/// One output tile of the bfloat16 kernel: where its inputs and outputs are.
struct TileBf16 {
    a: *const u16,
    lda: usize,
    pairs: usize,
    panel: *const u16,
    panel_width: usize,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
}

impl TileKernel for TileBf16 {
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn run<const R: usize, const V: usize>(&self) {
        // SAFETY: the tile's bias covers its `V × 16` columns (the caller's guarantee).
        let mut acc = unsafe { biased::<R, V>(self.bias) };
        for p in 0..self.pairs {
            // SAFETY: the panel holds `pairs` rows of `2 × panel_width` (≥ `V × 32`) values.
            let w_row = unsafe { self.panel.add(p * 2 * self.panel_width) };
            // SAFETY: `__m512` and `__m512bh` are both 512 bits of plain data.
            let zero = unsafe { std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()) };
            let mut w: [__m512bh; V] = [zero; V];
            for (v, wv) in w.iter_mut().enumerate() {
                // SAFETY: 32 values from the start of pair row `p`, inside it as above; both
                // types are 512 bits of plain data.
                *wv = unsafe {
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        w_row.add(v * 2 * LANES).cast(),
                    ))
                };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: the tile's input covers `R` rows of stride `lda` and `2 × pairs`
                // values; the pair is read unaligned.
                let pair = unsafe {
                    self.a
                        .add(r * self.lda + 2 * p)
                        .cast::<u32>()
                        .read_unaligned()
                };
                // SAFETY: `__m512i` and `__m512bh` are both 512 bits of plain data.
                let x: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(pair as i32)) };
                for v in 0..V {
                    row[v] = _mm512_dpbf16_ps(row[v], x, w[v]);
                }
            }
        }
        // SAFETY: the tile's output covers `R` rows of stride `ldo` and `V × 16` columns.
        unsafe { store::<R, V>(&acc, self.out, self.ldo) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_a_plain_product_for_every_tile_shape() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        for (rows, depth, width, lda) in [(13, 37, 208, 40), (6, 5, 64, 5), (1, 1, 16, 1)] {
            let a: Vec<f32> = (0..rows * lda)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0)
                .collect();
            let w: Vec<f32> = (0..depth * width)
                .map(|i| ((i * 17 % 89) as f32 - 44.0) / 60.0)
                .collect();
            let bias: Vec<f32> = (0..width).map(|i| i as f32 / 100.0).collect();
            let panels = Panels::pack(&w, depth, width).unwrap();
            let mut out = vec![0f32; rows * width];
            panels.affine(&a, lda, rows, depth, &bias, &mut out);
            for r in 0..rows {
                for c in 0..width {
                    let want: f64 = f64::from(bias[c])
                        + (0..depth)
                            .map(|k| f64::from(a[r * lda + k]) * f64::from(w[k * width + c]))
                            .sum::<f64>();
                    let got = f64::from(out[r * width + c]);
                    assert!((got - want).abs() < 1e-4, "({r}, {c}): {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn widths_that_are_not_whole_vectors_are_left_to_another_kernel() {
        assert!(Panels::pack(&[0.0; 10], 1, 10).is_none());
        assert!(PanelsBf16::pack(&[0.0; 10], 1, 10).is_none());
        assert!(PanelsBf16::pack(&[0.0; 48], 3, 16).is_none());
    }

    #[test]
    fn the_bfloat16_kernel_equals_the_product_of_the_rounded_operands() {
        if !std::arch::is_x86_feature_detected!("avx512bf16") {
            eprintln!("skipped: no AVX512_BF16 on this CPU");
            return;
        }
        let from_bf16 = |h: u16| f64::from(f32::from_bits(u32::from(h) << 16));
        for (rows, depth, width, lda) in [(13, 38, 208, 40), (6, 2, 64, 2), (1, 64, 16, 70)] {
            let a: Vec<f32> = (0..rows * lda)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.3)
                .collect();
            let w: Vec<f32> = (0..depth * width)
                .map(|i| ((i * 17 % 89) as f32 - 44.0) / 60.7)
                .collect();
            let bias: Vec<f32> = (0..width).map(|i| i as f32 / 100.0).collect();
            let panels = PanelsBf16::pack(&w, depth, width).unwrap();
            let mut out = vec![0f32; rows * width];
            panels.affine(&a, lda, rows, depth, &bias, &mut out, &mut Vec::new());
            for r in 0..rows {
                for c in 0..width {
                    let want: f64 = f64::from(bias[c])
                        + (0..depth)
                            .map(|k| {
                                from_bf16(to_bf16(a[r * lda + k]))
                                    * from_bf16(to_bf16(w[k * width + c]))
                            })
                            .sum::<f64>();
                    let got = f64::from(out[r * width + c]);
                    assert!((got - want).abs() < 1e-4, "({r}, {c}): {got} vs {want}");
                }
            }
        }
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(
            to_bf16(f32::from_bits(0x3f80_8000)),
            0x3f80,
            "a tie goes to even"
        );
        assert_eq!(
            to_bf16(f32::from_bits(0x3f81_8000)),
            0x3f82,
            "a tie goes to even"
        );
    }
}
