//! Invariant checks behind the fuzz targets (fuzz_targets/*.rs), one module
//! per target, over fh-lite's library: `nix` and `outref` as they are, and
//! the two pure parsers of the daemon backend (`wire`) and of the FlakeHub
//! client (`answer`) that the library exposes for fuzzing. Each `check`
//! panics, which libFuzzer reports as a crash, when a parser accepts
//! something it must not, gives back something other than what it read,
//! or panics itself.

/// The tests' NAR writer, for re-encoding and for seeds.
pub use fh_lite::testutil::nar as narwriter;
pub use fh_lite::{nix, outref};

pub mod bundle;
pub mod daemon;
pub mod flakehub;
pub mod nar;
pub mod narinfo;
pub mod outrefs;
