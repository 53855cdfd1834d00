//! The report as mail (sans-I/O): the `rua` URIs read (RFC 7489 §6.2), the XML gzipped
//! and attached to a MIME message (RFC 7489 §7.2.1.1).
//!
//! Trust: `rua` comes from the policy domain's DNS record, so from anyone. Only
//! `mailto:` URIs are used (`https:` is not defined by RFC 7489 and is ignored, like
//! any other scheme); the address is percent-decoded, then must be a plain
//! `local@domain` (printable ASCII, no space, bracket, comma or quote, a domain of
//! letters, digits, hyphens and dots) or the URI is skipped. Nothing from a URI reaches
//! a header but that address.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;

use crate::config::plausible_address;

/// A `mailto:` report URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rua {
    /// The address, lowercase domain.
    pub address: String,
    /// The `!size` limit in octets, when given.
    pub limit: Option<u64>,
}

impl Rua {
    /// The domain of the address.
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// Why a `rua` URI is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuaError {
    /// Not a `mailto:` URI (`https:` included: RFC 7489 defines only `mailto:`).
    #[error("not a mailto: URI")]
    NotMailto,
    /// The address is not a plain `local@domain`.
    #[error("not a usable address")]
    BadAddress,
    /// The `!size` suffix is not a number with an optional k, m, g or t.
    #[error("a size limit that is not a number with k, m, g or t")]
    BadLimit,
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_limit(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        b't' | b'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    if num.is_empty() || num.len() > 15 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Reads one `rua` URI.
pub fn parse_rua(uri: &str) -> Result<Rua, RuaError> {
    let uri = uri.trim();
    let rest = match uri.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("mailto:") => &uri[7..],
        _ => return Err(RuaError::NotMailto),
    };
    // RFC 7489 §6.2: a literal "!" ends the address and starts the size limit.
    let (addr, limit) = match rest.split_once('!') {
        Some((a, l)) => (a, Some(parse_limit(l).ok_or(RuaError::BadLimit)?)),
        None => (rest, None),
    };
    // No headers or further recipients (`?subject=`, commas): the address alone.
    let addr = percent_decode(addr).ok_or(RuaError::BadAddress)?;
    if addr.contains('?') || !plausible_address(&addr) {
        return Err(RuaError::BadAddress);
    }
    let (local, domain) = addr.rsplit_once('@').ok_or(RuaError::BadAddress)?;
    Ok(Rua {
        address: format!("{local}@{}", domain.to_ascii_lowercase()),
        limit,
    })
}

/// The report gzipped (RFC 7489 §7.2.1.1: `.xml.gz`).
pub fn gzip(xml: &str) -> std::io::Result<Vec<u8>> {
    let mut e = GzEncoder::new(
        Vec::with_capacity(xml.len() / 8 + 64),
        Compression::default(),
    );
    e.write_all(xml.as_bytes())?;
    e.finish()
}

/// What a report message needs.
#[derive(Debug, Clone)]
pub struct ReportMail<'a> {
    /// The reporting domain (`receiver` of the file name, `Submitter` of the subject).
    pub submitter: &'a str,
    /// `From:` (the `[dmarc_reports] email`).
    pub from: &'a str,
    /// The policy domain.
    pub domain: &'a str,
    /// The report's ID.
    pub report_id: &'a str,
    /// `date_range` begin.
    pub begin: u64,
    /// `date_range` end.
    pub end: u64,
    /// The gzipped XML.
    pub gzipped: &'a [u8],
    /// Now, for `Date:`.
    pub now: u64,
    /// The host name for the Message-ID.
    pub hostname: &'a str,
}

/// The file name RFC 7489 §7.2.1.1 asks for: `submitter!domain!begin!end.xml.gz`.
pub fn file_name(m: &ReportMail<'_>) -> String {
    format!("{}!{}!{}!{}.xml.gz", m.submitter, m.domain, m.begin, m.end)
}

/// The message for one `To:` address.
pub fn build(m: &ReportMail<'_>, to: &str) -> std::io::Result<Vec<u8>> {
    let id_local: String = m
        .report_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect();
    let text = format!(
        "This is a DMARC aggregate report (RFC 7489) from {submitter}.\r\n\r\nReport Domain: {domain}\r\nSubmitter: {submitter}\r\nReport-ID: {id}\r\nPeriod: {begin} to {end} (Unix time, UTC)\r\n",
        submitter = m.submitter,
        domain = m.domain,
        id = m.report_id,
        begin = m.begin,
        end = m.end,
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
            "dmarc.{id_local}.{}@{}",
            crc32c::crc32c(to.as_bytes()),
            m.hostname
        )))
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .header("MIME-Version", Raw::new("1.0"))
        .text_body(text)
        .attachment("application/gzip", file_name(m), m.gzipped.to_vec())
        .write_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailto_uris_with_and_without_limits() {
        assert_eq!(
            parse_rua("mailto:dmarc@Example.COM").unwrap(),
            Rua {
                address: "dmarc@example.com".into(),
                limit: None
            }
        );
        assert_eq!(
            parse_rua("MAILTO:a@b.test!10m").unwrap().limit,
            Some(10 << 20)
        );
        assert_eq!(parse_rua("mailto:a@b.test!500").unwrap().limit, Some(500));
        assert_eq!(
            parse_rua("mailto:a%21b@b.test").unwrap().address,
            "a!b@b.test"
        );
        assert_eq!(parse_rua("https://r.test/x"), Err(RuaError::NotMailto));
        assert_eq!(parse_rua("mailto:a@b.test!9x"), Err(RuaError::BadLimit));
        assert_eq!(parse_rua("mailto:a@b.test!"), Err(RuaError::BadLimit));
        for bad in [
            "mailto:",
            "mailto:nobody",
            "mailto:a b@c.test",
            "mailto:a@c.test?subject=x",
            "mailto:a@c.test,b@d.test",
            "mailto:a@c.test%0d%0aBcc:x@y.test",
            "mailto:<a@c.test>",
            "mailto:a@c_d.test",
            "mailto:a%40x@b.test",
        ] {
            assert_eq!(parse_rua(bad), Err(RuaError::BadAddress), "{bad}");
        }
    }

    #[test]
    fn the_message_has_the_rfc_subject_file_name_and_gzip_attachment() {
        let xml = "<?xml version=\"1.0\"?><feedback/>";
        let gz = gzip(xml).unwrap();
        let m = ReportMail {
            submitter: "mx.example",
            from: "dmarc@mx.example",
            domain: "a.test",
            report_id: "1.2.abc@mx.example",
            begin: 86_400,
            end: 172_799,
            gzipped: &gz,
            now: 172_800,
            hostname: "mx.example",
        };
        let bytes = build(&m, "rua@a.test").unwrap();
        let text = String::from_utf8(bytes).unwrap().replace("\r\n ", " ");
        assert!(text.contains(
            "Subject: Report Domain: a.test Submitter: mx.example Report-ID: <1.2.abc@mx.example>"
        ));
        assert!(text.contains("mx.example!a.test!86400!172799.xml.gz"));
        assert!(text.contains("application/gzip"));
        assert!(text.contains("Auto-Submitted: auto-generated"));
        assert!(text.contains("To: <rua@a.test>") || text.contains("To: rua@a.test"));
        // The attachment decodes back to the XML.
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        let mut back = String::new();
        std::io::Read::read_to_string(&mut d, &mut back).unwrap();
        assert_eq!(back, xml);
    }
}
