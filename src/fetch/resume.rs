//! Resume a NAR body that breaks off, with an HTTP Range request.
//!
//! [`Resuming`] sits between the HTTP body and the rest of the fetch stack
//! (fetch/mod.rs: BodyLimit, decoder, NarHash). It counts the bytes received.
//! When the body breaks off — a read error (connection reset, read timeout,
//! the peer closing before the declared Content-Length) or an end before
//! the expected size (the narinfo's FileSize) — it asks the cache again for
//! the rest, `Range: bytes=<received>-`, with the same credentials as the
//! first request (the cache origin only; http.rs drops them on a redirect
//! to another host):
//!
//! - `206` with a `Content-Range` that starts at `received` (and ends at
//!   the expected size, when that is known): its bytes go on into the SAME
//!   decoder and hash, so NarHash covers every byte, and a server that
//!   answers the range with wrong bytes is caught by the NarHash check.
//! - `200` (the range was ignored), a `Content-Range` that does not match,
//!   any other status or a failed request: the path starts over. Restarting
//!   cannot happen in here (the decoder and the hash have consumed the
//!   first bytes), so the adapter fails, and sets [`Budget::take_restart`];
//!   `fetch_one` then drops the temporary tree and fetches the path again
//!   from byte 0.
//! - At most [`MAX_ATTEMPTS`] Range requests per path, counted across
//!   restarts (the [`Budget`] outlives them); after that the break is the
//!   download's error (`body cut short`, exit 20).
//!
//! Each Range request is one line on stderr (not with `--quiet`):
//! `fh-lite: <url>: body broke off at <N> of <M> bytes (<cause>); resuming
//! with a Range request (attempt k of 3)`, and a restart one more line.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::http::RangeAnswer;

/// Range requests per path, across restarts.
pub const MAX_ATTEMPTS: u32 = 3;

/// What one path's download may still do: shared by every [`Resuming`]
/// made for it (one per restart).
#[derive(Debug, Default)]
pub struct Budget {
    used: AtomicU32,
    restart: AtomicBool,
}

impl Budget {
    pub fn new() -> Budget {
        Budget::default()
    }

    /// Did the adapter give up on the current body and ask for the path to
    /// start over? Clears the request.
    pub fn take_restart(&self) -> bool {
        self.restart.swap(false, Ordering::SeqCst)
    }

    /// Range requests made so far.
    #[cfg(test)]
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::SeqCst)
    }
}

/// Asks for the body from a byte offset on (`Range: bytes=<offset>-`).
pub type Reopen<'a> = Box<dyn FnMut(u64) -> Result<RangeAnswer, String> + Send + 'a>;
/// Where the log lines go (without the `fh-lite: ` prefix).
pub type Log<'a> = &'a (dyn Fn(&str) + Sync);

/// The HTTP body of one NAR, resumed with Range requests when it breaks
/// off (see the module doc).
pub struct Resuming<'a> {
    url: String,
    inner: Box<dyn Read + Send>,
    received: u64,
    /// FileSize, when the narinfo gives it.
    expected: Option<u64>,
    reopen: Reopen<'a>,
    budget: &'a Budget,
    log: Log<'a>,
}

impl<'a> Resuming<'a> {
    pub fn new(
        url: &str,
        body: Box<dyn Read + Send>,
        expected: Option<u64>,
        reopen: Reopen<'a>,
        budget: &'a Budget,
        log: Log<'a>,
    ) -> Resuming<'a> {
        Resuming {
            url: url.to_string(),
            inner: body,
            received: 0,
            expected,
            reopen,
            budget,
            log,
        }
    }

    /// `at N of M bytes`, or `at N bytes` when the size is unknown.
    fn at(&self) -> String {
        match self.expected {
            Some(m) => format!("at {} of {m} bytes", self.received),
            None => format!("at {} bytes", self.received),
        }
    }

    /// The body broke off: ask for the rest, or fail.
    fn resume(&mut self, cause: &str) -> io::Result<()> {
        let k = self.budget.used.fetch_add(1, Ordering::SeqCst) + 1;
        if k > MAX_ATTEMPTS {
            return Err(io::Error::other(format!(
                "broke off {} ({cause}); gave up after {MAX_ATTEMPTS} Range requests",
                self.at()
            )));
        }
        (self.log)(&format!(
            "{}: body broke off {} ({cause}); resuming with a Range request (attempt {k} of {MAX_ATTEMPTS})",
            self.url,
            self.at()
        ));
        let why = match (self.reopen)(self.received) {
            Ok(a) if a.status == 206 => {
                match check_content_range(a.content_range.as_deref(), self.received, self.expected)
                {
                    Ok(()) => {
                        self.inner = a.body;
                        return Ok(());
                    }
                    Err(why) => format!("the answer's Content-Range {why}"),
                }
            }
            Ok(a) => format!(
                "the Range request was answered with http status {} instead of 206",
                a.status
            ),
            Err(e) => format!("the Range request failed: {e}"),
        };
        (self.log)(&format!(
            "{}: {why}; fetching it again from the start",
            self.url
        ));
        self.budget.restart.store(true, Ordering::SeqCst);
        Err(io::Error::other(format!(
            "broke off {} ({cause}) and {why}; starting over",
            self.at()
        )))
    }
}

impl Read for Resuming<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let cause = match self.inner.read(buf) {
                Ok(0) => match self.expected {
                    Some(m) if self.received < m => "the body ended early".to_string(),
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.received += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e.to_string(),
            };
            self.resume(&cause)?;
        }
    }
}

/// Does `Content-Range: bytes START-END/TOTAL` answer `bytes=<start>-` of
/// a body of `expected` bytes? The error completes "the answer's
/// Content-Range …".
fn check_content_range(
    value: Option<&str>,
    start: u64,
    expected: Option<u64>,
) -> Result<(), String> {
    let Some(value) = value else {
        return Err("is missing".to_string());
    };
    let bad = || format!("'{value}' is malformed");
    let v = value.trim();
    let rest = v
        .get(..6)
        .filter(|u| u.eq_ignore_ascii_case("bytes "))
        .map(|_| &v[6..])
        .ok_or_else(bad)?;
    let (range, total) = rest.split_once('/').ok_or_else(bad)?;
    let (first, last) = range.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let (first, last) = (num(first)?, num(last)?);
    let total = match total.trim() {
        "*" => None,
        t => Some(num(t)?),
    };
    if last < first || total.is_some_and(|t| last >= t) {
        return Err(bad());
    }
    if first != start {
        return Err(format!("'{value}' starts at byte {first}, not at {start}"));
    }
    let end = total.or(expected);
    if let (Some(t), Some(m)) = (total, expected) {
        if t != m {
            return Err(format!("'{value}' gives the body {t} bytes, not {m}"));
        }
    }
    if let Some(end) = end {
        if last + 1 != end {
            return Err(format!("'{value}' ends before byte {end}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A body that yields `data` and then fails with `cause` (or ends, when
    /// `cause` is None).
    struct Cut {
        data: io::Cursor<Vec<u8>>,
        cause: Option<io::ErrorKind>,
    }

    impl Read for Cut {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.read(buf)?;
            match (n, self.cause) {
                (0, Some(kind)) if !buf.is_empty() => {
                    Err(io::Error::new(kind, "Peer disconnected"))
                }
                _ => Ok(n),
            }
        }
    }

    fn cut(data: &[u8], cause: Option<io::ErrorKind>) -> Box<dyn Read + Send> {
        Box::new(Cut {
            data: io::Cursor::new(data.to_vec()),
            cause,
        })
    }

    /// What the fake server does with each Range request.
    #[derive(Clone)]
    enum Answer {
        /// 206 with the right bytes from the offset; `cut_after` of them,
        /// then a reset.
        Partial { cut_after: Option<usize> },
        /// 206 with this Content-Range header value.
        Header(Option<&'static str>),
        /// 200 with the whole body.
        Whole,
        /// The request fails.
        Fails,
    }

    struct Run {
        out: io::Result<Vec<u8>>,
        offsets: Vec<u64>,
        log: Vec<String>,
        restart: bool,
        used: u32,
    }

    /// Read everything from a body cut after `first` bytes, with `answers`
    /// for the Range requests in turn.
    fn run(data: &[u8], first: usize, expected: Option<u64>, answers: &[Answer]) -> Run {
        let offsets = Mutex::new(Vec::new());
        let log = Mutex::new(Vec::new());
        let budget = Budget::new();
        let logger = |l: &str| log.lock().unwrap().push(l.to_string());
        let mut n = 0;
        let reopen: Reopen = Box::new(|offset| {
            offsets.lock().unwrap().push(offset);
            let a = answers[n.min(answers.len() - 1)].clone();
            n += 1;
            let rest = &data[offset as usize..];
            let total = data.len();
            Ok(match a {
                Answer::Partial { cut_after } => RangeAnswer {
                    status: 206,
                    content_range: Some(format!("bytes {offset}-{}/{total}", total - 1)),
                    body: match cut_after {
                        Some(k) => cut(&rest[..k], Some(io::ErrorKind::ConnectionReset)),
                        None => cut(rest, None),
                    },
                },
                Answer::Header(h) => RangeAnswer {
                    status: 206,
                    content_range: h.map(String::from),
                    body: cut(rest, None),
                },
                Answer::Whole => RangeAnswer {
                    status: 200,
                    content_range: None,
                    body: cut(data, None),
                },
                Answer::Fails => return Err("GET http://c/nar/x: http status 503".to_string()),
            })
        });
        let mut r = Resuming::new(
            "http://c/nar/x",
            cut(&data[..first], Some(io::ErrorKind::UnexpectedEof)),
            expected,
            reopen,
            &budget,
            &logger,
        );
        let mut got = Vec::new();
        let out = r.read_to_end(&mut got).map(|_| got);
        drop(r);
        Run {
            out,
            offsets: offsets.into_inner().unwrap(),
            log: log.into_inner().unwrap(),
            restart: budget.take_restart(),
            used: budget.used(),
        }
    }

    fn data() -> Vec<u8> {
        (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn resume_cut_body_goes_on_with_206() {
        let d = data();
        let r = run(
            &d,
            4000,
            Some(10_000),
            &[Answer::Partial { cut_after: None }],
        );
        assert!(r.out.as_ref().unwrap() == &d, "every byte, in order");
        assert_eq!(r.offsets, vec![4000]);
        assert_eq!(
            r.log,
            vec![
                "http://c/nar/x: body broke off at 4000 of 10000 bytes (Peer disconnected); \
                  resuming with a Range request (attempt 1 of 3)"
            ]
        );
        assert!(!r.restart);
    }

    #[test]
    fn resume_twice_and_a_short_end_counts_as_a_break() {
        let d = data();
        // The first body ends cleanly but early (no error): still a break.
        let offsets = Mutex::new(Vec::new());
        let budget = Budget::new();
        let reopen: Reopen = Box::new(|offset| {
            offsets.lock().unwrap().push(offset);
            let end = if offset == 1000 { 6000 } else { d.len() };
            Ok(RangeAnswer {
                status: 206,
                content_range: Some(format!("bytes {offset}-9999/10000")),
                body: cut(
                    &d[offset as usize..end],
                    (end < d.len()).then_some(io::ErrorKind::TimedOut),
                ),
            })
        });
        let quiet = |_: &str| {};
        let mut r = Resuming::new(
            "u",
            cut(&d[..1000], None),
            Some(10_000),
            reopen,
            &budget,
            &quiet,
        );
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        drop(r);
        assert!(got == d);
        assert_eq!(offsets.into_inner().unwrap(), vec![1000, 6000]);
        assert_eq!(budget.used(), 2);
    }

    #[test]
    fn resume_200_means_start_over() {
        let d = data();
        let r = run(&d, 4000, Some(10_000), &[Answer::Whole]);
        let e = r.out.unwrap_err();
        assert_eq!(
            e.to_string(),
            "broke off at 4000 of 10000 bytes (Peer disconnected) and the Range request was \
             answered with http status 200 instead of 206; starting over"
        );
        assert!(r.restart, "the path starts over");
        assert_eq!(r.log.len(), 2, "{:?}", r.log);
        assert_eq!(
            r.log[1],
            "http://c/nar/x: the Range request was answered with http status 200 instead of \
             206; fetching it again from the start"
        );
    }

    #[test]
    fn resume_wrong_content_range_means_start_over() {
        let d = data();
        let cases: &[(&str, Option<&'static str>, &str)] = &[
            ("missing", None, "is missing"),
            (
                "wrong start",
                Some("bytes 0-9999/10000"),
                "'bytes 0-9999/10000' starts at byte 0, not at 4000",
            ),
            (
                "wrong total",
                Some("bytes 4000-11999/12000"),
                "gives the body 12000 bytes, not 10000",
            ),
            (
                "not to the end",
                Some("bytes 4000-4999/10000"),
                "ends before byte 10000",
            ),
            (
                "garbage",
                Some("items 4000-9999/10000"),
                "'items 4000-9999/10000' is malformed",
            ),
            (
                "last past total",
                Some("bytes 4000-10000/10000"),
                "is malformed",
            ),
        ];
        for (name, header, want) in cases {
            let r = run(&d, 4000, Some(10_000), &[Answer::Header(*header)]);
            let e = r.out.unwrap_err().to_string();
            assert!(e.contains(want), "{name}: {e}");
            assert!(r.restart, "{name}");
        }
        // A total of `*` is fine when the range ends where the body does.
        let r = run(
            &d,
            4000,
            Some(10_000),
            &[Answer::Header(Some("bytes 4000-9999/*"))],
        );
        assert!(r.out.unwrap() == d);
    }

    #[test]
    fn resume_failed_request_means_start_over() {
        let d = data();
        let r = run(&d, 10, Some(10_000), &[Answer::Fails]);
        let e = r.out.unwrap_err().to_string();
        assert!(
            e.contains("the Range request failed: GET http://c/nar/x: http status 503"),
            "{e}"
        );
        assert!(r.restart);
    }

    #[test]
    fn resume_attempts_are_bounded() {
        let d = data();
        let r = run(
            &d,
            1000,
            Some(10_000),
            &[Answer::Partial {
                cut_after: Some(500),
            }],
        );
        let e = r.out.unwrap_err().to_string();
        assert_eq!(
            e,
            "broke off at 2500 of 10000 bytes (Peer disconnected); gave up after 3 Range requests"
        );
        assert_eq!(r.offsets, vec![1000, 1500, 2000]);
        assert_eq!(r.used, 4, "the fourth break found no attempt left");
        assert!(!r.restart);
        let attempts: Vec<&str> = r
            .log
            .iter()
            .map(|l| &l[l.find("(attempt").unwrap()..])
            .collect();
        assert_eq!(
            attempts,
            vec!["(attempt 1 of 3)", "(attempt 2 of 3)", "(attempt 3 of 3)"]
        );
    }

    #[test]
    fn resume_budget_is_shared_across_restarts() {
        // A budget already spent by earlier bodies of the same path.
        let budget = Budget::new();
        budget.used.store(MAX_ATTEMPTS, Ordering::SeqCst);
        let reopen: Reopen = Box::new(|_| panic!("no Range request may be made"));
        let quiet = |_: &str| {};
        let mut r = Resuming::new(
            "u",
            cut(b"abc", Some(io::ErrorKind::ConnectionReset)),
            Some(9),
            reopen,
            &budget,
            &quiet,
        );
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(
            e.to_string().contains("gave up after 3 Range requests"),
            "{e}"
        );
    }

    #[test]
    fn resume_unknown_size_ends_at_a_clean_end_and_resumes_errors() {
        let d = data();
        // No FileSize: a clean end is the end.
        let budget = Budget::new();
        let reopen: Reopen = Box::new(|_| panic!("no Range request may be made"));
        let quiet = |_: &str| {};
        let mut r = Resuming::new("u", cut(&d[..10], None), None, reopen, &budget, &quiet);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 10);
        // An error is a break; the message has no total.
        let r = run(&d, 4000, None, &[Answer::Partial { cut_after: None }]);
        assert!(r.out.unwrap() == d);
        assert!(
            r.log[0].contains("body broke off at 4000 bytes (Peer disconnected)"),
            "{:?}",
            r.log
        );
    }
}
