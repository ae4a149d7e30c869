//! `fh-lite hold` / `fh-lite unhold`: keep the device on its current
//! release. While held, `apply` changes nothing and exits with
//! `Exit::Held`; `status`, `status --json` and the metrics file show the
//! hold. `rollback` still works (the hold moves to the system it switched
//! to), and so do `fetch` and dry runs. Both take the state lock.

use crate::activate::Ctx;
use crate::error::{Error, Exit};
use crate::options::Common;
use crate::state::{format_time, Hold};

/// `fh-lite hold`: record the profile's current generation as held.
pub fn hold(common: &Common) -> Result<Exit, Error> {
    let state = common.machine().state();
    let _lock = state.lock()?;
    if let Some(h) = state.current()?.hold {
        say(
            common,
            &format!("already held on {} since {}", on(&h), format_time(h.time)),
        );
        crate::outcome::outcome("held");
        return Ok(Exit::Success);
    }
    let machine = common.machine();
    let ctx = Ctx::new(&machine);
    let current = ctx.profile.current_target()?;
    let h = Hold {
        generation: current.as_ref().map(|g| g.number),
        store_path: current.map(|g| g.target),
        time: crate::util::unix_now(),
    };
    state.set_hold(Some(h.clone()))?;
    crate::outcome::outcome("held");
    crate::outcome::generation(h.generation);
    if let Some(p) = &h.store_path {
        crate::outcome::store_path(p);
    }
    say(
        common,
        &format!(
            "held on {}: apply changes nothing (exit 44) until 'fh-lite unhold'",
            on(&h)
        ),
    );
    Ok(Exit::Success)
}

/// `fh-lite unhold`: release the hold.
pub fn unhold(common: &Common) -> Result<Exit, Error> {
    let state = common.machine().state();
    let _lock = state.lock()?;
    match state.current()?.hold {
        None => say(common, "not held; nothing to do"),
        Some(h) => {
            state.set_hold(None)?;
            crate::outcome::outcome("released");
            say(
                common,
                &format!(
                    "released the hold on {} (held since {}); the next apply runs as usual",
                    on(&h),
                    format_time(h.time)
                ),
            );
        }
    }
    Ok(Exit::Success)
}

/// "generation N (/nix/store/…)", as status and messages say it.
pub fn on(h: &Hold) -> String {
    match (&h.store_path, h.generation) {
        (Some(p), Some(n)) => format!("generation {n} ({p})"),
        (Some(p), None) => p.clone(),
        _ => "no system yet (the profile does not exist)".to_string(),
    }
}

fn say(_common: &Common, msg: &str) {
    crate::ui::say(msg);
}
