//! Adaptive symmetric score normalisation (AS-Norm).
//!
//! Each side of a trial (enrolment and test embedding) is scored against a cohort of
//! impostor embeddings; the mean `μ` and population standard deviation `σ` of its `top_n`
//! highest cohort scores describe how that side scores against strangers. The raw score `s` is
//! normalised by both: `½((s − μe)/σe + (s − μt)/σt)`. Embeddings are expected to have unit
//! norm (as `vocalguard embed` writes them), so cosine similarity is the dot product; it is
//! computed in f64. A cohort is read from a `vocalguard embed` file ([`AsNorm::load`]), which
//! must hold embeddings of the loaded model.

use std::path::Path;

use serde::Deserialize;

use crate::encoder::ModelId;

/// Floor on the cohort standard deviation, so that a degenerate cohort cannot divide by zero.
const MIN_STD: f64 = 1e-6;

/// Why a cohort could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AsNormError {
    #[error("the cohort is empty")]
    EmptyCohort,
    #[error("cohort embeddings have no dimensions")]
    EmptyEmbedding,
    #[error("cohort embedding {index} has {got} dimensions, expected {expected}")]
    DimMismatch {
        index: usize,
        expected: usize,
        got: usize,
    },
    #[error("top_n must be at least 1")]
    ZeroTopN,
    #[error("{origin}:{line}: not an embedding line: {source}")]
    Json {
        origin: String,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{origin}:{line}: {reason}")]
    Inconsistent {
        origin: String,
        line: usize,
        reason: String,
    },
    #[error("{origin}: no embeddings")]
    NoEmbeddings { origin: String },
    #[error("reading the AS-Norm cohort {origin}: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    #[error("the AS-Norm cohort {origin} holds embeddings of model '{model}' ({model_sha256}), but {loaded} is loaded")]
    OtherModel {
        origin: String,
        model: String,
        model_sha256: String,
        loaded: ModelId,
    },
}

/// A cohort of unit-norm embeddings and the top-N size.
#[derive(Debug, Clone)]
pub struct AsNorm {
    /// Row-major, `len() × dim`.
    cohort: Vec<f32>,
    dim: usize,
    top_n: usize,
}

impl AsNorm {
    /// Errors if the cohort is empty, its embeddings are empty, dims differ, or `top_n == 0`;
    /// a `top_n` larger than the cohort is clamped to the cohort size.
    pub fn new(cohort: Vec<Vec<f32>>, top_n: usize) -> Result<Self, AsNormError> {
        let dim = cohort.first().ok_or(AsNormError::EmptyCohort)?.len();
        if dim == 0 {
            return Err(AsNormError::EmptyEmbedding);
        }
        if let Some((index, row)) = cohort.iter().enumerate().find(|(_, r)| r.len() != dim) {
            return Err(AsNormError::DimMismatch {
                index,
                expected: dim,
                got: row.len(),
            });
        }
        if top_n == 0 {
            return Err(AsNormError::ZeroTopN);
        }
        Ok(Self {
            top_n: top_n.min(cohort.len()),
            cohort: cohort.concat(),
            dim,
        })
    }

    /// Reads the cohort file at `path` (see [`read_cohort`]), which must hold embeddings of
    /// `model`, and makes the normaliser over its `top_n` best scores.
    pub fn load(path: &Path, model: &ModelId, top_n: usize) -> Result<Self, AsNormError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AsNormError::Read {
            origin: origin.clone(),
            source,
        })?;
        let (cohort, name, sha) = read_cohort(&text, &origin)?;
        if sha != model.sha256 {
            return Err(AsNormError::OtherModel {
                origin,
                model: name,
                model_sha256: sha,
                loaded: model.clone(),
            });
        }
        Self::new(cohort, top_n)
    }

    /// Mean and population standard deviation (floored at 1e-6) of the top-N cosine scores of
    /// `embedding` against the cohort. Panics if its dimension differs from the cohort's.
    pub fn stats(&self, embedding: &[f32]) -> (f64, f64) {
        assert_eq!(
            embedding.len(),
            self.dim,
            "embedding dimension differs from the cohort's"
        );
        let mut scores: Vec<f64> = self
            .cohort
            .chunks_exact(self.dim)
            .map(|row| {
                row.iter()
                    .zip(embedding)
                    .map(|(&x, &y)| f64::from(x) * f64::from(y))
                    .sum()
            })
            .collect();
        let n = self.top_n;
        let descending = |a: &f64, b: &f64| b.total_cmp(a);
        if n < scores.len() {
            scores.select_nth_unstable_by(n - 1, descending);
        }
        let top = &mut scores[..n];
        // A fixed order makes the sums independent of how the selection arranged them.
        top.sort_unstable_by(descending);
        let mean = top.iter().sum::<f64>() / n as f64;
        let var = top.iter().map(|&s| (s - mean) * (s - mean)).sum::<f64>() / n as f64;
        (mean, var.sqrt().max(MIN_STD))
    }

    /// AS-Norm of a raw score from the two sides' `(mean, std)`:
    /// `0.5 * ((s − μe)/σe + (s − μt)/σt)`.
    pub fn normalize(raw: f64, enroll: (f64, f64), test: (f64, f64)) -> f64 {
        0.5 * ((raw - enroll.0) / enroll.1 + (raw - test.0) / test.1)
    }

    /// The stats of both sides and the normalised score.
    pub fn score(&self, enroll: &[f32], test: &[f32], raw: f64) -> f64 {
        Self::normalize(raw, self.stats(enroll), self.stats(test))
    }

    /// Number of cohort embeddings.
    pub fn len(&self) -> usize {
        self.cohort.len() / self.dim
    }

    /// Always false: a cohort cannot be empty.
    pub fn is_empty(&self) -> bool {
        self.cohort.is_empty()
    }

    /// The number of top cohort scores used (after clamping to the cohort size).
    pub fn top_n(&self) -> usize {
        self.top_n
    }
}

/// The fields of a `vocalguard embed` line that a cohort needs; others are ignored.
#[derive(Deserialize)]
struct CohortLine {
    model: String,
    model_sha256: String,
    dim: usize,
    embedding: Vec<f32>,
}

/// Reads a cohort from JSON lines with an `"embedding"` array each (the output of
/// `vocalguard embed`) and returns the embeddings plus `(model, model_sha256)` of the first
/// line. Blank lines are skipped. Every line must have the model, model hash and `dim` of the
/// first, and `dim` embedding values; errors name `origin` and the line (1-based).
pub fn read_cohort(
    text: &str,
    origin: &str,
) -> Result<(Vec<Vec<f32>>, String, String), AsNormError> {
    let mut embeddings = Vec::new();
    let mut first: Option<CohortLine> = None;
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line = i + 1;
        let entry: CohortLine = serde_json::from_str(raw).map_err(|source| AsNormError::Json {
            origin: origin.to_owned(),
            line,
            source,
        })?;
        let inconsistent = |reason: String| AsNormError::Inconsistent {
            origin: origin.to_owned(),
            line,
            reason,
        };
        if entry.embedding.len() != entry.dim {
            return Err(inconsistent(format!(
                "dim is {} but the embedding has {} values",
                entry.dim,
                entry.embedding.len()
            )));
        }
        match &first {
            Some(f) if (&f.model, &f.model_sha256) != (&entry.model, &entry.model_sha256) => {
                return Err(inconsistent(format!(
                    "model {} ({}) differs from the first line's {} ({})",
                    entry.model, entry.model_sha256, f.model, f.model_sha256
                )));
            }
            Some(f) if f.dim != entry.dim => {
                return Err(inconsistent(format!(
                    "dim {} differs from the first line's {}",
                    entry.dim, f.dim
                )));
            }
            Some(_) => embeddings.push(entry.embedding),
            None => {
                embeddings.push(entry.embedding.clone());
                first = Some(entry);
            }
        }
    }
    let first = first.ok_or_else(|| AsNormError::NoEmbeddings {
        origin: origin.to_owned(),
    })?;
    Ok((embeddings, first.model, first.model_sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors at angles `k·step` in the plane, padded with zeros to `dim`.
    fn fan(count: usize, step: f64, dim: usize) -> Vec<Vec<f32>> {
        (0..count)
            .map(|k| {
                let a = k as f64 * step;
                let mut v = vec![0.0; dim];
                v[0] = a.cos() as f32;
                v[1] = a.sin() as f32;
                v
            })
            .collect()
    }

    #[test]
    fn normalize_algebra() {
        assert_eq!(
            AsNorm::normalize(0.5, (0.1, 0.2), (0.3, 0.1)),
            0.5 * (2.0 + 2.0)
        );
        // Symmetric in the two sides.
        let (e, t) = ((0.12, 0.05), (0.2, 0.08));
        assert_eq!(AsNorm::normalize(0.7, e, t), AsNorm::normalize(0.7, t, e));
        // Identical sides reduce to a plain z-norm.
        let z = AsNorm::normalize(0.9, (0.4, 0.25), (0.4, 0.25));
        assert!((z - 2.0).abs() < 1e-15);
        // A raw score at both means normalises to 0.
        assert_eq!(AsNorm::normalize(0.3, (0.3, 0.1), (0.3, 0.7)), 0.0);
    }

    #[test]
    fn stats_use_the_top_n_scores() {
        // Cohort at 0°, 60°, 180°, 270°: cosines with e1 are 1, 0.5, −1, 0.
        let mut cohort = fan(4, std::f64::consts::FRAC_PI_2, 3);
        cohort[1] = vec![0.5, 0.75f32.sqrt(), 0.0];
        let e1 = [1.0f32, 0.0, 0.0];
        let asn = AsNorm::new(cohort.clone(), 2).unwrap();
        let (m, s) = asn.stats(&e1);
        assert!(
            (m - 0.75).abs() < 1e-7 && (s - 0.25).abs() < 1e-7,
            "{m} {s}"
        );
        // top_n larger than the cohort is clamped: all four scores.
        let all = AsNorm::new(cohort, 10).unwrap();
        assert_eq!((all.top_n(), all.len(), all.is_empty()), (4, 4, false));
        let (m, s) = all.stats(&e1);
        let want_sd = ((0.875f64.powi(2) + 0.375f64.powi(2) + 0.125f64.powi(2) + 1.125f64.powi(2))
            / 4.0)
            .sqrt();
        assert!(
            (m - 0.125).abs() < 1e-7 && (s - want_sd).abs() < 1e-7,
            "{m} {s}"
        );
        // A single identical score has zero spread: floored.
        let one = AsNorm::new(vec![vec![1.0, 0.0, 0.0]], 1).unwrap();
        assert_eq!(one.stats(&e1), (1.0, MIN_STD));
    }

    #[test]
    fn score_combines_both_sides() {
        let asn = AsNorm::new(fan(36, 0.17, 4), 5).unwrap();
        let (e, t) = ([0.6f32, 0.8, 0.0, 0.0], [0.0f32, 1.0, 0.0, 0.0]);
        let raw = 0.8;
        assert_eq!(
            asn.score(&e, &t, raw),
            AsNorm::normalize(raw, asn.stats(&e), asn.stats(&t))
        );
    }

    #[test]
    fn new_errors() {
        assert!(matches!(
            AsNorm::new(vec![], 5),
            Err(AsNormError::EmptyCohort)
        ));
        assert!(matches!(
            AsNorm::new(vec![vec![]], 5),
            Err(AsNormError::EmptyEmbedding)
        ));
        let e = AsNorm::new(vec![vec![1.0, 0.0], vec![1.0, 0.0, 0.0]], 5).unwrap_err();
        assert!(matches!(
            e,
            AsNormError::DimMismatch {
                index: 1,
                expected: 2,
                got: 3
            }
        ));
        assert!(matches!(
            AsNorm::new(vec![vec![1.0]], 0),
            Err(AsNormError::ZeroTopN)
        ));
    }

    fn line(model: &str, sha: &str, embedding: &[f32]) -> String {
        serde_json::json!({
            "file": "a.wav", "model": model, "model_sha256": sha, "dim": embedding.len(),
            "duration_s": 1.0, "voiced_s": 0.9, "embedding": embedding,
        })
        .to_string()
    }

    #[test]
    fn read_cohort_reads_embed_output() {
        let text = format!(
            "{}\n\n{}\n",
            line("m", "abc", &[0.6, 0.8]),
            line("m", "abc", &[1.0, 0.0])
        );
        let (rows, model, sha) = read_cohort(&text, "cohort.jsonl").unwrap();
        assert_eq!(rows, vec![vec![0.6, 0.8], vec![1.0, 0.0]]);
        assert_eq!((model.as_str(), sha.as_str()), ("m", "abc"));
    }

    #[test]
    fn read_cohort_errors_name_the_line() {
        let a = line("m", "abc", &[0.6, 0.8]);
        let cases = [
            (
                format!("{a}\n{}", line("other", "abc", &[1.0, 0.0])),
                "c.jsonl:2: model other",
            ),
            (
                format!("{a}\n{}", line("m", "def", &[1.0, 0.0])),
                "c.jsonl:2: model m (def)",
            ),
            (
                format!("{a}\n{}", line("m", "abc", &[1.0])),
                "c.jsonl:2: dim 1 differs",
            ),
            (
                format!("{a}\n\n{{\"model\": 1}}"),
                "c.jsonl:3: not an embedding line",
            ),
            (a.replace("\"dim\":2", "\"dim\":3"), "c.jsonl:1: dim is 3"),
            (String::new(), "c.jsonl: no embeddings"),
        ];
        for (text, want) in cases {
            let e = read_cohort(&text, "c.jsonl").unwrap_err().to_string();
            assert!(e.starts_with(want), "{e:?} should start with {want:?}");
        }
    }
}
