//! Home Manager: run `<path>/activate` as the calling user
//! (docs/formats.md, "switch-to-configuration"). The script makes its own generation in the
//! user's profile (`$XDG_STATE_HOME/nix/profiles/home-manager` or
//! `/nix/var/nix/profiles/per-user/$USER/home-manager`), so fh-lite makes
//! none. A failure (an exit status in `--rollback-on`, a timeout, a failed
//! health check) goes back the way Home Manager itself does: the previous
//! generation's `activate` runs (the generation the profile pointed at
//! before), which points the profile at it again. `--no-rollback` keeps the
//! new one.

use std::path::{Path, PathBuf};

use super::flavor::Verdict;
use super::{run, ActivateError, Ctx, Flavor, Journal, Ran, Report, Settings};
use crate::error::{Error, Exit};
use crate::nix::store_path::StorePath;
use crate::state::Phase;

/// Where Home Manager keeps its profile for the calling user.
fn profiles() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(state) = env("XDG_STATE_HOME") {
        out.push(PathBuf::from(state).join("nix/profiles/home-manager"));
    } else if let Some(home) = env("HOME") {
        out.push(PathBuf::from(home).join(".local/state/nix/profiles/home-manager"));
    }
    if let Some(user) = env("USER") {
        out.push(
            Path::new("/nix/var/nix/profiles/per-user")
                .join(user)
                .join("home-manager"),
        );
    }
    out
}

/// The user's Home Manager profile resolves to `store_path`.
pub fn is_current(store_path: &str) -> bool {
    profiles()
        .iter()
        .any(|p| std::fs::canonicalize(p).is_ok_and(|t| t == Path::new(store_path)))
}

/// The generation the user's Home Manager profile points at now (its
/// store path), if it has an executable `activate`: what a failure rolls
/// back to.
fn current_generation() -> Option<PathBuf> {
    profiles().iter().find_map(|p| {
        let target = std::fs::canonicalize(p).ok()?;
        let ok =
            std::fs::metadata(target.join(Flavor::HomeManager.script())).is_ok_and(|m| m.is_file());
        (ok && target.starts_with("/nix/store")).then_some(target)
    })
}

pub(crate) fn activate(
    ctx: &Ctx,
    opts: &Settings,
    store_path: &StorePath,
    journal: &mut dyn Journal,
    report: &mut Report,
) -> Result<Exit, Error> {
    if ctx.root.is_some() {
        return Err(ActivateError::HomeManagerRoot.into());
    }
    ctx.check_in_store(store_path)?;
    let flavor = Flavor::HomeManager;
    let script = Path::new(&store_path.to_string()).join(flavor.script());
    ctx.check_executable(&script)?;
    // Read before anything runs: the generation a failure goes back to.
    let previous = current_generation().filter(|p| *p != Path::new(&store_path.to_string()));
    journal.phase(Phase::Activating, None)?;
    let ran = ctx.run(&script, &[], false, opts.activation_timeout)?;
    report.script_status = ran.code();
    let why = match ran {
        Ran::TimedOut(t) => format!(
            "{} did not finish within {} s (--activation-timeout; killed)",
            script.display(),
            t.as_secs()
        ),
        other => format!("{} {}", script.display(), flavor.describe(other.code())),
    };
    let verdict = match ran {
        Ran::Code(code) => flavor.classify(code, &opts.rollback_on, opts.no_rollback),
        Ran::TimedOut(_) if !opts.no_rollback => Verdict::RollBack,
        Ran::TimedOut(_) | Ran::Killed => Verdict::Kept(Exit::ActivationFailed),
    };
    match verdict {
        Verdict::Ok(_) => {}
        Verdict::RollBack => {
            report.path_failed = true;
            return Err(roll_back(ctx, opts, previous.as_deref(), &why, journal));
        }
        Verdict::Kept(exit) => {
            report.path_failed = true;
            let reason = if opts.no_rollback {
                "--no-rollback"
            } else {
                "not in --rollback-on"
            };
            return Err(Error::new(exit, format!("{why}; kept ({reason})")));
        }
    }
    if let Some(cmd) = &opts.health_check {
        journal.phase(Phase::HealthCheck, None)?;
        if let Err(why) = run::health_check(ctx, cmd, opts.health_timeout) {
            report.health_check_failed = true;
            report.path_failed = true;
            if opts.no_rollback {
                return Err(Error::new(
                    Exit::ActivationFailed,
                    format!("{why}; kept (--no-rollback)"),
                ));
            }
            return Err(roll_back(ctx, opts, previous.as_deref(), &why, journal));
        }
    }
    ctx.say(&format!("activated {store_path}"));
    Ok(Exit::Success)
}

/// Go back to `previous` the way Home Manager does: run that generation's
/// `activate`, which points the profile at it again. RolledBack when it
/// succeeds; RollbackFailed when it fails; ActivationFailed when there is
/// no previous generation.
fn roll_back(
    ctx: &Ctx,
    opts: &Settings,
    previous: Option<&Path>,
    why: &str,
    journal: &mut dyn Journal,
) -> Error {
    let Some(previous) = previous else {
        return Error::new(
            Exit::ActivationFailed,
            format!("{why}; not rolled back: there is no previous Home Manager generation"),
        );
    };
    if let Err(e) = journal.phase(Phase::RollingBack, None) {
        ctx.say(&format!("warning: {}", e.message));
    }
    let script = previous.join(Flavor::HomeManager.script());
    let to = previous.display();
    match ctx.run(&script, &[], false, opts.activation_timeout) {
        Ok(ran) if Flavor::HomeManager.success(ran.code()).is_some() => Error::new(
            Exit::RolledBack,
            format!("{why}; rolled back to the previous Home Manager generation ({to})"),
        ),
        Ok(ran) => Error::new(
            Exit::RollbackFailed,
            format!(
                "{why}; rolling back to {to} failed too: {} {}; the home needs attention",
                script.display(),
                Flavor::HomeManager.describe(ran.code())
            ),
        ),
        Err(e) => Error::new(
            Exit::RollbackFailed,
            format!("{why}; rolling back to {to} failed too: {e}; the home needs attention"),
        ),
    }
}
