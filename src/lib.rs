//! VocalGuard: voice-impersonation screening. Audio is decoded and turned into speaker
//! embeddings by one shared pipeline ([`embed`]); the CLI, the server and the evaluator are
//! front doors onto it.

pub mod audio;
pub mod embed;
pub mod encoder;
pub mod features;
