//! The sender-login map (Postfix's `smtpd_sender_login_maps`): which authenticated users
//! own which sender addresses.
//!
//! Format: one entry per line, `address-or-@domain  login[,login…]`, `#` comments and
//! blank lines ignored; keys are matched without regard to case. An address is owned by
//! the logins of its own entry, or, when it has none, by those of its `@domain` entry.
//! An address with no entry is owned by nobody, so an authenticated user may not use it
//! (Postfix's `reject_authenticated_sender_login_mismatch`). The null sender `<>` is
//! not checked (bounces and notifications from a user's own client carry it).
//!
//! The file may be readable by anyone but writable only by its owner (root or Tern's
//! user): see `private_file.rs`. Problems are reported as `file:line: message`; a file
//! with any problem is refused whole and a reload keeps the previous map.

use std::collections::HashMap;
use std::path::Path;

use crate::private_file::{FileError, read_protected};

/// Largest map file read, octets.
pub const MAX_FILE: u64 = 64 * 1024 * 1024;

/// The map, loaded.
#[derive(Debug, Default, Clone)]
pub struct SenderLoginMap {
    /// Lower-cased key (`user@domain` or `@domain`) to lower-cased logins.
    owners: HashMap<String, Vec<String>>,
}

/// Why a map file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SenderMapError {
    /// The file itself was refused or unreadable.
    #[error(transparent)]
    File(#[from] FileError),
    /// Problems in lines, each as `file:line: message`.
    #[error("{}", .0.join("; "))]
    Lines(Vec<String>),
}

impl SenderLoginMap {
    /// Reads and parses a map file.
    pub fn load(path: &Path) -> Result<SenderLoginMap, SenderMapError> {
        let text = read_protected(path, MAX_FILE)?;
        SenderLoginMap::parse(&text, path)
    }

    /// Parses map text; `path` names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<SenderLoginMap, SenderMapError> {
        let mut owners: HashMap<String, Vec<String>> = HashMap::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if problems.len() >= 100 {
                break;
            }
            let Some((key, logins)) = line.split_once(char::is_whitespace) else {
                problems.push(format!(
                    "{}:{n}: expected `address login[,login]`",
                    path.display()
                ));
                continue;
            };
            let key = key.to_lowercase();
            let valid_key = match key.strip_prefix('@') {
                Some(domain) => !domain.is_empty() && !domain.contains('@'),
                None => key
                    .split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty()),
            };
            if !valid_key || key.len() > 512 {
                problems.push(format!(
                    "{}:{n}: {key:?} is neither an address nor @domain",
                    path.display()
                ));
                continue;
            }
            let list: Vec<String> = logins
                .split(',')
                .map(|l| l.trim().to_lowercase())
                .filter(|l| !l.is_empty())
                .collect();
            if list.is_empty()
                || list
                    .iter()
                    .any(|l| l.len() > 255 || l.chars().any(char::is_whitespace))
            {
                problems.push(format!("{}:{n}: bad login list", path.display()));
                continue;
            }
            if owners.contains_key(&key) {
                problems.push(format!("{}:{n}: {key} is listed twice", path.display()));
                continue;
            }
            owners.insert(key, list);
        }
        if !problems.is_empty() {
            return Err(SenderMapError::Lines(problems));
        }
        Ok(SenderLoginMap { owners })
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// True when the map is empty.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// True when `login` may use `address` as a sender. The null sender is always
    /// allowed.
    pub fn owns(&self, login: &str, address: &str) -> bool {
        if address.is_empty() {
            return true;
        }
        let address = address.to_lowercase();
        let login = login.to_lowercase();
        let domain_key = address.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        let owners = self
            .owners
            .get(&address)
            .or_else(|| domain_key.and_then(|k| self.owners.get(&k)));
        owners.is_some_and(|list| list.contains(&login))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_domain_and_unlisted_is_nobodys() {
        let m = SenderLoginMap::parse(
            "# who sends as whom\nalice@example.com alice\nsales@example.com alice, Bob\n@example.org carol\n",
            Path::new("senders"),
        )
        .unwrap();
        assert!(m.owns("alice", "Alice@Example.COM"));
        assert!(m.owns("bob", "sales@example.com"));
        assert!(!m.owns("bob", "alice@example.com"));
        assert!(m.owns("CAROL", "anyone@example.org"));
        assert!(!m.owns("alice", "stranger@example.net"));
        assert!(m.owns("alice", ""));
    }

    #[test]
    fn problems_name_file_and_line() {
        let Err(SenderMapError::Lines(p)) =
            SenderLoginMap::parse("a@b x\nnologin\nnot-an-address y\na@b z\n", Path::new("m"))
        else {
            panic!("accepted");
        };
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("m:2: "));
        assert!(p[2].starts_with("m:4: "));
    }
}
