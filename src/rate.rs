//! `--limit-rate RATE` and `--limit-rate-uplink RATE`: a bandwidth cap on
//! what a run downloads.
//!
//! One token bucket per cap, shared by every request of the process (the
//! `--jobs` workers, narinfos, NARs, FlakeHub's API): [`Limited`] wraps a
//! response body, reads at most [`CHUNK`] bytes at a time, and after each
//! read takes that many tokens; when the bucket is in debt the reader
//! sleeps until the debt is paid at the cap. Tokens refill at RATE bytes
//! per second up to a small burst ([`burst`]: a tenth of a second's worth,
//! at least one chunk), so an idle moment never lets the whole budget go
//! at once. A reader that waits does not read, so TCP's flow control slows
//! the sender: the link carries about RATE, not bursts of it.
//!
//! `--limit-rate` caps every network download (FlakeHub and `--mirror`s
//! alike); `--limit-rate-uplink` caps everything but the mirrors (FlakeHub,
//! or the `--cache`), for a site whose LAN is fast and whose uplink is not.
//! A request to FlakeHub passes through both buckets when both are set.

use std::io::{self, Read};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The most bytes one read takes before it is paid for.
pub const CHUNK: usize = 16 << 10;

/// The smallest cap accepted (bytes per second).
pub const MIN_RATE: u64 = 1024;

/// A shared token bucket.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Negative: debt, paid by waiting.
    tokens: f64,
    last: Instant,
}

/// A tenth of a second at `rate`, at least one [`CHUNK`].
pub fn burst(rate: u64) -> f64 {
    (rate as f64 / 10.0).max(CHUNK as f64)
}

impl Bucket {
    pub fn new(rate: u64) -> Bucket {
        let burst = burst(rate);
        Bucket {
            rate: rate as f64,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// Account for `n` bytes just read; how long to wait before reading on.
    pub fn take(&self, n: usize, now: Instant) -> Duration {
        let Ok(mut s) = self.state.lock() else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.last = s.last.max(now);
        s.tokens = (s.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.rate)
        }
    }
}

type Cap = Option<Arc<Bucket>>;

/// The caps of this process: `(all, uplink)`, set once by [`install`].
static CAPS: OnceLock<(Cap, Cap)> = OnceLock::new();

/// Set the process's caps (the first call wins: one run per process).
pub fn install(all: Option<u64>, uplink: Option<u64>) {
    let _ = CAPS.set((
        all.map(|r| Arc::new(Bucket::new(r))),
        uplink.map(|r| Arc::new(Bucket::new(r))),
    ));
}

/// The buckets a download passes through: the `--limit-rate` one, and
/// the `--limit-rate-uplink` one unless it comes from a mirror.
pub fn buckets(mirror: bool) -> Vec<Arc<Bucket>> {
    match CAPS.get() {
        Some((all, uplink)) => select(all, uplink, mirror),
        None => Vec::new(),
    }
}

fn select(all: &Cap, uplink: &Cap, mirror: bool) -> Vec<Arc<Bucket>> {
    let uplink = if mirror { None } else { uplink.as_ref() };
    all.iter().chain(uplink).cloned().collect()
}

/// A body read through the caps.
pub struct Limited<R> {
    inner: R,
    buckets: Vec<Arc<Bucket>>,
}

impl<R: Read> Limited<R> {
    pub fn new(inner: R, buckets: Vec<Arc<Bucket>>) -> Limited<R> {
        Limited { inner, buckets }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.buckets.is_empty() {
            return self.inner.read(buf);
        }
        let len = buf.len().min(CHUNK);
        let n = self.inner.read(&mut buf[..len])?;
        let now = Instant::now();
        let wait = (self.buckets.iter())
            .map(|b| b.take(n, now))
            .max()
            .unwrap_or_default();
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        Ok(n)
    }
}

/// Parse a rate as curl does: bytes per second, with an optional `k`,
/// `M` or `G` suffix (either case; 1024-based): `500k`, `2M`, `1048576`.
pub fn parse(s: &str) -> Option<u64> {
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let v: f64 = num.parse().ok()?;
    let bytes = v * mult as f64;
    (1.0..1e15).contains(&bytes).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_curl_reads_them() {
        assert_eq!(parse("500k"), Some(500 * 1024));
        assert_eq!(parse("2M"), Some(2 << 20));
        assert_eq!(parse("1g"), Some(1 << 30));
        assert_eq!(parse("1.5M"), Some(3 << 19));
        assert_eq!(parse("4096"), Some(4096));
        for bad in ["", "k", "-1k", "1x", "1kb", "0", "nan", "1e3"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_bucket_holds_the_rate_after_a_small_burst() {
        let rate = 1 << 20;
        let b = Bucket::new(rate);
        let t0 = Instant::now();
        // At once, only the burst goes without waiting.
        let mut now = t0;
        let mut sent = 0usize;
        while b.take(CHUNK, now).is_zero() {
            sent += CHUNK;
            assert!(sent < rate as usize, "the whole budget went at once");
        }
        assert!(sent as f64 <= burst(rate), "{sent}");
        // Four readers taking as fast as allowed over 10 simulated seconds:
        // what they got is the rate, within a chunk per reader.
        let mut total = 0u64;
        let mut ready = [now; 4];
        while now < t0 + Duration::from_secs(10) {
            let i = (0..4).min_by_key(|&i| ready[i]).unwrap_or(0);
            now = ready[i];
            let wait = b.take(CHUNK, now);
            total += CHUNK as u64;
            ready[i] = now + wait;
        }
        let got = total as f64 / 10.0;
        assert!(
            (got - rate as f64).abs() < rate as f64 * 0.03,
            "{got} B/s against a cap of {rate}"
        );
    }

    #[test]
    fn mirrors_skip_the_uplink_cap() {
        let all = Some(Arc::new(Bucket::new(1 << 20)));
        let up = Some(Arc::new(Bucket::new(1 << 10)));
        assert_eq!(select(&all, &up, false).len(), 2);
        let m = select(&all, &up, true);
        assert!(m.len() == 1 && Arc::ptr_eq(&m[0], all.as_ref().unwrap()));
        assert!(select(&None, &up, true).is_empty());
    }
}
