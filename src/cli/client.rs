//! Client commands: one per RPC of the registry and screening services, against `--server`.
//! Output is a short text summary, or the response as JSON with `--json`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Status;

use crate::proto::registry_service_client::RegistryServiceClient;
use crate::proto::screening_service_client::ScreeningServiceClient;
use crate::proto::*;
use crate::registry::references::MAX_REFERENCES;

/// Bytes per streamed audio chunk.
const CHUNK_BYTES: usize = 1024 * 1024;

/// Where the server is, how to reach it and how to print.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Server URL; `https://` for a server with TLS.
    #[arg(
        long,
        env = "VOCALGUARD_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// Print the response as JSON.
    #[arg(long)]
    json: bool,
    /// Deadline of the call, seconds.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    timeout: f64,
    /// API token, sent as `authorization: Bearer <token>`.
    #[arg(
        long,
        env = "VOCALGUARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<Secret>,
    /// PEM CA certificate to trust for an https:// server [default: the public web roots].
    #[arg(long, env = "VOCALGUARD_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (mutual TLS; with --tls-key).
    #[arg(
        long,
        env = "VOCALGUARD_CLIENT_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(
        long,
        env = "VOCALGUARD_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Idempotency key of a command that changes the registry (1-64 of [A-Za-z0-9._-]):
    /// running the same command again with the same id returns the first run's result instead
    /// of changing the registry twice [default: a fresh random id per run]. Reads ignore it.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
}

/// Times a write is sent while the server is unavailable (the pauses add up to 15.5 s).
const WRITE_ATTEMPTS: u32 = 6;

/// Pause before the first retry of a write; it doubles for each next one.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A secret given on the command line, kept out of `Debug` output and error messages.
#[derive(Clone)]
struct Secret(String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Adds the API token (if any) to every call, as sensitive metadata.
#[derive(Clone)]
pub(super) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection to the server that sends the API token with every call.
type Transport = InterceptedService<Channel, Bearer>;

impl Connection {
    fn channel(&self, runtime: &tokio::runtime::Runtime) -> Result<Transport> {
        anyhow::ensure!(
            self.timeout > 0.0 && self.timeout.is_finite(),
            "--timeout must be a positive number of seconds"
        );
        let mut endpoint = Endpoint::from_shared(self.server.clone())
            .with_context(|| format!("invalid --server URL {:?}", self.server))?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs_f64(self.timeout));
        if let Some(tls) = self.tls()? {
            endpoint = endpoint.tls_config(tls).context("configuring TLS")?;
        }
        let bearer = match &self.token {
            Some(Secret(token)) => {
                let mut value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "--token / VOCALGUARD_TOKEN holds characters a token cannot have"
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let channel = runtime
            .block_on(endpoint.connect())
            .with_context(|| format!("connecting to {}", self.server))?;
        Ok(InterceptedService::new(channel, Bearer(bearer)))
    }

    /// The TLS settings for an https:// server; `None` for http://.
    fn tls(&self) -> Result<Option<ClientTlsConfig>> {
        let https = self.server.starts_with("https://");
        if !https {
            anyhow::ensure!(
                self.tls_ca.is_none() && self.tls_cert.is_none(),
                "--tls-ca, --tls-cert and --tls-key need an https:// --server URL"
            );
            return Ok(None);
        }
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
        };
        let mut tls = match &self.tls_ca {
            Some(ca) => ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        Ok(Some(tls))
    }

    pub(super) fn registry(
        &self,
        rt: &tokio::runtime::Runtime,
    ) -> Result<RegistryServiceClient<Transport>> {
        Ok(RegistryServiceClient::new(self.channel(rt)?)
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    /// Sends a write: `call` gets a client and the request id to put in the request. While
    /// the server is unavailable (not started yet, restarting, or the connection broke before
    /// the reply) the same request is sent again, up to [`WRITE_ATTEMPTS`] times with growing
    /// pauses; its request id makes a retry of a write that did commit return the first
    /// result instead of writing twice.
    pub(super) fn write<T, F, Fut>(
        &self,
        rt: &tokio::runtime::Runtime,
        rpc: &str,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(RegistryServiceClient<Transport>, String) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let request_id = self.request_id.clone().unwrap_or_else(new_request_id);
        let mut pause = FIRST_RETRY_PAUSE;
        for attempt in 1..=WRITE_ATTEMPTS {
            let unavailable = match self.registry(rt) {
                Ok(client) => match rt.block_on(call(client, request_id.clone())) {
                    Ok(reply) => return Ok(reply.into_inner()),
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        status.message().to_string()
                    }
                    Err(status) => return Err(failed(rpc)(status)),
                },
                Err(e) => format!("{e:#}"),
            };
            if attempt == WRITE_ATTEMPTS {
                bail!("{rpc} failed: the server stayed unavailable after {WRITE_ATTEMPTS} attempts (request id {request_id}; run again with --request-id {request_id} to retry without writing twice): {unavailable}");
            }
            eprintln!(
                "{rpc}: the server is unavailable ({unavailable}); retrying in {:.1} s with request id {request_id}",
                pause.as_secs_f64()
            );
            std::thread::sleep(pause);
            pause *= 2;
        }
        unreachable!("the last attempt returns")
    }

    pub(super) fn print<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce(&T) -> String,
    ) -> Result<ExitCode> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", text(value));
        }
        Ok(ExitCode::SUCCESS)
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A fresh request id for a write: 32 lower-case hex characters from the OS generator.
fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random number generator");
    hex::encode(bytes)
}

/// A failed call as an error that names the RPC, the status code and the server's reason.
pub(super) fn failed(rpc: &str) -> impl FnOnce(Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{rpc} failed: {:?}: {}", s.code(), s.message())
}

/// `vocalguard artist ...`.
#[derive(Debug, Subcommand)]
pub enum ArtistCommand {
    /// Create an artist.
    Create {
        /// Name shown to people.
        #[arg(long)]
        display_name: String,
        /// Wanted id (1-64 of [A-Za-z0-9._-]); the server assigns one when left out.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Show one artist.
    Get {
        /// The artist's id.
        artist_id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// List artists, a page at a time.
    List {
        /// Artists per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Token from the previous page.
        #[arg(long, default_value = "")]
        page_token: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete an artist with all of its voiceprints and authorizations.
    Delete {
        /// The artist's id.
        artist_id: String,
        #[command(flatten)]
        conn: Connection,
    },
}

fn artist_line(a: &Artist) -> String {
    format!(
        "{}\t{}\t{} voiceprints\t{} authorized parties",
        a.artist_id, a.display_name, a.voiceprint_count, a.authorization_count
    )
}

/// Runs an artist command.
pub fn artist(command: ArtistCommand) -> Result<ExitCode> {
    let rt = runtime()?;
    match command {
        ArtistCommand::Create {
            display_name,
            id,
            conn,
        } => {
            let artist_id = id.unwrap_or_default();
            let reply = conn.write(&rt, "CreateArtist", |mut client, request_id| {
                let request = CreateArtistRequest {
                    artist_id: artist_id.clone(),
                    display_name: display_name.clone(),
                    request_id,
                };
                async move { client.create_artist(request).await }
            })?;
            conn.print(&reply, artist_line)
        }
        ArtistCommand::Get { artist_id, conn } => {
            let reply = rt
                .block_on(
                    conn.registry(&rt)?
                        .get_artist(GetArtistRequest { artist_id }),
                )
                .map_err(failed("GetArtist"))?
                .into_inner();
            conn.print(&reply, artist_line)
        }
        ArtistCommand::List {
            page_size,
            page_token,
            conn,
        } => {
            let reply = rt
                .block_on(conn.registry(&rt)?.list_artists(ListArtistsRequest {
                    page_size,
                    page_token,
                }))
                .map_err(failed("ListArtists"))?
                .into_inner();
            conn.print(&reply, |r| {
                let mut lines: Vec<String> = r.artists.iter().map(artist_line).collect();
                lines.push(format!("{} artists in all", r.total));
                if !r.next_page_token.is_empty() {
                    lines.push(format!("next page: --page-token {}", r.next_page_token));
                }
                lines.join("\n")
            })
        }
        ArtistCommand::Delete { artist_id, conn } => {
            let reply = conn.write(&rt, "DeleteArtist", |mut client, request_id| {
                let request = DeleteArtistRequest {
                    artist_id: artist_id.clone(),
                    request_id,
                };
                async move { client.delete_artist(request).await }
            })?;
            conn.print(&reply, |r| {
                format!(
                    "deleted, with {} voiceprints and {} authorizations (registry version {})",
                    r.voiceprints_deleted, r.authorizations_deleted, r.registry_version
                )
            })
        }
    }
}

/// What a reference recording holds.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Label {
    /// Spoken voice.
    Speaking,
    /// Sung voice.
    Singing,
    /// Anything else.
    Other,
}

/// `vocalguard enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The reference recordings of one voice (up to 16). They are pooled into one voiceprint
    /// and the server's minimum voiced duration applies to their total, so several short
    /// clips can protect a voice that no single clip could.
    #[arg(required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// The artist it belongs to.
    #[arg(long)]
    artist: String,
    /// What the recording holds.
    #[arg(long, value_enum, default_value_t = Label::Speaking)]
    label: Label,
    /// Free text kept with the voiceprint, at most 256 characters [default: the files'
    /// names].
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

fn read_audio(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Most characters of a voiceprint's description the server keeps.
const MAX_DESCRIPTION_CHARS: usize = 256;

/// The files' names joined with ", ", cut to `max_chars` characters (ending in "…" when cut).
fn file_names(files: &[PathBuf], max_chars: usize) -> String {
    let joined = files
        .iter()
        .map(|f| {
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(", ");
    if joined.chars().count() <= max_chars {
        return joined;
    }
    let mut cut: String = joined.chars().take(max_chars - 1).collect();
    cut.push('…');
    cut
}

/// Runs `vocalguard enroll`.
pub fn enroll(args: EnrollArgs) -> Result<ExitCode> {
    let rt = runtime()?;
    if args.files.len() > MAX_REFERENCES {
        bail!(
            "{} reference files given; one enrollment takes at most {MAX_REFERENCES}",
            args.files.len()
        );
    }
    let files = args
        .files
        .iter()
        .map(read_audio)
        .collect::<Result<Vec<_>>>()?;
    let description = args
        .description
        .unwrap_or_else(|| file_names(&args.files, MAX_DESCRIPTION_CHARS));
    let label = match args.label {
        Label::Speaking => VoiceprintLabel::Speaking,
        Label::Singing => VoiceprintLabel::Singing,
        Label::Other => VoiceprintLabel::Other,
    };
    let metadata = EnrollMetadata {
        artist_id: args.artist,
        label: label as i32,
        description,
        request_id: String::new(),
    };
    let mut messages = Vec::new();
    for (i, bytes) in files.iter().enumerate() {
        if i > 0 {
            messages.push(EnrollVoiceprintRequest {
                part: Some(enroll_voiceprint_request::Part::NextReference(
                    NextReference {},
                )),
            });
        }
        messages.extend(bytes.chunks(CHUNK_BYTES).map(|c| EnrollVoiceprintRequest {
            part: Some(enroll_voiceprint_request::Part::Chunk(AudioChunk {
                data: c.to_vec(),
            })),
        }));
    }
    let reply = args
        .conn
        .write(&rt, "EnrollVoiceprint", |mut client, request_id| {
            let first = EnrollVoiceprintRequest {
                part: Some(enroll_voiceprint_request::Part::Metadata(EnrollMetadata {
                    request_id,
                    ..metadata.clone()
                })),
            };
            let stream = std::iter::once(first).chain(messages.clone());
            async move { client.enroll_voiceprint(tokio_stream::iter(stream)).await }
        })?;
    args.conn.print(&reply, |r| {
        let vp = r.voiceprint.clone().unwrap_or_default();
        let mut line = format!(
            "enrolled {} for {} ({:.1} s voiced",
            vp.voiceprint_id, vp.artist_id, vp.voiced_s
        );
        if r.references > 1 {
            line.push_str(&format!(" in {} references", r.references));
        }
        line.push(')');
        if let Some(s) = r.reference_agreement_score {
            line.push_str(&format!(", references agree at {s:.3} or more"));
        }
        if let Some(s) = r.consistency_score {
            line.push_str(&format!(", consistency {s:.3}"));
        }
        if let Some(s) = r.nearest_other_artist_score {
            line.push_str(&format!(
                ", nearest other artist {} at {s:.3}",
                r.nearest_other_artist_id
            ));
        }
        line
    })
}

/// `vocalguard voiceprint ...`.
#[derive(Debug, Subcommand)]
pub enum VoiceprintCommand {
    /// List an artist's voiceprints.
    List {
        /// The artist's id.
        artist_id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete one voiceprint.
    Delete {
        /// The voiceprint's id.
        voiceprint_id: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Runs a voiceprint command.
pub fn voiceprint(command: VoiceprintCommand) -> Result<ExitCode> {
    let rt = runtime()?;
    match command {
        VoiceprintCommand::List { artist_id, conn } => {
            let reply = rt
                .block_on(
                    conn.registry(&rt)?
                        .list_voiceprints(ListVoiceprintsRequest { artist_id }),
                )
                .map_err(failed("ListVoiceprints"))?
                .into_inner();
            conn.print(&reply, |r| {
                r.voiceprints
                    .iter()
                    .map(|v| {
                        format!(
                            "{}\t{}\t{:.1} s voiced\t{}",
                            v.voiceprint_id,
                            VoiceprintLabel::try_from(v.label).map_or("?", |l| l.as_str_name()),
                            v.voiced_s,
                            v.description
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        VoiceprintCommand::Delete {
            voiceprint_id,
            conn,
        } => {
            let reply = conn.write(&rt, "DeleteVoiceprint", |mut client, request_id| {
                let request = DeleteVoiceprintRequest {
                    voiceprint_id: voiceprint_id.clone(),
                    request_id,
                };
                async move { client.delete_voiceprint(request).await }
            })?;
            conn.print(&reply, |r| {
                format!("deleted (registry version {})", r.registry_version)
            })
        }
    }
}

/// `vocalguard authorize`.
#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    /// The artist granting it.
    #[arg(long)]
    artist: String,
    /// The party authorized (label, distributor, AI partner id).
    #[arg(long)]
    party: String,
    /// Free text kept with the grant.
    #[arg(long, default_value = "")]
    note: String,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `vocalguard authorize`.
pub fn authorize(args: AuthorizeArgs) -> Result<ExitCode> {
    let rt = runtime()?;
    let reply = args
        .conn
        .write(&rt, "GrantAuthorization", |mut client, request_id| {
            let request = GrantAuthorizationRequest {
                artist_id: args.artist.clone(),
                party_id: args.party.clone(),
                note: args.note.clone(),
                request_id,
            };
            async move { client.grant_authorization(request).await }
        })?;
    args.conn.print(&reply, |a| {
        format!(
            "{} may release music in the voice of {}",
            a.party_id, a.artist_id
        )
    })
}

/// `vocalguard revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The artist.
    #[arg(long)]
    artist: String,
    /// The party whose authorization ends.
    #[arg(long)]
    party: String,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `vocalguard revoke`.
pub fn revoke(args: RevokeArgs) -> Result<ExitCode> {
    let rt = runtime()?;
    let reply = args
        .conn
        .write(&rt, "RevokeAuthorization", |mut client, request_id| {
            let request = RevokeAuthorizationRequest {
                artist_id: args.artist.clone(),
                party_id: args.party.clone(),
                request_id,
            };
            async move { client.revoke_authorization(request).await }
        })?;
    args.conn.print(&reply, |r| {
        format!("revoked (registry version {})", r.registry_version)
    })
}

/// `vocalguard authorizations`.
#[derive(Debug, Args)]
pub struct AuthorizationsArgs {
    /// The artist's id.
    artist_id: String,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `vocalguard authorizations`.
pub fn authorizations(args: AuthorizationsArgs) -> Result<ExitCode> {
    let rt = runtime()?;
    let reply = rt
        .block_on(
            args.conn
                .registry(&rt)?
                .list_authorizations(ListAuthorizationsRequest {
                    artist_id: args.artist_id,
                }),
        )
        .map_err(failed("ListAuthorizations"))?
        .into_inner();
    args.conn.print(&reply, |r| {
        r.authorizations
            .iter()
            .map(|a| format!("{}\t{}", a.party_id, a.note))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// The uploader's AI disclosure.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Disclosure {
    /// No AI was used.
    None,
    /// AI-assisted production, human vocals.
    AiAssisted,
    /// AI-generated vocals.
    AiGenerated,
}

/// `vocalguard screen`.
#[derive(Debug, Args)]
pub struct ScreenArgs {
    /// The audio file.
    file: PathBuf,
    /// The platform's track id [default: the file's name].
    #[arg(long)]
    track_id: Option<String>,
    /// The uploading party's id.
    #[arg(long)]
    uploader: String,
    /// An artist id the track credits (repeatable).
    #[arg(long = "credit", value_name = "ARTIST_ID")]
    credits: Vec<String>,
    /// The uploader's AI disclosure.
    #[arg(long, value_enum)]
    ai_disclosure: Disclosure,
    /// Send the file in one unary `ScreenClip` message instead of a stream.
    #[arg(long)]
    unary: bool,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `vocalguard screen`.
pub fn screen(args: ScreenArgs) -> Result<ExitCode> {
    let rt = runtime()?;
    let bytes = read_audio(&args.file)?;
    let metadata = TrackMetadata {
        track_id: args.track_id.unwrap_or_else(|| {
            args.file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        uploader_party_id: args.uploader,
        credited_artist_ids: args.credits,
        ai_disclosure: match args.ai_disclosure {
            Disclosure::None => AiDisclosure::None,
            Disclosure::AiAssisted => AiDisclosure::AiAssisted,
            Disclosure::AiGenerated => AiDisclosure::AiGeneratedVocals,
        } as i32,
    };
    let mut client =
        ScreeningServiceClient::new(args.conn.channel(&rt)?).max_encoding_message_size(usize::MAX);
    let reply = if args.unary {
        rt.block_on(client.screen_clip(ScreenClipRequest {
            metadata: Some(metadata),
            audio: bytes,
        }))
        .map_err(failed("ScreenClip"))?
    } else {
        let mut messages = vec![ScreenRequest {
            part: Some(screen_request::Part::Metadata(metadata)),
        }];
        messages.extend(bytes.chunks(CHUNK_BYTES).map(|c| ScreenRequest {
            part: Some(screen_request::Part::Chunk(AudioChunk { data: c.to_vec() })),
        }));
        rt.block_on(client.screen(tokio_stream::iter(messages)))
            .map_err(failed("Screen"))?
    }
    .into_inner();
    args.conn.print(&reply, screen_text)
}

fn screen_text(r: &ScreenResponse) -> String {
    let decision = Decision::try_from(r.decision).map_or("?", |d| d.as_str_name());
    let mut lines = vec![
        format!("{}: {decision}", r.track_id),
        r.explanation.clone(),
        format!(
            "{:.1} s of audio, {:.1} s voiced, {} windows",
            r.duration_s, r.voiced_s, r.windows
        ),
    ];
    for m in &r.matches {
        let ranges: Vec<String> = m
            .time_ranges
            .iter()
            .map(|t| format!("{:.1}-{:.1}s", t.start_s, t.end_s))
            .collect();
        let calibrated = match (m.aggregate_llr, m.llr_above_match) {
            (Some(llr), Some(margin)) => {
                format!(" (LLR {llr:.1}, {margin:+.1} from the match point)")
            }
            _ => String::new(),
        };
        lines.push(format!(
            "  {} {} ({}): aggregate {:.3}{calibrated}, best {:.3}, {} windows, {:.0}% of voiced time{}{}",
            if m.matched { "match" } else { "grey " },
            m.display_name,
            m.artist_id,
            m.aggregate_score,
            m.best_score,
            m.matching_windows,
            m.matched_voiced_share * 100.0,
            if m.uploader_authorized {
                ", uploader authorized"
            } else {
                ""
            },
            if ranges.is_empty() {
                String::new()
            } else {
                format!(", at {}", ranges.join(" "))
            }
        ));
        if let Some(h) = m.hubness.filter(|h| h.is_hub) {
            lines.push(format!(
                "    hub voice: {} of {} other artists score {:.3} or more against it ({:.1} expected)",
                h.artists_near, h.other_artists, h.near_score, h.expected_near
            ));
        }
    }
    for f in &r.flags {
        lines.push(format!(
            "  flag: {}",
            Flag::try_from(*f).map_or("?", |f| f.as_str_name())
        ));
    }
    if let Some(c) = &r.context {
        lines.push(format!(
            "model {} ({}), registry version {}",
            c.model, c.model_sha256, c.registry_version
        ));
    }
    lines.join("\n")
}
