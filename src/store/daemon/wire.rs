//! The daemon's wire codec (docs/formats.md, "Daemon protocol"): primitives and the
//! decoder of the stderr stream that follows every operation. No sockets
//! and no store here, only `Read`/`Vec<u8>`, so the fuzz target
//! `daemon_stderr` (fuzz/) builds this file on its own.

use std::io::{self, Read};

pub const fn proto(major: u64, minor: u64) -> u64 {
    (major << 8) | minor
}

pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
pub const STDERR_READ: u64 = 0x6461_7461;
pub const STDERR_WRITE: u64 = 0x6461_7416;
pub const STDERR_LAST: u64 = 0x616c_7473;
pub const STDERR_ERROR: u64 = 0x6378_7470;
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// Longest string we accept from the daemon (log lines, error messages).
pub const MAX_STRING: u64 = 1 << 20;
/// Most items we accept in one set/list/field list from the daemon.
pub const MAX_ITEMS: u64 = 1 << 20;

/// A failure on the wire, before the socket path is attached.
#[derive(Debug)]
pub enum Wire {
    Io(io::Error),
    /// The peer broke the protocol.
    Protocol(String),
    /// The daemon reported an error (`STDERR_ERROR`): its message.
    Daemon(String),
}

impl From<io::Error> for Wire {
    fn from(e: io::Error) -> Wire {
        Wire::Io(e)
    }
}

// ---- primitives --------------------------------------------------------

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
    out.resize(out.len() + (8 - b.len() % 8) % 8, 0);
}

pub fn put_set<S: AsRef<[u8]>>(out: &mut Vec<u8>, items: &[S]) {
    put_u64(out, items.len() as u64);
    for i in items {
        put_bytes(out, i.as_ref());
    }
}

pub fn get_u64(r: &mut dyn Read) -> Result<u64, Wire> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

pub fn get_bytes(r: &mut dyn Read, what: &str) -> Result<Vec<u8>, Wire> {
    let len = get_u64(r)?;
    if len > MAX_STRING {
        return Err(Wire::Protocol(format!(
            "{what} of {len} bytes is longer than the limit of {MAX_STRING}"
        )));
    }
    // Bounded just above.
    let padded = (len as usize).div_ceil(8) * 8;
    let mut buf = vec![0u8; padded];
    r.read_exact(&mut buf)?;
    if buf[len as usize..].iter().any(|&b| b != 0) {
        return Err(Wire::Protocol(format!("{what} has non-zero padding")));
    }
    buf.truncate(len as usize);
    Ok(buf)
}

pub fn get_string(r: &mut dyn Read, what: &str) -> Result<String, Wire> {
    String::from_utf8(get_bytes(r, what)?)
        .map_err(|_| Wire::Protocol(format!("{what} is not UTF-8")))
}

pub fn get_count(r: &mut dyn Read, what: &str) -> Result<u64, Wire> {
    let n = get_u64(r)?;
    if n > MAX_ITEMS {
        return Err(Wire::Protocol(format!(
            "{what} has {n} items, more than the limit of {MAX_ITEMS}"
        )));
    }
    Ok(n)
}

/// Daemon messages carry ANSI colour codes (Nix's hint formatting); strip
/// them, and the "error: " prefix the Nix client would add itself.
pub fn clean_message(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    let t = out.trim_end();
    t.strip_prefix("error: ").unwrap_or(t).to_string()
}

/// How daemon log lines reach the user.
pub type LogFn = fn(&str);

pub fn skip_fields(r: &mut dyn Read) -> Result<(), Wire> {
    let n = get_count(r, "activity field list")?;
    for _ in 0..n {
        match get_u64(r)? {
            0 => {
                get_u64(r)?;
            }
            1 => {
                get_bytes(r, "activity field")?;
            }
            k => return Err(Wire::Protocol(format!("unknown activity field kind {k}"))),
        }
    }
    Ok(())
}

/// Read the stderr stream of one operation up to `STDERR_LAST`; log lines
/// go to `log`, `STDERR_ERROR` becomes `Wire::Daemon`.
pub fn process_stderr(r: &mut dyn Read, version: u64, log: LogFn) -> Result<(), Wire> {
    loop {
        match get_u64(r)? {
            STDERR_LAST => return Ok(()),
            STDERR_NEXT => {
                let line = String::from_utf8_lossy(&get_bytes(r, "log line")?).into_owned();
                let line = clean_message(&line);
                if !line.is_empty() {
                    log(&line);
                }
            }
            STDERR_ERROR => {
                let message = if version >= proto(1, 26) {
                    let _type = get_bytes(r, "error type")?;
                    let _level = get_u64(r)?;
                    let _name = get_bytes(r, "error name")?;
                    let msg = get_string(r, "error message")?;
                    if get_u64(r)? != 0 {
                        return Err(Wire::Protocol("error carries a position".into()));
                    }
                    let mut msg = clean_message(&msg);
                    let traces = get_count(r, "error traces")?;
                    for _ in 0..traces {
                        if get_u64(r)? != 0 {
                            return Err(Wire::Protocol("error trace carries a position".into()));
                        }
                        // A trace that cleans to nothing adds no "; ".
                        let hint = clean_message(&get_string(r, "error trace")?);
                        if !hint.is_empty() {
                            if !msg.is_empty() {
                                msg.push_str("; ");
                            }
                            msg.push_str(&hint);
                        }
                    }
                    msg
                } else {
                    let msg = get_string(r, "error message")?;
                    let _status = get_u64(r)?;
                    clean_message(&msg)
                };
                return Err(Wire::Daemon(message));
            }
            STDERR_START_ACTIVITY => {
                let _id = get_u64(r)?;
                let _level = get_u64(r)?;
                let _type = get_u64(r)?;
                let _text = get_bytes(r, "activity text")?;
                skip_fields(r)?;
                if version >= proto(1, 20) {
                    let _parent = get_u64(r)?;
                }
            }
            STDERR_STOP_ACTIVITY => {
                let _id = get_u64(r)?;
            }
            STDERR_RESULT => {
                let _id = get_u64(r)?;
                let _type = get_u64(r)?;
                skip_fields(r)?;
            }
            STDERR_READ | STDERR_WRITE => {
                return Err(Wire::Protocol(
                    "the daemon asked to exchange raw data, which no operation fh-lite uses does"
                        .into(),
                ))
            }
            tag => {
                return Err(Wire::Protocol(format!(
                    "unknown stderr message tag {tag:#x}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_log(line: &str) {
        panic!("unexpected log line {line:?}");
    }

    /// Found by the fuzz target daemon_stderr: an error trace that is only
    /// colour codes or white space left a dangling "; " in the message.
    #[test]
    fn empty_error_traces_add_nothing() {
        let error = |msg: &str, traces: &[&str]| {
            let mut o = Vec::new();
            put_u64(&mut o, STDERR_ERROR);
            put_bytes(&mut o, b"Error");
            put_u64(&mut o, 0);
            put_bytes(&mut o, b"Error");
            put_bytes(&mut o, msg.as_bytes());
            put_u64(&mut o, 0);
            put_u64(&mut o, traces.len() as u64);
            for t in traces {
                put_u64(&mut o, 0);
                put_bytes(&mut o, t.as_bytes());
            }
            match process_stderr(&mut &o[..], proto(1, 37), no_log) {
                Err(Wire::Daemon(m)) => m,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            error("path '/nix/store/x' is not valid", &["\u{1b}[0m ", ""]),
            "path '/nix/store/x' is not valid"
        );
        assert_eq!(
            error("failed", &[" ", "while adding"]),
            "failed; while adding"
        );
        assert_eq!(
            error("\u{1b}[31;1m\u{1b}[0m", &["while adding"]),
            "while adding"
        );
    }
}
