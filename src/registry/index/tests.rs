use super::*;

fn unit(v: impl AsRef<[f32]>) -> Vec<f32> {
    let v = v.as_ref();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Deterministic Gaussian noise (SplitMix64 and Box-Muller).
struct Noise(u64);

impl Noise {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn gaussian(&mut self) -> f32 {
        let u = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let v = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// A unit vector in a random direction.
    fn direction(&mut self, dim: usize) -> Vec<f32> {
        unit((0..dim).map(|_| self.gaussian()).collect::<Vec<_>>())
    }
}

/// Voices shaped like GE2E embeddings, fitted to the 351 utterance embeddings of
/// librispeech-mini (between-speaker cosine 0.56 ± 0.08, a common direction, variance spread
/// over ~30 effective dimensions): a speaker is the common direction plus a random offset with
/// a decaying spectrum; a recording is its speaker plus smaller noise of the same spectrum,
/// which leaves two recordings of one speaker about 0.8 apart in cosine.
struct Voices {
    common: Vec<f32>,
    scale: Vec<f32>,
}

impl Voices {
    fn new(dim: usize, noise: &mut Noise) -> Self {
        let spectrum: Vec<f64> = (0..dim).map(|i| (i as f64 + 1.0).powf(-0.9)).collect();
        let total: f64 = spectrum.iter().sum();
        Self {
            common: noise.direction(dim),
            scale: spectrum.iter().map(|l| (l / total).sqrt() as f32).collect(),
        }
    }

    /// A new speaker (not normalised: recordings are).
    fn speaker(&self, noise: &mut Noise) -> Vec<f32> {
        self.common
            .iter()
            .zip(&self.scale)
            .map(|(c, s)| c + 0.7 * s * noise.gaussian())
            .collect()
    }

    /// A recording of `speaker`.
    fn recording(&self, speaker: &[f32], noise: &mut Noise) -> Vec<f32> {
        unit(
            speaker
                .iter()
                .zip(&self.scale)
                .map(|(c, s)| c + 0.6 * s * noise.gaussian())
                .collect::<Vec<_>>(),
        )
    }
}

const DIM: usize = 64;

/// A registry of `artists` artists with 4 voiceprints each, and queries: recordings of
/// registered artists and of unregistered voices, alternately.
struct Synthetic {
    rows: Rows,
    centres: Vec<Vec<f32>>,
    voices: Voices,
    noise: Noise,
}

fn registry(artists: usize, seed: u64) -> Synthetic {
    let mut noise = Noise(seed);
    let voices = Voices::new(DIM, &mut noise);
    let mut rows = Rows::default();
    let mut centres = Vec::new();
    for a in 0..artists {
        let centre = voices.speaker(&mut noise);
        for v in 0..4 {
            rows.ids
                .push((format!("vp-{a}-{v}"), format!("artist-{a}")));
            rows.rows.extend(voices.recording(&centre, &mut noise));
        }
        centres.push(centre);
    }
    Synthetic {
        rows,
        centres,
        voices,
        noise,
    }
}

impl Synthetic {
    fn queries(&mut self, n: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| {
                let speaker = if i % 2 == 0 {
                    self.centres[i * 7 % self.centres.len()].clone()
                } else {
                    self.voices.speaker(&mut self.noise)
                };
                self.voices.recording(&speaker, &mut self.noise)
            })
            .collect()
    }

    fn voice(&mut self) -> Vec<f32> {
        let speaker = self.voices.speaker(&mut self.noise);
        self.voices.recording(&speaker, &mut self.noise)
    }
}

fn approximate(threads: usize) -> SearchConfig {
    SearchConfig {
        approximate_above: 0,
        build_threads: threads,
        ..SearchConfig::default()
    }
}

/// Mean share of the exact top 10 the index's own search finds, over `queries`.
fn recall(index: &SearchIndex, queries: &[Vec<f32>]) -> f64 {
    let mut found = 0;
    for q in queries {
        let want: Vec<String> = index
            .top_k_exact(q, 10)
            .into_iter()
            .map(|h| h.voiceprint_id)
            .collect();
        let got = index.top_k(q, 10);
        found += got
            .iter()
            .filter(|h| want.contains(&h.voiceprint_id))
            .count();
    }
    found as f64 / (10 * queries.len()) as f64
}

#[test]
fn finds_nearest_and_groups_by_artist() {
    let mut index = SearchIndex::new(3);
    index.insert("v1", "alice", &unit([1.0, 0.0, 0.0]));
    index.insert("v2", "alice", &unit([0.9, 0.1, 0.0]));
    index.insert("v3", "bob", &unit([0.0, 1.0, 0.0]));
    let hits = index.top_k(&unit([1.0, 0.05, 0.0]), 2);
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.artist_id == "alice"));
    assert!(hits[0].score >= hits[1].score);
    let artists = index.top_artists(&unit([0.2, 1.0, 0.0]), 3);
    assert_eq!(artists[0].0, "bob");
    assert_eq!(artists.len(), 2);
}

#[test]
fn removal_keeps_the_rest_searchable() {
    let mut index = SearchIndex::new(2);
    index.insert("a", "x", &[1.0, 0.0]);
    index.insert("b", "y", &[0.0, 1.0]);
    index.insert("c", "y", &unit([1.0, 1.0]));
    assert!(index.remove("a"));
    assert!(!index.remove("a"));
    assert_eq!(index.len(), 2);
    assert_eq!(index.top_k(&[1.0, 0.0], 1)[0].voiceprint_id, "c");
    assert_eq!(index.remove_artist("y"), 2);
    assert!(index.is_empty());
    assert!(index.top_k(&[1.0, 0.0], 5).is_empty());
    assert_eq!(index.entries().count(), 0);
}

#[test]
fn own_and_nearest_other_agree_with_a_full_ranking() {
    let mut data = registry(300, 1);
    let index = SearchIndex::build(DIM, approximate(1), data.rows.clone(), &|_| {});
    for (i, q) in data.queries(40).iter().enumerate() {
        let artist = format!("artist-{}", i * 7 % data.centres.len());
        let ranked = index.top_k_exact(q, index.len());
        let own = ranked
            .iter()
            .find(|h| h.artist_id == artist)
            .map(|h| h.score);
        let other = ranked
            .iter()
            .find(|h| h.artist_id != artist)
            .map(|h| (h.artist_id.clone(), h.score));
        assert_eq!(index.own_and_nearest_other(q, &artist), (own, other));
    }
    assert_eq!(index.own_and_nearest_other(&data.voice(), "nobody").0, None);
}

#[test]
fn the_graph_finds_the_exact_top_10_at_the_default_width() {
    let mut data = registry(1000, 2);
    let index = SearchIndex::build(DIM, approximate(1), data.rows.clone(), &|_| {});
    assert!(index.is_approximate());
    let r = recall(&index, &data.queries(200));
    assert!(r >= 0.99, "recall@10 {r}");
}

#[test]
fn a_parallel_build_is_as_good() {
    let mut data = registry(1000, 3);
    let index = SearchIndex::build(DIM, approximate(4), data.rows.clone(), &|_| {});
    let r = recall(&index, &data.queries(200));
    assert!(r >= 0.99, "recall@10 {r}");
}

#[test]
fn voiceprints_inserted_after_the_build_are_linked_and_found() {
    let mut data = registry(500, 4);
    let mut index = SearchIndex::build(DIM, approximate(1), data.rows.clone(), &|_| {});
    let mut added = Vec::new();
    for i in 0..500 {
        let v = data.voice();
        index.insert(&format!("new-{i}"), &format!("new-artist-{i}"), &v);
        added.push(v);
    }
    assert_eq!(index.len(), 2500);
    for (i, v) in added.iter().enumerate() {
        assert_eq!(index.top_k(v, 1)[0].voiceprint_id, format!("new-{i}"));
    }
    let r = recall(&index, &data.queries(200));
    assert!(r >= 0.99, "recall@10 {r}");
}

#[test]
fn deleted_voiceprints_are_never_returned_and_trigger_a_rebuild() {
    let mut data = registry(500, 5);
    let mut index = SearchIndex::build(DIM, approximate(1), data.rows.clone(), &|_| {});
    for a in (0..500).step_by(5) {
        assert_eq!(index.remove_artist(&format!("artist-{a}")), 4);
    }
    assert_eq!(index.len(), 1600);
    assert_eq!(index.deleted(), 400);
    assert!(
        !index.needs_rebuild(),
        "20% deleted is under the 25% threshold"
    );
    let qs = data.queries(200);
    for q in &qs {
        let hits = index.top_k(q, 10);
        assert_eq!(hits.len(), 10);
        for h in hits {
            assert!(
                index.embedding(&h.voiceprint_id).is_some(),
                "{} was deleted",
                h.voiceprint_id
            );
        }
    }
    let r = recall(&index, &qs);
    assert!(r >= 0.98, "recall@10 with 20% tombstones {r}");
    for a in (1..500).step_by(5).take(30) {
        index.remove_artist(&format!("artist-{a}"));
    }
    assert!(index.needs_rebuild());
    let rebuilt = SearchIndex::build(DIM, *index.config(), index.rows(), &|_| {});
    assert_eq!(rebuilt.len(), index.len());
    assert_eq!(rebuilt.deleted(), 0);
    assert!(!rebuilt.needs_rebuild());
    let mut before: Vec<_> = index.entries().collect();
    let mut after: Vec<_> = rebuilt.entries().collect();
    before.sort();
    after.sort();
    assert_eq!(before, after);
    assert!(recall(&rebuilt, &qs) >= 0.99);
}

#[test]
fn the_graph_is_wanted_only_above_the_threshold() {
    let mut data = registry(25, 6);
    let config = SearchConfig {
        approximate_above: 100,
        ..SearchConfig::default()
    };
    let small = SearchIndex::build(DIM, config, data.rows.clone(), &|_| {});
    assert!(!small.is_approximate());
    assert!(!small.needs_rebuild());
    let mut grown = small.clone();
    grown.insert("one-more", "artist-x", &data.voice());
    assert!(grown.needs_rebuild());
    let mut big = SearchIndex::build(DIM, config, grown.rows(), &|_| {});
    assert!(big.is_approximate());
    big.remove("one-more");
    assert!(big.needs_rebuild(), "back under the threshold: exact again");
}

#[test]
fn one_thread_builds_the_same_graph_every_time() {
    let mut data = registry(200, 7);
    let a = SearchIndex::build(DIM, approximate(1), data.rows.clone(), &|_| {});
    let b = SearchIndex::build(DIM, approximate(1), data.rows.clone(), &|_| {});
    for q in data.queries(20) {
        assert_eq!(a.top_k(&q, 10), b.top_k(&q, 10));
    }
}

#[test]
fn a_graph_search_that_reaches_an_artist_returns_all_its_voiceprints() {
    let mut data = registry(2000, 7);
    let mut index = SearchIndex::build(
        DIM,
        SearchConfig {
            m: 4,
            ef_search: 10,
            ..approximate(1)
        },
        data.rows.clone(),
        &|_| {},
    );
    for a in (0..2000).step_by(3) {
        assert!(index.remove(&format!("vp-{a}-1")));
    }
    for a in (0..2000).step_by(5) {
        index.insert(
            &format!("vp-{a}-new"),
            &format!("artist-{a}"),
            &data.voice(),
        );
    }
    let mut checked = 0;
    for q in data.queries(400) {
        let exact = index.top_k_exact(&q, 10);
        let found = index.top_k(&q, 10);
        for hit in &found {
            let siblings: Vec<&Hit> = exact
                .iter()
                .filter(|h| h.artist_id == hit.artist_id && h.voiceprint_id != hit.voiceprint_id)
                .collect();
            for s in siblings {
                checked += 1;
                assert!(
                    found.contains(s),
                    "found {} but not its sibling {}",
                    hit.voiceprint_id,
                    s.voiceprint_id
                );
            }
        }
    }
    assert!(checked > 500, "only {checked} siblings checked");
}

#[test]
fn walks_never_end_on_a_deleted_voiceprint() {
    // Few links per node: many upper layers, and links to deleted nodes left in lists the
    // deletion did not relink. A walk that heads for such a node finds it linked to nothing.
    let mut data = registry(500, 9);
    let config = SearchConfig {
        m: 4,
        ef_construction: 40,
        ef_search: 100,
        ..approximate(1)
    };
    let mut index = SearchIndex::build(DIM, config, data.rows.clone(), &|_| {});
    for a in (0..500).step_by(4) {
        index.remove_artist(&format!("artist-{a}"));
    }
    let qs = data.queries(200);
    for q in &qs {
        assert_eq!(index.top_k(q, 10).len(), 10);
    }
    let r = recall(&index, &qs);
    assert!(r >= 0.9, "recall@10 with 25% tombstones {r}");
}

#[test]
fn artists_near_counts_other_artists_once_each() {
    let mut index = SearchIndex::new(2);
    let at = |degrees: f32| {
        let r = degrees.to_radians();
        vec![r.cos(), r.sin()]
    };
    index.insert("hub-1", "hub", &at(0.0));
    index.insert("hub-2", "hub", &at(90.0));
    // Close to the hub's first voiceprint (twice), close to its second, far from both.
    index.insert("a-1", "a", &at(10.0));
    index.insert("a-2", "a", &at(-10.0));
    index.insert("b-1", "b", &at(80.0));
    index.insert("c-1", "c", &at(225.0));
    let near = 30f32.to_radians().cos();
    assert_eq!(index.artists_near("hub", near), Some((2, 3)));
    assert_eq!(index.artists_near("c", near), Some((0, 3)));
    // A deleted voiceprint no longer counts, and an artist without any is unknown.
    assert!(index.remove("b-1"));
    assert_eq!(index.artists_near("hub", near), Some((1, 2)));
    assert_eq!(index.artists_near("b", near), None);
}
