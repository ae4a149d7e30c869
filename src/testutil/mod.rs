//! The tests' support, in one place, for both test crates: the unit tests
//! (`crate::testutil`) and the black-box suite (`fh_lite::testutil`), and
//! the fuzz targets' seeds ([`nar`]). Shared: temporary directories
//! ([`TempDir`]), what a test needs from the host and how it is skipped
//! without it, fake systems ([`host`]), the process tree from /proc
//! ([`procs`]), a NAR writer ([`nar`]). Unit tests only: fake roots and the
//! options to activate them, a fake binary cache (`cache`), and real Nix
//! 2.8 in a private environment with a signed closure and a `nix-daemon`
//! (`nix`).
//!
//! Compiled into the library (hidden from its documentation) so that the
//! other test crates can import it; nothing in fh-lite itself uses it, so
//! the binary does not carry it.

#[cfg(test)]
pub mod cache;
pub mod host;
pub mod nar;
#[cfg(test)]
mod nix;
pub mod procs;

#[cfg(test)]
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(test)]
use std::time::Duration;

#[cfg(test)]
use crate::nix::store_path::StorePath;

#[cfg(test)]
pub use host::{
    activation_log as log, chroot_root, fake_system, have, is_root, require, skipped,
    write_executable,
};
#[cfg(test)]
pub use nix::{Closure, Daemon, NixEnv};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A directory under /tmp, removed (read-only store trees included) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("fh-lite-{tag}-{}-{n}", std::process::id()));
        let _ = remove_tree(&p);
        std::fs::create_dir_all(&p).expect("create a temporary directory");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}

/// Remove a file, symlink or tree whose directories may be read-only
/// (0555), as unpacked store paths are. Missing is fine. Relative to the
/// parent's descriptor, never following a symlink out of the tree.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("not a removable path"));
    };
    match crate::rootfs::open_dir(None, parent) {
        Ok(d) => d.remove_tree(name),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `/nix/store/<32 × hash_digit>-<name>`.
#[cfg(test)]
pub fn sp(hash_digit: char, name: &str) -> StorePath {
    let h: String = std::iter::repeat_n(hash_digit, 32).collect();
    StorePath::from_base_name(&format!("{h}-{name}")).unwrap()
}

/// Common options for a system installed at `root` (quiet).
#[cfg(test)]
pub fn common(root: &Path) -> crate::options::Common {
    crate::options::Common {
        api_addr: String::new(),
        cache_addr: String::new(),
        frontend_addr: String::new(),
        token_file: None,
        ca_file: None,
        allow_insecure_http: false,
        json: false,
        quiet: true,
        verbose: false,
        root: Some(root.to_path_buf()),
        state_dir: root.join("var/lib/fh-lite"),
        profile: root.join("nix/var/nix/profiles/system"),
        max_decoder_memory: crate::options::DEFAULT_DECODER_MEMORY,
        limit_rate: None,
        limit_rate_uplink: None,
    }
}

/// The machine of [`common`]`(root)`.
#[cfg(test)]
pub fn machine(root: &Path) -> crate::machine::Machine {
    common(root).machine()
}

/// Apply options with the defaults of the command line, the image store.
#[cfg(test)]
pub fn opts(
    kind: crate::options::ApplyKind,
    action: crate::options::Action,
) -> crate::options::ApplyOpts {
    crate::options::ApplyOpts {
        kind,
        target: crate::options::Target::FlakeHub(
            crate::outref::parse("org/proj/0.1#x", "https://flakehub.com", "x").unwrap(),
        ),
        default_attr: "x".to_string(),
        action,
        trusted_keys: crate::nix::narinfo::signature::TrustedKeys::flakehub_defaults(),
        jobs: 1,
        dry_run: false,
        store: crate::options::StoreKind::Image,
        daemon_socket: None,
        install_bootloader: false,
        force: false,
        no_rollback: false,
        rollback_on: vec![1, 2, 4],
        health_check: None,
        health_timeout: Duration::from_secs(60),
        retry_failed: false,
        no_loose_warning: false,
        trial: false,
        activation_timeout: None,
    }
}

/// A reader that yields `chunk` bytes at a time, sleeping before each.
#[cfg(test)]
pub struct Slow<'a> {
    pub data: &'a [u8],
    pub chunk: usize,
    pub pause: Duration,
}

#[cfg(test)]
impl Read for Slow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.data.is_empty() {
            return Ok(0);
        }
        std::thread::sleep(self.pause);
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
