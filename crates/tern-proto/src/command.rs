//! Typed SMTP commands.
//!
//! [`parse`] takes one command line (without its line ending, at most the framer's limit)
//! and returns a [`Command`] or a [`CommandError`] that knows its reply. The grammar of
//! RFC 5321 and of the ESMTP parameters is `smtp-proto`'s; Tern adds:
//!
//! - parameters of extensions Tern does not advertise (REQUIRETLS, MT-PRIORITY, FUTURERELEASE,
//!   DELIVERBY, MTRK, RRVS, CONNEG, AUTH=, …) are refused with `555 5.5.4`, as RFC 5321
//!   §4.1.1.11 asks for parameters that were not advertised;
//! - `BODY=BINARYMIME` is refused too (Tern advertises 8BITMIME and CHUNKING, not
//!   BINARYMIME);
//! - `RCPT TO:<postmaster>` (no domain) comes back as the address `postmaster`, which the
//!   session must accept (RFC 5321 §4.5.1).
//!
//! Trust: the line is untrusted; parsing never panics (property test below, fuzz target
//! `commands`).

use smtp_proto::{
    MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_RET_FULL, MAIL_RET_HDRS,
    MAIL_SMTPUTF8, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    Request,
};

use crate::reply::Reply;

/// `BODY=` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    /// Absent or `7BIT`.
    #[default]
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
}

/// `RET=` parameter (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// `RET=FULL`.
    Full,
    /// `RET=HDRS`.
    Hdrs,
}

/// `NOTIFY=` parameter (RFC 3461), as flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotifyFlags {
    /// SUCCESS.
    pub success: bool,
    /// FAILURE.
    pub failure: bool,
    /// DELAY.
    pub delay: bool,
    /// NEVER.
    pub never: bool,
}

/// `MAIL FROM:` with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailCommand {
    /// Reverse path as parsed (quotes removed, source route dropped); empty for `<>`.
    pub address: String,
    /// `SIZE=`, if given.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Body,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=`, xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954 §5), xtext-decoded; `<>` for the empty identity.
    pub auth: Option<String>,
}

/// `RCPT TO:` with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptCommand {
    /// Forward path as parsed; `postmaster` for `<postmaster>`.
    pub address: String,
    /// `NOTIFY=`, if given.
    pub notify: Option<NotifyFlags>,
    /// `ORCPT=`, xtext-decoded (`addr-type;address`).
    pub orcpt: Option<String>,
}

/// One SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `EHLO domain`.
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `MAIL FROM:`.
    Mail(MailCommand),
    /// `RCPT TO:`.
    Rcpt(RcptCommand),
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets of the chunk that follows the command line.
        size: u64,
        /// `LAST` was given.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP`.
    Help,
    /// `VRFY`.
    Vrfy,
    /// `EXPN`.
    Expn,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The mechanism's name, upper-cased.
        mechanism: String,
        /// The initial response as sent (base64, or `=` for an empty response).
        initial: Option<String>,
    },
    /// A command Tern knows but does not offer (ETRN, LHLO, BURL, ATRN).
    NotOffered(&'static str),
}

/// Why a command line was refused. Each variant maps to exactly one reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Not an SMTP command. Reply `500 5.5.1`.
    #[error("command not recognized")]
    Unknown,
    /// Known command, wrong syntax. Reply `501 5.5.4` with the expected syntax.
    #[error("syntax: {0}")]
    Syntax(&'static str),
    /// Bad reverse path. Reply `501 5.1.7`.
    #[error("bad sender address syntax")]
    BadSender,
    /// Bad forward path. Reply `501 5.1.3`.
    #[error("bad recipient address syntax")]
    BadRecipient,
    /// A known parameter with a bad value. Reply `501 5.5.4`.
    #[error("invalid value for parameter {0}")]
    BadParameter(String),
    /// A parameter Tern does not support or did not advertise. Reply `555 5.5.4`.
    #[error("parameter {0} not supported")]
    UnsupportedParameter(String),
}

impl CommandError {
    /// The reply for this error.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unknown => Reply::new(500, "5.5.1", "Command not recognized"),
            CommandError::Syntax(s) => Reply::new(501, "5.5.4", format!("Syntax: {s}")),
            CommandError::BadSender => Reply::new(501, "5.1.7", "Bad sender address syntax"),
            CommandError::BadRecipient => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
            CommandError::BadParameter(p) => {
                Reply::new(501, "5.5.4", format!("Invalid value for parameter {p}"))
            }
            CommandError::UnsupportedParameter(p) => {
                Reply::new(555, "5.5.4", format!("Parameter {p} not supported"))
            }
        }
    }
}

const AUTH_SYNTAX: &str = "AUTH mechanism [initial-response]";

/// Parses one command line (without CRLF).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    if line.len() >= 4
        && line
            .get(..4)
            .is_some_and(|h| h.eq_ignore_ascii_case(b"AUTH"))
        && line.get(4).is_none_or(|&b| b == b' ')
    {
        return auth(line.get(4..).unwrap_or_default());
    }
    let mut owned = Vec::with_capacity(line.len() + 2);
    // `SIZE=` is judged here (see `size_parameter`); smtp-proto is shown `SIZE=0` in its
    // place so its own, inconsistent, handling of long values never applies.
    let size = match size_parameter(line)? {
        Some((value, at)) => {
            owned.extend_from_slice(line.get(..at.start).unwrap_or_default());
            owned.push(b'0');
            owned.extend_from_slice(line.get(at.end..).unwrap_or_default());
            Some(value)
        }
        None => {
            owned.extend_from_slice(line);
            None
        }
    };
    owned.extend_from_slice(b"\r\n");
    let req = Request::parse(&mut owned.iter()).map_err(map_error)?;
    Ok(match req {
        Request::Ehlo { host } => Command::Ehlo(host.into_owned()),
        Request::Helo { host } => Command::Helo(host.into_owned()),
        Request::Lhlo { .. } => Command::NotOffered("LHLO"),
        Request::Mail { from } => {
            // smtp-proto returns "" for both `<>` and `<postmaster>`; only `<>` is the
            // null reverse path, and a reverse path needs a domain.
            if from.address.is_empty() && !empty_path(line) {
                return Err(CommandError::BadSender);
            }
            Command::Mail(mail(from, size)?)
        }
        Request::Rcpt { to } => {
            // ... and for RCPT only `<postmaster>` is valid; `<>` is not a forward path.
            if to.address.is_empty() && empty_path(line) {
                return Err(CommandError::BadRecipient);
            }
            Command::Rcpt(rcpt(to)?)
        }
        Request::Bdat {
            chunk_size,
            is_last,
        } => Command::Bdat {
            size: u64::try_from(chunk_size).map_err(|_| CommandError::Syntax(BDAT_SYNTAX))?,
            last: is_last,
        },
        Request::Auth { .. } => return Err(CommandError::Syntax(AUTH_SYNTAX)),
        Request::Noop { .. } => Command::Noop,
        Request::Vrfy { .. } => Command::Vrfy,
        Request::Expn { .. } => Command::Expn,
        Request::Help { .. } => Command::Help,
        Request::Etrn { .. } => Command::NotOffered("ETRN"),
        Request::Atrn { .. } => Command::NotOffered("ATRN"),
        Request::Burl { .. } => Command::NotOffered("BURL"),
        Request::StartTls => Command::StartTls,
        Request::Data => Command::Data,
        Request::Rset => Command::Rset,
        Request::Quit => Command::Quit,
    })
}

const BDAT_SYNTAX: &str = "BDAT chunk-size [LAST]";

/// `AUTH` after its keyword: ` mechanism [initial-response]`.
fn auth(rest: &[u8]) -> Result<Command, CommandError> {
    let bad = || CommandError::Syntax(AUTH_SYNTAX);
    let rest = rest.strip_prefix(b" ").ok_or_else(bad)?;
    let mut words = rest.split(|&b| b == b' ');
    let mechanism = words.next().unwrap_or_default();
    let initial = words.next();
    if words.next().is_some()
        || mechanism.is_empty()
        || mechanism.len() > 20
        || !mechanism
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return Err(bad());
    }
    let initial = match initial {
        None => None,
        Some(b"=") => Some("=".to_string()),
        Some(r)
            if !r.is_empty()
                && r.iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')) =>
        {
            Some(String::from_utf8_lossy(r).into_owned())
        }
        Some(_) => return Err(bad()),
    };
    Ok(Command::Auth {
        mechanism: String::from_utf8_lossy(mechanism).to_ascii_uppercase(),
        initial,
    })
}

/// Most digits of a `SIZE=` value (RFC 1870: `size-value ::= 1*20DIGIT`).
const MAX_SIZE_DIGITS: usize = 20;

/// Finds and judges the `SIZE=` parameter of a `MAIL` line. Returns its value and where
/// the value's digits are in `line`, or `None` when the line is not a MAIL command with
/// parameters or has no SIZE.
///
/// The rule (RFC 1870 §3 and §6):
/// - one to twenty digits is a size. A value that does not fit in 64 bits is returned as
///   `u64::MAX`: it is "too big" like any value over the limit (the session answers
///   `552 5.3.4`), never a syntax error and never wrapped round to a small number;
/// - no digits, anything but digits, more than twenty digits, or SIZE given twice is a
///   syntax error: [`CommandError::BadParameter`] (`501 5.5.4`).
fn size_parameter(line: &[u8]) -> Result<Option<(u64, std::ops::Range<usize>)>, CommandError> {
    let Some(params_at) = mail_parameters_start(line) else {
        return Ok(None);
    };
    let mut found = None;
    let mut pos = params_at;
    let params = line.get(params_at..).unwrap_or_default();
    for token in params.split(|&b| b == b' ') {
        let start = pos;
        pos += token.len() + 1;
        let (keyword, value) = match token.iter().position(|&b| b == b'=') {
            Some(eq) => (
                token.get(..eq).unwrap_or_default(),
                Some((start + eq + 1, token.get(eq + 1..).unwrap_or_default())),
            ),
            None => (token, None),
        };
        if !keyword.eq_ignore_ascii_case(b"SIZE") {
            continue;
        }
        let bad = || CommandError::BadParameter("SIZE".into());
        let (value_at, digits) = value.ok_or_else(bad)?;
        if found.is_some()
            || digits.is_empty()
            || digits.len() > MAX_SIZE_DIGITS
            || !digits.iter().all(u8::is_ascii_digit)
        {
            return Err(bad());
        }
        // Twenty digits fit in a u128; the value saturates to u64::MAX.
        let value = digits
            .iter()
            .fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
        let value = u64::try_from(value).unwrap_or(u64::MAX);
        found = Some((value, value_at..value_at + digits.len()));
    }
    Ok(found)
}

/// Where the parameters of a `MAIL FROM:<path>` line start (just after the path's `>`),
/// or `None` when the line is not that shape (smtp-proto then judges it). A `>` inside a
/// quoted local part does not end the path.
fn mail_parameters_start(line: &[u8]) -> Option<usize> {
    let head = line.get(..5)?;
    if !head.eq_ignore_ascii_case(b"MAIL ") {
        return None;
    }
    let colon = line.iter().position(|&b| b == b':')?;
    let mut i = colon + 1;
    while line.get(i) == Some(&b' ') {
        i += 1;
    }
    if line.get(i) != Some(&b'<') {
        return None;
    }
    let mut quoted = false;
    let mut escaped = false;
    for (j, &b) in line.iter().enumerate().skip(i + 1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(j + 1),
            _ => {}
        }
    }
    None
}

/// True when the path after `FROM:`/`TO:` is literally `<>` (spaces allowed before it).
fn empty_path(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let rest = line.get(colon + 1..).unwrap_or_default();
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    rest.get(start..).is_some_and(|r| r.starts_with(b"<>"))
}

fn map_error(e: smtp_proto::Error) -> CommandError {
    match e {
        smtp_proto::Error::UnknownCommand => CommandError::Unknown,
        smtp_proto::Error::InvalidSenderAddress => CommandError::BadSender,
        smtp_proto::Error::InvalidRecipientAddress => CommandError::BadRecipient,
        smtp_proto::Error::SyntaxError { syntax } => CommandError::Syntax(syntax),
        smtp_proto::Error::InvalidParameter { param } => {
            CommandError::BadParameter(param.to_string())
        }
        smtp_proto::Error::UnsupportedParameter { param } => {
            CommandError::UnsupportedParameter(param)
        }
        // NeedsMoreData cannot happen for a line ending in CRLF; the response variants
        // belong to the client side. Treat all as syntax errors rather than panic.
        _ => CommandError::Syntax("command line"),
    }
}

fn mail(
    from: smtp_proto::MailFrom<std::borrow::Cow<'_, str>>,
    size: Option<u64>,
) -> Result<MailCommand, CommandError> {
    let known = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_RET_FULL | MAIL_RET_HDRS | MAIL_SMTPUTF8;
    if from.flags & MAIL_BODY_BINARYMIME != 0 {
        return Err(CommandError::UnsupportedParameter("BODY=BINARYMIME".into()));
    }
    let unsupported = [
        (from.flags & smtp_proto::MAIL_REQUIRETLS != 0, "REQUIRETLS"),
        (from.flags & smtp_proto::MAIL_CONPERM != 0, "CONPERM"),
        (from.flags & !known != 0, "BY"),
        (from.trans_id.is_some(), "TRANSID"),
        (from.by != 0, "BY"),
        (from.solicit.is_some(), "SOLICIT"),
        (from.mtrk.is_some(), "MTRK"),
        (from.hold_for != 0, "HOLDFOR"),
        (from.hold_until != 0, "HOLDUNTIL"),
        (from.mt_priority != 0, "MT-PRIORITY"),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(bad, _)| *bad) {
        return Err(CommandError::UnsupportedParameter((*name).into()));
    }
    if from.flags & MAIL_RET_FULL != 0 && from.flags & MAIL_RET_HDRS != 0 {
        return Err(CommandError::BadParameter("RET".into()));
    }
    let envid = from.env_id.map(|e| e.into_owned());
    if let Some(e) = &envid {
        // RFC 3461 §4.4: at most 100 characters, printable ASCII.
        if e.len() > 100 || !e.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(CommandError::BadParameter("ENVID".into()));
        }
    }
    Ok(MailCommand {
        address: from.address.into_owned(),
        size,
        body: if from.flags & MAIL_BODY_8BITMIME != 0 {
            Body::EightBitMime
        } else {
            Body::SevenBit
        },
        smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
        ret: if from.flags & MAIL_RET_FULL != 0 {
            Some(Ret::Full)
        } else if from.flags & MAIL_RET_HDRS != 0 {
            Some(Ret::Hdrs)
        } else {
            None
        },
        envid,
        auth: from.auth.map(|a| a.into_owned()),
    })
}

fn rcpt(to: smtp_proto::RcptTo<std::borrow::Cow<'_, str>>) -> Result<RcptCommand, CommandError> {
    let notify_bits =
        RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER;
    if to.flags & smtp_proto::RCPT_CONNEG != 0 {
        return Err(CommandError::UnsupportedParameter("CONNEG".into()));
    }
    if to.flags & !notify_bits != 0 || to.rrvs != 0 {
        return Err(CommandError::UnsupportedParameter("RRVS".into()));
    }
    let notify = (to.flags & notify_bits != 0).then_some(NotifyFlags {
        success: to.flags & RCPT_NOTIFY_SUCCESS != 0,
        failure: to.flags & RCPT_NOTIFY_FAILURE != 0,
        delay: to.flags & RCPT_NOTIFY_DELAY != 0,
        never: to.flags & RCPT_NOTIFY_NEVER != 0,
    });
    if let Some(n) = notify {
        // RFC 3461 §4.1: NEVER must stand alone.
        if n.never && (n.success || n.failure || n.delay) {
            return Err(CommandError::BadParameter("NOTIFY".into()));
        }
    }
    // smtp-proto accepts only the rfc822 address type and returns the decoded address
    // without it; Tern stores the full `addr-type;address` form of RFC 3461 §4.2.
    let orcpt = match to.orcpt {
        Some(o) if o.is_empty() || o.len() > 500 || o.chars().any(|c| c.is_control()) => {
            return Err(CommandError::BadParameter("ORCPT".into()));
        }
        Some(o) => Some(format!("rfc822;{o}")),
        None => None,
    };
    let address = to.address.into_owned();
    Ok(RcptCommand {
        address: if address.is_empty() {
            "postmaster".into()
        } else {
            address
        },
        notify,
        orcpt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<Command, CommandError> {
        parse(s.as_bytes())
    }

    #[test]
    fn mail_with_all_supported_parameters() {
        let Ok(Command::Mail(m)) =
            p("MAIL FROM:<a@b.org> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1 SMTPUTF8")
        else {
            panic!("not parsed")
        };
        assert_eq!(m.address, "a@b.org");
        assert_eq!(m.size, Some(1000));
        assert_eq!(m.body, Body::EightBitMime);
        assert!(m.smtputf8);
        assert_eq!(m.ret, Some(Ret::Hdrs));
        assert_eq!(m.envid.as_deref(), Some("QQ+1"));
    }

    fn size_of(line: &str) -> Result<Option<u64>, u16> {
        match p(line) {
            Ok(Command::Mail(m)) => Ok(m.size),
            Ok(other) => panic!("{line}: {other:?}"),
            Err(e) => Err(e.reply().code),
        }
    }

    #[test]
    fn size_boundaries_are_coherent() {
        // One to twenty digits: a size, saturating at u64::MAX (then "too big" at the
        // session, never a syntax error and never wrapped round).
        assert_eq!(size_of("MAIL FROM:<a@b.org> SIZE=0"), Ok(Some(0)));
        assert_eq!(size_of("MAIL FROM:<a@b.org> SIZE=1000"), Ok(Some(1000)));
        assert_eq!(
            size_of("MAIL FROM:<a@b.org> size=7 BODY=8BITMIME"),
            Ok(Some(7))
        );
        assert_eq!(
            size_of("MAIL FROM:<a@b.org> SIZE=00000000000000001000"),
            Ok(Some(1000))
        );
        assert_eq!(
            size_of("MAIL FROM:<a@b.org> SIZE=18446744073709551615"),
            Ok(Some(u64::MAX))
        );
        assert_eq!(
            size_of("MAIL FROM:<a@b.org> SIZE=18446744073709551616"),
            Ok(Some(u64::MAX))
        );
        assert_eq!(
            size_of("MAIL FROM:<a@b.org> SIZE=99999999999999999999"),
            Ok(Some(u64::MAX))
        );
        // More than twenty digits, no digits, or not digits: 501.
        for bad in [
            "MAIL FROM:<a@b.org> SIZE=999999999999999999999",
            "MAIL FROM:<a@b.org> SIZE=99999999999999999999999",
            "MAIL FROM:<a@b.org> SIZE=000000000000000000001",
            "MAIL FROM:<a@b.org> SIZE=",
            "MAIL FROM:<a@b.org> SIZE",
            "MAIL FROM:<a@b.org> SIZE=12a",
            "MAIL FROM:<a@b.org> SIZE=-1",
            "MAIL FROM:<a@b.org> SIZE=+1",
            "MAIL FROM:<a@b.org> SIZE=1 SIZE=2",
        ] {
            assert_eq!(size_of(bad), Err(501), "{bad}");
        }
        assert_eq!(size_of("MAIL FROM:<a@b.org>"), Ok(None));
    }

    #[test]
    fn size_inside_a_quoted_local_part_is_not_a_parameter() {
        assert_eq!(
            mail_parameters_start(br#"MAIL FROM:<"x> SIZE=1"@b.org> SIZE=5"#),
            Some(29)
        );
        let Ok(Command::Mail(m)) = p(r#"MAIL FROM:<"x SIZE=abc"@b.org> SIZE=5"#) else {
            panic!("not parsed")
        };
        assert_eq!(m.size, Some(5));
    }

    #[test]
    fn null_sender() {
        let Ok(Command::Mail(m)) = p("MAIL FROM:<>") else {
            panic!()
        };
        assert_eq!(m.address, "");
    }

    #[test]
    fn rcpt_with_dsn() {
        let Ok(Command::Rcpt(r)) =
            p("RCPT TO:<x@y.org> NOTIFY=FAILURE,DELAY ORCPT=rfc822;x+40y.org")
        else {
            panic!()
        };
        assert_eq!(r.address, "x@y.org");
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;x@y.org"));
        let n = r.notify.unwrap();
        assert!(n.failure && n.delay && !n.success && !n.never);
    }

    #[test]
    fn notify_never_must_stand_alone() {
        assert_eq!(
            p("RCPT TO:<x@y.org> NOTIFY=NEVER,SUCCESS"),
            Err(CommandError::BadParameter("NOTIFY".into()))
        );
    }

    #[test]
    fn unadvertised_parameters_are_refused() {
        for line in [
            "MAIL FROM:<a@b.org> REQUIRETLS",
            "MAIL FROM:<a@b.org> BODY=BINARYMIME",
            "MAIL FROM:<a@b.org> MT-PRIORITY=3",
            "MAIL FROM:<a@b.org> HOLDFOR=10",
            "MAIL FROM:<a@b.org> XFOO=1",
        ] {
            let e = p(line).unwrap_err();
            assert_eq!(e.reply().code / 10, 55, "{line}: {e:?}");
        }
    }

    #[test]
    fn null_path_and_postmaster_are_told_apart() {
        assert!(matches!(p("MAIL FROM:<>"), Ok(Command::Mail(_))));
        assert_eq!(p("MAIL FROM:<postmaster>"), Err(CommandError::BadSender));
        assert_eq!(p("RCPT TO:<>"), Err(CommandError::BadRecipient));
        assert_eq!(p("RCPT TO: <>"), Err(CommandError::BadRecipient));
    }

    #[test]
    fn refused_parameters_are_named() {
        assert_eq!(
            p("MAIL FROM:<a@b.org> REQUIRETLS"),
            Err(CommandError::UnsupportedParameter("REQUIRETLS".into()))
        );
    }

    #[test]
    fn postmaster_without_domain() {
        let Ok(Command::Rcpt(r)) = p("RCPT TO:<Postmaster>") else {
            panic!()
        };
        assert_eq!(r.address, "postmaster");
    }

    #[test]
    fn source_routes_are_dropped() {
        let Ok(Command::Rcpt(r)) = p("RCPT TO:<@relay.example,@other.example:user@dest.example>")
        else {
            panic!()
        };
        assert_eq!(r.address, "user@dest.example");
    }

    #[test]
    fn errors_map_to_replies() {
        assert_eq!(p("FOO").unwrap_err().reply().code, 500);
        assert_eq!(p("MAIL FROM:a@b").unwrap_err().reply().code, 501);
        assert_eq!(p("RCPT TO:<a@b@c>").unwrap_err().reply().code, 501);
        assert_eq!(p("HELO").unwrap_err().reply().code, 501);
        assert_eq!(
            p("BDAT 10 LAST"),
            Ok(Command::Bdat {
                size: 10,
                last: true
            })
        );
        assert_eq!(
            p("auth plain"),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: None
            })
        );
    }

    #[test]
    fn auth_commands() {
        assert_eq!(
            p("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGFsaWNlAHNlY3JldA==".into())
            })
        );
        assert_eq!(
            p("AUTH SCRAM-SHA-256 ="),
            Ok(Command::Auth {
                mechanism: "SCRAM-SHA-256".into(),
                initial: Some("=".into())
            })
        );
        for bad in [
            "AUTH",
            "AUTH ",
            "AUTH PLAIN a b",
            "AUTH PL@IN",
            "AUTH PLAIN a*b",
            "AUTHX PLAIN",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let Ok(Command::Mail(m)) = p("MAIL FROM:<a@b.org> AUTH=<>") else {
            panic!("AUTH= refused by the parser")
        };
        assert_eq!(m.auth.as_deref(), Some("<>"));
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&line);
        }

        #[test]
        fn never_panics_on_command_like_lines(cmd in "(MAIL FROM:|RCPT TO:|EHLO |BDAT |VRFY )", rest in ".{0,200}") {
            let _ = parse(format!("{cmd}{rest}").as_bytes());
        }
    }
}
