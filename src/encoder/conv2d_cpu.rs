//! 2-D convolutions on the CPU for the convolutional encoders (ResNet34, CAM++'s head):
//! channel planes of one item, and convolutions with folded BatchNorm computed by `gemm` into
//! an output that already holds the bias (and the residual), ReLU in place. 3×3 stride-1
//! convolutions use Winograd's F(2×2, 3×3) (16 products of the transformed kernel with
//! transformed 4×4 input tiles, 2.25× fewer multiplications); the others (strided, 1×1) use
//! row-tiled im2col.

/// Channel planes `(channels, height, width)` of one item, row-major.
pub(super) struct Plane {
    pub(super) data: Vec<f32>,
    pub(super) height: usize,
    pub(super) width: usize,
}

impl Plane {
    pub(super) fn new(data: Vec<f32>, height: usize, width: usize) -> Self {
        Self {
            data,
            height,
            width,
        }
    }
}

/// Floats of scratch per matrix product (about 4 MB); at least one row of output is done at once.
const SCRATCH_BUDGET: usize = 1 << 20;

/// A convolution with folded BatchNorm (padding `k / 2`), strided along the height and the
/// width.
pub(super) struct CpuConv {
    /// `(c_out, c_in · k · k)` row-major.
    weight: Vec<f32>,
    /// For 3×3 stride 1: the Winograd-transformed kernel, 16 matrices `(c_out, c_in)`.
    winograd: Option<Vec<f32>>,
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: (usize, usize),
}

/// Reusable buffers of the CPU path.
#[derive(Default)]
pub(super) struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Makes `buf` at least `len` long, keeping its contents (zeros where it grows).
fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// `gemm` on one thread, or on rayon's pool when it has more.
fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `dst += lhs · rhs` for row-major matrices given with their row strides: `lhs` is `m × k`,
/// `rhs` is `k × n`, `dst` is `m × n`. Panics when a slice is too short for its shape.
pub(super) fn matmul_add(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_stride: usize,
    (lhs, lhs_stride): (&[f32], usize),
    (rhs, rhs_stride): (&[f32], usize),
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        dst_stride >= n && lhs_stride >= k && rhs_stride >= n,
        "row strides shorter than rows"
    );
    assert!(
        lhs.len() >= (m - 1) * lhs_stride + k,
        "lhs shorter than {m} × {k}"
    );
    assert!(
        rhs.len() >= (k - 1) * rhs_stride + n,
        "rhs shorter than {k} × {n}"
    );
    assert!(
        dst.len() >= (m - 1) * dst_stride + n,
        "dst shorter than {m} × {n}"
    );
    // SAFETY: the assertions above keep every element the product reads or writes inside
    // `lhs`, `rhs` and `dst`; `dst` is borrowed mutably, so it overlaps neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            true,
            lhs.as_ptr(),
            1,
            lhs_stride as isize,
            rhs.as_ptr(),
            1,
            rhs_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

impl CpuConv {
    /// A convolution from its folded `(c_out, c_in, k, k)` weight and bias, with `stride`
    /// `(along the height, along the width)`.
    pub(super) fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        (c_out, c_in, k): (usize, usize, usize),
        stride: (usize, usize),
    ) -> Self {
        let winograd = (k == 3 && stride == (1, 1)).then(|| winograd_kernel(&weight, c_out, c_in));
        Self {
            weight,
            winograd,
            bias,
            c_in,
            c_out,
            k,
            stride,
        }
    }

    /// Convolution + bias (+ `residual`), then ReLU.
    pub(super) fn run(
        &self,
        x: &Plane,
        residual: Option<Vec<f32>>,
        scratch: &mut Scratch,
    ) -> Plane {
        let mut out = self.convolve(x, residual, scratch);
        for v in &mut out.data {
            *v = v.max(0.0);
        }
        out
    }

    /// Convolution + bias, no activation (the projection shortcut).
    pub(super) fn run_linear(&self, x: &Plane, scratch: &mut Scratch) -> Plane {
        self.convolve(x, None, scratch)
    }

    fn convolve(&self, x: &Plane, residual: Option<Vec<f32>>, scratch: &mut Scratch) -> Plane {
        let pad = self.k / 2;
        let out_h = (x.height + 2 * pad - self.k) / self.stride.0 + 1;
        let out_w = (x.width + 2 * pad - self.k) / self.stride.1 + 1;
        let pixels = out_h * out_w;
        let mut out = residual.unwrap_or_else(|| vec![0f32; self.c_out * pixels]);
        assert_eq!(out.len(), self.c_out * pixels, "residual shape");
        for (channel, &b) in out.chunks_exact_mut(pixels).zip(&self.bias) {
            for v in channel {
                *v += b;
            }
        }
        match &self.winograd {
            Some(kernel) => self.winograd(kernel, x, &mut out, scratch),
            None => self.im2col_gemm(x, &mut out, out_h, out_w, scratch),
        }
        Plane::new(out, out_h, out_w)
    }

    /// Adds the convolution to `out` by im2col over bands of output rows and one product each.
    fn im2col_gemm(
        &self,
        x: &Plane,
        out: &mut [f32],
        out_h: usize,
        out_w: usize,
        scratch: &mut Scratch,
    ) {
        let pixels = out_h * out_w;
        let depth = self.c_in * self.k * self.k;
        let rows_per_tile = (SCRATCH_BUDGET / (depth * out_w)).clamp(1, out_h);
        for y0 in (0..out_h).step_by(rows_per_tile) {
            let y1 = (y0 + rows_per_tile).min(out_h);
            let cols = (y1 - y0) * out_w;
            self.im2col(x, y0, y1, out_w, &mut scratch.a);
            matmul_add(
                (self.c_out, cols, depth),
                &mut out[y0 * out_w..],
                pixels,
                (&self.weight, depth),
                (&scratch.a, cols),
            );
        }
    }

    /// The patches of output rows `y0..y1` as `(c_in · k · k, (y1 - y0) · out_w)` in `col`,
    /// zero where the kernel overhangs the padded border.
    fn im2col(&self, x: &Plane, y0: usize, y1: usize, out_w: usize, col: &mut Vec<f32>) {
        let (k, (stride_h, stride_w), pad) = (self.k, self.stride, (self.k / 2) as isize);
        let cols = (y1 - y0) * out_w;
        col.clear();
        col.resize(self.c_in * k * k * cols, 0.0);
        let plane_size = x.height * x.width;
        for c in 0..self.c_in {
            let input = &x.data[c * plane_size..(c + 1) * plane_size];
            for kh in 0..k {
                for kw in 0..k {
                    let row = ((c * k + kh) * k + kw) * cols;
                    for oy in y0..y1 {
                        let iy = (oy * stride_h + kh) as isize - pad;
                        if iy < 0 || iy >= x.height as isize {
                            continue;
                        }
                        let src = &input[iy as usize * x.width..][..x.width];
                        let dst = &mut col[row + (oy - y0) * out_w..][..out_w];
                        let shift = kw as isize - pad;
                        for (ox, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * stride_w) as isize + shift;
                            if ix >= 0 && ix < x.width as isize {
                                *d = src[ix as usize];
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds the 3×3 stride-1 convolution to `out` with Winograd F(2×2, 3×3), over bands of
    /// tile rows: input tiles `Bᵀ d B`, 16 products with the kernel `G g Gᵀ`, outputs `Aᵀ m A`.
    fn winograd(&self, kernel: &[f32], x: &Plane, out: &mut [f32], scratch: &mut Scratch) {
        let (h, w) = (x.height, x.width);
        let (tiles_h, tiles_w) = (h.div_ceil(2), w.div_ceil(2));
        let widest = self.c_in.max(self.c_out);
        let band = (SCRATCH_BUDGET / (16 * widest * tiles_w)).clamp(1, tiles_h);
        for r0 in (0..tiles_h).step_by(band) {
            let r1 = (r0 + band).min(tiles_h);
            let n = (r1 - r0) * tiles_w;
            self.winograd_input(x, r0, r1, &mut scratch.a);
            // Every value is written by the products below.
            grow(&mut scratch.b, 16 * self.c_out * n);
            for xi in 0..16 {
                // SAFETY: the kernel holds 16 `c_out × c_in` matrices, `scratch.a` 16
                // `c_in × n` and `scratch.b` 16 `c_out × n`, all row-major.
                unsafe {
                    gemm::gemm(
                        self.c_out,
                        n,
                        self.c_in,
                        scratch.b.as_mut_ptr().add(xi * self.c_out * n),
                        1,
                        n as isize,
                        false,
                        kernel.as_ptr().add(xi * self.c_out * self.c_in),
                        1,
                        self.c_in as isize,
                        scratch.a.as_ptr().add(xi * self.c_in * n),
                        1,
                        n as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism(),
                    );
                }
            }
            self.winograd_output(&scratch.b, r0, r1, tiles_w, h, w, out);
        }
    }

    /// `Bᵀ d B` of the 4×4 input tiles of tile rows `r0..r1`, as 16 matrices `(c_in, tiles)`.
    /// Works a tile row at a time on zero-padded input rows, so the inner loops run along
    /// contiguous memory.
    fn winograd_input(&self, x: &Plane, r0: usize, r1: usize, v: &mut Vec<f32>) {
        let (h, w) = (x.height, x.width);
        let tiles_w = w.div_ceil(2);
        let n = (r1 - r0) * tiles_w;
        // Padded rows: one zero on the left, up to two on the right (tiles cover 2·tiles_w + 2).
        let padded = 2 * tiles_w + 2;
        let mut rows = [
            vec![0f32; padded],
            vec![0f32; padded],
            vec![0f32; padded],
            vec![0f32; padded],
        ];
        let mut t = rows.clone();
        // Every value is written below.
        grow(v, 16 * self.c_in * n);
        let plane_size = h * w;
        for c in 0..self.c_in {
            let input = &x.data[c * plane_size..(c + 1) * plane_size];
            for tr in r0..r1 {
                // Input rows 2·tr - 1 .. 2·tr + 2, zero outside the plane.
                for (i, row) in rows.iter_mut().enumerate() {
                    let y = (2 * tr + i) as isize - 1;
                    row.fill(0.0);
                    if y >= 0 && (y as usize) < h {
                        row[1..=w].copy_from_slice(&input[y as usize * w..][..w]);
                    }
                }
                // Rows of Bᵀ d, all columns at once.
                let [d0, d1, d2, d3] = &rows;
                let [t0, t1, t2, t3] = &mut t;
                for k in 0..padded {
                    t0[k] = d0[k] - d2[k];
                    t1[k] = d1[k] + d2[k];
                    t2[k] = d2[k] - d1[k];
                    t3[k] = d1[k] - d3[k];
                }
                // Columns: (Bᵀ d) B for every tile of the row.
                let offset = (tr - r0) * tiles_w;
                for (i, t) in t.iter().enumerate() {
                    let base = |j: usize| ((4 * i + j) * self.c_in + c) * n + offset;
                    let (b0, b1, b2, b3) = (base(0), base(1), base(2), base(3));
                    for tc in 0..tiles_w {
                        let (e0, e1, e2, e3) =
                            (t[2 * tc], t[2 * tc + 1], t[2 * tc + 2], t[2 * tc + 3]);
                        v[b0 + tc] = e0 - e2;
                        v[b1 + tc] = e1 + e2;
                        v[b2 + tc] = e2 - e1;
                        v[b3 + tc] = e1 - e3;
                    }
                }
            }
        }
    }

    /// Adds `Aᵀ m A` of the products `m` (16 matrices `(c_out, tiles)`) to the 2×2 output
    /// blocks of tile rows `r0..r1`, dropping what falls outside `h × w`.
    #[allow(clippy::too_many_arguments)]
    fn winograd_output(
        &self,
        m: &[f32],
        r0: usize,
        r1: usize,
        tiles_w: usize,
        h: usize,
        w: usize,
        out: &mut [f32],
    ) {
        let n = (r1 - r0) * tiles_w;
        let mut s = [
            vec![0f32; tiles_w],
            vec![0f32; tiles_w],
            vec![0f32; tiles_w],
            vec![0f32; tiles_w],
        ];
        let mut pair = vec![0f32; 2 * tiles_w];
        for o in 0..self.c_out {
            let plane = &mut out[o * h * w..(o + 1) * h * w];
            for tr in r0..r1 {
                let offset = (tr - r0) * tiles_w;
                let row = |i: usize, j: usize| {
                    &m[((4 * i + j) * self.c_out + o) * n + offset..][..tiles_w]
                };
                for a in 0..2 {
                    let y = 2 * tr + a;
                    if y >= h {
                        continue;
                    }
                    // Row a of Aᵀ m, for the four columns j.
                    for (j, s) in s.iter_mut().enumerate() {
                        let (m0, m1, m2, m3) = (row(0, j), row(1, j), row(2, j), row(3, j));
                        if a == 0 {
                            for (k, v) in s.iter_mut().enumerate() {
                                *v = m0[k] + m1[k] + m2[k];
                            }
                        } else {
                            for (k, v) in s.iter_mut().enumerate() {
                                *v = m1[k] - m2[k] - m3[k];
                            }
                        }
                    }
                    // Times A: two outputs per tile.
                    for tc in 0..tiles_w {
                        pair[2 * tc] = s[0][tc] + s[1][tc] + s[2][tc];
                        pair[2 * tc + 1] = s[1][tc] - s[2][tc] - s[3][tc];
                    }
                    for (dst, v) in plane[y * w..(y + 1) * w].iter_mut().zip(&pair) {
                        *dst += v;
                    }
                }
            }
        }
    }
}

/// `G g Gᵀ` of every 3×3 kernel `g` of a `(c_out, c_in, 3, 3)` weight, as 16 matrices
/// `(c_out, c_in)` (computed in f64).
fn winograd_kernel(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![0f32; 16 * c_out * c_in];
    for o in 0..c_out {
        for c in 0..c_in {
            let g = &weight[(o * c_in + c) * 9..][..9];
            // G g: 4×3.
            let mut gg = [[0f64; 3]; 4];
            for (i, row) in gg.iter_mut().enumerate() {
                for (j, value) in row.iter_mut().enumerate() {
                    *value = (0..3).map(|k| G[i][k] * f64::from(g[k * 3 + j])).sum();
                }
            }
            // (G g) Gᵀ: 4×4.
            for i in 0..4 {
                for j in 0..4 {
                    let value: f64 = (0..3).map(|k| gg[i][k] * G[j][k]).sum();
                    u[((4 * i + j) * c_out + o) * c_in + c] = value as f32;
                }
            }
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution (padding k/2) in f64, plus bias.
    fn direct(conv: &CpuConv, x: &Plane) -> Vec<f64> {
        let (k, (sh, sw), pad) = (conv.k, conv.stride, (conv.k / 2) as isize);
        let out_h = (x.height + 2 * (k / 2) - k) / sh + 1;
        let out_w = (x.width + 2 * (k / 2) - k) / sw + 1;
        let mut out = vec![0f64; conv.c_out * out_h * out_w];
        for o in 0..conv.c_out {
            for oy in 0..out_h {
                for ox in 0..out_w {
                    let mut acc = f64::from(conv.bias[o]);
                    for c in 0..conv.c_in {
                        for kh in 0..k {
                            for kw in 0..k {
                                let iy = (oy * sh + kh) as isize - pad;
                                let ix = (ox * sw + kw) as isize - pad;
                                if iy >= 0
                                    && ix >= 0
                                    && (iy as usize) < x.height
                                    && (ix as usize) < x.width
                                {
                                    let v = x.data
                                        [(c * x.height + iy as usize) * x.width + ix as usize];
                                    let wgt = conv.weight[((o * conv.c_in + c) * k + kh) * k + kw];
                                    acc += f64::from(v) * f64::from(wgt);
                                }
                            }
                        }
                    }
                    out[(o * out_h + oy) * out_w + ox] = acc;
                }
            }
        }
        out
    }

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn winograd_and_im2col_match_a_direct_convolution() {
        // Odd and even sizes, so that partial Winograd tiles at the edges are covered.
        for (k, stride, h, w) in [
            (3, (1, 1), 7, 9),
            (3, (1, 1), 8, 6),
            (3, (2, 2), 7, 9),
            (3, (2, 1), 7, 9),
            (1, (2, 2), 8, 5),
            (1, (2, 1), 8, 5),
        ] {
            let (c_in, c_out) = (3, 5);
            let conv = CpuConv::new(
                values(c_out * c_in * k * k, 1),
                values(c_out, 2),
                (c_out, c_in, k),
                stride,
            );
            assert_eq!(conv.winograd.is_some(), k == 3 && stride == (1, 1));
            let x = Plane::new(values(c_in * h * w, 3), h, w);
            let expected = direct(&conv, &x);
            let ours = conv.run_linear(&x, &mut Scratch::default());
            assert_eq!(ours.data.len(), expected.len());
            for (a, b) in ours.data.iter().zip(&expected) {
                assert!(
                    (f64::from(*a) - b).abs() < 1e-5,
                    "k {k} stride {stride:?}: {a} {b}"
                );
            }
        }
    }
}
