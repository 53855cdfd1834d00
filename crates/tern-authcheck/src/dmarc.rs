//! DMARC (RFC 7489), sans I/O: the record's grammar, identifier alignment with the
//! Public Suffix List, which record applies (`p` or `sp`) and `pct` sampling.
//!
//! mail-auth 0.13 follows DMARCbis (tree walk, no `pct`); Tern follows RFC 7489, so the
//! record is parsed and judged here and only the TXT lookups are done by the verifier.
//!
//! Invariants: a record must start with `v=DMARC1`; unknown tags are ignored; an invalid
//! `pct` is 100, an invalid `sp` is `p`; a record without a valid `p` is used as `p=none`
//! only when it has a `rua` (RFC 7489 §6.6.3); more than one DMARC record at a name is no
//! record. At most [`MAX_RUA`] report URIs are kept.

use tern_reports::{Alignment, Policy};

use crate::psl::SuffixList;

/// Most `rua` URIs kept from one record.
pub const MAX_RUA: usize = 4;

/// A DMARC record (RFC 7489 §6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcRecord {
    /// `p`
    pub p: Policy,
    /// `sp` (`p` when absent)
    pub sp: Policy,
    /// `pct` (100 when absent)
    pub pct: u8,
    /// `adkim`
    pub adkim: Alignment,
    /// `aspf`
    pub aspf: Alignment,
    /// `rua` URIs as published (at most [`MAX_RUA`]).
    pub rua: Vec<String>,
    /// `fo` as published (`"0"` when absent).
    pub fo: String,
}

/// Parses one TXT string; `None` when it is not a DMARC record.
pub fn parse_record(txt: &str) -> Option<DmarcRecord> {
    let mut tags = txt.split(';').map(str::trim).filter(|t| !t.is_empty());
    let first = tags.next()?;
    let (k, v) = first.split_once('=')?;
    if !k.trim().eq_ignore_ascii_case("v") || v.trim() != "DMARC1" {
        return None;
    }
    let mut p = None;
    let mut sp = None;
    let mut pct = 100u8;
    let mut adkim = Alignment::Relaxed;
    let mut aspf = Alignment::Relaxed;
    let mut rua = Vec::new();
    let mut fo = "0".to_string();
    for tag in tags {
        let Some((k, v)) = tag.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "p" => p = policy(v),
            "sp" => sp = policy(v),
            "pct" => pct = v.parse::<u8>().ok().filter(|n| *n <= 100).unwrap_or(100),
            "adkim" => adkim = alignment(v),
            "aspf" => aspf = alignment(v),
            "rua" => {
                rua = v
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .take(MAX_RUA)
                    .map(str::to_string)
                    .collect();
            }
            "fo" => fo = v.chars().take(16).collect(),
            _ => {}
        }
    }
    let p = match p {
        Some(p) => p,
        None if !rua.is_empty() => Policy::None,
        None => return None,
    };
    Some(DmarcRecord {
        p,
        sp: sp.unwrap_or(p),
        pct,
        adkim,
        aspf,
        rua,
        fo,
    })
}

/// The DMARC record among the TXT strings at `_dmarc.<name>`: exactly one must parse.
pub fn select_record<S: AsRef<str>>(txts: &[S]) -> Option<DmarcRecord> {
    let mut found = txts.iter().filter_map(|t| parse_record(t.as_ref()));
    let first = found.next()?;
    if found.next().is_some() {
        return None;
    }
    Some(first)
}

fn policy(v: &str) -> Option<Policy> {
    match v.to_ascii_lowercase().as_str() {
        "none" => Some(Policy::None),
        "quarantine" => Some(Policy::Quarantine),
        "reject" => Some(Policy::Reject),
        _ => None,
    }
}

fn alignment(v: &str) -> Alignment {
    if v.eq_ignore_ascii_case("s") {
        Alignment::Strict
    } else {
        Alignment::Relaxed
    }
}

/// Whether `id` (a DKIM `d=` or the MAIL FROM domain) is aligned with the From domain.
pub fn aligned(psl: &SuffixList, id: &str, from: &str, mode: Alignment) -> bool {
    let id = id.trim_end_matches('.').to_ascii_lowercase();
    let from = from.trim_end_matches('.').to_ascii_lowercase();
    match mode {
        Alignment::Strict => id == from,
        Alignment::Relaxed => {
            id == from || psl.organizational_domain(&id) == psl.organizational_domain(&from)
        }
    }
}

/// What one From domain's DMARC check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmarcStatus {
    /// No record: DMARC does not apply.
    None,
    /// An aligned identifier passed.
    Pass,
    /// None passed aligned.
    Fail,
    /// The record could not be fetched (DNS), or an aligned identifier had a temporary
    /// error and none passed.
    TempError,
}

/// The record found and where (RFC 7489 §6.6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The domain whose `_dmarc` record applied (the From domain or its organisational
    /// domain).
    pub domain: String,
    /// The record.
    pub record: DmarcRecord,
    /// True when it is the organisational domain's record (so `sp` applies).
    pub from_org: bool,
}

/// The inputs of one judgement: identifiers and their results.
#[derive(Debug, Clone)]
pub struct Identifiers<'a> {
    /// The From domain.
    pub from: &'a str,
    /// The SPF-checked domain and whether SPF passed / had a temporary error.
    pub spf_domain: &'a str,
    /// SPF passed.
    pub spf_pass: bool,
    /// SPF had a temporary error.
    pub spf_temperror: bool,
    /// `d=` of every DKIM signature that passed.
    pub dkim_pass: &'a [String],
    /// `d=` of every DKIM signature with a temporary error.
    pub dkim_temperror: &'a [String],
}

/// The judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The result.
    pub status: DmarcStatus,
    /// SPF aligned and passed.
    pub spf_aligned: bool,
    /// DKIM aligned and passed.
    pub dkim_aligned: bool,
    /// The published policy that applies (`p` or `sp`).
    pub published: Policy,
    /// The policy to apply after `pct` sampling.
    pub applied: Policy,
    /// True when `pct` sampling lowered the policy.
    pub sampled_out: bool,
}

/// Judges a message against `found` (RFC 7489 §6.6.2 and §6.6.4). `roll` is a number in
/// `0..100` drawn per message: the policy applies when `roll < pct`.
pub fn judge(psl: &SuffixList, found: &Found, ids: &Identifiers<'_>, roll: u8) -> Judgement {
    let r = &found.record;
    let spf_aligned = ids.spf_pass && aligned(psl, ids.spf_domain, ids.from, r.aspf);
    let dkim_aligned = ids
        .dkim_pass
        .iter()
        .any(|d| aligned(psl, d, ids.from, r.adkim));
    let temp = (ids.spf_temperror && aligned(psl, ids.spf_domain, ids.from, r.aspf))
        || ids
            .dkim_temperror
            .iter()
            .any(|d| aligned(psl, d, ids.from, r.adkim));
    let published = if found.from_org { r.sp } else { r.p };
    let status = if spf_aligned || dkim_aligned {
        DmarcStatus::Pass
    } else if temp {
        DmarcStatus::TempError
    } else {
        DmarcStatus::Fail
    };
    let (applied, sampled_out) = if status != DmarcStatus::Fail {
        (Policy::None, false)
    } else if roll < r.pct {
        (published, false)
    } else {
        // Not sampled: one step lower (RFC 7489 §6.6.4).
        let lower = match published {
            Policy::Reject => Policy::Quarantine,
            Policy::Quarantine | Policy::None => Policy::None,
        };
        (lower, lower != published)
    };
    Judgement {
        status,
        spf_aligned,
        dkim_aligned,
        published,
        applied,
        sampled_out,
    }
}

/// The policy as RFC 7489 writes it.
pub fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::None => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(txt: &str) -> DmarcRecord {
        parse_record(txt).unwrap_or_else(|| panic!("{txt} should parse"))
    }

    #[test]
    fn records_parse_as_rfc_7489_says() {
        let r = rec(
            "v=DMARC1; p=reject; sp=quarantine; pct=30; adkim=s; rua=mailto:a@x.org,mailto:b@y.org; fo=1",
        );
        assert_eq!((r.p, r.sp, r.pct), (Policy::Reject, Policy::Quarantine, 30));
        assert_eq!((r.adkim, r.aspf), (Alignment::Strict, Alignment::Relaxed));
        assert_eq!(r.rua, ["mailto:a@x.org", "mailto:b@y.org"]);
        assert_eq!(r.fo, "1");
        let r = rec("v=DMARC1;p=quarantine");
        assert_eq!((r.sp, r.pct, r.fo.as_str()), (Policy::Quarantine, 100, "0"));
        // Invalid pct is 100; p missing with rua is none; missing without rua is no record.
        assert_eq!(rec("v=DMARC1; p=none; pct=250").pct, 100);
        assert_eq!(rec("v=DMARC1; rua=mailto:r@x.org").p, Policy::None);
        assert_eq!(parse_record("v=DMARC1; adkim=s"), None);
        assert_eq!(parse_record("p=reject; v=DMARC1"), None);
        assert_eq!(parse_record("v=spf1 -all"), None);
        assert_eq!(parse_record(""), None);
    }

    #[test]
    fn two_records_are_no_record() {
        assert!(select_record(&["v=spf1 -all", "v=DMARC1; p=reject"]).is_some());
        assert!(select_record(&["v=DMARC1; p=reject", "v=DMARC1; p=none"]).is_none());
    }

    fn found(txt: &str, from_org: bool) -> Found {
        Found {
            domain: "example.com".into(),
            record: rec(txt),
            from_org,
        }
    }

    fn ids<'a>(from: &'a str, spf: &'a str, spf_pass: bool, dkim: &'a [String]) -> Identifiers<'a> {
        Identifiers {
            from,
            spf_domain: spf,
            spf_pass,
            spf_temperror: false,
            dkim_pass: dkim,
            dkim_temperror: &[],
        }
    }

    #[test]
    fn alignment_relaxed_and_strict() {
        let psl = SuffixList::builtin();
        let relaxed = found("v=DMARC1; p=reject", false);
        let strict = found("v=DMARC1; p=reject; aspf=s; adkim=s", false);
        let sub = ["mail.example.com".to_string()];
        let j = judge(
            &psl,
            &relaxed,
            &ids("example.com", "bounce.example.com", true, &[]),
            0,
        );
        assert!(j.spf_aligned && j.status == DmarcStatus::Pass);
        let j = judge(
            &psl,
            &strict,
            &ids("example.com", "bounce.example.com", true, &sub),
            0,
        );
        assert_eq!((j.status, j.applied), (DmarcStatus::Fail, Policy::Reject));
        let j = judge(&psl, &relaxed, &ids("example.com", "x.org", true, &sub), 0);
        assert!(j.dkim_aligned && !j.spf_aligned);
        // Sibling under a public suffix is not aligned.
        let j = judge(
            &psl,
            &relaxed,
            &ids("example.co.uk", "other.co.uk", true, &[]),
            0,
        );
        assert_eq!(j.status, DmarcStatus::Fail);
    }

    #[test]
    fn sp_applies_to_the_organisational_record_and_pct_samples() {
        let psl = SuffixList::builtin();
        let org = found("v=DMARC1; p=reject; sp=quarantine; pct=50", true);
        let fail = ids("a.example.com", "evil.org", true, &[]);
        let j = judge(&psl, &org, &fail, 10);
        assert_eq!(
            (j.published, j.applied, j.sampled_out),
            (Policy::Quarantine, Policy::Quarantine, false)
        );
        let j = judge(&psl, &org, &fail, 50);
        assert_eq!((j.applied, j.sampled_out), (Policy::None, true));
        let own = found("v=DMARC1; p=reject; pct=0", false);
        let j = judge(&psl, &own, &fail, 0);
        assert_eq!((j.applied, j.sampled_out), (Policy::Quarantine, true));
    }

    #[test]
    fn an_aligned_temporary_error_is_temperror() {
        let psl = SuffixList::builtin();
        let f = found("v=DMARC1; p=reject", false);
        let temp = ["example.com".to_string()];
        let i = Identifiers {
            dkim_temperror: &temp,
            ..ids("example.com", "evil.org", false, &[])
        };
        let j = judge(&psl, &f, &i, 0);
        assert_eq!(
            (j.status, j.applied),
            (DmarcStatus::TempError, Policy::None)
        );
    }
}
