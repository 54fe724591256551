//! The in-memory search index over every voiceprint. Embeddings are unit norm, so cosine
//! similarity is a dot product. Small registries are searched exhaustively ([`exact`], an
//! AVX2 kernel where the CPU has one); above [`SearchConfig::approximate_above`] voiceprints,
//! screening searches an [`hnsw`] graph instead, built in the background (see
//! [`Registry::maintain_index`](super::Registry::maintain_index)) and updated with every
//! change once built. Enrollment checks always scan exactly.

mod codes;
pub mod exact;
pub mod hnsw;
mod rings;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use exact::Scored;
use hnsw::{Hnsw, Params, Vectors};
use rings::Rings;

/// Most siblings scored exactly for each artist in a graph search's top `k`: all of an
/// artist's voiceprints in the usual case of a handful, and a bound on the cost for one that
/// has many (whose nearest ones the graph search finds like any others).
const SIBLINGS_SCORED: usize = 32;

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

/// How the registry is searched (`[search]` in the server configuration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Above this many voiceprints, screening searches the approximate HNSW graph; at or
    /// below it, every voiceprint is scanned.
    pub approximate_above: usize,
    /// Graph links per node (twice that in the bottom layer): more raises recall, memory and
    /// build time.
    pub m: usize,
    /// Width of the search that links a new voiceprint: more raises recall and build time.
    pub ef_construction: usize,
    /// Width of a screening search (at least the number of voiceprints asked for): more
    /// raises recall and query time.
    pub ef_search: usize,
    /// The graph is rebuilt once deleted voiceprints make up more than this share of it.
    pub rebuild_deleted_fraction: f64,
    /// Threads building the graph (0: one per core).
    pub build_threads: usize,
}

impl Default for SearchConfig {
    /// See README, "Search index", for the measurements behind these.
    fn default() -> Self {
        Self {
            approximate_above: 50_000,
            m: 32,
            ef_construction: 200,
            ef_search: 1024,
            rebuild_deleted_fraction: 0.25,
            build_threads: 0,
        }
    }
}

impl SearchConfig {
    /// Checks every value; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=128).contains(&self.m) {
            return Err(format!("search.m must lie in 2..=128, got {}", self.m));
        }
        if !(1..=4096).contains(&self.ef_construction) || !(1..=4096).contains(&self.ef_search) {
            return Err(format!(
                "search.ef_construction and search.ef_search must lie in 1..=4096, got {} and {}",
                self.ef_construction, self.ef_search
            ));
        }
        if !(self.rebuild_deleted_fraction > 0.0 && self.rebuild_deleted_fraction < 1.0) {
            return Err(format!(
                "search.rebuild_deleted_fraction must lie strictly between 0 and 1, got {}",
                self.rebuild_deleted_fraction
            ));
        }
        Ok(())
    }

    /// Build threads after resolving 0 to the number of cores.
    pub fn threads(&self) -> usize {
        match self.build_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    fn params(&self) -> Params {
        Params {
            m: self.m,
            ef_construction: self.ef_construction,
            seed: 0x766f_6361_6c67_7264,
        }
    }
}

/// Artist ids, each stored once and referred to by a number, with how many voiceprints use
/// it.
#[derive(Debug, Clone, Default)]
struct Artists {
    names: Vec<Box<str>>,
    numbers: HashMap<Box<str>, u32>,
    uses: Vec<u32>,
    free: Vec<u32>,
}

impl Artists {
    fn acquire(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.numbers.get(name) {
            self.uses[n as usize] += 1;
            return n;
        }
        let n = match self.free.pop() {
            Some(n) => {
                self.names[n as usize] = name.into();
                self.uses[n as usize] = 1;
                n
            }
            None => {
                self.names.push(name.into());
                self.uses.push(1);
                (self.names.len() - 1) as u32
            }
        };
        self.numbers.insert(name.into(), n);
        n
    }

    fn release(&mut self, n: u32) {
        let uses = &mut self.uses[n as usize];
        *uses -= 1;
        if *uses == 0 {
            let name = std::mem::take(&mut self.names[n as usize]);
            self.numbers.remove(&name);
            self.free.push(n);
        }
    }

    fn find(&self, name: &str) -> Option<u32> {
        self.numbers.get(name).copied()
    }

    /// Artists with at least one voiceprint.
    fn count(&self) -> usize {
        self.numbers.len()
    }

    fn name(&self, n: u32) -> &str {
        &self.names[n as usize]
    }
}

/// Voiceprint embeddings in one contiguous matrix, one row per slot, with the graph over them
/// once the registry is large enough. Without a graph, a deletion moves the last row into the
/// hole; with one, slots keep their numbers and a deletion unlinks the slot from the graph and
/// leaves a tombstone (its row zeroed) until the next rebuild.
#[derive(Debug, Clone)]
pub struct SearchIndex {
    dim: usize,
    config: SearchConfig,
    rows: Vec<f32>,
    /// Voiceprint id of each slot; `None`: deleted.
    voiceprints: Vec<Option<Box<str>>>,
    artist_of: Vec<u32>,
    artists: Artists,
    position: HashMap<Box<str>, u32>,
    deleted: usize,
    graph: Option<Hnsw>,
    /// Each artist's voiceprints, while there is a graph.
    rings: Option<Rings>,
}

/// The live voiceprints of an index, compacted, to build a new one from.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// (voiceprint, artist) of each row.
    pub ids: Vec<(String, String)>,
    /// The embeddings, row-major.
    pub rows: Vec<f32>,
}

impl SearchIndex {
    /// An empty index for `dim`-long embeddings, searched exactly.
    pub fn new(dim: usize) -> Self {
        Self::with_config(dim, SearchConfig::default())
    }

    /// An empty index for `dim`-long embeddings with `config`; it stays exact until a graph
    /// is built with [`SearchIndex::build`].
    pub fn with_config(dim: usize, config: SearchConfig) -> Self {
        Self {
            dim,
            config,
            rows: Vec::new(),
            voiceprints: Vec::new(),
            artist_of: Vec::new(),
            artists: Artists::default(),
            position: HashMap::new(),
            deleted: 0,
            graph: None,
            rings: None,
        }
    }

    /// An index over `rows`, with a graph (built on `config.threads()` threads) when they
    /// are more than `config.approximate_above`; `progress` hears how many are linked every
    /// so often.
    pub fn build(
        dim: usize,
        config: SearchConfig,
        rows: Rows,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Self {
        let mut index = Self::with_config(dim, config);
        index.rows = rows.rows;
        index.voiceprints.reserve(rows.ids.len());
        index.artist_of.reserve(rows.ids.len());
        index.position.reserve(rows.ids.len());
        for (slot, (voiceprint, artist)) in rows.ids.into_iter().enumerate() {
            let voiceprint: Box<str> = voiceprint.into();
            index.position.insert(voiceprint.clone(), slot as u32);
            index.voiceprints.push(Some(voiceprint));
            let artist = index.artists.acquire(&artist);
            index.artist_of.push(artist);
        }
        assert_eq!(
            index.rows.len(),
            index.voiceprints.len() * dim,
            "rows shape"
        );
        if index.len() > config.approximate_above {
            index.graph = Some(Hnsw::build(
                config.params(),
                index.vectors(),
                config.threads(),
                progress,
            ));
            index.rings = Some(Rings::new(&index.artist_of));
        }
        index
    }

    /// The configuration.
    pub fn config(&self) -> &SearchConfig {
        &self.config
    }

    /// Replaces the configuration; a graph already built keeps its shape until the next
    /// rebuild.
    pub fn configure(&mut self, config: SearchConfig) {
        self.config = config;
    }

    fn vectors(&self) -> Vectors<'_> {
        Vectors {
            rows: &self.rows,
            dim: self.dim,
        }
    }

    /// Number of voiceprints.
    pub fn len(&self) -> usize {
        self.position.len()
    }

    /// Whether the index holds no voiceprint.
    pub fn is_empty(&self) -> bool {
        self.position.is_empty()
    }

    /// Whether screening searches go through the graph.
    pub fn is_approximate(&self) -> bool {
        self.graph.is_some()
    }

    /// Deleted voiceprints the graph still holds as tombstones.
    pub fn deleted(&self) -> usize {
        self.deleted
    }

    /// Whether the index should be rebuilt: it has grown past the threshold without a graph,
    /// shrunk back under it with one, or carries too many tombstones.
    pub fn needs_rebuild(&self) -> bool {
        let wanted = self.len() > self.config.approximate_above;
        match &self.graph {
            None => wanted,
            Some(graph) => {
                !wanted
                    || self.deleted as f64
                        > self.config.rebuild_deleted_fraction * graph.nodes() as f64
            }
        }
    }

    /// Bytes held for the embeddings, the graph and the ids (an estimate: allocator overhead
    /// aside).
    pub fn memory_bytes(&self) -> usize {
        let word = std::mem::size_of::<usize>();
        let strings: usize = self.position.keys().map(|k| k.len()).sum();
        self.rows.capacity() * 4
            + self.voiceprints.capacity() * 2 * word
            + self.artist_of.capacity() * 4
            + self.position.capacity() * (2 * word + 4)
            + 2 * strings
            + self.graph.as_ref().map_or(0, Hnsw::memory_bytes)
            + self.rings.as_ref().map_or(0, Rings::memory_bytes)
    }

    /// Adds (or replaces) a voiceprint. `embedding` must be `dim` long and unit norm. With a
    /// graph, the voiceprint is linked into it (a search `ef_construction` wide).
    pub fn insert(&mut self, voiceprint_id: &str, artist_id: &str, embedding: &[f32]) {
        assert_eq!(embedding.len(), self.dim, "embedding length");
        self.remove(voiceprint_id);
        let slot = self.voiceprints.len() as u32;
        let voiceprint: Box<str> = voiceprint_id.into();
        self.position.insert(voiceprint.clone(), slot);
        self.voiceprints.push(Some(voiceprint));
        let artist = self.artists.acquire(artist_id);
        self.artist_of.push(artist);
        self.rows.extend_from_slice(embedding);
        if let Some(graph) = &mut self.graph {
            graph.push_node(slot, embedding);
            let voiceprints = &self.voiceprints;
            let vectors = Vectors {
                rows: &self.rows,
                dim: self.dim,
            };
            graph.insert(vectors, slot, &|s| voiceprints[s as usize].is_some());
        }
        if let Some(rings) = &mut self.rings {
            rings.join(slot, artist);
        }
    }

    /// Removes a voiceprint, zeroing the row its embedding vacates; returns whether it was
    /// there.
    pub fn remove(&mut self, voiceprint_id: &str) -> bool {
        let Some(at) = self.position.remove(voiceprint_id) else {
            return false;
        };
        let at = at as usize;
        self.artists.release(self.artist_of[at]);
        if let Some(rings) = &mut self.rings {
            rings.leave(at as u32, self.artist_of[at]);
        }
        if let Some(graph) = &mut self.graph {
            self.voiceprints[at] = None;
            let voiceprints = &self.voiceprints;
            let vectors = Vectors {
                rows: &self.rows,
                dim: self.dim,
            };
            graph.unlink(vectors, at as u32, &|slot| {
                voiceprints[slot as usize].is_some()
            });
            self.rows[at * self.dim..(at + 1) * self.dim].fill(0.0);
            self.deleted += 1;
            return true;
        }
        let last = self.voiceprints.len() - 1;
        self.voiceprints.swap_remove(at);
        self.artist_of.swap_remove(at);
        if at != last {
            let (head, tail) = self.rows.split_at_mut(last * self.dim);
            head[at * self.dim..(at + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            if let Some(moved) = &self.voiceprints[at] {
                self.position.insert(moved.clone(), at as u32);
            }
        }
        self.rows[last * self.dim..].fill(0.0);
        self.rows.truncate(last * self.dim);
        true
    }

    /// Removes every voiceprint of `artist_id`; returns how many.
    pub fn remove_artist(&mut self, artist_id: &str) -> usize {
        let Some(artist) = self.artists.find(artist_id) else {
            return 0;
        };
        let doomed: Vec<Box<str>> = self
            .voiceprints
            .iter()
            .zip(&self.artist_of)
            .filter_map(|(v, a)| v.as_ref().filter(|_| *a == artist).cloned())
            .collect();
        for id in &doomed {
            self.remove(id);
        }
        doomed.len()
    }

    /// Every voiceprint's id and artist, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.voiceprints
            .iter()
            .zip(&self.artist_of)
            .filter_map(|(v, a)| Some((v.as_deref()?, self.artists.name(*a))))
    }

    /// A compacted copy of the live voiceprints, to build a new index from.
    pub fn rows(&self) -> Rows {
        let mut out = Rows {
            ids: Vec::with_capacity(self.len()),
            rows: Vec::with_capacity(self.len() * self.dim),
        };
        for (slot, (v, a)) in self.voiceprints.iter().zip(&self.artist_of).enumerate() {
            if let Some(v) = v {
                out.ids
                    .push((v.to_string(), self.artists.name(*a).to_string()));
                out.rows
                    .extend_from_slice(&self.rows[slot * self.dim..(slot + 1) * self.dim]);
            }
        }
        out
    }

    /// The embedding of a voiceprint.
    pub fn embedding(&self, voiceprint_id: &str) -> Option<&[f32]> {
        let at = *self.position.get(voiceprint_id)? as usize;
        Some(&self.rows[at * self.dim..(at + 1) * self.dim])
    }

    fn live(&self, slot: u32) -> bool {
        self.voiceprints[slot as usize].is_some()
    }

    fn hits(&self, scored: Vec<Scored>) -> Vec<Hit> {
        scored
            .into_iter()
            .map(|Scored(score, slot)| Hit {
                voiceprint_id: self.voiceprints[slot as usize]
                    .as_deref()
                    .unwrap_or_default()
                    .to_string(),
                artist_id: self.artists.name(self.artist_of[slot as usize]).to_string(),
                score,
            })
            .collect()
    }

    /// The `k` voiceprints most similar to `query`, best first: through the graph when there
    /// is one (approximate), else by scanning every voiceprint.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<Hit> {
        match &self.graph {
            Some(graph) => {
                let live = |slot| self.live(slot);
                let everything = |_| true;
                let keep: &dyn Fn(u32) -> bool = if self.deleted == 0 {
                    &everything
                } else {
                    &live
                };
                let mut found = graph.search(self.vectors(), query, k, self.config.ef_search, keep);
                if let Some(rings) = &self.rings {
                    self.add_siblings(rings, query, &mut found, k);
                }
                self.hits(found)
            }
            None => self.top_k_exact(query, k),
        }
    }

    /// Scores the other voiceprints (up to [`SIBLINGS_SCORED`]) of each artist in `found`, a
    /// graph search's best first, and keeps the best `k` of all.
    fn add_siblings(&self, rings: &Rings, query: &[f32], found: &mut Vec<Scored>, k: usize) {
        let vectors = self.vectors();
        let searched = found.len();
        let mut artists: Vec<u32> = Vec::with_capacity(searched);
        for i in 0..searched {
            let slot = found[i].1;
            let artist = self.artist_of[slot as usize];
            if artists.contains(&artist) {
                continue;
            }
            artists.push(artist);
            for sibling in rings.others(slot).take(SIBLINGS_SCORED) {
                if !found.iter().any(|f| f.1 == sibling) {
                    found.push(vectors.score(query, sibling));
                }
            }
        }
        found.sort_by(|a, b| b.cmp(a));
        found.truncate(k);
    }

    /// The `k` voiceprints most similar to `query`, best first, by scanning every voiceprint.
    pub fn top_k_exact(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let found = exact::top_k(&self.rows, self.dim, query, k, |slot| self.live(slot));
        self.hits(found)
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

    /// How crowded `artist_id`'s neighbourhood is: of the other artists, how many have a
    /// voiceprint scoring `near` or more against one of its voiceprints, and how many there
    /// are. One exact scan per voiceprint of the artist; `None` when it has none.
    pub fn artists_near(&self, artist_id: &str, near: f32) -> Option<(usize, usize)> {
        let own_artist = self.artists.find(artist_id)?;
        let own: Vec<usize> = (0..self.voiceprints.len())
            .filter(|&slot| self.artist_of[slot] == own_artist && self.live(slot as u32))
            .collect();
        if own.is_empty() {
            return None;
        }
        let mut close: HashSet<u32> = HashSet::new();
        for slot in own {
            let query = &self.rows[slot * self.dim..(slot + 1) * self.dim];
            exact::scan(&self.rows, self.dim, query, |other, score| {
                let artist = self.artist_of[other as usize];
                if artist != own_artist && score >= near && self.live(other) {
                    close.insert(artist);
                }
            });
        }
        Some((close.len(), self.artists.count() - 1))
    }

    /// In one exact scan: the best score of `artist_id`'s own voiceprints, and the best other
    /// artist with its score (for the enrollment checks, which must not miss anything).
    pub fn own_and_nearest_other(
        &self,
        query: &[f32],
        artist_id: &str,
    ) -> (Option<f32>, Option<(String, f32)>) {
        let own_artist = self.artists.find(artist_id);
        let mut own: Option<f32> = None;
        let mut other: Option<(u32, f32)> = None;
        exact::scan(&self.rows, self.dim, query, |slot, score| {
            let artist = self.artist_of[slot as usize];
            if Some(artist) == own_artist {
                if own.is_none_or(|s| score > s) && self.live(slot) {
                    own = Some(score);
                }
            } else if other.is_none_or(|(_, s)| score > s) && self.live(slot) {
                other = Some((artist, score));
            }
        });
        (
            own,
            other.map(|(a, s)| (self.artists.name(a).to_string(), s)),
        )
    }
}
