//! Replays every input kept in `tests/fixtures/fuzz/<target>/` through the fuzz targets' own
//! code (`fuzz/src/lib.rs`), so each crash once found stays fixed. An input passes when it runs
//! without a panic or an abort.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

/// Runs `run` on every file of `tests/fixtures/fuzz/<target>/`.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    for input in inputs {
        eprintln!("{}", input.display());
        run(&std::fs::read(&input).unwrap());
    }
}

#[test]
fn decode_embed_regressions() {
    replay("decode_embed", harness::decode_embed);
}

#[test]
fn upload_request_regressions() {
    replay("upload_request", harness::upload_request);
}
