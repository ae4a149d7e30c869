//! Black-box tests: they run the built fh-lite binary, nothing else.
//!
//! `FH_LITE_EXE` names the binary under test (default: the one cargo just
//! built) and `FH_LITE_RUNNER` an optional wrapper such as
//! `qemu-aarch64-static`, so the same suite runs natively and under
//! qemu-user for every ARM target (scripts/test does all three).

mod fakehub;
mod util;

/// Fixture closures and signed caches built by real Nix (tests/fixtures).
mod fixtures;

/// --help, --version, usage and reference-parsing errors.
mod cli;

/// `fh-lite resolve` against the local FlakeHub stand-in: resolve-only
/// token rules, error classes, retries, limits, TLS roots, redirects.
mod resolve;

/// flake.nix parses; README and --help agree.
mod packaging;

/// status, rollback, the apply lock, the NixOS module.
mod activation;

/// apply end to end: resolve, plan, fetch, image root, activation.
mod apply;

/// activation through apply: generations, exit codes, rollback, health
/// checks, failed paths, the no-op run, the lock, nix-darwin, Home Manager.
mod activation_e2e;

/// A real nix-daemon and an isolated Nix environment for the live stores.
mod nixd;

/// apply into live stores judged by real Nix: daemon, local, nix copy,
/// GC during a transfer, daemon faults.
mod live_store;

/// Crash safety: applies killed (SIGKILL, SIGTERM) at random moments, then
/// run again; judged by real Nix, the profile, the logs and status.
mod crash;
