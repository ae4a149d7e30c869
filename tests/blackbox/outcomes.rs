//! What a run reports about itself, through the real binary against the
//! FlakeHub stand-in: the `--json` stream's closing `result` event for
//! every kind of ending, and what status and the metrics file record.

use miniserde::json::{self, Value};

use crate::decisions::{can_chroot, deploy, path};
use crate::support::deploy::no_secret;
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

/// The metrics file's samples (name with labels → value).
fn samples(file: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_run_with_nothing_to_do_records_a_check() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    let mf = d.tmp.path().join("fh-lite.prom");
    let mfs = mf.to_str().unwrap();
    assert_eq!(d.apply("=0.1.1", &["-q", "--metrics-file", mfs]).code, 0);
    let first = samples(&mf);

    // A run with nothing to do records that the device checked in.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(d.apply("=0.1.1", &["-q", "--metrics-file", mfs]).code, 0);
    let m = samples(&mf);
    let check: u64 = m
        .get("fh_lite_last_check_timestamp_seconds")
        .unwrap_or_else(|| panic!("no last check: {m:?}"))
        .parse()
        .unwrap();
    let run_ts: u64 = first["fh_lite_last_run_timestamp_seconds"].parse().unwrap();
    assert!(check > run_ts - 5, "{m:?}");
    let st = d.fh(&["status"]).stdout;
    let line = st
        .lines()
        .find(|l| l.starts_with("last check"))
        .unwrap_or_else(|| panic!("{st}"));
    assert!(
        line.ends_with(" UTC (an apply resolved its reference)"),
        "{line}"
    );
    assert!(
        d.fh(&["status", "--json"])
            .stdout
            .contains(&format!("\"last_check\":{check}")),
        "{st}"
    );
}

#[test]
fn a_deferral_is_not_a_success() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    let mf = d.tmp.path().join("fh-lite.prom");
    let mfs = mf.to_str().unwrap();
    assert_eq!(d.apply("=0.1.1", &["-q", "--metrics-file", mfs]).code, 0);
    let ok = samples(&mf)["fh_lite_last_success_timestamp_seconds"].clone();
    // Deferred (43): staged, not a success.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut c = d.command(
        "=0.1.4",
        &["-q", "--metrics-file", mfs, "--window", "10:00-11:00"],
    );
    c.env("FH_LITE_TEST_NOW", "1800000000").env("TZ", "UTC0");
    let r = no_secret(output(c));
    assert_eq!(r.code, 43, "{r:?}");
    let m = samples(&mf);
    assert_eq!(m["fh_lite_last_exit_code"], "43");
    assert_eq!(m["fh_lite_last_success_timestamp_seconds"], ok, "{m:?}");
}

#[test]
fn a_failed_rollback_names_the_system_it_left() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    let mf = d.tmp.path().join("fh-lite.prom");
    let mfs = mf.to_str().unwrap();
    let (v1, bad) = (path("system-v1"), path("system-exit1"));
    assert_eq!(d.apply("=0.1.1", &["-q", "--metrics-file", mfs]).code, 0);
    // A rollback to the broken generation whose script fails (33): the
    // metrics name the system the profile now holds.
    assert_eq!(d.apply("=0.1.2", &["-q"]).code, 32);
    let r = d.fh(&["rollback", "--to", "2", "--metrics-file", mfs]);
    assert_eq!(r.code, 33, "{r:?}");
    let m = samples(&mf);
    let info: Vec<&String> = m
        .keys()
        .filter(|k| k.starts_with("fh_lite_deployed_info"))
        .collect();
    assert_eq!(info.len(), 1, "{m:?}");
    assert!(info[0].contains(&format!("store_path=\"{bad}\"")), "{m:?}");
    assert!(!info[0].contains(&v1), "{m:?}");
    assert_eq!(m["fh_lite_generation"], "2");
}

#[test]
fn an_interrupted_transfer_records_what_arrived() {
    if !can_chroot() {
        return;
    }
    let d = crate::support::deploy::Deploy::new(
        "zstd",
        &[("0.1.1", "system-slow-v2")],
        r#"{"slow": [{"prefix": "/nar/", "chunk": 1048576, "delay_ms": 200}]}"#,
    );
    let mf = d.tmp.path().join("fh-lite.prom");
    let mut c = d.command(
        "=0.1.1",
        &["--json", "--metrics-file", mf.to_str().unwrap()],
    );
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Wait for the transfer to start, give it two seconds, then Ctrl-C.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut planned = 0u64;
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0 {
        if line.contains("\"event\":\"plan\"") || line.contains("\"path_count\"") {
            let v: Value = json::from_str(line.trim()).unwrap();
            if let Value::Object(o) = v {
                planned = number(&o, "download_bytes").unwrap_or(0);
            }
        }
        if line.contains("path-start") {
            break;
        }
        line.clear();
    }
    assert!(planned > 30 << 20, "the plan: {planned}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42), "{rest}");
    let st = d.fh(&["status", "--json"]).stdout;
    let v: Value = json::from_str(st.trim()).unwrap();
    let Value::Object(o) = v else { panic!("{st}") };
    let Some(Value::Object(last)) = o.get("last_attempt") else {
        panic!("{st}")
    };
    let bytes = number(last, "bytes_downloaded").unwrap();
    assert!(
        bytes < planned / 2,
        "recorded {bytes} of {planned} planned: {st}"
    );
    let m = samples(&mf);
    let metric: u64 = m["fh_lite_last_downloaded_bytes"].parse().unwrap();
    assert_eq!(metric, bytes, "{m:?}");
}
