//! The `--json` stream's closing line: every command that runs something
//! (apply, fetch, bundle create, rollback, recover, hold, unhold) ends its
//! `--json` output with exactly one `result` event (README: "JSON output"):
//!
//! ```text
//! {"event":"result","command":"apply","exit_code":32,"exit":"rolled-back",
//!  "outcome":"rolled-back","store_path":"/nix/store/…","generation":3,
//!  "action":"switch","message":"…"}
//! ```
//!
//! Commands note what they learn as they go ([`store_path`],
//! [`generation`], [`action`], [`outcome`]); `main` prints the line from
//! that and the exit status. What is not known is null.

use std::sync::Mutex;

use crate::error::{Error, Exit};

#[derive(Default)]
struct Noted {
    store_path: Option<String>,
    generation: Option<u64>,
    action: Option<String>,
    outcome: Option<&'static str>,
}

static NOTED: Mutex<Noted> = Mutex::new(Noted {
    store_path: None,
    generation: None,
    action: None,
    outcome: None,
});

fn note(f: impl FnOnce(&mut Noted)) {
    // A poisoned lock only loses a field of the result line.
    if let Ok(mut n) = NOTED.lock() {
        f(&mut n)
    }
}

/// The store path the command works on (resolved, fetched, switched to).
pub fn store_path(p: impl ToString) {
    note(|n| n.store_path = Some(p.to_string()));
}

/// The profile generation it made or switched to.
pub fn generation(g: Option<u64>) {
    if g.is_some() {
        note(|n| n.generation = g);
    }
}

/// The activation action (`switch`, `boot`, …, `rollback`).
pub fn action(a: &str) {
    note(|n| n.action = Some(a.to_string()));
}

/// What happened when the exit status alone does not say it:
/// `activated`, `already-current`, `dry-run`, `staged`, `fetched`, …
pub fn outcome(o: &'static str) {
    note(|n| n.outcome = Some(o));
}

/// The word for a run that noted none.
fn default_outcome(exit: Exit) -> &'static str {
    match exit {
        Exit::Success => "done",
        Exit::RebootNeeded => "activated",
        Exit::RolledBack => "rolled-back",
        Exit::ActivationFailed | Exit::ActivationPartial | Exit::RollbackFailed => {
            "activation-failed"
        }
        Exit::SkippedFailed => "skipped-failed",
        Exit::Downgrade => "refused-downgrade",
        Exit::Deferred => "staged",
        Exit::Held => "held",
        Exit::Interrupted => "interrupted",
        Exit::AlreadyRunning => "already-running",
        _ => "failed",
    }
}

/// The `result` line of `command` that ended with `result`.
pub fn line(command: &str, result: &Result<Exit, Error>) -> String {
    let (exit, message) = match result {
        Ok(x) => (*x, None),
        Err(e) => (e.exit, Some(e.message.clone())),
    };
    let n = NOTED.lock().map(|n| Noted {
        store_path: n.store_path.clone(),
        generation: n.generation,
        action: n.action.clone(),
        outcome: n.outcome,
    });
    let n = n.unwrap_or_default();
    // An error overrides what was noted before it ("activated" then a
    // failed rollback, say).
    let outcome = match (&message, n.outcome) {
        (None, Some(o)) => o,
        _ => default_outcome(exit),
    };
    let out = ResultEvent {
        event: "result",
        command: command.to_string(),
        exit_code: exit.code(),
        exit: exit.name(),
        outcome,
        store_path: n.store_path,
        generation: n.generation,
        action: n.action,
        message,
    };
    miniserde::json::to_string(&out) + "\n"
}

#[derive(miniserde::Serialize)]
struct ResultEvent {
    event: &'static str,
    command: String,
    exit_code: u8,
    exit: &'static str,
    outcome: &'static str,
    store_path: Option<String>,
    generation: Option<u64>,
    action: Option<String>,
    message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_names_its_exit_and_message() {
        let r: Result<Exit, Error> = Err(Error::new(Exit::Forbidden, "no \"x\""));
        assert_eq!(
            line("resolve", &r),
            "{\"event\":\"result\",\"command\":\"resolve\",\"exit_code\":11,\"exit\":\"forbidden\",\"outcome\":\"failed\",\"store_path\":null,\"generation\":null,\"action\":null,\"message\":\"no \\\"x\\\"\"}\n"
        );
    }
}
