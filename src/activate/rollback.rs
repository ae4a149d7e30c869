//! Running activation, reading its status, health checks, and rollback
//! (automatic after a failure, and the `fh-lite rollback` command).
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
//! `fh-lite rollback [--to N]` switches the profile to the highest
//! generation below the current one (or N) and runs its
//! `switch-to-configuration switch` (nix-darwin: `darwin-rebuild
//! activate`), like `nixos-rebuild switch --rollback`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::darwin::DARWIN;
use super::nixos::{classify, describe, Flavor, Verdict, NIXOS};
use super::profiles::Generation;
use super::{ActivateError, Ctx, Report};
use crate::cli::{Action, ApplyOpts, Common};
use crate::error::{Error, Exit};

/// Run `program args` (inside the root with `--root`), its output on our
/// stderr so stdout stays for results. Ok(None): killed by a signal.
pub(crate) fn run(
    ctx: &Ctx,
    program: &Path,
    args: &[&str],
    install_bootloader: bool,
) -> Result<Option<i32>, ActivateError> {
    let mut cmd = ctx.command(program)?;
    cmd.args(args).stdout(Stdio::from(std::io::stderr()));
    if install_bootloader {
        cmd.env("NIXOS_INSTALL_BOOTLOADER", "1");
    }
    let status = cmd.status().map_err(|err| ActivateError::Spawn {
        program: program.display().to_string(),
        err,
    })?;
    Ok(status.code())
}

/// "exited 4 (…)" or "was killed by a signal".
pub(crate) fn status_text(code: Option<i32>, describe: impl Fn(i32) -> String) -> String {
    match code {
        Some(c) => describe(c),
        None => "was killed by a signal".to_string(),
    }
}

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
        // Its own process group, so a timeout kills what it started too.
        .process_group(0);
    let mut child = c
        .spawn()
        .map_err(|e| format!("health check '{cmd}': run /bin/sh: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                return Err(format!(
                    "health check '{cmd}' {}",
                    status_text(st.code(), |c| format!("exited {c}"))
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("health check '{cmd}': wait: {e}")),
        }
        if start.elapsed() >= timeout {
            let pid = i32::try_from(child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "health check '{cmd}' did not finish within {} s (killed)",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// NixOS and nix-darwin: generation, profile, script, status, rollback.
pub(crate) fn activate_system(
    ctx: &Ctx,
    opts: &ApplyOpts,
    store_path: &str,
    report: &mut Report,
    flavor: &Flavor,
) -> Result<Exit, Error> {
    // nix-darwin has one way to activate; its generation is like `switch`.
    let action = if std::ptr::eq(flavor, &DARWIN) {
        Action::Switch
    } else {
        opts.action
    };
    // Check everything we can before the profile changes.
    ctx.check_in_store(store_path)?;
    ctx.check_executable(&Path::new(store_path).join(flavor.script))?;
    let runs = !(ctx.root.is_some() && action == Action::Boot && !opts.install_bootloader);
    if runs {
        ctx.check_can_run()?;
    }
    let previous = ctx.profile.current_target()?;
    report.previous_generation = previous.as_ref().map(|g| g.number);

    let base = if action.makes_generation() {
        let g = ctx.profile.create_generation(store_path)?;
        ctx.profile.switch_to(g.number)?;
        report.generation = Some(g.number);
        ctx.say(&format!(
            "profile {} is now generation {} ({store_path})",
            ctx.profile.path.display(),
            g.number
        ));
        ctx.logical(&g.link)
    } else {
        PathBuf::from(store_path)
    };
    if !runs {
        ctx.say(&format!(
            "--root {}: generation {} is the boot default; nothing run (it activates at first boot)",
            ctx.root.unwrap_or(Path::new("/")).display(),
            report.generation.unwrap_or(0)
        ));
        return Ok(Exit::Success);
    }

    let script = base.join(flavor.script);
    let args = (flavor.args)(action);
    let what = format!("{} {}", script.display(), args.join(" "));
    let code = run(ctx, &script, &args, opts.install_bootloader)?;
    report.script_status = code;
    let Some(code) = code else {
        report.path_failed = true;
        return Err(Error::new(
            Exit::ActivationFailed,
            format!("{what} was killed by a signal; not rolled back (state unknown)"),
        ));
    };
    let why = format!("{what} {}", describe(flavor, code));
    match classify(flavor, code, &opts.rollback_on, opts.no_rollback) {
        Verdict::RollBack if action == Action::DryActivate => Err(Error::new(
            Exit::ActivationFailed,
            format!("{why} (dry-activate changes nothing; no rollback needed)"),
        )),
        Verdict::RollBack => Err(roll_back(ctx, flavor, action, opts, previous, &why, report)),
        Verdict::Kept(exit) => {
            if action != Action::DryActivate {
                report.path_failed = true;
            }
            let reason = if opts.no_rollback {
                "--no-rollback"
            } else {
                "not in --rollback-on"
            };
            Err(Error::new(exit, format!("{why}; kept ({reason})")))
        }
        Verdict::Ok(exit) => {
            if let Some(cmd) = &opts.health_check {
                if matches!(action, Action::Switch | Action::Test) {
                    if let Err(why) = health_check(ctx, cmd, opts.health_timeout) {
                        report.health_check_failed = true;
                        if opts.no_rollback {
                            report.path_failed = true;
                            return Err(Error::new(
                                Exit::ActivationFailed,
                                format!("{why}; kept (--no-rollback)"),
                            ));
                        }
                        return Err(roll_back(ctx, flavor, action, opts, previous, &why, report));
                    }
                } else {
                    ctx.say(&format!(
                        "health check skipped: '{}' activates nothing now",
                        action.as_str()
                    ));
                }
            }
            if exit == Exit::RebootNeeded {
                ctx.say(&format!(
                    "{what} exited 100: reboot for {store_path} to take full effect"
                ));
            } else {
                ctx.say(&format!("activated {store_path} ({})", action.as_str()));
            }
            Ok(exit)
        }
    }
}

/// Re-point the profile at `previous` and activate it again. Returns the
/// error to report: RolledBack, RollbackFailed, or ActivationFailed when
/// there was nothing to roll back to.
fn roll_back(
    ctx: &Ctx,
    flavor: &Flavor,
    action: Action,
    opts: &ApplyOpts,
    previous: Option<Generation>,
    why: &str,
    report: &mut Report,
) -> Error {
    report.path_failed = true;
    let profile = ctx.profile.path.display();
    let Some(prev) = previous else {
        let stays = match report.generation {
            Some(n) => format!("; it stays at generation {n}"),
            None => String::new(),
        };
        return Error::new(
            Exit::ActivationFailed,
            format!(
                "{why}; nothing to roll back to: profile {profile} had no generation before this one{stays}"
            ),
        );
    };
    if action.makes_generation() {
        if let Err(e) = ctx.profile.switch_to(prev.number) {
            return Error::new(
                Exit::RollbackFailed,
                format!(
                    "{why}; rolling back to generation {} failed too: {e}",
                    prev.number
                ),
            );
        }
    }
    report.rolled_back_to = Some(prev.number);
    let runs = !(ctx.root.is_some() && action == Action::Boot && !opts.install_bootloader);
    if !runs {
        return Error::new(
            Exit::RolledBack,
            format!(
                "{why}; rolled back: profile {profile} is generation {} again ({})",
                prev.number, prev.target
            ),
        );
    }
    ctx.say(&format!(
        "{why}; rolling back to generation {} ({})",
        prev.number, prev.target
    ));
    let script = ctx.logical(&prev.link).join(flavor.script);
    let args = (flavor.args)(action);
    match run(ctx, &script, &args, opts.install_bootloader) {
        Ok(Some(c)) if c == 0 || (flavor.special_ok)(c).is_some() => Error::new(
            Exit::RolledBack,
            format!(
                "{why}; rolled back to generation {} ({})",
                prev.number, prev.target
            ),
        ),
        Ok(code) => Error::new(
            Exit::RollbackFailed,
            format!(
                "{why}; rolling back to generation {} ({}) failed too: {} {} {}; the system needs attention",
                prev.number,
                prev.target,
                script.display(),
                args.join(" "),
                status_text(code, |c| describe(flavor, c))
            ),
        ),
        Err(e) => Error::new(
            Exit::RollbackFailed,
            format!(
                "{why}; rolling back to generation {} ({}) failed too: {e}; the system needs attention",
                prev.number, prev.target
            ),
        ),
    }
}

/// `fh-lite rollback [--to N]`.
pub fn cmd_rollback(common: &Common, to: Option<u64>) -> Result<Exit, Error> {
    let _lock = crate::state::lock(common)?;
    let ctx = Ctx::new(common);
    let profile = ctx.profile.path.display().to_string();
    let current = ctx.profile.current()?;
    let target = match to {
        Some(n) => ctx.profile.generation(n)?,
        None => {
            let Some(cur) = current else {
                return Err(Error::new(
                    Exit::Usage,
                    format!("rollback: profile {profile} does not exist; nothing to roll back to"),
                ));
            };
            let gens = ctx.profile.generations()?;
            match gens.into_iter().rev().find(|g| g.number < cur) {
                Some(g) => g,
                None => {
                    return Err(Error::new(
                        Exit::Usage,
                        format!(
                            "rollback: profile {profile} has no generation before the current one ({cur})"
                        ),
                    ))
                }
            }
        }
    };
    // NixOS or nix-darwin, by what the generation contains.
    let base = Path::new(&target.target);
    let flavor = if ctx.check_executable(&base.join(DARWIN.script)).is_ok()
        && ctx.check_executable(&base.join(NIXOS.script)).is_err()
    {
        &DARWIN
    } else {
        ctx.check_executable(&base.join(NIXOS.script))?;
        &NIXOS
    };
    ctx.check_can_run()?;
    let attempt = crate::state::Attempt::start(
        &format!("rollback to generation {}", target.number),
        &target.target,
    );
    ctx.profile.switch_to(target.number)?;
    let from = current.map_or("none".to_string(), |n| n.to_string());
    ctx.say(&format!(
        "profile {profile}: generation {from} -> {} ({})",
        target.number, target.target
    ));
    let script = ctx.logical(&target.link).join(flavor.script);
    let args = (flavor.args)(Action::Switch);
    let code = run(&ctx, &script, &args, false)?;
    let result = match code {
        Some(0) => Ok(Exit::Success),
        Some(c) if (flavor.special_ok)(c).is_some() => Ok(Exit::RebootNeeded),
        code => Err(Error::new(
            Exit::RollbackFailed,
            format!(
                "rollback: profile {profile} is now generation {}, but {} {} {}; the system needs attention",
                target.number,
                script.display(),
                args.join(" "),
                status_text(code, |c| describe(flavor, c))
            ),
        )),
    };
    let report = Report {
        previous_generation: current,
        generation: Some(target.number),
        script_status: code,
        ..Report::default()
    };
    let exit = match &result {
        Ok(e) => *e,
        Err(e) => e.exit,
    };
    crate::state::record_result(common, &attempt, exit, &report)?;
    result
}
