//! Crash safety of the registry: a real server is SIGKILLed in the middle of a burst of
//! concurrent enrollments (librispeech-mini audio), voiceprint and artist deletions (each
//! followed by a purge that rewrites the file) and authorization changes, at a different
//! moment in each round. After each kill the registry is reopened in process and
//! `Registry::verify` cross-checks its tables, audit trail and index; then the server is
//! restarted on the same folder and every artist is read back: each change the client saw
//! acknowledged is there (a deletion: gone), and the one change per client task that was in
//! flight at the kill is either wholly there or wholly absent. At the end every surviving
//! voiceprint is found by screening its own enrollment audio, and deleted artists are found by
//! none. A second test retries keyed enrollments (a request id each) after a SIGKILL, as a
//! client that did not see the answer should, and finds every recording enrolled exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::grpc::{screen_messages, test_other_speakers, Clients};
use common::server::ServerProcess;
use tonic::{Code, Status};
use vocalguard::encoder::ModelId;
use vocalguard::proto::*;
use vocalguard::registry::{EnrollmentPolicy, Registry};

/// When each round's server is killed, counted from the start of its burst.
const KILL_AFTER_MS: [u64; 5] = [300, 900, 1800, 2700, 4000];
/// Speakers (and so enrollment tasks) per round; each round uses its own speakers, so that no
/// enrollment collides with an artist of an earlier round.
const SPEAKERS_PER_ROUND: usize = 2;
/// Utterances each enrollment task enrolls.
const ENROLLMENTS_PER_TASK: usize = 4;
/// The authorization-churn task's bound on iterations (it is normally cut off by the kill).
const CHURN_LIMIT: usize = 10_000;

/// One registry change a client asked for.
#[derive(Debug, Clone)]
enum Op {
    CreateArtist(String),
    /// Enrolls `file`; the voiceprint's description is the file name.
    Enroll {
        artist: String,
        file: PathBuf,
    },
    DeleteVoiceprint {
        artist: String,
        description: String,
    },
    Grant {
        artist: String,
        party: String,
    },
    Revoke {
        artist: String,
        party: String,
    },
    DeleteArtist(String),
}

/// What the client saw of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The server acknowledged it.
    Acked,
    /// The server refused it (a precondition, e.g. too little voice): nothing changed.
    Refused,
    /// The connection broke before an answer: it may or may not have happened.
    Unknown,
}

/// What the registry holds of one artist: its voiceprints' descriptions and its parties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ArtistState {
    voiceprints: BTreeSet<String>,
    parties: BTreeSet<String>,
}

/// Artists by id; an absent key is an absent artist.
type State = BTreeMap<String, ArtistState>;

fn description(file: &Path) -> String {
    file.file_name().unwrap().to_string_lossy().into_owned()
}

/// `op` applied to `state`, as the server applies it when it succeeds.
fn apply(state: &mut State, op: &Op) {
    match op {
        Op::CreateArtist(a) => {
            state.insert(a.clone(), ArtistState::default());
        }
        Op::Enroll { artist, file } => {
            state
                .get_mut(artist)
                .expect("enrolls only into a created artist")
                .voiceprints
                .insert(description(file));
        }
        Op::DeleteVoiceprint {
            artist,
            description,
        } => {
            state
                .get_mut(artist)
                .unwrap()
                .voiceprints
                .remove(description);
        }
        Op::Grant { artist, party } => {
            state.get_mut(artist).unwrap().parties.insert(party.clone());
        }
        Op::Revoke { artist, party } => {
            state.get_mut(artist).unwrap().parties.remove(party);
        }
        Op::DeleteArtist(a) => {
            state.remove(a);
        }
    }
}

/// Outcome of a call: acknowledged, refused by the server, or lost with the connection.
fn outcome<T>(result: &Result<T, Status>) -> Outcome {
    match result {
        Ok(_) => Outcome::Acked,
        Err(s)
            if matches!(
                s.code(),
                Code::FailedPrecondition
                    | Code::NotFound
                    | Code::AlreadyExists
                    | Code::InvalidArgument
            ) =>
        {
            Outcome::Refused
        }
        Err(_) => Outcome::Unknown,
    }
}

/// A client task's log: each change it asked for and what it saw.
#[derive(Debug, Default)]
struct Log {
    entries: Vec<(Op, Outcome)>,
    /// Voiceprint ids of acknowledged enrollments, by description.
    ids: BTreeMap<String, String>,
}

impl Log {
    /// Runs `op` and records it; returns false once the server is gone.
    async fn run(&mut self, clients: &mut Clients, op: Op) -> bool {
        let r = &mut clients.registry;
        let result: Result<Option<String>, Status> = match &op {
            Op::CreateArtist(a) => r
                .create_artist(CreateArtistRequest {
                    artist_id: a.clone(),
                    display_name: format!("Artist {a}"),
                    ..Default::default()
                })
                .await
                .map(|_| None),
            Op::Enroll { artist, file } => {
                let bytes = std::fs::read(file).unwrap();
                r.enroll_voiceprint(tokio_stream::iter(enroll_messages(
                    artist,
                    &description(file),
                    &bytes,
                )))
                .await
                .map(|resp| resp.into_inner().voiceprint.map(|v| v.voiceprint_id))
            }
            Op::DeleteVoiceprint { description, .. } => {
                let Some(id) = self.ids.get(description).cloned() else {
                    return true;
                };
                r.delete_voiceprint(DeleteVoiceprintRequest {
                    voiceprint_id: id,
                    ..Default::default()
                })
                .await
                .map(|_| None)
            }
            Op::Grant { artist, party } => r
                .grant_authorization(GrantAuthorizationRequest {
                    artist_id: artist.clone(),
                    party_id: party.clone(),
                    note: "crash test".into(),
                    ..Default::default()
                })
                .await
                .map(|_| None),
            Op::Revoke { artist, party } => r
                .revoke_authorization(RevokeAuthorizationRequest {
                    artist_id: artist.clone(),
                    party_id: party.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| None),
            Op::DeleteArtist(a) => r
                .delete_artist(DeleteArtistRequest {
                    artist_id: a.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| None),
        };
        let seen = outcome(&result);
        if let (Op::Enroll { file, .. }, Ok(Some(id))) = (&op, &result) {
            self.ids.insert(description(file), id.clone());
        }
        self.entries.push((op, seen));
        seen != Outcome::Unknown
    }

    /// The state after every acknowledged change, and, when a change was in flight at the
    /// kill, the state with it applied as well.
    fn outcomes(&self, before: &State) -> (State, Option<State>) {
        let mut acked = before.clone();
        let mut in_flight = None;
        for (op, seen) in &self.entries {
            match seen {
                Outcome::Acked => apply(&mut acked, op),
                Outcome::Refused => {}
                Outcome::Unknown => in_flight = Some(op.clone()),
            }
        }
        let applied = in_flight.map(|op| {
            let mut s = acked.clone();
            apply(&mut s, &op);
            s
        });
        (acked, applied)
    }

    fn artists(&self) -> BTreeSet<String> {
        self.entries
            .iter()
            .map(|(op, _)| match op {
                Op::CreateArtist(a) | Op::DeleteArtist(a) => a.clone(),
                Op::Enroll { artist, .. }
                | Op::DeleteVoiceprint { artist, .. }
                | Op::Grant { artist, .. }
                | Op::Revoke { artist, .. } => artist.clone(),
            })
            .collect()
    }
}

fn enroll_messages(artist: &str, description: &str, bytes: &[u8]) -> Vec<EnrollVoiceprintRequest> {
    keyed_enroll_messages(artist, description, "", bytes)
}

/// [`enroll_messages`] with the idempotency key `request_id` (empty: none).
fn keyed_enroll_messages(
    artist: &str,
    description: &str,
    request_id: &str,
    bytes: &[u8],
) -> Vec<EnrollVoiceprintRequest> {
    let mut out = vec![EnrollVoiceprintRequest {
        part: Some(enroll_voiceprint_request::Part::Metadata(EnrollMetadata {
            artist_id: artist.into(),
            label: VoiceprintLabel::Speaking as i32,
            description: description.into(),
            request_id: request_id.into(),
        })),
    }];
    out.extend(bytes.chunks(64 * 1024).map(|c| EnrollVoiceprintRequest {
        part: Some(enroll_voiceprint_request::Part::Chunk(AudioChunk {
            data: c.to_vec(),
        })),
    }));
    out
}

/// One speaker's changes: create the artist, enroll utterances with a grant, a voiceprint
/// deletion and a revocation between them, and (when `delete_at_end`) delete the artist.
async fn enrollment_task(
    url: String,
    artist: String,
    files: Vec<PathBuf>,
    delete_at_end: bool,
) -> Log {
    let mut clients = Clients::connect(&url).await;
    let mut log = Log::default();
    let party = format!("{artist}-label");
    let mut ops = vec![Op::CreateArtist(artist.clone())];
    for (i, file) in files.iter().enumerate() {
        ops.push(Op::Enroll {
            artist: artist.clone(),
            file: file.clone(),
        });
        match i {
            0 => ops.push(Op::Grant {
                artist: artist.clone(),
                party: party.clone(),
            }),
            1 => ops.push(Op::DeleteVoiceprint {
                artist: artist.clone(),
                description: description(&files[0]),
            }),
            2 => ops.push(Op::Revoke {
                artist: artist.clone(),
                party: party.clone(),
            }),
            _ => {}
        }
    }
    if delete_at_end {
        ops.push(Op::DeleteArtist(artist.clone()));
    }
    for op in ops {
        if !log.run(&mut clients, op).await {
            break;
        }
    }
    log
}

/// Quick changes without audio until the server dies: short-lived artists (created, granted,
/// deleted: each deletion rewrites the file) and grants and revocations on a lasting artist.
async fn churn_task(url: String, round: usize) -> Log {
    let mut clients = Clients::connect(&url).await;
    let mut log = Log::default();
    let lasting = format!("r{round}-churn");
    if !log
        .run(&mut clients, Op::CreateArtist(lasting.clone()))
        .await
    {
        return log;
    }
    for i in 0..CHURN_LIMIT {
        let temporary = format!("r{round}-tmp-{i}");
        let mut ops = vec![
            Op::Grant {
                artist: lasting.clone(),
                party: format!("p{i}"),
            },
            Op::CreateArtist(temporary.clone()),
            Op::Grant {
                artist: temporary.clone(),
                party: "x".into(),
            },
            Op::DeleteArtist(temporary),
        ];
        if i > 0 {
            ops.push(Op::Revoke {
                artist: lasting.clone(),
                party: format!("p{}", i - 1),
            });
        }
        for op in ops {
            if !log.run(&mut clients, op).await {
                return log;
            }
        }
    }
    log
}

/// What the running server holds of `artist`, or None when it does not exist.
async fn read_artist(clients: &mut Clients, artist: &str) -> Option<ArtistState> {
    let found = clients
        .registry
        .get_artist(GetArtistRequest {
            artist_id: artist.into(),
        })
        .await;
    let summary = match found {
        Ok(a) => a.into_inner(),
        Err(s) if s.code() == Code::NotFound => {
            let listed = clients
                .registry
                .list_voiceprints(ListVoiceprintsRequest {
                    artist_id: artist.into(),
                })
                .await;
            assert_eq!(listed.unwrap_err().code(), Code::NotFound);
            return None;
        }
        Err(s) => panic!("GetArtist {artist}: {s:?}"),
    };
    let voiceprints: BTreeSet<String> = clients
        .registry
        .list_voiceprints(ListVoiceprintsRequest {
            artist_id: artist.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .voiceprints
        .into_iter()
        .map(|v| v.description)
        .collect();
    let parties: BTreeSet<String> = clients
        .registry
        .list_authorizations(ListAuthorizationsRequest {
            artist_id: artist.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .authorizations
        .into_iter()
        .map(|a| a.party_id)
        .collect();
    assert_eq!(
        summary.voiceprint_count as usize,
        voiceprints.len(),
        "{artist}"
    );
    assert_eq!(
        summary.authorization_count as usize,
        parties.len(),
        "{artist}"
    );
    Some(ArtistState {
        voiceprints,
        parties,
    })
}

/// Reopens the registry file in process and cross-checks it; returns its version.
fn verify_in_process(data: &Path, model: &ModelId) -> u64 {
    let dim = common::builtin_dim(model);
    let registry = Registry::open(data, model, dim, EnrollmentPolicy::default())
        .unwrap_or_else(|e| panic!("reopening the registry after the kill: {e}"));
    let verified = registry
        .verify()
        .unwrap_or_else(|e| panic!("the registry is inconsistent after the kill: {e}"));
    verified.version
}

/// Utterances of a speaker most likely to hold enough voice to enroll: the largest files.
fn longest(files: &[PathBuf], n: usize) -> Vec<PathBuf> {
    let mut by_size: Vec<(u64, PathBuf)> = files
        .iter()
        .map(|f| (std::fs::metadata(f).unwrap().len(), f.clone()))
        .collect();
    by_size.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    by_size.into_iter().take(n).map(|(_, f)| f).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_sigkill_and_nothing_is_half_made() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let started = Instant::now();
    let speakers = test_other_speakers(&root);
    assert!(speakers.len() >= SPEAKERS_PER_ROUND * KILL_AFTER_MS.len());
    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data.path(), &[]);
    let model = {
        let mut ping = ping_service_client::PingServiceClient::connect(server.url())
            .await
            .unwrap();
        let reply = ping.ping(PingRequest {}).await.unwrap().into_inner();
        ModelId {
            name: reply.model,
            sha256: reply.model_sha256,
        }
    };
    let mut known = State::new();
    let mut files_of: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut deleted_speakers: Vec<(String, PathBuf)> = Vec::new();
    let mut last_version = 0;
    let mut unknown_total = 0;
    for (round, kill_after) in KILL_AFTER_MS.into_iter().enumerate() {
        let url = server.url();
        let mut tasks = Vec::new();
        for (i, (speaker, utterances)) in speakers
            [round * SPEAKERS_PER_ROUND..(round + 1) * SPEAKERS_PER_ROUND]
            .iter()
            .enumerate()
        {
            let artist = format!("r{round}-{speaker}");
            let files = longest(utterances, ENROLLMENTS_PER_TASK);
            for f in &files {
                files_of.insert(description(f), f.clone());
            }
            tasks.push(tokio::spawn(enrollment_task(
                url.clone(),
                artist,
                files,
                i == 0,
            )));
        }
        tasks.push(tokio::spawn(churn_task(url.clone(), round)));
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        server.kill();
        let mut logs = Vec::new();
        for task in tasks {
            logs.push(
                tokio::time::timeout(Duration::from_secs(60), task)
                    .await
                    .expect("client tasks end once the server is gone")
                    .unwrap(),
            );
        }

        let version = verify_in_process(data.path(), &model);
        assert!(version > last_version, "round {round} changed nothing");
        last_version = version;

        server = ServerProcess::start(data.path(), &[]);
        let mut clients = Clients::connect(&server.url()).await;
        let mut acked_total = 0;
        let mut enrolled = 0;
        for log in &logs {
            let (acked, applied) = log.outcomes(&known);
            acked_total += log
                .entries
                .iter()
                .filter(|(_, o)| *o == Outcome::Acked)
                .count();
            enrolled += log
                .entries
                .iter()
                .filter(|(op, o)| matches!(op, Op::Enroll { .. }) && *o == Outcome::Acked)
                .count();
            unknown_total += usize::from(applied.is_some());
            let mut actual = known.clone();
            for artist in log.artists() {
                match read_artist(&mut clients, &artist).await {
                    Some(s) => actual.insert(artist, s),
                    None => actual.remove(&artist),
                };
            }
            let in_flight = log.entries.last().filter(|(_, o)| *o == Outcome::Unknown);
            assert!(
                actual == acked || applied.as_ref() == Some(&actual),
                "round {round}: the registry after the kill matches neither the acknowledged \
                 changes nor those plus the one in flight ({in_flight:?}).\n\
                 actual: {actual:#?}\nacknowledged: {acked:#?}"
            );
            for (op, seen) in &log.entries {
                if let (Op::DeleteArtist(a), Outcome::Acked) = (op, seen) {
                    if let Some(f) = log.entries.iter().find_map(|(op, seen)| match op {
                        Op::Enroll { artist, file } if artist == a && *seen == Outcome::Acked => {
                            Some(file.clone())
                        }
                        _ => None,
                    }) {
                        deleted_speakers.push((a.clone(), f));
                    }
                }
            }
            known = actual;
        }
        eprintln!(
            "round {round}: killed after {kill_after} ms; {acked_total} changes acknowledged \
             ({enrolled} enrollments), registry version {version}"
        );
    }
    assert!(
        unknown_total > 0,
        "no kill landed on a change in flight; the test proved little"
    );

    // The index the restarted server built matches the store: each surviving voiceprint is
    // found by its own audio, and no deleted artist is found at all.
    let mut clients = Clients::connect(&server.url()).await;
    for (artist, state) in &known {
        let Some(desc) = state.voiceprints.iter().next() else {
            continue;
        };
        let file = &files_of[desc];
        let r = screen(&mut clients, file).await;
        assert!(
            r.matches
                .iter()
                .any(|m| m.artist_id == *artist && m.best_score >= 0.8),
            "{artist}'s voiceprint {desc} is not found by its own audio: {:?}",
            r.matches
        );
    }
    for (artist, file) in &deleted_speakers {
        let r = screen(&mut clients, file).await;
        assert!(
            r.matches.iter().all(|m| m.artist_id != *artist),
            "deleted artist {artist} still found: {:?}",
            r.matches
        );
    }
    server.terminate();
    assert_eq!(verify_in_process(data.path(), &model), last_version);
    eprintln!(
        "{unknown_total} changes were in flight at a kill; {} artists survive; {:.1} s",
        known.len(),
        started.elapsed().as_secs_f64()
    );
}

async fn screen(clients: &mut Clients, file: &Path) -> ScreenResponse {
    let meta = TrackMetadata {
        track_id: description(file),
        uploader_party_id: "crash-test-uploader".into(),
        credited_artist_ids: Vec::new(),
        ai_disclosure: AiDisclosure::None as i32,
    };
    clients
        .screening
        .screen(tokio_stream::iter(screen_messages(
            meta,
            &std::fs::read(file).unwrap(),
        )))
        .await
        .unwrap_or_else(|s| panic!("screening {}: {s:?}", file.display()))
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_enrollments_retried_after_sigkill_are_stored_once() {
    let Some(root) = common::librispeech_mini() else {
        return;
    };
    let speakers = test_other_speakers(&root);
    let (speaker, utterances) = speakers.last().expect("a test-other speaker");
    let files = longest(utterances, 6);
    let artist = format!("retry-{speaker}");
    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data.path(), &[]);
    let mut clients = Clients::connect(&server.url()).await;
    clients.create_artist(&artist, "Retried Artist").await;

    // Enroll one file after another, each with its own request id, until the kill, which
    // comes as the second answer arrives: the third enrollment is then on its way.
    let (acked, mut second_ack) = tokio::sync::mpsc::channel::<()>(8);
    let sender = {
        let (url, artist, files) = (server.url(), artist.clone(), files.clone());
        tokio::spawn(async move {
            let mut clients = Clients::connect(&url).await;
            let mut answers = Vec::new();
            for (i, file) in files.iter().enumerate() {
                let bytes = std::fs::read(file).unwrap();
                let messages = keyed_enroll_messages(
                    &artist,
                    &description(file),
                    &format!("enroll-{i}"),
                    &bytes,
                );
                let answer = clients
                    .registry
                    .enroll_voiceprint(tokio_stream::iter(messages))
                    .await
                    .map(|r| r.into_inner());
                let failed = answer.is_err();
                answers.push(answer);
                if failed {
                    break;
                }
                let _ = acked.send(()).await;
            }
            answers
        })
    };
    for _ in 0..2 {
        second_ack
            .recv()
            .await
            .expect("two enrollments are answered");
    }
    server.kill();
    let first = tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("the client ends once the server is gone")
        .unwrap();

    // The client retries every enrollment with its request id on the restarted server.
    server = ServerProcess::start(data.path(), &[]);
    let mut clients = Clients::connect(&server.url()).await;
    for (i, file) in files.iter().enumerate() {
        let bytes = std::fs::read(file).unwrap();
        let messages =
            keyed_enroll_messages(&artist, &description(file), &format!("enroll-{i}"), &bytes);
        let retried = clients
            .registry
            .enroll_voiceprint(tokio_stream::iter(messages))
            .await
            .unwrap_or_else(|s| panic!("retry {i}: {s:?}"))
            .into_inner();
        if let Some(Ok(answer)) = first.get(i) {
            assert_eq!(&retried, answer, "retry {i} gets the first call's answer");
        }
    }
    let stored = clients
        .registry
        .list_voiceprints(ListVoiceprintsRequest {
            artist_id: artist.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .voiceprints;
    let mut descriptions: Vec<String> = stored.iter().map(|v| v.description.clone()).collect();
    descriptions.sort();
    let mut wanted: Vec<String> = files.iter().map(|f| description(f)).collect();
    wanted.sort();
    assert_eq!(descriptions, wanted, "every recording once, none twice");
    assert!(
        first.len() < files.len() || first.iter().any(Result::is_err),
        "the kill fell inside the burst"
    );
}
