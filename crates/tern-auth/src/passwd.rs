//! Dovecot's `passwd-file` format: one user per line,
//! `user:password[:uid:gid:gecos:home:shell:extra_fields]`, `#` comments and blank lines
//! ignored. Only the first two fields are used; the others (and Dovecot's extra fields
//! such as `nopassword` or `allow_nets=`) are accepted and ignored, so the file a Dovecot
//! installation uses can be named as it is.
//!
//! User names are matched without regard to case (Dovecot's `auth_username_format =
//! %Lu`, which most installations set); two lines whose names differ only in case are an
//! error. The name reported after a successful login is the one written in the file.
//!
//! The file is read as described in `private_file.rs` (no link, mode, owner, at most
//! [`MAX_FILE`] octets). Every problem is reported as `file:line: message`, and a file
//! with any problem is refused as a whole: a reload keeps the previous table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::private_file::{FileError, read_private};
use crate::scheme::StoredPassword;

/// Largest passwd-file read, octets.
pub const MAX_FILE: u64 = 64 * 1024 * 1024;
/// Longest line, octets.
const MAX_LINE: usize = 16 * 1024;

/// One user.
#[derive(Debug, Clone)]
pub struct PasswdEntry {
    /// The name as written in the file.
    pub name: String,
    /// The stored password.
    pub password: StoredPassword,
}

/// A passwd-file, loaded.
#[derive(Debug)]
pub struct PasswdFile {
    path: PathBuf,
    /// Keyed by the lower-cased name.
    users: HashMap<String, PasswdEntry>,
    /// The entry an unknown user's password is checked against: one of the most common
    /// scheme and cost in the file, so the check takes as long as a real one.
    stand_in: Option<StoredPassword>,
    /// The iteration count stand-in SCRAM keys use (the most common in the file).
    scram_iterations: u32,
}

/// Why a passwd-file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswdError {
    /// The file itself was refused (link, mode, owner, size) or unreadable.
    #[error(transparent)]
    File(#[from] FileError),
    /// Problems in lines, each as `file:line: message`.
    #[error("{}", .0.join("; "))]
    Lines(Vec<String>),
}

impl PasswdFile {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<PasswdFile, PasswdError> {
        let text = read_private(path, MAX_FILE)?;
        PasswdFile::parse(&text, path)
    }

    /// Parses file text; `path` names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<PasswdFile, PasswdError> {
        let mut users: HashMap<String, PasswdEntry> = HashMap::new();
        let mut problems = Vec::new();
        let shown = path.display();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if problems.len() >= 100 {
                problems.push(format!("{shown}: more problems not listed"));
                break;
            }
            if line.len() > MAX_LINE {
                problems.push(format!("{shown}:{n}: line longer than {MAX_LINE} octets"));
                continue;
            }
            let mut fields = line.splitn(3, ':');
            let name = fields.next().unwrap_or_default();
            let Some(password) = fields.next() else {
                problems.push(format!("{shown}:{n}: expected user:{{SCHEME}}password"));
                continue;
            };
            if name.is_empty()
                || name.len() > crate::sasl::MAX_FIELD
                || name.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                problems.push(format!("{shown}:{n}: bad user name"));
                continue;
            }
            let password = match StoredPassword::parse(password) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{shown}:{n}: user {name}: {e}"));
                    continue;
                }
            };
            let key = name.to_lowercase();
            if let Some(first) = users.get(&key) {
                problems.push(format!(
                    "{shown}:{n}: user {name} is listed twice (also as {})",
                    first.name
                ));
                continue;
            }
            users.insert(
                key,
                PasswdEntry {
                    name: name.to_string(),
                    password,
                },
            );
        }
        if !problems.is_empty() {
            return Err(PasswdError::Lines(problems));
        }
        let stand_in = most_common(users.values().map(|e| &e.password));
        let scram_iterations = most_common_by(
            users
                .values()
                .filter_map(|e| e.password.scram_keys().map(|k| k.iterations)),
        )
        .unwrap_or(crate::sasl::scram::DEFAULT_ITERATIONS);
        Ok(PasswdFile {
            path: path.to_path_buf(),
            users,
            stand_in,
            scram_iterations,
        })
    }

    /// The entry for `user` (case-insensitive).
    pub fn lookup(&self, user: &str) -> Option<&PasswdEntry> {
        self.users.get(&user.to_lowercase())
    }

    /// Users in the file.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file lists nobody.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What an unknown user's password is checked against (see the field).
    pub fn stand_in(&self) -> Option<&StoredPassword> {
        self.stand_in.as_ref()
    }

    /// The iteration count of stand-in SCRAM keys.
    pub fn scram_iterations(&self) -> u32 {
        self.scram_iterations
    }
}

/// One password of the most common cost class (ties: the class that sorts first).
fn most_common<'a>(passwords: impl Iterator<Item = &'a StoredPassword>) -> Option<StoredPassword> {
    let mut classes: HashMap<String, (usize, &StoredPassword)> = HashMap::new();
    for p in passwords {
        classes.entry(p.cost_class()).or_insert((0, p)).0 += 1;
    }
    classes
        .into_iter()
        .max_by(|(ka, (a, _)), (kb, (b, _))| a.cmp(b).then(kb.cmp(ka)))
        .map(|(_, (_, p))| p.clone())
}

fn most_common_by(values: impl Iterator<Item = u32>) -> Option<u32> {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|(ka, a), (kb, b)| a.cmp(b).then(kb.cmp(ka)))
        .map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA512: &str = "{SHA512-CRYPT}$6$cL/2/Fx8JYvjGEsV$TO2901.I5aCHlzgMwK3b2cRM2GP0S4o3Oi6lLe0AVSK/JGFBDbk.ruYtDyXGQrt6lehBhQj0VfGfgxow0Fiku.";

    #[test]
    fn dovecot_lines_comments_and_extra_fields() {
        let text = format!(
            "# users\n\nalice:{SHA512}:1000:1000::/home/alice::userdb_quota_rule=*:storage=1G\nBob:{{PLAIN}}pw\ncarol:{SHA512}\n"
        );
        let f = PasswdFile::parse(&text, Path::new("users")).unwrap();
        assert_eq!(f.len(), 3);
        assert!(f.lookup("ALICE").unwrap().password.verify(b"secret"));
        assert_eq!(f.lookup("bob").unwrap().name, "Bob");
        assert!(f.lookup("dave").is_none());
        // Two SHA512-CRYPT entries, one PLAIN: the stand-in is SHA512-CRYPT.
        assert_eq!(f.stand_in().unwrap().scheme(), "SHA512-CRYPT");
    }

    #[test]
    fn problems_are_reported_with_file_and_line() {
        let text = "alice:{PLAIN}a\nnopassword\nbob:{MD5}x\nALICE:{PLAIN}b\n";
        let Err(PasswdError::Lines(p)) = PasswdFile::parse(text, Path::new("/etc/tern/users"))
        else {
            panic!("accepted");
        };
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("/etc/tern/users:2: "), "{p:?}");
        assert!(
            p[1].starts_with("/etc/tern/users:3: user bob: unsupported"),
            "{p:?}"
        );
        assert!(p[2].contains(":4: user ALICE is listed twice"), "{p:?}");
    }
}
