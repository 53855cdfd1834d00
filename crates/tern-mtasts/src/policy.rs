//! The `_mta-sts` TXT record and the policy file (RFC 8461 §3.1, §3.2), sans I/O.
//!
//! Both grammars are parsed strictly and bounded:
//! - TXT: of the records returned, those not starting with `v=STSv1` are discarded; if
//!   not exactly one is left, or it has no valid `id` (1 to 32 letters and digits), the
//!   domain has no policy available (§3.1). Unknown fields are ignored.
//! - policy: `key: value` lines ended by CRLF (a bare LF is accepted too: many servers
//!   write one); `version` must be `STSv1`, `mode` one of `enforce`, `testing`, `none`,
//!   `max_age` 1 to 10 digits (values above 31557600 are capped to it, §3.2's maximum),
//!   `mx` patterns repeated (at least one unless `mode: none`), each a domain name or
//!   `*.` and a domain name. Unknown fields are ignored; for `version`, `mode` and
//!   `max_age` given twice the first counts. A line without `:`, a field name or value
//!   outside the grammar, non-UTF-8 text, more than [`MAX_LINES`] lines or [`MAX_MX`]
//!   patterns: the policy is invalid (`sts-policy-invalid` in reports).
//!
//! Invariant: nothing here panics or allocates more than its input's size.

/// The largest `max_age` (one year), RFC 8461 §3.2.
pub const MAX_AGE_CAP: u64 = 31_557_600;
/// The most lines of a policy file.
pub const MAX_LINES: usize = 1000;
/// The most `mx` patterns kept.
pub const MAX_MX: usize = 200;

/// A policy's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Only MX hosts matching the patterns, with a valid certificate.
    Enforce,
    /// Deliver as before, report failures.
    Testing,
    /// The domain has withdrawn its policy.
    None,
}

impl Mode {
    /// RFC 8461's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The mode.
    pub mode: Mode,
    /// The `mx` patterns, lowercase, without a trailing dot.
    pub mx: Vec<String>,
    /// How long it may be cached, seconds (≤ [`MAX_AGE_CAP`]).
    pub max_age: u64,
    /// The file's lines as parsed (trimmed, empty ones dropped), for the TLS report's
    /// `policy-string`.
    pub lines: Vec<String>,
}

/// Why a policy file is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not UTF-8.
    #[error("the policy is not UTF-8 text")]
    NotText,
    /// More than [`MAX_LINES`] lines or [`MAX_MX`] patterns.
    #[error("the policy has too many lines or mx patterns")]
    TooLong,
    /// A line that is not `name: value` (1-based line number).
    #[error("line {0} is not a policy field")]
    Syntax(usize),
    /// A required field is missing.
    #[error("no {0} field")]
    Missing(&'static str),
    /// A field's value is not allowed.
    #[error("bad {field} value {value:?}")]
    Value {
        /// The field.
        field: &'static str,
        /// Its value (at most 100 characters).
        value: String,
    },
}

fn bad(field: &'static str, value: &str) -> PolicyError {
    PolicyError::Value {
        field,
        value: value.chars().take(100).collect(),
    }
}

/// Whether `s` is a DNS host name: labels of letters, digits and hyphens (not at either
/// end), 1 to 63 octets, at least two labels, 253 octets at most.
pub fn is_domain(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 || !s.contains('.') {
        return false;
    }
    s.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

fn mx_pattern(value: &str) -> Option<String> {
    let v = value.trim_end_matches('.').to_ascii_lowercase();
    let name = v.strip_prefix("*.").unwrap_or(&v);
    is_domain(name).then_some(v)
}

/// Parses a policy file's body (module header for the grammar).
pub fn parse_policy(body: &[u8]) -> Result<Policy, PolicyError> {
    let text = std::str::from_utf8(body).map_err(|_| PolicyError::NotText)?;
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    let mut lines = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        if i >= MAX_LINES {
            return Err(PolicyError::TooLong);
        }
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(PolicyError::Syntax(i + 1))?;
        let value = value.trim_matches([' ', '\t']);
        if name.is_empty()
            || name.len() > 32
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            || value.chars().any(|c| c.is_control())
        {
            return Err(PolicyError::Syntax(i + 1));
        }
        lines.push(format!("{name}: {value}"));
        match name {
            "version" if version.is_none() => version = Some(value),
            "mode" if mode.is_none() => mode = Some(value),
            "max_age" if max_age.is_none() => max_age = Some(value),
            "mx" => {
                if mx.len() >= MAX_MX {
                    return Err(PolicyError::TooLong);
                }
                mx.push(mx_pattern(value).ok_or_else(|| bad("mx", value))?);
            }
            _ => {}
        }
    }
    match version {
        None => return Err(PolicyError::Missing("version")),
        Some("STSv1") => {}
        Some(v) => return Err(bad("version", v)),
    }
    let mode = match mode {
        None => return Err(PolicyError::Missing("mode")),
        Some("enforce") => Mode::Enforce,
        Some("testing") => Mode::Testing,
        Some("none") => Mode::None,
        Some(v) => return Err(bad("mode", v)),
    };
    let max_age = match max_age {
        None => return Err(PolicyError::Missing("max_age")),
        Some(v) if !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) => v
            .parse::<u64>()
            .map_err(|_| bad("max_age", v))?
            .min(MAX_AGE_CAP),
        Some(v) => return Err(bad("max_age", v)),
    };
    if mx.is_empty() && mode != Mode::None {
        return Err(PolicyError::Missing("mx"));
    }
    Ok(Policy {
        mode,
        mx,
        max_age,
        lines,
    })
}

/// What the `_mta-sts` TXT records say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtRecord {
    /// Exactly one valid `v=STSv1` record, with this `id`.
    Id(String),
    /// No usable record (none, several, or an invalid one); the text says which.
    Absent(&'static str),
}

/// Reads the TXT records of `_mta-sts.<domain>` (module header).
pub fn parse_txt(records: &[String]) -> TxtRecord {
    let sts: Vec<&String> = records
        .iter()
        .filter(|r| {
            r.strip_prefix("v=STSv1")
                .is_some_and(|rest| rest.is_empty() || rest.trim_start().starts_with(';'))
        })
        .collect();
    let record = match sts.as_slice() {
        [] => return TxtRecord::Absent("no v=STSv1 TXT record"),
        [one] => one,
        _ => return TxtRecord::Absent("several v=STSv1 TXT records"),
    };
    let mut id = None;
    for field in record.split(';').skip(1) {
        let field = field.trim_matches([' ', '\t']);
        if field.is_empty() {
            continue;
        }
        let Some((name, value)) = field.split_once('=') else {
            return TxtRecord::Absent("a TXT field without '='");
        };
        if name == "id" && id.is_none() {
            if value.is_empty()
                || value.len() > 32
                || !value.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return TxtRecord::Absent("an invalid id in the TXT record");
            }
            id = Some(value.to_string());
        }
    }
    match id {
        Some(id) => TxtRecord::Id(id),
        None => TxtRecord::Absent("no id in the TXT record"),
    }
}

/// Whether `host` matches an `mx` pattern (RFC 8461 §4.1: exact, or `*.` standing for
/// exactly one leftmost label).
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => host == pattern,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rfc_8461_examples_parse() {
        // §3.2's example.
        let p = parse_policy(
            b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(
            p.mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        assert_eq!(p.max_age, 604_800);
        assert_eq!(p.lines.len(), 6);
        // LF only, spaces, unknown fields, mode none without mx, a capped max_age.
        let p =
            parse_policy(b"version:STSv1\nmode:   none\nmax_age: 9999999999\nfoo: bar\n").unwrap();
        assert_eq!((p.mode, p.max_age), (Mode::None, MAX_AGE_CAP));
        let p = parse_policy(b"version: STSv1\nmode: testing\nmx: MX.Example.COM.\nmax_age: 86400")
            .unwrap();
        assert_eq!(
            (p.mode, p.mx[0].as_str()),
            (Mode::Testing, "mx.example.com")
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let base = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n";
        assert!(parse_policy(base.as_bytes()).is_ok());
        for (bad, why) in [
            (base.replace("STSv1", "STSv2"), "version"),
            (base.replace("version: STSv1\n", ""), "no version"),
            (base.replace("enforce", "enforcing"), "mode"),
            (base.replace("mode: enforce\n", ""), "no mode"),
            (base.replace("86400", "-1"), "negative max_age"),
            (base.replace("86400", "12345678901"), "11 digits"),
            (base.replace("86400", ""), "empty max_age"),
            (base.replace("max_age: 86400\n", ""), "no max_age"),
            (base.replace("mx: mx.example.com\n", ""), "no mx in enforce"),
            (base.replace("mx.example.com", "mx..example.com"), "bad mx"),
            (
                base.replace("mx.example.com", "*.*.example.com"),
                "two wildcards",
            ),
            (
                base.replace("mx.example.com", "mx_1.example.com"),
                "underscore",
            ),
            (base.replace("mx.example.com", "localhost"), "one label"),
            (format!("{base}garbage line\n"), "no colon"),
            (format!("{base}bad name: x\n"), "space in name"),
            (
                format!("{base}{}", "x: y\n".repeat(MAX_LINES)),
                "too many lines",
            ),
        ] {
            assert!(parse_policy(bad.as_bytes()).is_err(), "{why} accepted");
        }
        assert_eq!(parse_policy(b"\xff\xfe"), Err(PolicyError::NotText));
    }

    #[test]
    fn txt_records() {
        let t = |r: &[&str]| parse_txt(&r.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            t(&["v=STSv1; id=20160831085700Z;"]),
            TxtRecord::Id("20160831085700Z".into())
        );
        assert_eq!(
            t(&["v=STSv1;id=abc", "v=spf1 -all"]),
            TxtRecord::Id("abc".into())
        );
        assert_eq!(t(&["v=STSv1; id=abc; ext=1"]), TxtRecord::Id("abc".into()));
        assert!(matches!(t(&[]), TxtRecord::Absent(_)));
        assert!(matches!(
            t(&["v=STSv1; id=a", "v=STSv1; id=b"]),
            TxtRecord::Absent(_)
        ));
        assert!(matches!(t(&["v=STSv1;"]), TxtRecord::Absent(_)));
        assert!(matches!(
            t(&["v=STSv1; id=has-hyphen"]),
            TxtRecord::Absent(_)
        ));
        assert!(matches!(
            t(&[&format!("v=STSv1; id={}", "a".repeat(33))]),
            TxtRecord::Absent(_)
        ));
        assert!(matches!(t(&["v=STSv10; id=a"]), TxtRecord::Absent(_)));
    }

    #[test]
    fn mx_patterns() {
        assert!(mx_matches("mail.example.com", "MAIL.example.com."));
        assert!(mx_matches("*.example.net", "mx1.example.net"));
        assert!(!mx_matches("*.example.net", "a.mx1.example.net"));
        assert!(!mx_matches("*.example.net", "example.net"));
        assert!(!mx_matches(
            "mail.example.com",
            "mail.example.com.evil.test"
        ));
    }
}
