//! A hierarchical navigable small-world graph (Malkov & Yashunin, 2016) over the rows of the
//! index's matrix: approximate nearest neighbours by greedy descent through sparse upper
//! layers, then a best-first search of width `ef` in the bottom layer.
//!
//! Nodes are the index's slots, so their ids never change. A deleted node is unlinked: each
//! neighbour that linked to it picks new links among its own and the deleted node's other
//! neighbours, so the graph stays navigable around the hole; the node stays as an unlinked
//! tombstone (never returned) until the index is rebuilt. Neighbour lists are
//! atomics so that several threads can insert at once while building: a list is written under
//! its node's lock and read without one (a reader may see a list mid-update, which only makes
//! that one step of an approximate search less informed: every id in a list is a valid node).
//!
//! Searches walk the graph on the nodes' int8 codes ([`Codes`]), loading each step's unseen
//! neighbours ahead of scoring them, and re-score what they keep from the f32 rows.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use rayon::prelude::*;

use super::codes::Codes;
use super::exact::{dot, Scored};

/// The graph's tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Links per node in the upper layers (twice that in the bottom one).
    pub m: usize,
    /// Width of the search that picks a new node's links.
    pub ef_construction: usize,
    /// Seed of the node levels.
    pub seed: u64,
}

/// The rows the graph's nodes stand for: node `i` is `rows[i * dim..(i + 1) * dim]`.
#[derive(Debug, Clone, Copy)]
pub struct Vectors<'a> {
    /// Row-major matrix.
    pub rows: &'a [f32],
    /// Row length.
    pub dim: usize,
}

impl Vectors<'_> {
    fn row(&self, node: u32) -> &[f32] {
        let at = node as usize * self.dim;
        &self.rows[at..at + self.dim]
    }

    /// The exact score of `node` against `query`.
    pub(super) fn score(&self, query: &[f32], node: u32) -> Scored {
        Scored(dot(query, self.row(node)), node)
    }

    /// `found` re-scored exactly, best first.
    fn rescore(&self, query: &[f32], found: &mut [Scored]) {
        for s in found.iter_mut() {
            *s = self.score(query, s.1);
        }
        found.sort_by(|a, b| b.cmp(a));
    }
}

/// How many of a search's best nodes by their codes are re-scored from the f32 rows. Code
/// scores err by about 1e-3, far less than the spread of a search's best 64; re-scoring all
/// `ef` of them cost 5% more time and found no more of the exact top 10 (200,000 voiceprints,
/// ef 1,024).
const RESCORED: usize = 64;

/// No entry point yet.
const NO_ENTRY: u64 = u64::MAX;

/// Locks guarding neighbour-list writes, shared by node id modulo their number.
const LOCK_STRIPES: usize = 4096;

/// Highest level a node may get.
const MAX_LEVEL: u8 = 15;

/// The graph.
pub struct Hnsw {
    params: Params,
    /// Links per node in the bottom layer.
    m0: usize,
    level_scale: f64,
    levels: Vec<u8>,
    /// The nodes' rows as int8 codes, which searches walk on.
    codes: Codes,
    /// Bottom layer: `m0 + 1` words per node, the count then the neighbours.
    links0: Vec<AtomicU32>,
    /// Upper layers of each node: `m + 1` words per level above 0.
    upper: Vec<Box<[AtomicU32]>>,
    /// Entry point: its level in the high half, the node in the low half.
    entry: AtomicU64,
    stripes: Box<[Mutex<()>]>,
    /// Held by an insertion that raises the top level, for the whole insertion.
    top: Mutex<()>,
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("params", &self.params)
            .field("nodes", &self.levels.len())
            .finish_non_exhaustive()
    }
}

impl Clone for Hnsw {
    fn clone(&self) -> Self {
        let copy = |words: &[AtomicU32]| -> Vec<AtomicU32> {
            words
                .iter()
                .map(|w| AtomicU32::new(w.load(Relaxed)))
                .collect()
        };
        Self {
            params: self.params,
            m0: self.m0,
            level_scale: self.level_scale,
            levels: self.levels.clone(),
            codes: self.codes.clone(),
            links0: copy(&self.links0),
            upper: self.upper.iter().map(|u| copy(u).into()).collect(),
            entry: AtomicU64::new(self.entry.load(Relaxed)),
            stripes: stripes(),
            top: Mutex::new(()),
        }
    }
}

fn stripes() -> Box<[Mutex<()>]> {
    (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect()
}

fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// SplitMix64: a well-mixed hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Hnsw {
    /// An empty graph over `dim`-long rows.
    pub fn new(params: Params, dim: usize) -> Self {
        let m = params.m.max(2);
        Self {
            params: Params { m, ..params },
            m0: 2 * m,
            level_scale: 1.0 / (m as f64).ln(),
            levels: Vec::new(),
            codes: Codes::new(dim),
            links0: Vec::new(),
            upper: Vec::new(),
            entry: AtomicU64::new(NO_ENTRY),
            stripes: stripes(),
            top: Mutex::new(()),
        }
    }

    /// Builds the graph over every row of `vectors` on `threads` threads (1: in row order,
    /// so the same rows always give the same graph); `progress` hears the number of rows
    /// inserted every so often.
    pub fn build(
        params: Params,
        vectors: Vectors<'_>,
        threads: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Self {
        let n = vectors.rows.len() / vectors.dim;
        let mut graph = Self::new(params, vectors.dim);
        graph.reserve(n);
        for node in 0..n {
            graph.push_node(node as u32, vectors.row(node as u32));
        }
        let done = AtomicUsize::new(0);
        let insert = |node: usize| {
            graph.insert(vectors, node as u32, &|_| true);
            let done = done.fetch_add(1, Relaxed) + 1;
            if done.is_multiple_of(50_000) {
                progress(done);
            }
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("index-build-{i}"))
            .build();
        match pool {
            Ok(pool) if threads > 1 && n > 1 => {
                insert(0);
                pool.install(|| (1..n).into_par_iter().for_each(insert));
            }
            _ => (0..n).for_each(insert),
        }
        graph
    }

    /// Makes room for `additional` more nodes.
    pub fn reserve(&mut self, additional: usize) {
        self.levels.reserve(additional);
        self.codes.reserve(additional);
        self.links0.reserve(additional * (self.m0 + 1));
        self.upper.reserve(additional);
    }

    /// Number of nodes, tombstones included.
    pub fn nodes(&self) -> usize {
        self.levels.len()
    }

    /// Adds node `node` (the next id), whose row is `row`, without links; [`Hnsw::insert`]
    /// links it.
    pub fn push_node(&mut self, node: u32, row: &[f32]) {
        assert_eq!(
            node as usize,
            self.levels.len(),
            "nodes are added in id order"
        );
        let level = self.level_of(node);
        self.levels.push(level);
        self.codes.push(row);
        self.links0.extend((0..=self.m0).map(|_| AtomicU32::new(0)));
        let words = usize::from(level) * (self.params.m + 1);
        self.upper
            .push((0..words).map(|_| AtomicU32::new(0)).collect());
    }

    /// The level of `node`: geometric with ratio 1/m, from a hash of the seed and the id, so
    /// it does not depend on the order nodes are inserted in.
    fn level_of(&self, node: u32) -> u8 {
        let bits = mix(self.params.seed ^ mix(u64::from(node)));
        let uniform = ((bits >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let level = (-uniform.ln() * self.level_scale).floor();
        level.min(f64::from(MAX_LEVEL)) as u8
    }

    /// Bytes of the graph's own arrays.
    pub fn memory_bytes(&self) -> usize {
        let word = std::mem::size_of::<AtomicU32>();
        self.levels.capacity()
            + self.codes.memory_bytes()
            + self.links0.capacity() * word
            + self.upper.capacity() * std::mem::size_of::<Box<[AtomicU32]>>()
            + self.upper.iter().map(|u| u.len() * word).sum::<usize>()
    }

    fn list(&self, node: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            let width = self.m0 + 1;
            &self.links0[node as usize * width..][..width]
        } else {
            let width = self.params.m + 1;
            &self.upper[node as usize][(level - 1) * width..][..width]
        }
    }

    /// The neighbours of `node` at `level`, as they are now.
    fn neighbours(&self, node: u32, level: usize) -> impl Iterator<Item = u32> + '_ {
        let list = self.list(node, level);
        let count = (list[0].load(Relaxed) as usize).min(list.len() - 1);
        list[1..=count].iter().map(|w| w.load(Relaxed))
    }

    fn set_neighbours(&self, node: u32, level: usize, chosen: &[u32]) {
        let list = self.list(node, level);
        for (slot, id) in list[1..].iter().zip(chosen) {
            slot.store(*id, Relaxed);
        }
        list[0].store(chosen.len() as u32, Relaxed);
    }

    fn stripe(&self, node: u32) -> MutexGuard<'_, ()> {
        lock(&self.stripes[node as usize % LOCK_STRIPES])
    }

    fn entry(&self) -> Option<(u32, usize)> {
        match self.entry.load(Relaxed) {
            NO_ENTRY => None,
            e => Some((e as u32, (e >> 32) as usize)),
        }
    }

    /// Links node `node` (added with [`Hnsw::push_node`]) into the graph, to nodes `live`
    /// accepts.
    pub fn insert(&self, vectors: Vectors<'_>, node: u32, live: &dyn Fn(u32) -> bool) {
        let level = usize::from(self.levels[node as usize]);
        let top_guard = lock(&self.top);
        let Some((entry, top)) = self.entry() else {
            self.entry
                .store(((level as u64) << 32) | u64::from(node), Relaxed);
            return;
        };
        let _raising = if level > top {
            Some(top_guard)
        } else {
            drop(top_guard);
            None
        };
        let query = vectors.row(node);
        let mut nearest = self.score(query, entry);
        for l in (level + 1..=top).rev() {
            nearest = self.greedy(query, nearest, l);
        }
        VISITED.with_borrow_mut(|visited| {
            let mut entries = vec![nearest];
            for l in (0..=level.min(top)).rev() {
                let mut found = self.search_layer(
                    query,
                    &entries,
                    self.params.ef_construction,
                    l,
                    visited,
                    &|n| n != node && live(n),
                );
                vectors.rescore(query, &mut found);
                let chosen = self.select(vectors, &found, self.params.m);
                {
                    let _g = self.stripe(node);
                    self.set_neighbours(node, l, &chosen);
                }
                let most = if l == 0 { self.m0 } else { self.params.m };
                for &neighbour in &chosen {
                    self.link(vectors, neighbour, node, l, most, live);
                }
                entries = found;
            }
        });
        if level > top {
            self.entry
                .store(((level as u64) << 32) | u64::from(node), Relaxed);
        }
    }

    /// Unlinks deleted node `node` (see the module's description); `live` tells which nodes
    /// are not deleted, `node` among them no longer.
    /// Its code is zeroed, so that walks no longer head for it.
    pub fn unlink(&mut self, vectors: Vectors<'_>, node: u32, live: &dyn Fn(u32) -> bool) {
        let level = usize::from(self.levels[node as usize]);
        for l in 0..=level {
            let most = if l == 0 { self.m0 } else { self.params.m };
            let around: Vec<u32> = self.neighbours(node, l).filter(|&n| live(n)).collect();
            for &n in &around {
                if !self.neighbours(n, l).any(|x| x == node) {
                    continue;
                }
                let base = vectors.row(n);
                let mut candidates: Vec<Scored> = self
                    .neighbours(n, l)
                    .chain(around.iter().copied())
                    .filter(|&x| x != n && x != node && live(x))
                    .map(|x| vectors.score(base, x))
                    .collect();
                candidates.sort_by(|a, b| b.cmp(a));
                candidates.dedup_by_key(|c| c.1);
                let chosen = self.select(vectors, &candidates, most);
                self.set_neighbours(n, l, &chosen);
            }
            self.set_neighbours(node, l, &[]);
        }
        self.codes.erase(node);
        if self.entry().map(|(e, _)| e) == Some(node) {
            let next = (0..self.levels.len() as u32)
                .filter(|&n| live(n))
                .max_by_key(|&n| (self.levels[n as usize], Reverse(n)));
            let entry = next.map_or(NO_ENTRY, |n| {
                (u64::from(self.levels[n as usize]) << 32) | u64::from(n)
            });
            *self.entry.get_mut() = entry;
        }
    }

    /// Adds `node` to `neighbour`'s list at `level`, pruning the list back to `most` with the
    /// selection heuristic when it is full.
    fn link(
        &self,
        vectors: Vectors<'_>,
        neighbour: u32,
        node: u32,
        level: usize,
        most: usize,
        live: &dyn Fn(u32) -> bool,
    ) {
        let _g = self.stripe(neighbour);
        let list = self.list(neighbour, level);
        let count = (list[0].load(Relaxed) as usize).min(most);
        if list[1..=count].iter().any(|w| w.load(Relaxed) == node) {
            return;
        }
        if count < most {
            list[1 + count].store(node, Relaxed);
            list[0].store(count as u32 + 1, Relaxed);
            return;
        }
        let base = vectors.row(neighbour);
        let mut candidates: Vec<Scored> = self
            .neighbours(neighbour, level)
            .filter(|&n| live(n))
            .chain(std::iter::once(node))
            .map(|n| vectors.score(base, n))
            .collect();
        candidates.sort_by(|a, b| b.cmp(a));
        let chosen = self.select(vectors, &candidates, most);
        self.set_neighbours(neighbour, level, &chosen);
    }

    /// The selection heuristic: walking `candidates` best first, keeps one when it is closer
    /// to the query than to every one kept so far, up to `most` (spreads links across
    /// directions instead of spending them all on one tight cluster).
    fn select(&self, vectors: Vectors<'_>, candidates: &[Scored], most: usize) -> Vec<u32> {
        if candidates.len() <= most {
            return candidates.iter().map(|c| c.1).collect();
        }
        let mut kept: Vec<u32> = Vec::with_capacity(most);
        for c in candidates {
            if kept.len() == most {
                break;
            }
            let row = vectors.row(c.1);
            if kept.iter().all(|&k| dot(row, vectors.row(k)) < c.0) {
                kept.push(c.1);
            }
        }
        kept
    }

    /// The approximate score of `node` against `query`, from its code.
    fn score(&self, query: &[f32], node: u32) -> Scored {
        Scored(self.codes.score(query, node), node)
    }

    /// Greedy walk at `level` from `from` to a local best, on the codes.
    fn greedy(&self, query: &[f32], from: Scored, level: usize) -> Scored {
        let mut best = from;
        loop {
            let mut moved = false;
            for n in self.neighbours(best.1, level) {
                let s = self.score(query, n);
                if s.0 > best.0 {
                    best = s;
                    moved = true;
                }
            }
            if !moved {
                return best;
            }
        }
    }

    /// Best-first search at `level` from `entries` on the codes, keeping the `ef` best nodes
    /// `keep` accepts (the others are still walked through); best first, with approximate
    /// scores.
    fn search_layer(
        &self,
        query: &[f32],
        entries: &[Scored],
        ef: usize,
        level: usize,
        visited: &mut Visited,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        visited.start(self.nodes());
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::new();
        let mut results: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        for &e in entries {
            if visited.mark(e.1) {
                candidates.push(e);
                if keep(e.1) {
                    results.push(Reverse(e));
                }
            }
        }
        while results.len() > ef {
            results.pop();
        }
        let floor = |results: &BinaryHeap<Reverse<Scored>>| {
            if results.len() < ef {
                f32::NEG_INFINITY
            } else {
                results.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0)
            }
        };
        while let Some(current) = candidates.pop() {
            if current.0 < floor(&results) {
                break;
            }
            let mut fresh = std::mem::take(&mut visited.fresh);
            fresh.clear();
            for n in self.neighbours(current.1, level) {
                if visited.mark(n) {
                    self.codes.prefetch(n);
                    fresh.push(n);
                }
            }
            for &n in &fresh {
                let s = self.score(query, n);
                if s.0 > floor(&results) {
                    candidates.push(s);
                    if keep(n) {
                        results.push(Reverse(s));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
            visited.fresh = fresh;
        }
        let mut out: Vec<Scored> = results.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }

    /// The `k` nodes nearest to `query` among those `keep` accepts, searching `ef` wide
    /// (at least `k`) on the codes, then re-scoring the best [`RESCORED`] (at least `k`) from
    /// `vectors`; best first, with exact scores.
    pub fn search(
        &self,
        vectors: Vectors<'_>,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let Some((entry, top)) = self.entry() else {
            return Vec::new();
        };
        if k == 0 {
            return Vec::new();
        }
        let mut nearest = self.score(query, entry);
        for l in (1..=top).rev() {
            nearest = self.greedy(query, nearest, l);
        }
        let mut found = VISITED.with_borrow_mut(|visited| {
            self.search_layer(query, &[nearest], ef.max(k), 0, visited, keep)
        });
        found.truncate(RESCORED.max(k));
        vectors.rescore(query, &mut found);
        found.truncate(k);
        found
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}

/// Which nodes one search has seen: a mark per node, equal to the current search's stamp
/// when seen, so starting a search does not clear the array.
#[derive(Default)]
struct Visited {
    marks: Vec<u32>,
    stamp: u32,
    /// The unseen neighbours of the node being expanded.
    fresh: Vec<u32>,
}

impl Visited {
    fn start(&mut self, nodes: usize) {
        if self.marks.len() < nodes {
            self.marks.resize(nodes, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.fill(0);
            self.stamp = 1;
        }
    }

    /// Marks `node`; whether it was not seen before.
    fn mark(&mut self, node: u32) -> bool {
        let m = &mut self.marks[node as usize];
        let fresh = *m != self.stamp;
        *m = self.stamp;
        fresh
    }
}
