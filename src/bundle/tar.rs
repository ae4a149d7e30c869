//! The few parts of ustar (POSIX.1-1988) a bundle needs: regular files
//! with short names, written in order and read in one pass without seeking.
//!
//! A header is one 512-byte block: name (0..100), mode, uid, gid, size (124,
//! 12 octal digits), mtime, checksum (148, the byte sum of the header with
//! the checksum field as spaces), type (156, `0`), magic `ustar\0` `00`
//! (257). The data follows, padded to 512 bytes; two zero blocks end the
//! archive. Any tar tool lists and extracts a bundle.

use std::io::{self, Read, Seek, SeekFrom, Write};

const BLOCK: u64 = 512;
/// Largest size 11 octal digits hold (8 GiB - 1).
const MAX_SIZE: u64 = 0o77777777777;

fn header(name: &str, size: u64, mtime: u64) -> io::Result<[u8; 512]> {
    if name.len() > 99 || name.is_empty() {
        return Err(io::Error::other(format!(
            "tar entry name '{name}' too long"
        )));
    }
    if size > MAX_SIZE {
        return Err(io::Error::other(format!(
            "{name}: {size} bytes is more than a tar entry can hold (8 GiB)"
        )));
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mut field = |at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    field(100, 8, 0o644);
    field(108, 8, 0);
    field(116, 8, 0);
    field(124, 12, size);
    field(136, 12, mtime.min(MAX_SIZE));
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

fn padding(size: u64) -> usize {
    ((BLOCK - size % BLOCK) % BLOCK) as usize
}

/// Writes entries in order; a streamed entry's size is filled in after.
pub struct Writer<W: Write + Seek> {
    out: W,
    mtime: u64,
}

impl<W: Write + Seek> Writer<W> {
    pub fn new(out: W, mtime: u64) -> Writer<W> {
        Writer { out, mtime }
    }

    pub fn add(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.add_stream(name, &mut &data[..]).map(|_| ())
    }

    /// Copy `data` to its end as entry `name`; returns the size.
    pub fn add_stream(&mut self, name: &str, data: &mut dyn Read) -> io::Result<u64> {
        let at = self.out.stream_position()?;
        self.out.write_all(&header(name, 0, self.mtime)?)?;
        let size = io::copy(data, &mut self.out)?;
        self.out.write_all(&[0u8; 512][..padding(size)])?;
        let end = self.out.stream_position()?;
        self.out.seek(SeekFrom::Start(at))?;
        self.out.write_all(&header(name, size, self.mtime)?)?;
        self.out.seek(SeekFrom::Start(end))?;
        Ok(size)
    }

    /// The end-of-archive marker; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes entries in order to an output that cannot seek (a pipe): a
/// streamed entry's size is given before its bytes.
pub struct StreamWriter<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> StreamWriter<W> {
    pub fn new(out: W, mtime: u64) -> StreamWriter<W> {
        StreamWriter { out, mtime }
    }

    pub fn add(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.add_sized(name, data.len() as u64, &mut &data[..])
            .map(|_| ())
    }

    /// Copy `data`, which must be exactly `size` bytes, as entry `name`;
    /// returns the size. Fewer or more bytes is an error (the entry
    /// written is then wrong: the caller abandons the whole output).
    pub fn add_sized(&mut self, name: &str, size: u64, data: &mut dyn Read) -> io::Result<u64> {
        self.out.write_all(&header(name, size, self.mtime)?)?;
        let n = io::copy(&mut data.take(size), &mut self.out)?;
        let mut more = [0u8; 1];
        if n != size || data.read(&mut more)? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name}: not the {size} bytes its narinfo's FileSize says"),
            ));
        }
        self.out.write_all(&[0u8; 512][..padding(size)])?;
        Ok(size)
    }

    /// The end-of-archive marker; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads entries in order from any `Read` (a pipe is fine).
pub struct Reader<R: Read> {
    inner: R,
    /// `what` in messages: the bundle's name.
    what: String,
    /// The current entry: name, size, bytes of it not yet read.
    name: String,
    size: u64,
    left: u64,
    ended: bool,
    /// [`Reader::unread_header`] was called: return the current entry again.
    replay: bool,
}

fn truncated(what: &str, detail: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{what} is truncated ({detail}); copy the whole bundle again"),
    )
}

fn corrupt(what: &str, detail: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} is not a valid bundle ({detail})"),
    )
}

fn octal(what: &str, field: &[u8]) -> io::Result<u64> {
    let s = std::str::from_utf8(field).unwrap_or("");
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    u64::from_str_radix(s, 8)
        .map_err(|_| corrupt(what, format!("bad number {s:?} in a tar header")))
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R, what: &str) -> Reader<R> {
        Reader {
            inner,
            what: what.to_string(),
            name: String::new(),
            size: 0,
            left: 0,
            ended: false,
            replay: false,
        }
    }

    fn fill(&mut self, buf: &mut [u8], during: &str) -> io::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => return Err(truncated(&self.what, format!("it ends {during}"))),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Skip the rest of the current entry and read the next header: its
    /// name and size, or None at the end-of-archive marker.
    pub fn next_entry(&mut self) -> io::Result<Option<(String, u64)>> {
        if self.ended {
            return Ok(None);
        }
        if std::mem::take(&mut self.replay) && self.left == self.size {
            return Ok(Some((self.name.clone(), self.size)));
        }
        let skip = self.left + padding(self.size) as u64;
        let during = format!("inside {}", self.name);
        let copied = io::copy(&mut (&mut self.inner).take(skip), &mut io::sink())?;
        if copied < skip {
            return Err(truncated(&self.what, during));
        }
        self.left = 0;
        self.size = 0;
        let mut h = [0u8; 512];
        self.fill(&mut h, "between two entries (no end-of-archive marker)")?;
        if h.iter().all(|&b| b == 0) {
            self.ended = true;
            return Ok(None);
        }
        let stored = octal(&self.what, &h[148..156])?;
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        if sum != stored {
            return Err(corrupt(
                &self.what,
                "a tar header checksum does not match".into(),
            ));
        }
        if h[156] != b'0' && h[156] != 0 {
            return Err(corrupt(
                &self.what,
                format!("entry type {:?} is not a regular file", h[156] as char),
            ));
        }
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(h[..end].to_vec())
            .map_err(|_| corrupt(&self.what, "an entry name is not UTF-8".into()))?;
        let size = octal(&self.what, &h[124..136])?;
        self.name = name.clone();
        self.size = size;
        self.left = size;
        Ok(Some((name, size)))
    }

    /// Make the next [`Reader::next_entry`] return the current entry again
    /// (nothing of it read yet): a look at a header without consuming it.
    pub fn unread_header(&mut self) {
        self.replay = true;
    }

    /// Read the whole current entry, refusing more than `limit` bytes.
    pub fn read_entry(&mut self, limit: u64) -> io::Result<Vec<u8>> {
        if self.left > limit {
            return Err(corrupt(
                &self.what,
                format!("{} is {} bytes, more than {limit}", self.name, self.left),
            ));
        }
        let mut v = vec![0u8; self.left as usize];
        let during = format!("inside {}", self.name);
        self.fill(&mut v, &during)?;
        self.left = 0;
        Ok(v)
    }
}

/// Reading the current entry's data; 0 at its end.
impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            let got = self.size - self.left;
            return Err(truncated(
                &self.what,
                format!(
                    "it ends inside {} after {got} of {} bytes",
                    self.name, self.size
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Vec<u8> {
        let mut w = Writer::new(io::Cursor::new(Vec::new()), 1_700_000_000);
        w.add("a.json", b"{}").unwrap();
        w.add_stream("nar/x.nar", &mut &[7u8; 1000][..]).unwrap();
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn a_stream_writer_writes_the_same_archive_and_refuses_a_wrong_size() {
        let mut w = StreamWriter::new(Vec::new(), 1_700_000_000);
        w.add("a.json", b"{}").unwrap();
        (w.add_sized("nar/x.nar", 1000, &mut &[7u8; 1000][..])).unwrap();
        assert_eq!(w.finish().unwrap(), archive());
        for n in [999, 1001] {
            let mut w = StreamWriter::new(Vec::new(), 0);
            let e = (w.add_sized("nar/x.nar", 1000, &mut &vec![7u8; n][..])).unwrap_err();
            assert!(e.to_string().contains("FileSize"), "{n}: {e}");
        }
    }

    #[test]
    fn round_trip_in_one_pass() {
        let data = archive();
        assert_eq!(data.len(), 512 + 512 + 512 + 1024 + 1024);
        let mut r = Reader::new(&data[..], "b");
        assert_eq!(r.next_entry().unwrap(), Some(("a.json".into(), 2)));
        assert_eq!(r.read_entry(10).unwrap(), b"{}");
        assert_eq!(r.next_entry().unwrap(), Some(("nar/x.nar".into(), 1000)));
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        assert_eq!(v, vec![7u8; 1000]);
        assert_eq!(r.next_entry().unwrap(), None);
    }

    #[test]
    fn truncation_and_corruption_are_named() {
        let data = archive();
        let mut r = Reader::new(&data[..2012], "b");
        r.next_entry().unwrap();
        r.next_entry().unwrap();
        let mut v = Vec::new();
        let e = r.read_to_end(&mut v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "b is truncated (it ends inside nar/x.nar after 476 of 1000 bytes); copy the whole bundle again"
        );
        let mut bad = data.clone();
        bad[3] ^= 1;
        let e = Reader::new(&bad[..], "b").next_entry().unwrap_err();
        assert!(e.to_string().contains("checksum does not match"), "{e}");
        // Cut at an entry boundary: no end-of-archive marker.
        let mut r = Reader::new(&data[..1024], "b");
        r.next_entry().unwrap();
        let e = r.next_entry().unwrap_err();
        assert!(e.to_string().contains("no end-of-archive marker"), "{e}");
    }
}
