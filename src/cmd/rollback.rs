//! `fh-lite rollback [--to N]`: switch the profile back to the previous
//! generation whose system has not failed on this machine (or generation
//! N) and activate it, under the state lock,
//! recording the attempt in the state file, after recovering an attempt a
//! kill interrupted (cmd/recover.rs). The switch is journaled like an apply's
//! activation: killed before its script finished, the next run (or
//! `fh-lite recover`) switches to the same generation again. The
//! mechanics are `activate::switch_back::SwitchBack`.

use crate::activate::switch_back::SwitchBack;
use crate::activate::Report;
use crate::error::{Error, Exit};
use crate::options::Common;
use crate::state::Attempt;

pub fn run(common: &Common, to: Option<u64>) -> Result<Exit, Error> {
    let state = common.machine().state();
    let _lock = state.lock()?;
    crate::signal::install()?;
    // An attempt a kill interrupted is finished or undone first.
    if let Some(result) = crate::cmd::recover::before_command(
        common,
        &state,
        &crate::journal::Allowed::of_command(common.store(crate::options::StoreKind::Auto, None)),
    )? {
        return result;
    }
    // A trial boot is settled (or, still waiting, undone) first.
    crate::cmd::confirm_boot::settle_before(common, &state)?;
    let machine = common.machine();
    let back = SwitchBack::prepare(&machine, to, &state.failed()?)?;
    let reference = format!("rollback to generation {}", back.target.number);
    let attempt = Attempt::start(&reference, &back.store_path);
    // The operator's decision: the system rolled away from is not applied
    // again by the next run (unless --retry-failed), and its reboot need
    // goes with it.
    let recorded = state.current()?;
    let away = back.current_path.as_deref().map(|path| {
        let known = [&recorded.last_success, &recorded.last_attempt]
            .into_iter()
            .flatten()
            .find(|r| r.store_path == path)
            .map(|r| r.reference.clone());
        let number = back.current.map_or("?".to_string(), |n| n.to_string());
        (
            path,
            known.unwrap_or_else(|| format!("generation {number}")),
        )
    });
    let away_ref = away.as_ref().map(|(p, r)| (*p, r.as_str()));
    state.begin_rollback(&attempt, &back.journal_entry(&reference), away_ref)?;
    if let Some((path, _)) = away
        .as_ref()
        .filter(|(p, _)| *p != back.store_path.to_string())
    {
        crate::ui::say(&format!("rollback: {path} is remembered as rolled away from; a later apply that resolves to it skips it (exit 34) unless --retry-failed"));
    }
    crate::outcome::store_path(&back.store_path);
    crate::outcome::action(crate::state::ROLLBACK_ACTION);
    let mut report = Report::default();
    let result = back.run(&mut report);
    crate::outcome::generation(report.generation);
    if result.is_ok() {
        crate::outcome::outcome("activated");
    }
    let exit = result.as_ref().map_or_else(|e| e.exit, |x| *x);
    state.record_result(&attempt, exit, report.generation, false)?;
    result
}
