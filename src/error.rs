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
/// activation, 40s: local conditions). Each class's facts are in one
/// place, [`Exit::facts`]: `--help`, README.md and the state file read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done (or there was nothing to do).
    Success,
    /// An unexpected internal error (a bug) or an unclassified local failure.
    Internal,
    /// Bad command line or output reference.
    Usage,
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

/// What one exit class means: its status, the word the state file
/// records, and the line of the EXIT STATUS table.
pub struct Facts {
    pub code: u8,
    pub name: &'static str,
    pub meaning: &'static str,
}

const fn facts(code: u8, name: &'static str, meaning: &'static str) -> Facts {
    Facts {
        code,
        name,
        meaning,
    }
}

impl Exit {
    /// Every class, in the order of the table printed by `--help`.
    pub const ALL: [Exit; 19] = [
        Exit::Success,
        Exit::Internal,
        Exit::Usage,
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

    /// The one table of exit-class facts.
    pub const fn facts(self) -> Facts {
        match self {
            Exit::Success => facts(0, "success", "success (or nothing to do)"),
            Exit::Internal => facts(1, "internal-error", "internal error"),
            Exit::Usage => facts(
                2,
                "usage-error",
                "usage error: bad option or output reference",
            ),
            Exit::Unauthorized => facts(
                10,
                "unauthorized",
                "no device token, or FlakeHub said 401 (log in again)",
            ),
            Exit::Forbidden => facts(
                11,
                "forbidden",
                "FlakeHub said 403: the token does not allow this reference",
            ),
            Exit::NotFound => facts(
                12,
                "not-found",
                "FlakeHub said 404: no such release or output",
            ),
            Exit::Unavailable => facts(
                13,
                "unavailable",
                "FlakeHub kept answering 429/5xx after retries",
            ),
            Exit::BadResponse => facts(
                14,
                "bad-response",
                "FlakeHub's answer was malformed or not a store path",
            ),
            Exit::Network => facts(
                15,
                "network-error",
                "network error: DNS, connect, timeout or TLS",
            ),
            Exit::Cache => facts(
                20,
                "cache-error",
                "binary cache error: narinfo or NAR missing, refused or cut short",
            ),
            Exit::Verification => facts(
                21,
                "verification-failed",
                "verification failed: signature, hash, size or format",
            ),
            Exit::Store => facts(
                22,
                "store-error",
                "the store could not take the paths (disk, registration)",
            ),
            Exit::ActivationFailed => facts(
                30,
                "activation-failed",
                "activation failed, not rolled back",
            ),
            Exit::ActivationPartial => facts(
                31,
                "activation-partial",
                "activation partly failed (units failed), kept",
            ),
            Exit::RolledBack => facts(
                32,
                "rolled-back",
                "activation or health check failed; rolled back",
            ),
            Exit::RollbackFailed => facts(
                33,
                "rollback-failed",
                "activation failed and the rollback failed too",
            ),
            Exit::SkippedFailed => facts(
                34,
                "skipped-failed",
                "resolved path failed before; skipped (--retry-failed)",
            ),
            Exit::RebootNeeded => facts(
                40,
                "reboot-needed",
                "applied; reboot needed to take full effect",
            ),
            Exit::AlreadyRunning => {
                facts(41, "already-running", "another fh-lite apply is running")
            }
        }
    }

    pub fn code(self) -> u8 {
        self.facts().code
    }

    /// The word recorded in the state file (`"rolled-back"`).
    pub fn name(self) -> &'static str {
        self.facts().name
    }

    /// One line for the EXIT STATUS table.
    pub fn meaning(self) -> &'static str {
        self.facts().meaning
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

// The formats in `nix/` know nothing of exit codes; a malformed hash,
// signature, narinfo or store path is a verification failure.
macro_rules! verification_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::new(Exit::Verification, e.to_string())
            }
        }
    )*};
}

verification_errors!(
    crate::nix::base32::DecodeError,
    crate::nix::hash::HashError,
    crate::nix::narinfo::NarInfoError,
    crate::nix::signature::SigError,
    crate::nix::store_path::StorePathError
);

impl From<crate::nix::nar::NarError> for Error {
    fn from(e: crate::nix::nar::NarError) -> Error {
        use crate::nix::nar::NarError;
        let exit = match &e {
            NarError::Malformed { .. } | NarError::Truncated { .. } => Exit::Verification,
            // An overlong stream (HashingReader's limit) or a decoder's
            // corrupt-data error is a verification failure; anything else
            // on the way in is the transfer failing.
            NarError::Io(err) if err.kind() == std::io::ErrorKind::InvalidData => {
                Exit::Verification
            }
            NarError::Io(_) => Exit::Cache,
            NarError::Sink { .. } => Exit::Store,
        };
        Error::new(exit, e.to_string())
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
    fn codes_and_names_are_distinct() {
        let mut codes = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for e in Exit::ALL {
            assert!(codes.insert(e.code()), "duplicate exit code {}", e.code());
            assert!(names.insert(e.name()), "duplicate name {}", e.name());
        }
        assert_eq!(Exit::RolledBack.name(), "rolled-back");
    }
}
