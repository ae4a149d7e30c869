//! `--store auto|daemon|local|nix|image`: which backend the apply uses.
//!
//! - `image` (the default with `--root`): the image root DIR.
//! - `daemon`: the socket from `--daemon-socket` / `NIX_DAEMON_SOCKET_PATH`
//!   (cli folds the variable in), else the default socket. With `--root`
//!   the caller must name the socket that serves DIR.
//! - `local`: `<root>/nix/store` written directly (root only).
//! - `nix`: `nix copy` from the cache (token through a private netrc).
//! - `auto`: the daemon if its socket answers the handshake, else local if
//!   we can write the store's database, else an error naming what was
//!   tried. With `--root DIR`, auto tries a daemon only when a socket was
//!   given (the default socket serves the host's store, not DIR).

use std::path::{Path, PathBuf};

use super::daemon::{self, DaemonStore};
use super::image::ImageStore;
use super::local::LocalStore;
use super::nix_copy::NixCopyStore;
use super::{Store, StoreError};
use crate::error::{Error, Exit};
use crate::http::Secret;
use crate::nix::narinfo::signature::TrustedKeys;
use crate::nix::store_path::StorePath;
use crate::options::StoreKind;

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

/// The store a command uses: `--store`, `--daemon-socket`, beneath
/// `--root`; the `nix copy` backend's cache (`--cache-addr`) and the CA
/// fh-lite trusts for it (`--ca-file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreChoice {
    pub kind: StoreKind,
    pub daemon_socket: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub cache_addr: String,
    pub ca_file: Option<PathBuf>,
}

/// Open the backend `choice.kind` asks for. The `nix copy` backend gets the
/// cache, the closure token and the trusted keys.
pub fn select(
    choice: &StoreChoice,
    keys: &TrustedKeys,
    token: &Secret,
) -> Result<Box<dyn Store>, Error> {
    let root: PathBuf = choice.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let socket = choice
        .daemon_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(daemon::DEFAULT_SOCKET));
    match choice.kind {
        StoreKind::Daemon => Ok(Box::new(daemon_store(&socket)?)),
        StoreKind::Local => {
            // A fresh root is fine: Nix creates the database on first use.
            LocalStore::check_writable(&root).map_err(|m| Error::new(Exit::Store, m))?;
            Ok(Box::new(LocalStore::new(&root)))
        }
        StoreKind::Nix => Ok(Box::new(
            NixCopyStore::new(
                &choice.cache_addr,
                Some(token),
                choice.root.as_deref(),
                keys.keys.iter().map(|k| k.to_string()).collect(),
            )
            // The CA fh-lite trusts for the cache, as http.rs reads it.
            .with_ca_file(choice.ca_file.clone().or_else(|| {
                std::env::var_os("SSL_CERT_FILE")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })),
        )),
        StoreKind::Auto => {
            let mut tried = Vec::new();
            if choice.root.is_none() || choice.daemon_socket.is_some() {
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
        StoreKind::Image => match &choice.root {
            Some(root) => Ok(Box::new(ImageStore::open(root)?)),
            None => Err(Error::usage(
                "--store image needs --root DIR (the image being built)",
            )),
        },
    }
}

/// Whether `path` is registered and valid in the store `choice` names:
/// under `--root` the image root's registration first; then the Nix store
/// (the daemon, the local database, or `nix path-info`). Recovery
/// (cmd/recover.rs) redoes nothing this store does not vouch for.
pub fn is_valid_here(choice: &StoreChoice, path: &StorePath) -> Result<bool, Error> {
    let one = std::slice::from_ref(path);
    let (kind, socket) = (choice.kind, choice.daemon_socket.as_deref());
    if let Some(root) = &choice.root {
        if ImageStore::open(root)?.query_valid(one)?.contains(path) {
            return Ok(true);
        }
        if kind == StoreKind::Image {
            return Ok(false);
        }
    }
    let root: PathBuf = choice.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let default_socket = PathBuf::from(daemon::DEFAULT_SOCKET);
    let store: Box<dyn Store> = match kind {
        StoreKind::Daemon => Box::new(daemon_store(socket.unwrap_or(&default_socket))?),
        StoreKind::Local => Box::new(LocalStore::new(&root)),
        StoreKind::Nix => Box::new(NixCopyStore::new(
            &choice.cache_addr,
            None,
            choice.root.as_deref(),
            Vec::new(),
        )),
        StoreKind::Auto | StoreKind::Image => {
            let daemon = (choice.root.is_none() || socket.is_some())
                .then(|| daemon_store(socket.unwrap_or(&default_socket)).ok())
                .flatten();
            match daemon {
                Some(d) => Box::new(d),
                None if LocalStore::writable(&root) => Box::new(LocalStore::new(&root)),
                None => return Ok(false),
            }
        }
    };
    Ok(store.query_valid(one)?.contains(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use crate::testutil::{Daemon, NixEnv, TempDir};

    fn open(args: &str) -> Result<Box<dyn Store>, Error> {
        let cli = crate::cli::parse_raw(args.split_whitespace())
            .unwrap()
            .validate(&crate::cli::Env::default())
            .unwrap();
        let Command::Apply(opts) = cli.command else {
            panic!("{args}: not apply")
        };
        let keys = TrustedKeys::flakehub_defaults();
        let choice = cli.common.store(opts.store, opts.daemon_socket.as_deref());
        select(&choice, &keys, &Secret::new("t"))
    }

    #[test]
    fn select_cases() {
        let dir = TempDir::new("select");
        let d = dir.path().display().to_string();
        let with_db = dir.path().join("withdb");
        fs_db(&with_db);
        let w = with_db.display().to_string();
        let missing = format!("{d}/no-socket");
        std::fs::write(dir.path().join("file"), "").unwrap();
        let refused = |sock: &str| {
            format!(
                "nix-daemon at {sock}: cannot connect: No such file or directory (os error 2) (is nix-daemon running? see --daemon-socket, --store)"
            )
        };
        // (name, command line, describe() or (exit class, message))
        type Case = (&'static str, String, Result<String, (Exit, String)>);
        let cases: Vec<Case> = vec![
            (
                "daemon, no socket",
                format!("apply nixos a/b/0.1#x --store daemon --daemon-socket {missing}"),
                Err((Exit::Store, refused(&missing))),
            ),
            (
                "auto under --root: no socket given, no database",
                format!("--root {d} apply nixos a/b/0.1#x --store auto"),
                Err((
                    Exit::Store,
                    format!("no usable Nix store: local store: cannot write {d}/nix/var/nix/db (not root, or no Nix store there) (pick one with --store daemon|local|nix)"),
                )),
            ),
            (
                "auto under --root: socket given but dead, no database",
                format!("--root {d} apply nixos a/b/0.1#x --store auto --daemon-socket {missing}"),
                Err((
                    Exit::Store,
                    format!("no usable Nix store: {}; local store: cannot write {d}/nix/var/nix/db (not root, or no Nix store there) (pick one with --store daemon|local|nix)", refused(&missing)),
                )),
            ),
            (
                "auto under --root: database writable",
                format!("--root {w} apply nixos a/b/0.1#x --store auto --daemon-socket {missing}"),
                Ok(format!("local store at {w}")),
            ),
            (
                "local",
                format!("--root {w} apply nixos a/b/0.1#x --store local"),
                Ok(format!("local store at {w}")),
            ),
            (
                // As root (the tests are): Nix creates the database.
                "local in a fresh root",
                format!("--root {d}/fresh apply nixos a/b/0.1#x --store local"),
                Ok(format!("local store at {d}/fresh")),
            ),
            (
                "local under a file",
                format!("--root {d}/file/root apply nixos a/b/0.1#x --store local"),
                Err((
                    Exit::Store,
                    format!("--store local: cannot create the store database {d}/file/root/nix/var/nix/db: {d}/file is not a directory"),
                )),
            ),
            (
                "nix copy under --root",
                format!("--root {d} apply nixos a/b/0.1#x --store nix"),
                Ok(format!("nix copy into {d}")),
            ),
            (
                "nix copy",
                "apply nixos a/b/0.1#x --store nix".to_string(),
                Ok("nix copy into the default store".to_string()),
            ),
            (
                "image root (the default with --root)",
                format!("--root {d} apply nixos a/b/0.1#x"),
                Ok(format!("image root {d}")),
            ),
        ];
        for (name, args, want) in cases {
            let got = open(&args)
                .map(|s| s.describe())
                .map_err(|e| (e.exit, e.message));
            assert_eq!(got, want, "{name}");
        }
    }

    fn fs_db(root: &std::path::Path) {
        std::fs::create_dir_all(root.join("nix/var/nix/db")).unwrap();
    }

    #[test]
    fn select_auto_finds_a_real_daemon() {
        let Some(env) = NixEnv::new("select-daemon") else {
            return;
        };
        let daemon = Daemon::start(&env, "d");
        let sock = daemon.socket.display().to_string();
        let s = open(&format!("apply nixos a/b/0.1#x --daemon-socket {sock}")).unwrap();
        assert_eq!(s.describe(), format!("nix-daemon 2.8.0 at {sock}"));
        assert!(s.query_valid(&[]).unwrap().is_empty());
    }
}
