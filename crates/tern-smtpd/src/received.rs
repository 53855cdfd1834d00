//! The `Received:` trace header Tern prepends to every message (RFC 5321 §4.4).
//!
//! Form (folded, as Postfix writes it):
//!
//! ```text
//! Received: from HELO (NAME [IP])
//!         (using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)
//!         by HOSTNAME (Tern) with ESMTPS id QUEUEID
//!         for <RCPT>; Mon, 23 Nov 2026 16:55:00 +0000
//! ```
//!
//! `NAME` is the forward-confirmed reverse-DNS name or `unknown`; the TLS line appears only
//! for encrypted sessions; `for` only when the message has exactly one recipient (naming
//! one of several would disclose Bcc recipients). The protocol keyword follows RFC 3848
//! and RFC 6531 (SMTP, ESMTP, ESMTPS, UTF8SMTP, UTF8SMTPS, and with SMTP AUTH ESMTPA,
//! ESMTPSA, UTF8SMTPA, UTF8SMTPSA). The authenticated user is not written unless the
//! operator asks (`auth.received_show_user`: `(Authenticated sender: USER)`, as Postfix's
//! `smtpd_sasl_authenticated_header`); with `auth.received_hide_client` an authenticated
//! submission's header has no `from` clause and no TLS comment
//! (`Received: by HOSTNAME (Tern) with ESMTPSA id …`), so the sender's address and machine
//! name stay private (docs/SUBMISSION.md). Peer-supplied text is
//! stripped of anything that could break the header, and the HELO name is written in
//! printable ASCII only: every other character (control characters, 8-bit text, the
//! U+FFFD that stands for invalid UTF-8) becomes `?`, and parentheses become `_`, so the
//! header is valid in any message, SMTPUTF8 or not, whatever the client said.

use std::net::IpAddr;

/// Everything the header says.
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    /// HELO/EHLO argument as given.
    pub helo: &'a str,
    /// Verified client name.
    pub client_name: Option<&'a str>,
    /// Client address.
    pub client_ip: IpAddr,
    /// TLS description, when encrypted.
    pub tls: Option<&'a str>,
    /// Tern's host name.
    pub hostname: &'a str,
    /// EHLO (true) or HELO.
    pub esmtp: bool,
    /// SMTPUTF8 transaction.
    pub smtputf8: bool,
    /// Queue id.
    pub queue_id: &'a str,
    /// The single recipient, if there is exactly one.
    pub single_recipient: Option<&'a str>,
    /// Date in RFC 5322 form.
    pub date: &'a str,
    /// The client authenticated (SMTP AUTH).
    pub authenticated: bool,
    /// The user to name in the header (`auth.received_show_user`), if any.
    pub show_user: Option<&'a str>,
    /// Leave the client out (`auth.received_hide_client`; authenticated sessions only).
    pub hide_client: bool,
}

impl Trace<'_> {
    /// The header with its final CRLF.
    pub fn render(&self) -> String {
        let helo = printable_ascii(self.helo);
        let name = self.client_name.unwrap_or("unknown");
        let ip = match self.client_ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => format!("IPv6:{v6}"),
            },
        };
        let hide = self.hide_client && self.authenticated;
        let mut h = if hide {
            "Received: ".to_string()
        } else {
            let mut h = format!("Received: from {helo} ({name} [{ip}])\r\n");
            if let Some(tls) = self.tls {
                h.push_str(&format!("\t(using {})\r\n", sanitize(tls)));
            }
            h.push('\t');
            h
        };
        if let Some(user) = self.show_user.filter(|_| self.authenticated) {
            h.push_str(&format!("(Authenticated sender: {})\r\n\t", sanitize(user)));
        }
        let base = match (self.smtputf8, self.esmtp, self.tls.is_some()) {
            (true, _, false) => "UTF8SMTP",
            (true, _, true) => "UTF8SMTPS",
            (false, true, true) => "ESMTPS",
            (false, true, false) => "ESMTP",
            (false, false, true) => "SMTPS",
            (false, false, false) => "SMTP",
        };
        // RFC 3848: an A after the keyword (ESMTPA, ESMTPSA, UTF8SMTPSA…).
        let auth = if self.authenticated { "A" } else { "" };
        h.push_str(&format!(
            "by {} (Tern) with {base}{auth} id {}",
            self.hostname, self.queue_id
        ));
        if let Some(rcpt) = self.single_recipient {
            h.push_str(&format!("\r\n\tfor <{}>", sanitize(rcpt)));
        }
        h.push_str(&format!("; {}\r\n", self.date));
        h
    }
}

/// Keeps printable characters only, replaces `(`/`)` that would unbalance the comment.
fn sanitize(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(255)
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

/// The HELO name for the header: printable ASCII (and spaces) kept, parentheses made
/// `_`, every other character `?`; at most 255 characters; `unknown` when empty.
fn printable_ascii(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(255)
        .map(|c| match c {
            '(' | ')' => '_',
            ' '..='~' => c,
            _ => '?',
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

/// The HELO name as the envelope keeps it: control characters (C0, DEL, C1) replaced by
/// `?`, everything else (8-bit text included) as the client sent it.
pub fn without_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Current time in RFC 5322 date form.
pub fn rfc5322_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_header() {
        let t = Trace {
            helo: "client.example",
            client_name: Some("mail.example"),
            client_ip: "192.0.2.7".parse().unwrap(),
            tls: Some("TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256"),
            hostname: "mx.test",
            esmtp: true,
            smtputf8: false,
            queue_id: "0ABC",
            single_recipient: Some("a@b.test"),
            date: "Mon, 23 Nov 2026 16:55:00 +0000",
            authenticated: false,
            show_user: None,
            hide_client: false,
        };
        assert_eq!(
            t.render(),
            "Received: from client.example (mail.example [192.0.2.7])\r\n\t(using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256)\r\n\tby mx.test (Tern) with ESMTPS id 0ABC\r\n\tfor <a@b.test>; Mon, 23 Nov 2026 16:55:00 +0000\r\n"
        );
    }

    #[test]
    fn authenticated_submissions() {
        let mut t = Trace {
            helo: "laptop.home",
            client_name: Some("dsl.isp.example"),
            client_ip: "198.51.100.7".parse().unwrap(),
            tls: Some("TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256"),
            hostname: "mx.test",
            esmtp: true,
            smtputf8: false,
            queue_id: "0ABC",
            single_recipient: None,
            date: "d",
            authenticated: true,
            show_user: None,
            hide_client: false,
        };
        assert_eq!(
            t.render(),
            "Received: from laptop.home (dsl.isp.example [198.51.100.7])\r\n\t(using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256)\r\n\tby mx.test (Tern) with ESMTPSA id 0ABC; d\r\n"
        );
        t.show_user = Some("alice");
        assert!(t.render().contains(
            "\r\n\t(Authenticated sender: alice)\r\n\tby mx.test (Tern) with ESMTPSA id 0ABC; d\r\n"
        ));
        t.show_user = None;
        t.hide_client = true;
        assert_eq!(
            t.render(),
            "Received: by mx.test (Tern) with ESMTPSA id 0ABC; d\r\n"
        );
        t.tls = None;
        t.smtputf8 = true;
        assert_eq!(
            t.render(),
            "Received: by mx.test (Tern) with UTF8SMTPA id 0ABC; d\r\n"
        );
        // Hiding applies to authenticated sessions only.
        t.authenticated = false;
        assert!(t.render().starts_with("Received: from laptop.home"));
    }

    #[test]
    fn hostile_helo_cannot_break_the_header() {
        let t = Trace {
            helo: "x)\r\nBcc: victim@x",
            client_name: None,
            client_ip: "::1".parse().unwrap(),
            tls: None,
            hostname: "mx.test",
            esmtp: false,
            smtputf8: false,
            queue_id: "0ABC",
            single_recipient: None,
            date: "d",
            authenticated: false,
            show_user: None,
            hide_client: false,
        };
        let h = t.render();
        assert_eq!(h.matches("\r\n").count(), 2);
        assert!(h.starts_with("Received: from x_??Bcc: victim@x (unknown [IPv6:::1])\r\n\tby mx.test (Tern) with SMTP id 0ABC; d\r\n"));
    }

    #[test]
    fn helo_part_is_printable_ascii() {
        for (helo, shown) in [
            ("b\u{fc}cher.example", "b?cher.example"),
            ("\u{fffd}\u{fffd}.example", "??.example"),
            ("nul\0esc\u{1b}del\u{7f}c1\u{85}", "nul?esc?del?c1?"),
            ("[192.0.2.1]", "[192.0.2.1]"),
            ("", "unknown"),
        ] {
            let t = Trace {
                helo,
                client_name: None,
                client_ip: "192.0.2.1".parse().unwrap(),
                tls: None,
                hostname: "mx.test",
                esmtp: true,
                smtputf8: true,
                queue_id: "0ABC",
                single_recipient: None,
                date: "d",
                authenticated: false,
                show_user: None,
                hide_client: false,
            };
            let h = t.render();
            assert!(
                h.starts_with(&format!("Received: from {shown} (unknown [192.0.2.1])\r\n")),
                "{helo:?}: {h:?}"
            );
            let first = h.split("\r\n").next().unwrap();
            assert!(first.bytes().all(|b| (b' '..=b'~').contains(&b)), "{h:?}");
        }
    }

    #[test]
    fn envelope_helo_loses_only_control_characters() {
        assert_eq!(without_controls("client.example"), "client.example");
        assert_eq!(without_controls("b\u{fc}cher"), "b\u{fc}cher");
        assert_eq!(without_controls("a\0b\tc\u{7f}d\u{9b}"), "a?b?c?d?");
    }
}
