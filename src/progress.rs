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
use std::sync::Mutex;
use std::time::{Duration, Instant};

use miniserde::json::{Number, Object, Value};

use crate::nix::narinfo::NarInfo;
use crate::plan::Plan;
use crate::util::{mib, MIB};

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

    pub fn plan(&self, plan: &Plan) {
        let mode = self.mode;
        self.with(|s| {
            s.total_paths = plan.paths.len();
            s.total_bytes = plan.download_bytes;
            s.started = Instant::now();
            if mode == Mode::Json {
                let mut o = plan.to_json_value();
                o.insert("event".into(), Value::String("plan".into()));
                // The per-path list is in --dry-run; events stay short.
                o.remove("paths");
                o.insert(
                    "path_count".into(),
                    Value::Number(Number::U64(plan.paths.len() as u64)),
                );
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
            o.insert(
                "download_bytes".into(),
                Value::Number(Number::U64(info.file_size.unwrap_or(info.nar_size))),
            );
            json_line(s, o);
        });
    }

    /// `n` more bytes of some download arrived.
    pub fn bytes(&self, n: u64) {
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
                    o.insert("nar_size".into(), Value::Number(Number::U64(info.nar_size)));
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
                    o.insert(
                        "paths".into(),
                        Value::Number(Number::U64(s.done_paths as u64)),
                    );
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
