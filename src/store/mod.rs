//! Where substituted paths land: one trait, one file per backend.
//!
//! Backends: `image` (an image root: DIR/nix/store + DIR/nix-path-registration),
//! `daemon` (the nix-daemon socket), `local` (root, no daemon: unpack +
//! `nix-store --load-db`), `nix_copy` (fallback through `nix copy`).
//!
//! The fetch step calls `add_path` from several threads at once, but only
//! for a path whose references (other than itself) were already added or
//! were valid before: backends may rely on that order.

pub mod daemon;
pub mod image;
pub mod local;
pub mod nix_copy;
mod program;
pub mod select;
pub mod unpack;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

use crate::error::{Error, Exit};
use crate::nix::hash::Sha256;
use crate::nix::nar::NarError;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;

#[derive(Debug)]
pub enum StoreError {
    // -- shared by the backends that see the NAR (daemon, local) --
    /// The NAR broke a rule of formats.md "NAR: Strictness", ended early, had trailing data, or
    /// its source failed.
    BadNar { path: StorePath, detail: String },
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
    /// `add_path` was called before one of the path's references was valid.
    MissingReference {
        path: StorePath,
        reference: StorePath,
    },
    /// A local file operation failed (`what` + file). ENOSPC included.
    Io {
        what: &'static str,
        file: PathBuf,
        err: io::Error,
    },
    /// The final path appeared meanwhile (another run) but is not valid.
    Conflict { path: StorePath, file: PathBuf },
    /// A helper program (`nix-store`, `nix`) could not be started.
    NoProgram { program: String, err: io::Error },
    /// A helper program failed: its command line (no secrets) and stderr.
    Program { command: String, detail: String },

    // -- daemon --
    /// Could not connect to the daemon socket.
    DaemonConnect { socket: PathBuf, err: io::Error },
    /// The socket spoke something other than the worker protocol.
    DaemonProtocol { socket: PathBuf, detail: String },
    /// The connection failed while `doing` something.
    DaemonIo {
        socket: PathBuf,
        doing: String,
        err: io::Error,
    },
    /// The daemon refused: its own message.
    Daemon {
        socket: PathBuf,
        doing: String,
        message: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::BadNar { path, detail } => write!(f, "NAR of {path}: {detail}"),
            StoreError::HashMismatch {
                path,
                expected,
                got,
            } => write!(
                f,
                "NAR of {path}: hash mismatch: the narinfo says {}, the NAR has {}",
                expected.to_nix32_prefixed(),
                got.to_nix32_prefixed()
            ),
            StoreError::SizeMismatch {
                path,
                expected,
                got,
            } => write!(
                f,
                "NAR of {path}: size mismatch: the narinfo says {expected} bytes, the NAR has {got}"
            ),
            StoreError::MissingReference { path, reference } => write!(
                f,
                "cannot add {path}: its reference {reference} is not valid in the store yet (references must be added first)"
            ),
            StoreError::Io { what, file, err } if is_enospc(err) => write!(
                f,
                "{what} {}: no space left on the store's filesystem; free some space (the \
                 plan's unpacked size is what the store needs)",
                file.display()
            ),
            StoreError::Io { what, file, err } => write!(f, "{what} {}: {err}", file.display()),
            StoreError::Conflict { path, file } => write!(
                f,
                "{path} appeared at {} during the fetch (another run?) but is not registered; \
                 retry",
                file.display()
            ),
            StoreError::NoProgram { program, err } if err.kind() == io::ErrorKind::NotFound => {
                write!(f, "{program}: not found on PATH (install Nix, or pick another --store)")
            }
            StoreError::NoProgram { program, err } => write!(f, "{program}: cannot run: {err}"),
            StoreError::Program { command, detail } => write!(f, "{command}: {detail}"),
            StoreError::DaemonConnect { socket, err } => write!(
                f,
                "nix-daemon at {}: cannot connect: {err} (is nix-daemon running? see --daemon-socket, --store)",
                socket.display()
            ),
            StoreError::DaemonProtocol { socket, detail } => {
                write!(f, "nix-daemon at {}: protocol error: {detail}", socket.display())
            }
            StoreError::DaemonIo { socket, doing, err } => write!(
                f,
                "nix-daemon at {}: connection lost while {doing}: {err}",
                socket.display()
            ),
            StoreError::Daemon {
                socket,
                doing,
                message,
            } => write!(f, "nix-daemon at {}: {doing}: {message}", socket.display()),
        }
    }
}

fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
}

impl StoreError {
    /// The exit class: a NAR that does not verify is a verification
    /// failure; everything else is the store's.
    pub fn exit(&self) -> Exit {
        match self {
            StoreError::BadNar { .. }
            | StoreError::HashMismatch { .. }
            | StoreError::SizeMismatch { .. } => Exit::Verification,
            _ => Exit::Store,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::new(e.exit(), e.to_string())
    }
}

/// Compare what streamed through a `HashingReader` with the narinfo.
pub(crate) fn check_hash_size(info: &NarInfo, hash: Sha256, size: u64) -> Result<(), StoreError> {
    if size != info.nar_size {
        return Err(StoreError::SizeMismatch {
            path: info.store_path.clone(),
            expected: info.nar_size,
            got: size,
        });
    }
    if hash != info.nar_hash {
        return Err(StoreError::HashMismatch {
            path: info.store_path.clone(),
            expected: info.nar_hash,
            got: hash,
        });
    }
    Ok(())
}

/// After the NAR's grammar has ended: the stream (a `HashingReader` limited
/// to NarSize, which errs one byte past it) must end there too.
pub(crate) fn check_nar_end(info: &NarInfo, rest: &mut dyn Read) -> Result<(), StoreError> {
    let mut extra = [0u8; 1];
    match rest.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) | Err(_) => Err(StoreError::BadNar {
            path: info.store_path.clone(),
            detail: format!(
                "trailing data after the end of the archive (NarSize {})",
                info.nar_size
            ),
        }),
    }
}

/// One line for a NAR parse error (its Display without the "nar: " tag).
pub(crate) fn nar_error_detail(e: &NarError) -> String {
    let s = e.to_string();
    s.strip_prefix("nar: ").unwrap_or(&s).to_string()
}

/// Fail with `MissingReference` unless every reference of `info` (other
/// than itself) is valid in `store`.
pub(crate) fn check_references(store: &dyn Store, info: &NarInfo) -> Result<(), StoreError> {
    let refs: Vec<StorePath> = info
        .references
        .iter()
        .filter(|r| **r != info.store_path)
        .cloned()
        .collect();
    if refs.is_empty() {
        return Ok(());
    }
    let valid = store.query_valid(&refs)?;
    match refs.into_iter().find(|r| !valid.contains(r)) {
        Some(reference) => Err(StoreError::MissingReference {
            path: info.store_path.clone(),
            reference,
        }),
        None => Ok(()),
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
    /// Whether `add_path` reads the NAR. `false` for `nix copy`, which
    /// fetches the path itself: the caller then passes an empty reader
    /// and need not download anything.
    fn reads_nar(&self) -> bool {
        true
    }
}
/// A store that has nothing: `bundle create` plans the whole closure.
pub struct EmptyStore;

impl Store for EmptyStore {
    fn describe(&self) -> String {
        "the bundle".to_string()
    }
    fn query_valid(&self, _: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError> {
        Ok(BTreeSet::new())
    }
    fn add_temp_roots(&self, _: &[StorePath]) -> Result<(), StoreError> {
        Ok(())
    }
    fn add_path(&self, _: &NarInfo, _: &mut dyn Read) -> Result<(), StoreError> {
        Ok(())
    }
    fn finish(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
