//! Evidence per artist from per-window scores: best and robust aggregate scores, the windows
//! that match, the share of voiced time they cover and where they lie in the track.

use std::collections::BTreeMap;
use std::ops::Range;

use super::ScreeningConfig;
use crate::embed::WindowedTrack;

/// Windows whose scores the aggregate takes the median of.
const AGGREGATE_WINDOWS: usize = 5;

/// One artist's evidence over a track.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtistScores {
    /// Registry id.
    pub artist_id: String,
    /// Whether it reaches the match threshold.
    pub matched: bool,
    /// Best window score.
    pub best_score: f32,
    /// Median of the best five window scores (windows where the artist was not among the
    /// top hits count as -1).
    pub aggregate_score: f32,
    /// Windows at or above the match threshold.
    pub matching_windows: usize,
    /// Share of voiced time covered by matching windows.
    pub matched_voiced_share: f64,
    /// Track-time ranges of matching windows, merged.
    pub time_ranges: Vec<Range<f64>>,
}

/// Gathers the artists that match or fall in the grey band, matched first, each group by
/// descending aggregate score. `per_window[i]` holds window `i`'s best score per artist.
pub fn gather(
    track: &WindowedTrack,
    per_window: &[Vec<(String, f32)>],
    config: &ScreeningConfig,
) -> Vec<ArtistScores> {
    let mut by_artist: BTreeMap<&str, Vec<(usize, f32)>> = BTreeMap::new();
    for (i, hits) in per_window.iter().enumerate() {
        for (artist, score) in hits {
            by_artist.entry(artist).or_default().push((i, *score));
        }
    }
    let n_windows = track.windows.len();
    let mut out: Vec<ArtistScores> = by_artist
        .into_iter()
        .map(|(artist, scores)| {
            let mut sorted: Vec<f32> = scores.iter().map(|&(_, s)| s).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let considered = AGGREGATE_WINDOWS.min(n_windows);
            sorted.resize(considered, -1.0);
            let aggregate_score = median_of_descending(&sorted);
            let matching: Vec<usize> = scores
                .iter()
                .filter(|&&(_, s)| f64::from(s) >= config.match_threshold)
                .map(|&(i, _)| i)
                .collect();
            let voiced: Vec<Range<f64>> = matching
                .iter()
                .map(|&i| track.windows[i].voiced.clone())
                .collect();
            let spans: Vec<Range<f64>> = matching
                .iter()
                .flat_map(|&i| track.windows[i].spans.iter().cloned())
                .collect();
            let covered: f64 = merge(voiced).iter().map(|r| r.end - r.start).sum();
            ArtistScores {
                artist_id: artist.to_string(),
                matched: f64::from(aggregate_score) >= config.match_threshold,
                best_score: sorted.first().copied().unwrap_or(-1.0),
                aggregate_score,
                matching_windows: matching.len(),
                matched_voiced_share: if track.voiced_s > 0.0 {
                    (covered / track.voiced_s).min(1.0)
                } else {
                    0.0
                },
                time_ranges: merge(spans),
            }
        })
        .filter(|a| a.matched || f64::from(a.aggregate_score) >= config.review_threshold)
        .collect();
    out.sort_by(|a, b| {
        b.matched
            .cmp(&a.matched)
            .then(b.aggregate_score.total_cmp(&a.aggregate_score))
    });
    out
}

/// The median of values sorted in descending order (mean of the middle two for an even count).
fn median_of_descending(sorted: &[f32]) -> f32 {
    match sorted.len() {
        0 => -1.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Merges overlapping or touching ranges (within 10 ms) into disjoint sorted ones.
fn merge(mut ranges: Vec<Range<f64>>) -> Vec<Range<f64>> {
    ranges.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut out: Vec<Range<f64>> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end + 0.01 => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::TrackWindow;

    fn track(n: usize) -> WindowedTrack {
        WindowedTrack {
            duration_s: n as f64 + 10.0,
            voiced_s: n as f64 + 1.0,
            window_s: 2.0,
            hop_s: 1.0,
            n_partials: n,
            windows: (0..n)
                .map(|i| TrackWindow {
                    voiced: i as f64..i as f64 + 2.0,
                    spans: vec![i as f64 + 5.0..i as f64 + 7.0],
                    embedding: Vec::new(),
                })
                .collect(),
        }
    }

    fn config() -> ScreeningConfig {
        ScreeningConfig {
            match_threshold: 0.8,
            review_threshold: 0.7,
            ..ScreeningConfig::default()
        }
    }

    fn hits(scores: &[f32]) -> Vec<Vec<(String, f32)>> {
        scores.iter().map(|&s| vec![("a".to_string(), s)]).collect()
    }

    #[test]
    fn a_consistent_voice_matches_with_its_ranges() {
        let t = track(6);
        let scores = gather(&t, &hits(&[0.3, 0.9, 0.85, 0.95, 0.2, 0.1]), &config());
        assert_eq!(scores.len(), 1);
        let a = &scores[0];
        assert!(a.matched);
        assert_eq!(a.best_score, 0.95);
        assert_eq!(a.aggregate_score, 0.85);
        assert_eq!(a.matching_windows, 3);
        assert_eq!(a.time_ranges, vec![6.0..10.0]);
        assert!((a.matched_voiced_share - 4.0 / 7.0).abs() < 1e-9);
    }

    #[test]
    fn one_stray_window_does_not_match() {
        let scores = gather(
            &track(6),
            &hits(&[0.3, 0.95, 0.5, 0.4, 0.2, 0.1]),
            &config(),
        );
        assert!(scores.is_empty(), "{scores:?}");
    }

    #[test]
    fn grey_band_candidates_are_kept_unmatched() {
        let scores = gather(&track(4), &hits(&[0.75, 0.72, 0.78, 0.7]), &config());
        assert_eq!(scores.len(), 1);
        assert!(!scores[0].matched);
        assert!(scores[0].time_ranges.is_empty());
    }

    #[test]
    fn short_tracks_follow_the_same_median_rule() {
        // One window: its score is the median.
        assert!(gather(&track(1), &hits(&[0.9]), &config())[0].matched);
        // Two windows: the mean of both, so one window above the match point is enough
        // when the other is close.
        assert!(gather(&track(2), &hits(&[0.9, 0.75]), &config())[0].matched);
        let two = gather(&track(2), &hits(&[0.9, 0.6]), &config());
        assert!(!two[0].matched && two[0].matching_windows == 1, "{two:?}");
        // Three windows: the middle one decides.
        assert!(gather(&track(3), &hits(&[0.95, 0.81, 0.2]), &config())[0].matched);
        assert!(!gather(&track(3), &hits(&[0.95, 0.79, 0.2]), &config())[0].matched);
    }

    #[test]
    fn windows_missing_an_artist_count_low() {
        let mut per_window = hits(&[0.9, 0.9]);
        per_window.extend(vec![Vec::new(); 4]);
        let scores = gather(&track(6), &per_window, &config());
        assert!(
            scores.is_empty(),
            "two of five best windows are not a median: {scores:?}"
        );
    }

    #[test]
    fn merge_joins_overlaps() {
        assert_eq!(
            merge(vec![3.0..4.0, 0.0..1.0, 0.5..2.0]),
            vec![0.0..2.0, 3.0..4.0]
        );
    }
}
