//! `fh-lite status [--json]`: the profile's generations, the running
//! system, the state file's history, and which device token file would be
//! used (never the token). [`gather`] reads, [`render_text`] and
//! [`render_json`] only format.

use std::path::{Path, PathBuf};

use miniserde::{json, Serialize};

use crate::activate::profiles::{Generation, Profile};
use crate::cli::Common;
use crate::error::{Error, Exit};
use crate::flakehub::{self, TokenInfo};
use crate::state::{format_time, FailedPath, Record, State, StateDir};

pub fn run(common: &Common) -> Result<Exit, Error> {
    let status = gather(common)?;
    crate::print_stdout(&if common.json {
        render_json(&status)
    } else {
        render_text(&status)
    });
    Ok(Exit::Success)
}

/// Everything `status` shows, read once.
pub struct Status {
    profile: PathBuf,
    current: Option<Generation>,
    generations: Vec<u64>,
    /// `/run/current-system` (under `--root`) and its target.
    run_link: PathBuf,
    current_system: Option<String>,
    state: State,
    /// The device token file and its expiry, or why there is none usable.
    token: Result<TokenInfo, String>,
}

pub fn gather(common: &Common) -> Result<Status, Error> {
    let profile = Profile::new(&common.profile, common.root.as_deref());
    let generations = profile.generations()?.iter().map(|g| g.number).collect();
    let current = profile.current_target()?;
    let run_link = match &common.root {
        Some(r) => r.join("run/current-system"),
        None => PathBuf::from("/run/current-system"),
    };
    let current_system = std::fs::read_link(&run_link)
        .ok()
        .map(|t| t.to_string_lossy().into_owned());
    let state = StateDir::new(&common.state_dir).load()?;
    Ok(Status {
        profile: common.profile.clone(),
        current,
        generations,
        run_link,
        current_system,
        state,
        token: flakehub::token_info(common).map_err(|e| e.to_string()),
    })
}

#[derive(Serialize)]
struct StatusJson<'a> {
    profile: String,
    generation: Option<u64>,
    generation_path: Option<&'a str>,
    generations: &'a [u64],
    current_system: Option<&'a str>,
    last_attempt: &'a Option<Record>,
    last_success: &'a Option<Record>,
    failed: &'a [FailedPath],
    /// The device token file in use (never the token), if one is found.
    token_file: Option<String>,
    /// Its JWT `exp`, unix seconds, when it is a JWT.
    token_expires_at: Option<i64>,
}

pub fn render_json(s: &Status) -> String {
    let token = s.token.as_ref().ok();
    let j = StatusJson {
        profile: s.profile.display().to_string(),
        generation: s.current.as_ref().map(|g| g.number),
        generation_path: s.current.as_ref().map(|g| g.target.as_str()),
        generations: &s.generations,
        current_system: s.current_system.as_deref(),
        last_attempt: &s.state.last_attempt,
        last_success: &s.state.last_success,
        failed: &s.state.failed,
        token_file: token.map(|t| t.path.display().to_string()),
        token_expires_at: token.and_then(|t| t.expires_at),
    };
    json::to_string(&j) + "\n"
}

pub fn render_text(s: &Status) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<15} {v}\n"));
    line("profile", &s.profile.display().to_string());
    line(
        "generation",
        &match &s.current {
            Some(g) => format!("{} -> {}", g.number, g.target),
            None => "none (the profile does not exist)".to_string(),
        },
    );
    let generations: Vec<String> = s.generations.iter().map(u64::to_string).collect();
    line("generations", &or_none(generations.join(" ")));
    line("current system", &current_system(s));
    let record = |r: &Option<Record>| r.as_ref().map_or("none".to_string(), record_line);
    line("last attempt", &record(&s.state.last_attempt));
    line("last success", &record(&s.state.last_success));
    if s.state.failed.is_empty() {
        line("failed paths", "none");
    }
    for (i, f) in s.state.failed.iter().enumerate() {
        line(
            if i == 0 { "failed paths" } else { "" },
            &format!(
                "{} ({}, {} at {})",
                f.store_path,
                f.reference,
                f.result,
                format_time(f.time)
            ),
        );
    }
    line("token file", &token_line(&s.token));
    out
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "none".to_string()
    } else {
        s
    }
}

fn current_system(s: &Status) -> String {
    let link = s.run_link.display();
    match &s.current_system {
        Some(t) => format!("{t} ({link})"),
        None => format!("unknown ({link} does not exist)"),
    }
}

fn record_line(r: &Record) -> String {
    let generation = r
        .generation
        .map_or(String::new(), |g| format!(", generation {g}"));
    let exit = r
        .exit_code
        .map_or(String::new(), |c| format!(" (exit {c})"));
    format!(
        "{}: {} -> {}{generation}: {}{exit}, {} ms, {} bytes downloaded",
        format_time(r.time),
        r.reference,
        r.store_path,
        r.result,
        r.duration_ms,
        r.bytes_downloaded
    )
}

fn token_line(token: &Result<TokenInfo, String>) -> String {
    let t = match token {
        Ok(t) => t,
        Err(e) => return format!("none usable: {e}"),
    };
    let path: &Path = &t.path;
    match t.expires_at {
        Some(exp) => format!(
            "{} (expires {}{})",
            path.display(),
            format_time(u64::try_from(exp).unwrap_or(0)),
            if exp < now_secs() { ", EXPIRED" } else { "" }
        ),
        None => format!("{} (no expiry: not a JWT)", path.display()),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activate::testutil::{common, TempDir};

    const P: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-a";

    /// The token line depends on the test process's environment (HOME,
    /// /nix/var/determinate/token); black-box tests cover it.
    fn text(c: &Common) -> String {
        render_text(&gather(c).unwrap())
            .lines()
            .filter(|l| !l.starts_with("token file"))
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
        let p = Profile::new(&c.profile, Some(root));
        p.create_generation(P).unwrap();
        p.switch_to(1).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::os::unix::fs::symlink(P, root.join("run/current-system")).unwrap();
        StateDir::new(&c.state_dir)
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
}
