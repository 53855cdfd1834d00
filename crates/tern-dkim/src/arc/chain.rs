//! What the message already says about its ARC chain, sans-I/O: the sets it carries
//! (how many, whether the last one already says `cv=fail`, whether they can be numbered
//! at all), the Authentication-Results field Tern's inbound verifier put on top of it,
//! and from both the [`Plan`]: seal with a known `cv=` and AAR, validate the chain first,
//! or do not seal, and why.
//!
//! The Authentication-Results field is trusted only when it is the topmost field of the
//! message and names Tern's authserv-id: the SMTP session writes Tern's Received field
//! first, and the verifier puts its own field above it (removing any other that claims
//! the id), so a field above Tern's Received can only be Tern's. Its value still carries
//! what the sender chose (header.d, smtp.mailfrom), so it is read with quoted strings
//! and comments honoured: a `;` or `arc=pass` inside a quoted value is not a result.
//!
//! Bounds: the field is used only when it is at most [`MAX_RESULTS_LEN`] octets of
//! printable ASCII; otherwise the chain is validated and a minimal AAR written.

use mail_auth::AuthenticatedMessage;
use mail_auth::arc::ChainValidation;

/// Longest Authentication-Results value reused as an ARC-Authentication-Results.
pub const MAX_RESULTS_LEN: usize = 8 * 1024;
/// Longest word (between spaces) of a reused Authentication-Results value.
pub const MAX_WORD: usize = 900;
/// Most ARC sets a chain may have (RFC 8617 §4.2.1): a message at this count is not
/// sealed again.
pub const MAX_SETS: usize = 50;

/// The chain validation status (`cv=`) of the new set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cv {
    /// No earlier set: Tern's is the first (`i=1`).
    None,
    /// The earlier sets validated.
    Pass,
    /// The earlier sets did not validate: sealed once with `cv=fail`, and nobody seals
    /// after that.
    Fail,
}

impl Cv {
    /// The tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cv::None => "none",
            Cv::Pass => "pass",
            Cv::Fail => "fail",
        }
    }
}

/// Why a message that should be sealed is sent without a seal (a bounded set: the
/// `reason` of event 4114 and the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsealed {
    /// Larger than `arc.max_size`.
    TooLarge,
    /// The last set already says `cv=fail` (RFC 8617 §5.1: nothing after it is sealed).
    ChainFailed,
    /// The chain already has [`MAX_SETS`] sets.
    ChainTooLong,
    /// The ARC fields cannot be grouped into sets numbered 1..n (unparseable, missing or
    /// duplicated fields): no `i=` can be given to a new set. Receivers see it as
    /// failed anyway.
    ChainMalformed,
    /// The chain could not be validated in time (DNS temporary failure or
    /// `arc.timeout_secs`): sealing it `cv=fail` would condemn it for good.
    TempError,
    /// No usable key (it failed to load and none was loaded before).
    NoKey,
    /// The signer failed, or the content could not be read.
    Error,
}

impl Unsealed {
    /// Every reason, in metrics handle order.
    pub const ALL: [Unsealed; 7] = [
        Unsealed::TooLarge,
        Unsealed::ChainFailed,
        Unsealed::ChainTooLong,
        Unsealed::ChainMalformed,
        Unsealed::TempError,
        Unsealed::NoKey,
        Unsealed::Error,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Unsealed::TooLarge => "too_large",
            Unsealed::ChainFailed => "chain_failed",
            Unsealed::ChainTooLong => "chain_too_long",
            Unsealed::ChainMalformed => "chain_malformed",
            Unsealed::TempError => "temperror",
            Unsealed::NoKey => "no_key",
            Unsealed::Error => "error",
        }
    }
}

/// The ARC sets a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    /// Complete sets, numbered 1..=sets.
    pub sets: usize,
    /// The last set's ARC-Seal says `cv=fail`.
    pub last_failed: bool,
    /// The fields cannot be grouped into complete sets.
    pub malformed: bool,
}

/// Reads the sets of a parsed message (mail-auth groups and sorts them by `i=`).
pub fn existing(message: &AuthenticatedMessage<'_>) -> Existing {
    let (seals, sigs, results) = (
        message.as_headers.len(),
        message.ams_headers.len(),
        message.aar_headers.len(),
    );
    let numbered = message
        .as_headers
        .iter()
        .zip(&message.ams_headers)
        .zip(&message.aar_headers)
        .enumerate()
        .all(|(pos, ((s, m), r))| {
            let i = u32::try_from(pos.saturating_add(1)).unwrap_or(u32::MAX);
            s.header.i == i && m.header.i == i && r.header.i == i
        });
    let malformed = message.has_arc_errors || seals != sigs || sigs != results || !numbered;
    Existing {
        sets: seals,
        last_failed: message
            .as_headers
            .last()
            .is_some_and(|s| s.header.cv == ChainValidation::Fail),
        malformed,
    }
}

/// An `arc=` result as the verifier wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArcResult {
    /// `arc=pass`.
    Pass,
    /// `arc=fail`.
    Fail,
    /// `arc=none`.
    None,
    /// Any other value (temperror, permerror, neutral...).
    Other,
}

/// Tern's own Authentication-Results, from the top of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopResults {
    /// The value, unfolded, with every run of white space one space, trimmed: its
    /// relaxed canonical form (RFC 6376 §3.4.2), so it can be written folded anywhere.
    pub value: String,
    /// Its one `arc=` result; `None` when it has none, or more than one.
    pub arc: Option<ArcResult>,
}

/// The value of the topmost header field when it is an Authentication-Results naming
/// `authserv_id` (compared without case), printable ASCII and at most
/// [`MAX_RESULTS_LEN`] octets.
pub fn top_results(message: &AuthenticatedMessage<'_>, authserv_id: &str) -> Option<TopResults> {
    let (name, value) = message.headers.first()?;
    if !name.eq_ignore_ascii_case(b"Authentication-Results") {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?;
    if value.len() > MAX_RESULTS_LEN
        || !value
            .bytes()
            .all(|b| b == b'\t' || b == b'\r' || b == b'\n' || (32..127).contains(&b))
    {
        return None;
    }
    let value = relaxed(value);
    // Folded at spaces when written again: a word that would not fit a line of 998
    // octets cannot be.
    if value.split(' ').any(|w| w.len() > MAX_WORD) {
        return None;
    }
    let parts = split_outside_quotes(&value);
    let id = parts.first()?;
    // authserv-id [version]: the first word.
    let id = strip_comments(id);
    let first = id.split_whitespace().next()?;
    if !first.eq_ignore_ascii_case(authserv_id) {
        return None;
    }
    let mut arc = None;
    let mut count = 0usize;
    for part in parts.iter().skip(1) {
        let part = strip_comments(part);
        let Some(word) = part.split_whitespace().next() else {
            continue;
        };
        let Some((method, result)) = word.split_once('=') else {
            continue;
        };
        if method.trim().eq_ignore_ascii_case("arc") {
            count = count.saturating_add(1);
            let r = result.trim();
            arc = Some(if r.eq_ignore_ascii_case("pass") {
                ArcResult::Pass
            } else if r.eq_ignore_ascii_case("fail") {
                ArcResult::Fail
            } else if r.eq_ignore_ascii_case("none") {
                ArcResult::None
            } else {
                ArcResult::Other
            });
        }
    }
    Some(TopResults {
        value,
        arc: if count == 1 { arc } else { None },
    })
}

/// The relaxed canonical form of a field value: line breaks removed, every run of
/// spaces and tabs one space, no white space at either end.
pub fn relaxed(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut space = false;
    for c in value.chars() {
        match c {
            '\r' | '\n' => {}
            ' ' | '\t' => space = true,
            c => {
                if space && !out.is_empty() {
                    out.push(' ');
                }
                space = false;
                out.push(c);
            }
        }
    }
    out
}

/// Splits at `;` outside quoted strings and comments (RFC 8601 §2.2 grammar).
fn split_outside_quotes(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut depth) = (false, false, 0usize);
    for c in value.chars() {
        if escaped {
            escaped = false;
            cur.push(c);
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth = depth.saturating_add(1),
            ')' if !quoted => depth = depth.saturating_sub(1),
            ';' if !quoted && depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
}

/// The text without its comments (outside quoted strings).
fn strip_comments(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    let (mut quoted, mut escaped, mut depth) = (false, false, 0usize);
    for c in part.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
                continue;
            }
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => {
                depth = depth.saturating_add(1);
                continue;
            }
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                out.push(' ');
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// What to do with one message, before any DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Seal now: the chain status and the ARC-Authentication-Results payload (relaxed
    /// form, without `i=`).
    Seal {
        /// `cv=`.
        cv: Cv,
        /// The AAR payload.
        results: String,
        /// Where the payload came from.
        from: Results,
    },
    /// Validate the chain first (DNS), then seal with [`after_validation`].
    Validate {
        /// Tern's Authentication-Results to build on, when there is one.
        top: Option<TopResults>,
    },
    /// Do not seal.
    Skip(Unsealed),
}

/// Where an ARC-Authentication-Results payload came from (event 4113 `results`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Results {
    /// Tern's inbound verifier's Authentication-Results, as it was.
    Verifier,
    /// Tern's minimal one (a first set, verification off).
    Minimal,
    /// After Tern validated the chain at delivery.
    Validated,
}

impl Results {
    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Results::Verifier => "verifier",
            Results::Minimal => "minimal",
            Results::Validated => "validated",
        }
    }
}

/// The minimal AAR payload Tern writes when it validated the chain itself.
pub fn minimal_results(authserv_id: &str, cv: Cv, remote_ip: Option<std::net::IpAddr>) -> String {
    let result = match cv {
        Cv::None => "none",
        Cv::Pass => "pass",
        Cv::Fail => "fail",
    };
    match remote_ip {
        Some(ip) => format!("{authserv_id}; arc={result} smtp.remote-ip={ip}"),
        None => format!("{authserv_id}; arc={result}"),
    }
}

/// Decides from the sets and Tern's Authentication-Results (RFC 8617 §5.1).
pub fn plan(
    chain: Existing,
    top: Option<TopResults>,
    authserv_id: &str,
    remote_ip: Option<std::net::IpAddr>,
) -> Plan {
    if chain.malformed {
        return Plan::Skip(Unsealed::ChainMalformed);
    }
    if chain.last_failed {
        return Plan::Skip(Unsealed::ChainFailed);
    }
    if chain.sets >= MAX_SETS {
        return Plan::Skip(Unsealed::ChainTooLong);
    }
    if chain.sets == 0 {
        // The first set: nothing to validate. The verifier's results, when there, are
        // what this hop vouches for.
        let (results, from) = match top {
            Some(t) => (t.value, Results::Verifier),
            None => (
                minimal_results(authserv_id, Cv::None, remote_ip),
                Results::Minimal,
            ),
        };
        return Plan::Seal {
            cv: Cv::None,
            results,
            from,
        };
    }
    match top {
        Some(t) if t.arc == Some(ArcResult::Pass) => Plan::Seal {
            cv: Cv::Pass,
            results: t.value,
            from: Results::Verifier,
        },
        Some(t) if t.arc == Some(ArcResult::Fail) => Plan::Seal {
            cv: Cv::Fail,
            results: t.value,
            from: Results::Verifier,
        },
        // No verdict, an unusable one, or `none` although sets are there.
        top => Plan::Validate { top },
    }
}

/// The seal after Tern validated the chain itself (`pass` or `fail`; a temporary
/// failure is [`Unsealed::TempError`] and never reaches here). The AAR is Tern's
/// Authentication-Results with the `arc=` result added when it had none, else the
/// minimal one.
pub fn after_validation(
    cv: Cv,
    top: Option<TopResults>,
    authserv_id: &str,
    remote_ip: Option<std::net::IpAddr>,
) -> Plan {
    let results = match top {
        Some(t) if t.arc.is_none() && !has_arc_entry(&t.value) => {
            let mut v = t.value;
            v.push_str("; arc=");
            v.push_str(cv.as_str());
            v
        }
        _ => minimal_results(authserv_id, cv, remote_ip),
    };
    Plan::Seal {
        cv,
        results,
        from: Results::Validated,
    }
}

fn has_arc_entry(value: &str) -> bool {
    split_outside_quotes(value).iter().skip(1).any(|p| {
        strip_comments(p)
            .split_whitespace()
            .next()
            .and_then(|w| w.split_once('='))
            .is_some_and(|(m, _)| m.trim().eq_ignore_ascii_case("arc"))
    })
}

/// Folds a header field (`Name: value`, the value in relaxed form, no line end) at
/// spaces so lines stay near 78 octets; ends it with CRLF. The relaxed canonical form is
/// unchanged (a fold replaces one space with CRLF and a tab).
pub fn fold(field: &str) -> String {
    let mut out = String::with_capacity(field.len().saturating_add(16));
    let mut line = 0usize;
    for (n, word) in field.split(' ').enumerate() {
        if n > 0 {
            if line.saturating_add(1).saturating_add(word.len()) > 78 {
                out.push_str("\r\n\t");
                line = 1;
            } else {
                out.push(' ');
                line = line.saturating_add(1);
            }
        }
        out.push_str(word);
        line = line.saturating_add(word.len());
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(m: &str) -> AuthenticatedMessage<'_> {
        AuthenticatedMessage::parse(m.as_bytes()).unwrap()
    }

    #[test]
    fn the_top_results_are_ours_only_when_topmost_and_named() {
        let m = "Authentication-Results: mx.tern.test;\r\n\tspf=pass smtp.mailfrom=a@b.test;\r\n\tarc=pass (3 sets)\r\nReceived: x\r\nFrom: a@b.test\r\n\r\nbody\r\n";
        let t = top_results(&parse(m), "MX.tern.test").unwrap();
        assert_eq!(t.arc, Some(ArcResult::Pass));
        assert_eq!(
            t.value,
            "mx.tern.test; spf=pass smtp.mailfrom=a@b.test; arc=pass (3 sets)"
        );
        assert!(top_results(&parse(m), "other.test").is_none());
        // Below Tern's Received: the sender's, never trusted.
        let m2 = "Received: x\r\nAuthentication-Results: mx.tern.test; arc=pass\r\n\r\nb\r\n";
        assert!(top_results(&parse(m2), "mx.tern.test").is_none());
    }

    #[test]
    fn a_quoted_or_commented_arc_is_not_a_result() {
        let m = "Authentication-Results: mx.tern.test; spf=pass smtp.mailfrom=\"x;arc=pass\"@b.test (arc=pass; x); arc=fail\r\n\r\nb\r\n";
        let t = top_results(&parse(m), "mx.tern.test").unwrap();
        assert_eq!(t.arc, Some(ArcResult::Fail));
        // Two verdicts: neither is believed.
        let m = "Authentication-Results: mx.tern.test; arc=fail; arc=pass\r\n\r\nb\r\n";
        assert_eq!(top_results(&parse(m), "mx.tern.test").unwrap().arc, None);
        let long = format!(
            "Authentication-Results: mx.tern.test; arc=pass x={}\r\n\r\nb\r\n",
            "y".repeat(1000)
        );
        assert!(
            top_results(&parse(&long), "mx.tern.test").is_none(),
            "a word too long to fold"
        );
        let m = "Authentication-Results: mx.tern.test; arc=temperror\r\n\r\nb\r\n";
        assert_eq!(
            top_results(&parse(m), "mx.tern.test").unwrap().arc,
            Some(ArcResult::Other)
        );
    }

    fn chain(sets: usize) -> Existing {
        Existing {
            sets,
            last_failed: false,
            malformed: false,
        }
    }

    fn top(arc: Option<ArcResult>) -> Option<TopResults> {
        Some(TopResults {
            value: "mx.tern.test; dkim=pass header.d=b.test".into(),
            arc,
        })
    }

    #[test]
    fn the_plan_follows_rfc_8617() {
        let ip = Some("192.0.2.7".parse().unwrap());
        let id = "mx.tern.test";
        assert_eq!(
            plan(chain(0), None, id, ip),
            Plan::Seal {
                cv: Cv::None,
                results: "mx.tern.test; arc=none smtp.remote-ip=192.0.2.7".into(),
                from: Results::Minimal,
            }
        );
        assert_eq!(
            plan(chain(0), top(Some(ArcResult::None)), id, ip),
            Plan::Seal {
                cv: Cv::None,
                results: "mx.tern.test; dkim=pass header.d=b.test".into(),
                from: Results::Verifier,
            }
        );
        assert!(matches!(
            plan(chain(2), top(Some(ArcResult::Pass)), id, ip),
            Plan::Seal { cv: Cv::Pass, .. }
        ));
        assert!(matches!(
            plan(chain(2), top(Some(ArcResult::Fail)), id, ip),
            Plan::Seal { cv: Cv::Fail, .. }
        ));
        for t in [
            None,
            top(None),
            top(Some(ArcResult::None)),
            top(Some(ArcResult::Other)),
        ] {
            assert!(matches!(plan(chain(1), t, id, ip), Plan::Validate { .. }));
        }
        let failed = Existing {
            last_failed: true,
            ..chain(3)
        };
        assert_eq!(
            plan(failed, top(Some(ArcResult::Fail)), id, ip),
            Plan::Skip(Unsealed::ChainFailed)
        );
        assert_eq!(
            plan(chain(50), top(Some(ArcResult::Pass)), id, ip),
            Plan::Skip(Unsealed::ChainTooLong)
        );
        assert!(matches!(
            plan(chain(49), top(Some(ArcResult::Pass)), id, ip),
            Plan::Seal { .. }
        ));
        let broken = Existing {
            malformed: true,
            ..chain(1)
        };
        assert_eq!(
            plan(broken, None, id, ip),
            Plan::Skip(Unsealed::ChainMalformed)
        );
    }

    #[test]
    fn after_validation_adds_the_verdict_or_writes_a_minimal_aar() {
        let id = "mx.tern.test";
        assert_eq!(
            after_validation(Cv::Pass, top(None), id, None),
            Plan::Seal {
                cv: Cv::Pass,
                results: "mx.tern.test; dkim=pass header.d=b.test; arc=pass".into(),
                from: Results::Validated,
            }
        );
        assert_eq!(
            after_validation(Cv::Fail, top(Some(ArcResult::Other)), id, None),
            Plan::Seal {
                cv: Cv::Fail,
                results: "mx.tern.test; arc=fail".into(),
                from: Results::Validated,
            }
        );
    }

    #[test]
    fn sets_are_counted_and_checked() {
        let m = "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=a.test; s=s; t=1; b=AAAA\r\nARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=a.test; s=s; h=from; bh=AAAA; b=AAAA\r\nARC-Authentication-Results: i=1; a.test; none\r\nFrom: a@b.test\r\n\r\nb\r\n";
        let e = existing(&parse(m));
        assert_eq!((e.sets, e.last_failed, e.malformed), (1, false, false));
        // A set without its AAR cannot be numbered.
        let m2 = m.replace("ARC-Authentication-Results: i=1; a.test; none\r\n", "");
        assert!(existing(&parse(&m2)).malformed);
        let m3 = m.replace("cv=none", "cv=fail");
        assert!(existing(&parse(&m3)).last_failed);
        assert_eq!(existing(&parse("From: a@b\r\n\r\nb\r\n")).sets, 0);
    }

    #[test]
    fn folding_keeps_the_relaxed_form() {
        let long = format!(
            "ARC-Authentication-Results: i=2; {}",
            "word ".repeat(60).trim()
        );
        let folded = fold(&long);
        assert!(folded.lines().all(|l| l.len() <= 80), "{folded}");
        assert!(folded.ends_with("\r\n"));
        assert_eq!(relaxed(folded.trim_end()), long);
    }

    proptest::proptest! {
        #[test]
        fn any_top_field_is_read_without_panicking(v in "[ -~\t]{0,300}") {
            let m = format!("Authentication-Results: {v}\r\n\r\nb\r\n");
            if let Some(msg) = AuthenticatedMessage::parse(m.as_bytes()) {
                let _ = top_results(&msg, "x");
            }
            let _ = fold(&relaxed(&v));
        }
    }
}
