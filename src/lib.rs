//! VocalGuard: voice-impersonation screening. Audio is decoded and turned into speaker
//! embeddings by one shared pipeline ([`embed`]); the CLI, the server and the evaluator are
//! front doors onto it.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod audio;
pub mod cli;
pub mod echo;
pub mod embed;
pub mod encoder;
pub mod eval;
pub mod features;
pub mod proto;
pub mod registry;
pub mod scoring;
pub mod screening;
pub mod server;
