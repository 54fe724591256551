//! Compiles the wire contract in `proto/` with `protox` (pure Rust), so no system `protoc` is
//! needed, and writes the encoded descriptor set that server reflection serves.

use protox::prost::Message;

/// Enum fields (prost keeps them as `i32`) and the serializer that writes their names in JSON.
const ENUM_FIELDS: [(&str, &str); 7] = [
    (".vocalguard.v1.Voiceprint.label", "voiceprint_label"),
    (".vocalguard.v1.EnrollMetadata.label", "voiceprint_label"),
    (
        ".vocalguard.v1.TrackMetadata.ai_disclosure",
        "ai_disclosure",
    ),
    (".vocalguard.v1.ScreenResponse.decision", "decision"),
    (
        ".vocalguard.v1.ScreenResponse.review_reason",
        "review_reason",
    ),
    (".vocalguard.v1.ScreenResponse.flags", "flags"),
    (".vocalguard.v1.AuditEvent.action", "audit_action"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/vocalguard/v1/common.proto",
        "proto/vocalguard/v1/health.proto",
        "proto/vocalguard/v1/registry.proto",
        "proto/vocalguard/v1/screening.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("vocalguard_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    let mut builder = tonic_prost_build::configure()
        .codec_path("crate::proto::codec::ProtoCodec")
        .type_attribute(".vocalguard.v1", "#[derive(serde::Serialize)]");
    for (field, with) in ENUM_FIELDS {
        builder = builder.field_attribute(
            field,
            format!("#[serde(serialize_with = \"crate::proto::enum_names::{with}\")]"),
        );
    }
    builder.compile_fds(descriptors)?;
    Ok(())
}
