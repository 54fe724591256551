//! Exact search: dot products of a query with every row of a contiguous matrix, with an AVX2
//! and FMA kernel chosen at run time when the CPU has them, and a portable one otherwise.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;

/// A dot product kernel.
type Kernel = fn(&[f32], &[f32]) -> f32;

/// The fastest dot product this CPU runs, chosen once.
fn kernel() -> Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return dot_avx2_checked;
        }
        dot_portable
    })
}

/// Dot product of two equally long vectors, with the fastest kernel this CPU runs.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    kernel()(a, b)
}

/// Dot product accumulated in eight lanes, so that the compiler vectorises it on any target.
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_portable_of(a, b)
}

/// Dot product of f32s with any elements that widen to f32 (the int8 codes among them), in
/// eight lanes.
pub(super) fn dot_portable_of<T: Copy + Into<f32>>(a: &[f32], b: &[T]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot product of unequal lengths");
    let mut lanes = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (x, y) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i].into();
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * (*y).into())
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// The sum of an AVX register's eight lanes.
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(super) unsafe fn sum_lanes(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
    _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)))
}

/// The AVX2 kernel behind the length check; only handed out when the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
fn dot_avx2_checked(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot product of unequal lengths");
    // SAFETY: `kernel` returns this function only after detecting AVX2 and FMA, and the
    // lengths are equal.
    unsafe { dot_avx2(a, b) }
}

/// Dot product with four 8-lane FMA accumulators (32 floats a step), then 8 at a time, then
/// the tail.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `a` and `b` must be equally long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i + 8 * j + 8 <= n`, and both slices hold `n` floats.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, and both slices hold `n` floats.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    // SAFETY: this function is compiled for AVX2, which includes the AVX `sum_lanes` needs.
    let mut total = unsafe { sum_lanes(sum) };
    while i < n {
        // SAFETY: `i < n`, and both slices hold `n` floats.
        total += unsafe { *pa.add(i) * *pb.add(i) };
        i += 1;
    }
    total
}

/// A score with a total order, for heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored(pub f32, pub u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// The `k` rows (of `dim` floats each) most similar to `query` among those `keep` accepts,
/// best first, as (score, row).
pub fn top_k(
    rows: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    keep: impl Fn(u32) -> bool,
) -> Vec<Scored> {
    if k == 0 {
        return Vec::new();
    }
    let dot = kernel();
    let mut best: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(k + 1);
    let mut floor = f32::NEG_INFINITY;
    for (i, row) in rows.chunks_exact(dim).enumerate() {
        let score = dot(row, query);
        if (best.len() < k || score > floor) && keep(i as u32) {
            best.push(Reverse(Scored(score, i as u32)));
            if best.len() > k {
                best.pop();
            }
            if best.len() == k {
                floor = best.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
            }
        }
    }
    let mut out: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

/// Visits the score of every row (of `dim` floats) with `query`, in row order.
pub fn scan(rows: &[f32], dim: usize, query: &[f32], mut visit: impl FnMut(u32, f32)) {
    let dot = kernel();
    for (i, row) in rows.chunks_exact(dim).enumerate() {
        visit(i as u32, dot(row, query));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

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

    #[test]
    fn every_kernel_agrees_with_a_scalar_reference_at_any_length() {
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 192, 255, 256, 257, 1000] {
            let a = pseudo_random(n, 1 + n as u64);
            let b = pseudo_random(n, 1000 + n as u64);
            let want = reference(&a, &b);
            let tolerance = 1e-5 * (n as f64 + 1.0);
            assert!(
                (f64::from(dot_portable(&a, &b)) - want).abs() < tolerance,
                "n={n}"
            );
            assert!((f64::from(dot(&a, &b)) - want).abs() < tolerance, "n={n}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                assert!((f64::from(dot_avx2_checked(&a, &b)) - want).abs() < tolerance);
            }
        }
    }

    #[test]
    fn top_k_matches_a_full_sort_and_honours_the_filter() {
        let dim = 16;
        let rows = pseudo_random(dim * 500, 7);
        let query = pseudo_random(dim, 8);
        let mut all: Vec<(f64, u32)> = rows
            .chunks_exact(dim)
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(i, r)| (reference(r, &query), i as u32))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let got = top_k(&rows, dim, &query, 10, |i| i % 3 != 0);
        let want: Vec<u32> = all[..10].iter().map(|(_, i)| *i).collect();
        assert_eq!(got.iter().map(|s| s.1).collect::<Vec<_>>(), want);
        assert_eq!(top_k(&rows, dim, &query, 1000, |_| true).len(), 500);
        assert!(top_k(&rows, dim, &query, 0, |_| true).is_empty());
    }
}
