//! The top-level error and the exit-code contract.
//!
//! Every layer (outref, http, flakehub, nix formats, fetch, store, activate)
//! has its own error enum with a lower-case "what: detail" `Display` that
//! names the URL, store path or file involved. At the top they become one
//! [`Error`]: the message printed once by `main`, plus the [`Exit`] class that
//! decides the process exit status. The table in [`Exit`] is the contract
//! that timers and orchestrators read; `--help` and README.md print it.

use std::fmt;

/// Exit statuses. Stable: scripts and fleet tooling depend on them.
///
/// Codes 0, 1 and 2 follow the usual Unix convention; the others are
/// grouped by pipeline step (10s: resolve, 20s: cache/transfer, 30s:
/// activation, 40s: local conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done (or there was nothing to do).
    Success,
    /// An unexpected internal error (a bug) or an unclassified local failure.
    Internal,
    /// Bad command line or output reference.
    Usage,
    /// This step of the pipeline is not built yet.
    NotImplemented,
    /// No device token, or FlakeHub answered 401 (missing, invalid, expired).
    Unauthorized,
    /// FlakeHub answered 403: the token does not allow this reference.
    Forbidden,
    /// FlakeHub answered 404: no such project, release or output.
    NotFound,
    /// FlakeHub kept answering 429/5xx after all retries.
    Unavailable,
    /// FlakeHub's answer was malformed, oversized or not a store path.
    BadResponse,
    /// Could not reach a server: DNS, connect, timeout, TLS.
    Network,
    /// The binary cache failed: narinfo or NAR missing, refused, cut short.
    Cache,
    /// A signature, hash or size did not verify; a narinfo or NAR was malformed.
    Verification,
    /// The store could not take the paths: disk full, registration refused.
    Store,
    /// Activation failed and was not rolled back (--no-rollback or no previous generation).
    ActivationFailed,
    /// Activation partly failed: some units failed (switch-to-configuration exit 4), kept.
    ActivationPartial,
    /// Activation or health check failed; the previous generation was restored.
    RolledBack,
    /// Activation failed and so did the rollback: the system needs attention.
    RollbackFailed,
    /// The resolved path failed activation before; skipped (see --retry-failed).
    SkippedFailed,
    /// Activated; a reboot is needed for it to take full effect (exit 100 of the script).
    RebootNeeded,
    /// Another fh-lite apply holds the lock.
    AlreadyRunning,
}

impl Exit {
    /// Every class, in the order of the table printed by `--help`.
    pub const ALL: [Exit; 20] = [
        Exit::Success,
        Exit::Internal,
        Exit::Usage,
        Exit::NotImplemented,
        Exit::Unauthorized,
        Exit::Forbidden,
        Exit::NotFound,
        Exit::Unavailable,
        Exit::BadResponse,
        Exit::Network,
        Exit::Cache,
        Exit::Verification,
        Exit::Store,
        Exit::ActivationFailed,
        Exit::ActivationPartial,
        Exit::RolledBack,
        Exit::RollbackFailed,
        Exit::SkippedFailed,
        Exit::RebootNeeded,
        Exit::AlreadyRunning,
    ];

    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Internal => 1,
            Exit::Usage => 2,
            Exit::NotImplemented => 3,
            Exit::Unauthorized => 10,
            Exit::Forbidden => 11,
            Exit::NotFound => 12,
            Exit::Unavailable => 13,
            Exit::BadResponse => 14,
            Exit::Network => 15,
            Exit::Cache => 20,
            Exit::Verification => 21,
            Exit::Store => 22,
            Exit::ActivationFailed => 30,
            Exit::ActivationPartial => 31,
            Exit::RolledBack => 32,
            Exit::RollbackFailed => 33,
            Exit::SkippedFailed => 34,
            Exit::RebootNeeded => 40,
            Exit::AlreadyRunning => 41,
        }
    }

    /// One line for the EXIT STATUS table.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success (or nothing to do)",
            Exit::Internal => "internal error",
            Exit::Usage => "usage error: bad option or output reference",
            Exit::NotImplemented => "that step is not built yet in this version",
            Exit::Unauthorized => "no device token, or FlakeHub said 401 (log in again)",
            Exit::Forbidden => "FlakeHub said 403: the token does not allow this reference",
            Exit::NotFound => "FlakeHub said 404: no such release or output",
            Exit::Unavailable => "FlakeHub kept answering 429/5xx after retries",
            Exit::BadResponse => "FlakeHub's answer was malformed or not a store path",
            Exit::Network => "network error: DNS, connect, timeout or TLS",
            Exit::Cache => "binary cache error: narinfo or NAR missing, refused or cut short",
            Exit::Verification => "verification failed: signature, hash, size or format",
            Exit::Store => "the store could not take the paths (disk, registration)",
            Exit::ActivationFailed => "activation failed, not rolled back",
            Exit::ActivationPartial => "activation partly failed (units failed), kept",
            Exit::RolledBack => "activation or health check failed; rolled back",
            Exit::RollbackFailed => "activation failed and the rollback failed too",
            Exit::SkippedFailed => "resolved path failed before; skipped (--retry-failed)",
            Exit::RebootNeeded => "applied; reboot needed to take full effect",
            Exit::AlreadyRunning => "another fh-lite apply is running",
        }
    }
}

/// What `main` prints (once, prefixed `fh-lite: `) and how it exits.
pub struct Error {
    pub exit: Exit,
    pub message: String,
}

impl Error {
    pub fn new(exit: Exit, message: impl Into<String>) -> Error {
        Error {
            exit,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(Exit::Usage, message)
    }

    /// A local file operation failed: the message names the file.
    pub fn io(what: &str, path: &std::path::Path, err: &std::io::Error) -> Error {
        Error::new(Exit::Internal, format!("{what} {}: {err}", path.display()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// Printed when returning an error from a test; defer to Display.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (exit {})", self.message, self.exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for e in Exit::ALL {
            assert!(seen.insert(e.code()), "duplicate exit code {}", e.code());
        }
    }
}
