//! What every call needs before the core sees it: its deadline, and for the client-streaming
//! calls the metadata message and the audio bytes, checked against the upload limits.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};

use crate::proto::{
    enroll_voiceprint_request, screen_request, EnrollMetadata, EnrollVoiceprintRequest,
    ScreenRequest, TrackMetadata,
};

/// The call's deadline: the client's `grpc-timeout`, capped by the server's default.
pub fn deadline(metadata: &MetadataMap, default: Duration) -> Instant {
    let client = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    Instant::now() + client.map_or(default, |c| c.min(default))
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// One message of an upload stream: its metadata, or a chunk of audio.
pub enum Part<M> {
    /// The metadata.
    Metadata(M),
    /// Audio bytes.
    Chunk(Vec<u8>),
}

/// A streaming request type whose messages are metadata-or-chunk.
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

/// Reads an upload stream: exactly one metadata message, first, then audio chunks up to
/// `max_bytes` in all. A broken stream's error is passed on as it came.
pub async fn collect_upload<R: UploadMessage>(
    mut stream: Streaming<R>,
    max_bytes: u64,
) -> Result<(R::Metadata, Vec<u8>), Status> {
    let first = stream.message().await?.ok_or_else(|| {
        Status::invalid_argument("empty stream: the first message must carry metadata")
    })?;
    let metadata = match first.into_part() {
        Some(Part::Metadata(m)) => m,
        Some(Part::Chunk(_)) => {
            return Err(Status::invalid_argument(
                "the first message must carry metadata, not an audio chunk",
            ))
        }
        None => {
            return Err(Status::invalid_argument(
                "a message carries neither metadata nor a chunk",
            ))
        }
    };
    let mut audio = Vec::new();
    while let Some(message) = stream.message().await? {
        match message.into_part() {
            Some(Part::Chunk(bytes)) => {
                if (audio.len() + bytes.len()) as u64 > max_bytes {
                    return Err(upload_too_large(max_bytes));
                }
                audio.extend_from_slice(&bytes);
            }
            Some(Part::Metadata(_)) => {
                return Err(Status::invalid_argument(
                    "metadata sent twice: only the first message may carry it",
                ))
            }
            None => {
                return Err(Status::invalid_argument(
                    "a message carries neither metadata nor a chunk",
                ))
            }
        }
    }
    if audio.is_empty() {
        return Err(Status::invalid_argument(
            "no audio: the stream held metadata but no audio bytes",
        ));
    }
    Ok((metadata, audio))
}

/// The status for an upload over the size limit.
pub fn upload_too_large(max_bytes: u64) -> Status {
    Status::resource_exhausted(format!(
        "the upload exceeds the server's limit of {max_bytes} bytes"
    ))
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
}
