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
//! protects those users). Written like state.json (beneath `--root`, through
//! `rootfs::Dir::write_atomic`), apart from it.

use std::collections::BTreeMap;

use miniserde::{json, Deserialize, Serialize};

use crate::error::{Error, Exit};
use crate::outref::OutputRef;
use crate::state::StateDir;

const FILE: &str = "versions.json";

/// More than any real memory of versions: refused before parsing.
const MAX_BYTES: u64 = 1 << 20;

#[derive(Serialize, Deserialize, Default)]
struct Versions {
    versions: BTreeMap<String, String>,
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

fn load(state_dir: &StateDir) -> Result<Versions, Error> {
    match state_dir.read_file(FILE, MAX_BYTES)? {
        Some(text) => json::from_str(&text).map_err(|_| {
            Error::new(
                Exit::Internal,
                format!(
                    "{} is not valid JSON; fix or remove it (it only holds the versions applied, for the downgrade check)",
                    state_dir.path(FILE).display()
                ),
            )
        }),
        None => Ok(<Versions as Default>::default()),
    }
}

/// The remembered version for `r`'s project and attribute (for `status`).
pub fn remembered(state_dir: &StateDir, r: &OutputRef) -> Result<Option<String>, Error> {
    Ok(load(state_dir)?.versions.remove(&key(r)))
}

/// Every remembered version, by `org/project#attr` (for `status`).
pub fn all(state_dir: &StateDir) -> Result<BTreeMap<String, String>, Error> {
    Ok(load(state_dir)?.versions)
}

/// Refuse `r` when it is an exact version older than the one remembered.
pub fn check(state_dir: &StateDir, r: &OutputRef) -> Result<(), Error> {
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

/// Refuse a bundle whose manifest no trusted key signed (`what` names it)
/// when a version of its project and attribute was applied here before:
/// its reference is unproven, so a version it claims (exact or loose)
/// cannot show that it is not older. Nothing remembered: allowed (and an
/// apply of it never remembers a version either).
pub fn check_unproven(state_dir: &StateDir, r: &OutputRef, what: &str) -> Result<(), Error> {
    let Some(have) = remembered(state_dir, r)? else {
        return Ok(());
    };
    Err(Error::new(
        Exit::Downgrade,
        format!(
            "{what}: its manifest is not signed by a trusted bundle key, so its version ({r}) is unproven, and {have} of {}/{}#{} was applied here before; refusing a possible downgrade (sign the bundle, or run with --allow-downgrade if you mean it)",
            r.org, r.project, r.attr_path
        ),
    ))
}

/// After a successful apply: remember `r`'s exact version when it is
/// newer than the one remembered.
pub fn remember(state_dir: &StateDir, r: &OutputRef) -> Result<(), Error> {
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

fn save(dir: &StateDir, v: &Versions) -> Result<(), Error> {
    dir.write_file(FILE, (json::to_string(v) + "\n").as_bytes())
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
        let tmp = TempDir::new("versions");
        let t = StateDir::new(tmp.path());
        check(&t, &r("=0.1.5")).unwrap();
        remember(&t, &r("=0.1.5")).unwrap();
        remember(&t, &r("=0.1.3")).unwrap(); // not newer: kept 0.1.5
        assert_eq!(remembered(&t, &r("0.1")).unwrap().as_deref(), Some("0.1.5"));
        let e = check(&t, &r("=0.1.4")).unwrap_err();
        assert_eq!(e.exit, Exit::Downgrade);
        assert!(e.message.contains("older than 0.1.5"), "{}", e.message);
        check(&t, &r("=0.1.5")).unwrap();
        check(&t, &r("=0.2.0")).unwrap();
        check(&t, &r("0.1")).unwrap();
    }
}
