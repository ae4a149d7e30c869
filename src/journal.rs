//! The journal's rules (docs/journal.md): what a pending attempt's phase
//! means for recovery ([`decide`]), what a journal entry must show before
//! anything of it is redone ([`vouch`], within [`Allowed`]), and the
//! journal of one attempt as it runs ([`AttemptJournal`]). The `recover`
//! command (cmd/recover.rs) and `status` act on these decisions.

use crate::activate::{self, Ctx, Journal, Settings};
use crate::error::Error;
use crate::machine::Machine;
use crate::nix::store_path::StorePath;
use crate::options::ApplyOpts;
use crate::state::{Pending, Phase, StateDir};
use crate::store::select::StoreChoice;

/// What to do with a pending attempt, by the phase it reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing irreversible happened: clear it, record "interrupted".
    Clear,
    /// Redo the activation from the start, then the health check.
    Resume,
    /// Redo the rollback.
    RollBack,
}

pub fn decide(phase: Phase) -> Decision {
    match phase {
        Phase::Fetching => Decision::Clear,
        Phase::Profile | Phase::Activating | Phase::HealthCheck | Phase::Committing => {
            Decision::Resume
        }
        Phase::RollingBack => Decision::RollBack,
    }
}

/// What the command that runs recovery would run itself: recovery runs
/// no more than that.
#[derive(Clone, Debug)]
pub struct Allowed {
    /// Its activation runs programs (everything but `boot` under `--root`
    /// without `--install-bootloader`).
    pub commands: bool,
    /// Its own `--health-check`.
    pub health_check: Option<String>,
    /// The store it uses (`--store`, `--daemon-socket`, `--root`).
    pub store: StoreChoice,
}

impl Allowed {
    /// An apply with `opts` on `machine`, using `store`.
    pub fn of_apply(machine: &Machine, opts: &ApplyOpts, store: StoreChoice) -> Allowed {
        let ctx = Ctx::new(machine);
        let action = activate::flavor::Flavor::of(opts.kind).action(opts.action);
        Allowed {
            commands: activate::runs_commands(&ctx, action, opts.install_bootloader),
            health_check: opts.health_check.clone(),
            store,
        }
    }

    /// `fh-lite recover` and `fh-lite rollback`: they activate (a system
    /// of the profile), and have no health check of their own; `store` is
    /// the one `--store auto` finds.
    pub fn of_command(store: StoreChoice) -> Allowed {
        Allowed {
            commands: true,
            health_check: None,
            store,
        }
    }
}

/// Why the journal entry `p` is not redone, if it is not: see the module
/// text.
pub fn vouch(
    machine: &Machine,
    p: &Pending,
    path: &StorePath,
    settings: Option<&Settings>,
    allowed: &Allowed,
) -> Result<(), String> {
    let valid = |what: &str, sp: &StorePath| -> Result<(), String> {
        match crate::store::select::is_valid_here(&allowed.store, sp) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "{what} {sp} is not registered and valid in this store"
            )),
            Err(e) => Err(format!(
                "cannot check {what} {sp} in this store: {}",
                e.message
            )),
        }
    };
    valid("its store path", path)?;
    let ctx = Ctx::new(machine);
    let target_of = |n: u64| ctx.profile.generation(n).ok().map(|g| g.target);
    if let Some(n) = p.generation {
        if target_of(n).as_deref() != Some(p.store_path.as_str()) {
            return Err(format!(
                "generation {n} of the profile {} is not {path}",
                machine.profile.display()
            ));
        }
    }
    if let Some(sys) = &p.previous_system {
        let before =
            StorePath::parse(sys).map_err(|e| format!("the system it replaced ({sys}): {e}"))?;
        valid("the system it replaced", &before)?;
        if let Some(m) = p.previous_generation {
            if target_of(m).as_deref() != Some(sys.as_str()) {
                return Err(format!(
                    "generation {m} of the profile {} is not {sys}",
                    machine.profile.display()
                ));
            }
        }
    }
    let runs = match settings {
        Some(s) => {
            let action = activate::flavor::Flavor::of(s.kind).action(s.action);
            activate::runs_commands(&ctx, action, s.install_bootloader)
        }
        // A rollback runs the older system's switch script.
        None => true,
    };
    if runs && !allowed.commands {
        return Err(format!(
            "redoing it would run {path}'s activation, which this command does not run"
        ));
    }
    if let Some(check) = settings.and_then(|s| s.health_check.as_ref()) {
        if allowed.health_check.as_ref() != Some(check) {
            return Err(
                "it names a health check that is not this command's --health-check".to_string(),
            );
        }
    }
    Ok(())
}

/// The journal of one attempt: its `pending` entry, rewritten atomically
/// at each phase, before the step.
pub struct AttemptJournal<'a> {
    state: &'a StateDir,
    pub pending: Pending,
}

impl<'a> AttemptJournal<'a> {
    pub fn new(state: &'a StateDir, pending: Pending) -> AttemptJournal<'a> {
        AttemptJournal { state, pending }
    }
}

impl Journal for AttemptJournal<'_> {
    fn phase(&mut self, phase: Phase, generation: Option<u64>) -> Result<(), Error> {
        self.pending.phase = phase.as_str().to_string();
        if generation.is_some() {
            self.pending.generation = generation;
        }
        self.pending.pid = std::process::id();
        self.state.set_pending(&self.pending)
    }

    fn trial_boot(&mut self, t: Option<&crate::boot::TrialBoot>) -> Result<(), Error> {
        match t {
            Some(t) => {
                let t = crate::boot::TrialBoot {
                    reference: self.pending.reference.clone(),
                    ..t.clone()
                };
                self.state.begin_trial_boot(&t)
            }
            None => self.state.set_trial_boot(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_has_its_decision() {
        let cases = [
            (Phase::Fetching, Decision::Clear),
            (Phase::Profile, Decision::Resume),
            (Phase::Activating, Decision::Resume),
            (Phase::HealthCheck, Decision::Resume),
            (Phase::Committing, Decision::Resume),
            (Phase::RollingBack, Decision::RollBack),
        ];
        for (phase, want) in cases {
            assert_eq!(decide(phase), want, "{phase:?}");
        }
    }
}
