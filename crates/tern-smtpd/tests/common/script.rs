//! Parsing of transcript files (the format is described in `tests/transcripts.rs`).
//!
//! Parsing is strict: an unknown header key, a malformed escape or a line that is neither
//! comment, header, directive, client nor server line is an error naming the file and
//! line, so a typo can never silently turn a check off.

use ipnet::IpNet;
use tern_smtpd::config::BareLf;

use super::Options;

/// One piece of an expected line or body prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// These exact bytes.
    Literal(Vec<u8>),
    /// `{ID}`: a queue id (15 characters of upper-case Crockford base32), captured.
    Id,
    /// `{QID}`: the queue id of the stored message being checked.
    Qid,
    /// `{ANY}`: any run of bytes without CR or LF (possibly empty).
    Any,
    /// `{END}`: the end of the stored content (nothing may follow).
    End,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Client bytes, sent in one write.
    Send(Vec<u8>),
    /// One reply line the server must send next (without its CRLF).
    Expect(Vec<Piece>),
    /// Upgrade the current connection to TLS (client side).
    TlsHandshake,
    /// Open a new connection with this name, from this local address if given, and make
    /// it current.
    Connect(String, Option<std::net::IpAddr>),
    /// Make an already open connection current.
    Switch(String),
    /// The current connection must be closed by the server now.
    Closed,
    /// The server must send one TLS alert record, and nothing else, then close.
    TlsAlertThenClosed,
    /// Start shutting the server down (in the background).
    ShutdownServer,
    /// The server must send nothing (and not close) on the current connection for this
    /// long.
    Quiet(std::time::Duration),
    /// The next client bytes are to be trickled with this interval (replaced by
    /// `Trickle` once they are known).
    TrickleNext(std::time::Duration),
    /// Client bytes sent one at a time: after each, wait up to the interval for the
    /// server; stop at the first byte from the server (or its close).
    Trickle(Vec<u8>, std::time::Duration),
}

/// One step with the line it came from.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based line number of the step's first line.
    pub line: usize,
    /// What to do.
    pub action: Action,
}

/// A check on every queued message after the conversation.
#[derive(Debug, Clone)]
pub enum Check {
    /// The stored content contains these bytes.
    BodyContains(Vec<u8>),
    /// The stored content does not contain these bytes.
    BodyLacks(Vec<u8>),
    /// The stored content starts with text matching this pattern.
    BodyStartsWith(Vec<Piece>),
    /// The stored content ends with these bytes.
    BodyEndsWith(Vec<u8>),
    /// An envelope field (see `runner::envelope_field`) has exactly this value.
    Envelope(String, String),
}

/// A parsed transcript.
#[derive(Debug, Clone)]
pub struct Script {
    /// Server options from the header.
    pub options: Options,
    /// The conversation.
    pub steps: Vec<Step>,
    /// `# expect: closed` and its line.
    pub expect_closed: Option<usize>,
    /// `# queued: N` and its line.
    pub queued: Option<(usize, usize)>,
    /// `# spool_tmp_files: N` and its line.
    pub tmp_files: Option<(usize, usize)>,
    /// Content and envelope checks with their lines.
    pub checks: Vec<(usize, Check)>,
}

/// Parses `text`; errors name `file` and the line.
pub fn parse(file: &str, text: &str) -> Result<Script, String> {
    let mut s = Script {
        options: Options::default(),
        steps: Vec::new(),
        expect_closed: None,
        queued: None,
        tmp_files: None,
        checks: Vec::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |msg: String| format!("{file}:{line}: {msg}");
        if raw.trim().is_empty() || raw.starts_with("##") {
            continue;
        }
        if let Some(rest) = raw.strip_prefix("C:") {
            let mut bytes = rest.strip_prefix(' ').unwrap_or(rest).as_bytes().to_vec();
            bytes.extend_from_slice(b"\r\n");
            push_send(&mut s.steps, line, bytes);
        } else if let Some(rest) = raw.strip_prefix("C!") {
            let bytes = unescape(rest.strip_prefix(' ').unwrap_or(rest)).map_err(err)?;
            push_send(&mut s.steps, line, bytes);
        } else if let Some(rest) = raw.strip_prefix("S:") {
            let pattern = pattern(rest.strip_prefix(' ').unwrap_or(rest), false).map_err(err)?;
            s.steps.push(Step {
                line,
                action: Action::Expect(pattern),
            });
        } else if let Some(rest) = raw.strip_prefix("# ") {
            hash_line(&mut s, line, rest.trim_end()).map_err(err)?;
        } else {
            return Err(err(format!("not a transcript line: {raw:?}")));
        }
    }
    Ok(s)
}

/// Consecutive client lines become one write (pipelining), or one trickle after
/// `# trickle:`.
fn push_send(steps: &mut Vec<Step>, line: usize, bytes: Vec<u8>) {
    if let Some(Step {
        action: Action::Send(prev) | Action::Trickle(prev, _),
        ..
    }) = steps.last_mut()
    {
        prev.extend_from_slice(&bytes);
    } else if let Some(
        step @ Step {
            action: Action::TrickleNext(_),
            ..
        },
    ) = steps.last_mut()
    {
        if let Action::TrickleNext(every) = step.action {
            step.action = Action::Trickle(bytes, every);
        }
    } else {
        steps.push(Step {
            line,
            action: Action::Send(bytes),
        });
    }
}

fn hash_line(s: &mut Script, line: usize, rest: &str) -> Result<(), String> {
    let directive = |action| Step { line, action };
    match rest {
        "tls-handshake" => s.steps.push(directive(Action::TlsHandshake)),
        "closed" => s.steps.push(directive(Action::Closed)),
        "tls-alert-then-closed" => s.steps.push(directive(Action::TlsAlertThenClosed)),
        "shutdown-server" => s.steps.push(directive(Action::ShutdownServer)),
        _ => {
            let (key, value) = rest
                .split_once(": ")
                .ok_or_else(|| format!("expected `# key: value` or a directive, got {rest:?}"))?;
            header(s, line, key, value)?;
        }
    }
    Ok(())
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{key}: {value:?} is not a number"))
}

fn header(s: &mut Script, line: usize, key: &str, value: &str) -> Result<(), String> {
    let l = &mut s.options.listener;
    match key {
        "connect" => {
            let (name, from) = match value.split_once(" from ") {
                Some((name, ip)) => (
                    name,
                    Some(
                        ip.parse()
                            .map_err(|_| format!("connect: bad address {ip:?}"))?,
                    ),
                ),
                None => (value, None),
            };
            s.steps.push(Step {
                line,
                action: Action::Connect(name.to_string(), from),
            });
        }
        "switch" => s.steps.push(Step {
            line,
            action: Action::Switch(value.to_string()),
        }),
        "quiet" => s.steps.push(Step {
            line,
            action: Action::Quiet(duration(key, value)?),
        }),
        "trickle" => s.steps.push(Step {
            line,
            action: Action::TrickleNext(duration(key, value)?),
        }),
        "relay_networks" => {
            s.options.relay_networks = value
                .split(',')
                .map(|n| {
                    n.trim()
                        .parse::<IpNet>()
                        .map_err(|e| format!("relay_networks: {n:?}: {e}"))
                })
                .collect::<Result<_, _>>()?;
        }
        "tls" => {
            l.tls = super::tls_mode(value)
                .ok_or_else(|| format!("tls: {value:?} is not starttls/implicit/none"))?;
            s.options.certificate = true;
        }
        "rdns_lookup_loopback" => s.options.rdns_lookup_loopback = value == "true",
        "max_queued_messages" => s.options.max_queued_messages = number(key, value)?,
        "max_connections" => l.max_connections = number(key, value)?,
        "max_connections_per_client" => l.max_connections_per_client = number(key, value)?,
        "max_command_line" => l.max_command_line = number(key, value)?,
        "max_text_line" => l.max_text_line = number(key, value)?,
        "max_message_size" => l.max_message_size = number(key, value)?,
        "max_recipients" => l.max_recipients = number(key, value)?,
        "max_errors" => l.max_errors = number(key, value)?,
        "max_junk_commands" => l.max_junk_commands = number(key, value)?,
        "min_data_rate" => l.min_data_rate = number(key, value)?,
        "relay_reserve_percent" => l.relay_reserve_percent = number(key, value)?,
        "client_prefix_v4" => l.client_prefix_v4 = number(key, value)?,
        "timeouts.command" => l.timeouts.command = number(key, value)?,
        "timeouts.data" => l.timeouts.data = number(key, value)?,
        "timeouts.session" => l.timeouts.session = number(key, value)?,
        "stress.enter_percent" => l.stress.enter_percent = number(key, value)?,
        "stress.leave_percent" => l.stress.leave_percent = number(key, value)?,
        "stress.command_timeout" => l.stress.command_timeout = number(key, value)?,
        "stress.data_timeout" => l.stress.data_timeout = number(key, value)?,
        "stress.max_errors" => l.stress.max_errors = number(key, value)?,
        "stress.max_junk_commands" => l.stress.max_junk_commands = number(key, value)?,
        "bare_line_endings" => {
            l.bare_line_endings = match value {
                "reject" => BareLf::Reject,
                "normalize" => BareLf::Normalize,
                _ => {
                    return Err(format!(
                        "bare_line_endings: {value:?} is not reject/normalize"
                    ));
                }
            }
        }
        "auth" => {
            l.auth = match value {
                "none" => tern_smtpd::AuthMode::None,
                "optional" => tern_smtpd::AuthMode::Optional,
                "required" => tern_smtpd::AuthMode::Required,
                _ => return Err(format!("auth: {value:?} is not none/optional/required")),
            }
        }
        "allow_plaintext_loopback" => l.allow_plaintext_loopback = value == "true",
        "auth_user" => s.options.auth_users.push(value.to_string()),
        "auth_sender_map" => s.options.auth_senders.push(value.to_string()),
        "auth.sender_check" => {
            s.options.auth.sender_check = match value {
                "off" => tern_auth::SenderCheck::Off,
                "envelope" => tern_auth::SenderCheck::Envelope,
                "envelope_and_header" => tern_auth::SenderCheck::EnvelopeAndHeader,
                _ => return Err(format!("auth.sender_check: {value:?}")),
            }
        }
        "auth.mechanisms" => {
            s.options.auth.mechanisms = value
                .split(',')
                .map(|m| {
                    tern_auth::Mechanism::parse(m.trim())
                        .ok_or_else(|| format!("auth.mechanisms: {m:?}"))
                })
                .collect::<Result<_, _>>()?;
        }
        "auth.max_failures_per_client" => {
            s.options.auth.max_failures_per_client = number(key, value)?
        }
        "auth.max_failures_per_user" => s.options.auth.max_failures_per_user = number(key, value)?,
        "auth.received_show_user" => s.options.auth.received_show_user = value == "true",
        "auth.received_hide_client" => s.options.auth.received_hide_client = value == "true",
        "expect" if value == "closed" => s.expect_closed = Some(line),
        "queued" => s.queued = Some((line, number(key, value)?)),
        "spool_tmp_files" => s.tmp_files = Some((line, number(key, value)?)),
        "queued_body_contains" => s.checks.push((line, Check::BodyContains(unescape(value)?))),
        "queued_body_lacks" => s.checks.push((line, Check::BodyLacks(unescape(value)?))),
        "queued_body_ends_with" => s.checks.push((line, Check::BodyEndsWith(unescape(value)?))),
        "queued_body_starts_with" => s
            .checks
            .push((line, Check::BodyStartsWith(pattern(value, true)?))),
        "envelope" => {
            // `field =` with nothing after it expects an empty value.
            let (field, expected) = value
                .split_once(" =")
                .ok_or_else(|| format!("envelope: expected `field = value`, got {value:?}"))?;
            let expected = expected.strip_prefix(' ').unwrap_or(expected);
            s.checks.push((
                line,
                Check::Envelope(field.trim().to_string(), expected.to_string()),
            ));
        }
        _ => return Err(format!("unknown header `{key}: {value}`")),
    }
    Ok(())
}

/// `300ms` or `2s`.
fn duration(key: &str, value: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{key}: {value:?} is not a duration like 300ms or 2s");
    if let Some(ms) = value.strip_suffix("ms") {
        return ms
            .parse()
            .map(std::time::Duration::from_millis)
            .map_err(|_| bad());
    }
    value
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .map(std::time::Duration::from_secs)
        .ok_or_else(bad)
}

/// Splits a pattern into pieces at `{ID}`, `{QID}` and `{ANY}`; literal parts are taken
/// as they are, or unescaped when `escapes` is set.
fn pattern(text: &str, escapes: bool) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    loop {
        let next = ["{ID}", "{QID}", "{ANY}", "{END}"]
            .iter()
            .filter_map(|p| rest.find(p).map(|at| (at, *p)))
            .min();
        let (literal, after) = match next {
            Some((at, p)) => (&rest[..at], Some((p, &rest[at + p.len()..]))),
            None => (rest, None),
        };
        if !literal.is_empty() {
            let bytes = if escapes {
                unescape(literal)?
            } else {
                literal.as_bytes().to_vec()
            };
            pieces.push(Piece::Literal(bytes));
        }
        match after {
            Some((p, after)) => {
                pieces.push(match p {
                    "{ID}" => Piece::Id,
                    "{QID}" => Piece::Qid,
                    "{END}" => Piece::End,
                    _ => Piece::Any,
                });
                rest = after;
            }
            None => return Ok(pieces),
        }
    }
}

/// Decodes `\r`, `\n`, `\t`, `\\`, `\xHH` and `\{N*TEXT}` (TEXT, itself unescaped,
/// repeated N times; TEXT cannot contain `}`).
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let esc = &rest[at + 1..];
        let mut chars = esc.chars();
        let used = match chars.next() {
            Some('r') => {
                out.push(b'\r');
                1
            }
            Some('n') => {
                out.push(b'\n');
                1
            }
            Some('t') => {
                out.push(b'\t');
                1
            }
            Some('\\') => {
                out.push(b'\\');
                1
            }
            Some('x') => {
                let hex = esc.get(1..3).ok_or("\\x needs two hex digits")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape \\x{hex}"))?);
                3
            }
            Some('{') => {
                let close = esc.find('}').ok_or("\\{ without closing }")?;
                let (count, body) = esc[1..close].split_once('*').ok_or("\\{ needs N*TEXT")?;
                let count: usize = count
                    .parse()
                    .map_err(|_| format!("bad repeat count {count:?}"))?;
                let body = unescape(body)?;
                for _ in 0..count {
                    out.extend_from_slice(&body);
                }
                close + 1
            }
            other => {
                return Err(format!(
                    "unknown escape \\{}",
                    other.map(String::from).unwrap_or_default()
                ));
            }
        };
        rest = &esc[used..];
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

/// True when `pieces` match the start of `input` (all of it when `full`). `{ID}` matches
/// are appended to `ids`; `{QID}` must equal `qid`. Backtracks over `{ANY}`.
pub fn matches(
    pieces: &[Piece],
    input: &[u8],
    qid: Option<&str>,
    ids: &mut Vec<String>,
    full: bool,
) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return !full || input.is_empty();
    };
    match first {
        Piece::Literal(l) => {
            input.starts_with(l) && matches(rest, &input[l.len()..], qid, ids, full)
        }
        Piece::Qid => {
            let q = qid.unwrap_or("{QID} used outside a stored-message check");
            input.starts_with(q.as_bytes()) && matches(rest, &input[q.len()..], qid, ids, full)
        }
        Piece::Id => {
            let Some(cand) = input.get(..15).and_then(|c| std::str::from_utf8(c).ok()) else {
                return false;
            };
            if tern_spool::QueueId::parse(cand).is_err() {
                return false;
            }
            ids.push(cand.to_string());
            if matches(rest, &input[15..], qid, ids, full) {
                return true;
            }
            ids.pop();
            false
        }
        Piece::End => input.is_empty() && matches(rest, input, qid, ids, full),
        Piece::Any => {
            let limit = input
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(input.len());
            (0..=limit)
                .rev()
                .any(|n| matches(rest, &input[n..], qid, ids, full))
        }
    }
}

pub fn render(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Literal(l) => lossy(l),
            Piece::Id => "{ID}".into(),
            Piece::Qid => "{QID}".into(),
            Piece::Any => "{ANY}".into(),
            Piece::End => "{END}".into(),
        })
        .collect()
}

/// Bytes as text, for messages.
pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            unescape(r"a\r\n\x00\\b\{3*ab\n}").unwrap(),
            b"a\r\n\x00\\bab\nab\nab\n"
        );
        assert!(unescape(r"\q").is_err());
        assert!(unescape(r"\x0").is_err());
    }

    #[test]
    fn consecutive_client_lines_are_one_write() {
        let s = parse(
            "t",
            "C: A\nC! B\\n\n## comment\nC: C\nS: 250 {ID} x{ANY}\nC: D\n",
        )
        .unwrap();
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.steps[0].action, Action::Send(b"A\r\nB\nC\r\n".to_vec()));
        assert_eq!(
            s.steps[1].action,
            Action::Expect(vec![
                Piece::Literal(b"250 ".to_vec()),
                Piece::Id,
                Piece::Literal(b" x".to_vec()),
                Piece::Any
            ])
        );
    }

    #[test]
    fn trickle_takes_the_next_client_lines() {
        let s = parse("t", "# trickle: 200ms\nC: AB\nC! C\nS: 250\n# quiet: 1s\n").unwrap();
        assert_eq!(
            s.steps[0].action,
            Action::Trickle(b"AB\r\nC".to_vec(), std::time::Duration::from_millis(200))
        );
        assert_eq!(
            s.steps[2].action,
            Action::Quiet(std::time::Duration::from_secs(1))
        );
        assert!(parse("t", "# quiet: soon\n").is_err());
    }

    #[test]
    fn typos_are_errors() {
        assert!(parse("t", "# queud: 1\n").unwrap_err().starts_with("t:1:"));
        assert!(
            parse("t", "S: 250\nX: y\n")
                .unwrap_err()
                .starts_with("t:2:")
        );
    }
}
