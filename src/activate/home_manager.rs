//! Home Manager: run `<path>/activate` as the calling user
//! (docs/formats.md, "switch-to-configuration"). The script makes its own generation in the
//! user's profile (`$XDG_STATE_HOME/nix/profiles/home-manager` or
//! `/nix/var/nix/profiles/per-user/$USER/home-manager`), so fh-lite makes
//! none and cannot roll back: a failure is `ActivationFailed`, and the
//! message says how to go back by hand.

use std::path::{Path, PathBuf};

use super::{rollback, ActivateError, Ctx, Flavor, Journal, Report, Settings};
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
    let how_back = "Home Manager keeps its own generations: 'home-manager generations' lists them, and running a previous one's activate goes back";
    journal.phase(Phase::Activating, None)?;
    let code = ctx
        .run(&script, &[], false, opts.activation_timeout)?
        .code();
    report.script_status = code;
    if flavor.success(code).is_none() {
        report.path_failed = true;
        return Err(Error::new(
            Exit::ActivationFailed,
            format!(
                "{} {}; not rolled back: {how_back}",
                script.display(),
                flavor.describe(code)
            ),
        ));
    }
    if let Some(cmd) = &opts.health_check {
        journal.phase(Phase::HealthCheck, None)?;
        if let Err(why) = rollback::health_check(ctx, cmd, opts.health_timeout) {
            report.health_check_failed = true;
            report.path_failed = true;
            return Err(Error::new(
                Exit::ActivationFailed,
                format!("{why}; not rolled back: {how_back}"),
            ));
        }
    }
    ctx.say(&format!("activated {store_path}"));
    Ok(Exit::Success)
}
