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
//! and RFC 6531 (SMTP, ESMTP, ESMTPS, UTF8SMTP, UTF8SMTPS). Peer-supplied text (the HELO
//! name) is stripped of anything that could break the header.

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
}

impl Trace<'_> {
    /// The header with its final CRLF.
    pub fn render(&self) -> String {
        let helo = sanitize(self.helo);
        let name = self.client_name.unwrap_or("unknown");
        let ip = match self.client_ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => format!("IPv6:{v6}"),
            },
        };
        let mut h = format!("Received: from {helo} ({name} [{ip}])\r\n");
        if let Some(tls) = self.tls {
            h.push_str(&format!("\t(using {})\r\n", sanitize(tls)));
        }
        let proto = match (self.smtputf8, self.esmtp, self.tls.is_some()) {
            (true, _, false) => "UTF8SMTP",
            (true, _, true) => "UTF8SMTPS",
            (false, true, true) => "ESMTPS",
            (false, true, false) => "ESMTP",
            (false, false, true) => "SMTPS",
            (false, false, false) => "SMTP",
        };
        h.push_str(&format!(
            "\tby {} (Tern) with {proto} id {}",
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
        };
        assert_eq!(
            t.render(),
            "Received: from client.example (mail.example [192.0.2.7])\r\n\t(using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256)\r\n\tby mx.test (Tern) with ESMTPS id 0ABC\r\n\tfor <a@b.test>; Mon, 23 Nov 2026 16:55:00 +0000\r\n"
        );
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
        };
        let h = t.render();
        assert_eq!(h.matches("\r\n").count(), 2);
        assert!(h.starts_with("Received: from x___Bcc: victim@x (unknown [IPv6:::1])\r\n\tby mx.test (Tern) with SMTP id 0ABC; d\r\n"));
    }
}
