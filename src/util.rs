//! Two helpers every layer shares: how a byte count is shown, and the
//! clock in Unix seconds. A leaf: it imports nothing from the crate.

/// Bytes as MiB with one decimal (`12.3 MiB`), in messages and progress.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
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
    fn mib_has_one_decimal() {
        assert_eq!(mib(0), "0.0 MiB");
        assert_eq!(mib(1024 * 1024 + 52_429), "1.1 MiB");
        assert_eq!(mib(296), "0.0 MiB");
    }

    #[test]
    fn unix_now_is_after_this_code_was_written() {
        // 2024-01-01T00:00:00Z
        assert!(unix_now() > 1_704_067_200);
    }
}
