//! A GC root that keeps a staged closure: a symlink to the store path and
//! Nix's indirect root for it in `gcroots/auto` (used by `fh-lite fetch`
//! and by an apply that stages outside its window or rollout time).

use std::path::{Path, PathBuf};

use crate::cli::Common;
use crate::error::Error;
use crate::nix::store_path::StorePath;

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
    replace_symlink(
        &logical,
        &auto.join(crate::activate::profiles::gcroot_name(&logical)),
    )
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
