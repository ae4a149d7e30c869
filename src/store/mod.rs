//! Where substituted paths land: one trait, one file per backend.
//!
//! Backends: `image` (an image root: DIR/nix/store + DIR/nix-path-registration),
//! `daemon` (the nix-daemon socket), `local` (root, no daemon: unpack +
//! `nix-store --load-db`), `nix_copy` (fallback through `nix copy`).
//!
//! The fetch step calls `add_path` from several threads at once, but only
//! for a path whose references (other than itself) were already added or
//! were valid before: backends may rely on that order.

pub mod image;
pub mod unpack;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

use crate::error::{Error, Exit};
use crate::nix::hash::Sha256;

use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;

#[derive(Debug)]
pub enum StoreError {
    /// INTERFACE STUB: variants are the backends' to add; every one names
    /// the store path and/or file involved.
    Todo(String),
    /// A file operation failed (`what` + file). ENOSPC included.
    Io {
        what: &'static str,
        file: PathBuf,
        source: io::Error,
    },
    /// The NAR stream of `path` broke a rule of §4.2 (or ended early).
    Nar { path: StorePath, detail: String },
    /// The NAR's sha256 is not the narinfo's NarHash.
    HashMismatch {
        path: StorePath,
        expected: Sha256,
        got: Sha256,
    },
    /// The NAR's length is not the narinfo's NarSize.
    SizeMismatch {
        path: StorePath,
        expected: u64,
        got: u64,
    },
    /// The final path appeared meanwhile (another run) but is not valid.
    Conflict { path: StorePath, file: PathBuf },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Todo(s) => f.write_str(s),
            StoreError::Io { what, file, source } if is_enospc(source) => write!(
                f,
                "{what} {}: no space left on the store's filesystem; free some space (the \
                 plan's unpacked size is what the store needs)",
                file.display()
            ),
            StoreError::Io { what, file, source } => {
                write!(f, "{what} {}: {source}", file.display())
            }
            StoreError::Nar { path, detail } => write!(f, "malformed NAR for {path}: {detail}"),
            StoreError::HashMismatch {
                path,
                expected,
                got,
            } => write!(
                f,
                "NAR hash mismatch for {path}: narinfo says {}, got {}",
                expected.to_nix32_prefixed(),
                got.to_nix32_prefixed()
            ),
            StoreError::SizeMismatch {
                path,
                expected,
                got,
            } => write!(
                f,
                "NAR size mismatch for {path}: narinfo says {expected} bytes, got {got}"
            ),
            StoreError::Conflict { path, file } => write!(
                f,
                "{path} appeared at {} during the fetch (another run?) but is not registered; \
                 retry",
                file.display()
            ),
        }
    }
}

fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
}

impl StoreError {
    pub fn exit(&self) -> Exit {
        match self {
            StoreError::Nar { .. }
            | StoreError::HashMismatch { .. }
            | StoreError::SizeMismatch { .. } => Exit::Verification,
            StoreError::Io { .. } | StoreError::Conflict { .. } => Exit::Store,
            StoreError::Todo(_) => Exit::Internal,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::new(e.exit(), e.to_string())
    }
}

pub trait Store: Send + Sync {
    /// A short name for messages: "image root /mnt", "nix-daemon at …".
    fn describe(&self) -> String;
    /// Which of `paths` are already valid in this store.
    fn query_valid(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError>;
    /// Protect `paths` from garbage collection until this process ends.
    fn add_temp_roots(&self, paths: &[StorePath]) -> Result<(), StoreError>;
    /// Add one path from its verified narinfo and its *uncompressed* NAR
    /// stream. The backend parses the NAR strictly, checks NarHash and
    /// NarSize while consuming it, and leaves nothing half-written or
    /// registered when anything fails.
    fn add_path(&self, info: &NarInfo, nar: &mut dyn Read) -> Result<(), StoreError>;
    /// After the last `add_path`: make everything durable/visible.
    fn finish(&self) -> Result<(), StoreError>;
}
