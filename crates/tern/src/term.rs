//! What the CLI prints passes through [`Safe`]: text from mail (senders, recipients,
//! header fields, remote replies, error texts) must never reach a terminal as control
//! sequences. A remote client could otherwise put `ESC [ 2 J` or an OSC sequence (set the
//! window title, write to the clipboard, make a link) into a field that an administrator
//! then prints with `tern queue show`.
//!
//! Rule, applied to every octet written: line feed and tab pass; every other C0 control,
//! DEL, every C1 control (U+0080 to U+009F) and the bidirectional overrides and isolates
//! (U+202A to U+202E, U+2066 to U+2069, which reorder what a reader sees) are written as
//! `\u00XX` / `\u202E`; octets that are not UTF-8 are written as `\xNN`. The escapes are
//! also valid JSON string escapes, and in JSON output such characters only occur inside
//! strings, so `--json` output stays valid JSON and means the same.
//!
//! Only `tern queue export` to a file or a pipe writes a message's bytes unchanged (it is
//! the message); to a terminal it goes through the same filter.

use std::io::{self, Write};

/// A writer that escapes what a terminal would interpret (see the module header).
pub struct Safe<W: Write> {
    inner: W,
    /// The start of a UTF-8 sequence cut by the end of the last write.
    pending: Vec<u8>,
}

impl<W: Write> Safe<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Safe<W> {
        Safe {
            inner,
            pending: Vec::new(),
        }
    }

    fn emit(&mut self, bytes: &[u8], at_end: bool) -> io::Result<()> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut chunks = bytes.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            for c in chunk.valid().chars() {
                if needs_escape(c) {
                    out.extend_from_slice(format!("\\u{:04X}", u32::from(c)).as_bytes());
                } else {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
            let invalid = chunk.invalid();
            // An incomplete sequence at the very end may be completed by the next write.
            if chunks.peek().is_none() && !at_end && incomplete_tail(invalid) {
                self.pending.extend_from_slice(invalid);
            } else {
                for b in invalid {
                    out.extend_from_slice(format!("\\x{b:02X}").as_bytes());
                }
            }
        }
        self.inner.write_all(&out)
    }
}

/// Whether `c` is written as an escape.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `tail` could be the start of a UTF-8 sequence whose rest has not come yet.
fn incomplete_tail(tail: &[u8]) -> bool {
    let Some(&first) = tail.first() else {
        return false;
    };
    let need = match first {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return false,
    };
    tail.len() < need && tail[1..].iter().all(|b| b & 0xC0 == 0x80)
}

impl<W: Write> Write for Safe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            self.emit(buf, false)?;
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(buf);
            self.emit(&joined, false)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest, true)?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for Safe<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Standard output through [`Safe`].
pub fn stdout() -> Safe<io::StdoutLock<'static>> {
    Safe::new(io::stdout().lock())
}

/// Standard error through [`Safe`].
pub fn stderr() -> Safe<io::StderrLock<'static>> {
    Safe::new(io::stderr().lock())
}

/// `println!` through [`stdout`] (a closed pipe ends the output quietly).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!($crate::term::stdout(), $($arg)*);
    }};
}

/// `print!` through [`stdout`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!($crate::term::stdout(), $($arg)*);
    }};
}

/// `eprintln!` through [`stderr`].
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!($crate::term::stderr(), $($arg)*);
    }};
}

/// `eprint!` through [`stderr`].
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!($crate::term::stderr(), $($arg)*);
    }};
}

pub(crate) use {err, errln, out, outln};

#[cfg(test)]
mod tests {
    use super::*;

    fn safe(bytes: &[u8]) -> String {
        let mut s = Safe::new(Vec::new());
        s.write_all(bytes).unwrap();
        s.flush().unwrap();
        let v = std::mem::take(&mut s.inner);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes_and_osc_sequences_are_made_visible() {
        assert_eq!(
            safe(b"From: a\x1b[2J\x1b]0;owned\x07b\r\n"),
            "From: a\\u001B[2J\\u001B]0;owned\\u0007b\\u000D\n"
        );
        assert_eq!(safe("x\u{9b}31m\u{7f}".as_bytes()), "x\\u009B31m\\u007F");
        assert_eq!(safe("a\u{202E}b".as_bytes()), "a\\u202Eb");
        assert_eq!(safe(b"\xff\x9b ok"), "\\xFF\\x9B ok");
        assert_eq!(safe("tab\tand é, 日本".as_bytes()), "tab\tand é, 日本");
    }

    #[test]
    fn json_stays_valid_and_equal() {
        let v = serde_json::json!({"sender": "a\u{9b}b\u{1b}c\u{202E}d", "n": 1});
        let text = serde_json::to_string(&v).unwrap();
        let filtered = safe(text.as_bytes());
        assert!(!filtered.contains('\u{9b}'));
        let back: serde_json::Value = serde_json::from_str(&filtered).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn a_character_cut_between_writes_is_kept_whole() {
        let mut s = Safe::new(Vec::new());
        let bytes = "é\u{9b}".as_bytes();
        for b in bytes {
            s.write_all(std::slice::from_ref(b)).unwrap();
        }
        s.flush().unwrap();
        assert_eq!(
            String::from_utf8(std::mem::take(&mut s.inner)).unwrap(),
            "é\\u009B"
        );
        // A lone lead octet at the end is escaped once the output is flushed.
        assert_eq!(safe(b"a\xc3"), "a\\xC3");
    }
}
