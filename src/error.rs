//! The top-level error and the exit-code contract.
//!
//! Every layer (outref, http, flakehub, nix formats, fetch, store, activate)
//! has its own error enum with a lower-case "what: detail" `Display` that
//! names the URL, store path or file involved. At the top they become one
//! [`Error`]: the message printed once by `main`, plus the [`Exit`] class that
//! decides the process exit status. The table of [`Exit`] classes is the
//! contract that timers and orchestrators read; `--help` and README.md
//! print it, and the state file records its names.

use std::fmt;

/// The enum, its list, and each class's facts (its status, the word the
/// state file records, the line of the EXIT STATUS table), from one table.
macro_rules! exit_table {
    ($($variant:ident = $code:literal, $name:literal, $meaning:literal;)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Exit {
            $($variant),*
        }

        impl Exit {
            /// Every class, in the order of the table printed by `--help`.
            pub const ALL: &'static [Exit] = &[$(Exit::$variant),*];

            pub fn code(self) -> u8 {
                match self { $(Exit::$variant => $code),* }
            }

            /// The word recorded in the state file (`"rolled-back"`).
            pub fn name(self) -> &'static str {
                match self { $(Exit::$variant => $name),* }
            }

            /// One line for the EXIT STATUS table.
            pub fn meaning(self) -> &'static str {
                match self { $(Exit::$variant => $meaning),* }
            }
        }
    };
}

// Exit statuses. Stable: scripts and fleet tooling depend on them. Codes
// 0, 1 and 2 follow the usual Unix convention; the others are grouped by
// pipeline step (10s: resolve, 20s: cache/transfer, 30s: activation, 40s:
// local conditions). `--help`, README.md and the state file read this.
exit_table! {
    Success = 0, "success", "success (or nothing to do)";
    Internal = 1, "internal-error", "internal error";
    Usage = 2, "usage-error", "usage error: bad option or output reference";
    Unauthorized = 10, "unauthorized", "no device token, or FlakeHub said 401 (log in again)";
    Forbidden = 11, "forbidden", "FlakeHub said 403: the token does not allow this reference";
    NotFound = 12, "not-found", "FlakeHub said 404: no such release or output";
    Unavailable = 13, "unavailable", "FlakeHub kept answering 429/5xx after retries";
    BadResponse = 14, "bad-response", "FlakeHub's answer was malformed or not a store path";
    Network = 15, "network-error", "network error: DNS, connect, timeout or TLS";
    Cache = 20, "cache-error", "binary cache error: narinfo or NAR missing, refused or cut short";
    Verification = 21, "verification-failed",
        "verification failed: signature, hash, size or format";
    Store = 22, "store-error", "the store could not take the paths (disk, registration)";
    ActivationFailed = 30, "activation-failed", "activation failed, not rolled back";
    ActivationPartial = 31, "activation-partial", "activation partly failed (units failed), kept";
    RolledBack = 32, "rolled-back", "activation or health check failed; rolled back";
    RollbackFailed = 33, "rollback-failed", "activation failed and the rollback failed too";
    SkippedFailed = 34, "skipped-failed", "resolved path failed before; skipped (--retry-failed)";
    Downgrade = 35, "downgrade-refused",
        "an exact version older than one applied before; refused (--allow-downgrade)";
    RebootNeeded = 40, "reboot-needed", "applied; reboot needed to take full effect";
    AlreadyRunning = 41, "already-running", "another fh-lite apply is running";
    Interrupted = 42, "interrupted", "interrupted by a signal; nothing was changed";
    Deferred = 43, "deferred",
        "staged, not activated: outside --window or before the --rollout-spread time";
    Held = 44, "held", "the device is held ('fh-lite hold'); nothing applied ('fh-lite unhold')";
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

    /// An operation on one of fh-lite's own files failed (state, lock,
    /// GC roots, version memory): an internal error naming the file. For a
    /// file the operator named, see [`Error::option_file`].
    pub fn io(what: &str, path: &std::path::Path, err: &std::io::Error) -> Error {
        Error::new(Exit::Internal, format!("{what} {}: {err}", path.display()))
    }

    /// A file an option names (`--sign-key`, `--from DIR`, `--output`)
    /// could not be read or written: `<what> <file>: <why>`, `what` naming
    /// the option or the operation (`--sign-key`, `write bundle`). Missing,
    /// not allowed, not a file or a directory where one is expected, on a
    /// read-only filesystem: the operator's to fix, a usage error (exit 2).
    /// Anything else (a disk error, a full disk) is internal.
    pub fn option_file(what: &str, path: &std::path::Path, err: &std::io::Error) -> Error {
        use std::io::ErrorKind as K;
        let exit = match err.kind() {
            K::NotFound
            | K::PermissionDenied
            | K::NotADirectory
            | K::IsADirectory
            | K::ReadOnlyFilesystem
            | K::InvalidInput
            | K::InvalidData => Exit::Usage,
            _ => Exit::Internal,
        };
        Error::new(exit, format!("{what} {}: {err}", path.display()))
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
    crate::nix::narinfo::signature::SigError,
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

    #[test]
    fn a_file_an_option_names_is_the_operators_to_fix() {
        use std::io::{Error as IoError, ErrorKind};
        let p = std::path::Path::new("/k");
        for (kind, exit) in [
            (ErrorKind::NotFound, Exit::Usage),
            (ErrorKind::PermissionDenied, Exit::Usage),
            (ErrorKind::IsADirectory, Exit::Usage),
            (ErrorKind::StorageFull, Exit::Internal),
        ] {
            let e = Error::option_file("--sign-key", p, &IoError::from(kind));
            assert_eq!(e.exit, exit, "{kind}");
            assert!(e.message.starts_with("--sign-key /k: "), "{}", e.message);
        }
        // fh-lite's own files stay internal.
        let e = Error::io("read state file", p, &IoError::from(ErrorKind::NotFound));
        assert_eq!(e.exit, Exit::Internal);
    }
}
