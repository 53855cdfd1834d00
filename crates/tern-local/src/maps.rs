//! The map files: the mailbox map and the alias map, parsed line by line.
//!
//! Mailbox map (Postfix `virtual_mailbox_maps` style), one entry per line:
//!
//! ```text
//! # address           mailbox                 options
//! alice@example.com   alice
//! bob@example.com     /srv/mail/bob/Maildir   quota=50M
//! ```
//!
//! Alias map (`/etc/aliases` style): `key: member, member, ...`; a line that starts with
//! white space continues the entry above it. A key or member without a domain (`team`,
//! `alice`) means that local part in the domain being expanded; a key without a domain
//! applies to every local domain.
//!
//! ```text
//! postmaster:        alice
//! team@example.com:  alice, bob@example.com,
//!                    carol@elsewhere.example
//! ```
//!
//! In both files `#` starts a comment at the start of a line or after white space, and
//! blank lines are ignored.
//!
//! Invariants: parsing never stops at the first error; every error carries its file and
//! line. Nothing here judges whether a domain is local or a mailbox exists: that is the
//! directory's job, which reports with the same locations.
//!
//! Trust: the files come from the operator; they are read up to [`MAX_MAP_BYTES`] and
//! must be UTF-8. Pipes (`|command`), files (`/path`) and `:include:` from
//! `/etc/aliases` are refused, since Tern never runs commands or writes files on an
//! alias's behalf.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest map file read.
pub const MAX_MAP_BYTES: u64 = 64 * 1024 * 1024;

/// One problem in a map file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    /// The file.
    pub file: PathBuf,
    /// Line number from 1; 0 for the file as a whole (unreadable, too large).
    pub line: usize,
    /// What is wrong, as a sentence for the operator.
    pub message: String,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl MapError {
    /// An error at `line` of `file`.
    pub fn at(file: &Path, line: usize, message: impl Into<String>) -> MapError {
        MapError {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// Reads a map file, at most [`MAX_MAP_BYTES`], as UTF-8.
pub fn read_map(file: &Path) -> Result<String, MapError> {
    let f = std::fs::File::open(file).map_err(|e| MapError::at(file, 0, e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_MAP_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| MapError::at(file, 0, e.to_string()))?;
    if bytes.len() as u64 > MAX_MAP_BYTES {
        return Err(MapError::at(
            file,
            0,
            format!("the file is larger than {MAX_MAP_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e
            .as_bytes()
            .get(..e.utf8_error().valid_up_to())
            .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count());
        MapError::at(file, line, "the line is not valid UTF-8")
    })
}

/// A line without its comment (a `#` at the start or after white space).
fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return line.get(..i).unwrap_or(line);
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// One entry of the mailbox map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxLine {
    /// Line number.
    pub line: usize,
    /// The address as written.
    pub address: String,
    /// The mailbox as written: a name or an absolute path.
    pub mailbox: String,
    /// `quota=` in bytes, when given (`0`: no quota for this mailbox).
    pub quota: Option<u64>,
}

/// Parses the mailbox map; returns the entries and every error.
pub fn parse_mailbox_map(file: &Path, text: &str) -> (Vec<MailboxLine>, Vec<MapError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let mut fields = strip_comment(raw).split_whitespace();
        let Some(address) = fields.next() else {
            continue;
        };
        let Some(mailbox) = fields.next() else {
            errors.push(MapError::at(
                file,
                n,
                format!("{address:?} has no mailbox (write: address  mailbox)"),
            ));
            continue;
        };
        let mut quota = None;
        let mut ok = true;
        for option in fields {
            match option.split_once('=') {
                Some(("quota", size)) => match parse_size(size) {
                    Ok(q) => quota = Some(q),
                    Err(why) => {
                        errors.push(MapError::at(file, n, why));
                        ok = false;
                    }
                },
                _ => {
                    errors.push(MapError::at(
                        file,
                        n,
                        format!("unknown option {option:?} (the only option is quota=SIZE)"),
                    ));
                    ok = false;
                }
            }
        }
        if ok {
            entries.push(MailboxLine {
                line: n,
                address: address.to_owned(),
                mailbox: mailbox.to_owned(),
                quota,
            });
        }
    }
    (entries, errors)
}

/// Parses a size: a number of bytes, optionally followed by `K`, `M` or `G` (powers of
/// 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (text.get(..i).unwrap_or(""), Some(c)),
        _ => (text, None),
    };
    let multiplier: u64 = match unit.map(|c| c.to_ascii_uppercase()) {
        None => 1,
        Some('K') => 1 << 10,
        Some('M') => 1 << 20,
        Some('G') => 1 << 30,
        Some(_) => return Err(format!("{text:?}: the size unit must be K, M or G")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (a number of bytes, or with K, M or G)"))?;
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// One entry of the alias map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasLine {
    /// Line number of the key.
    pub line: usize,
    /// The key as written: `name` or `name@domain`.
    pub key: String,
    /// The members as written, in order, each `name` or `name@domain`; never empty.
    pub members: Vec<String>,
}

/// Parses the alias map; returns the entries and every error.
pub fn parse_alias_map(file: &Path, text: &str) -> (Vec<AliasLine>, Vec<MapError>) {
    // Logical entries: (line of the key, text after it with continuations joined).
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = strip_comment(raw);
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match logical.last_mut() {
                Some((_, entry)) => {
                    entry.push(' ');
                    entry.push_str(line.trim());
                }
                None => errors.push(MapError::at(
                    file,
                    n,
                    "a continuation line (starting with white space) without an entry above it",
                )),
            }
            continue;
        }
        logical.push((n, line.trim().to_owned()));
    }
    let mut entries = Vec::new();
    for (n, entry) in logical {
        let Some((key, rest)) = entry.split_once(':') else {
            errors.push(MapError::at(
                file,
                n,
                format!("{entry:?}: expected \"name: member, member\""),
            ));
            continue;
        };
        let key = key.trim();
        if let Err(why) = check_word(key) {
            errors.push(MapError::at(file, n, format!("alias {key:?}: {why}")));
            continue;
        }
        let mut members = Vec::new();
        let mut ok = true;
        for member in rest.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let why = if member.starts_with('|') {
                Some("pipes to commands are not supported".to_owned())
            } else if member.starts_with('/') {
                Some("deliveries to files are not supported".to_owned())
            } else if member.starts_with(":include:") {
                Some(":include: is not supported; list the members here".to_owned())
            } else {
                check_word(member).err()
            };
            match why {
                Some(why) => {
                    errors.push(MapError::at(file, n, format!("member {member:?}: {why}")));
                    ok = false;
                }
                None => members.push(member.to_owned()),
            }
        }
        if members.is_empty() && ok {
            errors.push(MapError::at(
                file,
                n,
                format!("alias {key:?} has no members"),
            ));
            continue;
        }
        if ok {
            entries.push(AliasLine {
                line: n,
                key: key.to_owned(),
                members,
            });
        }
    }
    (entries, errors)
}

/// A key or member: `name` or `name@domain`, no white space, quotes or backslashes.
fn check_word(word: &str) -> Result<(), String> {
    if word.is_empty() {
        return Err("empty name".into());
    }
    if word.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains white space (separate members with commas)".into());
    }
    if word.contains(['"', '\\']) {
        return Err("quoted local parts and backslash escapes are not supported".into());
    }
    if word.starts_with('@') || word.ends_with('@') {
        return Err("an address needs a local part and a domain".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> &'static Path {
        Path::new("m")
    }

    #[test]
    fn mailbox_lines_with_comments_and_quota() {
        let text = "# header\n\nalice@x.test  alice # note\nbob@x.test\t/srv/bob/Maildir  quota=2K\nc#d@x.test c\n";
        let (entries, errors) = parse_mailbox_map(f(), text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].line, 3);
        assert_eq!(
            (entries[0].address.as_str(), entries[0].mailbox.as_str()),
            ("alice@x.test", "alice")
        );
        assert_eq!(entries[1].quota, Some(2048));
        assert_eq!(entries[2].address, "c#d@x.test");
    }

    #[test]
    fn every_mailbox_error_is_located() {
        let text = "lonely@x.test\nok@x.test ok\nq@x.test q quota=lots\nz@x.test z colour=blue\n";
        let (entries, errors) = parse_mailbox_map(f(), text);
        assert_eq!(entries.len(), 1);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 3, 4]);
        assert!(errors[0].to_string().starts_with("m:1: "), "{}", errors[0]);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("3M"), Ok(3 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        for bad in ["", "M", "1T", "-1", "1.5M", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn alias_entries_continue_on_indented_lines() {
        let text = "postmaster: alice\nteam@x.test: alice, bob@x.test,\n   carol@far.test  # remote\n\n# c\nlist: a,,b\n";
        let (entries, errors) = parse_alias_map(f(), text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].line, 2);
        assert_eq!(
            entries[1].members,
            ["alice", "bob@x.test", "carol@far.test"]
        );
        assert_eq!(entries[2].members, ["a", "b"]);
    }

    #[test]
    fn unsupported_alias_targets_are_refused_with_their_line() {
        let text = "  orphan\nnocolon\npipe: |/bin/sh\nfile: /tmp/x\ninc: :include:/etc/list\nempty:\nsp: a b\nq: \"a b\"@x.test\n";
        let (entries, errors) = parse_alias_map(f(), text);
        assert!(entries.is_empty(), "{entries:?}");
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5, 6, 7, 8], "{errors:?}");
    }

    #[test]
    fn unreadable_and_non_utf8_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none");
        assert_eq!(read_map(&missing).unwrap_err().line, 0);
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"a: b\nc: \xff\n").unwrap();
        assert_eq!(read_map(&bad).unwrap_err().line, 2);
    }
}
