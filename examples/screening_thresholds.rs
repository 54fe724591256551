//! Measures the score distributions behind the screening and enrollment thresholds on
//! librispeech-mini, through the same pipeline and index the server uses.
//!
//! Each `test-other` speaker is enrolled from its first three utterances with at least the
//! enrollment minimum of voiced audio (one voiceprint each); every other utterance of those
//! speakers is a held-out target track, and every `train-clean-100` utterance a non-target
//! track. Each track is embedded window by window and scored against all voiceprints; the
//! program prints window-level and track-level (aggregate) score percentiles, and what the
//! default thresholds decide.
//!
//! The model is `$VOCALGUARD_MODEL` (default: the server's default), and the thresholds its card
//! states (else the built-in defaults); the sweep runs in 0.01 steps over 0.16 from
//! `$SWEEP_FROM`, by default 0.10 below the match threshold.
//!
//! `[VOCALGUARD_MODEL=NAME] cargo run --release --example screening_thresholds [LIBRISPEECH_MINI_DIR]`

use std::path::{Path, PathBuf};

use vocalguard::audio::{self, DecodeLimits};
use vocalguard::embed::Embedder;
use vocalguard::encoder::{source::DEFAULT_MODEL, ResolveOptions, SpeakerModel};
use vocalguard::registry::index::SearchIndex;
use vocalguard::registry::EnrollmentPolicy;
use vocalguard::screening::{gather, ScreeningConfig};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

fn percentiles(label: &str, mut v: Vec<f32>) {
    v.sort_by(f32::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!(
        "{label:<34} n={:<6} min {:.3}  p1 {:.3}  p5 {:.3}  p50 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3}",
        v.len(),
        v[0],
        at(0.01),
        at(0.05),
        at(0.5),
        at(0.95),
        at(0.99),
        v[v.len() - 1]
    );
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data/librispeech-mini"));
    let name = std::env::var("VOCALGUARD_MODEL").unwrap_or_else(|_| DEFAULT_MODEL.to_string());
    let model = SpeakerModel::load(&name, &ResolveOptions::from_env()).expect("model");
    let thresholds = model.card().thresholds.clone();
    let embedder = Embedder::new(model, DecodeLimits::default()).expect("embedder");
    let mut config = ScreeningConfig::default();
    let policy = EnrollmentPolicy::default();
    if let Some(t) = &thresholds {
        config.match_threshold = t.match_threshold;
        config.review_threshold = t.review_threshold;
    }
    println!(
        "model {name}: match {}, review {}",
        config.match_threshold, config.review_threshold
    );
    if let Some(w) = std::env::var("WINDOW_S").ok().and_then(|v| v.parse().ok()) {
        config.window_s = w;
    }
    if let Some(h) = std::env::var("HOP_S").ok().and_then(|v| v.parse().ok()) {
        config.hop_s = h;
    }
    let mut index = SearchIndex::new(embedder.model().card().embedding_dim);
    let mut targets = Vec::new();
    for speaker_dir in files(&root.join("test-other"))
        .into_iter()
        .filter(|p| p.is_dir())
    {
        let speaker = speaker_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let mut enrolled = 0;
        for file in files(&speaker_dir) {
            if file.extension().is_none_or(|e| e != "flac") {
                continue;
            }
            if enrolled < 3 {
                let e = embedder.embed_file(&file).expect("embedding a reference");
                if e.voiced_s >= policy.min_voiced_s {
                    let id = file.file_name().unwrap().to_string_lossy().to_string();
                    index.insert(&id, &speaker, &e.vector);
                    enrolled += 1;
                    continue;
                }
            }
            targets.push((speaker.clone(), file));
        }
    }
    let nontargets: Vec<PathBuf> = files(&root.join("train-clean-100"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "flac"))
        .collect();
    let (mut tw, mut nw, mut ta, mut na, mut own_best_other) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut nontarget_track_max = Vec::new();
    let mut decisions = [[0usize; 4]; 2];
    let mut score_track = |path: &Path, truth: Option<&str>| {
        let audio = audio::load_file(path, &DecodeLimits::default()).expect("decoding");
        let track = embedder
            .embed_windows(audio.samples, &config.windows())
            .expect("windows");
        let everyone = index.len();
        let per_window: Vec<Vec<(String, f32)>> = track
            .windows
            .iter()
            .map(|w| index.top_artists(&w.embedding, everyone))
            .collect();
        for hits in &per_window {
            for (artist, score) in hits {
                if Some(artist.as_str()) == truth {
                    tw.push(*score);
                } else {
                    nw.push(*score);
                }
            }
        }
        let all = ScreeningConfig {
            review_threshold: -1.0,
            ..config
        };
        let evidence = gather(&track, &per_window, &all);
        for e in &evidence {
            if Some(e.artist_id.as_str()) == truth {
                ta.push(e.aggregate_score);
            } else {
                na.push(e.aggregate_score);
            }
        }
        if truth.is_none() {
            nontarget_track_max.push(
                evidence
                    .iter()
                    .map(|e| e.aggregate_score)
                    .fold(-1.0f32, f32::max),
            );
        }
        if truth.is_some() {
            let other = evidence
                .iter()
                .filter(|e| Some(e.artist_id.as_str()) != truth)
                .map(|e| e.aggregate_score)
                .fold(-1.0f32, f32::max);
            own_best_other.push(other);
        }
        let decided = gather(&track, &per_window, &config);
        let slot = match decided.first() {
            Some(e) if e.matched && Some(e.artist_id.as_str()) == truth => 0,
            Some(e) if e.matched => 1,
            Some(_) => 2,
            None => 3,
        };
        decisions[usize::from(truth.is_some())][slot] += 1;
    };
    for (speaker, file) in &targets {
        score_track(file, Some(speaker));
    }
    for file in &nontargets {
        score_track(file, None);
    }
    println!(
        "{} voiceprints, {} held-out target tracks, {} non-target tracks; window {} s, hop {} s",
        index.len(),
        targets.len(),
        nontargets.len(),
        config.window_s,
        config.hop_s
    );
    percentiles("window scores, same speaker", tw);
    percentiles("window scores, other speakers", nw);
    println!(
        "threshold  held-out targets below  non-target tracks at or above (their best artist)"
    );
    let sweep_from = std::env::var("SWEEP_FROM")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(config.match_threshold - 0.10);
    for step in 0..=16 {
        let x = sweep_from as f32 + step as f32 * 0.01;
        println!(
            "{x:.2}       {:>3} / {}                 {:>3} / {}",
            ta.iter().filter(|&&s| s < x).count(),
            ta.len(),
            nontarget_track_max.iter().filter(|&&s| s >= x).count(),
            nontarget_track_max.len()
        );
    }
    percentiles("track aggregate, same speaker", ta);
    percentiles("track aggregate, other speakers", na);
    percentiles("held-out: best other-speaker agg.", own_best_other);
    println!(
        "held-out targets with defaults: right artist matched {}, wrong artist matched {}, grey band {}, nothing {}",
        decisions[1][0], decisions[1][1], decisions[1][2], decisions[1][3]
    );
    println!(
        "non-target tracks with defaults: matched {}, grey band {}, nothing {}",
        decisions[0][1], decisions[0][2], decisions[0][3]
    );
}
