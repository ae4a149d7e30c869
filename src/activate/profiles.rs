//! Profiles and generations, exactly as Nix makes them (docs/formats.md, "Generations").
//!
//! ```text
//! <dir>/<name>            -> <name>-<N>-link        (relative: switchLink)
//! <dir>/<name>-<N>-link   -> /nix/store/<hash>-<n>  (absolute: createGeneration)
//! <gcroots>/auto/<nix32(sha1("<dir>/<name>-<N>-link"))> -> <dir>/<name>-<N>-link
//! ```
//!
//! - A new generation reuses the highest one when that already points at the
//!   path; otherwise N = highest + 1 (1 when there is none).
//! - The generation link is made as `<link>.tmp-<pid>-<n>` and renamed onto
//!   `<link>`; the profile is switched by making `.<k>_<name>` (k counting up
//!   on EEXIST) and renaming it over `<name>`. Both renames are atomic.
//! - Link targets are what the *system* sees: `/nix/store/…` even under
//!   `--root DIR`, where the links themselves live at `DIR/nix/var/nix/…`.
//! - The indirect GC root under `--root` is named after, and points at, the
//!   path inside the root (`/nix/var/nix/profiles/system-N-link`), so it is
//!   valid once the image boots. (`nix-env --store DIR` would use the host
//!   path `DIR/nix/var/…`, which dangles after boot; without `--root` both
//!   are the same.) The profiles directory is a GC root by itself anyway.

use std::path::{Path, PathBuf};

use super::ActivateError;
use crate::rootfs::{self, Dir};

/// One `<name>-<N>-link`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub number: u64,
    /// The link on this machine's filesystem (under `--root` when given).
    pub link: PathBuf,
    /// Its target as written: `/nix/store/…`.
    pub target: String,
}

/// A profile such as `/nix/var/nix/profiles/system`.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The profile symlink on this machine's filesystem.
    pub path: PathBuf,
    /// The same path as the managed system sees it (without `--root`).
    logical: PathBuf,
    /// `gcroots/auto` on this machine's filesystem.
    gcroots_auto: PathBuf,
    /// `--root DIR`: both directories are resolved beneath it.
    root: Option<PathBuf>,
}

/// The name Nix gives the indirect root for `link` (formats.md "Generations" `addIndirectRoot`).
pub fn gcroot_name(link: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        link.as_os_str().as_bytes(),
    );
    crate::nix::base32::encode(d.as_ref())
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ActivateError + 'a {
    move |err| ActivateError::Io {
        what,
        path: path.to_path_buf(),
        err,
    }
}

/// The pid in a temporary generation link's name,
/// `<prefix><N>-link.tmp-<pid>-<n>` (`prefix`: `<name>-`), or None.
fn temp_link_pid(file: &str, prefix: &str) -> Option<u32> {
    let (number, rest) = file.strip_prefix(prefix)?.split_once("-link.tmp-")?;
    let (pid, n) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(number) && digits(pid) && digits(n)) {
        return None;
    }
    pid.parse().ok()
}

/// A counter for unique temporary names within this process.
fn next_tmp() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Profile {
    /// `path` is the profile on this filesystem; `root` the `--root` dir.
    pub fn new(path: &Path, root: Option<&Path>) -> Profile {
        let logical = rootfs::logical(root, path);
        let state = root.unwrap_or(Path::new("/")).join("nix/var/nix");
        Profile {
            path: path.to_path_buf(),
            logical,
            gcroots_auto: state.join("gcroots/auto"),
            root: root.map(Path::to_path_buf),
        }
    }

    /// With an explicit gcroots/auto directory and logical path (tests that
    /// compare with `nix-env --store`, where both are host paths).
    #[cfg(test)]
    pub fn with_gcroots(path: &Path, gcroots_auto: &Path) -> Profile {
        Profile {
            path: path.to_path_buf(),
            logical: path.to_path_buf(),
            gcroots_auto: gcroots_auto.to_path_buf(),
            root: None,
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// The profile's directory, beneath `--root` ([`rootfs`]).
    fn open_dir(&self, create: bool) -> std::io::Result<Dir> {
        let root = self.root.as_deref();
        if create {
            rootfs::create_dir_all(root, self.dir())
        } else {
            rootfs::open_dir(root, self.dir())
        }
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Remove the `<name>-<N>-link.tmp-<pid>-<n>` links of runs no longer
    /// alive (killed between making a generation link and renaming it into
    /// place). A link whose pid is alive, this process included, is never
    /// touched; without /proc nothing is. Advice-grade: a failure to
    /// remove one changes nothing else. (Nix's own `.<k>_<name>` links are
    /// left alone: a `nix-env` may be using one right now.)
    fn remove_dead_temp_links(&self, d: &Dir) {
        if std::fs::symlink_metadata("/proc/self").is_err() {
            return;
        }
        let Ok(entries) = d.entries() else { return };
        let prefix = format!("{}-", self.name());
        for e in entries {
            let Some(pid) = e.to_str().and_then(|n| temp_link_pid(n, &prefix)) else {
                continue;
            };
            if std::fs::symlink_metadata(format!("/proc/{pid}")).is_err() {
                let _ = d.remove_file(&e);
            }
        }
    }

    /// The number in `<name>-<N>-link`, if `file` is such a name.
    fn parse_number(&self, file: &str) -> Option<u64> {
        let name = self.name();
        let n = file.strip_prefix(&name)?.strip_prefix('-')?;
        let n = n.strip_suffix("-link")?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()
    }

    pub fn link_path(&self, number: u64) -> PathBuf {
        self.dir().join(format!("{}-{number}-link", self.name()))
    }

    /// All generations, lowest first.
    pub fn generations(&self) -> Result<Vec<Generation>, ActivateError> {
        let dir = self.dir();
        let d = match self.open_dir(false) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read profile directory", dir)(e)),
        };
        let entries = d.entries().map_err(io("read profile directory", dir))?;
        let mut out = Vec::new();
        for file in entries {
            let Some(number) = self.parse_number(&file.to_string_lossy()) else {
                continue;
            };
            let link = dir.join(&file);
            let target = d
                .readlink(&file)
                .map_err(io("read generation link", &link))?;
            out.push(Generation {
                number,
                link,
                target: target.to_string_lossy().into_owned(),
            });
        }
        out.sort_by_key(|g| g.number);
        Ok(out)
    }

    pub fn generation(&self, number: u64) -> Result<Generation, ActivateError> {
        self.generations()?
            .into_iter()
            .find(|g| g.number == number)
            .ok_or_else(|| ActivateError::NoSuchGeneration {
                profile: self.path.clone(),
                number,
            })
    }

    /// The generation the profile points at (`readlink(P)` parsed), or None
    /// when the profile does not exist yet.
    pub fn current(&self) -> Result<Option<u64>, ActivateError> {
        let target = match self.open_dir(false).and_then(|d| d.readlink(self.name())) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read profile", &self.path)(e)),
        };
        let file = target
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self.parse_number(&file) {
            Some(n) => Ok(Some(n)),
            None => Err(ActivateError::NotAGeneration {
                profile: self.path.clone(),
                target: target.to_string_lossy().into_owned(),
            }),
        }
    }

    /// The store path the current generation points at.
    pub fn current_target(&self) -> Result<Option<Generation>, ActivateError> {
        match self.current()? {
            None => Ok(None),
            Some(n) => self.generation(n).map(Some),
        }
    }

    /// `createGeneration`: reuse the highest generation when it points at
    /// `store_path`, else make N = highest + 1 with its indirect GC root.
    pub fn create_generation(&self, store_path: &str) -> Result<Generation, ActivateError> {
        if let Ok(d) = self.open_dir(false) {
            self.remove_dead_temp_links(&d);
        }
        let gens = self.generations()?;
        if let Some(top) = gens.last() {
            if top.target == store_path {
                return Ok(top.clone());
            }
        }
        let number = gens.last().map_or(1, |g| g.number + 1);
        let link = self.link_path(number);
        let dir = self.dir();
        let d = self
            .open_dir(true)
            .map_err(io("create profile directory", dir))?;
        let tmp = format!(
            "{}-{number}-link.tmp-{}-{}",
            self.name(),
            std::process::id(),
            next_tmp()
        );
        d.symlink(store_path, &tmp)
            .map_err(io("create symlink", &dir.join(&tmp)))?;
        if let Err(e) = d.rename(&tmp, format!("{}-{number}-link", self.name())) {
            let _ = d.remove_file(&tmp);
            return Err(io("rename generation link into place", &link)(e));
        }
        self.add_indirect_root(number)?;
        Ok(Generation {
            number,
            link,
            target: store_path.to_string(),
        })
    }

    /// `addIndirectRoot`: gcroots/auto/<nix32(sha1(link))> -> link, both
    /// as the managed system sees them.
    fn add_indirect_root(&self, number: u64) -> Result<(), ActivateError> {
        let logical_link = self
            .logical
            .parent()
            .unwrap_or(Path::new("/"))
            .join(format!("{}-{number}-link", self.name()));
        let auto = &self.gcroots_auto;
        let d = rootfs::create_dir_all(self.root.as_deref(), auto)
            .map_err(io("create GC root directory", auto))?;
        replace_symlink(&d, &logical_link, &gcroot_name(&logical_link))
    }

    /// `switchLink`: point the profile at generation `number` (relative
    /// target), atomically.
    pub fn switch_to(&self, number: u64) -> Result<(), ActivateError> {
        let link_name = format!("{}-{number}-link", self.name());
        let d = self.open_dir(false).ok().filter(|d| d.exists(&link_name));
        let Some(d) = d else {
            return Err(ActivateError::NoSuchGeneration {
                profile: self.path.clone(),
                number,
            });
        };
        replace_symlink(&d, Path::new(&link_name), &self.name())
    }
}

/// `replaceSymlink`: `name` in `dir` -> `target`, made under a random
/// temporary name and renamed over `name` (a symlink there is replaced,
/// never followed), then the directory synced ([`Dir::symlink_atomic`]).
pub(crate) fn replace_symlink(dir: &Dir, target: &Path, name: &str) -> Result<(), ActivateError> {
    dir.symlink_atomic(target, name)
        .map_err(io("replace symlink", &dir.join(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{NixEnv, TempDir};

    #[test]
    fn gcroot_names_match_nix() {
        // Names computed by Nix for these link paths (formats.md "Generations", and nix-env
        // --store in a scratch dir).
        let cases = [
            (
                "system-42-link",
                "/nix/var/nix/profiles/system-42-link",
                "1phq2x3zid84yj2a8ky5mn0diwpmv9nv",
            ),
            (
                "nix-env --store scratch",
                "/tmp/nixexp/root/nix/var/nix/profiles/system-1-link",
                "i20i7yj9n86f1i74kqgpl5fw7i2si104",
            ),
        ];
        for (name, link, want) in cases {
            assert_eq!(gcroot_name(Path::new(link)), want, "{name}");
        }
    }

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-a";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-b";

    fn read(p: &Path) -> String {
        std::fs::read_link(p)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn generations_are_numbered_reused_and_linked_like_nix() {
        let t = TempDir::new("profiles");
        let root = t.path();
        let prof = root.join("nix/var/nix/profiles/system");
        let p = Profile::new(&prof, Some(root));
        assert_eq!(p.current().unwrap(), None);

        let g1 = p.create_generation(A).unwrap();
        assert_eq!(g1.number, 1);
        p.switch_to(1).unwrap();
        // Same path again: the highest generation is reused.
        assert_eq!(p.create_generation(A).unwrap().number, 1);
        let g2 = p.create_generation(B).unwrap();
        assert_eq!(g2.number, 2);
        p.switch_to(2).unwrap();
        // A again: not the highest, so a new generation 3.
        assert_eq!(p.create_generation(A).unwrap().number, 3);

        let dir = root.join("nix/var/nix/profiles");
        assert_eq!(read(&dir.join("system")), "system-2-link");
        assert_eq!(read(&dir.join("system-1-link")), A);
        assert_eq!(read(&dir.join("system-2-link")), B);
        assert_eq!(read(&dir.join("system-3-link")), A);
        assert_eq!(p.current().unwrap(), Some(2));
        // GC roots are named after the path inside the root.
        let auto = root.join("nix/var/nix/gcroots/auto");
        let link42 = Path::new("/nix/var/nix/profiles/system-2-link");
        assert_eq!(
            read(&auto.join(gcroot_name(link42))),
            "/nix/var/nix/profiles/system-2-link"
        );
        // No temporary links are left behind.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["system", "system-1-link", "system-2-link", "system-3-link"]
        );
        assert_eq!(std::fs::read_dir(&auto).unwrap().count(), 3);
    }

    #[test]
    fn temporary_generation_link_names() {
        let p = "system-";
        assert_eq!(temp_link_pid("system-12-link.tmp-4242-0", p), Some(4242));
        for not in [
            "system-12-link",
            "system-12-link.tmp-4242",
            "system-x-link.tmp-4242-0",
            "system-12-link.tmp--0",
            "system-12-link.tmp-42a-0",
            "other-12-link.tmp-4242-0",
            ".0_system",
        ] {
            assert_eq!(temp_link_pid(not, p), None, "{not}");
        }
    }

    #[test]
    fn numbering_ignores_other_names_and_continues_after_gaps() {
        let t = TempDir::new("profiles-gaps");
        let dir = t.path().join("profiles");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, target) in [
            ("system-7-link", A),
            ("system-x-link", B),
            ("system-10-link.tmp-1-1", B),
            ("other-12-link", B),
            ("system-3-link", B),
        ] {
            std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
        }
        let p = Profile::new(&dir.join("system"), Some(t.path()));
        let nums: Vec<u64> = p.generations().unwrap().iter().map(|g| g.number).collect();
        assert_eq!(nums, [3, 7]);
        assert_eq!(
            p.create_generation(A).unwrap().number,
            7,
            "7 is highest and A"
        );
        assert_eq!(p.create_generation(B).unwrap().number, 8);
    }

    #[test]
    fn errors_name_the_profile() {
        let t = TempDir::new("profiles-err");
        let prof = t.path().join("system");
        let p = Profile::new(&prof, None);
        let e = p.switch_to(4).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("profile {}: there is no generation 4", prof.display())
        );
        std::os::unix::fs::symlink("/nix/store/x-foreign", &prof).unwrap();
        assert_eq!(
            p.current().unwrap_err().to_string(),
            format!(
                "profile {}: points at /nix/store/x-foreign, not at a system-N-link generation",
                prof.display()
            )
        );
    }

    /// Real Nix (2.8) on the same path makes byte-identical links.
    #[test]
    fn same_links_as_nix_env_set() {
        let t = TempDir::new("profiles-nixenv");
        let Some(env) = NixEnv::new("profiles-nixenv") else {
            return;
        };
        let store_root = t.path().join("nixroot");
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/hello"), "hi\n").unwrap();
        let path = env.run(
            "nix-store",
            &[
                "--store",
                store_root.to_str().unwrap(),
                "--add",
                src.to_str().unwrap(),
            ],
            None,
        );
        let path = path.trim();
        assert!(path.starts_with("/nix/store/"), "{path}");

        // Nix's profile.
        let nix_dir = store_root.join("nix/var/nix/profiles");
        std::fs::create_dir_all(&nix_dir).unwrap();
        let nix_prof = nix_dir.join("system");
        for _ in 0..2 {
            env.run(
                "nix-env",
                &[
                    "--store",
                    store_root.to_str().unwrap(),
                    "-p",
                    nix_prof.to_str().unwrap(),
                    "--set",
                    path,
                ],
                None,
            );
        }
        let nix_auto = store_root.join("nix/var/nix/gcroots/auto");
        // gcroots/auto as (name, target) pairs.
        let roots = |dir: &Path| -> Vec<(String, String)> {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        read(&e.path()),
                    )
                })
                .collect()
        };
        let nix_roots = roots(&nix_auto);
        let nix_links = (read(&nix_prof), read(&nix_dir.join("system-1-link")));
        assert!(std::fs::symlink_metadata(nix_dir.join("system-2-link")).is_err());

        // Ours, on the same profile path after removing Nix's links.
        std::fs::remove_file(&nix_prof).unwrap();
        std::fs::remove_file(nix_dir.join("system-1-link")).unwrap();
        std::fs::remove_dir_all(&nix_auto).unwrap();
        let p = Profile::with_gcroots(&nix_prof, &nix_auto);
        for _ in 0..2 {
            let g = p.create_generation(path).unwrap();
            p.switch_to(g.number).unwrap();
        }
        let ours_roots = roots(&nix_auto);
        assert_eq!(
            (read(&nix_prof), read(&nix_dir.join("system-1-link"))),
            nix_links
        );
        assert_eq!(nix_links.0, "system-1-link");
        assert_eq!(nix_links.1, path);
        assert_eq!(ours_roots, nix_roots);
        assert_eq!(ours_roots.len(), 1);
    }
}
