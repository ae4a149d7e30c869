//! `--store auto|daemon|local|nix`: which backend the apply uses.
//!
//! - `daemon`: the socket from `--daemon-socket` / `NIX_DAEMON_SOCKET_PATH`
//!   (cli folds the variable in), else the default socket. With `--root`
//!   the caller must name the socket that serves DIR.
//! - `local`: `<root>/nix/store` written directly (root only).
//! - `nix`: `nix copy` from the cache (token through a private netrc).
//! - `auto`: the daemon if its socket answers the handshake, else local if
//!   we can write the store's database, else an error naming what was
//!   tried. With `--root DIR`, auto tries a daemon only when a socket was
//!   given (the default socket serves the host's store, not DIR).
//! - `image` (the default with `--root`) is built by its own module.

use std::path::{Path, PathBuf};

use super::daemon::{self, DaemonStore};
use super::local::LocalStore;
use super::nix_copy::NixCopyStore;
use super::{Store, StoreError};
use crate::cli::{ApplyOpts, Common, StoreKind};
use crate::error::{Error, Exit};

/// What the `nix copy` backend needs to reach the cache.
pub struct NixCopyCache<'a> {
    /// The binary cache URL (`Common::cache_addr`).
    pub url: &'a str,
    /// The closure token, if the cache needs one.
    pub token: Option<&'a str>,
    /// Trusted keys as `name:base64`.
    pub trusted_keys: Vec<String>,
}

fn daemon_store(socket: &Path) -> Result<DaemonStore, StoreError> {
    let probe = DaemonStore::connect(socket, true)?;
    // A trusted client may skip the daemon's second signature check: we
    // verified every signature against the user's keys already (see the
    // daemon module doc). Nix 2.8 sends no trust flag; root is trusted by
    // default there (`trusted-users = root`).
    let trusted = match probe.trusted() {
        Some(t) => t,
        None => rustix::process::geteuid().is_root(),
    };
    if trusted {
        drop(probe);
        DaemonStore::connect(socket, false)
    } else {
        Ok(probe)
    }
}

/// Open the backend `opts.store` asks for.
pub fn select(
    common: &Common,
    opts: &ApplyOpts,
    cache: NixCopyCache<'_>,
) -> Result<Box<dyn Store>, Error> {
    let root: PathBuf = common.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let socket = opts
        .daemon_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(daemon::DEFAULT_SOCKET));
    match opts.store {
        StoreKind::Daemon => Ok(Box::new(daemon_store(&socket)?)),
        StoreKind::Local => {
            if !LocalStore::writable(&root) {
                return Err(Error::new(
                    Exit::Store,
                    format!(
                        "--store local: cannot write the store database {} (run as root, or use --store daemon)",
                        root.join("nix/var/nix/db").display()
                    ),
                ));
            }
            Ok(Box::new(LocalStore::new(&root)))
        }
        StoreKind::Nix => Ok(Box::new(NixCopyStore::new(
            cache.url,
            cache.token,
            common.root.as_deref(),
            cache.trusted_keys,
        ))),
        StoreKind::Auto => {
            let mut tried = Vec::new();
            if common.root.is_none() || opts.daemon_socket.is_some() {
                match daemon_store(&socket) {
                    Ok(s) => return Ok(Box::new(s)),
                    Err(e) => tried.push(e.to_string()),
                }
            }
            if LocalStore::writable(&root) {
                return Ok(Box::new(LocalStore::new(&root)));
            }
            tried.push(format!(
                "local store: cannot write {} (not root, or no Nix store there)",
                root.join("nix/var/nix/db").display()
            ));
            Err(Error::new(
                Exit::Store,
                format!(
                    "no usable Nix store: {} (pick one with --store daemon|local|nix)",
                    tried.join("; ")
                ),
            ))
        }
        StoreKind::Image => Err(Error::new(
            Exit::Internal,
            "--store image is opened by the image backend, not by store::select",
        )),
    }
}
