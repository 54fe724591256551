//! The `vocalguard` binary: parses the command line and reports errors with their causes.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc keeps freed pages for reuse: the encoder allocates and frees tens of megabytes
/// per batch, which glibc's allocator returns to the kernel and faults back in every time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = vocalguard::cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
