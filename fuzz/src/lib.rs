//! Invariant checks behind the fuzz targets (fuzz_targets/*.rs), one module
//! per target. fh-lite is a binary crate, so its pure modules are built here
//! straight from ../src with `#[path]`: `nix/` and `outref.rs` as they are,
//! and the two pure child modules of the daemon backend (`wire.rs`) and of
//! the FlakeHub client (`answer.rs`). Each `check` panics, which libFuzzer
//! reports as a crash, when a parser accepts something it must not, gives
//! back something other than what it read, or panics itself.

// The included modules hold more than the checks use.
#![allow(dead_code)]

/// The unit tests' NAR writer, for re-encoding and for seeds.
#[path = "../../src/testutil/nar.rs"]
pub mod narwriter;
#[path = "../../src/nix/mod.rs"]
pub mod nix;
#[path = "../../src/outref.rs"]
pub mod outref;

pub mod bundle;
pub mod daemon;
pub mod flakehub;
pub mod nar;
pub mod narinfo;
pub mod outrefs;

/// Stands in for fh-lite's error type, which `outref.rs` converts into.
mod error {
    pub struct Error;
    impl Error {
        pub fn usage(_message: String) -> Error {
            Error
        }
    }
}
