//! Black-box tests: they run the built fh-lite binary, nothing else.
//!
//! `FH_LITE_EXE` names the binary under test (default: the one cargo just
//! built) and `FH_LITE_RUNNER` an optional wrapper such as
//! `qemu-aarch64-static`, so the same suite runs natively and under
//! qemu-user for every ARM target (scripts/test does all three).
//!
//! A test that needs root, busybox or a tmpfs and cannot have it calls
//! `support::require`: it fails under `FH_LITE_REQUIRE_ALL=1` (scripts/test),
//! otherwise it is skipped and logged to `FH_LITE_SKIP_LOG`.

// Tests write their fixtures with std; fh-lite itself writes through its
// rootfs::Dir (clippy.toml).
#![allow(clippy::disallowed_methods)]

/// Helpers: the FlakeHub stand-in, fixtures, nix-daemon, running the
/// binary, what a test needs from the host and how it is skipped (and,
/// in `support::fixtures`, the two tests that check the fixtures).
mod support;

/// --help, --version, usage and reference-parsing errors.
mod cli;

/// `--mirror`: five devices behind a LAN mirror.
mod mirrors;

/// `--limit-rate`: a run's downloads under the cap.
mod ratecap;

/// Delta bundles (`bundle create --since`): sizes, applied on top of the
/// old closure, refused without it.
mod delta;

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

/// apply into live stores judged by real Nix: daemon, local, nix copy,
/// GC during a transfer, daemon faults.
mod live_store;

/// Crash safety of the transfer: a NAR body that breaks off is resumed
/// with a Range request; temp trees of dead runs are removed.
mod resume;

/// Hardening: credentials stay with the cache's origin, decoder memory is
/// capped.
mod hardening;

/// Crash safety: applies killed (SIGKILL, SIGTERM) at random moments, then
/// run again; judged by real Nix, the profile, the logs and status.
mod crash;

/// Offline and beyond FlakeHub: fetch, bundles, apply --from, anti-downgrade.
mod offline;

/// Any signed binary cache, no FlakeHub: apply STOREPATH --cache URL from
/// file:// and from an https:// cache wanting a netrc login.
mod anycache;

/// Fleet options: metrics file, reboot policy, activation window, staged
/// rollout.
mod fleet;

/// The operator's decisions: rollback past failed systems, hold.
mod decisions;

/// What runs as root: found on the sanitised PATH only, with a minimal
/// environment.
mod rootenv;

/// What a run reports: the --json result event, status and metrics.
mod outcomes;

/// --root DIR is a jail: symlinks planted under DIR never lead fh-lite out.
mod jail;

/// Trial boots with a fake efivars directory: pin, one-shot, confirm-boot
/// (commit, did not boot, a failed health check after the boot).
mod trialboot;
