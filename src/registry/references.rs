//! Several reference recordings of one voice enrolled as one voiceprint: their embeddings are
//! pooled (the mean of the unit vectors weighted by voiced audio, renormalised) and the set's
//! own agreement is the lowest score of one reference against the pool of the others.
//!
//! Pooling rather than storing one voiceprint per reference is measured: on librispeech-mini
//! split B and FSDD with both built-in models, the pool matched as many or more target uploads
//! and flagged fewer never-enrolled ones than scoring against the closest reference
//! (`cargo run --release --example screening_thresholds`; README, "Thresholds").

use crate::embed::{cosine, Embedding};

/// Most reference recordings one enrollment takes.
pub const MAX_REFERENCES: usize = 16;

/// The references pooled into one embedding, with summed voiced and total durations; a single
/// reference is its own pool, unchanged. `None` for an empty set.
pub fn pool_references(references: &[Embedding]) -> Option<Embedding> {
    let first = references.first()?;
    if references.len() == 1 {
        return Some(first.clone());
    }
    let vector = weighted_unit_mean(references.iter(), first.vector.len());
    Some(Embedding {
        vector,
        duration_s: references.iter().map(|r| r.duration_s).sum(),
        voiced_s: references.iter().map(|r| r.voiced_s).sum(),
        n_partials: references.iter().map(|r| r.n_partials).sum(),
    })
}

/// The lowest cosine score of one reference against the pool of all the others, and which
/// reference (from 0) it is; `None` for fewer than two references.
pub fn weakest_reference(references: &[Embedding]) -> Option<(usize, f32)> {
    if references.len() < 2 {
        return None;
    }
    let dim = references[0].vector.len();
    (0..references.len())
        .map(|i| {
            let others = references
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, r)| r);
            (
                i,
                cosine(&references[i].vector, &weighted_unit_mean(others, dim)),
            )
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// Mean of the vectors weighted by voiced seconds (equal weights when none has any),
/// renormalised to unit length.
fn weighted_unit_mean<'a>(
    references: impl Iterator<Item = &'a Embedding> + Clone,
    dim: usize,
) -> Vec<f32> {
    let any_voice = references.clone().any(|r| r.voiced_s > 0.0);
    let mut sum = vec![0f64; dim];
    for r in references {
        let weight = if any_voice { r.voiced_s } else { 1.0 };
        for (s, &v) in sum.iter_mut().zip(&r.vector) {
            *s += weight * f64::from(v);
        }
    }
    let norm = sum.iter().map(|s| s * s).sum::<f64>().sqrt();
    sum.iter()
        .map(|&s| if norm > 0.0 { (s / norm) as f32 } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(vector: Vec<f32>, voiced_s: f64) -> Embedding {
        Embedding {
            vector,
            duration_s: voiced_s + 1.0,
            voiced_s,
            n_partials: 1,
        }
    }

    #[test]
    fn the_pool_weights_by_voice_and_sums_the_durations() {
        let pooled = pool_references(&[
            reference(vec![1.0, 0.0], 3.0),
            reference(vec![0.0, 1.0], 1.0),
        ])
        .unwrap();
        let norm = (9.0f32 + 1.0).sqrt();
        assert!(
            (pooled.vector[0] - 3.0 / norm).abs() < 1e-6,
            "{:?}",
            pooled.vector
        );
        assert!(
            (pooled.vector[1] - 1.0 / norm).abs() < 1e-6,
            "{:?}",
            pooled.vector
        );
        assert_eq!(pooled.voiced_s, 4.0);
        assert_eq!(pooled.duration_s, 6.0);
        assert_eq!(pooled.n_partials, 2);
        assert!(pool_references(&[]).is_none());
    }

    #[test]
    fn one_reference_pools_to_itself() {
        let only = reference(vec![0.6, 0.8], 5.0);
        assert_eq!(
            pool_references(std::slice::from_ref(&only)).unwrap().vector,
            only.vector
        );
        assert_eq!(weakest_reference(&[only]), None);
    }

    #[test]
    fn the_odd_one_out_is_the_weakest() {
        let set = [
            reference(vec![1.0, 0.0, 0.0], 2.0),
            reference(vec![0.0, 0.0, 1.0], 2.0),
            reference(vec![0.96, 0.28, 0.0], 2.0),
        ];
        let (index, score) = weakest_reference(&set).unwrap();
        assert_eq!(index, 1);
        assert!(score.abs() < 1e-6, "{score}");
    }
}
