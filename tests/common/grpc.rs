//! gRPC helpers for the service tests: clients, enrollment and screening of files, and the
//! speakers of librispeech-mini.

use std::path::{Path, PathBuf};

use tonic::transport::Channel;
use tonic::{Code, Status};
use vocalguard::proto::registry_service_client::RegistryServiceClient;
use vocalguard::proto::screening_service_client::ScreeningServiceClient;
use vocalguard::proto::*;

/// Both service clients on one channel.
pub struct Clients {
    /// Registry service.
    pub registry: RegistryServiceClient<Channel>,
    /// Screening service.
    pub screening: ScreeningServiceClient<Channel>,
}

impl Clients {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Self {
        let channel = Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        Self {
            registry: RegistryServiceClient::new(channel.clone()),
            screening: ScreeningServiceClient::new(channel),
        }
    }

    /// Creates an artist.
    pub async fn create_artist(&mut self, id: &str, name: &str) -> Artist {
        self.registry
            .create_artist(CreateArtistRequest {
                artist_id: id.into(),
                display_name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("creating {id}: {s:?}"))
            .into_inner()
    }

    /// Enrolls `bytes` for `artist` as a speaking voiceprint.
    pub async fn enroll_bytes(
        &mut self,
        artist: &str,
        bytes: &[u8],
    ) -> Result<EnrollVoiceprintResponse, Status> {
        self.registry
            .enroll_voiceprint(tokio_stream::iter(enroll_messages(artist, bytes)))
            .await
            .map(|r| r.into_inner())
    }

    /// Enrolls several references of one voice (`bytes` of each file) for `artist` in one
    /// call.
    pub async fn enroll_references(
        &mut self,
        artist: &str,
        files: &[Vec<u8>],
    ) -> Result<EnrollVoiceprintResponse, Status> {
        self.registry
            .enroll_voiceprint(tokio_stream::iter(enroll_set_messages(artist, files)))
            .await
            .map(|r| r.into_inner())
    }

    /// Enrolls a file.
    pub async fn enroll(
        &mut self,
        artist: &str,
        path: &Path,
    ) -> Result<EnrollVoiceprintResponse, Status> {
        self.enroll_bytes(artist, &std::fs::read(path).unwrap())
            .await
    }

    /// Screens `bytes` through the streaming RPC.
    pub async fn screen_bytes(
        &mut self,
        track_id: &str,
        bytes: &[u8],
        uploader: &str,
        disclosure: AiDisclosure,
    ) -> Result<ScreenResponse, Status> {
        let meta = TrackMetadata {
            track_id: track_id.into(),
            uploader_party_id: uploader.into(),
            credited_artist_ids: Vec::new(),
            ai_disclosure: disclosure as i32,
        };
        self.screening
            .screen(tokio_stream::iter(screen_messages(meta, bytes)))
            .await
            .map(|r| r.into_inner())
    }

    /// Screens a file, with no AI disclosed.
    pub async fn screen(&mut self, path: &Path, uploader: &str) -> ScreenResponse {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        self.screen_bytes(
            &name,
            &std::fs::read(path).unwrap(),
            uploader,
            AiDisclosure::None,
        )
        .await
        .unwrap_or_else(|s| panic!("screening {name}: {s:?}"))
    }
}

/// The messages of an enrollment stream: metadata, then 64 KiB chunks.
pub fn enroll_messages(artist: &str, bytes: &[u8]) -> Vec<EnrollVoiceprintRequest> {
    enroll_set_messages(artist, &[bytes.to_vec()])
}

/// The messages of a several-reference enrollment stream: metadata, then each file's 64 KiB
/// chunks with a `next_reference` between files.
pub fn enroll_set_messages(artist: &str, files: &[Vec<u8>]) -> Vec<EnrollVoiceprintRequest> {
    let mut out = vec![EnrollVoiceprintRequest {
        part: Some(enroll_voiceprint_request::Part::Metadata(EnrollMetadata {
            artist_id: artist.into(),
            label: VoiceprintLabel::Speaking as i32,
            description: "test reference".into(),
            ..Default::default()
        })),
    }];
    for (i, bytes) in files.iter().enumerate() {
        if i > 0 {
            out.push(EnrollVoiceprintRequest {
                part: Some(enroll_voiceprint_request::Part::NextReference(
                    NextReference {},
                )),
            });
        }
        out.extend(bytes.chunks(64 * 1024).map(|c| EnrollVoiceprintRequest {
            part: Some(enroll_voiceprint_request::Part::Chunk(AudioChunk {
                data: c.to_vec(),
            })),
        }));
    }
    out
}

/// The messages of a screening stream: metadata, then 64 KiB chunks.
pub fn screen_messages(meta: TrackMetadata, bytes: &[u8]) -> Vec<ScreenRequest> {
    let mut out = vec![ScreenRequest {
        part: Some(screen_request::Part::Metadata(meta)),
    }];
    out.extend(bytes.chunks(64 * 1024).map(|c| ScreenRequest {
        part: Some(screen_request::Part::Chunk(AudioChunk { data: c.to_vec() })),
    }));
    out
}

/// The `test-other` speakers of librispeech-mini, each with its utterances in name order.
pub fn test_other_speakers(root: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("test-other"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|d| {
            let name = d.file_name().unwrap().to_string_lossy().to_string();
            (name, flac_files(&d))
        })
        .collect()
}

/// The `.flac` files of a folder, in name order.
pub fn flac_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "flac"))
        .collect();
    files.sort();
    files
}

/// Enrolls `files` in order until `wanted` are accepted, passing over references refused only
/// for having too little voice; returns the files enrolled and those left over.
pub async fn enroll_first(
    clients: &mut Clients,
    artist: &str,
    files: &[PathBuf],
    wanted: usize,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut enrolled = Vec::new();
    let mut rest = Vec::new();
    for file in files {
        if enrolled.len() == wanted {
            rest.push(file.clone());
            continue;
        }
        match clients.enroll(artist, file).await {
            Ok(_) => enrolled.push(file.clone()),
            Err(s)
                if s.code() == Code::FailedPrecondition && s.message().contains("voiced audio") =>
            {
                rest.push(file.clone())
            }
            Err(s) => panic!("enrolling {} for {artist}: {s:?}", file.display()),
        }
    }
    assert_eq!(enrolled.len(), wanted, "not enough references for {artist}");
    (enrolled, rest)
}

/// A decision's proto name.
pub fn decision(r: &ScreenResponse) -> &'static str {
    Decision::try_from(r.decision).unwrap().as_str_name()
}

/// 16-bit PCM mono WAV bytes of `samples` at `rate`.
pub fn wav_bytes(samples: &[f32], rate: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
    for &s in samples {
        writer
            .write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .unwrap();
    }
    writer.finalize().unwrap();
    out.into_inner()
}

/// The first `seconds` of `utterances` decoded and concatenated, as 16 kHz 16-bit WAV bytes.
pub fn speech_clip(utterances: &[PathBuf], seconds: f64) -> Vec<u8> {
    let rate = vocalguard::audio::TARGET_SAMPLE_RATE;
    let wanted = (seconds * f64::from(rate)) as usize;
    let mut samples = Vec::with_capacity(wanted);
    for path in utterances {
        if samples.len() >= wanted {
            break;
        }
        let decoded =
            vocalguard::audio::load_file(path, &vocalguard::audio::DecodeLimits::default())
                .unwrap_or_else(|e| panic!("decoding {}: {e}", path.display()));
        samples.extend(decoded.samples);
    }
    assert!(
        samples.len() >= wanted,
        "the utterances hold less than {seconds} s of audio"
    );
    samples.truncate(wanted);
    wav_bytes(&samples, rate)
}
