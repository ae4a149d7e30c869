//! Helpers every layer shares: how a byte count is shown, the clock in
//! Unix seconds, and what /proc says about a process (to tell a dead
//! run's pid from a later process that got the same number). A leaf: it
//! imports nothing from the crate.

/// A byte count for people, the one format of every message: `1012 B`,
/// `3.5 KiB`, `12.3 MiB`, `1.5 GiB` (binary units, one decimal).
pub fn size(bytes: u64) -> String {
    const UNITS: [(f64, &str); 3] = [(1024.0 * MIB, "GiB"), (MIB, "MiB"), (1024.0, "KiB")];
    for (unit, name) in UNITS {
        if bytes as f64 >= unit {
            return format!("{:.1} {name}", bytes as f64 / unit);
        }
    }
    format!("{bytes} B")
}
pub const MIB: f64 = 1024.0 * 1024.0;

/// Seconds since the Unix epoch (0 if the clock is set before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `(state, process group, start time)` of `pid` from /proc/PID/stat
/// (fields 3, 5 and 22; the start time in clock ticks after boot).
pub fn proc_stat(pid: u32) -> Option<(char, u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp …; comm may hold spaces and parens.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f.first()?.chars().next()?,
        f.get(2)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

/// This boot's id (/proc/sys/kernel/random/boot_id), if readable: start
/// times in clock ticks compare only within one boot.
pub fn boot_id() -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let s = s.trim();
    (s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then(|| s.to_string())
}

/// Variables through which the C library and the dynamic loader load code
/// or read data chosen by whoever set them (glibc ignores them for setuid
/// programs for that reason). Programs fh-lite runs as root (activation
/// scripts, health checks, nix-store, nix, date, systemctl) never inherit
/// them: [`scrub_env`].
const UNSAFE_ENV: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
];

/// Remove from `cmd`'s environment every `LD_*` variable and those of
/// [`UNSAFE_ENV`] that fh-lite inherited. What the caller sets on `cmd`
/// afterwards is kept.
pub fn scrub_env(cmd: &mut std::process::Command) {
    scrub_env_of(cmd, std::env::vars_os().map(|(k, _)| k));
}

fn scrub_env_of(cmd: &mut std::process::Command, names: impl Iterator<Item = std::ffi::OsString>) {
    for k in names {
        let k = k.to_string_lossy();
        if k.starts_with("LD_") || UNSAFE_ENV.contains(&&*k) {
            cmd.env_remove(&*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_run_as_root_inherit_no_loader_variables() {
        // Set on the command as fh-lite would have inherited them.
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args([
            "-c",
            "echo ${LD_LIBRARY_PATH-none} ${GCONV_PATH-none} ${KEEP-none}",
        ]);
        cmd.env("LD_LIBRARY_PATH", "/evil")
            .env("GCONV_PATH", "/evil");
        cmd.env("KEEP", "kept");
        let inherited = ["LD_LIBRARY_PATH", "GCONV_PATH", "KEEP", "PATH"];
        scrub_env_of(&mut cmd, inherited.iter().map(std::ffi::OsString::from));
        cmd.env("KEEP", "kept");
        let out = cmd.output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "none none kept\n");
    }

    #[test]
    fn size_picks_the_unit() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1012), "1012 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(3584), "3.5 KiB");
        assert_eq!(size(1024 * 1024 + 52_429), "1.1 MiB");
        assert_eq!(size(1_610_612_736), "1.5 GiB");
    }

    #[test]
    fn unix_now_is_after_this_code_was_written() {
        // 2024-01-01T00:00:00Z
        assert!(unix_now() > 1_704_067_200);
    }
}
