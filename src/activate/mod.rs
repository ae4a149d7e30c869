//! Activation: profile generations, the activation script, rollback
//! (docs/formats.md, "Profiles and activation").
//!
//! The apply command calls, after the closure is valid in the store:
//!
//! ```text
//! is_current(machine, opts, path)       no-op check (skip unless --force)
//! activate(machine, settings, path, before, journal, &mut report) -> Result<Exit, Error>
//! ```
//!
//! and the rollback command [`switch_back::SwitchBack`]. Neither takes the
//! state lock nor writes the state file: the commands do, from [`Report`].
//!
//! `activate` for NixOS `switch`/`boot` and nix-darwin: create (or reuse)
//! the generation, switch the profile, run `<generation>/bin/switch-to-
//! configuration ACTION` (`<generation>/sw/bin/darwin-rebuild activate`);
//! NixOS `test`/`dry-activate` run `<path>/bin/switch-to-configuration
//! ACTION` without a generation; Home Manager runs `<path>/activate` as the
//! calling user. The exit status is read truthfully ([`Flavor::classify`]);
//! a failure listed in `--rollback-on`, or a failing `--health-check`,
//! re-points the profile at the exact generation that was current before
//! and activates that again ([`run`]).
//!
//! `--root DIR`: every path below is taken inside DIR, and commands run
//! chrooted into DIR by spawning the `chroot` program (`chroot DIR CMD …`):
//! the crate forbids `unsafe`, which `CommandExt::pre_exec` would need. That
//! needs root. With `--install-bootloader` the command runs as
//! `nixos-install` runs it: `/dev`, `/proc` and `/sys` mounted in DIR (in a
//! private mount namespace, [`Ctx::command_with_mounts`]) and
//! `NIXOS_INSTALL_BOOTLOADER=1`. `boot` without `--install-bootloader`
//! under `--root` runs nothing: only the profile moves, and fh-lite says
//! that the boot loader was not updated and how to update it.

pub mod flavor;
pub mod home_manager;
pub mod orphan;
pub mod profiles;
pub mod run;
pub mod switch_back;
pub mod trial_boot;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Exit};
use crate::exec::Env;
use crate::machine::Machine;
use crate::nix::store_path::StorePath;
use crate::options::{Action, ApplyKind, ApplyOpts};
use crate::state::{Pending, Phase};
pub use flavor::Flavor;
use profiles::{Generation, Profile};

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
    /// `--health-check` under `--root`, which has no `/bin/sh` to run it.
    NoShell { root: PathBuf },
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
            ActivateError::NoShell { root } => write!(
                f,
                "--health-check runs '/bin/sh -c CMD' chrooted into --root {}, but {} is missing (or not an executable file); nothing was done. Drop --health-check, or give the root a /bin/sh first (NixOS activation creates it: apply once without --health-check)",
                root.display(),
                root.join("bin/sh").display()
            ),
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
            | ActivateError::HomeManagerRoot
            | ActivateError::NoShell { .. } => Exit::Usage,
            ActivateError::NotInStore { .. } => Exit::Store,
            ActivateError::BadScript { .. } | ActivateError::Spawn { .. } => Exit::ActivationFailed,
        };
        Error::new(exit, e.to_string())
    }
}

/// What activation did; filled by [`activate`] whether it succeeds or not,
/// for the command to record.
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
    /// A trial boot was prepared and journaled: reboot into it.
    pub trial_boot: Option<crate::boot::TrialBoot>,
    /// Activating this path failed: state records it, later runs skip it.
    pub path_failed: bool,
}

/// How a command run by [`Ctx::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ran {
    Code(i32),
    /// Killed by a signal (not ours).
    Killed,
    /// Outlived its time limit; killed with its process group.
    TimedOut(Duration),
}

impl Ran {
    /// The exit code (None: killed).
    pub fn code(self) -> Option<i32> {
        match self {
            Ran::Code(c) => Some(c),
            Ran::Killed | Ran::TimedOut(_) => None,
        }
    }
}

/// SIGKILL `child`'s process group (it leads one) and reap it.
pub(crate) fn kill_group(child: &mut Child) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// How to activate: taken from the apply options, or from a pending
/// journal entry when a recovery redoes an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub kind: ApplyKind,
    /// As asked (nix-darwin always activates as for `switch`).
    pub action: Action,
    /// `--trial`: `test`, health check, then generation and `boot`.
    pub trial: bool,
    pub install_bootloader: bool,
    pub no_rollback: bool,
    pub rollback_on: Vec<i32>,
    pub health_check: Option<String>,
    pub health_timeout: Duration,
    pub activation_timeout: Option<Duration>,
    /// `--trial --reboot if-needed`: a needed reboot is a trial boot
    /// (boot/); None: commit, then reboot.
    pub boot: Option<crate::boot::BootTrial>,
}

impl Settings {
    pub fn of(opts: &ApplyOpts) -> Settings {
        Settings {
            kind: opts.kind,
            action: opts.action,
            trial: opts.trial,
            install_bootloader: opts.install_bootloader,
            no_rollback: opts.no_rollback,
            rollback_on: opts.rollback_on.clone(),
            health_check: opts.health_check.clone(),
            health_timeout: opts.health_timeout,
            activation_timeout: opts.activation_timeout,
            boot: None,
        }
    }

    /// The settings a pending attempt was started with (None: its kind or
    /// action is not one fh-lite knows, so the entry is not ours to redo).
    pub fn of_pending(p: &Pending) -> Option<Settings> {
        Some(Settings {
            kind: ApplyKind::parse(&p.kind).ok()?,
            action: Action::parse(&p.action).ok()?,
            trial: p.trial,
            install_bootloader: p.install_bootloader,
            no_rollback: p.no_rollback,
            rollback_on: p.rollback_on.clone(),
            health_check: p.health_check.clone(),
            health_timeout: Duration::from_secs(p.health_timeout.max(1)),
            activation_timeout: p.activation_timeout.map(Duration::from_secs),
            boot: None,
        })
    }

    /// Fill a journal entry's "how to redo it" fields.
    pub fn record(&self, p: &mut Pending) {
        p.kind = self.kind.as_str().to_string();
        p.action = self.action.as_str().to_string();
        p.trial = self.trial;
        p.install_bootloader = self.install_bootloader;
        p.no_rollback = self.no_rollback;
        p.rollback_on = self.rollback_on.clone();
        p.health_check = self.health_check.clone();
        p.health_timeout = self.health_timeout.as_secs();
        p.activation_timeout = self.activation_timeout.map(|t| t.as_secs());
    }
}

/// The system before an attempt, read before anything changes and kept in
/// the journal: what a rollback returns to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Before {
    /// The profile's current generation.
    pub generation: Option<u64>,
    /// `/run/current-system`'s target (under `--root`).
    pub system: Option<String>,
}

impl Before {
    pub fn read(machine: &Machine) -> Result<Before, Error> {
        let ctx = Ctx::new(machine);
        Ok(Before {
            generation: ctx.profile.current()?,
            system: ctx.current_system(),
        })
    }
}

/// Where the command records each phase before its step starts
/// (state.json's `pending`); activation calls it, the command decides
/// what is written.
pub trait Journal {
    /// Entering `phase`; `generation`: the attempt's generation, once known.
    fn phase(&mut self, phase: Phase, generation: Option<u64>) -> Result<(), Error>;
    /// Hand the attempt over to a trial boot's journal entry (Some), or
    /// clear that entry (None) when the trial boot was undone at once.
    fn trial_boot(&mut self, t: Option<&crate::boot::TrialBoot>) -> Result<(), Error>;
}

/// No journal (tests of the activation layer alone).
#[cfg(test)]
pub struct NoJournal;

#[cfg(test)]
impl Journal for NoJournal {
    fn phase(&mut self, _: Phase, _: Option<u64>) -> Result<(), Error> {
        Ok(())
    }
    fn trial_boot(&mut self, _: Option<&crate::boot::TrialBoot>) -> Result<(), Error> {
        Ok(())
    }
}

/// Everything activation needs about the machine: root, profile, output.
pub(crate) struct Ctx<'a> {
    pub root: Option<&'a Path>,
    pub profile: Profile,
    /// Where the journal is: a running script is recorded there ([`orphan`]).
    pub state: crate::state::StateDir,
    /// The environment of what runs ([`crate::exec`]): the minimal one,
    /// or the calling user's for Home Manager.
    pub env: Env,
}

impl<'a> Ctx<'a> {
    pub fn new(machine: &'a Machine) -> Ctx<'a> {
        let root = machine.root();
        Ctx {
            root,
            profile: Profile::new(&machine.profile, root),
            state: machine.state(),
            env: Env::System,
        }
    }

    /// A path as the managed system sees it → this machine's filesystem.
    pub fn real(&self, logical: &Path) -> PathBuf {
        crate::rootfs::real(self.root, logical)
    }

    /// The profile path as the managed system sees it (the program path for
    /// generation links when chrooted).
    pub fn logical(&self, real: &Path) -> PathBuf {
        crate::rootfs::logical(self.root, real)
    }

    /// A progress line on stderr ([`crate::ui::say`]).
    pub fn say(&self, msg: &str) {
        crate::ui::say(msg);
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
    /// Started through [`crate::exec`]: `chroot` found on the sanitised
    /// PATH, the minimal environment ([`Ctx::env`]), stdin /dev/null
    /// (never fh-lite's own: under `--from -` that is the bundle pipe).
    /// Inside the root the PATH is [`crate::exec::DEFAULT_PATH`]: this
    /// machine's directories say nothing about the root's.
    pub fn command(&self, program: &Path) -> Result<Command, ActivateError> {
        self.check_can_run()?;
        let spawn = |program: &Path, err| ActivateError::Spawn {
            program: program.display().to_string(),
            err,
        };
        Ok(match self.root {
            Some(r) => {
                let mut c = crate::exec::command("chroot", self.env)
                    .map_err(|e| spawn(Path::new("chroot"), e))?;
                c.arg(r).arg(program).env("PATH", crate::exec::DEFAULT_PATH);
                c
            }
            None => crate::exec::command(program, self.env).map_err(|e| spawn(program, e))?,
        })
    }

    /// `program` chrooted into the root as `nixos-install` runs the boot
    /// loader's installation: with `/dev`, `/proc` and `/sys` of this
    /// machine mounted in the root. The mounts are made by `unshare` in a
    /// private mount namespace of the command's own, so they vanish with
    /// it on every path (exit, timeout kill, fh-lite killed) and neither
    /// this machine nor the root ever sees them. Missing mount points are
    /// created (mode 0755); a symlink there is refused.
    fn command_with_mounts(&self, root: &Path, program: &Path) -> Result<Command, ActivateError> {
        use std::os::unix::fs::DirBuilderExt;
        self.check_can_run()?;
        for name in ["dev", "proc", "sys"] {
            let at = root.join(name);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(ActivateError::Io {
                        what: "mount point",
                        path: at,
                        err: std::io::Error::other(
                            "is not a directory (a symlink is not followed out of the root)",
                        ),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&at)
                    .map_err(|err| ActivateError::Io {
                        what: "create mount point",
                        path: at.clone(),
                        err,
                    })?,
                Err(err) => {
                    return Err(ActivateError::Io {
                        what: "mount point",
                        path: at,
                        err,
                    })
                }
            }
        }
        // Every program by the absolute path found on the sanitised PATH:
        // the one PATH the child has is the root's (DEFAULT_PATH).
        let find = |name: &str| {
            crate::exec::find(name).ok_or_else(|| ActivateError::Spawn {
                program: name.to_string(),
                err: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not on the PATH searched for programs run as root (-v names the entries left out)",
                ),
            })
        };
        let (sh, mount, chroot) = (find("sh")?, find("mount")?, find("chroot")?);
        let mut c =
            crate::exec::command("unshare", self.env).map_err(|err| ActivateError::Spawn {
                program: "unshare".into(),
                err,
            })?;
        c.args(["--mount", "--propagation", "private", "--"])
            .arg(sh)
            .arg("-c")
            .arg(
                "m=$1; c=$2; r=$3; shift 3; \"$m\" --rbind /dev \"$r/dev\" && \"$m\" -t proc proc \"$r/proc\" \
                 && \"$m\" --rbind /sys \"$r/sys\" && exec \"$c\" \"$r\" \"$@\"",
            )
            .arg("sh")
            .arg(mount)
            .arg(chroot)
            .arg(root)
            .arg(program)
            .env("PATH", crate::exec::DEFAULT_PATH);
        Ok(c)
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
        let real = crate::rootfs::resolve_in_root(self.root.unwrap_or(Path::new("/")), logical)
            .map_err(|_| bad("does not exist (is this store path the right kind of system?)"))?;
        let meta = std::fs::metadata(&real)
            .map_err(|_| bad("does not exist (is this store path the right kind of system?)"))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(bad("is not an executable file"));
        }
        Ok(())
    }

    /// The store path must exist under the root before anything changes.
    pub fn check_in_store(&self, store_path: &StorePath) -> Result<(), ActivateError> {
        let real = self.real(Path::new(&store_path.to_string()));
        match std::fs::symlink_metadata(&real) {
            Ok(_) => Ok(()),
            Err(_) => Err(ActivateError::NotInStore {
                path: store_path.to_string(),
                real,
            }),
        }
    }

    /// Run `program args` (inside the root with `--root`), its output on our
    /// stderr so stdout stays for results, in a process group of its own (a
    /// terminal's Ctrl-C reaches fh-lite only). With a `timeout`, a run that
    /// outlives it is killed with its whole group. While it runs, the
    /// journal holds it ([`orphan`]).
    pub fn run(
        &self,
        program: &Path,
        args: &[&str],
        install_bootloader: bool,
        timeout: Option<Duration>,
    ) -> Result<Ran, ActivateError> {
        use std::os::unix::process::CommandExt;
        let mut cmd = match self.root {
            Some(root) if install_bootloader => self.command_with_mounts(root, program)?,
            _ => self.command(program)?,
        };
        cmd.args(args)
            .stdout(Stdio::from(std::io::stderr()))
            .process_group(0);
        if install_bootloader {
            cmd.env("NIXOS_INSTALL_BOOTLOADER", "1");
        }
        let spawn_error = |err| ActivateError::Spawn {
            program: program.display().to_string(),
            err,
        };
        let mut child = cmd.spawn().map_err(spawn_error)?;
        let start = Instant::now();
        // In the journal while it runs: it outlives a killed fh-lite.
        orphan::started(self, program, args, child.id());
        let ran = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Ok(st.code().map_or(Ran::Killed, Ran::Code)),
                Ok(None) => {}
                Err(e) => break Err(spawn_error(e)),
            }
            if let Some(limit) = timeout.filter(|t| start.elapsed() >= *t) {
                kill_group(&mut child);
                break Ok(Ran::TimedOut(limit));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        orphan::finished(self);
        ran
    }

    /// `/run/current-system`'s target (under the root), if any.
    pub fn current_system(&self) -> Option<String> {
        std::fs::read_link(self.real(Path::new("/run/current-system")))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }
}

/// Activate `store_path` (already valid in the store under `--root`) for
/// `opts.kind`/`opts.action`. Fills `report` as it goes.
///
/// Ok: [`Exit::Success`] or [`Exit::RebootNeeded`]. Err carries the class:
/// `ActivationFailed`, `ActivationPartial` (exit 4 kept), `RolledBack`,
/// `RollbackFailed`, or a local error (`Store`, `Usage`, `Internal`). The
/// caller holds the state lock and records the outcome.
///
/// `before` is what a rollback returns to; `journal` records each phase
/// before its step.
pub fn activate(
    machine: &Machine,
    settings: &Settings,
    store_path: &StorePath,
    before: &Before,
    journal: &mut dyn Journal,
    report: &mut Report,
) -> Result<Exit, Error> {
    crate::signal::activation_begins();
    let mut ctx = Ctx::new(machine);
    if Flavor::of(settings.kind) == Flavor::HomeManager {
        // The calling user's session, not the minimal environment.
        ctx.env = Env::User;
    }
    match Flavor::of(settings.kind) {
        Flavor::HomeManager => home_manager::activate(&ctx, settings, store_path, journal, report),
        flavor => run::SystemRun::new(&ctx, settings, flavor, before)
            .activate(store_path, journal, report),
    }
}

/// Redo only the rollback of an attempt killed while rolling back
/// (recovery): back to `before`, recorded as failed.
pub fn redo_rollback(
    machine: &Machine,
    settings: &Settings,
    store_path: &StorePath,
    before: &Before,
    committed: bool,
    journal: &mut dyn Journal,
    report: &mut Report,
) -> Error {
    crate::signal::activation_begins();
    let mut ctx = Ctx::new(machine);
    if Flavor::of(settings.kind) == Flavor::HomeManager {
        // The calling user's session, not the minimal environment.
        ctx.env = Env::User;
    }
    match Flavor::of(settings.kind) {
        Flavor::HomeManager => {
            report.path_failed = true;
            Error::new(
                Exit::ActivationFailed,
                format!("{store_path}: a Home Manager rollback was interrupted and is not redone; run the previous generation's activate ('home-manager generations' lists them)"),
            )
        }
        flavor => run::SystemRun::new(&ctx, settings, flavor, before)
            .redo_rollback(store_path, committed, journal, report),
    }
}

/// What can be refused before anything is resolved, fetched or locked:
/// Home Manager under `--root`, and (unless `--dry-run`) a `--root`
/// activation that would have to chroot without being root. Without this
/// the closure would be fetched into the root first, only to be refused.
pub fn preflight(machine: &Machine, opts: &ApplyOpts) -> Result<(), Error> {
    let ctx = Ctx::new(machine);
    let flavor = Flavor::of(opts.kind);
    if flavor == Flavor::HomeManager && ctx.root.is_some() {
        return Err(ActivateError::HomeManagerRoot.into());
    }
    let action = flavor.action(opts.action);
    if !opts.dry_run && runs_commands(&ctx, action, opts.install_bootloader) {
        ctx.check_can_run()?;
    }
    // The health check (after switch and test) needs the root's /bin/sh:
    // checked now, before anything is fetched or activated.
    if let (Some(root), Some(_), false) = (ctx.root, &opts.health_check, opts.dry_run) {
        if matches!(action, Action::Switch | Action::Test) && !has_shell(root) {
            return Err(ActivateError::NoShell {
                root: root.to_path_buf(),
            }
            .into());
        }
    }
    Ok(())
}

/// Whether DIR/bin/sh is an executable file (symlinks followed inside DIR).
fn has_shell(root: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    crate::rootfs::resolve_in_root(root, Path::new("/bin/sh"))
        .and_then(std::fs::metadata)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether activating runs anything: everything does except `boot` under
/// `--root` without `--install-bootloader` (only the profile moves).
pub(crate) fn runs_commands(ctx: &Ctx, action: Action, install_bootloader: bool) -> bool {
    !(ctx.root.is_some() && action == Action::Boot && !install_bootloader)
}

/// True when `store_path` is already what this machine runs (the no-op
/// check): NixOS/nix-darwin — the profile's current generation points at
/// it and, for actions that activate now, so does `/run/current-system`
/// (under `--root` only when DIR/run/current-system exists); `boot` only
/// needs the profile; `test` only `/run/current-system`; `dry-activate`
/// is never "current". Home Manager: its own profile points at it.
pub fn is_current(machine: &Machine, opts: &ApplyOpts, store_path: &StorePath) -> bool {
    let ctx = Ctx::new(machine);
    let flavor = Flavor::of(opts.kind);
    let path = store_path.to_string();
    if flavor == Flavor::HomeManager {
        return home_manager::is_current(&path);
    }
    let profile_ok = || {
        matches!(ctx.profile.current_target(),
            Ok(Some(Generation { ref target, .. })) if *target == path)
    };
    let running_ok = || match ctx.current_system() {
        Some(t) => t == path,
        // Under --root an image may have no /run yet.
        None => ctx.root.is_some(),
    };
    match flavor.action(opts.action) {
        Action::Switch => profile_ok() && running_ok(),
        Action::Boot => profile_ok(),
        Action::Test => ctx.current_system() == Some(path),
        Action::DryActivate => false,
    }
}
