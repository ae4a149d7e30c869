//! When fleet runs may act: activation and reboot windows (`HH:MM-HH:MM`,
//! local time, may wrap past midnight), rollout spreads (`24h`, `90m`,
//! `3600s`) and the per-device delay within a spread.
//!
//! The clock: unix seconds from the system clock, or `FH_LITE_TEST_NOW`
//! (unix seconds; for tests only). The local time of day: the UTC offset
//! that `date -d @SECS +%z` prints (it honours `TZ` and /etc/localtime
//! through the C library, which this static program does not link); when
//! `date` is missing or says nothing usable, UTC, with a warning.
//!
//! The rollout delay of a device for a store path is
//! `u64(first 8 bytes of sha256(machine-id "\n" store path)) mod spread`:
//! stable on every run, roughly uniform over the fleet, and different
//! devices go first for different releases (the path is in the hash).

use std::path::Path;

use crate::error::Error;

/// `HH:MM-HH:MM`: minutes of the day, start inclusive, end exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

impl Window {
    pub fn parse(s: &str, opt: &str) -> Result<Window, Error> {
        let bad = || {
            Error::usage(format!(
                "option '--{opt}': '{s}' is not a window HH:MM-HH:MM (local time, e.g. 02:00-04:30 or 23:00-01:00)"
            ))
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Option<u32> {
            let (h, m) = t.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start, end) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
        if start == end {
            return Err(bad());
        }
        Ok(Window { start, end })
    }

    /// Whether minute-of-day `m` is inside (a window that wraps midnight
    /// holds the minutes from start to 24:00 and from 00:00 to end).
    pub fn contains(self, m: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }

    /// Seconds from local time-of-day `secs_of_day` until the window opens
    /// (0 inside it).
    pub fn wait(self, secs_of_day: u64) -> u64 {
        if self.contains((secs_of_day / 60) as u32) {
            return 0;
        }
        let start = u64::from(self.start) * 60;
        (start + 86_400 - secs_of_day) % 86_400
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// `1d`, `24h`, `1h30m`, `90m`, `3600s`: numbers each followed by a unit
/// (d, h, m, s), or a plain number of seconds; at least 1 s.
pub fn parse_duration(s: &str, opt: &str) -> Result<u64, Error> {
    let bad = || {
        Error::usage(format!(
            "option '--{opt}': '{s}' is not a duration (e.g. 1d, 24h, 1h30m, 90m, 3600s; a plain number is seconds)"
        ))
    };
    let total = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>().map_err(|_| bad())?
    } else {
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in s.chars() {
            let unit = match c {
                '0'..='9' => {
                    digits.push(c);
                    continue;
                }
                'd' => 86_400,
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return Err(bad()),
            };
            let n: u64 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        total
    };
    match total {
        0 => Err(bad()),
        v => Ok(v),
    }
}

/// Now, unix seconds (`FH_LITE_TEST_NOW` for tests).
pub fn now() -> u64 {
    std::env::var("FH_LITE_TEST_NOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(crate::util::unix_now)
}

/// The local time of day at unix time `t`, in seconds since midnight.
pub fn local_secs_of_day(t: u64) -> u64 {
    let offset = utc_offset(t).unwrap_or_else(|| {
        crate::ui::warn(
            "could not learn the local UTC offset from 'date +%z'; windows are read as UTC",
        );
        0
    });
    (t as i64 + offset).rem_euclid(86_400) as u64
}

/// `date -d @t +%z` as seconds east of UTC. `date` gets the minimal
/// environment ([`crate::exec`]) plus fh-lite's own `TZ`: the windows are
/// documented to honour it (a service has none: /etc/localtime).
pub(crate) fn utc_offset(t: u64) -> Option<i64> {
    let mut date = crate::exec::command("date", crate::exec::Env::System).ok()?;
    if let Some(tz) = std::env::var_os("TZ") {
        date.env("TZ", tz);
    }
    let out = date
        .args(["-d", &format!("@{t}"), "+%z"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    parse_offset(std::str::from_utf8(&out.stdout).ok()?.trim())
}

/// `+0130` / `-0500` → seconds.
fn parse_offset(s: &str) -> Option<i64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i64, i64) = (rest[..2].parse().ok()?, rest[2..].parse().ok()?);
    Some(sign * (h * 3600 + m * 60))
}

/// Whether unix time `t` is inside `w` (local time).
pub fn in_window(w: Window, t: u64) -> bool {
    w.contains((local_secs_of_day(t) / 60) as u32)
}

/// This device's stable identity: `/etc/machine-id` (under `--root`).
pub fn machine_id(root: Option<&Path>) -> Result<String, Error> {
    use std::io::Read;
    let base = root.unwrap_or(Path::new("/"));
    let path = base.join("etc/machine-id");
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::usage(format!(
            "--rollout-spread needs this device's machine id, but {} cannot be read: {e} (systemd-machine-id-setup makes one)",
            path.display()
        ))
    };
    // Beneath --root (a symlink there is not followed), without blocking
    // on a FIFO, a regular file only, and never more than a few bytes.
    let mut f = crate::rootfs::open_dir(root, &base.join("etc"))
        .and_then(|d| {
            d.open_file(
                "machine-id",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
                0,
            )
        })
        .map_err(|e| unreadable(&e))?;
    if !f.metadata().map_err(|e| unreadable(&e))?.is_file() {
        return Err(unreadable(&"it is not a regular file"));
    }
    let mut bytes = Vec::new();
    (&mut f)
        .take(MACHINE_ID_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(&e))?;
    let id = String::from_utf8_lossy(&bytes);
    let id = id.trim();
    if id.is_empty() {
        return Err(Error::usage(format!(
            "{} is empty: --rollout-spread needs a machine id (systemd-machine-id-setup makes one)",
            path.display()
        )));
    }
    if bytes.len() as u64 > MACHINE_ID_MAX
        || id.len() != 32
        || !id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(Error::usage(format!(
            "{} does not hold a machine id (32 hexadecimal digits, as systemd-machine-id-setup writes): --rollout-spread needs one",
            path.display()
        )));
    }
    Ok(id.to_string())
}

/// More than /etc/machine-id ever holds (32 hex digits and a newline).
const MACHINE_ID_MAX: u64 = 4096;

/// The delay in [0, spread) of device `machine_id` for `store_path`.
pub fn rollout_delay(machine_id: &str, store_path: &str, spread: u64) -> u64 {
    let input = format!("{machine_id}\n{store_path}");
    let d = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first) % spread.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_wrap_midnight() {
        let w = Window::parse("23:00-01:30", "window").unwrap();
        assert_eq!(w.to_string(), "23:00-01:30");
        for (m, inside) in [
            (22 * 60 + 59, false),
            (23 * 60, true),
            (0, true),
            (89, true),
            (90, false),
            (720, false),
        ] {
            assert_eq!(w.contains(m), inside, "minute {m}");
        }
        let w = Window::parse("02:00-04:00", "window").unwrap();
        assert!(w.contains(120) && w.contains(239) && !w.contains(240) && !w.contains(119));
        assert_eq!(w.wait(3600), 3600);
        assert_eq!(w.wait(5 * 3600), 21 * 3600);
        assert_eq!(w.wait(2 * 3600 + 5), 0);
        for bad in [
            "",
            "2:00-04:00",
            "02:00",
            "24:00-01:00",
            "02:60-03:00",
            "02:00-02:00",
            "aa:bb-cc:dd",
        ] {
            let e = Window::parse(bad, "window").unwrap_err();
            assert!(
                e.message.starts_with("option '--window': '"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h", "x").unwrap(), 86_400);
        assert_eq!(parse_duration("90m", "x").unwrap(), 5400);
        assert_eq!(parse_duration("3600s", "x").unwrap(), 3600);
        assert_eq!(parse_duration("7", "x").unwrap(), 7);
        assert_eq!(parse_duration("24s", "x").unwrap(), 24);
        assert_eq!(parse_duration("1d", "x").unwrap(), 86_400);
        assert_eq!(parse_duration("1h30m", "x").unwrap(), 5400);
        assert_eq!(parse_duration("1d2h3m4s", "x").unwrap(), 93_784);
        for bad in [
            "",
            "0h",
            "h",
            "1x",
            "-5m",
            "1.5h",
            "1h30",
            "0",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+0000"), Some(0));
        assert_eq!(parse_offset("+0530"), Some(19_800));
        assert_eq!(parse_offset("-0800"), Some(-28_800));
        assert_eq!(parse_offset("UTC"), None);
    }

    /// Across 1,000 simulated machine ids, one store path's delays cover
    /// the spread: each tenth of it holds 7 % to 13 % of the devices; a
    /// device's delay is the same every time; another path reorders them.
    #[test]
    fn rollout_delays_are_spread_and_stable() {
        let spread = 86_400;
        let path = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-pi-24.05";
        let ids: Vec<String> = (0..1000u32)
            .map(|i| {
                let d = ring::digest::digest(&ring::digest::SHA256, &i.to_be_bytes());
                d.as_ref()[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect();
        let mut tenths = [0u32; 10];
        for id in &ids {
            let d = rollout_delay(id, path, spread);
            assert!(d < spread);
            assert_eq!(d, rollout_delay(id, path, spread), "stable");
            tenths[(d * 10 / spread) as usize] += 1;
        }
        for (i, n) in tenths.iter().enumerate() {
            assert!(
                (70..=130).contains(n),
                "tenth {i} holds {n} of 1000: {tenths:?}"
            );
        }
        let other = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-pi-24.05";
        let first = |p: &str| {
            ids.iter()
                .min_by_key(|id| rollout_delay(id, p, spread))
                .unwrap()
                .clone()
        };
        assert_ne!(
            first(path),
            first(other),
            "the same device is not always first"
        );
    }
}
