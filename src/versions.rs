//! Anti-downgrade memory: the highest exact version applied, per project
//! and attribute, in `STATE_DIR/versions.json`.
//!
//! ```json
//! {"versions":{"org/project#nixosConfigurations.pi":"0.1.175"}}
//! ```
//!
//! Only an exact reference (`=0.1.175`, or a bundle manifest made from
//! one) has a version: a loose one is answered by FlakeHub with a store
//! path and no version, so there is nothing to compare (README says what
//! protects those users). Written atomically like state.json (temp file,
//! fsync, rename, fsync of the directory), apart from it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use miniserde::{json, Deserialize, Serialize};

use crate::error::{Error, Exit};
use crate::outref::OutputRef;

#[derive(Serialize, Deserialize, Default)]
struct Versions {
    versions: BTreeMap<String, String>,
}

fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("versions.json")
}

/// `org/project#attr`: what a version is remembered for.
fn key(r: &OutputRef) -> String {
    format!("{}/{}#{}", r.org, r.project, r.attr_path)
}

/// The exact version of `r` (`=0.1.175` → 0.1.175), if it has one.
pub fn exact_version(r: &OutputRef) -> Option<semver::Version> {
    if !r.exact {
        return None;
    }
    semver::Version::parse(r.version_req.trim_start_matches('=').trim()).ok()
}

fn load(state_dir: &Path) -> Result<Versions, Error> {
    let path = file(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => json::from_str(&text).map_err(|_| {
            Error::new(
                Exit::Internal,
                format!(
                    "{} is not valid JSON; fix or remove it (it only holds the versions applied, for the downgrade check)",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(<Versions as Default>::default()),
        Err(e) => Err(Error::io("read", &path, &e)),
    }
}

/// The remembered version for `r`'s project and attribute (for `status`).
pub fn remembered(state_dir: &Path, r: &OutputRef) -> Result<Option<String>, Error> {
    Ok(load(state_dir)?.versions.remove(&key(r)))
}

/// Every remembered version, by `org/project#attr` (for `status`).
pub fn all(state_dir: &Path) -> Result<BTreeMap<String, String>, Error> {
    Ok(load(state_dir)?.versions)
}

/// Refuse `r` when it is an exact version older than the one remembered.
pub fn check(state_dir: &Path, r: &OutputRef) -> Result<(), Error> {
    let Some(want) = exact_version(r) else {
        return Ok(());
    };
    let Some(have) = remembered(state_dir, r)? else {
        return Ok(());
    };
    match semver::Version::parse(&have) {
        Ok(have) if want < have => Err(Error::new(
            Exit::Downgrade,
            format!(
                "{r} is older than {have}, which was applied here before; refusing the downgrade (run with --allow-downgrade if you mean it)"
            ),
        )),
        _ => Ok(()),
    }
}

/// After a successful apply: remember `r`'s exact version when it is
/// newer than the one remembered.
pub fn remember(state_dir: &Path, r: &OutputRef) -> Result<(), Error> {
    let Some(v) = exact_version(r) else {
        return Ok(());
    };
    let mut all = load(state_dir)?;
    let k = key(r);
    let newer = match all.versions.get(&k).map(|h| semver::Version::parse(h)) {
        Some(Ok(have)) => v > have,
        _ => true,
    };
    if !newer {
        return Ok(());
    }
    all.versions.insert(k, v.to_string());
    save(state_dir, &all)
}

fn save(dir: &Path, v: &Versions) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create state directory", dir, &e))?;
    let path = file(dir);
    let tmp = dir.join(format!(".versions.json.tmp-{}", std::process::id()));
    let text = json::to_string(v) + "\n";
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write", &path, &e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn r(req: &str) -> OutputRef {
        crate::outref::parse(&format!("org/p/{req}#x"), "https://flakehub.com", "x").unwrap()
    }

    #[test]
    fn older_exact_version_is_refused_loose_is_not() {
        let t = TempDir::new("versions");
        check(t.path(), &r("=0.1.5")).unwrap();
        remember(t.path(), &r("=0.1.5")).unwrap();
        remember(t.path(), &r("=0.1.3")).unwrap(); // not newer: kept 0.1.5
        assert_eq!(
            remembered(t.path(), &r("0.1")).unwrap().as_deref(),
            Some("0.1.5")
        );
        let e = check(t.path(), &r("=0.1.4")).unwrap_err();
        assert_eq!(e.exit, Exit::Downgrade);
        assert!(e.message.contains("older than 0.1.5"), "{}", e.message);
        check(t.path(), &r("=0.1.5")).unwrap();
        check(t.path(), &r("=0.2.0")).unwrap();
        check(t.path(), &r("0.1")).unwrap();
    }
}
