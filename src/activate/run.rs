//! Running a system's activation ([`SystemRun`]): the switch script, the
//! trial, the health check, and the automatic rollback after a failure.
//!
//! Automatic rollback re-points the profile at the *exact* generation that
//! was current before this run (read from the profile before anything
//! changed, not "N-1") and runs that generation's script with the same
//! action (`switch` → `switch`, `boot` → `boot`, `test` → `test`;
//! `dry-activate` changes nothing, so it never rolls back). It happens when
//! the script exits with a code in `--rollback-on`, or when `--health-check
//! CMD` fails or outlives `--health-timeout` (it is then killed with its
//! whole process group), unless `--no-rollback`.
//!
//! The health check runs as `/bin/sh -c CMD` on this machine, or chrooted
//! into DIR with `--root DIR` (where `/bin/sh` is the system's). It runs
//! after `switch` and `test`; after `boot` nothing new is running, so it is
//! skipped with a notice.
//!
//! The `fh-lite rollback` command is switch_back.rs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::flavor::{Flavor, Verdict};
use super::profiles::Generation;
use super::{ActivateError, Before, Ctx, Journal, Ran, Report, Settings};
use crate::error::{Error, Exit};
use crate::nix::store_path::StorePath;
use crate::options::Action;
use crate::state::Phase;

/// Run the health check; Err is the sentence saying why it failed.
pub(crate) fn health_check(ctx: &Ctx, cmd: &str, timeout: Duration) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut c = ctx
        .command(Path::new("/bin/sh"))
        .map_err(|e| format!("health check '{cmd}': {e}"))?;
    c.arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        // Its own process group, so a timeout kills what it started too
        // (and a terminal's Ctrl-C does not reach it).
        .process_group(0);
    let mut child = c
        .spawn()
        .map_err(|e| format!("health check '{cmd}': run /bin/sh: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let status = st.code().map_or("was killed by a signal".to_string(), |c| {
                    format!("exited {c}")
                });
                return Err(format!("health check '{cmd}' {status}"));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("health check '{cmd}': wait: {e}")),
        }
        if start.elapsed() >= timeout {
            super::kill_group(&mut child);
            return Err(format!(
                "health check '{cmd}' did not finish within {} s (killed)",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Write a phase during a rollback: a failed write must not stop the
/// rollback, so it is only reported.
fn journal_or_warn(journal: &mut dyn Journal, phase: Phase) {
    if let Err(e) = journal.phase(phase, None) {
        crate::ui::warn(&e.to_string());
    }
}

/// One NixOS or nix-darwin activation: what it runs, and what it rolls
/// back to.
pub(crate) struct SystemRun<'a> {
    ctx: &'a Ctx<'a>,
    s: &'a Settings,
    flavor: Flavor,
    action: Action,
    before: &'a Before,
}

impl<'a> SystemRun<'a> {
    pub fn new(
        ctx: &'a Ctx<'a>,
        s: &'a Settings,
        flavor: Flavor,
        before: &'a Before,
    ) -> SystemRun<'a> {
        SystemRun {
            ctx,
            s,
            flavor,
            action: flavor.action(s.action),
            before,
        }
    }

    /// Generation, profile, script, status, health check, rollback; each
    /// phase journaled before its step.
    pub fn activate(
        &self,
        store_path: &StorePath,
        journal: &mut dyn Journal,
        report: &mut Report,
    ) -> Result<Exit, Error> {
        let runs = self.check_before_changes(store_path)?;
        report.previous_generation = self.before.generation;
        if self.s.trial && self.flavor == Flavor::NixOs && self.action == Action::Switch {
            return self.trial(store_path, journal, report);
        }
        let base = if self.action.makes_generation() {
            journal.phase(Phase::Profile, None)?;
            self.make_generation(store_path, report)?
        } else {
            PathBuf::from(store_path.to_string())
        };
        if !runs {
            self.say_boot_loader_not_updated(report.generation.unwrap_or(0));
            return Ok(Exit::Success);
        }
        journal.phase(Phase::Activating, report.generation)?;
        let exit = self.run_script(&base, self.action, store_path, journal, report)?;
        self.check_health(store_path, self.action, journal, report)?;
        self.say_done(store_path, exit, self.action, &base);
        Ok(exit)
    }

    /// `--trial`: `<path>/bin/switch-to-configuration test`, the health
    /// check, and only when both passed the generation and `boot`. Until
    /// then the profile is untouched, so a failure (or a power cut) leaves
    /// the old system the boot default.
    fn trial(
        &self,
        store_path: &StorePath,
        journal: &mut dyn Journal,
        report: &mut Report,
    ) -> Result<Exit, Error> {
        let ctx = self.ctx;
        // A new kernel, initrd or modules: its userspace is not tried on
        // the running kernel; it is booted once instead (boot/).
        let new_kernel = || crate::boot::kernel_differs_at(ctx.root, &store_path.to_string());
        if let Some(loader) = self
            .s
            .boot
            .as_ref()
            .filter(|_| new_kernel())
            .and_then(|b| self.one_shot(b))
        {
            return self.trial_boot(&loader, store_path, journal, report);
        }
        journal.phase(Phase::Activating, None)?;
        let base = PathBuf::from(store_path.to_string());
        let exit = self.run_script(&base, Action::Test, store_path, journal, report)?;
        self.check_health(store_path, Action::Test, journal, report)?;
        if exit == Exit::RebootNeeded {
            self.say_done(store_path, exit, Action::Test, &base);
            if let Some(loader) = self.s.boot.as_ref().and_then(|b| self.one_shot(b)) {
                return self.trial_boot(&loader, store_path, journal, report);
            }
        }
        journal.phase(Phase::Committing, None)?;
        let link = self.make_generation(store_path, report)?;
        journal.phase(Phase::Committing, report.generation)?;
        if !super::runs_commands(ctx, Action::Boot, self.s.install_bootloader) {
            self.say_boot_loader_not_updated(report.generation.unwrap_or(0));
        } else {
            let script = link.join(self.flavor.script());
            let args = self.flavor.args(Action::Boot);
            let what = format!("{} {}", script.display(), args.join(" "));
            let ran = ctx.run(
                &script,
                &args,
                self.s.install_bootloader,
                self.s.activation_timeout,
            )?;
            report.script_status = ran.code();
            if self.flavor.success(ran.code()).is_none() {
                let why = format!("{what} {}", self.describe(ran));
                return Err(self.roll_back(store_path, &why, Action::Switch, journal, report));
            }
        }
        if exit != Exit::RebootNeeded {
            self.say_done(store_path, exit, Action::Switch, &base);
        }
        Ok(exit)
    }

    /// The one-shot boot a trial boot uses; None (said in one line) when
    /// there is none here: then the trial commits and reboots as before.
    fn one_shot(&self, b: &crate::boot::BootTrial) -> Option<crate::boot::Loader> {
        match crate::boot::detect(b.choice, &b.at) {
            crate::boot::Detected::Loader(l) => Some(l),
            crate::boot::Detected::Unsupported(why) => {
                crate::ui::warn(&format!(
                    "no trial boot: {why}; the new system becomes the boot default before it has booted"
                ));
                None
            }
        }
    }

    /// A trial boot ([`crate::boot`]): pin the running entry, make the
    /// generation and its entries, arm the one-shot, each journaled
    /// first; the command then reboots. A failed step is undone at once
    /// (profile back, the old generation's `boot`, pin removed).
    fn trial_boot(
        &self,
        loader: &crate::boot::Loader,
        store_path: &StorePath,
        journal: &mut dyn Journal,
        report: &mut Report,
    ) -> Result<Exit, Error> {
        use crate::boot::{Steps, TrialBoot};
        let ctx = self.ctx;
        let mut t = TrialBoot {
            store_path: store_path.to_string(),
            previous_generation: self.before.generation,
            previous_system: crate::boot::booted_system(ctx.root),
            efivars: (self.s.boot.as_ref())
                .and_then(|b| b.at.efivars.as_ref())
                .map(|p| p.display().to_string()),
            firmware_dir: (self.s.boot.as_ref())
                .and_then(|b| b.at.firmware.as_ref())
                .map(|p| p.display().to_string()),
            health_check: self.s.health_check.clone(),
            health_timeout: self.s.health_timeout.as_secs(),
            activation_timeout: self.s.activation_timeout.map(|d| d.as_secs()),
            install_bootloader: self.s.install_bootloader,
            boot_id: crate::boot::boot_id(),
            time: crate::util::unix_now(),
            ..TrialBoot::default()
        };
        struct Run<'r, 'a> {
            run: &'r SystemRun<'a>,
            store_path: &'r StorePath,
            journal: &'r mut dyn Journal,
            report: &'r mut Report,
        }
        impl Steps for Run<'_, '_> {
            fn journal(&mut self, t: &TrialBoot) -> Result<(), Error> {
                self.journal.trial_boot(Some(t))
            }
            fn boot_entries(&mut self, by_running: bool) -> Result<u64, Error> {
                let r = self.run;
                let mut link = r.make_generation(self.store_path, self.report)?;
                let n = self.report.generation.unwrap_or(0);
                if !super::runs_commands(r.ctx, Action::Boot, r.s.install_bootloader) {
                    r.say_boot_loader_not_updated(n);
                    return Ok(n);
                }
                if by_running {
                    // The running generation writes the entries: the new
                    // one is listed, the default stays the running one
                    // (the new generation's `boot` runs at the commit).
                    let Some(prev) = r.before.generation else {
                        return Err(Error::new(
                            Exit::ActivationFailed,
                            "a trial boot needs the running generation's boot script, but the profile had no generation before",
                        ));
                    };
                    link = r.ctx.logical(&r.ctx.profile.link_path(prev));
                }
                let script = link.join(r.flavor.script());
                let args = r.flavor.args(Action::Boot);
                let ran = r.ctx.run(
                    &script,
                    &args,
                    r.s.install_bootloader,
                    r.s.activation_timeout,
                )?;
                self.report.script_status = ran.code();
                if r.flavor.success(ran.code()).is_none() {
                    self.report.path_failed = true;
                    return Err(Error::new(
                        Exit::ActivationFailed,
                        format!(
                            "{} {} {}",
                            script.display(),
                            args.join(" "),
                            r.describe(ran)
                        ),
                    ));
                }
                Ok(n)
            }
        }
        let mut steps = Run {
            run: self,
            store_path,
            journal,
            report,
        };
        match crate::boot::prepare(loader, &mut t, &mut steps) {
            Ok(()) => {
                let entry = t.entry.clone().unwrap_or_default();
                ctx.say(&format!(
                    "trial boot: {store_path} boots once as {} entry {entry}; the boot default stays {} until it booted and passed its health check",
                    loader.name(),
                    t.pinned.as_deref().unwrap_or("the running entry")
                ));
                steps.report.trial_boot = Some(t);
                Ok(Exit::RebootNeeded)
            }
            Err(e) => {
                // Undone now: nothing of the trial boot outlives this run.
                let undo = super::trial_boot::undo_now(ctx, loader, &t);
                if let Err(u) = undo.and_then(|()| steps.journal.trial_boot(None)) {
                    crate::ui::warn(&format!("undoing the trial boot: {}", u.message));
                }
                steps.report.rolled_back_to = self.before.generation;
                Err(e)
            }
        }
    }

    /// `boot` under `--root` without `--install-bootloader`: only the
    /// profile moved. One warning (so also with --quiet) says that the
    /// image's boot loader does not know the generation, and what to run.
    fn say_boot_loader_not_updated(&self, generation: u64) {
        let ctx = self.ctx;
        let root = ctx.root.unwrap_or(Path::new("/")).display();
        let script = ctx.logical(&ctx.profile.path).join(self.flavor.script());
        crate::ui::warn(&format!(
            "--root {root}: the profile's default is now generation {generation}, but the \
boot loader was not updated (nothing was run in {root}), so the image still boots what its boot \
loader knew; to update it, run this again as root with --install-bootloader, or run: nixos-enter \
--root {root} -c 'NIXOS_INSTALL_BOOTLOADER=1 {} boot'",
            script.display()
        ));
    }

    /// The closing line; `base`: where the script that ran lives.
    fn say_done(&self, store_path: &StorePath, exit: Exit, action: Action, base: &Path) {
        if exit == Exit::RebootNeeded {
            let script = base.join(self.flavor.script());
            let args = self.flavor.args(action).join(" ");
            self.ctx.say(&format!(
                "{} {args} exited 100: reboot for {store_path} to take full effect",
                script.display()
            ));
        } else {
            let how = if self.s.trial { " after a trial" } else { "" };
            self.ctx.say(&format!(
                "activated {store_path} ({}{how})",
                action.as_str()
            ));
        }
    }

    /// How a script run ended, in words.
    fn describe(&self, ran: Ran) -> String {
        match ran {
            Ran::TimedOut(t) => format!(
                "did not finish within {} s (--activation-timeout; killed)",
                t.as_secs()
            ),
            other => self.flavor.describe(other.code()),
        }
    }

    /// Run `<base>/<script> ACTION` and judge its status: Ok (success or
    /// reboot needed), or the error after rolling back or keeping it.
    fn run_script(
        &self,
        base: &Path,
        action: Action,
        store_path: &StorePath,
        journal: &mut dyn Journal,
        report: &mut Report,
    ) -> Result<Exit, Error> {
        let ctx = self.ctx;
        let (script, args) = (base.join(self.flavor.script()), self.flavor.args(action));
        let what = format!("{} {}", script.display(), args.join(" "));
        let ran = ctx.run(
            &script,
            &args,
            self.s.install_bootloader,
            self.s.activation_timeout,
        )?;
        report.script_status = ran.code();
        let why = format!("{what} {}", self.describe(ran));
        let verdict = match ran {
            Ran::Code(code) => self
                .flavor
                .classify(code, &self.s.rollback_on, self.s.no_rollback),
            Ran::TimedOut(_) if !self.s.no_rollback => Verdict::RollBack,
            Ran::TimedOut(_) => Verdict::Kept(Exit::ActivationFailed),
            Ran::Killed => {
                report.path_failed = true;
                return Err(Error::new(
                    Exit::ActivationFailed,
                    format!("{what} was killed by a signal; not rolled back (state unknown)"),
                ));
            }
        };
        match verdict {
            Verdict::RollBack if action == Action::DryActivate => Err(Error::new(
                Exit::ActivationFailed,
                format!("{why} (dry-activate changes nothing; no rollback needed)"),
            )),
            Verdict::RollBack => Err(self.roll_back(store_path, &why, action, journal, report)),
            Verdict::Kept(exit) => {
                report.path_failed = action != Action::DryActivate;
                let reason = if self.s.no_rollback {
                    "--no-rollback"
                } else {
                    "not in --rollback-on"
                };
                Err(Error::new(exit, format!("{why}; kept ({reason})")))
            }
            Verdict::Ok(exit) => Ok(exit),
        }
    }

    /// Check everything we can before the profile changes; true when the
    /// activation runs commands.
    fn check_before_changes(&self, store_path: &StorePath) -> Result<bool, ActivateError> {
        let ctx = self.ctx;
        ctx.check_in_store(store_path)?;
        ctx.check_executable(&Path::new(&store_path.to_string()).join(self.flavor.script()))?;
        let runs = super::runs_commands(ctx, self.action, self.s.install_bootloader);
        if runs {
            ctx.check_can_run()?;
        }
        Ok(runs)
    }

    /// Create (or reuse) the generation and switch the profile to it; the
    /// base of the script to run (the generation link).
    fn make_generation(
        &self,
        store_path: &StorePath,
        report: &mut Report,
    ) -> Result<PathBuf, ActivateError> {
        let ctx = self.ctx;
        let g = ctx.profile.create_generation(&store_path.to_string())?;
        ctx.profile.switch_to(g.number)?;
        report.generation = Some(g.number);
        ctx.say(&format!(
            "profile {} is now generation {} ({store_path})",
            ctx.profile.path.display(),
            g.number
        ));
        Ok(ctx.logical(&g.link))
    }

    /// After a successful script: the health check (when asked for and the
    /// action activates something now); Err when it failed.
    fn check_health(
        &self,
        store_path: &StorePath,
        action: Action,
        journal: &mut dyn Journal,
        report: &mut Report,
    ) -> Result<(), Error> {
        let Some(cmd) = &self.s.health_check else {
            return Ok(());
        };
        if !matches!(action, Action::Switch | Action::Test) {
            self.ctx.say(&format!(
                "health check skipped: '{}' activates nothing now",
                action.as_str()
            ));
            return Ok(());
        }
        journal.phase(Phase::HealthCheck, report.generation)?;
        let Err(why) = health_check(self.ctx, cmd, self.s.health_timeout) else {
            return Ok(());
        };
        report.health_check_failed = true;
        if self.s.no_rollback {
            report.path_failed = true;
            return Err(Error::new(
                Exit::ActivationFailed,
                format!("{why}; kept (--no-rollback)"),
            ));
        }
        Err(self.roll_back(store_path, &why, action, journal, report))
    }

    /// Recovery of an attempt killed during its rollback: do it again.
    /// `committed`: a trial had already made its generation.
    pub fn redo_rollback(
        &self,
        store_path: &StorePath,
        committed: bool,
        journal: &mut dyn Journal,
        report: &mut Report,
    ) -> Error {
        report.previous_generation = self.before.generation;
        let action = match (self.s.trial, committed) {
            (true, false) => Action::Test,
            (true, true) => Action::Switch,
            (false, _) => self.action,
        };
        let why = format!("{store_path}: the attempt was killed while rolling back");
        self.roll_back(store_path, &why, action, journal, report)
    }

    /// Return to the system that ran before the attempt (`before.system`,
    /// else the profile's previous generation). `action`: how the failed
    /// system was activated; `test` (and a trial before its commit) never
    /// moves the profile and re-activates the old system with `test`;
    /// `switch`/`boot` point the profile back at the generation of the old
    /// system and run its script with the same action. Returns the error
    /// to report: RolledBack, RollbackFailed, or ActivationFailed when
    /// there was nothing to roll back to.
    fn roll_back(
        &self,
        store_path: &StorePath,
        why: &str,
        action: Action,
        journal: &mut dyn Journal,
        report: &mut Report,
    ) -> Error {
        report.path_failed = true;
        let ctx = self.ctx;
        let prev_gen = (self.before.generation).and_then(|n| ctx.profile.generation(n).ok());
        let gens = ctx.profile.generations().unwrap_or_default();
        let before = self.before.system.as_deref();
        let back = decide_rollback(before, prev_gen.as_ref(), &gens, store_path, action);
        self.go_back(back, why, action, journal, report)
    }

    /// Carry out a [`Back`] decision; the error to report.
    fn go_back(
        &self,
        back: Back,
        why: &str,
        action: Action,
        journal: &mut dyn Journal,
        report: &mut Report,
    ) -> Error {
        let profile = self.ctx.profile.path.display().to_string();
        match back {
            Back::Nothing => {
                let stays = match report.generation {
                    Some(n) => format!("; it stays at generation {n}"),
                    None => String::new(),
                };
                Error::new(
                    Exit::ActivationFailed,
                    format!(
                        "{why}; nothing to roll back to: profile {profile} had no generation before this one{stays}"
                    ),
                )
            }
            Back::SamePath { what } => Error::new(
                Exit::ActivationFailed,
                format!("{why}; nothing to roll back to: {what} was already this path"),
            ),
            Back::Retest { target, gen } => {
                journal_or_warn(journal, Phase::RollingBack);
                self.retest(&target, gen.as_ref(), why, report)
            }
            Back::Unlinked { target, prev } => {
                journal_or_warn(journal, Phase::RollingBack);
                self.reactivate_unlinked(&target, prev.as_ref(), why, report)
            }
            Back::Switch { target, gen } => {
                journal_or_warn(journal, Phase::RollingBack);
                self.switch_back(&gen, &target, why, action, report)
            }
        }
    }

    /// The profile never moved: activate the old system again with `test`
    /// (through its generation when it has one).
    fn retest(
        &self,
        target: &str,
        gen: Option<&Generation>,
        why: &str,
        report: &mut Report,
    ) -> Error {
        let (base, to) = match gen {
            Some(g) => (
                self.ctx.logical(&g.link),
                format!("generation {} ({target})", g.number),
            ),
            None => (PathBuf::from(target), format!("{target} (test)")),
        };
        report.rolled_back_to = gen.map(|g| g.number);
        self.ctx.say(&format!("{why}; rolling back to {to}"));
        self.restore(&base, Action::Test, why, &to)
    }

    /// No generation runs the old system: keep the profile as before the
    /// attempt and activate the old system now without making it the boot
    /// default.
    fn reactivate_unlinked(
        &self,
        target: &str,
        prev_gen: Option<&Generation>,
        why: &str,
        report: &mut Report,
    ) -> Error {
        let ctx = self.ctx;
        let profile = ctx.profile.path.display().to_string();
        let kept = match prev_gen {
            Some(g) => match ctx.profile.switch_to(g.number) {
                Ok(()) => {
                    report.rolled_back_to = Some(g.number);
                    format!("the profile is back at generation {}", g.number)
                }
                Err(e) => format!("the profile could not be put back: {e}"),
            },
            None => "the profile had no generation before".to_string(),
        };
        ctx.say(&format!(
            "{why}; no generation of profile {profile} points at the system that ran before ({target}); {kept}; re-activating {target} with 'test'"
        ));
        let base = PathBuf::from(target);
        self.restore(
            &base,
            Action::Test,
            why,
            &format!("{target} (test; {kept})"),
        )
    }

    /// Point the profile at `gen`, the old system's generation, and run its
    /// script with the attempt's action.
    fn switch_back(
        &self,
        gen: &Generation,
        target: &str,
        why: &str,
        action: Action,
        report: &mut Report,
    ) -> Error {
        let ctx = self.ctx;
        let profile = ctx.profile.path.display().to_string();
        let n = gen.number;
        if let Err(e) = ctx.profile.switch_to(n) {
            return Error::new(
                Exit::RollbackFailed,
                format!("{why}; rolling back to generation {n} failed too: {e}"),
            );
        }
        report.rolled_back_to = Some(n);
        if !super::runs_commands(ctx, action, self.s.install_bootloader) {
            return Error::new(
                Exit::RolledBack,
                format!("{why}; rolled back: profile {profile} is generation {n} again ({target})"),
            );
        }
        ctx.say(&format!("{why}; rolling back to generation {n} ({target})"));
        let base = ctx.logical(&gen.link);
        self.restore(&base, action, why, &format!("generation {n} ({target})"))
    }

    /// Run `<base>/<script> ACTION` to restore the old system: RolledBack
    /// when it succeeds, RollbackFailed when not.
    fn restore(&self, base: &Path, action: Action, why: &str, to: &str) -> Error {
        let ctx = self.ctx;
        let script = base.join(self.flavor.script());
        let args = self.flavor.args(action);
        let failed = |detail: String| {
            Error::new(
                Exit::RollbackFailed,
                format!(
                    "{why}; rolling back to {to} failed too: {detail}; the system needs attention"
                ),
            )
        };
        match ctx.run(
            &script,
            &args,
            self.s.install_bootloader,
            self.s.activation_timeout,
        ) {
            Ok(ran) if self.flavor.success(ran.code()).is_some() => {
                Error::new(Exit::RolledBack, format!("{why}; rolled back to {to}"))
            }
            Ok(ran) => failed(format!(
                "{} {} {}",
                script.display(),
                args.join(" "),
                self.describe(ran)
            )),
            Err(e) => failed(e.to_string()),
        }
    }
}

/// Where a failed attempt goes back to, decided before anything changes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Back {
    /// No system ran before this one.
    Nothing,
    /// The system before was this very path (`--force` on the current
    /// one); `what` names it.
    SamePath { what: String },
    /// The profile never moved (`test`, `dry-activate`): activate the old
    /// system `target` again with `test`, through its generation when it
    /// has one.
    Retest {
        target: String,
        gen: Option<Generation>,
    },
    /// No generation points at the old system: put the profile back at the
    /// generation current before (`prev`, if any) and activate `target`
    /// with `test`.
    Unlinked {
        target: String,
        prev: Option<Generation>,
    },
    /// Point the profile at `gen` (the old system's) and run its script
    /// with the attempt's action.
    Switch { target: String, gen: Generation },
}

/// The decision of [`SystemRun::roll_back`], pure: from the system that
/// ran before the attempt (`before`, else the target of `prev_gen`, the
/// generation current before), the profile's generations, the path of the
/// attempt and its action.
fn decide_rollback(
    before: Option<&str>,
    prev_gen: Option<&Generation>,
    gens: &[Generation],
    store_path: &StorePath,
    action: Action,
) -> Back {
    let Some(target) = before
        .map(String::from)
        .or_else(|| prev_gen.map(|g| g.target.clone()))
    else {
        return Back::Nothing;
    };
    if target == store_path.to_string() {
        // --force on the current path: "before" was this very path.
        let what = match prev_gen {
            Some(g) if g.target == target => format!("generation {}", g.number),
            _ => target,
        };
        return Back::SamePath { what };
    }
    // The generation pointing at the old system: the one current before
    // when it does, else the newest that does (after a `boot`, the
    // profile was ahead of the running system).
    let gen = (prev_gen.filter(|g| g.target == target))
        .or_else(|| gens.iter().rev().find(|g| g.target == target))
        .cloned();
    if action == Action::Test || !action.makes_generation() {
        return Back::Retest { target, gen };
    }
    match gen {
        Some(gen) => Back::Switch { target, gen },
        None => Back::Unlinked {
            target,
            prev: prev_gen.cloned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;
    use crate::options::{ApplyKind, ApplyOpts};
    use crate::testutil::{chroot_root, fake_system, log, machine, opts, TempDir};

    const STC: &str = "bin/switch-to-configuration";

    #[test]
    fn the_rollback_decision_follows_what_ran_before() {
        let a = "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-nixos-system-a";
        let b = "/nix/store/2f4jdx0pw3kv6n3bq4mqdbxbgs0gsnwc-nixos-system-b";
        let new = sp("/nix/store/hx0r4kb1fw3qh0bb8ckx5iwr32wdcqcg-nixos-system-new");
        let gen = |number: u64, target: &str| Generation {
            number,
            link: PathBuf::from(format!("/nix/var/nix/profiles/system-{number}-link")),
            target: target.to_string(),
        };
        let (g1, g2) = (gen(1, a), gen(2, b));
        let gens = [g1.clone(), g2.clone()];
        let decide = |before: Option<&str>, prev: Option<&Generation>, action| {
            decide_rollback(before, prev, &gens, &new, action)
        };
        // A first install: nothing ran before.
        assert_eq!(decide(None, None, Action::Switch), Back::Nothing);
        // --force on the current path.
        let current = gen(3, &new.to_string());
        assert_eq!(
            decide(None, Some(&current), Action::Switch),
            Back::SamePath {
                what: "generation 3".to_string()
            }
        );
        assert_eq!(
            decide(Some(&new.to_string()), Some(&g2), Action::Switch),
            Back::SamePath {
                what: new.to_string()
            }
        );
        // The generation current before runs the old system: back to it,
        // with the attempt's action.
        assert_eq!(
            decide(Some(b), Some(&g2), Action::Boot),
            Back::Switch {
                target: b.to_string(),
                gen: g2.clone()
            }
        );
        // After a `boot` the profile was ahead of the running system: the
        // newest generation that runs it.
        assert_eq!(
            decide(Some(a), Some(&g2), Action::Switch),
            Back::Switch {
                target: a.to_string(),
                gen: g1.clone()
            }
        );
        // `test` and `dry-activate` never moved the profile.
        for action in [Action::Test, Action::DryActivate] {
            assert_eq!(
                decide(Some(b), Some(&g2), action),
                Back::Retest {
                    target: b.to_string(),
                    gen: Some(g2.clone())
                }
            );
        }
        // No generation runs the old system: the profile goes back to the
        // one current before, and the old system is re-activated with test.
        let other = "/nix/store/0c8z7c3x4yq4x9z2zq4l7y9hxm3pfq3b-nixos-system-o";
        assert_eq!(
            decide(Some(other), Some(&g2), Action::Switch),
            Back::Unlinked {
                target: other.to_string(),
                prev: Some(g2.clone())
            }
        );
        // Without the running system, the generation current before is it.
        assert_eq!(
            decide(None, Some(&g2), Action::Switch),
            Back::Switch {
                target: b.to_string(),
                gen: g2.clone()
            }
        );
    }

    fn sp(p: &str) -> StorePath {
        StorePath::parse(p).unwrap()
    }

    fn profile_target(root: &Path) -> String {
        std::fs::read_link(root.join("nix/var/nix/profiles/system"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Apply `path` and return (exit class, message, report).
    fn apply(c: &Machine, o: &ApplyOpts, path: &str) -> (Exit, String, Report) {
        let mut r = Report::default();
        let before = Before::read(c).unwrap();
        let s = Settings::of(o);
        let mut j = super::super::NoJournal;
        match crate::activate::activate(c, &s, &sp(path), &before, &mut j, &mut r) {
            Ok(e) => (e, String::new(), r),
            Err(e) => (e.exit, e.message, r),
        }
    }

    #[test]
    fn switch_creates_generation_and_runs_its_script() {
        let t = TempDir::new("act-switch");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 100);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        let (exit, msg, r) = apply(&c, &o, &a);
        assert_eq!((exit, msg.as_str()), (Exit::Success, ""));
        assert_eq!(r.generation, Some(1));
        assert_eq!(r.previous_generation, None);
        assert_eq!(profile_target(&root), "system-1-link");
        let mut o2 = o.clone();
        o2.install_bootloader = true;
        let (exit, _, r) = apply(&c, &o2, &b);
        assert_eq!(exit, Exit::RebootNeeded, "exit 100 → RebootNeeded");
        assert_eq!((r.generation, r.previous_generation), (Some(2), Some(1)));
        assert_eq!(
            log(&root),
            "/nix/var/nix/profiles/system-1-link/bin/switch-to-configuration switch bootloader=\n\
             /nix/var/nix/profiles/system-2-link/bin/switch-to-configuration switch bootloader=1\n"
        );
    }

    #[test]
    fn test_and_dry_activate_make_no_generation() {
        let t = TempDir::new("act-test");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        for action in [Action::Test, Action::DryActivate] {
            let (exit, _, r) = apply(&c, &opts(ApplyKind::Nixos, action), &a);
            assert_eq!(exit, Exit::Success);
            assert_eq!(r.generation, None);
        }
        assert!(!root.join("nix/var/nix/profiles/system").exists());
        assert_eq!(
            log(&root),
            format!("{a}/{STC} test bootloader=\n{a}/{STC} dry-activate bootloader=\n")
        );
    }

    #[test]
    fn failing_switch_rolls_back_to_the_exact_previous_generation() {
        let t = TempDir::new("act-rollback");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 0);
        let bad = fake_system(&root, "sys-bad", STC, 4);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        for p in [&a, &b, &a] {
            assert_eq!(apply(&c, &o, p).0, Exit::Success);
        }
        // Generations 1 (a), 2 (b), 3 (a); switch back to 2 by hand, so
        // "previous" (2) is not "highest - 1" of the new one (4).
        Ctx::new(&c).profile.switch_to(2).unwrap();
        std::fs::remove_file(root.join("activation.log")).unwrap();

        let (exit, msg, r) = apply(&c, &o, &bad);
        assert_eq!(exit, Exit::RolledBack, "{msg}");
        assert_eq!(
            msg,
            format!("/nix/var/nix/profiles/system-4-link/{STC} switch exited 4 (some units failed to stop, start, reload or restart); rolled back to generation 2 ({b})")
        );
        assert_eq!(
            (
                r.generation,
                r.previous_generation,
                r.rolled_back_to,
                r.path_failed
            ),
            (Some(4), Some(2), Some(2), true)
        );
        assert_eq!(profile_target(&root), "system-2-link");
        assert_eq!(
            log(&root),
            format!(
                "/nix/var/nix/profiles/system-4-link/{STC} switch bootloader=\n\
                 /nix/var/nix/profiles/system-2-link/{STC} switch bootloader=\n"
            )
        );
    }

    #[test]
    fn exit_codes_without_rollback() {
        let t = TempDir::new("act-kept");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let four = fake_system(&root, "sys-four", STC, 4);
        let three = fake_system(&root, "sys-three", STC, 3);
        let one = fake_system(&root, "sys-one", STC, 1);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        assert_eq!(apply(&c, &o, &a).0, Exit::Success);
        // (name, path, rollback_on, no_rollback, exit, message suffix, generation after)
        let cases = [
            (
                "4 not listed",
                &four,
                vec![1, 2],
                false,
                Exit::ActivationPartial,
                "; kept (not in --rollback-on)",
                "system-2-link",
            ),
            (
                "3 never listed",
                &three,
                vec![1, 2, 4],
                false,
                Exit::ActivationFailed,
                "exited 3 (daemon-reload or tmpfiles failed); kept (not in --rollback-on)",
                "system-3-link",
            ),
            (
                "1 with --no-rollback",
                &one,
                vec![1, 2, 4],
                true,
                Exit::ActivationFailed,
                "; kept (--no-rollback)",
                "system-4-link",
            ),
        ];
        for (name, path, on, no_rb, want, suffix, gen) in cases {
            let mut o = o.clone();
            o.rollback_on = on;
            o.no_rollback = no_rb;
            let (exit, msg, r) = apply(&c, &o, path);
            assert_eq!(exit, want, "{name}: {msg}");
            assert!(msg.ends_with(suffix), "{name}: {msg}");
            assert!(r.path_failed, "{name}");
            assert_eq!(profile_target(&root), gen, "{name}");
        }
    }

    #[test]
    fn nothing_to_roll_back_to_and_failed_rollback() {
        let t = TempDir::new("act-norb");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let bad = fake_system(&root, "sys-bad", STC, 2);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        let (exit, msg, _) = apply(&c, &o, &bad);
        assert_eq!(exit, Exit::ActivationFailed);
        assert_eq!(
            msg,
            format!(
                "/nix/var/nix/profiles/system-1-link/{STC} switch exited 2 (the activation script failed); nothing to roll back to: profile {} had no generation before this one; it stays at generation 1",
                c.profile.display()
            )
        );
        // Previous generation 1 is itself broken: the rollback fails too.
        let bad2 = fake_system(&root, "sys-bad2", STC, 1);
        let (exit, msg, r) = apply(&c, &o, &bad2);
        assert_eq!(exit, Exit::RollbackFailed, "{msg}");
        assert!(
            msg.ends_with(&format!("rolling back to generation 1 ({bad}) failed too: /nix/var/nix/profiles/system-1-link/{STC} switch exited 2 (the activation script failed); the system needs attention")),
            "{msg}"
        );
        assert_eq!(r.rolled_back_to, Some(1));
        assert_eq!(profile_target(&root), "system-1-link");
    }

    #[test]
    fn failing_or_slow_health_check_rolls_back() {
        let t = TempDir::new("act-health");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 0);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        assert_eq!(apply(&c, &o, &a).0, Exit::Success);
        // (name, command, timeout s, expected message start)
        let cases = [
            ("fails", "exit 3", 60, "health check 'exit 3' exited 3"),
            (
                "too slow",
                "sleep 30",
                1,
                "health check 'sleep 30' did not finish within 1 s (killed)",
            ),
        ];
        for (name, cmd, secs, want) in cases {
            let mut o = o.clone();
            o.health_check = Some(cmd.to_string());
            o.health_timeout = Duration::from_secs(secs);
            let started = Instant::now();
            let (exit, msg, r) = apply(&c, &o, &b);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name}: not killed"
            );
            assert_eq!(exit, Exit::RolledBack, "{name}: {msg}");
            assert_eq!(
                msg,
                format!("{want}; rolled back to generation 1 ({a})"),
                "{name}"
            );
            assert!(r.health_check_failed && r.path_failed, "{name}");
            assert_eq!(profile_target(&root), "system-1-link", "{name}");
        }
        // A passing check keeps the new generation.
        let mut o = o.clone();
        o.health_check = Some("test -d /nix/store || exit 0".to_string());
        assert_eq!(apply(&c, &o, &b).0, Exit::Success);
        assert_eq!(profile_target(&root), "system-2-link");
    }

    #[test]
    fn boot_under_root_runs_nothing_unless_installing_the_bootloader() {
        let t = TempDir::new("act-boot");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let mut o = opts(ApplyKind::Nixos, Action::Boot);
        let (exit, _, r) = apply(&c, &o, &a);
        assert_eq!(
            (exit, r.generation, r.script_status),
            (Exit::Success, Some(1), None)
        );
        assert_eq!(log(&root), "");
        o.install_bootloader = true;
        assert_eq!(apply(&c, &o, &a).0, Exit::Success);
        assert_eq!(
            log(&root),
            format!("/nix/var/nix/profiles/system-1-link/{STC} boot bootloader=1\n")
        );
    }

    #[test]
    fn missing_script_or_path_is_an_error_naming_it() {
        let t = TempDir::new("act-missing");
        let root = t.path().to_path_buf();
        let c = machine(&root);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        let a = fake_system(&root, "sys-a", "bin/other", 0);
        let noexec = fake_system(&root, "sys-noexec", STC, 0);
        let script = root.join(noexec.trim_start_matches('/')).join(STC);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let absent = "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-absent";
        let cases = [
            ("no script", a.clone(), Exit::ActivationFailed, format!("activation script {}/{STC}: does not exist (is this store path the right kind of system?)", root.join(a.trim_start_matches('/')).display())),
            ("not executable", noexec.clone(), Exit::ActivationFailed, format!("activation script {}: is not an executable file", script.display())),
            ("not in store", absent.to_string(), Exit::Store, format!("store path {absent} is not in the store ({} does not exist): fetch and register it first", root.join(absent.trim_start_matches('/')).display())),
        ];
        for (name, path, want, text) in cases {
            let (exit, msg, _) = apply(&c, &o, &path);
            assert_eq!((exit, msg.as_str()), (want, text.as_str()), "{name}");
        }
        // Nothing changed.
        assert!(!c.profile.exists());
    }

    #[test]
    fn darwin_makes_a_generation_and_runs_darwin_rebuild_activate() {
        let t = TempDir::new("act-darwin");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "darwin-a", "sw/bin/darwin-rebuild", 0);
        let bad = fake_system(&root, "darwin-bad", "sw/bin/darwin-rebuild", 1);
        let o = opts(ApplyKind::NixDarwin, Action::Switch);
        assert_eq!(apply(&c, &o, &a).0, Exit::Success);
        let (exit, msg, _) = apply(&c, &o, &bad);
        assert_eq!(exit, Exit::RolledBack, "{msg}");
        assert_eq!(profile_target(&root), "system-1-link");
        assert_eq!(
            log(&root),
            "/nix/var/nix/profiles/system-1-link/sw/bin/darwin-rebuild activate bootloader=\n\
             /nix/var/nix/profiles/system-2-link/sw/bin/darwin-rebuild activate bootloader=\n\
             /nix/var/nix/profiles/system-1-link/sw/bin/darwin-rebuild activate bootloader=\n"
        );
    }

    #[test]
    fn is_current_checks_profile_and_running_system() {
        let t = TempDir::new("act-current");
        let root = t.path().to_path_buf();
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 0);
        let p = Ctx::new(&c).profile;
        let sw = opts(ApplyKind::Nixos, Action::Switch);
        let boot = opts(ApplyKind::Nixos, Action::Boot);
        let test = opts(ApplyKind::Nixos, Action::Test);
        assert!(
            !crate::activate::is_current(&c, &sw, &sp(&a)),
            "no profile yet"
        );
        p.create_generation(&a).unwrap();
        p.switch_to(1).unwrap();
        // No DIR/run/current-system: under --root the profile decides.
        assert!(crate::activate::is_current(&c, &sw, &sp(&a)));
        assert!(!crate::activate::is_current(&c, &sw, &sp(&b)));
        assert!(!crate::activate::is_current(&c, &test, &sp(&a)));
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::os::unix::fs::symlink(&b, root.join("run/current-system")).unwrap();
        assert!(!crate::activate::is_current(&c, &sw, &sp(&a)), "running b");
        assert!(
            crate::activate::is_current(&c, &boot, &sp(&a)),
            "boot: profile only"
        );
        assert!(
            crate::activate::is_current(&c, &test, &sp(&b)),
            "test: running only"
        );
        let dry = opts(ApplyKind::Nixos, Action::DryActivate);
        assert!(!crate::activate::is_current(&c, &dry, &sp(&b)));
    }

    /// Records the phases journaled, in order.
    #[derive(Default)]
    struct Phases(Vec<&'static str>);

    impl Journal for Phases {
        fn phase(&mut self, phase: Phase, _: Option<u64>) -> Result<(), Error> {
            self.0.push(phase.as_str());
            Ok(())
        }
        fn trial_boot(&mut self, _: Option<&crate::boot::TrialBoot>) -> Result<(), Error> {
            self.0.push("trial-boot");
            Ok(())
        }
    }

    /// Apply with `o`, journaling into `j`; the "before" is read now.
    fn apply_journaled(
        c: &Machine,
        o: &ApplyOpts,
        path: &str,
        j: &mut Phases,
    ) -> (Exit, String, Report) {
        let mut r = Report::default();
        let before = Before::read(c).unwrap();
        match crate::activate::activate(c, &Settings::of(o), &sp(path), &before, j, &mut r) {
            Ok(e) => (e, String::new(), r),
            Err(e) => (e.exit, e.message, r),
        }
    }

    /// Point DIR/run/current-system at `path` (what activation would do).
    fn set_running(root: &Path, path: &str) {
        let run = root.join("run");
        std::fs::create_dir_all(&run).unwrap();
        let link = run.join("current-system");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(path, link).unwrap();
    }

    #[test]
    fn rollback_after_boot_returns_to_the_running_system() {
        let t = TempDir::new("act-after-boot");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 0);
        let bad = fake_system(&root, "sys-bad", STC, 2);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        assert_eq!(apply(&c, &o, &a).0, Exit::Success);
        set_running(&root, &a);
        let mut boot = opts(ApplyKind::Nixos, Action::Boot);
        boot.install_bootloader = true;
        assert_eq!(apply(&c, &boot, &b).0, Exit::Success);
        assert_eq!(profile_target(&root), "system-2-link");
        std::fs::remove_file(root.join("activation.log")).unwrap();
        // Generation 3 fails: back to the running a (generation 1), not to
        // generation 2 (b, only the boot default).
        let (exit, msg, r) = apply(&c, &o, &bad);
        assert_eq!(exit, Exit::RolledBack, "{msg}");
        assert!(
            msg.ends_with(&format!("; rolled back to generation 1 ({a})")),
            "{msg}"
        );
        assert_eq!(
            (r.previous_generation, r.rolled_back_to),
            (Some(2), Some(1))
        );
        assert_eq!(profile_target(&root), "system-1-link");
        assert_eq!(
            log(&root),
            format!(
                "/nix/var/nix/profiles/system-3-link/{STC} switch bootloader=\n\
                 /nix/var/nix/profiles/system-1-link/{STC} switch bootloader=\n"
            )
        );
    }

    #[test]
    fn a_failed_test_reactivates_the_running_system_with_test() {
        let t = TempDir::new("act-test-back");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let bad = fake_system(&root, "sys-bad", STC, 2);
        assert_eq!(
            apply(&c, &opts(ApplyKind::Nixos, Action::Switch), &a).0,
            Exit::Success
        );
        set_running(&root, &a);
        std::fs::remove_file(root.join("activation.log")).unwrap();
        let mut j = Phases::default();
        let (exit, msg, r) =
            apply_journaled(&c, &opts(ApplyKind::Nixos, Action::Test), &bad, &mut j);
        assert_eq!(exit, Exit::RolledBack, "{msg}");
        assert!(
            msg.ends_with(&format!("; rolled back to generation 1 ({a})")),
            "{msg}"
        );
        assert_eq!(r.generation, None);
        assert_eq!(profile_target(&root), "system-1-link");
        assert!(!root.join("nix/var/nix/profiles/system-2-link").exists());
        assert_eq!(
            log(&root),
            format!("{bad}/{STC} test bootloader=\n/nix/var/nix/profiles/system-1-link/{STC} test bootloader=\n")
        );
        assert_eq!(j.0, ["activating", "rolling-back"]);
    }

    #[test]
    fn trial_commits_only_after_test_and_health_check() {
        let t = TempDir::new("act-trial");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 0);
        assert_eq!(
            apply(&c, &opts(ApplyKind::Nixos, Action::Switch), &a).0,
            Exit::Success
        );
        set_running(&root, &a);
        std::fs::remove_file(root.join("activation.log")).unwrap();
        let mut o = opts(ApplyKind::Nixos, Action::Switch);
        o.trial = true;
        o.install_bootloader = true;
        // A failing health check: the profile never moves, no `boot`, and
        // the running system is re-activated with `test`.
        o.health_check = Some("exit 1".into());
        let mut j = Phases::default();
        let (exit, msg, r) = apply_journaled(&c, &o, &b, &mut j);
        assert_eq!(exit, Exit::RolledBack, "{msg}");
        assert_eq!((r.generation, r.path_failed), (None, true));
        assert_eq!(profile_target(&root), "system-1-link");
        assert!(!root.join("nix/var/nix/profiles/system-2-link").exists());
        assert_eq!(
            log(&root),
            format!("{b}/{STC} test bootloader=1\n/nix/var/nix/profiles/system-1-link/{STC} test bootloader=1\n")
        );
        assert_eq!(j.0, ["activating", "health-check", "rolling-back"]);
        // A passing one: generation 2, then its `boot`.
        std::fs::remove_file(root.join("activation.log")).unwrap();
        o.health_check = Some("exit 0".into());
        let mut j = Phases::default();
        let (exit, msg, r) = apply_journaled(&c, &o, &b, &mut j);
        assert_eq!((exit, msg.as_str()), (Exit::Success, ""));
        assert_eq!(r.generation, Some(2));
        assert_eq!(profile_target(&root), "system-2-link");
        assert_eq!(
            log(&root),
            format!(
                "{b}/{STC} test bootloader=1\n\
                 /nix/var/nix/profiles/system-2-link/{STC} boot bootloader=1\n"
            )
        );
        assert_eq!(
            j.0,
            ["activating", "health-check", "committing", "committing"]
        );
    }

    #[test]
    fn a_hung_activation_is_killed_and_rolled_back() {
        let t = TempDir::new("act-timeout");
        let Some(root) = chroot_root(&t) else { return };
        let c = machine(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let hung = fake_system(&root, "sys-hung", STC, 0);
        let script = root.join(hung.trim_start_matches('/')).join(STC);
        crate::testutil::write_executable(&script, "#!/bin/sh\nsleep 30\n");
        let mut o = opts(ApplyKind::Nixos, Action::Switch);
        assert_eq!(apply(&c, &o, &a).0, Exit::Success);
        o.activation_timeout = Some(Duration::from_secs(1));
        let mut j = Phases::default();
        let started = Instant::now();
        let (exit, msg, _) = apply_journaled(&c, &o, &hung, &mut j);
        assert!(started.elapsed() < Duration::from_secs(10), "not killed");
        assert_eq!(exit, Exit::RolledBack, "{msg}");
        assert_eq!(
            msg,
            format!("/nix/var/nix/profiles/system-2-link/{STC} switch did not finish within 1 s (--activation-timeout; killed); rolled back to generation 1 ({a})")
        );
        assert_eq!(profile_target(&root), "system-1-link");
        assert_eq!(j.0, ["profile", "activating", "rolling-back"]);
    }
}
