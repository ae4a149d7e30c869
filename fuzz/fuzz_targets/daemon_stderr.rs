#![no_main]
//! See fh_lite_fuzz::daemon for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fh_lite_fuzz::daemon::check(data));
