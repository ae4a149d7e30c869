//! A GC root that keeps a staged closure: a symlink to the store path and
//! Nix's indirect root for it in `gcroots/auto` (used by `fh-lite fetch`
//! and by an apply that stages outside its window or rollout time).
//!
//! Under `--root DIR` both directories are resolved beneath DIR and both
//! links are made in them by descriptor ([`crate::rootfs`], as the
//! profile's generation links are): a symlink planted on the way is
//! followed as if DIR were `/`, and one at a link's name is replaced, never
//! followed.

use std::path::Path;

use crate::activate::profiles::replace_symlink;
use crate::error::Error;
use crate::nix::store_path::StorePath;
use crate::rootfs;

/// `link` → store path, and Nix's indirect root → `link`, both as the
/// managed system sees them (under `--root`, without the DIR prefix).
pub(crate) fn gc_root(
    root: Option<&Path>,
    link: &Path,
    store_path: &StorePath,
) -> Result<(), Error> {
    let link = std::path::absolute(link).map_err(|e| Error::io("resolve", link, &e))?;
    let logical = rootfs::logical(root, &link);
    let (Some(dir), Some(name)) = (link.parent(), link.file_name().and_then(|n| n.to_str())) else {
        return Err(Error::io(
            "create GC root",
            &link,
            &std::io::Error::other("not a UTF-8 file name; give --out-link a path to a new file"),
        ));
    };
    let d =
        rootfs::create_dir_all(root, dir).map_err(|e| Error::io("create directory", dir, &e))?;
    replace_symlink(&d, Path::new(&store_path.to_absolute()), name)?;
    let auto = root
        .unwrap_or(Path::new("/"))
        .join("nix/var/nix/gcroots/auto");
    let a = rootfs::create_dir_all(root, &auto)
        .map_err(|e| Error::io("create GC root directory", &auto, &e))?;
    let auto_name = crate::activate::profiles::gcroot_name(&logical);
    Ok(replace_symlink(&a, &logical, &auto_name)?)
}
