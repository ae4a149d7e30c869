#![no_main]
//! See fh_lite_fuzz::bundle for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fh_lite_fuzz::bundle::check(data));
