//! The in-memory search index over every voiceprint: exact cosine search (embeddings are unit
//! norm, so a dot product), rebuilt from the store at start and updated with every change.

use std::collections::HashMap;

/// One voiceprint as the index holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The voiceprint's id.
    pub voiceprint_id: String,
    /// The artist it belongs to.
    pub artist_id: String,
    /// Cosine similarity with the query.
    pub score: f32,
}

/// Voiceprint embeddings in one contiguous matrix, searched exhaustively.
#[derive(Debug, Clone)]
pub struct SearchIndex {
    dim: usize,
    ids: Vec<(String, String)>,
    rows: Vec<f32>,
    position: HashMap<String, usize>,
}

impl SearchIndex {
    /// An empty index for `dim`-long embeddings.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            ids: Vec::new(),
            rows: Vec::new(),
            position: HashMap::new(),
        }
    }

    /// Number of voiceprints.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index holds no voiceprint.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds (or replaces) a voiceprint. `embedding` must be `dim` long and unit norm.
    pub fn insert(&mut self, voiceprint_id: &str, artist_id: &str, embedding: &[f32]) {
        assert_eq!(embedding.len(), self.dim, "embedding length");
        self.remove(voiceprint_id);
        self.position
            .insert(voiceprint_id.to_string(), self.ids.len());
        self.ids
            .push((voiceprint_id.to_string(), artist_id.to_string()));
        self.rows.extend_from_slice(embedding);
    }

    /// Removes a voiceprint, zeroing the row its embedding vacates; returns whether it was
    /// there.
    pub fn remove(&mut self, voiceprint_id: &str) -> bool {
        let Some(at) = self.position.remove(voiceprint_id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        self.ids.swap_remove(at);
        if at != last {
            let (head, tail) = self.rows.split_at_mut(last * self.dim);
            head[at * self.dim..(at + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.position.insert(self.ids[at].0.clone(), at);
        }
        self.rows[last * self.dim..].fill(0.0);
        self.rows.truncate(last * self.dim);
        true
    }

    /// Removes every voiceprint of `artist_id`; returns how many.
    pub fn remove_artist(&mut self, artist_id: &str) -> usize {
        let doomed: Vec<String> = self
            .ids
            .iter()
            .filter(|(_, a)| a == artist_id)
            .map(|(v, _)| v.clone())
            .collect();
        for id in &doomed {
            self.remove(id);
        }
        doomed.len()
    }

    /// Every voiceprint's id and artist, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.ids.iter().map(|(v, a)| (v.as_str(), a.as_str()))
    }

    /// The embedding of a voiceprint.
    pub fn embedding(&self, voiceprint_id: &str) -> Option<&[f32]> {
        let at = *self.position.get(voiceprint_id)?;
        Some(&self.rows[at * self.dim..(at + 1) * self.dim])
    }

    /// The `k` voiceprints most similar to `query`, best first.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let mut scored: Vec<(f32, usize)> = self
            .rows
            .chunks_exact(self.dim)
            .map(|row| dot(row, query))
            .enumerate()
            .map(|(i, s)| (s, i))
            .collect();
        let k = k.min(scored.len());
        if k == 0 {
            return Vec::new();
        }
        if k < scored.len() {
            scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            scored.truncate(k);
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .map(|(score, i)| Hit {
                voiceprint_id: self.ids[i].0.clone(),
                artist_id: self.ids[i].1.clone(),
                score,
            })
            .collect()
    }

    /// The best score of each artist among the `k` voiceprints most similar to `query`, best
    /// artist first: an artist scores with its closest voiceprint.
    pub fn top_artists(&self, query: &[f32], k: usize) -> Vec<(String, f32)> {
        let mut best: Vec<(String, f32)> = Vec::new();
        for hit in self.top_k(query, k) {
            if !best.iter().any(|(artist, _)| *artist == hit.artist_id) {
                best.push((hit.artist_id, hit.score));
            }
        }
        best
    }
}

/// Dot product, accumulated in eight lanes so the compiler vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (x, y) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn finds_nearest_and_groups_by_artist() {
        let mut index = SearchIndex::new(3);
        index.insert("v1", "alice", &unit(&[1.0, 0.0, 0.0]));
        index.insert("v2", "alice", &unit(&[0.9, 0.1, 0.0]));
        index.insert("v3", "bob", &unit(&[0.0, 1.0, 0.0]));
        let hits = index.top_k(&unit(&[1.0, 0.05, 0.0]), 2);
        assert_eq!(hits.len(), 2);
        assert!(hits.iter().all(|h| h.artist_id == "alice"));
        assert!(hits[0].score >= hits[1].score);
        let artists = index.top_artists(&unit(&[0.2, 1.0, 0.0]), 3);
        assert_eq!(artists[0].0, "bob");
        assert_eq!(artists.len(), 2);
    }

    #[test]
    fn removal_keeps_the_rest_searchable() {
        let mut index = SearchIndex::new(2);
        index.insert("a", "x", &[1.0, 0.0]);
        index.insert("b", "y", &[0.0, 1.0]);
        index.insert("c", "y", &unit(&[1.0, 1.0]));
        assert!(index.remove("a"));
        assert!(!index.remove("a"));
        assert_eq!(index.len(), 2);
        assert_eq!(index.top_k(&[1.0, 0.0], 1)[0].voiceprint_id, "c");
        assert_eq!(index.remove_artist("y"), 2);
        assert!(index.is_empty());
        assert!(index.top_k(&[1.0, 0.0], 5).is_empty());
    }

    #[test]
    fn dot_handles_any_length() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let expected: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), expected);
    }
}
