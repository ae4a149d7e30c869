//! `fh-lite fetch REF`: stage a closure without activating it.
//!
//! resolve → plan → fetch → register, as `apply` does, then a GC root:
//! the symlink `--out-link PATH` (default `STATE_DIR/fetched`) pointing at
//! the store path, announced to Nix as an indirect root
//! (`nix/var/nix/gcroots/auto/<nix32(sha1(link))>` → link). No profile
//! change, no activation; a later `apply` of the same path finds it valid
//! and downloads nothing.

use std::path::{Path, PathBuf};

use crate::cli::{ApplyOpts, Common, OfflineOpts};
use crate::error::{Error, Exit};
use crate::http::Client;
use crate::nix::store_path::StorePath;
use crate::state::StateDir;
use crate::store::select;

pub fn run(common: &Common, opts: &ApplyOpts, offline: &OfflineOpts) -> Result<Exit, Error> {
    let state = StateDir::new(&common.state_dir);
    let _lock = state.lock()?;
    let client = Client::new(common)?;
    let mut source = crate::apply::flakehub_source(&client, common, opts)?;
    let root_path = source.store_path().clone();
    let keys = &opts.trusted_keys;
    let store = select::select(common, opts, keys, source.token())?;
    let store = store.as_ref();
    let plan = source.plan(store, keys, opts.jobs)?;
    let (paths, download, unpack) = (plan.paths.len(), plan.download_bytes, plan.unpack_bytes);
    if store.reads_nar() {
        let root = common.root.as_deref().unwrap_or(Path::new("/"));
        crate::plan::check_disk_space(&root.join("nix/store"), unpack)?;
    }
    let mut pinned: Vec<StorePath> = plan.paths.iter().map(|i| i.store_path.clone()).collect();
    pinned.push(root_path.clone());
    store.add_temp_roots(&pinned)?;
    source.fetch(store, keys, opts.jobs, plan)?;
    let link = offline
        .out_link
        .clone()
        .unwrap_or_else(|| common.state_dir.join("fetched"));
    gc_root(common, &link, &root_path)?;
    if common.json {
        #[derive(miniserde::Serialize)]
        struct Out {
            event: &'static str,
            store_path: String,
            out_link: String,
            paths_fetched: u64,
            download_bytes: u64,
            unpack_bytes: u64,
        }
        let out = Out {
            event: "fetched",
            store_path: root_path.to_string(),
            out_link: link.display().to_string(),
            paths_fetched: paths as u64,
            download_bytes: download,
            unpack_bytes: unpack,
        };
        crate::print_stdout(&format!("{}\n", miniserde::json::to_string(&out)));
    } else {
        crate::print_stdout(&format!("{root_path}\n"));
        if !common.quiet {
            eprintln!(
                "fh-lite: {} fetched ({} downloaded), pinned by {}; nothing activated",
                crate::progress::plural(paths as u64, "path"),
                crate::util::mib(download),
                link.display()
            );
        }
    }
    Ok(Exit::Success)
}

/// `link` → store path, and Nix's indirect root → `link`, both as the
/// managed system sees them (under `--root`, without the DIR prefix).
pub(crate) fn gc_root(common: &Common, link: &Path, store_path: &StorePath) -> Result<(), Error> {
    let root = common.root.as_deref().unwrap_or(Path::new("/"));
    let logical: PathBuf = match common
        .root
        .as_deref()
        .and_then(|r| link.strip_prefix(r).ok())
    {
        Some(rel) => Path::new("/").join(rel),
        None => std::path::absolute(link).map_err(|e| Error::io("resolve", link, &e))?,
    };
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, &e))?;
    }
    replace_symlink(Path::new(&store_path.to_absolute()), link)?;
    let auto = root.join("nix/var/nix/gcroots/auto");
    std::fs::create_dir_all(&auto).map_err(|e| Error::io("create GC root directory", &auto, &e))?;
    replace_symlink(&logical, &auto.join(gcroot_name(&logical)))
}

/// Nix's name for the indirect root of `link`: nix32(sha1(link)).
fn gcroot_name(link: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        link.as_os_str().as_bytes(),
    );
    crate::nix::base32::encode(d.as_ref())
}

/// A symlink at `path` to `target`, replacing what was there atomically.
fn replace_symlink(target: &Path, path: &Path) -> Result<(), Error> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| Error::io("create symlink", &tmp, &e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("create GC root", path, &e)
    })
}
