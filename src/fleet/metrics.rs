//! `--metrics-file PATH`: after every apply, rollback or recover (success,
//! failure, no-op, recovery), the Prometheus text format for
//! node_exporter's textfile collector, written atomically (a temporary
//! file under a random name in the same directory, created O_EXCL and not
//! following symlinks, fsync, rename, fsync of the directory), so
//! a scrape never sees half a file.
//!
//! The values come from what the run returned and from what it left:
//! state.json, the profile and the device token file. The last success
//! time survives a run that records nothing (a no-op) through the previous
//! metrics file itself.

use std::path::Path;

use crate::activate::Ctx;
use crate::error::{Error, Exit};
use crate::machine::Machine;

/// What main knows of the run.
pub struct Run {
    /// Unix seconds at its start.
    pub started: u64,
    pub duration_secs: f64,
    pub exit: Exit,
}

/// Write the metrics of `run`; a failure is a warning (the run's exit
/// status stands).
pub fn write_after(machine: &Machine, token_file: Option<&Path>, path: &Path, run: &Run) {
    if let Err(e) = write(machine, token_file, path, run) {
        crate::ui::warn(&format!("metrics file not written: {e}"));
    }
}

fn write(
    machine: &Machine,
    token_file: Option<&Path>,
    path: &Path,
    run: &Run,
) -> Result<(), Error> {
    let text = render(machine, token_file, path, run);
    // A random temporary name, created O_EXCL|O_NOFOLLOW, renamed over
    // the file: a textfile directory others can write to cannot redirect
    // the write (rootfs::Dir::write_atomic).
    crate::rootfs::write_file(None, path, 0o644, text.as_bytes())
        .map_err(|e| Error::io("write metrics file", path, &e))
}

/// One metric: HELP, TYPE and its samples.
struct Out(String);

impl Out {
    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
        self.0.push_str(&format!(
            "# HELP fh_lite_{name} {help}\n# TYPE fh_lite_{name} {kind}\n"
        ));
        for (labels, value) in samples {
            self.0
                .push_str(&format!("fh_lite_{name}{labels} {value}\n"));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl ToString) {
        self.metric(name, "gauge", help, &[(String::new(), value.to_string())]);
    }
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render(machine: &Machine, token_file: Option<&Path>, path: &Path, run: &Run) -> String {
    let state = machine.state().load().unwrap_or_default();
    let ok = matches!(run.exit, Exit::Success | Exit::RebootNeeded);
    let now = run.started + run.duration_secs as u64;
    let previous_ok = previous(path, "fh_lite_last_success_timestamp_seconds");
    let recorded_ok = state.last_success.as_ref().map(|r| r.time);
    // A run that did not succeed keeps the value the file had; the state
    // file's record (its start time, which may be a second later than
    // this file's end time of the same run) only fills a gap.
    let last_ok = match ok {
        true => Some(now),
        false => previous_ok.or(recorded_ok),
    };
    // Bytes of this run's attempt (none for a no-op).
    let bytes = (state.last_attempt.as_ref())
        .filter(|a| a.time >= run.started)
        .map_or(0, |a| a.bytes_downloaded);
    let current = Ctx::new(machine).profile.current_target().ok().flatten();
    let generation = current.as_ref().map(|g| g.number);
    // What runs: the last success, unless a rollback whose script failed
    // (33) left the profile on the system it switched to since.
    let deployed = match &state.last_attempt {
        Some(a)
            if a.exit_code == Some(Exit::RollbackFailed.code())
                && current.as_ref().is_some_and(|g| g.target == a.store_path) =>
        {
            Some(a)
        }
        _ => state.last_success.as_ref(),
    };
    let reboot = state.fleet.as_ref().is_some_and(|f| f.reboot.is_some());
    let token = crate::source::flakehub::token_info(token_file)
        .ok()
        .and_then(|t| t.expires_at);

    let mut o = Out(String::new());
    o.gauge(
        "last_run_timestamp_seconds",
        "When the last fh-lite run ended (unix time).",
        now,
    );
    if let Some(t) = last_ok {
        o.gauge(
            "last_success_timestamp_seconds",
            "When a run last ended in success, nothing to do, or applied with a reboot needed (unix time).",
            t,
        );
    }
    if let Some(t) = state.last_check {
        o.gauge(
            "last_check_timestamp_seconds",
            "When an apply last resolved its reference, even with nothing to do (unix time).",
            t,
        );
    }
    o.gauge(
        "last_exit_code",
        "Exit status of the last run (see fh-lite --help).",
        run.exit.code(),
    );
    o.gauge(
        "last_downloaded_bytes",
        "Bytes downloaded by the last run.",
        bytes,
    );
    // With --mirror: bytes per source (every mirror, then the upstream).
    if crate::cache::mirror::any() {
        let samples: Vec<(String, String)> = (crate::cache::mirror::by_source().iter())
            .map(|(s, b)| (format!("{{source=\"{}\"}}", label(s)), b.to_string()))
            .collect();
        o.metric(
            "last_downloaded_bytes_by_source",
            "gauge",
            "Bytes the last run read from each source: every --mirror, then the upstream cache.",
            &samples,
        );
    }
    o.gauge(
        "last_duration_seconds",
        "Duration of the last run.",
        format!("{:.3}", run.duration_secs),
    );
    if let Some(g) = generation {
        o.gauge("generation", "The profile's current generation.", g);
    }
    o.gauge(
        "reboot_needed",
        "1 when the applied system waits for a reboot.",
        u8::from(reboot),
    );
    o.gauge(
        "trial_boot_pending",
        "1 while a trial boot waits for its reboot or its confirmation.",
        u8::from(state.trial_boot.is_some()),
    );
    if let Some(t) = &state.last_trial_boot {
        o.metric(
            "last_trial_boot_info",
            "gauge",
            "How the last trial boot ended: committed, did-not-boot, health-check-failed or undone (value always 1).",
            &[(
                format!(
                    "{{store_path=\"{}\",result=\"{}\"}}",
                    label(&t.store_path),
                    label(&t.result)
                ),
                "1".to_string(),
            )],
        );
    }
    o.gauge(
        "held",
        "1 while 'fh-lite hold' holds the device on its release.",
        u8::from(state.hold.is_some()),
    );
    o.gauge(
        "failed_paths",
        "Store paths remembered as failed (skipped unless --retry-failed).",
        state.failed.len(),
    );
    if let Some(exp) = token {
        o.gauge(
            "token_expiry_timestamp_seconds",
            "When the device token expires (unix time).",
            exp,
        );
    }
    if let Some(s) = deployed {
        o.metric(
            "deployed_info",
            "gauge",
            "The deployed reference and store path (value always 1).",
            &[(
                format!(
                    "{{reference=\"{}\",store_path=\"{}\"}}",
                    label(&s.reference),
                    label(&s.store_path)
                ),
                "1".to_string(),
            )],
        );
    }
    o.0
}

/// A value in the previous metrics file, if any.
fn previous(path: &Path, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn renders_help_type_and_keeps_last_success() {
        let t = crate::testutil::TempDir::new("metrics");
        let c = crate::testutil::common(t.path());
        let file = t.path().join("fh.prom");
        let run = |exit| Run {
            started: 1_000,
            duration_secs: 2.5,
            exit,
        };
        write(&c.machine(), None, &file, &run(Exit::Success)).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("# HELP fh_lite_last_exit_code "), "{text}");
        assert!(
            text.contains("# TYPE fh_lite_last_exit_code gauge\nfh_lite_last_exit_code 0\n"),
            "{text}"
        );
        assert!(
            text.contains("fh_lite_last_success_timestamp_seconds 1002\n"),
            "{text}"
        );
        write(
            &c.machine(),
            None,
            &file,
            &Run {
                started: 2_000,
                ..run(Exit::Network)
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("fh_lite_last_exit_code 15\n"), "{text}");
        assert!(
            text.contains("fh_lite_last_success_timestamp_seconds 1002\n"),
            "{text}"
        );
        assert!(
            text.contains("fh_lite_last_run_timestamp_seconds 2002\n"),
            "{text}"
        );
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            !names.iter().any(|n| n.to_string_lossy().contains(".tmp-")),
            "{names:?}"
        );
    }
}
