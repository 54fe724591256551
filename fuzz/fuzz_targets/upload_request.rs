//! The request parser on arbitrary message sequences; see `vocalguard_fuzz::upload_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vocalguard_fuzz::upload_request(data));
