//! Int8 copies of the index's rows, for walking the graph: a search visits thousands of
//! nodes scattered through memory, and a 256-long row is 16 cache lines in f32 but 4 as int8
//! codes. Each row is scaled by its largest magnitude (`row ≈ scale × code`); the query stays
//! f32, so a score costs one conversion and one multiply-add per element and errs by about
//! 1e-3 on unit vectors. The graph ranks by these scores and re-scores what it returns from
//! the f32 rows.

use std::sync::OnceLock;

use super::exact::dot_portable_of;
#[cfg(target_arch = "x86_64")]
use super::exact::sum_lanes;

/// A kernel: the dot product of an f32 query with an int8 code.
type Kernel = fn(&[f32], &[i8]) -> f32;

/// The fastest kernel this CPU runs, chosen once.
fn kernel() -> Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return dot_avx512_checked;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return dot_avx2_checked;
            }
        }
        dot_portable
    })
}

/// Int8 codes of `dim`-long rows, one per graph node, with a scale each.
#[derive(Debug, Clone)]
pub struct Codes {
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl Codes {
    /// No codes yet, for `dim`-long rows.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            codes: Vec::new(),
            scales: Vec::new(),
        }
    }

    /// Makes room for `additional` more rows.
    pub fn reserve(&mut self, additional: usize) {
        self.codes.reserve(additional * self.dim);
        self.scales.reserve(additional);
    }

    /// Appends the code of `row` (which must be `dim` long).
    pub fn push(&mut self, row: &[f32]) {
        assert_eq!(row.len(), self.dim, "row length");
        let largest = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = largest / 127.0;
        let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        self.codes.extend(
            row.iter()
                .map(|x| (x * inverse).round().clamp(-127.0, 127.0) as i8),
        );
        self.scales.push(scale);
    }

    /// Zeroes row `node`'s code, so that it scores 0 against any query.
    pub fn erase(&mut self, node: u32) {
        let at = node as usize * self.dim;
        self.codes[at..at + self.dim].fill(0);
        self.scales[node as usize] = 0.0;
    }

    fn code(&self, node: u32) -> &[i8] {
        let at = node as usize * self.dim;
        &self.codes[at..at + self.dim]
    }

    /// Approximate dot product of `query` with row `node`.
    #[inline]
    pub fn score(&self, query: &[f32], node: u32) -> f32 {
        kernel()(query, self.code(node)) * self.scales[node as usize]
    }

    /// Asks the CPU to start loading row `node`'s code into cache.
    #[inline]
    pub fn prefetch(&self, node: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            for line in self.code(node).chunks(64) {
                // SAFETY: prefetching is a hint that never faults; SSE is part of x86_64.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr()) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = node;
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.codes.capacity() + self.scales.capacity() * 4
    }
}

/// Dot product of `query` and `code`, eight lanes so that the compiler vectorises it.
fn dot_portable(query: &[f32], code: &[i8]) -> f32 {
    dot_portable_of(query, code)
}

#[cfg(target_arch = "x86_64")]
fn dot_avx512_checked(query: &[f32], code: &[i8]) -> f32 {
    assert_eq!(query.len(), code.len(), "dot product of unequal lengths");
    // SAFETY: handed out by `kernel` only on a CPU with AVX-512F; the lengths are equal.
    unsafe { dot_avx512(query, code) }
}

/// 16 codes a step: sign-extended to i32, converted, multiplied into two accumulators.
///
/// # Safety
/// The CPU must support AVX-512F, and `query` and `code` must be equally long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(query: &[f32], code: &[i8]) -> f32 {
    use std::arch::x86_64::*;
    let n = query.len();
    let (q, c) = (query.as_ptr(), code.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 2];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i + 16 * j + 16 <= n`, and both slices hold `n` values.
            let (bytes, values) = unsafe {
                (
                    _mm_loadu_si128(c.add(i + 16 * j).cast()),
                    _mm512_loadu_ps(q.add(i + 16 * j)),
                )
            };
            let codes = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
            *acc = _mm512_fmadd_ps(values, codes, *acc);
        }
        i += 32;
    }
    let mut total = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
    while i < n {
        // SAFETY: `i < n`, and both slices hold `n` values.
        total += unsafe { *q.add(i) * f32::from(*c.add(i)) };
        i += 1;
    }
    total
}

#[cfg(target_arch = "x86_64")]
fn dot_avx2_checked(query: &[f32], code: &[i8]) -> f32 {
    assert_eq!(query.len(), code.len(), "dot product of unequal lengths");
    // SAFETY: handed out by `kernel` only on a CPU with AVX2 and FMA; the lengths are equal.
    unsafe { dot_avx2(query, code) }
}

/// 8 codes a step into each of two accumulators.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `query` and `code` must be equally long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(query: &[f32], code: &[i8]) -> f32 {
    use std::arch::x86_64::*;
    let n = query.len();
    let (q, c) = (query.as_ptr(), code.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i + 8 * j + 8 <= n`, and both slices hold `n` values.
            let (bytes, values) = unsafe {
                (
                    _mm_loadl_epi64(c.add(i + 8 * j).cast()),
                    _mm256_loadu_ps(q.add(i + 8 * j)),
                )
            };
            let codes = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
            *acc = _mm256_fmadd_ps(values, codes, *acc);
        }
        i += 16;
    }
    // SAFETY: this function is compiled for AVX2, which `sum_lanes` needs.
    let mut total = unsafe { sum_lanes(_mm256_add_ps(acc[0], acc[1])) };
    while i < n {
        // SAFETY: `i < n`, and both slices hold `n` values.
        total += unsafe { *q.add(i) * f32::from(*c.add(i)) };
        i += 1;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn unit(mut v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    #[test]
    fn every_kernel_agrees_with_a_scalar_reference_at_any_length() {
        for n in [0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 255, 256, 257] {
            let query = pseudo_random(n, 1 + n as u64);
            let code: Vec<i8> = pseudo_random(n, 500 + n as u64)
                .iter()
                .map(|x| (x * 254.0) as i8)
                .collect();
            let want: f64 = query
                .iter()
                .zip(&code)
                .map(|(q, c)| f64::from(*q) * f64::from(*c))
                .sum();
            let tolerance = 1e-4 * (n as f64 + 1.0);
            assert!((f64::from(dot_portable(&query, &code)) - want).abs() < tolerance);
            assert!((f64::from(kernel()(&query, &code)) - want).abs() < tolerance);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    assert!(
                        (f64::from(dot_avx512_checked(&query, &code)) - want).abs() < tolerance
                    );
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    assert!((f64::from(dot_avx2_checked(&query, &code)) - want).abs() < tolerance);
                }
            }
        }
    }

    #[test]
    fn scores_of_unit_rows_are_within_a_few_thousandths_of_the_exact_dot_product() {
        let dim = 256;
        let mut codes = Codes::new(dim);
        let rows: Vec<Vec<f32>> = (0..200).map(|i| unit(pseudo_random(dim, 10 + i))).collect();
        rows.iter().for_each(|r| codes.push(r));
        codes.push(&vec![0.0; dim]);
        let query = unit(pseudo_random(dim, 7));
        for (node, row) in rows.iter().enumerate() {
            let exact: f32 = row.iter().zip(&query).map(|(a, b)| a * b).sum();
            let approx = codes.score(&query, node as u32);
            assert!((approx - exact).abs() < 3e-3, "{approx} vs {exact}");
        }
        assert_eq!(codes.score(&query, rows.len() as u32), 0.0);
    }
}
