//! `fh-lite rollback [--to N]`: switch the profile to the highest
//! generation below the current one whose system has not failed on this
//! machine (or N) and run its `switch-to-configuration switch` (nix-darwin:
//! `darwin-rebuild activate`), like `nixos-rebuild switch --rollback`.

use std::path::Path;

use super::flavor::Flavor;
use super::profiles::Generation;
use super::{Ctx, Report};
use crate::error::{Error, Exit};
use crate::machine::Machine;
use crate::nix::store_path::StorePath;
use crate::options::Action;
use crate::state::{FailedPath, Pending, Phase, ROLLBACK_ACTION};

/// `fh-lite rollback [--to N]`: the generation to go back to, checked
/// before anything changes; [`SwitchBack::run`] switches to it.
pub struct SwitchBack<'a> {
    ctx: Ctx<'a>,
    pub target: Generation,
    /// Its store path, for the state file.
    pub store_path: StorePath,
    pub current: Option<u64>,
    /// The current generation's store path (what is rolled away from).
    pub current_path: Option<String>,
    /// Generations a plain rollback passed over because their systems
    /// failed on this machine (newest first), with their failed entries.
    pub skipped: Vec<(u64, FailedPath)>,
    flavor: Flavor,
}

impl<'a> SwitchBack<'a> {
    /// The generation to switch to: `to`, else the highest one below the
    /// current one whose system is not in `failed` (the failed list of
    /// the state file): the last system that was good on this machine.
    pub fn prepare(
        machine: &'a Machine,
        to: Option<u64>,
        failed: &[FailedPath],
    ) -> Result<SwitchBack<'a>, Error> {
        let ctx = Ctx::new(machine);
        let profile = ctx.profile.path.display().to_string();
        let current = ctx.profile.current()?;
        let current_path = current
            .and_then(|n| ctx.profile.generation(n).ok())
            .map(|g| g.target);
        let mut skipped = Vec::new();
        let target = match (to, current) {
            (Some(n), _) => ctx.profile.generation(n)?,
            (None, None) => {
                return Err(Error::usage(format!(
                    "rollback: profile {profile} does not exist; nothing to roll back to"
                )))
            }
            (None, Some(cur)) => {
                let gens = ctx.profile.generations()?;
                let mut found = None;
                for g in gens.into_iter().rev().filter(|g| g.number < cur) {
                    match failed.iter().find(|f| f.store_path == g.target) {
                        Some(f) => skipped.push((g.number, f.clone())),
                        None => {
                            found = Some(g);
                            break;
                        }
                    }
                }
                match found {
                    Some(g) => g,
                    None if skipped.is_empty() => {
                        return Err(Error::usage(format!(
                            "rollback: profile {profile} has no generation before the current one ({cur})"
                        )))
                    }
                    None => {
                        let numbers: Vec<String> =
                            skipped.iter().map(|(n, _)| n.to_string()).collect();
                        return Err(Error::usage(format!(
                            "rollback: profile {profile} has no generation before the current one ({cur}) whose system has not failed on this machine (failed: generation {}); choose one with --to N",
                            numbers.join(", ")
                        )));
                    }
                }
            }
        };
        let store_path = StorePath::parse(&target.target).map_err(|e| {
            Error::new(
                Exit::Internal,
                format!(
                    "rollback: generation {} of profile {profile}: {e}",
                    target.number
                ),
            )
        })?;
        // NixOS or nix-darwin, by what the generation contains.
        let base = Path::new(&target.target);
        let has = |f: Flavor| ctx.check_executable(&base.join(f.script()));
        let flavor = if has(Flavor::Darwin).is_ok() && has(Flavor::NixOs).is_err() {
            Flavor::Darwin
        } else {
            has(Flavor::NixOs)?;
            Flavor::NixOs
        };
        ctx.check_can_run()?;
        Ok(SwitchBack {
            ctx,
            target,
            store_path,
            current,
            current_path,
            skipped,
            flavor,
        })
    }

    /// The journal entry written before [`SwitchBack::run`] changes
    /// anything: a kill before the switch script has finished leaves it,
    /// and recovery (cmd/recover.rs) switches to the same generation again.
    pub fn journal_entry(&self, reference: &str) -> Pending {
        let kind = match self.flavor {
            Flavor::Darwin => "nix-darwin",
            _ => "nixos",
        };
        Pending {
            reference: reference.to_string(),
            store_path: self.store_path.to_string(),
            action: ROLLBACK_ACTION.to_string(),
            phase: Phase::Activating.as_str().to_string(),
            generation: Some(self.target.number),
            previous_generation: self.current,
            time: crate::util::unix_now(),
            pid: std::process::id(),
            kind: kind.to_string(),
            ..Pending::default()
        }
    }

    /// Switch the profile to the target and run its switch script.
    pub fn run(&self, report: &mut Report) -> Result<Exit, Error> {
        crate::signal::activation_begins();
        let ctx = &self.ctx;
        let (n, target) = (self.target.number, &self.target.target);
        let profile = ctx.profile.path.display();
        for (g, f) in &self.skipped {
            ctx.say(&format!(
                "rollback: skipping generation {g} ({}): it failed on this machine at {} ({}); --to {g} switches to it anyway",
                f.store_path,
                crate::state::format_time(f.time),
                f.result
            ));
        }
        ctx.profile.switch_to(n)?;
        report.previous_generation = self.current;
        report.generation = Some(n);
        let from = self.current.map_or("none".to_string(), |n| n.to_string());
        ctx.say(&format!(
            "profile {profile}: generation {from} -> {n} ({target})"
        ));
        let script = ctx.logical(&self.target.link).join(self.flavor.script());
        let args = self.flavor.args(Action::Switch);
        let code = ctx.run(&script, &args, false, None)?.code();
        report.script_status = code;
        self.flavor.success(code).ok_or_else(|| {
            Error::new(
                Exit::RollbackFailed,
                format!(
                    "rollback: profile {profile} is now generation {n}, but {} {} {}; the system needs attention",
                    script.display(),
                    args.join(" "),
                    self.flavor.describe(code)
                ),
            )
        })
    }
}
