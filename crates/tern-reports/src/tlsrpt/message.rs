//! The `mailto:` report message of RFC 8460 §5.3 (sans-I/O): `multipart/report;
//! report-type="tlsrpt"` with a text part and the gzipped JSON as an
//! `application/tlsrpt+gzip` attachment named as §5.1 says.
//!
//! RFC 8460 §5.3 requires the message to be DKIM-signed: it is queued through Tern's
//! intake with the listener name [`super::reporter::LISTENER`], so Tern's signer signs
//! it when a `[dkim]` rule covers the `From` domain (docs/TLS.md says so).

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;

/// What a report message needs: the DMARC reports' (the same fields), with the
/// submitter's domain as `submitter` and the period's first and last second.
pub use crate::message::ReportMail;

fn id_part(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect()
}

/// The file name of RFC 8460 §5.1:
/// `<submitter>!<policy-domain>!<begin>!<end>!<unique>.json.gz` (Unix seconds).
pub fn file_name(m: &ReportMail<'_>) -> String {
    let unique = format!("{:08x}", crc32c::crc32c(m.report_id.as_bytes()));
    format!(
        "{}!{}!{}!{}!{unique}.json.gz",
        id_part(m.submitter),
        id_part(m.domain),
        m.begin,
        m.end
    )
}

/// The message for one `To:` address.
pub fn build(m: &ReportMail<'_>, to: &str) -> Vec<u8> {
    let text = format!(
        "This is an SMTP TLS report (RFC 8460) from {submitter}.\r\n\r\nReport Domain: {domain}\r\nSubmitter: {submitter}\r\nReport-ID: <{id}>\r\nPeriod: {begin} to {end} (Unix time, UTC)\r\n",
        submitter = m.submitter,
        domain = m.domain,
        id = m.report_id,
        begin = m.begin,
        end = m.end,
    );
    let body = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "tlsrpt"),
        vec![
            MimePart::new("text/plain", text),
            // Binary content: mail-builder writes it base64.
            MimePart::new("application/tlsrpt+gzip", m.gzipped.to_vec()).attachment(file_name(m)),
        ],
    );
    MessageBuilder::new()
        .from(Address::new_address(None::<&str>, m.from))
        .to(Address::new_address(None::<&str>, to))
        .subject(format!(
            "Report Domain: {} Submitter: {} Report-ID: <{}>",
            m.domain, m.submitter, m.report_id
        ))
        .date(Date::new(i64::try_from(m.now).unwrap_or(0)))
        .message_id(MessageId::new(format!(
            "tlsrpt.{}.{}@{}",
            id_part(m.report_id),
            crc32c::crc32c(to.as_bytes()),
            m.hostname
        )))
        .header("TLS-Report-Domain", Raw::new(m.domain))
        .header("TLS-Report-Submitter", Raw::new(m.submitter))
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .header("MIME-Version", Raw::new("1.0"))
        .body(body)
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::gzip;
    use mail_parser::{MessageParser, MimeHeaders};

    #[test]
    fn the_message_parses_back_with_its_headers_and_attachment() {
        let json = r#"{"organization-name":"x"}"#;
        let gz = gzip(json).unwrap();
        let m = ReportMail {
            submitter: "mx.example",
            from: "tlsrpt@mx.example",
            domain: "a.test",
            report_id: "86400.172799.0badc0de@mx.example",
            begin: 86_400,
            end: 172_799,
            gzipped: &gz,
            now: 172_800,
            hostname: "mx.example",
        };
        let bytes = build(&m, "rua@a.test");
        let msg = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(
            msg.subject(),
            Some(
                "Report Domain: a.test Submitter: mx.example Report-ID: <86400.172799.0badc0de@mx.example>"
            )
        );
        assert_eq!(
            msg.header_raw("TLS-Report-Domain").map(str::trim),
            Some("a.test")
        );
        assert_eq!(
            msg.header_raw("TLS-Report-Submitter").map(str::trim),
            Some("mx.example")
        );
        let ct = msg.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("tlsrpt"));
        assert_eq!(msg.attachment_count(), 1);
        let att = msg.attachment(0).unwrap();
        let act = att.content_type().unwrap();
        assert_eq!(
            (act.ctype(), act.subtype()),
            ("application", Some("tlsrpt+gzip"))
        );
        let name = att.attachment_name().unwrap();
        assert!(
            name.starts_with("mx.example!a.test!86400!172799!"),
            "{name}"
        );
        assert!(name.ends_with(".json.gz"));
        // The gzip round trip.
        let mut d = flate2::read::GzDecoder::new(att.contents());
        let mut back = String::new();
        std::io::Read::read_to_string(&mut d, &mut back).unwrap();
        assert_eq!(back, json);
    }

    #[test]
    fn the_file_name_keeps_only_safe_characters() {
        let m = ReportMail {
            submitter: "mx.example",
            from: "a@mx.example",
            domain: "a!b/../c.test",
            report_id: "x",
            begin: 1,
            end: 2,
            gzipped: &[],
            now: 0,
            hostname: "h",
        };
        let name = file_name(&m);
        assert_eq!(name.matches('!').count(), 4);
        assert!(!name.contains('/'));
    }
}
