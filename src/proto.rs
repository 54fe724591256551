//! Types and service stubs generated from `proto/vocalguard/v1`, with the descriptor set that
//! server reflection serves. Every message serialises to JSON (for the CLI's `--json`), enums
//! by name.

pub mod codec;

tonic::include_proto!("vocalguard.v1");

/// The encoded descriptor set of every proto file, served by gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vocalguard_descriptor.bin"));

/// Serde serializers writing prost enum fields (`i32` on the Rust side) by name; a value the
/// enum does not know is written as its number.
pub mod enum_names {
    use serde::Serializer;

    macro_rules! by_name {
        ($name:ident, $enum:ty) => {
            /// Writes the enum value's proto name.
            pub fn $name<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
                match <$enum>::try_from(*value) {
                    Ok(v) => s.serialize_str(v.as_str_name()),
                    Err(_) => s.serialize_i32(*value),
                }
            }
        };
    }

    by_name!(voiceprint_label, super::VoiceprintLabel);
    by_name!(ai_disclosure, super::AiDisclosure);
    by_name!(decision, super::Decision);
    by_name!(review_reason, super::ReviewReason);
    by_name!(audit_action, super::AuditAction);

    /// Writes each flag's proto name.
    pub fn flags<S: Serializer>(values: &[i32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(|v| {
            super::Flag::try_from(*v)
                .map(|f| f.as_str_name().to_string())
                .unwrap_or_else(|_| v.to_string())
        }))
    }
}
