//! What every call needs before the core sees it: its deadline, and for the client-streaming
//! calls the metadata message and the audio bytes, checked against the upload limits.
//!
//! An upload stream is read by [`UploadParser`], a synchronous state machine fed one message
//! at a time; [`collect_upload`] drives it from a tonic stream. Keeping the parser free of
//! I/O lets it be tested and fuzzed on arbitrary message sequences.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};

use sha2::{Digest, Sha256};

use super::admission::UploadPermit;
use super::metrics::Metrics;
use crate::proto::{
    enroll_voiceprint_request, screen_request, EnrollMetadata, EnrollVoiceprintRequest,
    ScreenRequest, TrackMetadata,
};
use crate::registry::replay::WriteKey;
use crate::registry::validate_request_id;

/// The call's deadline: the client's `grpc-timeout`, capped by the server's default.
pub fn deadline(metadata: &MetadataMap, default: Duration) -> Instant {
    let client = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    Instant::now() + client.map_or(default, |c| c.min(default))
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit (H, M, S, m, u, n).
/// Anything else, including non-ASCII text, is `None`.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (&unit, digits) = value.as_bytes().split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// One message of an upload stream: its metadata, a chunk of audio, or the end of one file
/// of several.
pub enum Part<M> {
    /// The metadata.
    Metadata(M),
    /// Audio bytes of the current file.
    Chunk(Vec<u8>),
    /// The current file is complete; the next chunks start another.
    NextFile,
}

/// A streaming request type whose messages are metadata, chunks or file boundaries.
pub trait UploadMessage {
    /// The metadata type.
    type Metadata;
    /// The message's part, `None` when it carries neither.
    fn into_part(self) -> Option<Part<Self::Metadata>>;
}

impl UploadMessage for EnrollVoiceprintRequest {
    type Metadata = EnrollMetadata;
    fn into_part(self) -> Option<Part<EnrollMetadata>> {
        Some(match self.part? {
            enroll_voiceprint_request::Part::Metadata(m) => Part::Metadata(m),
            enroll_voiceprint_request::Part::Chunk(c) => Part::Chunk(c.data),
            enroll_voiceprint_request::Part::NextReference(_) => Part::NextFile,
        })
    }
}

impl UploadMessage for ScreenRequest {
    type Metadata = TrackMetadata;
    fn into_part(self) -> Option<Part<TrackMetadata>> {
        Some(match self.part? {
            screen_request::Part::Metadata(m) => Part::Metadata(m),
            screen_request::Part::Chunk(c) => Part::Chunk(c.data),
        })
    }
}

/// Why an upload stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// The stream ended before any message.
    #[error("empty stream: the first message must carry metadata")]
    EmptyStream,
    /// An audio chunk or a file boundary came before the metadata.
    #[error("the first message must carry metadata, not an audio chunk or a reference boundary")]
    ChunkBeforeMetadata,
    /// A second metadata message.
    #[error("metadata sent twice: only the first message may carry it")]
    MetadataTwice,
    /// A message with neither metadata nor a chunk.
    #[error("a message carries neither metadata nor a chunk")]
    EmptyMessage,
    /// The stream held metadata but no audio bytes.
    #[error("no audio: the stream held metadata but no audio bytes")]
    NoAudio,
    /// One file of several held no bytes (a boundary right after the metadata, two in a row,
    /// or one at the end).
    #[error("reference {index} of the upload holds no audio bytes: every next_reference must separate two non-empty files")]
    EmptyFile {
        /// The file's position, from 1.
        index: usize,
    },
    /// More files than the call takes.
    #[error(
        "the upload holds more than {max_files} files: at most {max_files} are taken in one call"
    )]
    TooManyFiles {
        /// The most the call takes.
        max_files: usize,
    },
    /// More audio bytes than the server accepts.
    #[error("the upload exceeds the server's limit of {max_bytes} bytes")]
    TooLarge {
        /// The limit, in bytes.
        max_bytes: u64,
    },
}

impl From<UploadError> for Status {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        }
    }
}

/// Reads an upload one message at a time: exactly one metadata message, first, then audio
/// chunks up to `max_bytes` in all, split into at most `max_files` files by file boundaries.
/// The first refusal is final.
#[derive(Debug)]
pub struct UploadParser<M> {
    max_bytes: u64,
    max_files: usize,
    metadata: Option<M>,
    received: u64,
    files: Vec<Vec<u8>>,
}

impl<M> UploadParser<M> {
    /// A parser of one file that accepts at most `max_bytes` of audio.
    pub fn new(max_bytes: u64) -> Self {
        Self::with_files(max_bytes, 1)
    }

    /// A parser of up to `max_files` files (at least 1) of at most `max_bytes` in all.
    pub fn with_files(max_bytes: u64, max_files: usize) -> Self {
        Self {
            max_bytes,
            max_files: max_files.max(1),
            metadata: None,
            received: 0,
            files: vec![Vec::new()],
        }
    }

    /// The file being received.
    fn current(&mut self) -> &mut Vec<u8> {
        self.files.last_mut().expect("a parser always holds a file")
    }

    /// Takes the next message's part (`None` when it carries neither).
    pub fn push(&mut self, part: Option<Part<M>>) -> Result<(), UploadError> {
        match (part, &self.metadata) {
            (None, _) => Err(UploadError::EmptyMessage),
            (Some(Part::Metadata(m)), None) => {
                self.metadata = Some(m);
                Ok(())
            }
            (Some(Part::Metadata(_)), Some(_)) => Err(UploadError::MetadataTwice),
            (Some(Part::Chunk(_) | Part::NextFile), None) => Err(UploadError::ChunkBeforeMetadata),
            (Some(Part::Chunk(bytes)), Some(_)) => {
                let received = self.received.saturating_add(bytes.len() as u64);
                if received > self.max_bytes {
                    return Err(UploadError::TooLarge {
                        max_bytes: self.max_bytes,
                    });
                }
                self.received = received;
                self.current().extend_from_slice(&bytes);
                Ok(())
            }
            (Some(Part::NextFile), Some(_)) => {
                if self.files.len() == self.max_files {
                    return Err(UploadError::TooManyFiles {
                        max_files: self.max_files,
                    });
                }
                if self.current().is_empty() {
                    return Err(UploadError::EmptyFile {
                        index: self.files.len(),
                    });
                }
                self.files.push(Vec::new());
                Ok(())
            }
        }
    }

    /// Ends the stream: the metadata and the files in order, or why they are not a complete
    /// upload.
    pub fn finish(mut self) -> Result<(M, Vec<Vec<u8>>), UploadError> {
        let metadata = self.metadata.take().ok_or(UploadError::EmptyStream)?;
        if self.current().is_empty() {
            return Err(match self.files.len() {
                1 => UploadError::NoAudio,
                index => UploadError::EmptyFile { index },
            });
        }
        Ok((metadata, self.files))
    }
}

/// How an upload stream is read.
#[derive(Debug, Clone, Copy)]
pub struct UploadRules {
    /// Most audio bytes in all.
    pub max_bytes: u64,
    /// Most files (references) in one stream.
    pub max_files: usize,
    /// Longest wait for the client's next message.
    pub idle_timeout: Duration,
}

/// Reads a one-file upload stream: see [`collect_files`].
pub async fn collect_upload<R: UploadMessage>(
    stream: Streaming<R>,
    rules: UploadRules,
    permit: &mut UploadPermit,
    metrics: &Metrics,
) -> Result<(R::Metadata, Vec<u8>), Status> {
    let rules = UploadRules {
        max_files: 1,
        ..rules
    };
    let (metadata, mut files) = collect_files(stream, rules, permit, metrics).await?;
    Ok((metadata, files.remove(0)))
}

/// Reads an upload stream by `rules` with an [`UploadParser`], reserving each chunk's bytes
/// on `permit` before keeping them (RESOURCE_EXHAUSTED when the server's upload budget is
/// spent). A client that sends nothing for the idle timeout is dropped with
/// DEADLINE_EXCEEDED (counted in `metrics`), which frees its slot; a broken stream's error is
/// passed on through [`broken_stream`].
pub async fn collect_files<R: UploadMessage>(
    mut stream: Streaming<R>,
    rules: UploadRules,
    permit: &mut UploadPermit,
    metrics: &Metrics,
) -> Result<(R::Metadata, Vec<Vec<u8>>), Status> {
    let mut parser = UploadParser::with_files(rules.max_bytes, rules.max_files);
    loop {
        let next = tokio::time::timeout(rules.idle_timeout, stream.message()).await;
        let Ok(next) = next else {
            metrics.record_upload_idle_timeout();
            return Err(idle_upload(rules.idle_timeout));
        };
        let Some(message) = next.map_err(broken_stream)? else {
            break;
        };
        let part = message.into_part();
        if let Some(Part::Chunk(bytes)) = &part {
            permit.reserve(bytes.len())?;
        }
        parser.push(part)?;
    }
    Ok(parser.finish()?)
}

/// The status for an upload whose client went quiet for `idle`.
fn idle_upload(idle: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the upload stalled: no message for {:.1} s (the server's upload idle timeout); send the next chunk or end the stream sooner",
        idle.as_secs_f64()
    ))
}

/// The status for an error reading the client's stream. tonic reports a message cut short or
/// one that does not decode as INTERNAL, but the fault is the client's: INVALID_ARGUMENT.
/// Other codes (a cancelled call, a message over tonic's size limit) pass as they came.
pub fn broken_stream(status: Status) -> Status {
    match status.code() {
        tonic::Code::Internal => {
            Status::invalid_argument(format!("the upload stream broke off: {}", status.message()))
        }
        _ => status,
    }
}

/// The write key of a mutating call: the client's `request_id` (empty: the call has none)
/// and a digest of `method` and the request's `parts` (its encoded fields with the request id
/// cleared, then any uploaded files), so that a retry must ask exactly the same.
pub fn write_key(
    method: &str,
    request_id: &str,
    parts: &[&[u8]],
) -> Result<Option<WriteKey>, Status> {
    if request_id.is_empty() {
        return Ok(None);
    }
    validate_request_id(request_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut digest = Sha256::new();
    digest.update(method.as_bytes());
    for part in parts {
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    Ok(Some(WriteKey {
        request_id: request_id.to_string(),
        fingerprint: hex::encode(digest.finalize()),
    }))
}

/// The status for an upload over the size limit.
pub fn upload_too_large(max_bytes: u64) -> Status {
    UploadError::TooLarge { max_bytes }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("5é"), None);
        assert_eq!(parse_grpc_timeout("é"), None);
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn the_shorter_deadline_wins() {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "1S".parse().unwrap());
        let d = deadline(&md, Duration::from_secs(100));
        assert!(d <= Instant::now() + Duration::from_secs(1));
        let d = deadline(&MetadataMap::new(), Duration::from_secs(3));
        assert!(d > Instant::now() + Duration::from_secs(2));
    }

    fn chunk(n: usize) -> Option<Part<u8>> {
        Some(Part::Chunk(vec![7; n]))
    }

    #[test]
    fn an_upload_is_metadata_then_chunks() {
        let mut p = UploadParser::new(10);
        p.push(Some(Part::Metadata(1u8))).unwrap();
        p.push(chunk(4)).unwrap();
        p.push(chunk(0)).unwrap();
        p.push(chunk(6)).unwrap();
        assert_eq!(p.finish(), Ok((1, vec![vec![7; 10]])));
    }

    #[test]
    fn boundaries_split_the_files_and_the_byte_limit_spans_them() {
        let mut p = UploadParser::with_files(10, 3);
        p.push(Some(Part::Metadata(1u8))).unwrap();
        p.push(chunk(2)).unwrap();
        p.push(Some(Part::NextFile)).unwrap();
        p.push(chunk(3)).unwrap();
        p.push(chunk(1)).unwrap();
        p.push(Some(Part::NextFile)).unwrap();
        p.push(chunk(4)).unwrap();
        assert_eq!(
            p.push(chunk(1)),
            Err(UploadError::TooLarge { max_bytes: 10 })
        );
        assert_eq!(
            p.finish(),
            Ok((1, vec![vec![7; 2], vec![7; 4], vec![7; 4]]))
        );
    }

    #[test]
    fn empty_or_surplus_files_are_refused() {
        let boundary = || Some(Part::<u8>::NextFile);
        let mut p = UploadParser::with_files(10, 3);
        p.push(Some(Part::Metadata(1u8))).unwrap();
        assert_eq!(p.push(boundary()), Err(UploadError::EmptyFile { index: 1 }));
        let mut p = UploadParser::with_files(10, 3);
        p.push(Some(Part::Metadata(1u8))).unwrap();
        p.push(chunk(1)).unwrap();
        p.push(boundary()).unwrap();
        assert_eq!(p.finish(), Err(UploadError::EmptyFile { index: 2 }));
        let mut p = UploadParser::with_files(10, 2);
        p.push(Some(Part::Metadata(1u8))).unwrap();
        p.push(chunk(1)).unwrap();
        p.push(boundary()).unwrap();
        p.push(chunk(1)).unwrap();
        assert_eq!(
            p.push(boundary()),
            Err(UploadError::TooManyFiles { max_files: 2 })
        );
        let mut p = UploadParser::new(10);
        p.push(Some(Part::Metadata(1u8))).unwrap();
        p.push(chunk(1)).unwrap();
        assert_eq!(
            p.push(boundary()),
            Err(UploadError::TooManyFiles { max_files: 1 })
        );
        let mut p = UploadParser::<u8>::new(10);
        assert_eq!(p.push(boundary()), Err(UploadError::ChunkBeforeMetadata));
    }

    #[test]
    fn bad_sequences_are_refused() {
        assert_eq!(
            UploadParser::<u8>::new(10).finish(),
            Err(UploadError::EmptyStream)
        );
        let mut p = UploadParser::<u8>::new(10);
        assert_eq!(p.push(chunk(1)), Err(UploadError::ChunkBeforeMetadata));
        let mut p = UploadParser::<u8>::new(10);
        assert_eq!(p.push(None), Err(UploadError::EmptyMessage));
        let mut p = UploadParser::new(10);
        p.push(Some(Part::Metadata(1u8))).unwrap();
        assert_eq!(
            p.push(Some(Part::Metadata(2))),
            Err(UploadError::MetadataTwice)
        );
        let mut p = UploadParser::new(10);
        p.push(Some(Part::Metadata(1u8))).unwrap();
        assert_eq!(p.finish(), Err(UploadError::NoAudio));
        let mut p = UploadParser::new(10);
        p.push(Some(Part::Metadata(1u8))).unwrap();
        p.push(chunk(10)).unwrap();
        assert_eq!(
            p.push(chunk(1)),
            Err(UploadError::TooLarge { max_bytes: 10 })
        );
    }

    #[test]
    fn a_broken_stream_is_the_clients_fault() {
        let cut = broken_stream(Status::internal("Unexpected EOF decoding stream."));
        assert_eq!(cut.code(), tonic::Code::InvalidArgument);
        assert!(
            cut.message().contains("Unexpected EOF"),
            "{}",
            cut.message()
        );
        assert_eq!(
            broken_stream(Status::cancelled("gone")).code(),
            tonic::Code::Cancelled
        );
    }

    #[test]
    fn write_keys_bind_the_request_id_to_what_was_asked() {
        assert_eq!(write_key("M", "", &[b"x"]).unwrap(), None);
        let key = write_key("M", "req-1", &[b"ab", b"c"]).unwrap().unwrap();
        assert_eq!(key.request_id, "req-1");
        assert_eq!(
            key,
            write_key("M", "req-1", &[b"ab", b"c"]).unwrap().unwrap()
        );
        for (method, parts) in [("M", [&b"a"[..], b"bc"]), ("N", [b"ab", b"c"])] {
            let other = write_key(method, "req-1", &parts).unwrap().unwrap();
            assert_ne!(other.fingerprint, key.fingerprint, "{method} {parts:?}");
        }
        let refused = write_key("M", &"x".repeat(65), &[]).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn refusals_map_to_status_codes() {
        assert_eq!(
            Status::from(UploadError::TooLarge { max_bytes: 1 }).code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            Status::from(UploadError::MetadataTwice).code(),
            tonic::Code::InvalidArgument
        );
    }
}
