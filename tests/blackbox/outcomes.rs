//! What a run reports about itself, through the real binary against the
//! FlakeHub stand-in: the `--json` stream's closing `result` event for
//! every kind of ending, and what status and the metrics file record.

use miniserde::json::{self, Value};

use crate::apply::no_secret;
use crate::decisions::{can_chroot, deploy, path};
use crate::support::util::{output, Run};

/// Every stdout line is a JSON object with an `event`; exactly one is a
/// `result`, and it is the last. Returns (events in order, the result).
fn events(r: &Run) -> (Vec<String>, json::Object) {
    let mut names = Vec::new();
    let mut last = None;
    for line in r.stdout.lines() {
        let v: Value = json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}: {r:?}"));
        let Value::Object(o) = v else {
            panic!("not an object: {line}")
        };
        match o.get("event") {
            Some(Value::String(e)) => names.push(e.clone()),
            _ => panic!("a line without an event: {line}"),
        }
        last = Some(o);
    }
    let results = names.iter().filter(|e| *e == "result").count();
    assert_eq!(results, 1, "exactly one result event: {r:?}");
    assert_eq!(names.last().map(String::as_str), Some("result"), "{r:?}");
    (names, last.unwrap())
}

fn text(o: &json::Object, k: &str) -> Option<String> {
    match o.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) => None,
        other => panic!("{k}: {other:?}"),
    }
}

fn number(o: &json::Object, k: &str) -> Option<u64> {
    match o.get(k) {
        Some(Value::Number(json::Number::U64(n))) => Some(*n),
        Some(Value::Null) => None,
        other => panic!("{k}: {other:?}"),
    }
}

/// (exit_code, exit, outcome, store_path, generation) of a result event.
fn summary(o: &json::Object) -> (u64, String, String, Option<String>, Option<u64>) {
    (
        number(o, "exit_code").expect("exit_code"),
        text(o, "exit").expect("exit"),
        text(o, "outcome").expect("outcome"),
        text(o, "store_path"),
        number(o, "generation"),
    )
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn json_runs_end_with_one_result_event() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    let (v1, bad, v2) = (path("system-v1"), path("system-exit1"), path("system-v2"));

    // success
    let r = d.apply("=0.1.1", &["--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (names, o) = events(&r);
    assert_eq!(names.first().map(String::as_str), Some("plan"), "{r:?}");
    assert_eq!(
        summary(&o),
        (0, s("success"), s("activated"), Some(v1.clone()), Some(1))
    );
    assert_eq!(text(&o, "command").as_deref(), Some("apply"));
    assert_eq!(text(&o, "action").as_deref(), Some("switch"));
    assert_eq!(text(&o, "message"), None);

    // no-op
    let r = d.apply("=0.1.1", &["--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (names, o) = events(&r);
    assert_eq!(names, ["result"]);
    assert_eq!(
        summary(&o),
        (
            0,
            s("success"),
            s("already-current"),
            Some(v1.clone()),
            Some(1)
        )
    );

    // activation failed, rolled back: "done" (the transfer) is not the end
    let r = d.apply("=0.1.2", &["--json"]);
    assert_eq!(r.code, 32, "{r:?}");
    let (names, o) = events(&r);
    assert!(names.contains(&s("done")), "{names:?}");
    assert_eq!(
        summary(&o),
        (
            32,
            s("rolled-back"),
            s("rolled-back"),
            Some(bad.clone()),
            Some(2)
        )
    );
    let msg = text(&o, "message").expect("a message");
    assert!(msg.contains("rolled back to generation 1"), "{msg}");

    // skipped (failed before)
    let r = d.apply("=0.1.2", &["--json"]);
    assert_eq!(r.code, 34, "{r:?}");
    let (_, o) = events(&r);
    assert_eq!(
        summary(&o),
        (
            34,
            s("skipped-failed"),
            s("skipped-failed"),
            Some(bad.clone()),
            None
        )
    );

    // an error before anything is known: no such release
    let r = d.apply("=0.1.9", &["--json"]);
    assert_eq!(r.code, 12, "{r:?}");
    let (_, o) = events(&r);
    assert_eq!(summary(&o), (12, s("not-found"), s("failed"), None, None));
    assert!(text(&o, "message").is_some(), "{r:?}");

    // dry run: the plan is an event too
    let r = d.apply("=0.1.4", &["--dry-run", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (names, o) = events(&r);
    assert_eq!(names, ["plan", "result"]);
    assert_eq!(
        summary(&o),
        (0, s("success"), s("dry-run"), Some(v2.clone()), None)
    );

    // deferral (outside the window; 08:00 UTC)
    let mut c = d.command("=0.1.4", &["--json", "--window", "10:00-11:00"]);
    c.env("FH_LITE_TEST_NOW", "1800000000").env("TZ", "UTC0");
    let r = no_secret(output(c));
    assert_eq!(r.code, 43, "{r:?}");
    let (_, o) = events(&r);
    assert_eq!(
        summary(&o),
        (43, s("deferred"), s("staged"), Some(v2.clone()), None)
    );

    // rollback --json: to the failed generation 2 (its script fails: 33)
    let r = d.fh(&["rollback", "--to", "2", "--json"]);
    assert_eq!(r.code, 33, "{r:?}");
    let (_, o) = events(&r);
    assert_eq!(
        summary(&o),
        (
            33,
            s("rollback-failed"),
            s("activation-failed"),
            Some(bad.clone()),
            Some(2)
        )
    );
    assert_eq!(text(&o, "command").as_deref(), Some("rollback"));
    // and back to 1
    let r = d.fh(&["rollback", "--to", "1", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (_, o) = events(&r);
    assert_eq!(
        summary(&o),
        (0, s("success"), s("activated"), Some(v1.clone()), Some(1))
    );
    assert_eq!(text(&o, "action").as_deref(), Some("rollback"));
}
