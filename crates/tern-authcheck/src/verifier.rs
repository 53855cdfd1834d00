//! The checks with I/O: SPF, DKIM, ARC through mail-auth, DMARC's TXT lookups, over a
//! hickory resolver built from Tern's `[dns]` settings and bounded TTL caches; the
//! process-wide memory budget of messages held for verification.
//!
//! Invariants:
//! - Every check ends by its deadline: SPF by the one given when it starts (MAIL FROM +
//!   `timeout`), the message checks by the end of the data + `timeout`. A check cut off
//!   is `temperror` ("DNS timeout" in the comment). mail-auth itself bounds SPF to 10
//!   DNS-querying terms (RFC 7208 §4.6.4).
//! - At most `max_signatures` DKIM signatures are verified (the first ones in the
//!   message); the others are not reported.
//! - RSA keys under 1024 bits fail (ring's verification algorithms start at 1024 bits).
//! - A signature with `l=` verifies the body up to that length, as RFC 6376 §3.4.5
//!   says; a passing one with content after its `l=` gets a comment saying so.
//! - A message not verified in memory (over `max_size` or the budget) is judged on SPF
//!   alone: DMARC `pass` when SPF passes aligned, otherwise `none` with a comment (never
//!   `fail`, so Tern never refuses for its own limit).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::rr::RData;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MX, MessageAuthenticator, Parameters, RecordSet, SpfResult,
    Txt,
};
use tern_reports::{DmarcObservation, Policy};

use crate::cache::{Counting, TtlCache, VoidLedger};
use crate::config::{Forwarder, VerifyConfig, forwarder};
use crate::dmarc::{self, DmarcStatus, Found, Identifiers};
use crate::policy::{self, Decision, Standing};
use crate::psl::SuffixList;
use crate::results::{
    ArcCheck, AuthResult, DkimCheck, DmarcCheck, SpfCheck, Verdicts, authserv_id_of, remove_fields,
};

/// The header field Tern adds to quarantined mail in `header` mode (and removes from
/// arriving mail).
pub const QUARANTINE_FIELD: &str = "X-Tern-Quarantine";

/// Most distinct From domains judged by DMARC in one message.
const MAX_FROM_DOMAINS: usize = 4;

type Caches = (
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<std::net::Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<std::net::Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
);

/// A DMARC TXT lookup's outcome, cached by its TTL.
#[derive(Clone)]
enum DmarcLookup {
    Found(dmarc::DmarcRecord),
    NotFound,
}

/// Most lookups that find nothing one SPF evaluation may make (RFC 7208 §4.6.4).
pub const MAX_VOID_LOOKUPS: usize = 2;

/// The verifier: configuration, resolver, caches, the Public Suffix List and the budget.
pub struct Verifier {
    cfg: VerifyConfig,
    authserv_id: String,
    auth: MessageAuthenticator,
    caches: Caches,
    dmarc_cache: TtlCache<Box<str>, DmarcLookup>,
    psl: SuffixList,
    forwarders: Vec<Forwarder>,
    exceptions: Vec<String>,
    budget: Arc<Budget>,
}

/// Who sent the message and how.
#[derive(Debug, Clone)]
pub struct Client<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// Its verified reverse-DNS name, if any.
    pub name: Option<&'a str>,
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// MAIL FROM (empty for the null sender).
    pub mail_from: &'a str,
}

/// Everything decided for one message.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The results.
    pub verdicts: Verdicts,
    /// The decision.
    pub decision: Decision,
    /// The Authentication-Results field (CRLF-terminated).
    pub header: String,
    /// The `X-Tern-Quarantine` field to add (quarantine in `header` mode), if any.
    pub quarantine_field: Option<String>,
    /// One observation per DMARC-checked domain whose record has `rua=`.
    pub observations: Vec<DmarcObservation>,
    /// The envelope's quarantine mark for the queue (`hold`, `route:<key>`), when the
    /// message is quarantined in those modes.
    pub envelope_mark: Option<String>,
}

/// Why a verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// The Public Suffix List file.
    #[error(transparent)]
    Psl(#[from] crate::psl::PslError),
}

impl Verifier {
    /// A verifier for `cfg`, over `resolver` (built from `[dns]` by the binary).
    /// `hostname` is the authserv-id when `cfg.authserv_id` is unset.
    pub fn new(
        cfg: VerifyConfig,
        hostname: &str,
        resolver: TokioResolver,
    ) -> Result<Verifier, VerifierError> {
        let psl = match &cfg.public_suffix_list {
            Some(path) => SuffixList::load(path)?,
            None => SuffixList::builtin(),
        };
        let n = cfg.cache_entries;
        Ok(Verifier {
            authserv_id: cfg
                .authserv_id
                .clone()
                .unwrap_or_else(|| hostname.to_string()),
            auth: MessageAuthenticator(resolver),
            caches: (
                TtlCache::new(n),
                TtlCache::new(n),
                TtlCache::new(n),
                TtlCache::new(n),
                TtlCache::new(n),
            ),
            dmarc_cache: TtlCache::new(n),
            psl,
            forwarders: cfg
                .trusted_forwarders
                .iter()
                .filter_map(|f| forwarder(f))
                .collect(),
            exceptions: cfg
                .exceptions
                .iter()
                .map(|e| e.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            budget: Arc::new(Budget::new(cfg.memory_budget)),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VerifyConfig {
        &self.cfg
    }

    /// The authserv-id.
    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// The process-wide memory budget.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// True when `client` is a trusted forwarder.
    pub fn trusted_forwarder(&self, ip: IpAddr, name: Option<&str>) -> bool {
        self.forwarders.iter().any(|f| match f {
            Forwarder::Network(n) => n.contains(&ip),
            Forwarder::Name(pattern) => name.is_some_and(|n| domain_matches(pattern, n)),
        })
    }

    fn exception(&self, domain: &str) -> bool {
        !domain.is_empty() && self.exceptions.iter().any(|e| domain_matches(e, domain))
    }

    /// SPF of MAIL FROM (of HELO when MAIL FROM is null), by `deadline`.
    pub async fn spf(
        &self,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        deadline: Instant,
    ) -> SpfCheck {
        let helo_l = helo.trim_end_matches('.').to_ascii_lowercase();
        let (params, domain, is_helo) = if mail_from.is_empty() {
            (
                SpfParameters::verify_ehlo(ip, &helo_l, &self.authserv_id),
                helo_l.clone(),
                true,
            )
        } else {
            let domain = mail_from
                .rsplit_once('@')
                .map_or(helo_l.as_str(), |(_, d)| d)
                .trim_end_matches('.')
                .to_ascii_lowercase();
            (
                SpfParameters::verify_mail_from(ip, &helo_l, &self.authserv_id, mail_from),
                domain,
                false,
            )
        };
        let c = &self.caches;
        // RFC 7208 §4.6.4: more than MAX_VOID_LOOKUPS lookups that find nothing make the
        // result permerror; mail-auth does not count them, its caches' view does.
        let ledger = VoidLedger::default();
        let (txt, mx, ip4, ip6, ptr) = (
            Counting::new(&c.0, &ledger),
            Counting::new(&c.1, &ledger),
            Counting::new(&c.2, &ledger),
            Counting::new(&c.3, &ledger),
            Counting::new(&c.4, &ledger),
        );
        let params = Parameters::new(params)
            .with_txt_cache(&txt)
            .with_mx_cache(&mx)
            .with_ipv4_cache(&ip4)
            .with_ipv6_cache(&ip6)
            .with_ptr_cache(&ptr);
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.auth.verify_spf(params)).await {
            Ok(out)
                if ledger.count() > MAX_VOID_LOOKUPS
                    && matches!(
                        out.result(),
                        SpfResult::Pass
                            | SpfResult::Fail
                            | SpfResult::SoftFail
                            | SpfResult::Neutral
                    ) =>
            {
                SpfCheck {
                    result: AuthResult::PermError,
                    domain,
                    helo: is_helo,
                    comment: Some(format!(
                        "more than {MAX_VOID_LOOKUPS} void lookups, RFC 7208 4.6.4"
                    )),
                }
            }
            Ok(out) => SpfCheck {
                result: match out.result() {
                    SpfResult::Pass => AuthResult::Pass,
                    SpfResult::Fail => AuthResult::Fail,
                    SpfResult::SoftFail => AuthResult::SoftFail,
                    SpfResult::Neutral => AuthResult::Neutral,
                    SpfResult::TempError => AuthResult::TempError,
                    SpfResult::PermError => AuthResult::PermError,
                    SpfResult::None => AuthResult::None,
                },
                domain,
                helo: is_helo,
                comment: None,
            },
            Err(_) => SpfCheck {
                result: AuthResult::TempError,
                domain,
                helo: is_helo,
                comment: Some("DNS timeout".into()),
            },
        }
    }

    /// Verifies `message` (as received, CRLF) and decides, everything by `deadline`:
    /// DKIM and ARC run while `spf` (the SPF check started at MAIL FROM) is awaited, then
    /// DMARC. `message = None`: not held in memory (`why_not` says why): judged on SPF
    /// alone.
    pub async fn verify(
        &self,
        message: Option<&[u8]>,
        why_not: &str,
        client: &Client<'_>,
        spf: impl std::future::Future<Output = Option<SpfCheck>>,
        deadline: Instant,
    ) -> Outcome {
        let mut v = Verdicts::default();
        let parsed = message.and_then(AuthenticatedMessage::parse);
        let mut dkim_pass: Vec<String> = Vec::new();
        let mut dkim_temp: Vec<String> = Vec::new();
        let from_domains: Vec<String>;
        let bounded = |f| tokio::time::timeout_at(deadline.into(), f);
        match &parsed {
            Some(msg) => {
                from_domains = distinct_domains(&msg.from);
                let dkim = async {
                    if !self.cfg.dkim {
                        return None;
                    }
                    Some(
                        tokio::time::timeout_at(deadline.into(), self.dkim(msg))
                            .await
                            .unwrap_or_else(|_| timed_out_signatures(msg, self.cfg.max_signatures)),
                    )
                };
                let arc = async {
                    if !self.cfg.arc {
                        return None;
                    }
                    Some(
                        tokio::time::timeout_at(deadline.into(), self.arc(msg))
                            .await
                            .unwrap_or_else(|_| ArcCheck {
                                result: AuthResult::Fail,
                                comment: Some("DNS timeout".into()),
                            }),
                    )
                };
                let (spf, dkim, arc) = tokio::join!(bounded(spf), dkim, arc);
                v.spf = spf.ok().flatten();
                if let Some(checks) = &dkim {
                    for d in checks {
                        match d.result {
                            AuthResult::Pass => dkim_pass.push(d.domain.clone()),
                            AuthResult::TempError => dkim_temp.push(d.domain.clone()),
                            _ => {}
                        }
                    }
                }
                v.dkim = dkim;
                v.arc = arc;
            }
            None => {
                from_domains = Vec::new();
                v.spf = bounded(spf).await.ok().flatten();
                let why = if message.is_some() {
                    "message could not be parsed"
                } else {
                    why_not
                };
                if self.cfg.dkim {
                    v.dkim = Some(Vec::new());
                    v.dkim_skipped = Some(why.to_string());
                }
                if self.cfg.arc {
                    v.arc = Some(ArcCheck {
                        result: AuthResult::None,
                        comment: Some(why.to_string()),
                    });
                }
            }
        }
        if !self.cfg.spf {
            v.spf = None;
        }
        let in_memory = parsed.is_some();
        let mut observations = Vec::new();
        let mut sampled_out = false;
        if self.cfg.dmarc {
            let left = deadline.saturating_duration_since(Instant::now());
            let judged = tokio::time::timeout(
                left,
                self.dmarc(&from_domains, client, &v, &dkim_pass, &dkim_temp, in_memory),
            )
            .await
            .unwrap_or_else(|_| {
                vec![(
                    DmarcCheck {
                        result: AuthResult::TempError,
                        from: from_domains.first().cloned().unwrap_or_default(),
                        published: None,
                        applied: Policy::None,
                        policy_domain: from_domains.first().cloned().unwrap_or_default(),
                        comment: Some("DNS timeout".into()),
                    },
                    None,
                )]
            });
            // The worst judgement is the message's.
            let mut worst: Option<(DmarcCheck, Option<(Found, dmarc::Judgement)>)> = None;
            for j in judged {
                if worst
                    .as_ref()
                    .is_none_or(|w| severity(&j.0) > severity(&w.0))
                {
                    worst = Some(j.clone());
                }
                if let (check, Some((found, judgement))) = j
                    && !found.record.rua.is_empty()
                {
                    observations.push((check, found, judgement));
                }
            }
            if let Some((check, detail)) = worst {
                sampled_out = detail.as_ref().is_some_and(|(_, j)| j.sampled_out);
                v.dmarc = Some(check);
            }
        }
        let policy_domain = v.dmarc.as_ref().map_or("", |d| d.policy_domain.as_str());
        let from_domain = v.dmarc.as_ref().map_or("", |d| d.from.as_str());
        let standing = Standing {
            trusted_forwarder: self.trusted_forwarder(client.ip, client.name),
            exception: self.exception(from_domain) || self.exception(policy_domain),
            sampled_out,
        };
        let decision = policy::decide(&v, standing, &self.cfg);
        let disposition = match decision.action {
            policy::Action::Reject { .. } => tern_reports::Disposition::Reject,
            policy::Action::Quarantine(_) => tern_reports::Disposition::Quarantine,
            _ => tern_reports::Disposition::None,
        };
        let quarantine_field = match decision.action {
            policy::Action::Quarantine(_) => Some(format!(
                "{QUARANTINE_FIELD}: dmarc; policy.domain={}\r\n",
                sanitize_token(policy_domain)
            )),
            _ => None,
        };
        let envelope_mark = match decision.action {
            policy::Action::Quarantine(crate::QuarantineMode::Hold) => Some("hold".to_string()),
            policy::Action::Quarantine(crate::QuarantineMode::Route) => self
                .cfg
                .dmarc_quarantine_route
                .as_ref()
                .map(|k| format!("route:{k}")),
            _ => None,
        };
        let observations = observations
            .into_iter()
            .map(|(check, found, judgement)| {
                self.observation(
                    client,
                    &v,
                    &check,
                    &found,
                    &judgement,
                    disposition,
                    &decision,
                )
            })
            .collect();
        Outcome {
            header: v.header(&self.authserv_id),
            verdicts: v,
            decision,
            quarantine_field,
            observations,
            envelope_mark,
        }
    }

    async fn dkim(&self, msg: &AuthenticatedMessage<'_>) -> Vec<DkimCheck> {
        let mut limited = msg.clone();
        limited.dkim_headers.truncate(self.cfg.max_signatures);
        let c = &self.caches;
        let params = Parameters::new(&limited)
            .with_txt_cache(&c.0)
            .with_mx_cache(&c.1)
            .with_ipv4_cache(&c.2)
            .with_ipv6_cache(&c.3)
            .with_ptr_cache(&c.4);
        let body_len = msg
            .raw_message
            .len()
            .saturating_sub(msg.body_offset as usize) as u64;
        let outputs = self.auth.verify_dkim(params).await;
        outputs
            .iter()
            .take(self.cfg.max_signatures)
            .map(|o| {
                let sig = o.signature();
                let (result, mut comment) = match o.result() {
                    DkimResult::Pass => (AuthResult::Pass, None),
                    // A body that does not match its hash is a signature that does not
                    // verify: `fail` (RFC 6376 §6.3), as OpenDKIM reports it.
                    DkimResult::Neutral(
                        e @ mail_auth::Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch),
                    ) => (AuthResult::Fail, Some(e.to_string())),
                    DkimResult::Neutral(e) => (AuthResult::Neutral, Some(e.to_string())),
                    DkimResult::Fail(e) => (AuthResult::Fail, Some(e.to_string())),
                    DkimResult::PermError(e) => (AuthResult::PermError, Some(e.to_string())),
                    DkimResult::TempError(e) => (AuthResult::TempError, Some(e.to_string())),
                    DkimResult::None => (AuthResult::None, None),
                };
                if result == AuthResult::Pass
                    && let Some(s) = sig
                    && s.l > 0
                    && s.l < body_len
                {
                    comment = Some(format!("l={} leaves content unsigned", s.l));
                }
                DkimCheck {
                    result,
                    domain: sig.map(|s| s.d.to_ascii_lowercase()).unwrap_or_default(),
                    selector: sig.map(|s| s.s.clone()).unwrap_or_default(),
                    b: sig.map(|s| b64_prefix(&s.b)).unwrap_or_default(),
                    comment,
                }
            })
            .collect()
    }

    async fn arc(&self, msg: &AuthenticatedMessage<'_>) -> ArcCheck {
        let c = &self.caches;
        let params = Parameters::new(msg)
            .with_txt_cache(&c.0)
            .with_mx_cache(&c.1)
            .with_ipv4_cache(&c.2)
            .with_ipv6_cache(&c.3)
            .with_ptr_cache(&c.4);
        let out = self.auth.verify_arc(params).await;
        match out.result() {
            DkimResult::Pass => ArcCheck {
                result: AuthResult::Pass,
                comment: None,
            },
            DkimResult::None => ArcCheck {
                result: AuthResult::None,
                comment: None,
            },
            DkimResult::TempError(e) => ArcCheck {
                result: AuthResult::Fail,
                comment: Some(format!("temporary error: {e}")),
            },
            DkimResult::Fail(e) | DkimResult::PermError(e) | DkimResult::Neutral(e) => ArcCheck {
                result: AuthResult::Fail,
                comment: Some(e.to_string()),
            },
        }
    }

    #[allow(clippy::type_complexity)]
    async fn dmarc(
        &self,
        from_domains: &[String],
        client: &Client<'_>,
        v: &Verdicts,
        dkim_pass: &[String],
        dkim_temp: &[String],
        in_memory: bool,
    ) -> Vec<(DmarcCheck, Option<(Found, dmarc::Judgement)>)> {
        if from_domains.is_empty() {
            return vec![(
                DmarcCheck {
                    result: AuthResult::None,
                    from: String::new(),
                    published: None,
                    applied: Policy::None,
                    policy_domain: String::new(),
                    comment: Some("no From domain".into()),
                },
                None,
            )];
        }
        let spf = v.spf.as_ref();
        let spf_domain = spf.map_or(String::new(), |s| {
            if s.helo {
                s.domain.clone()
            } else {
                domain_of(client.mail_from)
            }
        });
        let mut out = Vec::new();
        for from in from_domains.iter().take(MAX_FROM_DOMAINS) {
            let none = |comment: Option<String>| DmarcCheck {
                result: AuthResult::None,
                from: from.clone(),
                published: None,
                applied: Policy::None,
                policy_domain: from.clone(),
                comment,
            };
            let found = match self.find_record(from).await {
                Ok(Some(f)) => f,
                Ok(None) => {
                    out.push((none(None), None));
                    continue;
                }
                Err(e) => {
                    out.push((
                        DmarcCheck {
                            result: AuthResult::TempError,
                            comment: Some(e),
                            ..none(None)
                        },
                        None,
                    ));
                    continue;
                }
            };
            let ids = Identifiers {
                from,
                spf_domain: &spf_domain,
                spf_pass: spf.is_some_and(|s| s.result == AuthResult::Pass),
                spf_temperror: spf.is_some_and(|s| s.result == AuthResult::TempError),
                dkim_pass,
                dkim_temperror: dkim_temp,
            };
            let roll = rand::random_range(0..100u8);
            let mut j = dmarc::judge(&self.psl, &found, &ids, roll);
            let mut comment = None;
            if !in_memory && j.status == DmarcStatus::Fail {
                // DKIM was not checked: without an aligned SPF pass nothing is known.
                j.status = DmarcStatus::TempError;
                j.applied = Policy::None;
                comment = Some("DKIM not checked, judged on SPF alone".to_string());
            }
            let result = match j.status {
                DmarcStatus::Pass => AuthResult::Pass,
                DmarcStatus::Fail => AuthResult::Fail,
                DmarcStatus::TempError if in_memory => AuthResult::TempError,
                // Never refuse or defer for Tern's own limit.
                DmarcStatus::TempError | DmarcStatus::None => AuthResult::None,
            };
            if j.sampled_out {
                comment = Some(format!("pct={} sampled out", found.record.pct));
            }
            out.push((
                DmarcCheck {
                    result,
                    from: from.clone(),
                    published: Some(j.published),
                    applied: j.applied,
                    policy_domain: found.domain.clone(),
                    comment,
                },
                Some((found, j)),
            ));
        }
        out
    }

    /// `_dmarc.<from>`, else `_dmarc.<organisational domain>` (RFC 7489 §6.6.3).
    async fn find_record(&self, from: &str) -> Result<Option<Found>, String> {
        if let DmarcLookup::Found(record) = self.lookup_dmarc(from).await? {
            return Ok(Some(Found {
                domain: from.to_string(),
                record,
                from_org: false,
            }));
        }
        let org = self.psl.organizational_domain(from);
        if org != from
            && let DmarcLookup::Found(record) = self.lookup_dmarc(org).await?
        {
            return Ok(Some(Found {
                domain: org.to_string(),
                record,
                from_org: true,
            }));
        }
        Ok(None)
    }

    async fn lookup_dmarc(&self, domain: &str) -> Result<DmarcLookup, String> {
        use mail_auth::ResolverCache as _;
        let name = format!("_dmarc.{domain}.");
        if let Some(hit) = self.dmarc_cache.get(name.as_str()) {
            return Ok(hit);
        }
        match self.auth.0.txt_lookup(name.as_str()).await {
            Ok(lookup) => {
                let until = lookup.valid_until();
                let mut txts = Vec::new();
                for r in lookup.answers() {
                    if let RData::TXT(txt) = &r.data {
                        let mut s = Vec::new();
                        for part in txt.txt_data.iter() {
                            s.extend_from_slice(part);
                        }
                        txts.push(String::from_utf8_lossy(&s).into_owned());
                    }
                }
                let found = match dmarc::select_record(&txts) {
                    Some(r) => DmarcLookup::Found(r),
                    None => DmarcLookup::NotFound,
                };
                self.dmarc_cache
                    .insert(name.into_boxed_str(), found.clone(), until);
                Ok(found)
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(_))) => {
                // Negative answers are cached for a minute (their SOA minimum is not
                // exposed here).
                self.dmarc_cache.insert(
                    name.into_boxed_str(),
                    DmarcLookup::NotFound,
                    Instant::now() + Duration::from_secs(60),
                );
                Ok(DmarcLookup::NotFound)
            }
            Err(e) => Err(format!("DNS error: {e}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn observation(
        &self,
        client: &Client<'_>,
        v: &Verdicts,
        check: &DmarcCheck,
        found: &Found,
        j: &dmarc::Judgement,
        disposition: tern_reports::Disposition,
        decision: &Decision,
    ) -> DmarcObservation {
        let r = &found.record;
        let aligned = |b| {
            if b {
                tern_reports::AlignedResult::Pass
            } else {
                tern_reports::AlignedResult::Fail
            }
        };
        let spf = v.spf.as_ref();
        DmarcObservation {
            at: tern_now_secs(),
            source_ip: client.ip,
            header_from: check.from.clone(),
            envelope_from: domain_of(client.mail_from),
            policy: tern_reports::PolicyPublished {
                domain: found.domain.clone(),
                adkim: r.adkim,
                aspf: r.aspf,
                p: r.p,
                sp: r.sp,
                pct: r.pct,
                fo: r.fo.clone(),
            },
            rua: r.rua.clone(),
            disposition,
            dkim_aligned: aligned(j.dkim_aligned),
            spf_aligned: aligned(j.spf_aligned),
            overrides: decision.overrides.clone(),
            dkim: v
                .dkim
                .iter()
                .flatten()
                .map(|d| tern_reports::DkimResult {
                    domain: d.domain.clone(),
                    selector: d.selector.clone(),
                    result: d.result.as_str().to_string(),
                })
                .collect(),
            spf: tern_reports::SpfResult {
                domain: spf.map_or(String::new(), |s| s.domain.clone()),
                helo: spf.is_some_and(|s| s.helo),
                result: spf.map_or("none", |s| s.result.as_str()).to_string(),
            },
        }
    }

    /// `message` with every earlier Authentication-Results claiming Tern's authserv-id
    /// and every `X-Tern-Quarantine` removed (RFC 8601 §5); the count removed.
    pub fn strip(&self, message: &[u8]) -> (Vec<u8>, usize) {
        let id = self.authserv_id.as_str();
        remove_fields(
            message,
            &["Authentication-Results", QUARANTINE_FIELD],
            |name, value| {
                name.eq_ignore_ascii_case(QUARANTINE_FIELD)
                    || authserv_id_of(value).eq_ignore_ascii_case(id)
            },
        )
    }
}

/// The process-wide budget of octets held in memory for verification.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    /// A budget of `limit` octets.
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Takes `n` octets; false (nothing taken) when that would pass the limit.
    pub fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `n` octets.
    pub fn give(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Octets in use.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

fn severity(c: &DmarcCheck) -> u8 {
    match (c.result, c.applied) {
        (AuthResult::Fail, Policy::Reject) => 6,
        (AuthResult::Fail, Policy::Quarantine) => 5,
        (AuthResult::TempError, _) => 4,
        (AuthResult::Fail, Policy::None) => 3,
        (AuthResult::Pass, _) => 2,
        _ => 1,
    }
}

fn timed_out_signatures(msg: &AuthenticatedMessage<'_>, max: usize) -> Vec<DkimCheck> {
    msg.dkim_headers
        .iter()
        .take(max)
        .map(|h| DkimCheck {
            result: AuthResult::TempError,
            domain: h.header.d.to_ascii_lowercase(),
            selector: h.header.s.clone(),
            b: b64_prefix(&h.header.b),
            comment: Some("DNS timeout".into()),
        })
        .collect()
}

/// Whether `name` is `pattern`, or under it when `pattern` starts with a dot.
fn domain_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix('.') {
        Some(parent) => name.ends_with(pattern) || name == parent,
        None => name == pattern,
    }
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn distinct_domains(froms: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in froms {
        let d = domain_of(f);
        let d = crate::psl::to_ascii(&d).unwrap_or(d);
        if !d.is_empty() && !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

fn sanitize_token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c))
        .take(253)
        .collect()
}

fn tern_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The first 8 characters of the base64 form of `b` (RFC 6008 `header.b`).
fn b64_prefix(b: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3).take(2) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let idx = ((n >> (18 - 6 * i)) & 63) as usize;
            out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'A')));
        }
    }
    out
}

#[cfg(test)]
mod rfc6376;

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::ResolverCache as _;
    use mail_auth::common::parse::TxtRecordParser as _;
    use mail_auth::common::verify::DomainKey;

    /// RFC 8463 Appendix A: the keys (A.2) and the signed message (A.3), Ed25519 and
    /// RSA signatures over the same message, relaxed/relaxed.
    const RFC8463_KEYS: [(&str, &str); 2] = [
        (
            "brisbane._domainkey.football.example.com",
            "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        ),
        (
            "test._domainkey.football.example.com",
            "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB",
        ),
    ];
    const RFC8463_MESSAGE: &str = "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=brisbane; t=1528637909; h=from : to :
 subject : date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus
 Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=test; t=1528637909; h=from : to : subject :
 date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3
 DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz
 dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=
From: Joe SixPack <joe@football.example.com>
To: Suzie Q <suzie@shopping.example.net>
Subject: Is dinner ready?
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)
Message-ID: <20030712040037.46341.5F8J@football.example.com>

Hi.

We lost the game.  Are you hungry yet?

Joe.
";

    /// A verifier whose DKIM keys come from the primed cache only (SPF, DMARC and ARC
    /// off: nothing reaches a name server).
    pub(super) fn offline(keys: &[(&str, &str)]) -> Verifier {
        let cfg = VerifyConfig {
            enabled: true,
            spf: false,
            dmarc: false,
            arc: false,
            ..VerifyConfig::default()
        };
        let resolver = mail_auth::hickory_resolver::TokioResolver::builder_tokio()
            .unwrap_or_else(|e| panic!("resolver: {e}"))
            .build()
            .unwrap_or_else(|e| panic!("resolver: {e}"));
        let v = Verifier::new(cfg, "mx.test", resolver).unwrap_or_else(|e| panic!("{e}"));
        let until = Instant::now() + Duration::from_secs(3600);
        for (name, record) in keys {
            let key = DomainKey::parse(record.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let txt = mail_auth::Txt::from(key);
            v.caches
                .0
                .insert(format!("{name}.").into_boxed_str(), txt.clone(), until);
            v.caches.0.insert((*name).into(), txt, until);
        }
        v
    }

    fn client() -> Client<'static> {
        Client {
            ip: "192.0.2.1".parse().unwrap_or(IpAddr::from([192, 0, 2, 1])),
            name: None,
            helo: "football.example.com",
            mail_from: "joe@football.example.com",
        }
    }

    pub(super) async fn dkim_of(v: &Verifier, message: &[u8]) -> Vec<DkimCheck> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let out = v
            .verify(Some(message), "", &client(), async { None }, deadline)
            .await;
        out.verdicts.dkim.unwrap_or_default()
    }

    #[tokio::test]
    async fn rfc_8463_example_verifies_ed25519_and_rsa() {
        let v = offline(&RFC8463_KEYS);
        let message = RFC8463_MESSAGE.replace('\n', "\r\n");
        let got = dkim_of(&v, message.as_bytes()).await;
        let summary: Vec<(AuthResult, &str)> = got
            .iter()
            .map(|d| (d.result, d.selector.as_str()))
            .collect();
        assert_eq!(
            summary,
            [(AuthResult::Pass, "brisbane"), (AuthResult::Pass, "test")],
            "{got:?}"
        );
        // One byte of the body changed: both fail.
        let changed = message.replace("hungry", "Hungry");
        let got = dkim_of(&v, changed.as_bytes()).await;
        assert!(got.iter().all(|d| d.result == AuthResult::Fail), "{got:?}");
        // One byte of a signed header field changed: both fail.
        let changed = message.replace("Is dinner ready?", "Is dinner ready!");
        let got = dkim_of(&v, changed.as_bytes()).await;
        assert!(got.iter().all(|d| d.result == AuthResult::Fail), "{got:?}");
    }

    #[tokio::test]
    async fn only_max_signatures_are_verified() {
        let mut v = offline(&RFC8463_KEYS);
        v.cfg.max_signatures = 1;
        let message = RFC8463_MESSAGE.replace('\n', "\r\n");
        let got = dkim_of(&v, message.as_bytes()).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].selector, "brisbane");
    }

    #[test]
    fn header_b_is_the_base64_prefix() {
        assert_eq!(b64_prefix(b"hello world"), "aGVsbG8g");
        assert_eq!(b64_prefix(b"hi"), "aGk");
    }

    #[test]
    fn budget_is_all_or_nothing() {
        let b = Budget::new(100);
        assert!(b.take(60));
        assert!(!b.take(41));
        assert!(b.take(40));
        b.give(100);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn domain_patterns() {
        assert!(domain_matches("mx.example.org", "MX.example.org."));
        assert!(domain_matches(".example.org", "a.b.example.org"));
        assert!(domain_matches(".example.org", "example.org"));
        assert!(!domain_matches(".example.org", "badexample.org"));
    }
}
