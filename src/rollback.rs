//! `fh-lite rollback [--to N]`: switch the profile back to the previous
//! generation (or generation N) and activate it, under the state lock,
//! recording the attempt in the state file, after recovering an attempt a
//! kill interrupted (recover.rs). The switch is journaled like an apply's
//! activation: killed before its script finished, the next run (or
//! `fh-lite recover`) switches to the same generation again. The
//! mechanics are `activate::rollback::SwitchBack`.

use crate::activate::rollback::SwitchBack;
use crate::activate::Report;
use crate::cli::Common;
use crate::error::{Error, Exit};
use crate::state::{Attempt, StateDir};

pub fn run(common: &Common, to: Option<u64>) -> Result<Exit, Error> {
    let state = StateDir::of(common);
    let _lock = state.lock()?;
    crate::signal::install()?;
    // An attempt a kill interrupted is finished or undone first.
    if let Some(result) = crate::recover::before_command(
        common,
        &state,
        &crate::recover::Allowed::of_command(common),
    )? {
        return result;
    }
    let back = SwitchBack::prepare(common, to)?;
    let reference = format!("rollback to generation {}", back.target.number);
    let attempt = Attempt::start(&reference, &back.store_path);
    state.begin(&attempt, &back.journal_entry(&reference))?;
    let mut report = Report::default();
    let result = back.run(&mut report);
    let exit = result.as_ref().map_or_else(|e| e.exit, |x| *x);
    state.record_result(&attempt, exit, report.generation, false)?;
    result
}
