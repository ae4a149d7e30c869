//! The fallback backend: let `nix copy` substitute each path itself.
//!
//! `nix --extra-experimental-features nix-command copy --from <cache-url>
//! <path> [--store DIR] --option narinfo-cache-negative-ttl 0 --option
//! trusted-public-keys '<keys>' --netrc-file <f>`. With `--root DIR` the
//! destination is the chroot store DIR; otherwise Nix's default store (the
//! daemon on a live system).
//!
//! The closure token reaches Nix only through a netrc file
//! (`machine <cache host> login flakehub password <token>`), mode 0600,
//! inside a fresh private directory (0700, created exclusively) that a
//! guard removes when the copy ends, also on error or panic. The token is
//! never in argv or the environment, and this type has no `Debug`.
//!
//! This backend does not read the NAR ([`Store::reads_nar`] is false):
//! Nix downloads and verifies it (against the keys we pass) on its own.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Store, StoreError};
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;

/// The `nix copy` backend (see the module doc).
pub struct NixCopyStore {
    cache_url: String,
    token: Option<String>,
    root: Option<PathBuf>,
    /// `name:base64` keys, space-separated for `trusted-public-keys`.
    trusted_keys: Vec<String>,
    nix: OsString,
    /// Extra environment for `nix` (tests); empty in production.
    env: Vec<(OsString, OsString)>,
    /// Where the private netrc directories are made.
    tmp_base: PathBuf,
}

/// The private directory holding the netrc; removed on drop.
struct NetrcDir {
    dir: PathBuf,
}

static NETRC_SEQ: AtomicU64 = AtomicU64::new(0);

impl NetrcDir {
    fn create(base: &Path, host: &str, token: &str) -> Result<(NetrcDir, PathBuf), StoreError> {
        let n = NETRC_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("fh-lite-netrc-{}-{n}", std::process::id()));
        // `create` (not create_all) fails if it exists: nobody can have
        // prepared it for us.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|err| StoreError::Io {
                what: "creating".into(),
                file: dir.clone(),
                err,
            })?;
        let guard = NetrcDir { dir };
        let file = guard.dir.join("netrc");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .map_err(|err| StoreError::Io {
                what: "creating".into(),
                file: file.clone(),
                err,
            })?;
        f.write_all(format!("machine {host} login flakehub password {token}\n").as_bytes())
            .map_err(|err| StoreError::Io {
                what: "writing".into(),
                file: file.clone(),
                err,
            })?;
        Ok((guard, file))
    }
}

impl Drop for NetrcDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The host of an `http(s)://host[:port]/…` URL; None for other schemes.
fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

impl NixCopyStore {
    /// `trusted_keys`: `name:base64` public keys Nix must accept.
    pub fn new(
        cache_url: &str,
        token: Option<&str>,
        root: Option<&Path>,
        trusted_keys: Vec<String>,
    ) -> NixCopyStore {
        NixCopyStore {
            cache_url: cache_url.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            root: root.map(Path::to_path_buf),
            trusted_keys,
            nix: "nix".into(),
            env: Vec::new(),
            tmp_base: std::env::temp_dir(),
        }
    }

    #[cfg(test)]
    pub fn with_test_setup(
        mut self,
        env: Vec<(OsString, OsString)>,
        tmp_base: &Path,
        nix: &str,
    ) -> NixCopyStore {
        self.env = env;
        self.tmp_base = tmp_base.to_path_buf();
        self.nix = nix.into();
        self
    }

    fn nix(&self, args: &[OsString]) -> Result<String, StoreError> {
        let mut cmd = Command::new(&self.nix);
        cmd.arg("--extra-experimental-features").arg("nix-command");
        cmd.args(args);
        if let Some(root) = &self.root {
            cmd.arg("--store").arg(root);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = self.nix.to_string_lossy().into_owned();
        // Safe to show: the token is only ever inside the netrc file.
        let command = format!(
            "{program} {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = cmd
            .output()
            .map_err(|err| StoreError::NoProgram { program, err })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(StoreError::Program {
                command,
                detail: format!("{}: {}", out.status, err.trim()),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Store for NixCopyStore {
    fn describe(&self) -> String {
        match &self.root {
            Some(r) => format!("nix copy into {}", r.display()),
            None => "nix copy into the default store".to_string(),
        }
    }

    fn query_valid(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError> {
        if paths.is_empty() {
            return Ok(BTreeSet::new());
        }
        // `nix path-info P` exits non-zero when P is not valid.
        let mut valid = BTreeSet::new();
        for p in paths {
            let args: Vec<OsString> = vec!["path-info".into(), p.to_string().into()];
            match self.nix(&args) {
                Ok(_) => {
                    valid.insert(p.clone());
                }
                Err(StoreError::Program { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(valid)
    }

    fn add_temp_roots(&self, _paths: &[StorePath]) -> Result<(), StoreError> {
        // `nix copy` holds its own temp roots for what it copies; a path
        // copied earlier is protected by the later copies' closures only
        // until they finish, which is the usual `nix copy` guarantee.
        Ok(())
    }

    fn add_path(&self, info: &NarInfo, _nar: &mut dyn Read) -> Result<(), StoreError> {
        let mut args: Vec<OsString> = vec![
            "copy".into(),
            "--from".into(),
            self.cache_url.clone().into(),
            "--option".into(),
            "narinfo-cache-negative-ttl".into(),
            "0".into(),
        ];
        if !self.trusted_keys.is_empty() {
            args.push("--option".into());
            args.push("trusted-public-keys".into());
            args.push(self.trusted_keys.join(" ").into());
        }
        let guard = match (&self.token, url_host(&self.cache_url)) {
            (Some(token), Some(host)) => {
                let (guard, file) = NetrcDir::create(&self.tmp_base, host, token)?;
                args.push("--netrc-file".into());
                args.push(file.into_os_string());
                Some(guard)
            }
            _ => None,
        };
        args.push(info.store_path.to_string().into());
        let result = self.nix(&args).map(|_| ());
        drop(guard);
        result
    }

    fn finish(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn reads_nar(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn url_host_cases() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "https",
                "https://cache.flakehub.com",
                Some("cache.flakehub.com"),
            ),
            ("port", "http://127.0.0.1:8081/x", Some("127.0.0.1")),
            ("userinfo", "https://u@h.example/", Some("h.example")),
            ("ipv6", "http://[::1]:80/", Some("[::1]")),
            ("file", "file:///tmp/cache", None),
            ("empty host", "http:///x", None),
        ];
        for (name, url, want) in cases {
            assert_eq!(url_host(url), *want, "{name}");
        }
    }
}
