//! The aggregate report document, RFC 7489 Appendix C (sans-I/O).
//!
//! Written by hand rather than through an XML library: the document is one fixed shape
//! of about thirty elements, every text node goes through [`escape`], and
//! [`crate::aggregate::clean`] has already removed the characters XML 1.0 cannot carry.
//! (mail-auth's `report` feature writes the DMARCbis draft's namespace and fields, not
//! RFC 7489's, and would add `zip` and `quick-xml` to the build.)
//!
//! The root element carries no namespace, as the reports of the large receivers do
//! and as report parsers expect; `<version>1.0</version>` comes first.

use std::fmt::Write;

use crate::aggregate::{DomainData, Period, RowKey};
use crate::{AlignedResult, Alignment, Disposition, Policy};

/// Who sends the report (`report_metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    /// `org_name`
    pub org_name: String,
    /// `email`
    pub email: String,
    /// `extra_contact_info` (left out when empty)
    pub extra_contact_info: String,
}

/// Text escaped for XML content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn policy(p: Policy) -> &'static str {
    match p {
        Policy::None => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
    }
}

fn alignment(a: Alignment) -> &'static str {
    match a {
        Alignment::Relaxed => "r",
        Alignment::Strict => "s",
    }
}

fn disposition(d: Disposition) -> &'static str {
    match d {
        Disposition::None => "none",
        Disposition::Quarantine => "quarantine",
        Disposition::Reject => "reject",
    }
}

fn aligned(a: AlignedResult) -> &'static str {
    match a {
        AlignedResult::Pass => "pass",
        AlignedResult::Fail => "fail",
    }
}

/// The report ID of `domain`'s report for the period beginning at `begin`: the same
/// for the same report, so a copy queued twice (the window in docs/REPORTS.md) carries
/// the ID the receiver already has.
pub fn report_id(domain: &str, begin: u64, end: u64, submitter: &str) -> String {
    report_id_salted(domain, begin, end, submitter, "")
}

/// [`report_id`] made distinct by `salt` (empty: the same id). In a cluster, a merged
/// report and each node's own fallback report of one domain and period carry
/// different salts, so receivers never take one for a copy of another.
pub fn report_id_salted(domain: &str, begin: u64, end: u64, submitter: &str, salt: &str) -> String {
    let text = if salt.is_empty() {
        format!("{domain}\n{begin}\n{end}\n{submitter}")
    } else {
        format!("{domain}\n{begin}\n{end}\n{submitter}\n{salt}")
    };
    let digest = crc32c::crc32c(text.as_bytes());
    format!("{begin}.{end}.{digest:08x}@{}", escape_id(submitter))
}

fn escape_id(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect()
}

fn row(xml: &mut String, key: &RowKey, count: u64) {
    let _ = write!(
        xml,
        "  <record>\n    <row>\n      <source_ip>{}</source_ip>\n      <count>{count}</count>\n      <policy_evaluated>\n        <disposition>{}</disposition>\n        <dkim>{}</dkim>\n        <spf>{}</spf>\n",
        key.source_ip,
        disposition(key.disposition),
        aligned(key.dkim_aligned),
        aligned(key.spf_aligned),
    );
    for reason in &key.overrides {
        let _ = write!(
            xml,
            "        <reason>\n          <type>{}</type>\n        </reason>\n",
            escape(reason)
        );
    }
    let _ = write!(
        xml,
        "      </policy_evaluated>\n    </row>\n    <identifiers>\n      <envelope_from>{}</envelope_from>\n      <header_from>{}</header_from>\n    </identifiers>\n    <auth_results>\n",
        escape(&key.envelope_from),
        escape(&key.header_from),
    );
    for d in &key.dkim {
        let _ = write!(
            xml,
            "      <dkim>\n        <domain>{}</domain>\n",
            escape(&d.domain)
        );
        if !d.selector.is_empty() {
            let _ = writeln!(xml, "        <selector>{}</selector>", escape(&d.selector));
        }
        let _ = write!(
            xml,
            "        <result>{}</result>\n      </dkim>\n",
            escape(&d.result)
        );
    }
    let _ = write!(
        xml,
        "      <spf>\n        <domain>{}</domain>\n        <scope>{}</scope>\n        <result>{}</result>\n      </spf>\n    </auth_results>\n  </record>\n",
        escape(&key.spf.domain),
        if key.spf.helo { "helo" } else { "mfrom" },
        escape(&key.spf.result),
    );
}

/// The XML of `domain`'s report for `period`.
pub fn report_xml(
    submitter: &Submitter,
    id: &str,
    period: &Period,
    domain: &str,
    data: &DomainData,
) -> String {
    let mut xml = String::with_capacity(1024 + data.rows.len() * 700);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n  <version>1.0</version>\n  <report_metadata>\n");
    let _ = writeln!(
        xml,
        "    <org_name>{}</org_name>\n    <email>{}</email>",
        escape(&submitter.org_name),
        escape(&submitter.email)
    );
    if !submitter.extra_contact_info.is_empty() {
        let _ = writeln!(
            xml,
            "    <extra_contact_info>{}</extra_contact_info>",
            escape(&submitter.extra_contact_info)
        );
    }
    let _ = write!(
        xml,
        "    <report_id>{}</report_id>\n    <date_range>\n      <begin>{}</begin>\n      <end>{}</end>\n    </date_range>\n",
        escape(id),
        period.begin,
        period.end.saturating_sub(1).max(period.begin),
    );
    if data.dropped > 0 {
        let _ = writeln!(
            xml,
            "    <error>{} messages are not in this report: the reporter's row limit was reached</error>",
            data.dropped
        );
    }
    let p = &data.policy;
    let _ = write!(
        xml,
        "  </report_metadata>\n  <policy_published>\n    <domain>{}</domain>\n    <adkim>{}</adkim>\n    <aspf>{}</aspf>\n    <p>{}</p>\n    <sp>{}</sp>\n    <pct>{}</pct>\n    <fo>{}</fo>\n  </policy_published>\n",
        escape(domain),
        alignment(p.adkim),
        alignment(p.aspf),
        policy(p.p),
        policy(p.sp),
        p.pct,
        escape(if p.fo.is_empty() { "0" } else { &p.fo }),
    );
    for (key, count) in &data.rows {
        row(&mut xml, key, *count);
    }
    xml.push_str("</feedback>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::obs;
    use crate::aggregate::{Caps, Dmarc, clean};
    use crate::kind::Kind;

    pub(crate) fn sample() -> (Period, Submitter) {
        let caps = Caps {
            max_domains: 10,
            max_rows: 100,
        };
        let mut p = Period::new(86_400, 2 * 86_400);
        let mut o = obs("a.test", "192.0.2.1", "pass");
        o.overrides = vec!["forwarded".into()];
        o.header_from = "a.test<&>".into();
        p.add(Dmarc::split(clean(o).unwrap()), caps);
        p.add(
            Dmarc::split(clean(obs("a.test", "2001:db8::1", "fail")).unwrap()),
            caps,
        );
        p.add(
            Dmarc::split(clean(obs("a.test", "2001:db8::1", "fail")).unwrap()),
            caps,
        );
        let mut helo = obs("a.test", "192.0.2.7", "pass");
        helo.dkim.clear();
        helo.spf.helo = true;
        helo.envelope_from.clear();
        p.add(Dmarc::split(clean(helo).unwrap()), caps);
        let s = Submitter {
            org_name: "Tern & Co".into(),
            email: "dmarc@mx.example".into(),
            extra_contact_info: String::new(),
        };
        (p, s)
    }

    #[test]
    fn the_document_has_every_row_with_its_count() {
        let (p, s) = sample();
        let data = &p.domains["a.test"];
        let id = report_id("a.test", p.begin, p.end, "Tern & Co");
        let xml = report_xml(&s, &id, &p, "a.test", data);
        assert!(xml.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n  <version>1.0</version>"
        ));
        assert_eq!(xml.matches("<record>").count(), 3);
        assert!(xml.contains("<source_ip>2001:db8::1</source_ip>\n      <count>2</count>"));
        assert!(xml.contains("<org_name>Tern &amp; Co</org_name>"));
        assert!(xml.contains("<header_from>a.test&lt;&amp;&gt;</header_from>"));
        assert!(xml.contains("<reason>\n          <type>forwarded</type>"));
        assert!(xml.contains("<scope>helo</scope>"));
        assert!(xml.contains("<begin>86400</begin>\n      <end>172799</end>"));
        assert!(!xml.contains("<error>"));
        assert!(xml.ends_with("</feedback>\n"));
    }

    #[test]
    fn rows_over_the_cap_are_stated_in_an_error() {
        let (p, s) = sample();
        let mut data = p.domains["a.test"].clone();
        data.dropped = 5;
        let xml = report_xml(&s, "x", &p, "a.test", &data);
        assert!(xml.contains("<error>5 messages are not in this report"));
    }

    /// Validates `xml` against `schema/rfc7489-aggregate.xsd` with Python's xmlschema
    /// (an independent validator); the validator's complaint when it fails.
    fn validate(xml: &str) -> Result<(), String> {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};
        const SCRIPT: &str = "import sys, xmlschema\n\
            xmlschema.XMLSchema(sys.argv[1]).validate(sys.stdin.read())\n";
        let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/rfc7489-aggregate.xsd");
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT, schema])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3: {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(xml.as_bytes())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                assert!(
                    !err.contains("No module named"),
                    "python3 with xmlschema is needed: {err}"
                );
                return if status.success() { Ok(()) } else { Err(err) };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("xmlschema took more than 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn every_element_tern_writes_validates_against_the_schema() {
        let (mut p, mut s) = sample();
        let caps = Caps {
            max_domains: 10,
            max_rows: 100,
        };
        // The optional elements too: extra_contact_info, error, each override reason,
        // a DKIM result without selector; IPv6 written as RFC 5952 text (compressed).
        s.extra_contact_info = "https://mx.example/dmarc".into();
        let mut o = obs("a.test", "192.0.2.9", "temperror");
        o.overrides = [
            "forwarded",
            "sampled_out",
            "trusted_forwarder",
            "mailing_list",
            "local_policy",
            "other",
        ]
        .map(String::from)
        .to_vec();
        if let Some(d) = o.dkim.first_mut() {
            d.selector.clear();
        }
        p.add(Dmarc::split(clean(o).unwrap()), caps);
        let mut data = p.domains["a.test"].clone();
        data.dropped = 5;
        let xml = report_xml(&s, "x@mx.example", &p, "a.test", &data);
        assert!(xml.contains("<source_ip>2001:db8::1</source_ip>"), "{xml}");
        assert!(xml.contains("<extra_contact_info>") && xml.contains("<error>"));
        validate(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));

        // The validator is real: a word outside the schema's and an address that is
        // none fail.
        let bad = xml.replacen("<disposition>none", "<disposition>nothing", 1);
        assert!(validate(&bad).is_err(), "{bad}");
        let bad = xml.replacen("<source_ip>192.0.2.1", "<source_ip>mx.example", 1);
        assert!(validate(&bad).is_err(), "{bad}");
    }

    #[test]
    fn report_ids_are_stable_per_report_and_differ_between_reports() {
        let a = report_id("a.test", 1, 2, "mx.example");
        assert_eq!(a, report_id("a.test", 1, 2, "mx.example"));
        assert_ne!(a, report_id("b.test", 1, 2, "mx.example"));
        assert_ne!(a, report_id("a.test", 1, 3, "mx.example"));
        assert!(a.ends_with("@mx.example"));
    }
}
