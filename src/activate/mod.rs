//! Activation: profile generations, the activation script, rollback
//! (nix-protocols.md §6).
//!
//! The apply pipeline calls, after the closure is valid in the store:
//!
//! ```text
//! is_current(common, opts, path)        no-op check (skip unless --force)
//! activate(common, opts, path, &mut report) -> Result<Exit, Error>
//! ```
//!
//! `activate` for NixOS `switch`/`boot` and nix-darwin: create (or reuse)
//! the generation, switch the profile, run `<generation>/bin/switch-to-
//! configuration ACTION` (`<generation>/sw/bin/darwin-rebuild activate`);
//! NixOS `test`/`dry-activate` run `<path>/bin/switch-to-configuration
//! ACTION` without a generation; Home Manager runs `<path>/activate` as the
//! calling user. The exit status is read truthfully ([`nixos::classify`]);
//! a failure listed in `--rollback-on`, or a failing `--health-check`,
//! re-points the profile at the exact generation that was current before
//! and activates that again ([`rollback`]).
//!
//! `--root DIR`: every path below is taken inside DIR, and commands run
//! chrooted into DIR by spawning the `chroot` program (`chroot DIR CMD …`):
//! the crate forbids `unsafe`, which `CommandExt::pre_exec` would need. That
//! needs root. `boot` without `--install-bootloader` under `--root` runs
//! nothing: the generation is the boot default of the image.

pub mod darwin;
pub mod home_manager;
pub mod nixos;
pub mod profiles;
pub mod rollback;

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::cli::{Action, ApplyKind, ApplyOpts, Common};
use crate::error::{Error, Exit};
use profiles::{Generation, Profile};

pub use rollback::cmd_rollback;

/// Errors of the activation layer; each names the profile, script or path.
#[derive(Debug)]
pub enum ActivateError {
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    /// `rollback --to N`, or a profile switch, named a missing generation.
    NoSuchGeneration { profile: PathBuf, number: u64 },
    /// The profile symlink does not point at a `<name>-N-link`.
    NotAGeneration { profile: PathBuf, target: String },
    /// The path to activate is not in the store (or not a `/nix/store` path).
    NotInStore { path: String, real: PathBuf },
    /// The activation script is missing or not executable.
    BadScript {
        path: PathBuf,
        problem: &'static str,
    },
    /// `--root` needs root to chroot.
    NeedsRoot { root: PathBuf },
    /// A command could not be started.
    Spawn {
        program: String,
        err: std::io::Error,
    },
    /// Home Manager under `--root`.
    HomeManagerRoot,
}

impl fmt::Display for ActivateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivateError::Io { what, path, err } => {
                write!(f, "{what} {}: {err}", path.display())
            }
            ActivateError::NoSuchGeneration { profile, number } => write!(
                f,
                "profile {}: there is no generation {number}",
                profile.display()
            ),
            ActivateError::NotAGeneration { profile, target } => write!(
                f,
                "profile {}: points at {target}, not at a {}-N-link generation",
                profile.display(),
                profile
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ),
            ActivateError::NotInStore { path, real } => write!(
                f,
                "store path {path} is not in the store ({} does not exist): fetch and register it first",
                real.display()
            ),
            ActivateError::BadScript { path, problem } => {
                write!(f, "activation script {}: {problem}", path.display())
            }
            ActivateError::NeedsRoot { root } => write!(
                f,
                "--root {}: activation runs chrooted into it, which needs root; run fh-lite as root (or use 'boot' without --install-bootloader, which runs nothing)",
                root.display()
            ),
            ActivateError::Spawn { program, err } => write!(f, "run {program}: {err}"),
            ActivateError::HomeManagerRoot => f.write_str(
                "apply home-manager: --root is not supported (Home Manager activates as the calling user in its home)",
            ),
        }
    }
}

impl From<ActivateError> for Error {
    fn from(e: ActivateError) -> Error {
        let exit = match &e {
            ActivateError::Io { .. } | ActivateError::NotAGeneration { .. } => Exit::Internal,
            ActivateError::NoSuchGeneration { .. }
            | ActivateError::NeedsRoot { .. }
            | ActivateError::HomeManagerRoot => Exit::Usage,
            ActivateError::NotInStore { .. } => Exit::Store,
            ActivateError::BadScript { .. } | ActivateError::Spawn { .. } => Exit::ActivationFailed,
        };
        Error::new(exit, e.to_string())
    }
}

/// What activation did; filled by [`activate`] whether it succeeds or not,
/// and handed to `state::record_result`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The profile generation current before (None: no profile yet).
    pub previous_generation: Option<u64>,
    /// The generation created or reused for this path (switch/boot, darwin).
    pub generation: Option<u64>,
    /// Exit code of the activation script (None: not run, or killed).
    pub script_status: Option<i32>,
    /// The health check ran and failed (or timed out).
    pub health_check_failed: bool,
    /// The generation the profile was rolled back to.
    pub rolled_back_to: Option<u64>,
    /// Activating this path failed: state records it, later runs skip it.
    pub path_failed: bool,
}

/// Everything activation needs about the machine: root, profile, output.
pub(crate) struct Ctx<'a> {
    pub common: &'a Common,
    pub root: Option<&'a Path>,
    pub profile: Profile,
}

impl<'a> Ctx<'a> {
    pub fn new(common: &'a Common) -> Ctx<'a> {
        let root = common.root.as_deref();
        Ctx {
            common,
            root,
            profile: Profile::new(&common.profile, root),
        }
    }

    /// A path as the managed system sees it → this machine's filesystem.
    pub fn real(&self, logical: &Path) -> PathBuf {
        match self.root {
            Some(r) => r.join(logical.strip_prefix("/").unwrap_or(logical)),
            None => logical.to_path_buf(),
        }
    }

    /// The profile path as the managed system sees it (the program path for
    /// generation links when chrooted).
    pub fn logical(&self, real: &Path) -> PathBuf {
        match self.root.and_then(|r| real.strip_prefix(r).ok()) {
            Some(rel) => Path::new("/").join(rel),
            None => real.to_path_buf(),
        }
    }

    /// A progress line on stderr (not with --quiet).
    pub fn say(&self, msg: &str) {
        if !self.common.quiet {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "fh-lite: {msg}");
        }
    }

    /// Fail early when commands would need a chroot we cannot make.
    pub fn check_can_run(&self) -> Result<(), ActivateError> {
        match self.root {
            Some(r) if !rustix::process::geteuid().is_root() => Err(ActivateError::NeedsRoot {
                root: r.to_path_buf(),
            }),
            _ => Ok(()),
        }
    }

    /// `program` (a path inside the system) as a command: chrooted under
    /// `--root` through the `chroot` program (no `unsafe` pre_exec here).
    pub fn command(&self, program: &Path) -> Result<Command, ActivateError> {
        self.check_can_run()?;
        Ok(match self.root {
            Some(r) => {
                let mut c = Command::new("chroot");
                c.arg(r).arg(program);
                c
            }
            None => Command::new(program),
        })
    }

    /// Check that `logical` (inside the system) is an executable file,
    /// following symlinks inside the root.
    pub fn check_executable(&self, logical: &Path) -> Result<(), ActivateError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = self.real(logical);
        let bad = |problem| ActivateError::BadScript {
            path: shown.clone(),
            problem,
        };
        let real = resolve_in_root(self.root.unwrap_or(Path::new("/")), logical)
            .map_err(|_| bad("does not exist (is this store path the right kind of system?)"))?;
        let meta = std::fs::metadata(&real)
            .map_err(|_| bad("does not exist (is this store path the right kind of system?)"))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(bad("is not an executable file"));
        }
        Ok(())
    }

    /// The store path must exist under the root before anything changes.
    pub fn check_in_store(&self, store_path: &str) -> Result<(), ActivateError> {
        let real = self.real(Path::new(store_path));
        let ok = store_path.starts_with("/nix/store/")
            && !store_path["/nix/store/".len()..].contains('/')
            && std::fs::symlink_metadata(&real).is_ok();
        if ok {
            Ok(())
        } else {
            Err(ActivateError::NotInStore {
                path: store_path.to_string(),
                real,
            })
        }
    }

    /// `/run/current-system`'s target (under the root), if any.
    pub fn current_system(&self) -> Option<String> {
        std::fs::read_link(self.real(Path::new("/run/current-system")))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }
}

/// Follow `logical` inside `root` the way the kernel would inside a chroot:
/// absolute symlink targets restart at `root`. Returns the real path.
pub(crate) fn resolve_in_root(root: &Path, logical: &Path) -> std::io::Result<PathBuf> {
    let mut pending: Vec<PathBuf> = Vec::new();
    let push_all = |pending: &mut Vec<PathBuf>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => pending.push(PathBuf::from(n)),
                Component::ParentDir => pending.push(PathBuf::from("..")),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    push_all(&mut pending, logical);
    let mut cur = PathBuf::from("/");
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == Path::new("..") {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        let real = root.join(next.strip_prefix("/").unwrap_or(&next));
        let meta = std::fs::symlink_metadata(&real)?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return Err(std::io::Error::other("too many levels of symbolic links"));
            }
            let target = std::fs::read_link(&real)?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            push_all(&mut pending, &target);
        } else {
            cur = next;
        }
    }
    Ok(root.join(cur.strip_prefix("/").unwrap_or(&cur)))
}

/// Activate `store_path` (`/nix/store/…`, already valid in the store under
/// `--root`) for `opts.kind`/`opts.action`. Fills `report` as it goes.
///
/// Ok: [`Exit::Success`] or [`Exit::RebootNeeded`]. Err carries the class:
/// `ActivationFailed`, `ActivationPartial` (exit 4 kept), `RolledBack`,
/// `RollbackFailed`, or a local error (`Store`, `Usage`, `Internal`). The
/// caller records the outcome with `state::record_result`. The state lock
/// (`state::lock`) must be held by the caller.
pub fn activate(
    common: &Common,
    opts: &ApplyOpts,
    store_path: &str,
    report: &mut Report,
) -> Result<Exit, Error> {
    let ctx = Ctx::new(common);
    match opts.kind {
        ApplyKind::Nixos => {
            rollback::activate_system(&ctx, opts, store_path, report, &nixos::NIXOS)
        }
        ApplyKind::NixDarwin => {
            rollback::activate_system(&ctx, opts, store_path, report, &darwin::DARWIN)
        }
        ApplyKind::HomeManager => home_manager::activate(&ctx, opts, store_path, report),
    }
}

/// What can be refused before anything is resolved, fetched or locked:
/// Home Manager under `--root`, and (unless `--dry-run`) a `--root`
/// activation that would have to chroot without being root. Without this
/// the closure would be fetched into the root first, only to be refused.
pub fn preflight(common: &Common, opts: &ApplyOpts) -> Result<(), Error> {
    let ctx = Ctx::new(common);
    if opts.kind == ApplyKind::HomeManager && ctx.root.is_some() {
        return Err(ActivateError::HomeManagerRoot.into());
    }
    let action = match opts.kind {
        ApplyKind::NixDarwin => Action::Switch,
        _ => opts.action,
    };
    if !opts.dry_run && runs_commands(&ctx, action, opts) {
        ctx.check_can_run()?;
    }
    Ok(())
}

/// Whether activating runs anything: everything does except `boot` under
/// `--root` without `--install-bootloader` (the generation is the image's
/// boot default).
pub(crate) fn runs_commands(ctx: &Ctx, action: Action, opts: &ApplyOpts) -> bool {
    !(ctx.root.is_some() && action == Action::Boot && !opts.install_bootloader)
}

/// True when `store_path` is already what this machine runs (the no-op
/// check): NixOS/nix-darwin — the profile's current generation points at
/// it and, for actions that activate now, so does `/run/current-system`
/// (under `--root` only when DIR/run/current-system exists); `boot` only
/// needs the profile; `test` only `/run/current-system`; `dry-activate`
/// is never "current". Home Manager: its own profile points at it.
pub fn is_current(common: &Common, opts: &ApplyOpts, store_path: &str) -> bool {
    let ctx = Ctx::new(common);
    if opts.kind == ApplyKind::HomeManager {
        return home_manager::is_current(store_path);
    }
    let action = match opts.kind {
        ApplyKind::NixDarwin => Action::Switch,
        _ => opts.action,
    };
    let profile_ok = || {
        matches!(ctx.profile.current_target(),
            Ok(Some(Generation { ref target, .. })) if target == store_path)
    };
    let running_ok = || match ctx.current_system() {
        Some(t) => t == store_path,
        // Under --root an image may have no /run yet.
        None => ctx.root.is_some(),
    };
    match action {
        Action::Switch => profile_ok() && running_ok(),
        Action::Boot => profile_ok(),
        Action::Test => ctx.current_system().as_deref() == Some(store_path),
        Action::DryActivate => false,
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Fake roots with fake systems whose activation scripts log their
    //! arguments and exit with a chosen code; a scratch Nix for comparisons.

    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A temporary directory, removed (read-only trees too) on drop.
    pub use crate::store::testutil::TempDir;

    /// A root with busybox as /bin/sh and /bin/sleep, or None (with a
    /// notice) when the test cannot chroot: not root, or no busybox.
    pub fn chroot_root(t: &TempDir) -> Option<PathBuf> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("notice: not root; skipping a chroot-based activation test");
            return None;
        }
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            eprintln!("notice: /bin/busybox missing; skipping a chroot-based activation test");
            return None;
        }
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        for name in ["sh", "sleep"] {
            std::fs::copy(busybox, root.join("bin").join(name)).unwrap();
        }
        std::fs::create_dir_all(root.join("nix/store")).unwrap();
        Some(root)
    }

    /// A fake system `/nix/store/<32 chars>-<name>` whose `rel` script
    /// (e.g. `bin/switch-to-configuration`) appends "$0 $* bootloader=…"
    /// to /activation.log and exits `code`.
    pub fn fake_system(root: &Path, name: &str, rel: &str, code: i32) -> String {
        let hash = format!("{:0<32}", name.replace('-', "").to_lowercase())
            .chars()
            .take(32)
            .collect::<String>();
        let store_path = format!("/nix/store/{hash}-{name}");
        let script = root.join(store_path.trim_start_matches('/')).join(rel);
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$0 $* bootloader=$NIXOS_INSTALL_BOOTLOADER\" >> /activation.log\nexit {code}\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        store_path
    }

    pub fn common(root: &Path) -> crate::cli::Common {
        crate::cli::Common {
            api_addr: String::new(),
            cache_addr: String::new(),
            frontend_addr: String::new(),
            token_file: None,
            ca_file: None,
            allow_insecure_http: false,
            json: false,
            quiet: true,
            verbose: false,
            root: Some(root.to_path_buf()),
            state_dir: root.join("var/lib/fh-lite"),
            profile: root.join("nix/var/nix/profiles/system"),
        }
    }

    pub fn opts(kind: crate::cli::ApplyKind, action: crate::cli::Action) -> crate::cli::ApplyOpts {
        crate::cli::ApplyOpts {
            kind,
            reference: crate::outref::parse("org/proj/0.1#x", "https://flakehub.com", "x").unwrap(),
            action,
            trusted_keys: crate::nix::signature::TrustedKeys::flakehub_defaults(),
            jobs: 1,
            dry_run: false,
            store: crate::cli::StoreKind::Image,
            daemon_socket: None,
            install_bootloader: false,
            force: false,
            no_rollback: false,
            rollback_on: vec![1, 2, 4],
            health_check: None,
            health_timeout: std::time::Duration::from_secs(60),
            retry_failed: false,
        }
    }

    pub fn log(root: &Path) -> String {
        std::fs::read_to_string(root.join("activation.log")).unwrap_or_default()
    }

    /// Nix 2.8 with HOME, XDG and NIX_CONF_DIR in a scratch dir, so the
    /// host's /nix is never created.
    pub struct NixEnv {
        dir: PathBuf,
    }

    impl NixEnv {
        pub fn new(base: &Path) -> Option<NixEnv> {
            // Look it up on PATH; running it (even `--version`) with the
            // real HOME would create /nix.
            let found = std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nix-env").is_file()));
            if !found {
                return None;
            }
            let dir = base.join("nixenv");
            for d in ["home", "cache", "data", "conf"] {
                std::fs::create_dir_all(dir.join(d)).unwrap();
            }
            std::fs::write(dir.join("conf/nix.conf"), "build-users-group =\n").unwrap();
            Some(NixEnv { dir })
        }

        pub fn run(&self, args: &[&str]) -> String {
            let had_nix = Path::new("/nix").exists();
            let out = Command::new(args[0])
                .args(&args[1..])
                .env("HOME", self.dir.join("home"))
                .env("XDG_CACHE_HOME", self.dir.join("cache"))
                .env("XDG_DATA_HOME", self.dir.join("data"))
                .env("XDG_CONFIG_HOME", self.dir.join("conf"))
                .env("NIX_CONF_DIR", self.dir.join("conf"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                had_nix || !Path::new("/nix").exists(),
                "{args:?} created /nix"
            );
            String::from_utf8(out.stdout).unwrap()
        }
    }
}
