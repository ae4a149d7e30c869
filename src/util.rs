//! Two helpers every layer shares: how a byte count is shown, and the
//! clock in Unix seconds. A leaf: it imports nothing from the crate.

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
