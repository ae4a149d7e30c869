//! The black-box tests' helpers; the test modules are listed in main.rs.

/// The FlakeHub stand-in (tests/fakehub) and token files.
pub mod fakehub;

/// Fixture closures and signed caches built by real Nix (tests/fixtures).
pub mod fixtures;

/// A real nix-daemon and an isolated Nix environment for the live stores.
pub mod nixd;

/// Run the binary under test; temporary directories.
pub mod util;

/// The time limit on every run of fh-lite (a hang fails, naming the test).
pub mod watchdog;

/// A deploy against the stand-in: releases, token, image root, the
/// commands, and Nix as the judge.
pub mod deploy;

/// What a test needs from the host (root, busybox) and the one way it is
/// skipped without it (`FH_LITE_REQUIRE_ALL`, `FH_LITE_SKIP_LOG`); fake
/// systems; the process tree. The unit tests' own support, from the
/// library.
pub use fh_lite::testutil::host;
pub use fh_lite::testutil::procs;

pub use host::{chroot_root, fake_system, is_root, require};
