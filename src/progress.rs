//! Progress: a TTY line, plain log lines, or `--json` events.
//!
//! - stderr is a terminal: one line, redrawn at most 10 times a second:
//!   `[3/12 paths] 41.0/120.5 MiB  8.2 MiB/s  ETA 10s`.
//! - otherwise: one line per fetched path on stderr,
//!   `fetched /nix/store/… (12.3 MiB)`.
//! - `--quiet`: nothing.
//! - `--json`: one JSON object per line on stdout per event: `plan`,
//!   `path-start`, `path-done`, `done`. Events carry store paths and sizes,
//!   never a URL query or a token.
//!
//! Called from the fetch workers at once: all state sits behind one Mutex.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use miniserde::json::{Number, Object, Value};

use crate::nix::narinfo::NarInfo;
use crate::util::{mib, MIB};

/// The plan step's figures, for the `plan` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Totals {
    pub root: String,
    /// Paths to fetch.
    pub paths: usize,
    pub already_valid: usize,
    pub download_bytes: u64,
    pub unpack_bytes: u64,
}

impl Totals {
    /// As JSON, without the path count (`--dry-run --json` lists the paths).
    pub fn to_json(&self) -> Object {
        let mut o = Object::new();
        o.insert("root".into(), Value::String(self.root.clone()));
        o.insert("already_valid".into(), num(self.already_valid as u64));
        o.insert("download_bytes".into(), num(self.download_bytes));
        o.insert("unpack_bytes".into(), num(self.unpack_bytes));
        o
    }
}

/// A JSON number.
pub fn num(n: u64) -> Value {
    Value::Number(Number::U64(n))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Quiet,
    Plain,
    Tty,
    Json,
}

impl Mode {
    /// From `--quiet` / `--json` and whether stderr is a terminal.
    pub fn detect(quiet: bool, json: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Tty
        } else {
            Mode::Plain
        }
    }
}

struct State {
    out: Box<dyn Write + Send>,
    total_paths: usize,
    done_paths: usize,
    total_bytes: u64,
    done_bytes: u64,
    started: Instant,
    last_draw: Option<Instant>,
    drawn: bool,
}

pub struct Progress {
    mode: Mode,
    state: Mutex<State>,
}

const REDRAW: Duration = Duration::from_millis(100);

impl Progress {
    /// Events go to stdout for `Json`, to stderr otherwise.
    pub fn new(mode: Mode) -> Progress {
        let out: Box<dyn Write + Send> = match mode {
            Mode::Json => Box::new(std::io::stdout()),
            _ => Box::new(std::io::stderr()),
        };
        Progress::with_writer(mode, out)
    }

    /// For tests: write everything to `out`.
    pub fn with_writer(mode: Mode, out: Box<dyn Write + Send>) -> Progress {
        Progress {
            mode,
            state: Mutex::new(State {
                out,
                total_paths: 0,
                done_paths: 0,
                total_bytes: 0,
                done_bytes: 0,
                started: Instant::now(),
                last_draw: None,
                drawn: false,
            }),
        }
    }

    fn with<F: FnOnce(&mut State)>(&self, f: F) {
        if self.mode == Mode::Quiet {
            return;
        }
        // A worker that panicked while holding the lock only loses output.
        if let Ok(mut s) = self.state.lock() {
            f(&mut s)
        }
    }

    /// The transfer starts (again, after a token renewal) with these totals.
    pub fn plan(&self, totals: impl Into<Totals>) {
        let t: Totals = totals.into();
        let mode = self.mode;
        self.with(|s| {
            s.total_paths = t.paths;
            s.total_bytes = t.download_bytes;
            s.started = Instant::now();
            if mode == Mode::Json {
                // The per-path list is in --dry-run; events stay short.
                let mut o = t.to_json();
                o.insert("event".into(), Value::String("plan".into()));
                o.insert("path_count".into(), num(t.paths as u64));
                json_line(s, o);
            }
        });
    }

    pub fn path_start(&self, info: &NarInfo) {
        if self.mode != Mode::Json {
            return;
        }
        self.with(|s| {
            let mut o = Object::new();
            o.insert("event".into(), Value::String("path-start".into()));
            o.insert("path".into(), Value::String(info.store_path.to_string()));
            let download = info.file_size.unwrap_or(info.nar_size);
            o.insert("download_bytes".into(), num(download));
            json_line(s, o);
        });
    }

    /// `n` more bytes of some download arrived.
    pub fn bytes(&self, n: u64) {
        DOWNLOADED.fetch_add(n, Ordering::Relaxed);
        if self.mode != Mode::Tty || n == 0 {
            return;
        }
        self.with(|s| {
            s.done_bytes += n;
            draw(s, false);
        });
    }

    pub fn path_done(&self, info: &NarInfo) {
        let mode = self.mode;
        self.with(|s| {
            s.done_paths += 1;
            match mode {
                Mode::Json => {
                    let mut o = Object::new();
                    o.insert("event".into(), Value::String("path-done".into()));
                    o.insert("path".into(), Value::String(info.store_path.to_string()));
                    o.insert("nar_size".into(), num(info.nar_size));
                    json_line(s, o);
                }
                Mode::Plain => {
                    let _ = writeln!(
                        s.out,
                        "fetched {} ({})",
                        info.store_path,
                        mib(info.file_size.unwrap_or(info.nar_size))
                    );
                }
                Mode::Tty => draw(s, true),
                Mode::Quiet => {}
            }
        });
    }

    pub fn done(&self) {
        let mode = self.mode;
        self.with(|s| {
            let secs = s.started.elapsed().as_secs_f64();
            match mode {
                Mode::Json => {
                    let mut o = Object::new();
                    o.insert("event".into(), Value::String("done".into()));
                    o.insert("paths".into(), num(s.done_paths as u64));
                    o.insert("seconds".into(), Value::Number(Number::F64(secs)));
                    json_line(s, o);
                }
                Mode::Tty => {
                    draw(s, true);
                    if s.drawn {
                        let _ = writeln!(s.out);
                    }
                }
                Mode::Plain => {
                    let _ = writeln!(
                        s.out,
                        "fetched {} ({}) in {secs:.1}s",
                        plural(s.done_paths as u64, "path"),
                        mib(s.total_bytes)
                    );
                }
                Mode::Quiet => {}
            }
        });
    }
}

/// Bytes this process has received from caches so far (every transfer).
static DOWNLOADED: AtomicU64 = AtomicU64::new(0);

/// What arrived so far: what a stopped run records, not the plan's total.
pub fn downloaded() -> u64 {
    DOWNLOADED.load(Ordering::Relaxed)
}

fn json_line(s: &mut State, o: Object) {
    let line = miniserde::json::to_string(&Value::Object(o));
    let _ = writeln!(s.out, "{line}");
    let _ = s.out.flush();
}

fn draw(s: &mut State, force: bool) {
    let now = Instant::now();
    if !force && s.last_draw.is_some_and(|t| now.duration_since(t) < REDRAW) {
        return;
    }
    s.last_draw = Some(now);
    let secs = s.started.elapsed().as_secs_f64().max(0.001);
    let rate = s.done_bytes as f64 / secs;
    let left = s.total_bytes.saturating_sub(s.done_bytes) as f64;
    let eta = if rate > 0.0 {
        format!("ETA {:.0}s", left / rate)
    } else {
        "ETA ?".to_string()
    };
    let _ = write!(
        s.out,
        "\r\x1b[K[{}/{} paths] {:.1}/{:.1} MiB  {:.1} MiB/s  {eta}",
        s.done_paths,
        s.total_paths,
        s.done_bytes as f64 / MIB,
        s.total_bytes as f64 / MIB,
        rate / MIB
    );
    let _ = s.out.flush();
    s.drawn = true;
}

/// "1 path", "2 paths".
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
