//! The domain's `_smtp._tls` TXT record (RFC 8460 §3): where its reports go.
//!
//! RFC 8460 §3: the records at `_smtp._tls.<domain>` beginning `v=TLSRPTv1` are
//! considered; when there is not exactly one, no report is sent. The record is parsed by
//! mail-auth ([`mail_auth::mta_sts::TlsRpt`]); each URI is then checked here: a
//! `mailto:` address must be a plausible address (no header fields, no second
//! recipient), an `https:` URI must be an absolute `https://` URL of printable ASCII and
//! at most [`MAX_URL`] octets.

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};

use crate::config::plausible_address;

/// Longest `https:` URI used.
pub const MAX_URL: usize = 2048;

/// One usable destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rua {
    /// A `mailto:` address.
    Mail(String),
    /// An `https:` URL.
    Https(String),
}

/// Why a domain gets no report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRecord {
    /// No record beginning `v=TLSRPTv1`.
    None,
    /// More than one.
    Several,
    /// The one record does not parse (or names no `rua`).
    Syntax,
}

impl NoRecord {
    /// The event's `reason`.
    pub fn as_str(&self) -> &'static str {
        match self {
            NoRecord::None => "no v=TLSRPTv1 record",
            NoRecord::Several => "several v=TLSRPTv1 records",
            NoRecord::Syntax => "the record does not parse",
        }
    }
}

/// A record's URIs: the usable ones in record order, and the unusable ones with why.
pub type Destinations = (Vec<Rua>, Vec<(String, &'static str)>);

/// The URIs of the domain's record, usable ones first in record order, with the
/// unusable ones (and why) for the events.
pub fn parse(txts: &[String]) -> Result<Destinations, NoRecord> {
    let records: Vec<&String> = txts
        .iter()
        .filter(|t| {
            t.trim_start()
                .get(..10)
                .is_some_and(|v| v.eq_ignore_ascii_case("v=TLSRPTv1"))
        })
        .collect();
    let record = match records.as_slice() {
        [] => return Err(NoRecord::None),
        [one] => one,
        _ => return Err(NoRecord::Several),
    };
    let parsed = TlsRpt::parse(record.as_bytes()).map_err(|_| NoRecord::Syntax)?;
    let mut usable = Vec::new();
    let mut unusable = Vec::new();
    for uri in parsed.rua {
        match uri {
            ReportUri::Mail(a) => {
                let a = a.trim().to_owned();
                if plausible_address(&a) && !a.contains('?') {
                    let (l, d) = a.rsplit_once('@').unwrap_or((&a, ""));
                    usable.push(Rua::Mail(format!("{l}@{}", d.to_ascii_lowercase())));
                } else {
                    unusable.push((format!("mailto:{a}"), "not a usable address"));
                }
            }
            ReportUri::Http(u) => {
                let u = u.trim().to_owned();
                if u.len() <= MAX_URL
                    && u.get(..8)
                        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
                    && u.len() > 8
                    && u.bytes().all(|b| b.is_ascii_graphic())
                {
                    usable.push(Rua::Https(u));
                } else {
                    unusable.push((u.chars().take(MAX_URL).collect(), "not a usable address"));
                }
            }
        }
    }
    Ok((usable, unusable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_with_mailto_and_https() {
        let (ok, bad) = parse(&[
            "v=spf1 -all".into(),
            "v=TLSRPTv1; rua=mailto:tls@A.Test,https://r.a.test/v1/report".into(),
        ])
        .unwrap();
        assert_eq!(
            ok,
            [
                Rua::Mail("tls@a.test".into()),
                Rua::Https("https://r.a.test/v1/report".into())
            ]
        );
        assert!(bad.is_empty());
    }

    #[test]
    fn none_or_several_records_mean_no_report() {
        assert_eq!(parse(&[]), Err(NoRecord::None));
        assert_eq!(parse(&["v=STSv1; id=1".into()]), Err(NoRecord::None));
        let two = "v=TLSRPTv1; rua=mailto:a@b.test".to_string();
        assert_eq!(parse(&[two.clone(), two]), Err(NoRecord::Several));
        assert_eq!(parse(&["v=TLSRPTv1;".into()]), Err(NoRecord::Syntax));
    }

    #[test]
    fn unusable_addresses_are_set_aside() {
        let (ok, bad) = parse(&[
            "v=TLSRPTv1; rua=mailto:nobody,mailto:x@y.test?subject=hi,https://ok.test/r".into(),
        ])
        .unwrap();
        assert_eq!(ok, [Rua::Https("https://ok.test/r".into())]);
        assert_eq!(bad.len(), 2, "{bad:?}");
    }
}
