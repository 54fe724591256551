//! Trial lists for offline speaker-verification evaluation, in three formats detected
//! automatically by [`load_trials`]:
//!
//! * **VoxCeleb**: one trial per line, `LABEL ENROLL TEST`, with LABEL `1` (target) or `0`
//!   (non-target), e.g. `1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav`.
//! * **Kaldi/NIST**: `ENROLL TEST target|nontarget` (the label is case-insensitive).
//! * **Speaker directories**: a directory whose immediate subdirectories are speakers; trials
//!   are generated from every pair of their audio files (see [`load_trials`]).
//!
//! In both file formats fields are separated by whitespace, blank lines and lines starting
//! with `#` are skipped, and ENROLL may name several files joined by `,` (`a.flac,b.flac`),
//! whose embeddings the evaluator averages. Paths therefore cannot contain whitespace or `,`.
//! The format is taken from the first trial line; every later line must use the same one.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::metrics::SplitMix64;

/// Audio extensions (lower case) picked up in the speaker-directory layout.
const AUDIO_EXTENSIONS: [&str; 5] = ["flac", "wav", "mp3", "ogg", "m4a"];

/// How a trial list was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialFormat {
    /// `LABEL ENROLL TEST` lines, LABEL `1` or `0`.
    #[serde(rename = "voxceleb")]
    VoxCeleb,
    /// `ENROLL TEST target|nontarget` lines.
    Kaldi,
    /// A directory per speaker; trials are every pair of files.
    SpeakerDirs,
}

impl TrialFormat {
    /// The fields of one line of this format (for error messages).
    fn layout(self) -> &'static str {
        match self {
            TrialFormat::VoxCeleb => "LABEL ENROLL TEST",
            TrialFormat::Kaldi => "ENROLL TEST target|nontarget",
            TrialFormat::SpeakerDirs => "a directory per speaker",
        }
    }

    /// What the label of this format must be (for error messages).
    fn label_rule(self) -> &'static str {
        match self {
            TrialFormat::VoxCeleb => "the first field must be `1` (target) or `0` (non-target)",
            TrialFormat::Kaldi => "the last field must be `target` or `nontarget`",
            TrialFormat::SpeakerDirs => "labels come from the directories",
        }
    }
}

impl fmt::Display for TrialFormat {
    /// The same name as the JSON form: `voxceleb`, `kaldi`, `speaker-dirs`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrialFormat::VoxCeleb => "voxceleb",
            TrialFormat::Kaldi => "kaldi",
            TrialFormat::SpeakerDirs => "speaker-dirs",
        })
    }
}

/// One trial: enrollment audio (one or more files, averaged like the server averages several
/// voiceprints), the test file, and whether it is a target (same-speaker) trial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Trial {
    /// The enrollment files, in the order given (at least one).
    pub enroll: Vec<PathBuf>,
    /// The test file.
    pub test: PathBuf,
    /// True for a target (same speaker) trial, false for a non-target one.
    pub target: bool,
}

/// A loaded trial list: its format and its trials, in file order (or, for speaker
/// directories, targets then non-targets, each sorted by enrollment then test path).
#[derive(Debug, Clone)]
pub struct TrialList {
    /// How the list was given.
    pub format: TrialFormat,
    /// The trials; there is at least one target and one non-target.
    pub trials: Vec<Trial>,
}

impl TrialList {
    /// Every distinct audio file the trials name (enroll and test), sorted, deduplicated.
    pub fn files(&self) -> Vec<PathBuf> {
        let set: BTreeSet<&PathBuf> = self
            .trials
            .iter()
            .flat_map(|t| t.enroll.iter().chain(std::iter::once(&t.test)))
            .collect();
        set.into_iter().cloned().collect()
    }

    /// The number of target trials.
    pub fn n_target(&self) -> usize {
        self.trials.iter().filter(|t| t.target).count()
    }

    /// The number of non-target trials.
    pub fn n_nontarget(&self) -> usize {
        self.trials.len() - self.n_target()
    }
}

/// Options for the directory-per-speaker layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirOptions {
    /// Most non-target pairs kept; when there are more, exactly this many are sampled.
    pub max_nontarget: usize,
    /// Seed of that sample: the same seed and files give the same trials.
    pub seed: u64,
}

impl Default for DirOptions {
    /// At most 10,000 non-targets, seed 0.
    fn default() -> Self {
        Self {
            max_nontarget: 10_000,
            seed: 0,
        }
    }
}

/// Why a trial list could not be loaded. Errors about one line name the file and its
/// 1-based line number as `file:line:`.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    /// The trial file or a directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is not valid UTF-8.
    #[error("{}:{line}: not valid UTF-8", path.display())]
    NotUtf8 {
        /// The trial file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The first trial line matches neither file format.
    #[error(
        "{}:{line}: unrecognised trial line `{text}`: expected 3 whitespace-separated fields, \
         either VoxCeleb `LABEL ENROLL TEST` with LABEL 1 (target) or 0 (non-target), e.g. \
         `1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav`, or Kaldi/NIST \
         `ENROLL TEST target|nontarget`, e.g. `spk1/a.wav spk2/b.wav nontarget` \
         (ENROLL may join several files with `,`)",
        path.display()
    )]
    UnknownFormat {
        /// The trial file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line, trimmed.
        text: String,
    },
    /// A line does not have 3 fields.
    #[error(
        "{}:{line}: expected 3 fields ({}), found {found}",
        path.display(),
        format.layout()
    )]
    FieldCount {
        /// The trial file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The file's format.
        format: TrialFormat,
        /// How many fields the line has.
        found: usize,
    },
    /// A line is in the other file format than the first trial line.
    #[error(
        "{}:{line}: line is in {found} format ({}), but the file's first trial (line \
         {first_line}) is in {expected} format ({}); one file holds one format",
        path.display(),
        found.layout(),
        expected.layout()
    )]
    MixedFormats {
        /// The trial file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The format of the first trial line.
        expected: TrialFormat,
        /// The format of this line.
        found: TrialFormat,
        /// 1-based line number of the first trial line.
        first_line: usize,
    },
    /// A line of the file's format has a label that is not one of that format's.
    #[error("{}:{line}: bad label `{label}`: {}", path.display(), format.label_rule())]
    BadLabel {
        /// The trial file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The file's format.
        format: TrialFormat,
        /// The offending field.
        label: String,
    },
    /// A path field is empty, e.g. `a.wav,,b.wav` or a trailing `,`.
    #[error("{}:{line}: empty audio path in `{field}`", path.display())]
    EmptyPath {
        /// The trial file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field holding the empty path.
        field: String,
    },
    /// The test field names several files; only the enrollment may.
    #[error(
        "{}:{line}: test field `{field}` names several files; only ENROLL may join files with `,`",
        path.display()
    )]
    MultiFileTest {
        /// The trial file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The test field.
        field: String,
    },
    /// A referenced audio file does not exist (the first one, in line order).
    #[error(
        "{}:{line}: audio file {} not found (relative paths are resolved against {})",
        path.display(),
        audio.display(),
        base.display()
    )]
    MissingAudio {
        /// The trial file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The audio path, resolved.
        audio: PathBuf,
        /// The directory relative paths were resolved against.
        base: PathBuf,
    },
    /// The file has no trial lines.
    #[error("{}: no trials", path.display())]
    Empty {
        /// The trial file or directory.
        path: PathBuf,
    },
    /// There is no target trial.
    #[error("{}: no target trials (evaluation needs both kinds)", path.display())]
    NoTargets {
        /// The trial file or directory.
        path: PathBuf,
    },
    /// There is no non-target trial.
    #[error("{}: no non-target trials (evaluation needs both kinds)", path.display())]
    NoNontargets {
        /// The trial file or directory.
        path: PathBuf,
    },
    /// A speaker-directory layout with fewer than 2 speakers that have audio files.
    #[error(
        "{}: need at least 2 speaker subdirectories with audio files ({}), found {found}",
        path.display(),
        AUDIO_EXTENSIONS.join(", ")
    )]
    TooFewSpeakers {
        /// The directory.
        path: PathBuf,
        /// How many speaker subdirectories hold audio files.
        found: usize,
    },
}

/// Loads `path`: a directory → the speaker-directory layout; a file → VoxCeleb or Kaldi,
/// detected from its first non-empty, non-`#` line. Relative audio paths are resolved
/// against `audio_root`, or when None against the trial file's directory, and every audio
/// file must exist (the first missing one is reported with its line).
///
/// In the speaker-directory layout, each non-hidden immediate subdirectory of `path` is a
/// speaker (other top-level entries, such as a `LICENSE.TXT`, are ignored). Its audio files
/// (extensions flac, wav, mp3, ogg, m4a, in any case) are found recursively, skipping hidden
/// entries and not following symlinked subdirectories; speakers without any are ignored.
/// Targets are every pair of two files of the same speaker, non-targets every pair of files
/// of different speakers, each with the pair's first file in sorted order as enrollment.
/// When there are more than `dirs.max_nontarget` non-target pairs, exactly that many are
/// drawn uniformly without replacement: pairs are numbered in sorted order and indices are
/// drawn with Floyd's algorithm from the crate's SplitMix64 seeded with `dirs.seed`, so memory is
/// O(files + max_nontarget) whatever the number of pairs. `audio_root` is not used there.
pub fn load_trials(
    path: &Path,
    audio_root: Option<&Path>,
    dirs: &DirOptions,
) -> Result<TrialList, TrialError> {
    let meta = fs::metadata(path).map_err(|source| TrialError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return load_speaker_dirs(path, dirs);
    }
    let base = match audio_root {
        Some(root) => root.to_path_buf(),
        None => path.parent().unwrap_or(Path::new("")).to_path_buf(),
    };
    let bytes = fs::read(path).map_err(|source| TrialError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &bytes, &base)
}

/// The enrollment field, test field and label of a 3-field line if it is in `format`.
fn parse_as<'a>(format: TrialFormat, fields: &[&'a str]) -> Option<(&'a str, &'a str, bool)> {
    match (format, fields) {
        (TrialFormat::VoxCeleb, &[label, enroll, test]) => match label {
            "1" => Some((enroll, test, true)),
            "0" => Some((enroll, test, false)),
            _ => None,
        },
        (TrialFormat::Kaldi, &[enroll, test, label]) => {
            if label.eq_ignore_ascii_case("target") {
                Some((enroll, test, true))
            } else if label.eq_ignore_ascii_case("nontarget") {
                Some((enroll, test, false))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Parses a VoxCeleb or Kaldi trial file's contents; `base` resolves relative audio paths.
fn parse_file(path: &Path, bytes: &[u8], base: &Path) -> Result<TrialList, TrialError> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    // The format and the line it was detected on.
    let mut detected: Option<(TrialFormat, usize)> = None;
    let mut trials = Vec::new();
    let mut present: HashSet<PathBuf> = HashSet::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let text = std::str::from_utf8(raw)
            .map_err(|_| TrialError::NotUtf8 {
                path: path.to_path_buf(),
                line,
            })?
            .trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (format, first_line) = match detected {
            Some(d) => d,
            None => {
                let format = [TrialFormat::VoxCeleb, TrialFormat::Kaldi]
                    .into_iter()
                    .find(|&f| parse_as(f, &fields).is_some())
                    .ok_or_else(|| TrialError::UnknownFormat {
                        path: path.to_path_buf(),
                        line,
                        text: text.to_string(),
                    })?;
                *detected.insert((format, line))
            }
        };
        if fields.len() != 3 {
            return Err(TrialError::FieldCount {
                path: path.to_path_buf(),
                line,
                format,
                found: fields.len(),
            });
        }
        let (enroll, test, target) = match parse_as(format, &fields) {
            Some(parsed) => parsed,
            None => {
                let other = match format {
                    TrialFormat::VoxCeleb => TrialFormat::Kaldi,
                    _ => TrialFormat::VoxCeleb,
                };
                if parse_as(other, &fields).is_some() {
                    return Err(TrialError::MixedFormats {
                        path: path.to_path_buf(),
                        line,
                        expected: format,
                        found: other,
                        first_line,
                    });
                }
                let label = match format {
                    TrialFormat::VoxCeleb => fields[0],
                    _ => fields[2],
                };
                return Err(TrialError::BadLabel {
                    path: path.to_path_buf(),
                    line,
                    format,
                    label: label.to_string(),
                });
            }
        };
        let mut resolve = |field: &str| -> Result<Vec<PathBuf>, TrialError> {
            field
                .split(',')
                .map(|name| {
                    if name.is_empty() {
                        return Err(TrialError::EmptyPath {
                            path: path.to_path_buf(),
                            line,
                            field: field.to_string(),
                        });
                    }
                    let audio = base.join(name);
                    if !present.contains(&audio) {
                        if !audio.is_file() {
                            return Err(TrialError::MissingAudio {
                                path: path.to_path_buf(),
                                line,
                                audio,
                                base: if base.as_os_str().is_empty() {
                                    PathBuf::from(".")
                                } else {
                                    base.to_path_buf()
                                },
                            });
                        }
                        present.insert(audio.clone());
                    }
                    Ok(audio)
                })
                .collect()
        };
        if test.contains(',') {
            return Err(TrialError::MultiFileTest {
                path: path.to_path_buf(),
                line,
                field: test.to_string(),
            });
        }
        let enroll = resolve(enroll)?;
        let test = resolve(test)?.remove(0);
        trials.push(Trial {
            enroll,
            test,
            target,
        });
    }
    let Some((format, _)) = detected else {
        return Err(TrialError::Empty {
            path: path.to_path_buf(),
        });
    };
    finish(path, format, trials)
}

/// Checks that both kinds of trial are present.
fn finish(path: &Path, format: TrialFormat, trials: Vec<Trial>) -> Result<TrialList, TrialError> {
    let list = TrialList { format, trials };
    if list.n_target() == 0 {
        return Err(TrialError::NoTargets {
            path: path.to_path_buf(),
        });
    }
    if list.n_nontarget() == 0 {
        return Err(TrialError::NoNontargets {
            path: path.to_path_buf(),
        });
    }
    Ok(list)
}

/// True for names starting with `.` (hidden files, editor and OS droppings).
fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

/// True when `path` has one of [`AUDIO_EXTENSIONS`], in any case.
fn is_audio(path: &Path) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| AUDIO_EXTENSIONS.iter().any(|a| a.eq_ignore_ascii_case(ext)))
}

/// Appends the audio files under `dir`, recursively (hidden entries skipped, symlinked
/// directories not followed, symlinked files followed).
fn collect_audio(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), TrialError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrialError::Io { path, source }
    };
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if is_hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_dir() {
            collect_audio(&path, out)?;
        } else if is_audio(&path) && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Every audio file under `dir` (extensions flac, wav, mp3, ogg, m4a, in any case), found
/// recursively as in the speaker-directory layout (hidden entries skipped, symlinked
/// directories not followed), sorted.
pub fn audio_files(dir: &Path) -> Result<Vec<PathBuf>, TrialError> {
    let mut files = Vec::new();
    collect_audio(dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// Builds the trials of the speaker-directory layout at `dir` (see [`load_trials`]).
fn load_speaker_dirs(dir: &Path, opts: &DirOptions) -> Result<TrialList, TrialError> {
    let io = |source| TrialError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut speakers = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if !is_hidden(&entry.file_name()) && path.is_dir() {
            speakers.push(path);
        }
    }
    speakers.sort();
    // Each speaker's files, sorted; with the speakers sorted too, the concatenation is sorted.
    let mut files: Vec<PathBuf> = Vec::new();
    // For each file, the index one past the last file of its speaker.
    let mut block_end: Vec<usize> = Vec::new();
    let mut n_speakers = 0;
    for speaker in &speakers {
        let start = files.len();
        files.extend(audio_files(speaker)?);
        let end = files.len();
        if end > start {
            n_speakers += 1;
            block_end.resize(end, end);
        }
    }
    if n_speakers < 2 {
        return Err(TrialError::TooFewSpeakers {
            path: dir.to_path_buf(),
            found: n_speakers,
        });
    }

    let pair = |i: usize, j: usize, target: bool| Trial {
        enroll: vec![files[i].clone()],
        test: files[j].clone(),
        target,
    };
    let mut trials = Vec::new();
    let mut start = 0;
    while start < files.len() {
        let end = block_end[start];
        for i in start..end {
            trials.extend((i + 1..end).map(|j| pair(i, j, true)));
        }
        start = end;
    }

    // Non-target pair number r, in sorted order: file i pairs with every file after its
    // speaker's block, and `first[i]` is the number of the first pair with enrollment i.
    let n = files.len();
    let mut first = Vec::with_capacity(n);
    let mut total = 0usize;
    for &end in &block_end {
        first.push(total);
        total += n - end;
    }
    let nth_pair = |r: usize| {
        let i = first.partition_point(|&f| f <= r) - 1;
        (i, block_end[i] + (r - first[i]))
    };
    if total <= opts.max_nontarget {
        trials.extend((0..total).map(|r| {
            let (i, j) = nth_pair(r);
            pair(i, j, false)
        }));
    } else {
        // Floyd's algorithm: exactly k distinct indices of 0..total, uniformly.
        let k = opts.max_nontarget;
        let mut rng = SplitMix64::new(opts.seed);
        let mut chosen = BTreeSet::new();
        for j in total - k..total {
            let t = rng.index(j + 1);
            if !chosen.insert(t) {
                chosen.insert(j);
            }
        }
        trials.extend(chosen.into_iter().map(|r| {
            let (i, j) = nth_pair(r);
            pair(i, j, false)
        }));
    }
    finish(dir, TrialFormat::SpeakerDirs, trials)
}

/// Writes one line per trial from `line(trial, enrollment field, test path)`, with paths
/// relative to `root` when they lie under it, else absolute (made so lexically, from the
/// current directory, when relative); non-UTF-8 bytes are replaced.
fn write_lines(
    list: &TrialList,
    root: &Path,
    line: impl Fn(&Trial, &str, &str) -> String,
) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let root = absolute(root);
    let show = |p: &Path| {
        let p = absolute(p);
        match p.strip_prefix(&root) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
            _ => p.display().to_string(),
        }
    };
    list.trials
        .iter()
        .map(|t| {
            let enroll: Vec<String> = t.enroll.iter().map(|p| show(p)).collect();
            line(t, &enroll.join(","), &show(&t.test))
        })
        .collect()
}

/// Writes `list` as a VoxCeleb trial file (`LABEL ENROLL TEST` lines), with paths relative
/// to `root` (absolute when not under it) and multi-file enrollments joined by `,`. Paths
/// containing whitespace or `,` cannot be read back.
pub fn write_voxceleb(list: &TrialList, root: &Path) -> String {
    write_lines(list, root, |t, enroll, test| {
        format!("{} {enroll} {test}\n", u8::from(t.target))
    })
}

/// Writes `list` as a Kaldi/NIST trial file (`ENROLL TEST target|nontarget` lines), with
/// paths as in [`write_voxceleb`].
pub fn write_kaldi(list: &TrialList, root: &Path) -> String {
    write_lines(list, root, |t, enroll, test| {
        let label = if t.target { "target" } else { "nontarget" };
        format!("{enroll} {test} {label}\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates an empty file at `dir/rel` (and its parent directories), returning its path.
    fn touch(dir: &Path, rel: &str) -> PathBuf {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"").unwrap();
        path
    }

    /// Writes a trial file `dir/name` with `text`, returning its path.
    fn trial_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn load(path: &Path) -> Result<TrialList, TrialError> {
        load_trials(path, None, &DirOptions::default())
    }

    /// A temporary directory holding empty `a.wav`, `b.wav`, `c.wav`.
    fn abc() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["a.wav", "b.wav", "c.wav"] {
            touch(tmp.path(), name);
        }
        tmp
    }

    fn trial(enroll: &[&Path], test: &Path, target: bool) -> Trial {
        Trial {
            enroll: enroll.iter().map(|p| p.to_path_buf()).collect(),
            test: test.to_path_buf(),
            target,
        }
    }

    #[test]
    fn voxceleb_file_parses() {
        let tmp = abc();
        let d = tmp.path();
        let f = trial_file(
            d,
            "veri.txt",
            "1 a.wav b.wav\n0 a.wav c.wav\n0\tb.wav   c.wav\n",
        );
        let list = load(&f).unwrap();
        assert_eq!(list.format, TrialFormat::VoxCeleb);
        assert_eq!(
            list.trials,
            vec![
                trial(&[&d.join("a.wav")], &d.join("b.wav"), true),
                trial(&[&d.join("a.wav")], &d.join("c.wav"), false),
                trial(&[&d.join("b.wav")], &d.join("c.wav"), false),
            ]
        );
        assert_eq!((list.n_target(), list.n_nontarget()), (1, 2));
        assert_eq!(
            list.files(),
            vec![d.join("a.wav"), d.join("b.wav"), d.join("c.wav")]
        );
    }

    #[test]
    fn kaldi_file_parses_with_any_case() {
        let tmp = abc();
        let d = tmp.path();
        let f = trial_file(
            d,
            "trials",
            "a.wav b.wav target\nc.wav a.wav NonTarget\nb.wav c.wav TARGET\n",
        );
        let list = load(&f).unwrap();
        assert_eq!(list.format, TrialFormat::Kaldi);
        assert_eq!(
            list.trials,
            vec![
                trial(&[&d.join("a.wav")], &d.join("b.wav"), true),
                trial(&[&d.join("c.wav")], &d.join("a.wav"), false),
                trial(&[&d.join("b.wav")], &d.join("c.wav"), true),
            ]
        );
        assert_eq!((list.n_target(), list.n_nontarget()), (2, 1));
    }

    #[test]
    fn comments_blank_lines_crlf_and_bom_are_skipped() {
        let tmp = abc();
        let text = "\u{feff}# VoxCeleb1-O style\r\n\r\n   \n  # indented comment\n\
                    1 a.wav b.wav\r\n\n0 a.wav c.wav  \r\n# end\n";
        let list = load(&trial_file(tmp.path(), "t.txt", text)).unwrap();
        assert_eq!(list.format, TrialFormat::VoxCeleb);
        assert_eq!(list.trials.len(), 2);
        // Line numbers count the skipped lines.
        let text = "# header\n\na.wav b.wav target\n\nb.wav\n";
        let e = load(&trial_file(tmp.path(), "k.txt", text)).unwrap_err();
        assert!(e.to_string().contains("k.txt:5: expected 3 fields"), "{e}");
    }

    #[test]
    fn detection_uses_the_first_trial_line() {
        let tmp = abc();
        let d = tmp.path();
        let vox = load(&trial_file(d, "v", "# c\n0 a.wav b.wav\n1 a.wav a.wav\n")).unwrap();
        assert_eq!(vox.format, TrialFormat::VoxCeleb);
        let kaldi = load(&trial_file(
            d,
            "k",
            "a.wav b.wav nontarget\na.wav a.wav target\n",
        ));
        assert_eq!(kaldi.unwrap().format, TrialFormat::Kaldi);
        let e = load(&trial_file(d, "u", "\n# c\nyes a.wav b.wav\n")).unwrap_err();
        assert!(
            matches!(e, TrialError::UnknownFormat { line: 3, ref text, .. } if text == "yes a.wav b.wav"),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("u:3: unrecognised trial line `yes a.wav b.wav`"),
            "{msg}"
        );
        assert!(msg.contains("VoxCeleb `LABEL ENROLL TEST`"), "{msg}");
        assert!(msg.contains("1 id10270/x6uYqmx31kE/00001.wav"), "{msg}");
        assert!(
            msg.contains("Kaldi/NIST `ENROLL TEST target|nontarget`"),
            "{msg}"
        );
        assert!(msg.contains("spk1/a.wav spk2/b.wav nontarget"), "{msg}");
        // Wrong field counts on the first line are unrecognised too.
        for text in ["1 a.wav", "1 a.wav b.wav c.wav", "a.wav b.wav target extra"] {
            let e = load(&trial_file(d, "w", text)).unwrap_err();
            assert!(
                matches!(e, TrialError::UnknownFormat { line: 1, .. }),
                "{e:?}"
            );
        }
    }

    #[test]
    fn multi_file_enrollment_keeps_order() {
        let tmp = abc();
        let d = tmp.path();
        let text = "1 b.wav,a.wav c.wav\n0 a.wav,b.wav,c.wav a.wav\n";
        let list = load(&trial_file(d, "t", text)).unwrap();
        assert_eq!(
            list.trials[0].enroll,
            vec![d.join("b.wav"), d.join("a.wav")]
        );
        assert_eq!(
            list.trials[1].enroll,
            vec![d.join("a.wav"), d.join("b.wav"), d.join("c.wav")]
        );
        let text = "b.wav,a.wav c.wav target\nc.wav a.wav nontarget\n";
        let list = load(&trial_file(d, "k", text)).unwrap();
        assert_eq!(
            list.trials[0].enroll,
            vec![d.join("b.wav"), d.join("a.wav")]
        );
        assert_eq!(list.files().len(), 3);
    }

    #[test]
    fn relative_paths_resolve_against_the_file_dir_or_audio_root() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let a = touch(d, "lists/spk1/a.wav");
        let b = touch(d, "lists/spk2/b.wav");
        let x = touch(d, "audio/spk1/a.wav");
        let y = touch(d, "audio/spk2/b.wav");
        let f = trial_file(
            &d.join("lists"),
            "trials.txt",
            "1 spk1/a.wav spk1/a.wav\n0 spk1/a.wav spk2/b.wav\n",
        );
        let list = load(&f).unwrap();
        assert_eq!(list.files(), vec![a.clone(), b]);
        let root = d.join("audio");
        let list = load_trials(&f, Some(&root), &DirOptions::default()).unwrap();
        assert_eq!(list.files(), vec![x.clone(), y]);
        // Absolute paths are kept as they are, whatever the root.
        let text = format!(
            "1 {} {}\n0 {} spk2/b.wav\n",
            a.display(),
            a.display(),
            x.display()
        );
        let f = trial_file(d, "abs.txt", &text);
        let list = load_trials(&f, Some(&root), &DirOptions::default()).unwrap();
        assert_eq!(list.trials[0].test, a);
        assert_eq!(list.trials[1].enroll, vec![x]);
        assert_eq!(list.trials[1].test, root.join("spk2/b.wav"));
    }

    /// The error for trial-file `text`, after checking its message names `name:line:`.
    fn line_error(dir: &Path, text: &str, line: usize) -> TrialError {
        let e = load(&trial_file(dir, "t.lst", text)).unwrap_err();
        let msg = e.to_string();
        let want = format!("{}:{line}: ", dir.join("t.lst").display());
        assert!(msg.starts_with(&want), "`{msg}` should start with `{want}`");
        e
    }

    #[test]
    fn line_errors_name_file_and_line() {
        let tmp = abc();
        let d = tmp.path();
        let e = line_error(d, "1 a.wav b.wav\n\n1 a.wav\n", 3);
        assert!(matches!(
            e,
            TrialError::FieldCount {
                line: 3,
                found: 2,
                format: TrialFormat::VoxCeleb,
                ..
            }
        ));
        assert!(e
            .to_string()
            .contains("expected 3 fields (LABEL ENROLL TEST), found 2"));
        let e = line_error(d, "a.wav b.wav target\na b c d\n", 2);
        assert!(
            e.to_string()
                .contains("(ENROLL TEST target|nontarget), found 4"),
            "{e}"
        );

        let e = line_error(
            d,
            "1 a.wav b.wav\n0 a.wav c.wav\na.wav c.wav nontarget\n",
            3,
        );
        assert!(matches!(
            e,
            TrialError::MixedFormats {
                expected: TrialFormat::VoxCeleb,
                found: TrialFormat::Kaldi,
                first_line: 1,
                ..
            }
        ));
        assert!(e.to_string().contains("kaldi format"), "{e}");
        let e = line_error(d, "# c\na.wav b.wav target\n0 a.wav c.wav\n", 3);
        assert!(matches!(
            e,
            TrialError::MixedFormats {
                expected: TrialFormat::Kaldi,
                found: TrialFormat::VoxCeleb,
                first_line: 2,
                ..
            }
        ));

        let e = line_error(d, "1 a.wav b.wav\n2 a.wav c.wav\n", 2);
        assert!(matches!(e, TrialError::BadLabel { ref label, .. } if label == "2"));
        assert!(
            e.to_string()
                .contains("bad label `2`: the first field must be `1`"),
            "{e}"
        );
        let e = line_error(d, "a.wav b.wav target\na.wav c.wav imp\n", 2);
        assert!(matches!(e, TrialError::BadLabel { ref label, .. } if label == "imp"));
        assert!(e.to_string().contains("`target` or `nontarget`"), "{e}");

        let e = line_error(d, "1 a.wav b.wav\n0 a.wav,,b.wav c.wav\n", 2);
        assert!(matches!(e, TrialError::EmptyPath { ref field, .. } if field == "a.wav,,b.wav"));
        line_error(d, "1 a.wav b.wav\n0 a.wav, c.wav\n", 2);

        let e = line_error(d, "1 a.wav b.wav\n0 a.wav c.wav,b.wav\n", 2);
        assert!(matches!(e, TrialError::MultiFileTest { .. }), "{e:?}");

        let e = line_error(
            d,
            "1 a.wav b.wav\n0 a.wav c.wav\n\n0 a.wav,missing.wav c.wav\n",
            4,
        );
        match &e {
            TrialError::MissingAudio { audio, base, .. } => {
                assert_eq!(audio, &d.join("missing.wav"));
                assert_eq!(base, d);
            }
            _ => panic!("{e:?}"),
        }
        assert!(e.to_string().contains("missing.wav not found"), "{e}");
        // The first missing file is reported, and a directory is not an audio file.
        fs::create_dir(d.join("dir.wav")).unwrap();
        let e = line_error(
            d,
            "a.wav b.wav target\nx.wav dir.wav nontarget\ny.wav a.wav target\n",
            2,
        );
        assert!(
            matches!(e, TrialError::MissingAudio { ref audio, .. } if audio.ends_with("x.wav"))
        );

        let mut bytes = b"1 a.wav b.wav\n0 a.wav ".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
        fs::write(d.join("t.lst"), bytes).unwrap();
        let e = load(&d.join("t.lst")).unwrap_err();
        assert!(matches!(e, TrialError::NotUtf8 { line: 2, .. }), "{e:?}");
        assert!(e.to_string().contains("t.lst:2: not valid UTF-8"), "{e}");
    }

    #[test]
    fn whole_file_errors() {
        let tmp = abc();
        let d = tmp.path();
        for text in ["", "\n\n", "# only a comment\n  \n"] {
            let e = load(&trial_file(d, "e", text)).unwrap_err();
            assert!(matches!(e, TrialError::Empty { .. }), "{e:?}");
            assert!(e.to_string().ends_with("e: no trials"), "{e}");
        }
        let e = load(&trial_file(d, "n", "1 a.wav b.wav\n1 b.wav c.wav\n")).unwrap_err();
        assert!(matches!(e, TrialError::NoNontargets { .. }), "{e:?}");
        assert!(e.to_string().contains("no non-target trials"), "{e}");
        let e = load(&trial_file(d, "t", "a.wav b.wav nontarget\n")).unwrap_err();
        assert!(matches!(e, TrialError::NoTargets { .. }), "{e:?}");
        let e = load(&d.join("does-not-exist.txt")).unwrap_err();
        assert!(matches!(e, TrialError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("does-not-exist.txt"), "{e}");
    }

    /// A speaker-directory layout of `speakers` × `files` empty wav files, with distractors.
    fn speaker_tree(speakers: usize, files: usize) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for s in 0..speakers {
            for f in 0..files {
                touch(tmp.path(), &format!("spk{s}/{s}-{f}.wav"));
            }
        }
        touch(tmp.path(), "LICENSE.TXT");
        touch(tmp.path(), "top-level.wav");
        tmp
    }

    fn speaker_of(p: &Path) -> &OsStr {
        p.parent().unwrap().file_name().unwrap()
    }

    fn assert_well_formed(list: &TrialList) {
        let split = list.n_target();
        assert!(list.trials[..split].iter().all(|t| t.target));
        for part in [&list.trials[..split], &list.trials[split..]] {
            let keys: Vec<_> = part.iter().map(|t| (&t.enroll, &t.test)).collect();
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "sorted, no duplicates"
            );
        }
        for t in &list.trials {
            assert_eq!(t.enroll.len(), 1);
            assert!(t.enroll[0] < t.test);
            assert_eq!(speaker_of(&t.enroll[0]) == speaker_of(&t.test), t.target);
        }
    }

    #[test]
    fn speaker_dirs_give_every_pair() {
        let tmp = speaker_tree(3, 3);
        let d = tmp.path();
        let list = load(d).unwrap();
        assert_eq!(list.format, TrialFormat::SpeakerDirs);
        assert_eq!((list.n_target(), list.n_nontarget()), (9, 27));
        assert_well_formed(&list);
        assert_eq!(list.files().len(), 9);
        assert_eq!(
            list.trials[0],
            trial(&[&d.join("spk0/0-0.wav")], &d.join("spk0/0-1.wav"), true)
        );
        assert_eq!(
            list.trials[9],
            trial(&[&d.join("spk0/0-0.wav")], &d.join("spk1/1-0.wav"), false)
        );
        assert_eq!(
            list.trials.last().unwrap(),
            &trial(&[&d.join("spk1/1-2.wav")], &d.join("spk2/2-2.wav"), false)
        );
    }

    #[test]
    fn speaker_dirs_find_audio_recursively_and_skip_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        touch(d, "alice/book1/ch1/x.FLAC");
        touch(d, "alice/book2/y.Mp3");
        touch(d, "alice/notes.txt");
        touch(d, "alice/.hidden.wav");
        touch(d, "alice/.cache/z.wav");
        touch(d, "bob/a.ogg");
        touch(d, "bob/b.m4a");
        touch(d, "bob/c.wav");
        touch(d, "carol/readme.md");
        touch(d, ".git/objects/x.wav");
        touch(d, "LICENSE.TXT");
        let list = load(d).unwrap();
        assert_eq!(
            list.files(),
            vec![
                d.join("alice/book1/ch1/x.FLAC"),
                d.join("alice/book2/y.Mp3"),
                d.join("bob/a.ogg"),
                d.join("bob/b.m4a"),
                d.join("bob/c.wav"),
            ]
        );
        // alice: 1 pair, bob: 3 pairs; 2 × 3 cross pairs.
        assert_eq!((list.n_target(), list.n_nontarget()), (4, 6));
        assert_eq!(
            audio_files(&d.join("alice")).unwrap(),
            vec![
                d.join("alice/book1/ch1/x.FLAC"),
                d.join("alice/book2/y.Mp3")
            ]
        );
        assert_eq!(audio_files(d).unwrap(), list.files());
        let e = audio_files(&d.join("nobody")).unwrap_err();
        assert!(matches!(e, TrialError::Io { .. }), "{e:?}");
    }

    #[test]
    fn speaker_dir_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        touch(d, "only/a.wav");
        touch(d, "only/b.wav");
        touch(d, "empty/readme.txt");
        touch(d, "c.wav");
        let e = load(d).unwrap_err();
        assert!(
            matches!(e, TrialError::TooFewSpeakers { found: 1, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("need at least 2 speaker subdirectories"),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = load(empty.path()).unwrap_err();
        assert!(
            matches!(e, TrialError::TooFewSpeakers { found: 0, .. }),
            "{e:?}"
        );
        // Two speakers with one file each: no target pair.
        let tmp = speaker_tree(2, 1);
        let e = load(tmp.path()).unwrap_err();
        assert!(matches!(e, TrialError::NoTargets { .. }), "{e:?}");
        // A cap of zero leaves no non-targets.
        let tmp = speaker_tree(2, 2);
        let opts = DirOptions {
            max_nontarget: 0,
            seed: 0,
        };
        let e = load_trials(tmp.path(), None, &opts).unwrap_err();
        assert!(matches!(e, TrialError::NoNontargets { .. }), "{e:?}");
    }

    #[test]
    fn nontarget_cap_samples_exactly_and_reproducibly() {
        // 5 speakers × 4 files: 30 target pairs, C(20, 2) − 30 = 160 non-target pairs.
        let tmp = speaker_tree(5, 4);
        let d = tmp.path();
        let with = |max_nontarget, seed| {
            load_trials(
                d,
                None,
                &DirOptions {
                    max_nontarget,
                    seed,
                },
            )
            .unwrap()
        };
        let full = with(160, 0);
        assert_eq!((full.n_target(), full.n_nontarget()), (30, 160));
        assert_eq!(full.trials, with(1000, 9).trials);
        let all: HashSet<_> = full.trials.iter().cloned().collect();

        let a = with(50, 7);
        assert_eq!((a.n_target(), a.n_nontarget()), (30, 50));
        assert_well_formed(&a);
        assert!(a.trials.iter().all(|t| all.contains(t)));
        assert_eq!(a.trials[..30], full.trials[..30]);
        assert_eq!(a.trials, with(50, 7).trials);
        assert_ne!(a.trials, with(50, 8).trials);
        assert_eq!(with(159, 3).n_nontarget(), 159);
        assert_eq!(with(1, 3).n_nontarget(), 1);

        // Every pair is drawn about equally often: 200 seeds × 50 of 160 → 62.5 each
        // (standard deviation ≈ 6.6); the bounds are ±5 deviations.
        let mut counts: std::collections::HashMap<Trial, usize> = Default::default();
        for seed in 0..200 {
            for t in with(50, seed).trials.into_iter().filter(|t| !t.target) {
                *counts.entry(t).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 160);
        assert!(
            counts.values().all(|&c| (30..=95).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn writers_round_trip() {
        let tmp = speaker_tree(3, 3);
        let d = tmp.path();
        let list = load(d).unwrap();
        let vox = write_voxceleb(&list, d);
        assert!(vox.starts_with("1 spk0/0-0.wav spk0/0-1.wav\n"), "{vox}");
        assert!(vox.contains("\n0 spk0/0-0.wav spk1/1-0.wav\n"), "{vox}");
        let back = load(&trial_file(d, "vox.txt", &vox)).unwrap();
        assert_eq!(back.format, TrialFormat::VoxCeleb);
        assert_eq!(back.trials, list.trials);

        let kaldi = write_kaldi(&list, d);
        assert!(
            kaldi.starts_with("spk0/0-0.wav spk0/0-1.wav target\n"),
            "{kaldi}"
        );
        assert!(
            kaldi.contains("\nspk0/0-0.wav spk1/1-0.wav nontarget\n"),
            "{kaldi}"
        );
        let back = load(&trial_file(d, "kaldi.txt", &kaldi)).unwrap();
        assert_eq!(back.format, TrialFormat::Kaldi);
        assert_eq!(back.trials, list.trials);

        // Written elsewhere and read with the audio root.
        let other = tempfile::tempdir().unwrap();
        let f = trial_file(other.path(), "k", &kaldi);
        let back = load_trials(&f, Some(d), &DirOptions::default()).unwrap();
        assert_eq!(back.trials, list.trials);
    }

    #[test]
    fn writers_join_enrollments_and_write_outside_paths_absolute() {
        let tmp = abc();
        let d = tmp.path();
        let outside = tempfile::tempdir().unwrap();
        let o = touch(outside.path(), "o.wav");
        let text = format!("1 a.wav,b.wav c.wav\n0 c.wav {}\n", o.display());
        let list = load(&trial_file(d, "t", &text)).unwrap();
        let vox = write_voxceleb(&list, d);
        assert_eq!(
            vox,
            format!("1 a.wav,b.wav c.wav\n0 c.wav {}\n", o.display())
        );
        let kaldi = write_kaldi(&list, d);
        assert_eq!(
            kaldi,
            format!(
                "a.wav,b.wav c.wav target\nc.wav {} nontarget\n",
                o.display()
            )
        );
        for text in [vox, kaldi] {
            assert_eq!(
                load(&trial_file(d, "rt", &text)).unwrap().trials,
                list.trials
            );
        }
    }

    #[test]
    fn librispeech_mini_test_other() {
        let root = std::env::var_os("VOCALGUARD_LIBRISPEECH_MINI")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/librispeech-mini")
            });
        let dir = root.join("test-other");
        if !dir.is_dir() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{} not found (set VOCALGUARD_LIBRISPEECH_MINI)",
                    dir.display()
                );
            }
            eprintln!(
                "skipping: {} not found (set VOCALGUARD_LIBRISPEECH_MINI)",
                dir.display()
            );
            return;
        }
        let list = load(&dir).unwrap();
        assert_eq!((list.n_target(), list.n_nontarget()), (450, 4500));
        assert_eq!(list.files().len(), 100);
        assert_well_formed(&list);
    }
}
