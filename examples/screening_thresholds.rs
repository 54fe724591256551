//! Measures a model's operating points the way a platform meets them: per upload, against a
//! registry, on speakers the calibration did not see, and in another channel without refitting.
//!
//! **Registries.** librispeech-mini is split by speaker into A (fit) and B (check): the first
//! and last five `test-other` speakers, and the even and odd `train-clean-100` files. In each
//! split, every `test-other` speaker is enrolled from three references (its first three
//! utterances with at least the enrollment minimum of voiced audio) and every other
//! `train-clean-100` file's speaker from the first half of that file; the rest of the split's
//! `train-clean-100` speakers are never enrolled.
//!
//! **Uploads.** Held-out `test-other` utterances and the second halves of the enrolled
//! `train-clean-100` files are target uploads (their speaker is in the registry); the
//! never-enrolled files are non-target uploads. Each upload is embedded window by window and
//! every artist's aggregate (the median of its best five windows) computed, as the server does.
//!
//! **Calibration.** A Gaussian calibration is fitted on split A's (upload, artist) aggregates;
//! operating points are read from its non-target Gaussian at per-comparison false-alarm rates.
//! Split B, B's uploads cut to 2–6 s, B with references cut short, and FSDD (`recordings/`,
//! 8 kHz spoken digits joined per speaker with 0.1 s gaps: three 10 s references, 5 s uploads;
//! two folds of three enrolled and three never-enrolled speakers) are scored with A's
//! calibration, for both ways of storing several references: pooled into one voiceprint, and one
//! voiceprint per reference with the upload scored against the closest.
//!
//! The model is `$VOCALGUARD_MODEL` (default: the server's default). `$MATCH_RATE` and
//! `$REVIEW_RATE` (defaults 1e-5 and 1e-4) are the per-comparison rates of the summary lines;
//! with `$CALIBRATION_OUT` set, split A's calibration (pooled) is written there as JSON.
//!
//! `[VOCALGUARD_MODEL=NAME] cargo run --release --example screening_thresholds
//! [LIBRISPEECH_MINI_DIR [FSDD_DIR]]` (defaults `$VOCALGUARD_LIBRISPEECH_MINI` or
//! `../shared/data/librispeech-mini`, `$VOCALGUARD_FSDD` or `../shared/data/fsdd`)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vocalguard::audio::{self, DecodeLimits};
use vocalguard::embed::{Embedder, Embedding, WindowedTrack};
use vocalguard::encoder::{source::DEFAULT_MODEL, ResolveOptions, SpeakerModel};
use vocalguard::registry::index::SearchIndex;
use vocalguard::registry::references::pool_references;
use vocalguard::registry::EnrollmentPolicy;
use vocalguard::scoring::calibration::Calibration;
use vocalguard::screening::{gather, ScreeningConfig};

/// Samples per second of decoded audio.
const RATE: usize = 16_000;
/// Per-comparison false-alarm rates the operating-point table is read at.
const RATES: [f64; 5] = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7];

/// An enrolled speaker.
struct Artist {
    id: String,
    references: Vec<Embedding>,
}

/// An upload and, for a target upload, the artist it is a voice of.
struct Upload {
    truth: Option<String>,
    track: WindowedTrack,
}

/// How several references are stored.
#[derive(Clone, Copy, PartialEq)]
enum Storage {
    Pooled,
    PerReference,
}

impl Storage {
    fn name(self) -> &'static str {
        match self {
            Self::Pooled => "pooled",
            Self::PerReference => "per-ref",
        }
    }
}

/// Every artist's aggregate for one upload.
struct Scored {
    truth: Option<String>,
    aggregates: BTreeMap<String, f32>,
}

impl Scored {
    fn own(&self) -> Option<f32> {
        self.truth.as_ref().map(|t| self.aggregates[t])
    }

    fn best_other(&self) -> f32 {
        self.aggregates
            .iter()
            .filter(|(a, _)| Some(*a) != self.truth.as_ref())
            .map(|(_, &s)| s)
            .fold(-1.0, f32::max)
    }
}

/// Per-upload outcomes at a match and a review point.
struct Outcome {
    targets: usize,
    right_matched: usize,
    strangers: usize,
    flagged: usize,
    reviewed: usize,
    comparisons: usize,
    false_comparisons: usize,
}

fn outcome(scored: &[Scored], match_at: f64, review_at: f64) -> Outcome {
    let mut o = Outcome {
        targets: 0,
        right_matched: 0,
        strangers: 0,
        flagged: 0,
        reviewed: 0,
        comparisons: 0,
        false_comparisons: 0,
    };
    for s in scored {
        for (artist, &a) in &s.aggregates {
            if Some(artist) != s.truth.as_ref() {
                o.comparisons += 1;
                o.false_comparisons += usize::from(f64::from(a) >= match_at);
            }
        }
        let other = f64::from(s.best_other());
        match s.own() {
            Some(own) => {
                o.targets += 1;
                o.right_matched += usize::from(f64::from(own) >= match_at);
            }
            None => {
                o.strangers += 1;
                if other >= match_at {
                    o.flagged += 1;
                } else if other >= review_at {
                    o.reviewed += 1;
                }
            }
        }
    }
    o
}

fn pct(n: usize, of: usize) -> String {
    if of == 0 {
        "-".into()
    } else {
        format!("{:.2}%", 100.0 * n as f64 / of as f64)
    }
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == extension))
        .collect();
    out.sort();
    out
}

fn decode(path: &Path) -> Vec<f32> {
    audio::load_file(path, &DecodeLimits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .samples
}

/// Everything the harness embeds with one model.
struct Harness {
    embedder: Embedder,
    config: ScreeningConfig,
    policy: EnrollmentPolicy,
}

impl Harness {
    /// A reference's embedding; `None` when it holds too little voice to embed at all.
    fn reference(&self, samples: Vec<f32>) -> Option<Embedding> {
        let prepared = self.embedder.prepare_samples(samples).ok()?;
        Some(
            self.embedder
                .embed_prepared(&[&prepared])
                .expect("embedding")
                .remove(0),
        )
    }

    fn upload(&self, samples: Vec<f32>, truth: Option<&str>) -> Upload {
        Upload {
            truth: truth.map(str::to_string),
            track: self
                .embedder
                .embed_windows(samples, &self.config.windows())
                .expect("windows"),
        }
    }

    fn score(&self, artists: &[Artist], uploads: &[Upload], storage: Storage) -> Vec<Scored> {
        let dim = self.embedder.model().card().embedding_dim;
        let mut index = SearchIndex::new(dim);
        for a in artists {
            match storage {
                Storage::Pooled => index.insert(
                    &a.id,
                    &a.id,
                    &pool_references(&a.references).expect("references").vector,
                ),
                Storage::PerReference => {
                    for (i, r) in a.references.iter().enumerate() {
                        index.insert(&format!("{}#{i}", a.id), &a.id, &r.vector);
                    }
                }
            }
        }
        let everyone = ScreeningConfig {
            review_threshold: -1.0,
            match_threshold: 2.0,
            ..self.config
        };
        uploads
            .iter()
            .filter(|u| !u.track.windows.is_empty())
            .map(|u| {
                let per_window: Vec<Vec<(String, f32)>> = u
                    .track
                    .windows
                    .iter()
                    .map(|w| index.top_artists(&w.embedding, index.len()))
                    .collect();
                let mut aggregates: BTreeMap<String, f32> =
                    artists.iter().map(|a| (a.id.clone(), -1.0)).collect();
                for e in gather(&u.track, &per_window, &everyone) {
                    aggregates.insert(e.artist_id, e.aggregate_score);
                }
                Scored {
                    truth: u.truth.clone(),
                    aggregates,
                }
            })
            .collect()
    }
}

/// One librispeech-mini split: its registry and uploads.
struct Split {
    artists: Vec<Artist>,
    uploads: Vec<Upload>,
    /// Raw samples of the uploads, to cut short.
    upload_samples: Vec<(Option<String>, Vec<f32>)>,
    /// Raw samples of the multi-reference artists' references, to cut short.
    reference_samples: Vec<(String, Vec<Vec<f32>>)>,
}

fn librispeech_split(h: &Harness, root: &Path, part: usize) -> Split {
    let mut split = Split {
        artists: Vec::new(),
        uploads: Vec::new(),
        upload_samples: Vec::new(),
        reference_samples: Vec::new(),
    };
    let speakers = files(&root.join("test-other"), "flac");
    let half = speakers.len() / 2;
    let mine = if part == 0 {
        &speakers[..half]
    } else {
        &speakers[half..]
    };
    for dir in mine {
        let speaker = dir.file_name().unwrap().to_string_lossy().to_string();
        let (mut references, mut raw) = (Vec::new(), Vec::new());
        for file in files(dir, "flac") {
            let samples = decode(&file);
            if references.len() < 3 {
                let r = h.reference(samples.clone());
                if let Some(r) = r.filter(|r| r.voiced_s >= h.policy.min_voiced_s) {
                    references.push(r);
                    raw.push(samples);
                    continue;
                }
            }
            split.upload_samples.push((Some(speaker.clone()), samples));
        }
        split.reference_samples.push((speaker.clone(), raw));
        split.artists.push(Artist {
            id: speaker,
            references,
        });
    }
    let clean = files(&root.join("train-clean-100"), "flac");
    for (i, file) in clean.iter().enumerate().filter(|(i, _)| i % 2 == part) {
        let speaker = file.file_name().unwrap().to_string_lossy().to_string();
        let samples = decode(file);
        if (i / 2) % 2 == 0 {
            let (first, second) = samples.split_at(samples.len() / 2);
            let r = h.reference(first.to_vec());
            if let Some(r) = r.filter(|r| r.voiced_s >= h.policy.min_voiced_s) {
                split.artists.push(Artist {
                    id: speaker.clone(),
                    references: vec![r],
                });
                split.upload_samples.push((Some(speaker), second.to_vec()));
            }
        } else {
            split.upload_samples.push((None, samples));
        }
    }
    split.uploads = split
        .upload_samples
        .iter()
        .map(|(truth, s)| h.upload(s.clone(), truth.as_deref()))
        .collect();
    split
}

/// FSDD speakers as continuous 16 kHz speech: each speaker's digits in (repetition, digit)
/// order joined with 0.1 s of silence.
fn fsdd_speakers(dir: &Path) -> Vec<(String, Vec<f32>)> {
    /// A clip's place in a speaker's sequence: (repetition, digit).
    type Order = (u32, u32);
    let mut by_speaker: BTreeMap<String, Vec<(Order, PathBuf)>> = BTreeMap::new();
    for file in files(&dir.join("recordings"), "wav") {
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        let parts: Vec<&str> = stem.split('_').collect();
        let [digit, speaker, rep] = parts[..] else {
            continue;
        };
        let key = (rep.parse().unwrap_or(0), digit.parse().unwrap_or(0));
        by_speaker
            .entry(speaker.to_string())
            .or_default()
            .push((key, file));
    }
    by_speaker
        .into_iter()
        .map(|(speaker, mut clips)| {
            clips.sort();
            let mut joined = Vec::new();
            for (_, file) in clips {
                joined.extend(decode(&file));
                joined.extend(std::iter::repeat_n(0.0, RATE / 10));
            }
            (speaker, joined)
        })
        .collect()
}

/// One FSDD fold: speakers `enrolled` are in the registry, the others never enrolled.
fn fsdd_fold(h: &Harness, speakers: &[(String, Vec<f32>)], enrolled: &[usize]) -> Split {
    let (reference_len, upload_len) = (10 * RATE, 5 * RATE);
    let mut split = Split {
        artists: Vec::new(),
        uploads: Vec::new(),
        upload_samples: Vec::new(),
        reference_samples: Vec::new(),
    };
    for (i, (speaker, samples)) in speakers.iter().enumerate() {
        let is_enrolled = enrolled.contains(&i);
        let mut rest = &samples[..];
        if is_enrolled {
            let references = (0..3)
                .filter_map(|k| {
                    h.reference(samples[k * reference_len..(k + 1) * reference_len].to_vec())
                })
                .collect();
            split.artists.push(Artist {
                id: speaker.clone(),
                references,
            });
            rest = &samples[3 * reference_len..];
        }
        for clip in rest.chunks_exact(upload_len) {
            let truth = is_enrolled.then_some(speaker.as_str());
            split.uploads.push(h.upload(clip.to_vec(), truth));
        }
    }
    split
}

/// Target and non-target aggregates of scored uploads.
fn trials(scored: &[Scored]) -> (Vec<f64>, Vec<f64>) {
    let (mut t, mut n) = (Vec::new(), Vec::new());
    for s in scored {
        for (artist, &a) in &s.aggregates {
            if Some(artist) == s.truth.as_ref() {
                t.push(f64::from(a));
            } else {
                n.push(f64::from(a));
            }
        }
    }
    (t, n)
}

fn report(label: &str, scored: &[Scored], c: &Calibration, match_rate: f64, review_rate: f64) {
    let (t, n) = trials(scored);
    let max_n = n.iter().copied().fold(f64::MIN, f64::max);
    let min_t = t.iter().copied().fold(f64::MAX, f64::min);
    let at = |r: f64| c.score_at_false_alarm(r).expect("a Gaussian calibration");
    let o = outcome(scored, at(match_rate), at(review_rate));
    println!(
        "{label:<34} targets matched {:>4}/{:<4} {:>8} | never-enrolled flagged {:>7}, review {:>7} of {:<4} | comparisons over match {}/{} | min target {min_t:.3}, max non-target {max_n:.3}",
        o.right_matched,
        o.targets,
        pct(o.right_matched, o.targets),
        pct(o.flagged, o.strangers),
        pct(o.reviewed, o.strangers),
        o.strangers,
        o.false_comparisons,
        o.comparisons,
    );
}

fn sweep(label: &str, scored: &[Scored], c: &Calibration) {
    for rate in RATES {
        let x = c
            .score_at_false_alarm(rate)
            .expect("a Gaussian calibration");
        let o = outcome(scored, x, x);
        println!(
            "  {label:<32} rate {rate:>6.0e} cosine {x:.3}: targets matched {:>8}, never-enrolled at or above {:>7}",
            pct(o.right_matched, o.targets),
            pct(o.flagged, o.strangers),
        );
    }
}

fn env_rate(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let root = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("VOCALGUARD_LIBRISPEECH_MINI")
            .map_or_else(|| "../shared/data/librispeech-mini".into(), PathBuf::from)
    });
    let fsdd = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("VOCALGUARD_FSDD")
            .map_or_else(|| "../shared/data/fsdd".into(), PathBuf::from)
    });
    let (match_rate, review_rate) = (env_rate("MATCH_RATE", 1e-5), env_rate("REVIEW_RATE", 1e-4));
    let name = std::env::var("VOCALGUARD_MODEL").unwrap_or_else(|_| DEFAULT_MODEL.to_string());
    let model = SpeakerModel::load(&name, &ResolveOptions::from_env()).expect("model");
    let h = Harness {
        embedder: Embedder::new(model, DecodeLimits::default()).expect("embedder"),
        config: ScreeningConfig::default(),
        policy: EnrollmentPolicy::default(),
    };
    let id = h.embedder.model_id().clone();
    println!(
        "model {id}; window {} s, hop {} s; summary at match rate {match_rate:e}, review rate {review_rate:e} per comparison",
        h.config.window_s, h.config.hop_s
    );
    let a = librispeech_split(&h, &root, 0);
    let b = librispeech_split(&h, &root, 1);
    let speakers = fsdd_speakers(&fsdd);
    let folds = [
        fsdd_fold(&h, &speakers, &[0, 1, 2]),
        fsdd_fold(&h, &speakers, &[3, 4, 5]),
    ];
    let count = |s: &Split| {
        let targets = s.uploads.iter().filter(|u| u.truth.is_some()).count();
        (s.artists.len(), targets, s.uploads.len() - targets)
    };
    for (label, s) in [
        ("A", &a),
        ("B", &b),
        ("FSDD 1", &folds[0]),
        ("FSDD 2", &folds[1]),
    ] {
        let (artists, targets, strangers) = count(s);
        println!("{label}: {artists} artists, {targets} target uploads, {strangers} never-enrolled uploads");
    }
    for storage in [Storage::Pooled, Storage::PerReference] {
        let fit_on = h.score(&a.artists, &a.uploads, storage);
        let (t, n) = trials(&fit_on);
        let mut c = Calibration::fit_gaussian(&t, &n, 0.01, match_rate).expect("calibration");
        c.model = id.name.clone();
        c.model_sha256 = id.sha256.clone();
        println!(
            "\n[{}] calibration on A: LLR = {:.3} * score + {:.3}; non-target N({:.4}, {:.4}); {} target / {} non-target trials",
            storage.name(),
            c.slope,
            c.offset,
            c.nontarget_mean.unwrap(),
            c.nontarget_sd.unwrap(),
            t.len(),
            n.len()
        );
        if storage == Storage::Pooled {
            if let Ok(path) = std::env::var("CALIBRATION_OUT") {
                std::fs::write(&path, c.to_json()).expect("writing the calibration");
                println!("calibration written to {path}");
            }
        }
        let on_b = h.score(&b.artists, &b.uploads, storage);
        let on_fsdd: Vec<Scored> = folds
            .iter()
            .flat_map(|f| h.score(&f.artists, &f.uploads, storage))
            .collect();
        let tag = |what: &str| format!("{} {what}", storage.name());
        report(&tag("A (fitted)"), &fit_on, &c, match_rate, review_rate);
        report(&tag("B (held out)"), &on_b, &c, match_rate, review_rate);
        report(
            &tag("FSDD (no refit)"),
            &on_fsdd,
            &c,
            match_rate,
            review_rate,
        );
        for seconds in [2usize, 3, 4, 6] {
            let cut: Vec<Upload> = b
                .upload_samples
                .iter()
                .map(|(truth, s)| {
                    h.upload(s[..s.len().min(seconds * RATE)].to_vec(), truth.as_deref())
                })
                .collect();
            let scored = h.score(&b.artists, &cut, storage);
            report(
                &tag(&format!("B uploads cut to {seconds} s")),
                &scored,
                &c,
                match_rate,
                review_rate,
            );
        }
        for seconds in [2usize, 3] {
            let mut artists: Vec<Artist> = Vec::new();
            for artist in &b.artists {
                let raw = b.reference_samples.iter().find(|(id, _)| *id == artist.id);
                let references = match raw {
                    Some((_, raw)) => raw
                        .iter()
                        .filter_map(|s| h.reference(s[..s.len().min(seconds * RATE)].to_vec()))
                        .collect(),
                    None => artist.references.to_vec(),
                };
                artists.push(Artist {
                    id: artist.id.clone(),
                    references,
                });
            }
            let scored = h.score(&artists, &b.uploads, storage);
            report(
                &tag(&format!("B, 3 references of {seconds} s")),
                &scored,
                &c,
                match_rate,
                review_rate,
            );
        }
        sweep(&tag("B"), &on_b, &c);
        sweep(&tag("FSDD"), &on_fsdd, &c);
    }
}
