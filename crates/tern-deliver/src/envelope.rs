//! The outbound transaction description and how it becomes MAIL/RCPT commands.
//!
//! [`Transaction`] borrows everything from the caller (the queue's envelope and the
//! spooled content); nothing is copied but the command lines.
//!
//! ESMTP parameters are only sent for extensions the server advertised (RFC 5321
//! §4.1.1.11 forbids anything else): `SIZE=` with SIZE, `BODY=8BITMIME` with 8BITMIME,
//! `SMTPUTF8` with SMTPUTF8, and the DSN parameters (`RET`, `ENVID`, `NOTIFY`, `ORCPT`)
//! with DSN. Whether the message may be sent at all to a server lacking an extension is
//! the caller's decision, made with [`check_compat`] before `send`.
//!
//! Trust: addresses and DSN values come from Tern's own spool, validated when the message
//! was received. They are checked again here for characters that would break the command
//! line (controls, space, angle brackets): a bad value is refused before anything is
//! written, so a spool bug can never inject a command.

/// The body type of the content (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// 7-bit content: no parameter needed.
    SevenBit,
    /// 8-bit MIME content: `BODY=8BITMIME` when the server advertises 8BITMIME.
    EightBitMime,
    /// Binary MIME content. This client sends DATA, never BDAT, so it cannot carry it:
    /// [`check_compat`] always answers [`Incompatible::NoBinaryMime`].
    BinaryMime,
}

/// DSN `RET` (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnRet {
    /// `RET=FULL`.
    Full,
    /// `RET=HDRS`.
    Hdrs,
}

/// DSN `NOTIFY` (RFC 3461 §4.1). `never` excludes the others; when set, only `NEVER` is
/// sent. All false sends no NOTIFY parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    /// SUCCESS.
    pub success: bool,
    /// FAILURE.
    pub failure: bool,
    /// DELAY.
    pub delay: bool,
    /// NEVER.
    pub never: bool,
}

/// One recipient of an outbound transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutRecipient<'a> {
    /// The forward path, without angle brackets.
    pub address: &'a str,
    /// DSN NOTIFY, sent when the server advertises DSN.
    pub notify: Option<Notify>,
    /// DSN ORCPT as `addr-type;address` (e.g. `rfc822;a@b.example`), unencoded; it is
    /// xtext-encoded on the wire.
    pub orcpt: Option<&'a str>,
}

impl<'a> OutRecipient<'a> {
    /// A recipient without DSN parameters.
    pub fn new(address: &'a str) -> OutRecipient<'a> {
        OutRecipient {
            address,
            notify: None,
            orcpt: None,
        }
    }
}

/// One mail transaction: envelope plus content.
#[derive(Debug, Clone, Copy)]
pub struct Transaction<'a> {
    /// Reverse path without angle brackets; `""` is the null sender `<>`.
    pub sender: &'a str,
    /// Forward paths, in order; the outcome has one entry per recipient in this order.
    pub recipients: &'a [OutRecipient<'a>],
    /// Length of the content in octets (for `SIZE=`); the content itself is streamed to
    /// [`crate::SmtpSession::send`], CRLF lines, not dot-stuffed.
    pub size: u64,
    /// Body type of the content.
    pub body: Body,
    /// Ask for SMTPUTF8 (sent only when advertised).
    pub smtputf8: bool,
    /// DSN RET.
    pub dsn_ret: Option<DsnRet>,
    /// DSN ENVID, unencoded; xtext-encoded on the wire.
    pub dsn_envid: Option<&'a str>,
}

/// Why a message cannot go to a server with these capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Incompatible {
    /// The server's SIZE limit is smaller than the message: a permanent failure
    /// (`5.3.4 message too big for system`).
    #[error("message size exceeds the server's limit of {limit} octets")]
    TooBig {
        /// The advertised limit.
        limit: u64,
    },
    /// The message needs SMTPUTF8 and the server lacks it: a permanent failure
    /// (`5.6.7`, RFC 6531 §3.2).
    #[error("the message needs SMTPUTF8, which the server does not offer")]
    NoSmtpUtf8,
    /// 8-bit content and no 8BITMIME. The caller sends a 7-bit copy instead (the queue
    /// converts with `tern-convert`), or defers with `4.6.3` when the message cannot be
    /// converted without changing its meaning.
    #[error("8-bit content and the server does not offer 8BITMIME")]
    NoEightBitMime,
    /// Binary content needs BDAT and BINARYMIME, which this client does not implement:
    /// the caller sends a 7-bit copy instead (whatever the server offers), or defers with
    /// `4.6.3` when the message cannot be converted.
    #[error("binary MIME content cannot be sent with DATA")]
    NoBinaryMime,
}

/// Whether a message of `content_len` octets with this body type and SMTPUTF8 need may
/// be sent to a server with `caps`. Checks in order: size, SMTPUTF8, body type.
pub fn check_compat(
    caps: &crate::Capabilities,
    content_len: u64,
    body: Body,
    smtputf8: bool,
) -> Result<(), Incompatible> {
    if let Some(limit) = caps.size
        && content_len > limit
    {
        return Err(Incompatible::TooBig { limit });
    }
    if smtputf8 && !caps.smtputf8 {
        return Err(Incompatible::NoSmtpUtf8);
    }
    match body {
        Body::SevenBit => Ok(()),
        Body::EightBitMime if caps.eightbitmime => Ok(()),
        Body::EightBitMime => Err(Incompatible::NoEightBitMime),
        Body::BinaryMime => Err(Incompatible::NoBinaryMime),
    }
}

/// xtext encoding (RFC 3461 §4): `!` to `~` except `+` and `=` as themselves, all other
/// octets as `+` and two upper-case hex digits.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push('+');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

/// Why an envelope value cannot be put on a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadEnvelope(pub(crate) String);

/// An address is usable on the command line: no controls, spaces or angle brackets.
/// UTF-8 above ASCII passes (SMTPUTF8 addresses).
fn check_path(what: &str, value: &str) -> Result<(), BadEnvelope> {
    if value
        .chars()
        .any(|c| c.is_control() || c == ' ' || c == '<' || c == '>')
    {
        return Err(BadEnvelope(format!(
            "{what} {value:?} has characters not allowed in a path"
        )));
    }
    Ok(())
}

/// Builds `MAIL FROM:<sender> params\r\n`.
pub(crate) fn mail_command(
    tx: &Transaction<'_>,
    caps: &crate::Capabilities,
) -> Result<Vec<u8>, BadEnvelope> {
    check_path("sender", tx.sender)?;
    let mut line = format!("MAIL FROM:<{}>", tx.sender);
    if caps.size.is_some() {
        line.push_str(&format!(" SIZE={}", tx.size));
    }
    if caps.eightbitmime && tx.body == Body::EightBitMime {
        line.push_str(" BODY=8BITMIME");
    }
    if caps.smtputf8 && tx.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        match tx.dsn_ret {
            Some(DsnRet::Full) => line.push_str(" RET=FULL"),
            Some(DsnRet::Hdrs) => line.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = tx.dsn_envid {
            line.push_str(" ENVID=");
            line.push_str(&xtext(envid));
        }
    }
    line.push_str("\r\n");
    Ok(line.into_bytes())
}

/// Builds `RCPT TO:<address> params\r\n`.
pub(crate) fn rcpt_command(
    rcpt: &OutRecipient<'_>,
    caps: &crate::Capabilities,
) -> Result<Vec<u8>, BadEnvelope> {
    check_path("recipient", rcpt.address)?;
    if rcpt.address.is_empty() {
        return Err(BadEnvelope("empty recipient address".into()));
    }
    let mut line = format!("RCPT TO:<{}>", rcpt.address);
    if caps.dsn {
        if let Some(notify) = rcpt.notify {
            let mut kinds = Vec::new();
            if notify.never {
                kinds.push("NEVER");
            } else {
                if notify.success {
                    kinds.push("SUCCESS");
                }
                if notify.failure {
                    kinds.push("FAILURE");
                }
                if notify.delay {
                    kinds.push("DELAY");
                }
            }
            if !kinds.is_empty() {
                line.push_str(" NOTIFY=");
                line.push_str(&kinds.join(","));
            }
        }
        if let Some(orcpt) = rcpt.orcpt {
            line.push_str(" ORCPT=");
            line.push_str(&xtext(orcpt));
        }
    }
    line.push_str("\r\n");
    Ok(line.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Capabilities;

    fn all_caps() -> Capabilities {
        Capabilities {
            pipelining: true,
            eightbitmime: true,
            smtputf8: true,
            dsn: true,
            chunking: false,
            starttls: false,
            enhanced_status: true,
            size: Some(1000),
        }
    }

    fn tx<'a>(recipients: &'a [OutRecipient<'a>]) -> Transaction<'a> {
        Transaction {
            sender: "s@example.org",
            recipients,
            size: 10,
            body: Body::EightBitMime,
            smtputf8: true,
            dsn_ret: Some(DsnRet::Hdrs),
            dsn_envid: Some("id+1=x y"),
        }
    }

    #[test]
    fn xtext_encoding() {
        assert_eq!(xtext("plain@example.org"), "plain@example.org");
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext("rfc822;x@y"), "rfc822;x@y");
        assert_eq!(xtext("é"), "+C3+A9");
        assert_eq!(xtext("\x7f~!"), "+7F~!");
        assert_eq!(xtext(""), "");
    }

    #[test]
    fn mail_with_every_parameter() {
        let cmd = mail_command(&tx(&[]), &all_caps()).unwrap();
        assert_eq!(
            cmd,
            b"MAIL FROM:<s@example.org> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+3Dx+20y\r\n"
        );
    }

    #[test]
    fn parameters_only_for_advertised_extensions() {
        let rcpts = [OutRecipient {
            address: "r@example.net",
            notify: Some(Notify {
                success: true,
                failure: true,
                delay: false,
                never: false,
            }),
            orcpt: Some("rfc822;r+x@example.net"),
        }];
        let t = tx(&rcpts);
        let none = Capabilities::default();
        assert_eq!(
            mail_command(&t, &none).unwrap(),
            b"MAIL FROM:<s@example.org>\r\n"
        );
        assert_eq!(
            rcpt_command(&rcpts[0], &none).unwrap(),
            b"RCPT TO:<r@example.net>\r\n"
        );
        assert_eq!(
            rcpt_command(&rcpts[0], &all_caps()).unwrap(),
            b"RCPT TO:<r@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r+2Bx@example.net\r\n"
        );
    }

    #[test]
    fn notify_never_and_null_sender() {
        let r = OutRecipient {
            address: "r@x",
            notify: Some(Notify {
                never: true,
                success: true,
                ..Notify::default()
            }),
            orcpt: None,
        };
        assert_eq!(
            rcpt_command(&r, &all_caps()).unwrap(),
            b"RCPT TO:<r@x> NOTIFY=NEVER\r\n"
        );
        let mut t = tx(&[]);
        t.sender = "";
        t.body = Body::SevenBit;
        t.smtputf8 = false;
        t.dsn_ret = None;
        t.dsn_envid = None;
        assert_eq!(
            mail_command(&t, &all_caps()).unwrap(),
            b"MAIL FROM:<> SIZE=10\r\n"
        );
    }

    #[test]
    fn command_injection_is_refused() {
        let mut t = tx(&[]);
        t.sender = "a@b>\r\nRCPT TO:<evil@x";
        assert!(mail_command(&t, &all_caps()).is_err());
        for bad in ["", "a b@c", "a@b\n", "<a@b>"] {
            assert!(
                rcpt_command(&OutRecipient::new(bad), &all_caps()).is_err(),
                "{bad:?}"
            );
        }
        assert!(rcpt_command(&OutRecipient::new("ünï@cödé.example"), &all_caps()).is_ok());
    }

    #[test]
    fn compat_checks() {
        let caps = all_caps();
        assert_eq!(check_compat(&caps, 1000, Body::EightBitMime, true), Ok(()));
        assert_eq!(
            check_compat(&caps, 1001, Body::SevenBit, false),
            Err(Incompatible::TooBig { limit: 1000 })
        );
        let plain = Capabilities::default();
        assert_eq!(
            check_compat(&plain, u64::MAX, Body::SevenBit, false),
            Ok(())
        );
        assert_eq!(
            check_compat(&plain, 1, Body::SevenBit, true),
            Err(Incompatible::NoSmtpUtf8)
        );
        assert_eq!(
            check_compat(&plain, 1, Body::EightBitMime, false),
            Err(Incompatible::NoEightBitMime)
        );
        assert_eq!(
            check_compat(&caps, 1, Body::BinaryMime, false),
            Err(Incompatible::NoBinaryMime)
        );
        // Size is judged first: a too-big message fails permanently even if it would
        // also be deferred for 8BITMIME.
        let mut small = plain.clone();
        small.size = Some(5);
        assert_eq!(
            check_compat(&small, 6, Body::EightBitMime, true),
            Err(Incompatible::TooBig { limit: 5 })
        );
    }
}
