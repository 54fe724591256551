//! The fuzz targets' bodies, shared with `tests/fuzz_regressions.rs`, which replays every
//! crash input kept in `tests/fixtures/fuzz/<target>/` through the same code.
//!
//! `decode_embed`: untrusted bytes through the whole embedding path: decode (any container)
//! → 16 kHz mono → level, voice activity, mel → the built-in GE2E encoder, with decoding
//! capped at a few seconds so each run stays fast.
//!
//! `upload_request`: the request parser on arbitrary input: a `grpc-timeout` value, and a
//! sequence of prost-decoded `ScreenRequest` or `EnrollVoiceprintRequest` messages fed to the
//! upload state machine, whose metadata then goes through the server's checks. Input layout:
//! byte 0 picks the RPC (even: Screen, odd: EnrollVoiceprint); bytes 1-2 are the upload limit
//! in bytes; byte 3 is the length of the `grpc-timeout` text that follows; the rest is
//! messages, each a little-endian u16 length and that many bytes of protobuf.
//!
//! Any error is fine; a panic, an abort or a broken promise (checked by assertions) is not.

use std::sync::OnceLock;

use prost::Message;
use vocalguard::audio::{decode_to_16k_mono, DecodeLimits};
use vocalguard::embed::Embedder;
use vocalguard::encoder::{ResolveOptions, SpeakerModel};
use vocalguard::proto::{EnrollVoiceprintRequest, ScreenRequest};
use vocalguard::registry::references::MAX_REFERENCES;
use vocalguard::server::convert;
use vocalguard::server::request::{parse_grpc_timeout, UploadMessage, UploadParser};

/// Longest audio a `decode_embed` run decodes, in seconds.
pub const MAX_DURATION_S: f64 = 4.0;

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_duration_s: MAX_DURATION_S,
    }
}

fn embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let model = SpeakerModel::load("ge2e-resemblyzer", &ResolveOptions::default())
            .expect("the built-in model loads");
        Embedder::new(model, limits()).expect("the pipeline builds")
    })
}

/// Decodes `data` and, when that succeeds and there is voice, embeds it; checks that decoded
/// audio is non-empty and finite and that the embedding has unit length.
pub fn decode_embed(data: &[u8]) {
    let Ok(audio) = decode_to_16k_mono(data.to_vec(), None, &limits()) else {
        return;
    };
    assert!(
        !audio.samples.is_empty(),
        "decoding succeeded with no samples"
    );
    assert!(
        audio.samples.iter().all(|s| s.is_finite()),
        "decoding succeeded with non-finite samples"
    );
    let embedder = embedder();
    let Ok(prepared) = embedder.prepare_samples(audio.samples) else {
        return;
    };
    let embedding = embedder
        .embed_prepared(&[&prepared])
        .expect("a prepared track embeds")
        .remove(0);
    let norm: f32 = embedding.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() < 1e-3,
        "the embedding is not unit length: {norm}"
    );
}

/// Parses `data` as described in the crate documentation.
pub fn upload_request(data: &[u8]) {
    let [rpc, lo, hi, timeout_len, rest @ ..] = data else {
        return;
    };
    let max_bytes = u64::from(u16::from_le_bytes([*lo, *hi]));
    let (timeout, framed) = rest.split_at(usize::from(*timeout_len).min(rest.len()));
    if let Some(timeout) = std::str::from_utf8(timeout)
        .ok()
        .and_then(parse_grpc_timeout)
    {
        assert!(timeout.as_secs() <= 99_999_999 * 3600);
    }
    if rpc % 2 == 0 {
        if let Some(metadata) = parse::<ScreenRequest>(framed, max_bytes) {
            let _ = convert::upload(metadata);
        }
    } else if let Some(metadata) = parse::<EnrollVoiceprintRequest>(framed, max_bytes) {
        let _ = convert::label(metadata.label);
    }
}

/// Feeds every message of `framed` that decodes as `R` to a parser with limit `max_bytes`;
/// returns the finished upload's metadata, checked against the parser's promises.
fn parse<R: UploadMessage + Message + Default>(
    mut framed: &[u8],
    max_bytes: u64,
) -> Option<R::Metadata> {
    let mut parser = UploadParser::with_files(max_bytes, MAX_REFERENCES);
    while let [lo, hi, rest @ ..] = framed {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
        let (body, next) = rest.split_at(len);
        framed = next;
        // tonic refuses a message that does not decode; the stream ends there.
        let message = R::decode(body).ok()?;
        parser.push(message.into_part()).ok()?;
    }
    let (metadata, files) = parser.finish().ok()?;
    assert!(
        (1..=MAX_REFERENCES).contains(&files.len()),
        "an accepted upload has between one and the most files"
    );
    assert!(
        files.iter().all(|f| !f.is_empty()),
        "every file of an accepted upload has audio"
    );
    assert!(
        files.iter().map(|f| f.len() as u64).sum::<u64>() <= max_bytes,
        "an accepted upload is within the limit"
    );
    Some(metadata)
}
