//! Untrusted bytes through decode → features → embedding; see `vocalguard_fuzz::decode_embed`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vocalguard_fuzz::decode_embed(data));
