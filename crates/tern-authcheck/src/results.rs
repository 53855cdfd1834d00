//! The results of one message's checks and the Authentication-Results header field
//! (RFC 8601) that carries them; removal of earlier fields claiming Tern's authserv-id.
//!
//! Invariants: the rendered field is ASCII, folded at each result (CRLF TAB), ends with
//! CRLF, and every value from the message or the DNS is reduced to RFC 8601's token or
//! comment characters first, so nothing a sender writes can add a result or a header
//! field. Removal works on the header section only and keeps every other byte.

use std::fmt::Write as _;

/// A method's result as RFC 8601 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthResult {
    /// `none`
    None,
    /// `pass`
    Pass,
    /// `fail`
    Fail,
    /// `softfail` (SPF)
    SoftFail,
    /// `neutral`
    Neutral,
    /// `temperror`
    TempError,
    /// `permerror`
    PermError,
    /// `policy` (DKIM: verified, but refused by local policy, e.g. a key too short)
    Policy,
}

impl AuthResult {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::None => "none",
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
            AuthResult::Policy => "policy",
        }
    }
}

impl std::fmt::Display for AuthResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SPF check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    /// The result.
    pub result: AuthResult,
    /// The domain checked.
    pub domain: String,
    /// True when the HELO identity was checked (null MAIL FROM).
    pub helo: bool,
    /// Why, for the header's comment (e.g. the timeout).
    pub comment: Option<String>,
}

/// One DKIM signature's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimCheck {
    /// The result.
    pub result: AuthResult,
    /// `d=`
    pub domain: String,
    /// `s=`
    pub selector: String,
    /// The first 8 characters of `b=` (RFC 6008), to tell signatures apart.
    pub b: String,
    /// Why, for the header's comment.
    pub comment: Option<String>,
}

/// The ARC chain's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcCheck {
    /// `pass`, `fail` or `none`.
    pub result: AuthResult,
    /// Why, for the header's comment.
    pub comment: Option<String>,
}

/// The DMARC check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    /// The result.
    pub result: AuthResult,
    /// The From domain (`header.from`); empty when the message has none.
    pub from: String,
    /// The published policy that applied, when a record was found.
    pub published: Option<tern_reports::Policy>,
    /// The policy applied after `pct` sampling.
    pub applied: tern_reports::Policy,
    /// The domain whose record applied.
    pub policy_domain: String,
    /// Why, for the header's comment.
    pub comment: Option<String>,
}

/// Everything checked for one message. A method that was off has `None` (and no entry in
/// the header); DKIM with no signature has an empty list and a `dkim=none` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// SPF.
    pub spf: Option<SpfCheck>,
    /// DKIM, one per signature checked; `None` when DKIM was off.
    pub dkim: Option<Vec<DkimCheck>>,
    /// Why DKIM (and ARC) were not checked, e.g. the message was larger than `max_size`.
    pub dkim_skipped: Option<String>,
    /// ARC.
    pub arc: Option<ArcCheck>,
    /// DMARC.
    pub dmarc: Option<DmarcCheck>,
}

impl Verdicts {
    /// The DKIM result summarised for logs and metrics: `pass` when one passed, else the
    /// first signature's result, `none` without signatures.
    pub fn dkim_summary(&self) -> Option<AuthResult> {
        let list = self.dkim.as_ref()?;
        if list.iter().any(|d| d.result == AuthResult::Pass) {
            return Some(AuthResult::Pass);
        }
        Some(list.first().map_or(AuthResult::None, |d| d.result))
    }

    /// Renders the Authentication-Results field for `authserv_id` (CRLF-terminated).
    pub fn header(&self, authserv_id: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(list) = &self.dkim {
            if list.is_empty() {
                let why = self
                    .dkim_skipped
                    .as_deref()
                    .map_or(String::new(), |w| format!(" ({})", comment(w)));
                parts.push(format!("dkim=none{why}"));
            }
            for d in list {
                let mut s = format!("dkim={}", d.result);
                if let Some(c) = &d.comment {
                    let _ = write!(s, " ({})", comment(c));
                }
                let _ = write!(
                    s,
                    " header.d={} header.s={}",
                    token(&d.domain),
                    token(&d.selector)
                );
                if !d.b.is_empty() {
                    let _ = write!(s, " header.b={}", token(&d.b));
                }
                parts.push(s);
            }
        }
        if let Some(spf) = &self.spf {
            let mut s = format!("spf={}", spf.result);
            if let Some(c) = &spf.comment {
                let _ = write!(s, " ({})", comment(c));
            }
            let key = if spf.helo {
                "smtp.helo"
            } else {
                "smtp.mailfrom"
            };
            let _ = write!(s, " {key}={}", token(&spf.domain));
            parts.push(s);
        }
        if let Some(d) = &self.dmarc {
            let mut s = format!("dmarc={}", d.result);
            let mut notes = Vec::new();
            if let Some(p) = d.published {
                notes.push(format!(
                    "p={} dis={}",
                    crate::dmarc::policy_name(p).to_ascii_uppercase(),
                    crate::dmarc::policy_name(d.applied).to_ascii_uppercase()
                ));
            }
            if let Some(c) = &d.comment {
                notes.push(comment(c));
            }
            if !notes.is_empty() {
                let _ = write!(s, " ({})", notes.join("; "));
            }
            if !d.from.is_empty() {
                let _ = write!(s, " header.from={}", token(&d.from));
            }
            parts.push(s);
        }
        if let Some(a) = &self.arc {
            let mut s = format!("arc={}", a.result);
            let why = a.comment.as_deref().or(self.dkim_skipped.as_deref());
            if let Some(c) = why {
                let _ = write!(s, " ({})", comment(c));
            }
            parts.push(s);
        }
        let mut out = format!("Authentication-Results: {}", token(authserv_id));
        if parts.is_empty() {
            out.push_str("; none");
        }
        for p in parts {
            out.push_str(";\r\n\t");
            out.push_str(&p);
        }
        out.push_str("\r\n");
        out
    }
}

/// Keeps the characters a `value`/`pvalue` token may hold (RFC 2045 token, plus `@`).
fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() && !"()<>,;:\\\"[]?={}".contains(*c))
        .take(255)
        .collect();
    if t.is_empty() { "unknown".into() } else { t }
}

/// Keeps what a comment may hold: printable ASCII without parentheses or backslash.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .filter(|c| !"()\\".contains(*c))
        .take(200)
        .collect()
}

/// The authserv-id of an Authentication-Results field value: its first token, comments
/// and folding skipped.
pub fn authserv_id_of(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut out = String::new();
    let mut depth = 0u32;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            ';' => break,
            c if c.is_whitespace() => {
                if !out.is_empty() {
                    break;
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Removes from `message` (header section then body, CRLF line ends) every header field
/// named in `names` (case-insensitive) for which `drop(value)` says so. Returns the new
/// content and how many fields were removed. Only the header section is looked at.
pub fn remove_fields(
    message: &[u8],
    names: &[&str],
    drop: impl Fn(&str, &[u8]) -> bool,
) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(message.len());
    let mut removed = 0;
    let mut pos = 0;
    while pos < message.len() {
        let rest = message.get(pos..).unwrap_or_default();
        // The end of the header section: an empty line.
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            break;
        }
        // One field: its first line plus continuation lines.
        let mut end = pos;
        loop {
            let line_end = message
                .get(end..)
                .and_then(|r| r.iter().position(|&b| b == b'\n'))
                .map_or(message.len(), |i| end + i + 1);
            end = line_end;
            match message.get(end) {
                Some(b' ' | b'\t') => continue,
                _ => break,
            }
        }
        let field = message.get(pos..end).unwrap_or_default();
        let colon = field.iter().position(|&b| b == b':');
        let remove = colon.is_some_and(|c| {
            let name = String::from_utf8_lossy(field.get(..c).unwrap_or_default());
            let name = name.trim();
            names
                .iter()
                .find(|n| n.eq_ignore_ascii_case(name))
                .is_some_and(|n| drop(n, field.get(c + 1..).unwrap_or_default()))
        });
        if remove {
            removed += 1;
        } else {
            out.extend_from_slice(field);
        }
        pos = end;
    }
    out.extend_from_slice(message.get(pos..).unwrap_or_default());
    (out, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_reports::Policy;

    fn full() -> Verdicts {
        Verdicts {
            spf: Some(SpfCheck {
                result: AuthResult::Pass,
                domain: "example.com".into(),
                helo: false,
                comment: None,
            }),
            dkim: Some(vec![DkimCheck {
                result: AuthResult::Fail,
                domain: "example.com".into(),
                selector: "s1".into(),
                b: "abcd1234".into(),
                comment: Some("signature (did not verify)\r\nX-Evil: 1".into()),
            }]),
            dkim_skipped: None,
            arc: Some(ArcCheck {
                result: AuthResult::None,
                comment: None,
            }),
            dmarc: Some(DmarcCheck {
                result: AuthResult::Pass,
                from: "example.com".into(),
                published: Some(Policy::Reject),
                applied: Policy::None,
                policy_domain: "example.com".into(),
                comment: None,
            }),
        }
    }

    #[test]
    fn header_carries_every_method_and_no_injected_line() {
        let h = full().header("mx.example.net");
        assert_eq!(
            h,
            "Authentication-Results: mx.example.net;\r\n\tdkim=fail (signature did not verify  X-Evil: 1) header.d=example.com header.s=s1 header.b=abcd1234;\r\n\tspf=pass smtp.mailfrom=example.com;\r\n\tdmarc=pass (p=REJECT dis=NONE) header.from=example.com;\r\n\tarc=none\r\n"
        );
        assert_eq!(h.matches("\r\n").count(), 5);
        let none = Verdicts::default().header("mx");
        assert_eq!(none, "Authentication-Results: mx; none\r\n");
    }

    #[test]
    fn skipped_dkim_says_why() {
        let v = Verdicts {
            dkim: Some(vec![]),
            dkim_skipped: Some("message larger than max_size".into()),
            arc: Some(ArcCheck {
                result: AuthResult::None,
                comment: None,
            }),
            ..Verdicts::default()
        };
        let h = v.header("mx");
        assert!(
            h.contains("dkim=none (message larger than max_size)"),
            "{h}"
        );
        assert!(h.contains("arc=none (message larger than max_size)"), "{h}");
    }

    #[test]
    fn authserv_id_skips_comments() {
        assert_eq!(
            authserv_id_of(b" (c) mx.example.net; spf=pass"),
            "mx.example.net"
        );
        assert_eq!(authserv_id_of(b"mx.example.net 1; none"), "mx.example.net");
        assert_eq!(authserv_id_of(b"\r\n\tMX.example.net;"), "MX.example.net");
    }

    #[test]
    fn only_fields_claiming_our_id_are_removed() {
        let msg = b"Authentication-Results: mx.example.net;\r\n\tdkim=pass\r\nSubject: hi\r\nauthentication-results: other.org; spf=pass\r\nAUTHENTICATION-RESULTS: (x) MX.Example.Net; dmarc=pass\r\n\r\nAuthentication-Results: mx.example.net; body\r\n";
        let (out, n) = remove_fields(msg, &["Authentication-Results"], |_, v| {
            authserv_id_of(v).eq_ignore_ascii_case("mx.example.net")
        });
        assert_eq!(n, 2);
        assert_eq!(
            out,
            b"Subject: hi\r\nauthentication-results: other.org; spf=pass\r\n\r\nAuthentication-Results: mx.example.net; body\r\n"
        );
    }
}
