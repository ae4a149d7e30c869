//! Every program fh-lite starts is started here: [`command`] builds the
//! `std::process::Command` (clippy.toml forbids `Command::new` elsewhere).
//!
//! fh-lite runs as root, so what it starts runs as root too: activation
//! scripts, `chroot`, `unshare` (with `sh` and `mount`), health checks,
//! `systemctl`, `date`, `nix-store` and `nix`. Which program a name means
//! and what it is told through its environment must not be up to whoever
//! can write a directory on `PATH` or set a variable in the shell fh-lite
//! was started from. Three rules:
//!
//! - **Found on the sanitised PATH only** ([`safe_path`]). A bare name is
//!   looked up there and the command is built with the absolute path
//!   found; a name that is not there is an error that names the PATH
//!   searched. A path (with a `/`) is taken as given: those come from the
//!   store (`switch-to-configuration`) or are fixed (`/bin/sh`).
//! - **A minimal environment** ([`Env`]): the child's environment is
//!   cleared and gets only what its kind needs (`PATH` the sanitised one;
//!   a program chrooted into `--root DIR` gets [`DEFAULT_PATH`] instead,
//!   as this machine's directories say nothing about DIR's); what the
//!   caller sets afterwards is kept.
//! - **stdin is /dev/null** unless the caller sets it: under `--from -`
//!   fh-lite's stdin is the bundle pipe.
//!
//! # The sanitised PATH
//!
//! The inherited `PATH`'s entries, in order, each kept only when it is
//! absolute and every directory reached while resolving it is safe:
//! owned by root (or, when fh-lite itself does not run as root — Home
//! Manager, an image build as a normal user — by that user), and not
//! writable by group or others. Symlinks are followed as the kernel
//! follows them, checking every directory passed on the way: the final
//! directory, and also the directories above it and those holding the
//! symlinks, because whoever can write one of those can rename the entry
//! away and put another in its place (`/usr/local/bin` is only as safe as
//! `/usr/local`). A directory above the entry may be group- or
//! world-writable when it is sticky (`/tmp`, `/nix/store`): there nobody
//! but the owner can rename or remove what is in it. The entry itself must
//! not be writable by others, sticky or not. Relative entries, empty
//! entries and `.` are dropped. When nothing is left (or `PATH` is unset),
//! [`DEFAULT_PATH`] is used, the same list filtered by the same rule.
//! Dropped entries are named once on stderr with `--verbose`. A program
//! found there is run only if the file it resolves to is owned by root
//! (or that user), writable by nobody else, and in a directory that passes
//! the same rule: a safe directory's symlink into a writable one is
//! skipped, and the search goes on.
//!
//! The directories are checked once, when fh-lite starts ([`init`]): a
//! directory that was safe then cannot be made unsafe later by anyone the
//! rule keeps out. The program file is checked each time it is looked up.
//!
//! # The environment
//!
//! What `nixos-rebuild switch` gives `switch-to-configuration`: it runs
//! it in a transient systemd unit, the service manager's environment, with
//! only `LOCALE_ARCHIVE` and `NIXOS_INSTALL_BOOTLOADER` passed through. So
//! [`Env::System`] (system activation, chroot, unshare, health checks,
//! `systemctl`, `date`) is `PATH` plus those two when set. No `HOME`
//! (a `sudo` shell's may be a user's home, where root would then write),
//! no `TZ`, `LANG` or `TERM` (a service has none; activation must not
//! depend on the shell fh-lite was run from). `date` is the one exception
//! for `TZ`: it only computes the local time of fh-lite's own
//! `--window`/`--reboot-window` decisions, which are documented to honour
//! `TZ` (fleet/schedule.rs passes it explicitly).
//!
//! [`Env::Nix`] (`nix-store`, `nix`) adds what Nix is configured with
//! through its environment, as `nix` would see it when run by hand from
//! the same shell: `NIX_CONF_DIR`, `NIX_CONFIG`, `NIX_USER_CONF_FILES`,
//! `NIX_REMOTE`, `NIX_DAEMON_SOCKET_PATH`, `NIX_SSL_CERT_FILE`, `HOME`
//! and the XDG base directories (user configuration and cache), and the
//! proxy variables (`nix copy` downloads). `NIX_STORE_DIR` and
//! `NIX_STATE_DIR` are not passed: fh-lite's own store layout is
//! `/nix/store`, and a Nix pointed elsewhere would register paths fh-lite
//! never wrote.
//!
//! [`Env::User`] is Home Manager's `activate` (and its health check),
//! which runs as the calling user in that user's session: it needs `HOME`,
//! `USER`, `XDG_*`, the session bus. It keeps the inherited environment
//! without the loader variables (`LD_*`, [`UNSAFE_ENV`]), with the
//! sanitised `PATH`.

use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Used when the inherited `PATH` holds no safe entry: NixOS's setuid
/// wrappers and system profile, Nix's default profile, then the usual
/// FHS directories (filtered by the same rule).
pub const DEFAULT_PATH: &str = "/run/wrappers/bin:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a child's environment holds (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Env {
    /// `PATH`, `LOCALE_ARCHIVE`, `NIXOS_INSTALL_BOOTLOADER`.
    System,
    /// [`Env::System`] and Nix's configuration variables.
    Nix,
    /// The inherited environment without loader variables; `PATH`
    /// sanitised (Home Manager).
    User,
}

/// Inherited variables passed to every [`Env::System`] child.
const SYSTEM_VARS: &[&str] = &["LOCALE_ARCHIVE", "NIXOS_INSTALL_BOOTLOADER"];

/// Inherited variables passed to `nix` and `nix-store` besides those.
const NIX_VARS: &[&str] = &[
    "NIX_CONF_DIR",
    "NIX_CONFIG",
    "NIX_USER_CONF_FILES",
    "NIX_REMOTE",
    "NIX_DAEMON_SOCKET_PATH",
    "NIX_SSL_CERT_FILE",
    "HOME",
    "XDG_CONFIG_HOME",
    "XDG_CONFIG_DIRS",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
];

/// Variables through which the C library and the dynamic loader load code
/// or read data chosen by whoever set them (glibc ignores them for setuid
/// programs for that reason); with every `LD_*`, never passed on, not
/// even in [`Env::User`].
const UNSAFE_ENV: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
];

/// The sanitised PATH, made once.
static SAFE_PATH: OnceLock<OsString> = OnceLock::new();

/// `--verbose`: say what was left out.
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Make the sanitised PATH now (once per run, before anything is started)
/// and, with `verbose`, say which entries were dropped and why.
pub fn init(verbose: bool) {
    VERBOSE.store(verbose, std::sync::atomic::Ordering::Relaxed);
    SAFE_PATH.get_or_init(|| {
        let (path, dropped) = compute();
        if verbose {
            for (entry, why) in dropped {
                crate::ui::say(&format!(
                    "PATH entry {} is not used for programs run as root: {why}",
                    entry.display()
                ));
            }
        }
        path
    });
}

/// The sanitised PATH (see the module doc).
pub fn safe_path() -> &'static OsStr {
    SAFE_PATH.get_or_init(|| compute().0)
}

fn compute() -> (OsString, Vec<(PathBuf, String)>) {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    compute_from(&inherited, rustix::process::geteuid().as_raw())
}

/// The sanitised form of `inherited` for a process of effective uid
/// `euid`, [`DEFAULT_PATH`]'s when nothing is left, and what was dropped.
fn compute_from(inherited: &OsStr, euid: u32) -> (OsString, Vec<(PathBuf, String)>) {
    let (kept, mut dropped) = sanitise(inherited, euid);
    if !kept.is_empty() {
        return (join(&kept), dropped);
    }
    let (kept, more) = sanitise(OsStr::new(DEFAULT_PATH), euid);
    dropped.extend(more);
    (join(&kept), dropped)
}

fn join(dirs: &[PathBuf]) -> OsString {
    std::env::join_paths(dirs).unwrap_or_default()
}

/// The entries of `path` kept by the rule for a process of effective uid
/// `euid`, in order and without repeats, and those dropped with the
/// reason.
fn sanitise(path: &OsStr, euid: u32) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    use std::os::unix::ffi::OsStrExt;
    let (mut kept, mut dropped) = (Vec::<PathBuf>::new(), Vec::new());
    // Split by hand: an empty entry is reported, not read as ".".
    for raw in path.as_bytes().split(|b| *b == b':') {
        let entry = PathBuf::from(OsStr::from_bytes(raw));
        let verdict = if raw.is_empty() {
            Err("empty (the current directory)".to_string())
        } else if !entry.is_absolute() {
            Err("not an absolute path".to_string())
        } else {
            check_dir(&entry, euid)
        };
        match verdict {
            Ok(()) if !kept.contains(&entry) => kept.push(entry),
            Ok(()) => {}
            Err(why) => dropped.push((entry, why)),
        }
    }
    (kept, dropped)
}

/// Whether a directory with these properties may hold or lead to programs
/// run as root: `last` for the entry itself (never writable by others),
/// else a directory passed on the way (writable by others only if sticky).
fn safe_dir(meta: &std::fs::Metadata, euid: u32, last: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let (uid, mode) = (meta.uid(), meta.mode());
    if uid != 0 && uid != euid {
        return Err(if euid == 0 {
            format!("owned by uid {uid}, not root")
        } else {
            format!("owned by uid {uid}, neither root nor this user")
        });
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && (last || !sticky) {
        return Err(format!(
            "writable by group or others (mode {:o})",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Resolve `entry` as the kernel would, checking every directory passed
/// (see the module doc). `Err` is the reason, naming the directory at
/// fault.
fn check_dir(entry: &Path, euid: u32) -> Result<(), String> {
    use std::collections::VecDeque;
    let at = |dir: &Path, why: String| {
        if dir == entry {
            why
        } else {
            format!("{} {why}", dir.display())
        }
    };
    let stat = |p: &Path| std::fs::metadata(p).map_err(|e| at(p, format!("cannot be read ({e})")));
    let mut current = PathBuf::from("/");
    safe_dir(&stat(&current)?, euid, false).map_err(|w| at(&current, w))?;
    let mut pending: VecDeque<OsString> = components(entry);
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        match name.to_str() {
            Some("/") => current = PathBuf::from("/"),
            Some(".") => {}
            Some("..") => {
                current.pop();
            }
            _ => {
                let next = current.join(&name);
                let meta = std::fs::symlink_metadata(&next)
                    .map_err(|e| at(&next, format!("cannot be read ({e})")))?;
                if meta.file_type().is_symlink() {
                    // Its directory (`current`) was checked: nobody else
                    // can replace the link.
                    links += 1;
                    if links > 40 {
                        return Err(at(&next, "has too many levels of symlinks".into()));
                    }
                    let target = std::fs::read_link(&next)
                        .map_err(|e| at(&next, format!("cannot be read ({e})")))?;
                    for c in components(&target).into_iter().rev() {
                        pending.push_front(c);
                    }
                } else if meta.is_dir() {
                    safe_dir(&meta, euid, false).map_err(|w| at(&next, w))?;
                    current = next;
                } else {
                    return Err(at(&next, "is not a directory".into()));
                }
            }
        }
    }
    safe_dir(&stat(&current)?, euid, true).map_err(|w| at(&current, w))
}

fn components(p: &Path) -> std::collections::VecDeque<OsString> {
    p.components()
        .map(|c| match c {
            Component::RootDir => OsString::from("/"),
            Component::CurDir => OsString::from("."),
            Component::ParentDir => OsString::from(".."),
            Component::Normal(n) => n.to_os_string(),
            Component::Prefix(p) => p.as_os_str().to_os_string(),
        })
        .collect()
}

/// `name` found on the sanitised PATH: the first executable regular file
/// that is itself safe ([`check_program`]); an unsafe one is skipped (and
/// named with `--verbose`).
pub fn find(name: &str) -> Option<PathBuf> {
    let (found, skipped) = find_in(name, safe_path(), rustix::process::geteuid().as_raw());
    if VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
        // Once per program a run.
        static SAID: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
        for (p, why) in skipped {
            if !said.contains(&p) {
                crate::ui::say(&format!("{} is not run as root: {why}", p.display()));
                said.push(p);
            }
        }
    }
    found
}

/// [`find`] in the directories `path` for a process of effective uid
/// `euid`: the program found, and the candidates skipped with the reason.
fn find_in(name: &str, path: &OsStr, euid: u32) -> (Option<PathBuf>, Vec<(PathBuf, String)>) {
    use std::os::unix::fs::PermissionsExt;
    let mut skipped = Vec::new();
    for dir in std::env::split_paths(path) {
        let p = dir.join(name);
        let executable = p
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            continue;
        }
        match check_program(&p, euid) {
            Ok(()) => return (Some(p), skipped),
            Err(why) => skipped.push((p, why)),
        }
    }
    (None, skipped)
}

/// A program in a safe directory may still be a symlink to a file in an
/// unsafe one, or a file others can write: the file it resolves to must be
/// owned by root (or this user) and writable by nobody else, in a
/// directory that passes [`check_dir`].
fn check_program(p: &Path, euid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(p).map_err(|e| format!("cannot be resolved ({e})"))?;
    let meta = std::fs::metadata(&real).map_err(|e| format!("cannot be read ({e})"))?;
    let shown = |why: String| {
        if real == p {
            why
        } else {
            format!("{} {why}", real.display())
        }
    };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(shown(format!("is owned by uid {}", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(shown(format!(
            "is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    match real.parent() {
        Some(dir) => check_dir(dir, euid).map_err(|w| {
            if w.starts_with('/') {
                w
            } else {
                format!("{} {w}", dir.display())
            }
        }),
        None => Err("has no directory".into()),
    }
}

/// A command for `program` with the environment `env` and stdin
/// /dev/null. A bare name is looked up on the sanitised PATH (Err: not
/// found, naming that PATH); a path is used as given.
pub fn command(program: impl AsRef<OsStr>, env: Env) -> std::io::Result<Command> {
    let program = program.as_ref();
    let resolved = if program.as_encoded_bytes().contains(&b'/') {
        PathBuf::from(program)
    } else {
        let name = program.to_string_lossy();
        find(&name).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{name} is not on the PATH searched for programs run as root ({}; -v names the entries left out)",
                    safe_path().to_string_lossy()
                ),
            )
        })?
    };
    #[allow(clippy::disallowed_methods)]
    let mut cmd = Command::new(resolved);
    set_env(&mut cmd, env, std::env::vars_os());
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

/// Give `cmd` the environment `env`, from the `inherited` variables.
fn set_env(cmd: &mut Command, env: Env, inherited: impl Iterator<Item = (OsString, OsString)>) {
    cmd.env_clear();
    for (k, v) in inherited {
        let name = k.to_string_lossy();
        let pass = match env {
            Env::System => SYSTEM_VARS.contains(&&*name),
            Env::Nix => SYSTEM_VARS.contains(&&*name) || NIX_VARS.contains(&&*name),
            Env::User => !name.starts_with("LD_") && !UNSAFE_ENV.contains(&&*name),
        };
        if pass && name != "PATH" {
            cmd.env(&k, v);
        }
    }
    cmd.env("PATH", safe_path());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    fn me() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    fn kept(path: &str, euid: u32) -> Vec<String> {
        sanitise(OsStr::new(path), euid)
            .0
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    fn why(path: &str, euid: u32) -> Vec<String> {
        sanitise(OsStr::new(path), euid)
            .1
            .iter()
            .map(|(e, w)| format!("{}: {w}", e.display()))
            .collect()
    }

    /// A fresh directory owned by this process's user, mode 0755.
    fn dir(t: &crate::testutil::TempDir, name: &str) -> PathBuf {
        let d = t.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        mode(&d, 0o755);
        d
    }

    #[test]
    fn relative_dot_and_empty_entries_are_dropped() {
        let t = crate::testutil::TempDir::new("exec-rel");
        let good = dir(&t, "good");
        let good = good.to_str().unwrap();
        let path = format!("bin:.::{good}:./x:");
        assert_eq!(kept(&path, me()), [good]);
        let w = why(&path, me());
        assert_eq!(w.len(), 5, "{w:?}");
        assert_eq!(w[0], "bin: not an absolute path");
        assert_eq!(w[1], ".: not an absolute path");
        assert_eq!(w[2], ": empty (the current directory)");
    }

    #[test]
    fn writable_by_group_or_others_is_dropped_sticky_or_not() {
        let t = crate::testutil::TempDir::new("exec-writable");
        let (g, o, s) = (dir(&t, "g"), dir(&t, "o"), dir(&t, "s"));
        mode(&g, 0o775);
        mode(&o, 0o757);
        mode(&s, 0o1777);
        for d in [&g, &o, &s] {
            let p = d.to_str().unwrap();
            assert_eq!(kept(p, me()), Vec::<String>::new(), "{p}");
            assert!(
                why(p, me())[0].contains("writable by group or others"),
                "{p}"
            );
        }
        // Below a writable, non-sticky directory: it can be swapped.
        let below = dir(&t, "o/bin");
        assert_eq!(kept(below.to_str().unwrap(), me()), Vec::<String>::new());
        let w = why(below.to_str().unwrap(), me());
        assert!(
            w[0].contains(&format!("{} writable by group", o.display())),
            "{w:?}"
        );
        // Below a sticky one (as tests under /tmp are): kept.
        let safe = dir(&t, "s/bin");
        assert_eq!(kept(safe.to_str().unwrap(), me()), [safe.to_str().unwrap()]);
    }

    #[test]
    fn not_owned_by_root_or_this_user_is_dropped() {
        let t = crate::testutil::TempDir::new("exec-owner");
        let d = dir(&t, "d");
        let p = d.to_str().unwrap();
        if me() == 0 {
            // Root: a directory of nobody's.
            std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
            assert_eq!(kept(p, 0), Vec::<String>::new());
            assert!(
                why(p, 0)[0].contains("owned by uid 65534, not root"),
                "{:?}",
                why(p, 0)
            );
            // Run as that user, its own directory is kept.
            assert_eq!(kept(p, 65534), [p]);
        } else {
            // Not root: the user's own directory is not good enough for root.
            assert_eq!(kept(p, 0), Vec::<String>::new());
            assert!(why(p, 0)[0].contains("not root"));
            assert_eq!(kept(p, me()), [p]);
        }
        // Root's own directories are kept for anyone.
        assert_eq!(kept("/", 0), ["/"]);
        assert_eq!(kept("/", 12345), ["/"]);
    }

    #[test]
    fn symlinks_are_followed_and_their_targets_checked() {
        let t = crate::testutil::TempDir::new("exec-link");
        let good = dir(&t, "good");
        let bad = dir(&t, "bad");
        mode(&bad, 0o777);
        let to_bad = t.path().join("to-bad");
        std::os::unix::fs::symlink(&bad, &to_bad).unwrap();
        let to_good = t.path().join("to-good");
        std::os::unix::fs::symlink("good/../good", &to_good).unwrap();
        let p = format!("{}:{}", to_bad.display(), to_good.display());
        assert_eq!(kept(&p, me()), [to_good.to_str().unwrap()]);
        let w = why(&p, me());
        assert!(
            w[0].contains(&format!("{} writable by group or others", bad.display())),
            "{w:?}"
        );
        // A link in a directory others can write: they can retarget it.
        let open = dir(&t, "open");
        mode(&open, 0o777);
        let l = open.join("l");
        std::os::unix::fs::symlink(&good, &l).unwrap();
        assert_eq!(kept(l.to_str().unwrap(), me()), Vec::<String>::new());
        // A loop ends.
        let a = t.path().join("loop");
        std::os::unix::fs::symlink(&a, &a).unwrap();
        assert!(why(a.to_str().unwrap(), me())[0].contains("too many levels"));
        // Not a directory, missing.
        let f = t.path().join("file");
        std::fs::write(&f, "").unwrap();
        assert!(why(f.to_str().unwrap(), me())[0].contains("is not a directory"));
        assert!(why("/nonexistent-fh-lite", me())[0].contains("cannot be read"));
        assert_eq!(
            kept(&format!("{}:{}", good.display(), good.display()), me()).len(),
            1
        );
    }

    #[test]
    fn the_default_list_is_used_when_nothing_is_left() {
        let t = crate::testutil::TempDir::new("exec-default");
        let bad = dir(&t, "bad");
        mode(&bad, 0o777);
        let default = join(&sanitise(OsStr::new(DEFAULT_PATH), 0).0);
        let s = default.to_string_lossy();
        assert!(s.split(':').any(|d| d == "/usr/bin" || d == "/bin"), "{s}");
        let inherited = format!("{}:.:relative:", bad.display());
        let (path, dropped) = compute_from(OsStr::new(&inherited), 0);
        assert_eq!(path, default);
        assert!(dropped.len() >= 4, "{dropped:?}");
        let (path, _) = compute_from(OsStr::new(""), 0);
        assert_eq!(path, default, "PATH unset or empty");
        // One safe entry left: no fallback.
        let good = dir(&t, "good");
        let (path, _) = compute_from(OsStr::new(&format!("{inherited}:{}", good.display())), me());
        assert_eq!(path, good.as_os_str());
    }

    #[test]
    fn children_get_only_the_minimal_environment() {
        let inherited = || {
            [
                ("PATH", "/evil"),
                ("TZ", "UTC+5"),
                ("HOME", "/home/alice"),
                ("FOO", "bar"),
                ("LD_PRELOAD", "/evil.so"),
                ("GCONV_PATH", "/evil"),
                ("LOCALE_ARCHIVE", "/la"),
                ("NIX_CONFIG", "x = y"),
                ("https_proxy", "http://p:3128"),
            ]
            .into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        };
        let run = |env| {
            let mut c = Command::new("/usr/bin/env");
            set_env(&mut c, env, inherited());
            let out = c.output().unwrap();
            let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from)
                .collect();
            lines.sort();
            lines
        };
        let path = format!("PATH={}", safe_path().to_string_lossy());
        assert_eq!(
            run(Env::System),
            ["LOCALE_ARCHIVE=/la".to_string(), path.clone()]
        );
        assert_eq!(
            run(Env::Nix),
            [
                "HOME=/home/alice".to_string(),
                "LOCALE_ARCHIVE=/la".into(),
                "NIX_CONFIG=x = y".into(),
                path.clone(),
                "https_proxy=http://p:3128".into()
            ]
        );
        assert_eq!(
            run(Env::User),
            [
                "FOO=bar".to_string(),
                "HOME=/home/alice".into(),
                "LOCALE_ARCHIVE=/la".into(),
                "NIX_CONFIG=x = y".into(),
                path,
                "TZ=UTC+5".into(),
                "https_proxy=http://p:3128".into()
            ]
        );
    }

    #[test]
    fn a_program_others_can_write_or_reached_through_an_unsafe_link_is_skipped() {
        let t = crate::testutil::TempDir::new("exec-find");
        let (a, b, c) = (dir(&t, "a"), dir(&t, "b"), dir(&t, "c"));
        let open = dir(&t, "open");
        mode(&open, 0o777);
        let prog = |d: &Path, m: u32| {
            let p = d.join("prog");
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            mode(&p, m);
            p
        };
        prog(&a, 0o777);
        // b/prog: a link into the writable directory.
        std::os::unix::fs::symlink(prog(&open, 0o755), b.join("prog")).unwrap();
        let good = prog(&c, 0o755);
        let path = std::env::join_paths([&a, &b, &c]).unwrap();
        let (found, skipped) = find_in("prog", &path, me());
        assert_eq!(found, Some(good));
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped[0]
                .1
                .contains("writable by group or others (mode 777)"),
            "{skipped:?}"
        );
        assert!(
            skipped[1]
                .1
                .contains(&format!("{} writable by group or others", open.display())),
            "{skipped:?}"
        );
        assert_eq!(find_in("nothing-here", &path, me()).0, None);
    }

    #[test]
    fn a_name_not_on_the_safe_path_is_an_error_naming_it() {
        let e = command("fh-lite-no-such-program", Env::System).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().starts_with(
            "fh-lite-no-such-program is not on the PATH searched for programs run as root ("
        ));
        let c = command("sh", Env::System).unwrap();
        assert!(Path::new(c.get_program()).is_absolute(), "{c:?}");
    }
}
