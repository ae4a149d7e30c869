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

#[cfg(test)]
mod tests {
    use super::*;

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
