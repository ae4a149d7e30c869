//! `fh-lite status [--json]`: the profile's generations, the running
//! system, the state file's history, and which device token file would be
//! used (never the token). [`gather`] reads, [`render_text`] and
//! [`render_json`] only format.

use std::path::{Path, PathBuf};

use miniserde::{json, Serialize};

use crate::activate::Ctx;
use crate::error::{Error, Exit};
use crate::options::Common;
use crate::source::flakehub;
use crate::state::{format_time, FailedPath, Hold, Pending, Record, Scheduled};
use crate::util::unix_now;

pub fn run(common: &Common) -> Result<Exit, Error> {
    let status = gather(common)?;
    crate::ui::print_stdout(&if common.json {
        render_json(&status)
    } else {
        render_text(&status)
    });
    Ok(Exit::Success)
}

/// Everything `status` shows, read once; `json` is what `--json` prints.
pub struct Status {
    json: StatusJson,
    /// `/run/current-system` (under `--root`).
    run_link: PathBuf,
    /// Why no device token file is usable.
    token_error: Option<String>,
}

#[derive(Serialize)]
struct StatusJson {
    profile: String,
    generation: Option<u64>,
    generation_path: Option<String>,
    generations: Vec<u64>,
    current_system: Option<String>,
    last_attempt: Option<Record>,
    last_success: Option<Record>,
    failed: Vec<FailedPath>,
    /// The unfinished attempt (state.json's journal), or null.
    pending: Option<Pending>,
    /// The device token file in use (never the token), if one is found.
    token_file: Option<String>,
    /// Its JWT `exp`, unix seconds, when it is a JWT.
    token_expires_at: Option<i64>,
    /// Where fh-lite looks for the device token, in order.
    token_searched: Vec<String>,
    /// The store path applied that waits for a reboot (fleet/mod.rs), or null.
    reboot_needed: Option<String>,
    /// `--rollout-spread` schedule: when each newly seen path activates.
    rollout: Vec<Scheduled>,
    /// The highest exact version applied, by `org/project#attr`.
    versions: std::collections::BTreeMap<String, String>,
    /// `fh-lite hold`: what the device is held on, or null.
    held: Option<Hold>,
    /// When an apply last resolved its reference (unix seconds), or null.
    last_check: Option<u64>,
    /// The trial boot in progress (its journal entry), or null.
    trial_boot: Option<crate::boot::TrialBoot>,
    /// How the last trial boot ended, or null.
    last_trial_boot: Option<crate::boot::TrialOutcome>,
    /// With a trial boot recorded: whether a watchdog device is active
    /// (/sys/class/watchdog/*/state); null without trial boots.
    watchdog_active: Option<bool>,
}

pub fn gather(common: &Common) -> Result<Status, Error> {
    let machine = common.machine();
    let ctx = Ctx::new(&machine);
    let current = ctx.profile.current_target()?;
    let state = machine.state().load()?;
    let token = flakehub::token_info(common.token_file.as_deref());
    let fleet = state.fleet.unwrap_or_default();
    let versions = crate::versions::all(&machine.state())?;
    let trials = state.trial_boot.is_some() || state.last_trial_boot.is_some();
    let json = StatusJson {
        profile: common.profile.display().to_string(),
        generation: current.as_ref().map(|g| g.number),
        generation_path: current.map(|g| g.target),
        generations: ctx
            .profile
            .generations()?
            .iter()
            .map(|g| g.number)
            .collect(),
        current_system: ctx.current_system(),
        last_attempt: state.last_attempt,
        last_success: state.last_success,
        failed: state.failed,
        pending: state.pending,
        token_file: token.as_ref().ok().map(|t| t.path.display().to_string()),
        token_expires_at: token.as_ref().ok().and_then(|t| t.expires_at),
        token_searched: flakehub::token_candidates(common.token_file.as_deref(), &|k| {
            std::env::var(k).ok()
        })
        .iter()
        .map(|p| p.display().to_string())
        .collect(),
        reboot_needed: fleet.reboot.map(|p| p.store_path),
        rollout: fleet.rollout,
        versions,
        held: state.hold,
        last_check: state.last_check,
        watchdog_active: trials
            .then(|| crate::boot::watchdog_armed(common.root.as_deref()).unwrap_or(false)),
        trial_boot: state.trial_boot,
        last_trial_boot: state.last_trial_boot,
    };
    Ok(Status {
        json,
        run_link: ctx.real(Path::new("/run/current-system")),
        token_error: token.err().map(|e| e.to_string()),
    })
}

pub fn render_json(s: &Status) -> String {
    json::to_string(&s.json) + "\n"
}

pub fn render_text(s: &Status) -> String {
    let j = &s.json;
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<15} {v}\n"));
    line("profile", &j.profile);
    line(
        "generation",
        &match (j.generation, &j.generation_path) {
            (Some(n), Some(target)) => format!("{n} -> {target}"),
            _ => "none (the profile does not exist)".to_string(),
        },
    );
    let generations = match j.generations.iter().map(u64::to_string).collect::<Vec<_>>() {
        g if g.is_empty() => "none".to_string(),
        g => g.join(" "),
    };
    line("generations", &generations);
    let link = s.run_link.display();
    line(
        "current system",
        &match &j.current_system {
            Some(t) => format!("{t} ({link})"),
            None => format!("unknown ({link} does not exist)"),
        },
    );
    let record = |r: &Option<Record>| r.as_ref().map_or("none".to_string(), record_line);
    line("last attempt", &record(&j.last_attempt));
    line("last success", &record(&j.last_success));
    if let Some(t) = j.last_check {
        let t = format_time(t);
        line(
            "last check",
            &format!("{t} (an apply resolved its reference)"),
        );
    }
    if j.failed.is_empty() {
        line("failed paths", "none");
    }
    for (i, f) in j.failed.iter().enumerate() {
        let (path, time) = (&f.store_path, format_time(f.time));
        line(
            if i == 0 { "failed paths" } else { "" },
            &format!("{path} ({}, {} at {time})", f.reference, f.result),
        );
    }
    if let Some(p) = &j.pending {
        line("pending", &pending_line(p));
    }
    if let Some(p) = &j.reboot_needed {
        line(
            "reboot needed",
            &format!("{p}; a run with --reboot if-needed (inside --reboot-window) reboots"),
        );
    }
    if let Some(h) = &j.held {
        line(
            "held",
            &format!(
                "on {} since {}; apply changes nothing (exit 44) until 'fh-lite unhold'",
                crate::cmd::hold::on(h),
                format_time(h.time)
            ),
        );
    }
    let now = crate::fleet::schedule::now();
    for (i, r) in j.rollout.iter().enumerate() {
        let when = match r.activate_at > now {
            true => "waiting",
            false => "due",
        };
        line(
            if i == 0 { "rollout" } else { "" },
            &format!(
                "{} ({}): first seen {}, activates at {} ({when})",
                r.store_path,
                r.reference,
                format_time(r.first_seen),
                format_time(r.activate_at)
            ),
        );
    }
    if let Some(t) = &j.trial_boot {
        let gen = t
            .generation
            .map_or(String::new(), |n| format!("generation {n}, "));
        let entry = t.entry.as_deref().unwrap_or("no entry yet");
        let pinned = t.pinned.as_deref().unwrap_or("the running entry");
        line(
            "trial boot",
            &format!(
                "{} ({gen}{} {entry}, {}, since {}); the default stays {pinned} until it booted and passed its health check",
                t.store_path,
                t.loader,
                t.phase,
                format_time(t.time)
            ),
        );
    }
    if let Some(o) = &j.last_trial_boot {
        line(
            "last trial boot",
            &format!(
                "{}: {} at {}: {}",
                o.store_path,
                o.result,
                format_time(o.time),
                o.reason
            ),
        );
    }
    if j.watchdog_active == Some(false) {
        line(
            "warning",
            "trial boots are used, but no active watchdog was found (/sys/class/watchdog): a new system that hangs while booting is not reset; on NixOS set systemd.watchdog.runtimeTime",
        );
    }
    for (i, (k, v)) in j.versions.iter().enumerate() {
        line(if i == 0 { "versions" } else { "" }, &format!("{k} = {v}"));
    }
    line("token search", &j.token_searched.join(", "));
    line("token file", &token_line(s));
    out
}

/// What the journal says and what the next run does about it.
fn pending_line(p: &Pending) -> String {
    let phase = p.phase();
    let alive =
        p.pid != std::process::id() && std::path::Path::new(&format!("/proc/{}", p.pid)).exists();
    if alive {
        return format!(
            "{} ({}, {} now: pid {} may still be running it)",
            p.store_path,
            p.action,
            phase.as_str(),
            p.pid
        );
    }
    if p.action == crate::state::ROLLBACK_ACTION {
        let n = p.generation.map_or("?".to_string(), |n| n.to_string());
        return format!(
            "{} (rollback to generation {n}, killed before its switch script finished); the next run will switch to it again",
            p.store_path
        );
    }
    if p.rebooting == Some(true) {
        return format!(
            "{} ({}, rebooted into it); the next run confirms it with the health check",
            p.store_path, p.action
        );
    }
    let next = match crate::journal::decide(phase) {
        crate::journal::Decision::Clear => "start it over",
        crate::journal::Decision::Resume => "resume it",
        crate::journal::Decision::RollBack => "roll it back",
    };
    format!(
        "{} ({}, killed during {}); the next run will {next}",
        p.store_path,
        p.action,
        phase.as_str()
    )
}

fn record_line(r: &Record) -> String {
    let generation = r
        .generation
        .map_or(String::new(), |g| format!(", generation {g}"));
    let exit = r
        .exit_code
        .map_or(String::new(), |c| format!(" (exit {c})"));
    let sources = match &r.bytes_by_source {
        Some(s) if !s.is_empty() => {
            let each: Vec<String> = (s.iter())
                .map(|x| format!("{} from {}", x.bytes, x.source))
                .collect();
            format!(" ({})", each.join(", "))
        }
        _ => String::new(),
    };
    format!(
        "{}: {} -> {}{generation}: {}{exit}, {} ms, {} bytes downloaded{sources}",
        format_time(r.time),
        r.reference,
        r.store_path,
        r.result,
        r.duration_ms,
        r.bytes_downloaded
    )
}

fn token_line(s: &Status) -> String {
    let (file, expires) = match (&s.json.token_file, &s.token_error) {
        (Some(file), _) => (file, s.json.token_expires_at),
        (None, e) => return format!("none usable: {}", e.as_deref().unwrap_or("")),
    };
    let Some(exp) = expires else {
        return format!("{file} (no expiry: not a JWT)");
    };
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let expired = if exp < now { ", EXPIRED" } else { "" };
    let at = format_time(u64::try_from(exp).unwrap_or(0));
    format!("{file} (expires {at}{expired})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{common, TempDir};

    const P: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-a";

    /// The token lines depend on the test process's environment (HOME,
    /// /etc/fh-lite/token); black-box tests cover them.
    fn text(c: &Common) -> String {
        render_text(&gather(c).unwrap())
            .lines()
            .filter(|l| !l.starts_with("token "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn status_shows_generation_running_system_and_history() {
        let t = TempDir::new("status");
        let root = t.path();
        let c = common(root);
        assert_eq!(
            text(&c),
            format!(
                "profile         {}\ngeneration      none (the profile does not exist)\ngenerations     none\ncurrent system  unknown ({}/run/current-system does not exist)\nlast attempt    none\nlast success    none\nfailed paths    none\n",
                c.profile.display(),
                root.display()
            )
        );
        let p = crate::activate::profiles::Profile::new(&c.profile, Some(root));
        p.create_generation(P).unwrap();
        p.switch_to(1).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::os::unix::fs::symlink(P, root.join("run/current-system")).unwrap();
        crate::state::StateDir::new(&c.state_dir)
            .mark_failed(
                "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b",
                "org/p/1",
                Exit::RolledBack,
            )
            .unwrap();
        let text = text(&c);
        assert!(text.contains(&format!("\ngeneration      1 -> {P}\ngenerations     1\ncurrent system  {P} ({}/run/current-system)\n", root.display())), "{text}");
        assert!(text.contains("failed paths    /nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b (org/p/1, rolled-back at "), "{text}");
        let j = render_json(&gather(&c).unwrap());
        assert!(j.contains(&format!("\"generation\":1,\"generation_path\":\"{P}\",\"generations\":[1],\"current_system\":\"{P}\",\"last_attempt\":null,")), "{j}");
    }

    #[test]
    fn a_reboot_confirmation_is_named_as_such() {
        let mut p = crate::state::Pending {
            store_path: P.into(),
            action: "switch".into(),
            phase: "health-check".into(),
            pid: 999_999,
            ..crate::state::Pending::default()
        };
        assert_eq!(
            pending_line(&p),
            format!("{P} (switch, killed during health-check); the next run will resume it")
        );
        p.rebooting = Some(true);
        assert_eq!(
            pending_line(&p),
            format!(
                "{P} (switch, rebooted into it); the next run confirms it with the health check"
            )
        );
    }
}
