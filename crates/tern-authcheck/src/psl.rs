//! The Public Suffix List and organisational domains (RFC 7489 §3.2).
//!
//! mail-auth 0.13 finds organisational domains by DMARCbis's DNS tree walk and has no
//! Public Suffix List; RFC 7489 asks for the list, so Tern keeps its own: the list shipped
//! in `data/public_suffix_list.dat` (compiled in, see `data/README.md`), or a file named
//! by `[verify] public_suffix_list`.
//!
//! Invariants: parsing never fails on content (unknown lines are skipped) and is bounded
//! by [`MAX_LIST_BYTES`]; lookups are on lowercase A-labels; a domain with no matching
//! rule has the default rule `*` (its last label is the suffix).

use std::collections::HashSet;
use std::path::Path;

/// The list compiled into Tern.
pub const BUILTIN: &str = include_str!("../data/public_suffix_list.dat");

/// The largest list file read (today's list is about 250 KB).
pub const MAX_LIST_BYTES: u64 = 8 * 1024 * 1024;

/// A parsed Public Suffix List.
#[derive(Debug, Clone, Default)]
pub struct SuffixList {
    rules: HashSet<String>,
    /// `*.x` rules, stored as `x`.
    wildcards: HashSet<String>,
    /// `!x` rules, stored as `x`.
    exceptions: HashSet<String>,
}

/// Why a list file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PslError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Over [`MAX_LIST_BYTES`], or not UTF-8, or without any rule.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl SuffixList {
    /// The list compiled into Tern.
    pub fn builtin() -> SuffixList {
        SuffixList::parse(BUILTIN)
    }

    /// Reads a list file (no link followed, size bounded).
    pub fn load(path: &Path) -> Result<SuffixList, PslError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let shown = path.display().to_string();
        let read_err = |source| PslError::Read {
            path: shown.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_LIST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        let invalid = |reason: &str| PslError::Invalid {
            path: shown.clone(),
            reason: reason.into(),
        };
        if bytes.len() as u64 > MAX_LIST_BYTES {
            return Err(invalid("larger than 8 MiB"));
        }
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8"))?;
        let list = SuffixList::parse(&text);
        if list.is_empty() {
            return Err(invalid("no rules"));
        }
        Ok(list)
    }

    /// Parses the list's text format (one rule per line, `//` comments).
    pub fn parse(text: &str) -> SuffixList {
        let mut list = SuffixList::default();
        for line in text.lines() {
            let Some(rule) = line.split_whitespace().next() else {
                continue;
            };
            if rule.starts_with("//") {
                continue;
            }
            let (set, name) = if let Some(r) = rule.strip_prefix('!') {
                (&mut list.exceptions, r)
            } else if let Some(r) = rule.strip_prefix("*.") {
                (&mut list.wildcards, r)
            } else {
                (&mut list.rules, rule)
            };
            if let Some(ascii) = to_ascii(name) {
                set.insert(ascii);
            }
        }
        list
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len() + self.wildcards.len() + self.exceptions.len()
    }

    /// True when the list has no rule.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The public suffix of `domain` (lowercase A-labels, no trailing dot).
    pub fn public_suffix<'a>(&self, domain: &'a str) -> &'a str {
        let domain = domain.trim_end_matches('.');
        // Walk the candidate suffixes from the longest (the domain itself) down.
        let mut rest = domain;
        loop {
            if self.exceptions.contains(rest) {
                // An exception rule: its suffix is the rule minus its first label.
                return rest.split_once('.').map_or(rest, |(_, s)| s);
            }
            if self.rules.contains(rest) {
                return rest;
            }
            if let Some((_, parent)) = rest.split_once('.') {
                if self.wildcards.contains(parent) {
                    return rest;
                }
                rest = parent;
            } else {
                // The default rule `*`: the last label.
                return rest;
            }
        }
    }

    /// The organisational domain of `domain` (RFC 7489 §3.2): its public suffix plus one
    /// label; a domain that is itself a public suffix is its own.
    pub fn organizational_domain<'a>(&self, domain: &'a str) -> &'a str {
        let domain = domain.trim_end_matches('.');
        let suffix = self.public_suffix(domain);
        if suffix.len() >= domain.len() {
            return domain;
        }
        let head = domain
            .get(..domain.len() - suffix.len())
            .unwrap_or_default()
            .trim_end_matches('.');
        let label_start = head.rfind('.').map_or(0, |i| i + 1);
        domain.get(label_start..).unwrap_or(domain)
    }
}

/// A rule or domain as lowercase A-labels.
pub fn to_ascii(name: &str) -> Option<String> {
    if name.is_ascii() {
        return Some(name.to_ascii_lowercase());
    }
    idna::domain_to_ascii(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_list_parses_and_finds_organisational_domains() {
        let psl = SuffixList::builtin();
        assert!(psl.len() > 5000, "{}", psl.len());
        for (domain, org) in [
            ("example.com", "example.com"),
            ("mail.example.com", "example.com"),
            ("a.b.example.co.uk", "example.co.uk"),
            ("co.uk", "co.uk"),
            ("com", "com"),
            ("foo.bar.unknowntld", "bar.unknowntld"),
            // Wildcard `*.ck` with exception `!www.ck`.
            ("a.b.ck", "a.b.ck"),
            ("x.www.ck", "www.ck"),
            // Private section: each user of github.io is its own organisation.
            ("mail.alice.github.io", "alice.github.io"),
        ] {
            assert_eq!(psl.organizational_domain(domain), org, "{domain}");
        }
    }

    #[test]
    fn idn_rules_are_stored_as_a_labels() {
        let psl = SuffixList::parse("// c\n公司.cn\n*.wild\n!ok.wild\n");
        assert_eq!(
            psl.organizational_domain("mail.example.xn--55qx5d.cn"),
            "example.xn--55qx5d.cn"
        );
        assert_eq!(psl.organizational_domain("a.b.wild"), "a.b.wild");
        assert_eq!(psl.organizational_domain("a.ok.wild"), "ok.wild");
    }

    #[test]
    fn an_oversized_or_empty_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("tern-psl-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let empty = dir.join("empty.dat");
        let _ = std::fs::write(&empty, "// nothing\n");
        assert!(matches!(
            SuffixList::load(&empty),
            Err(PslError::Invalid { .. })
        ));
        let good = dir.join("good.dat");
        let _ = std::fs::write(&good, "com\nuk\nco.uk\n");
        assert_eq!(
            SuffixList::load(&good).map(|l| l.len()).unwrap_or(0),
            3,
            "a small list loads"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
