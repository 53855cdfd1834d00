//! Password schemes of Dovecot's `{SCHEME}hash` form, as `doveadm pw` writes them, and
//! their verification.
//!
//! | scheme | stored form | verified with |
//! | --- | --- | --- |
//! | `ARGON2ID` | `$argon2id$v=19$m=…,t=…,p=…$salt$hash` (PHC) | `argon2` |
//! | `BLF-CRYPT` | `$2y$NN$…` (also `$2a$`, `$2b$`) | `bcrypt` |
//! | `SHA512-CRYPT` | `$6$[rounds=N$]salt$hash` | `sha-crypt` |
//! | `SHA256-CRYPT` | `$5$[rounds=N$]salt$hash` | `sha-crypt` |
//! | `SCRAM-SHA-256` | `iterations,salt,StoredKey,ServerKey` (base64 fields) | `ring` |
//! | `PLAIN`, `CLEAR` | the password itself | constant-time compare |
//! | `CRYPT` or none | one of the crypt forms above, recognised by its `$id$` | as above |
//!
//! [`StoredPassword::parse`] checks the form when the file is loaded, so a verification
//! never meets a malformed hash. Verification is CPU-bound (Argon2 also takes its `m`
//! KiB of memory): the caller runs it on the blocking pool, with a bound on how many run
//! at once (`crate::verify`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use crate::sasl::scram::{ITERATIONS, ScramKeys};

/// Largest Argon2 memory cost accepted, KiB (4 GiB would let one file entry exhaust the
/// machine; Dovecot's default is 64 MiB).
const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;
/// Most SHA-crypt rounds accepted (the algorithm's own maximum is 999,999,999).
const MAX_SHA_ROUNDS: u32 = 10_000_000;

/// A stored password, parsed and checked.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredPassword {
    /// ARGON2ID: the PHC string.
    Argon2id(String),
    /// BLF-CRYPT: the bcrypt string.
    Bcrypt(String),
    /// SHA512-CRYPT.
    Sha512Crypt(String),
    /// SHA256-CRYPT.
    Sha256Crypt(String),
    /// SCRAM-SHA-256's keys.
    Scram(ScramKeys),
    /// PLAIN or CLEAR: the password.
    Plain(Vec<u8>),
}

impl std::fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredPassword({})", self.scheme())
    }
}

/// Why a stored password could not be used (reported as `file:line: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemeError {
    /// `{NAME}` names a scheme Tern does not implement.
    #[error(
        "unsupported password scheme {{{0}}} (Tern reads ARGON2ID, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT, SCRAM-SHA-256, PLAIN)"
    )]
    Unsupported(String),
    /// No `{SCHEME}` and not a crypt form Tern recognises.
    #[error("password has no {{SCHEME}} prefix and is not a recognised crypt hash")]
    Unrecognised,
    /// The hash does not have its scheme's form.
    #[error("malformed {0} hash")]
    Malformed(&'static str),
    /// A cost parameter is outside what Tern accepts.
    #[error("{0} cost out of range")]
    Cost(&'static str),
}

impl StoredPassword {
    /// Parses the password field of a passwd-file line.
    pub fn parse(field: &str) -> Result<StoredPassword, SchemeError> {
        let (scheme, value) = match field.strip_prefix('{').and_then(|r| r.split_once('}')) {
            Some((s, v)) => (s.to_ascii_uppercase(), v),
            None => ("CRYPT".to_string(), field),
        };
        match scheme.as_str() {
            "ARGON2ID" => argon2id(value),
            "BLF-CRYPT" => bcrypt_form(value),
            "SHA512-CRYPT" => sha_crypt(value, "$6$", "SHA512-CRYPT"),
            "SHA256-CRYPT" => sha_crypt(value, "$5$", "SHA256-CRYPT"),
            "SCRAM-SHA-256" => scram(value),
            "PLAIN" | "CLEAR" => Ok(StoredPassword::Plain(value.as_bytes().to_vec())),
            "CRYPT" => {
                if value.starts_with("$argon2id$") {
                    argon2id(value)
                } else if ["$2y$", "$2b$", "$2a$"]
                    .iter()
                    .any(|p| value.starts_with(p))
                {
                    bcrypt_form(value)
                } else if value.starts_with("$6$") {
                    sha_crypt(value, "$6$", "SHA512-CRYPT")
                } else if value.starts_with("$5$") {
                    sha_crypt(value, "$5$", "SHA256-CRYPT")
                } else {
                    Err(SchemeError::Unrecognised)
                }
            }
            other => Err(SchemeError::Unsupported(other.chars().take(32).collect())),
        }
    }

    /// The scheme's name, as in `{NAME}`.
    pub fn scheme(&self) -> &'static str {
        match self {
            StoredPassword::Argon2id(_) => "ARGON2ID",
            StoredPassword::Bcrypt(_) => "BLF-CRYPT",
            StoredPassword::Sha512Crypt(_) => "SHA512-CRYPT",
            StoredPassword::Sha256Crypt(_) => "SHA256-CRYPT",
            StoredPassword::Scram(_) => "SCRAM-SHA-256",
            StoredPassword::Plain(_) => "PLAIN",
        }
    }

    /// The scheme and its cost parameters: two entries with the same cost class take the
    /// same time to verify. Used to pick the stand-in hash for unknown users.
    pub fn cost_class(&self) -> String {
        match self {
            StoredPassword::Argon2id(s) => {
                format!("ARGON2ID {}", s.split('$').nth(3).unwrap_or_default())
            }
            StoredPassword::Bcrypt(s) => {
                format!("BLF-CRYPT {}", s.split('$').nth(2).unwrap_or_default())
            }
            StoredPassword::Sha512Crypt(s) | StoredPassword::Sha256Crypt(s) => {
                let rounds = s
                    .split('$')
                    .nth(2)
                    .filter(|p| p.starts_with("rounds="))
                    .unwrap_or("rounds=5000");
                format!("{} {rounds}", self.scheme())
            }
            StoredPassword::Scram(k) => format!("SCRAM-SHA-256 {}", k.iterations),
            StoredPassword::Plain(_) => "PLAIN".into(),
        }
    }

    /// The SCRAM keys stored for this entry, if the scheme keeps them.
    pub fn scram_keys(&self) -> Option<&ScramKeys> {
        match self {
            StoredPassword::Scram(k) => Some(k),
            _ => None,
        }
    }

    /// The plaintext, for a PLAIN/CLEAR entry (SCRAM derives its keys from it).
    pub fn plaintext(&self) -> Option<&[u8]> {
        match self {
            StoredPassword::Plain(p) => Some(p),
            _ => None,
        }
    }

    /// True when `password` is the stored one. CPU-bound: call on the blocking pool.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredPassword::Argon2id(h) => {
                use argon2::PasswordVerifier;
                argon2::Argon2::default()
                    .verify_password(password, h.as_str())
                    .is_ok()
            }
            StoredPassword::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            StoredPassword::Sha512Crypt(h) | StoredPassword::Sha256Crypt(h) => {
                use sha_crypt::PasswordVerifier;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, h.as_str())
                    .is_ok()
            }
            StoredPassword::Scram(k) => k.matches_password(password),
            StoredPassword::Plain(p) => {
                // Lengths may differ; compare digests so the time does not depend on
                // where the first difference is.
                let a = ring::digest::digest(&ring::digest::SHA256, p);
                let b = ring::digest::digest(&ring::digest::SHA256, password);
                bool::from(a.as_ref().ct_eq(b.as_ref()))
            }
        }
    }
}

fn argon2id(value: &str) -> Result<StoredPassword, SchemeError> {
    let parsed =
        argon2::PasswordHash::new(value).map_err(|_| SchemeError::Malformed("ARGON2ID"))?;
    if parsed.algorithm.as_str() != "argon2id" || parsed.hash.is_none() || parsed.salt.is_none() {
        return Err(SchemeError::Malformed("ARGON2ID"));
    }
    let params =
        argon2::Params::try_from(&parsed).map_err(|_| SchemeError::Malformed("ARGON2ID"))?;
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB || params.t_cost() > 1000 || params.p_cost() > 64 {
        return Err(SchemeError::Cost("ARGON2ID"));
    }
    Ok(StoredPassword::Argon2id(value.to_string()))
}

fn bcrypt_form(value: &str) -> Result<StoredPassword, SchemeError> {
    let mut parts = value.split('$');
    let (Some(""), Some(v), Some(cost), Some(rest), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(SchemeError::Malformed("BLF-CRYPT"));
    };
    if !["2y", "2b", "2a"].contains(&v) || rest.len() != 53 {
        return Err(SchemeError::Malformed("BLF-CRYPT"));
    }
    match cost.parse::<u32>() {
        Ok(c) if (4..=20).contains(&c) && cost.len() == 2 => {
            Ok(StoredPassword::Bcrypt(value.into()))
        }
        Ok(_) => Err(SchemeError::Cost("BLF-CRYPT")),
        Err(_) => Err(SchemeError::Malformed("BLF-CRYPT")),
    }
}

fn sha_crypt(value: &str, prefix: &str, name: &'static str) -> Result<StoredPassword, SchemeError> {
    let rest = value
        .strip_prefix(prefix)
        .ok_or(SchemeError::Malformed(name))?;
    let fields: Vec<&str> = rest.split('$').collect();
    let (rounds, salt, hash) = match fields.as_slice() {
        [r, s, h] if r.starts_with("rounds=") => (Some(*r), *s, *h),
        [s, h] => (None, *s, *h),
        _ => return Err(SchemeError::Malformed(name)),
    };
    if let Some(r) = rounds {
        match r.trim_start_matches("rounds=").parse::<u32>() {
            Ok(n) if n <= MAX_SHA_ROUNDS => {}
            Ok(_) => return Err(SchemeError::Cost(name)),
            Err(_) => return Err(SchemeError::Malformed(name)),
        }
    }
    let want = if prefix == "$6$" { 86 } else { 43 };
    if salt.len() > 16 || hash.len() != want {
        return Err(SchemeError::Malformed(name));
    }
    Ok(if prefix == "$6$" {
        StoredPassword::Sha512Crypt(value.into())
    } else {
        StoredPassword::Sha256Crypt(value.into())
    })
}

/// Dovecot's stored SCRAM-SHA-256: `iterations,base64(salt),base64(StoredKey),base64(ServerKey)`.
fn scram(value: &str) -> Result<StoredPassword, SchemeError> {
    let bad = SchemeError::Malformed("SCRAM-SHA-256");
    let mut f = value.split(',');
    let (Some(iter), Some(salt), Some(stored), Some(server), None) =
        (f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return Err(bad);
    };
    let iterations: u32 = iter.parse().map_err(|_| bad.clone())?;
    if !ITERATIONS.contains(&iterations) {
        return Err(SchemeError::Cost("SCRAM-SHA-256"));
    }
    let salt = STANDARD.decode(salt).map_err(|_| bad.clone())?;
    let key = |s: &str| -> Result<[u8; 32], SchemeError> {
        let v = STANDARD.decode(s).map_err(|_| bad.clone())?;
        <[u8; 32]>::try_from(v.as_slice()).map_err(|_| bad.clone())
    };
    if salt.is_empty() || salt.len() > 256 {
        return Err(bad);
    }
    Ok(StoredPassword::Scram(ScramKeys {
        iterations,
        salt,
        stored_key: key(stored)?,
        server_key: key(server)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Printed by `doveadm pw -s <SCHEME> -p secret` (Dovecot 2.3); the test in
    // tests/doveadm_vectors.rs makes fresh ones with the real doveadm.
    const VECTORS: &[&str] = &[
        "{SCRAM-SHA-256}4096,M9ZmPjAJVYVwDr+l/AmzQA==,4dH8itNjzqDtiq5SLBk8qqU9HL35pnUsUIA8/Zv2kGY=,p5bOFYxgX3jPDRJlsqlSsDbsFAMPlIpGdShbvX6jakk=",
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$SGuEdlKF9ZNVmL2XGw5q/g$F3j+yhtCkKuu9C6On8W8vR3jjdt16LWY1zDUAa2315o",
        "{BLF-CRYPT}$2y$05$8PfVsHa2L9LPWEAMu/W6Ie/atgU.SwJmK.6W4xE2K8fsG1MEbLkky",
        "{SHA512-CRYPT}$6$cL/2/Fx8JYvjGEsV$TO2901.I5aCHlzgMwK3b2cRM2GP0S4o3Oi6lLe0AVSK/JGFBDbk.ruYtDyXGQrt6lehBhQj0VfGfgxow0Fiku.",
        "{SHA256-CRYPT}$5$s3ccXc8Tt5mqSjtr$CY4t/oFKMXLwWGYFBwjwG1SqAPYaL0zo6IgnHj1BGdA",
        "{PLAIN}secret",
    ];

    #[test]
    fn doveadm_hashes_verify() {
        for v in VECTORS {
            let p = StoredPassword::parse(v).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert!(p.verify(b"secret"), "{v}");
            assert!(!p.verify(b"Secret"), "{v}");
            assert!(!p.verify(b""), "{v}");
        }
    }

    #[test]
    fn crypt_forms_without_a_scheme() {
        let p = StoredPassword::parse(
            "$5$s3ccXc8Tt5mqSjtr$CY4t/oFKMXLwWGYFBwjwG1SqAPYaL0zo6IgnHj1BGdA",
        )
        .unwrap();
        assert_eq!(p.scheme(), "SHA256-CRYPT");
        assert!(p.verify(b"secret"));
        assert_eq!(
            StoredPassword::parse("secret"),
            Err(SchemeError::Unrecognised)
        );
        assert!(
            matches!(StoredPassword::parse("{MD5}x"), Err(SchemeError::Unsupported(s)) if s == "MD5")
        );
    }

    #[test]
    fn malformed_and_costly_hashes_are_refused_at_load() {
        for bad in [
            "{ARGON2ID}$argon2id$v=19$m=65536",
            "{ARGON2ID}$argon2i$v=19$m=65536,t=3,p=1$SGuEdlKF9ZNVmL2XGw5q/g$F3j+yhtCkKuu9C6On8W8vR3jjdt16LWY1zDUAa2315o",
            "{BLF-CRYPT}$2y$05$short",
            "{BLF-CRYPT}$2y$31$8PfVsHa2L9LPWEAMu/W6Ie/atgU.SwJmK.6W4xE2K8fsG1MEbLkky",
            "{SHA512-CRYPT}$6$salt$short",
            "{SHA256-CRYPT}$5$rounds=999999999$s3ccXc8Tt5mqSjtr$CY4t/oFKMXLwWGYFBwjwG1SqAPYaL0zo6IgnHj1BGdA",
            "{SCRAM-SHA-256}4096,salt",
            "{SCRAM-SHA-256}0,M9ZmPjAJVYVwDr+l/AmzQA==,4dH8itNjzqDtiq5SLBk8qqU9HL35pnUsUIA8/Zv2kGY=,p5bOFYxgX3jPDRJlsqlSsDbsFAMPlIpGdShbvX6jakk=",
            "{SCRAM-SHA-256}4096,M9ZmPjAJVYVwDr+l/AmzQA==,AAAA,p5bOFYxgX3jPDRJlsqlSsDbsFAMPlIpGdShbvX6jakk=",
        ] {
            assert!(StoredPassword::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn cost_classes() {
        let c: Vec<String> = VECTORS
            .iter()
            .map(|v| StoredPassword::parse(v).unwrap().cost_class())
            .collect();
        assert_eq!(
            c,
            [
                "SCRAM-SHA-256 4096",
                "ARGON2ID m=65536,t=3,p=1",
                "BLF-CRYPT 05",
                "SHA512-CRYPT rounds=5000",
                "SHA256-CRYPT rounds=5000",
                "PLAIN"
            ]
        );
    }
}
