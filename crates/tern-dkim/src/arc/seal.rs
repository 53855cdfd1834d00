//! The sealing state in force ([`Sealing`]: an immutable snapshot the binary swaps on
//! reload, its key kept when a reload cannot read the file), one message's seal
//! ([`Sealer::seal`]: the ARC-Seal, ARC-Message-Signature and
//! ARC-Authentication-Results fields to put before it) and the chain validation at
//! delivery ([`ChainValidator`], DNS through Tern's name servers).
//!
//! Memory: mail-auth seals a message in memory. The caller reads at most
//! `arc.max_size` octets of it and brings them into their wire form with
//! [`wire_form`] (the SMTP client's line end rule, as DKIM signing does), so the seal
//! covers exactly what the peer receives.
//!
//! CPU: hashing and the RSA operation run on the caller's blocking thread (the queue
//! runs them on the blocking pool), never on an async worker. The validation is async
//! (DNS) and bounded by the caller.
//!
//! Trust: the message is hostile; mail-auth parses it without panicking, and nothing
//! here indexes into it.

use std::path::PathBuf;
use std::sync::Arc;

use mail_auth::arc::{ArcSealer, Set};
use mail_auth::common::headers::{Header, HeaderWriter};
use mail_auth::dkim::{Canonicalization, Done};
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimResult, MessageAuthenticator,
    Parameters,
};

use super::chain::{self, Cv, Plan, Unsealed};
use super::config::ArcConfig;
use crate::config::Algorithm;
use crate::keys::{self, KeyError, PrivateKey};
use crate::sign::LineEnds;

/// Why a seal could not be made (the message is then sent unsealed, event 4114 with
/// `reason` = error; the peer sees nothing of it).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The content has no header section mail-auth can read.
    #[error("the message has no header section")]
    NoHeaders,
    /// The signer failed (crypto, or none of the listed fields present).
    #[error("sealing failed: {0}")]
    Signer(String),
}

/// The loaded key and sealer of `[arc]`.
pub struct Sealer {
    /// `d=`, lower case.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// The key file.
    pub path: PathBuf,
    /// The public key (`p=`).
    pub public: Vec<u8>,
    key: PrivateKey,
    sealer: ArcSealer<PrivateKey, Done>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// How loading the `[arc]` key went (events 4111 and 4112).
#[derive(Debug)]
pub struct ArcKeyLoad {
    /// Sealing domain.
    pub domain: String,
    /// Selector.
    pub selector: String,
    /// Key file.
    pub path: PathBuf,
    /// `Ok(bits)`, or why it failed.
    pub result: Result<usize, KeyError>,
    /// It failed and the key loaded before (same domain and selector) is kept.
    pub kept_previous: bool,
}

/// The `[arc]` configuration with its key loaded: immutable, swapped whole on reload.
#[derive(Debug, Default)]
pub struct Sealing {
    enabled: bool,
    sealer: Option<Arc<Sealer>>,
    authserv_id: String,
    max_size: u64,
    timeout: std::time::Duration,
}

fn build(
    key: &PrivateKey,
    domain: &str,
    selector: &str,
    headers: &[String],
) -> ArcSealer<PrivateKey, Done> {
    ArcSealer::from_key(key.clone())
        .domain(domain)
        .selector(selector)
        .headers(headers.iter().cloned())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

impl Sealing {
    /// No sealing.
    pub fn disabled() -> Sealing {
        Sealing::default()
    }

    /// Loads the key of `config` (reading the file: blocking) when `seal` is on. A key
    /// that fails to load is replaced by the key of `previous` with the same domain and
    /// selector when there is one; otherwise nothing is sealed (reason `no_key`).
    /// `authserv_id` is the id of Tern's own Authentication-Results (`[verify]
    /// authserv_id`, by default the host name).
    pub fn load(
        config: &ArcConfig,
        authserv_id: &str,
        previous: Option<&Sealing>,
    ) -> (Sealing, Option<ArcKeyLoad>) {
        let mut sealing = Sealing {
            enabled: config.seal,
            sealer: None,
            authserv_id: authserv_id.to_string(),
            max_size: config.max_size,
            timeout: std::time::Duration::from_secs(config.timeout_secs),
        };
        if !config.seal {
            return (sealing, None);
        }
        let domain = config.domain.to_ascii_lowercase();
        let loaded = keys::load_key(&config.key_file, Algorithm::RsaSha256);
        let old = previous
            .and_then(|p| p.sealer.as_ref())
            .filter(|o| o.domain == domain && o.selector.eq_ignore_ascii_case(&config.selector));
        let (key, public, result, kept) = match (loaded, old) {
            (Ok(l), _) => (Some(l.key), l.public, Ok(l.bits), false),
            (Err(e), Some(o)) => (Some(o.key.clone()), o.public.clone(), Err(e), true),
            (Err(e), None) => (None, Vec::new(), Err(e), false),
        };
        if let Some(key) = key {
            sealing.sealer = Some(Arc::new(Sealer {
                sealer: build(&key, &domain, &config.selector, &config.headers),
                domain: domain.clone(),
                selector: config.selector.clone(),
                path: config.key_file.clone(),
                public,
                key,
            }));
        }
        let report = ArcKeyLoad {
            domain,
            selector: config.selector.clone(),
            path: config.key_file.clone(),
            result,
            kept_previous: kept,
        };
        (sealing, Some(report))
    }

    /// Whether `arc.seal` is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The sealer, or why there is none while sealing is on.
    pub fn sealer(&self) -> Result<&Arc<Sealer>, Unsealed> {
        self.sealer.as_ref().ok_or(Unsealed::NoKey)
    }

    /// The authserv-id of Tern's own Authentication-Results.
    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// `arc.max_size`.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// `arc.timeout_secs`.
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
    }
}

/// The content in the form the SMTP client sends it (before dot-stuffing): every bare
/// CR or LF a CRLF, the last line ended (the rule of `crate::sign` and `tern-deliver`).
pub fn wire_form(pieces: &[&[u8]]) -> Vec<u8> {
    let len = pieces
        .iter()
        .map(|p| p.len())
        .fold(0usize, usize::saturating_add);
    let mut out = Vec::with_capacity(len.saturating_add(len / 32));
    let mut ends = LineEnds::new();
    for p in pieces {
        ends.feed(p, &mut out);
    }
    ends.finish(&mut out);
    out
}

/// Decides for one message in its wire form, before any DNS (see `chain::plan`).
pub fn plan(message: &[u8], authserv_id: &str, remote_ip: Option<std::net::IpAddr>) -> Plan {
    let Some(parsed) = AuthenticatedMessage::parse(message) else {
        return Plan::Skip(Unsealed::Error);
    };
    chain::plan(
        chain::existing(&parsed),
        chain::top_results(&parsed, authserv_id),
        authserv_id,
        remote_ip,
    )
}

impl Sealer {
    /// The ARC set for `message` (wire form) with chain status `cv` and the AAR payload
    /// `results` (relaxed form, as [`Plan::Seal`] gives it): the three fields, each
    /// ending in CRLF, to put before the message. The caller checked the plan (`cv` is
    /// `None` only for a message without sets, the chain is not over 50 sets, the last
    /// set is not `cv=fail`).
    pub fn seal(&self, message: &[u8], cv: Cv, results: &str) -> Result<Vec<u8>, SealError> {
        let parsed = AuthenticatedMessage::parse(message).ok_or(SealError::NoHeaders)?;
        let mut output = ArcOutput::default();
        if cv != Cv::None {
            for ((seal, sig), aar) in parsed
                .as_headers
                .iter()
                .zip(&parsed.ams_headers)
                .zip(&parsed.aar_headers)
            {
                output = output.with_set(Set {
                    signature: Header::new(sig.name, sig.value, &sig.header),
                    seal: Header::new(seal.name, seal.value, &seal.header),
                    results: Header::new(aar.name, aar.value, &aar.header),
                });
            }
            output = output.with_result(match cv {
                Cv::Pass => DkimResult::Pass,
                _ => DkimResult::Fail(mail_auth::Error::Arc(mail_auth::arc::ArcError::BrokenChain)),
            });
        }
        // mail-auth writes the payload after `i=N; ` as it is given: the relaxed form,
        // so the seal's canonical input is the field a verifier unfolds.
        let aar = AuthenticationResults::new(results);
        let set = self
            .sealer
            .seal(&parsed, &aar, &output)
            .map_err(|e| SealError::Signer(e.to_string()))?;
        let written = set.to_header();
        // Fold the AAR (the last field mail-auth writes) so no line nears 998 octets.
        let at = written
            .rfind("ARC-Authentication-Results: ")
            .ok_or_else(|| SealError::Signer("no ARC-Authentication-Results written".into()))?;
        let mut out = written.get(..at).unwrap_or_default().to_string();
        out.push_str(&chain::fold(&format!(
            "ARC-Authentication-Results: i={}; {results}",
            set.seal.i
        )));
        Ok(out.into_bytes())
    }
}

/// The chain's validation result, as a `cv=` for the new set.
fn cv_of(result: &DkimResult) -> Result<Cv, Unsealed> {
    match result {
        DkimResult::Pass => Ok(Cv::Pass),
        DkimResult::TempError(_) => Err(Unsealed::TempError),
        // fail, neutral (a body hash that does not match), permerror: the chain is
        // broken. (`none` cannot come with sets; treated as broken all the same.)
        _ => Ok(Cv::Fail),
    }
}

/// Validates ARC chains at delivery (RFC 8617 §5.2) with mail-auth, asking Tern's name
/// servers (`[dns]`); cheap to clone.
#[derive(Clone)]
pub struct ChainValidator(MessageAuthenticator);

impl std::fmt::Debug for ChainValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainValidator")
    }
}

impl ChainValidator {
    /// A validator over a hickory resolver (built by the binary from `[dns]`).
    pub fn new(resolver: mail_auth::hickory_resolver::TokioResolver) -> ChainValidator {
        ChainValidator(MessageAuthenticator(resolver))
    }

    /// The chain status of `message` as it was received (its stored form): `pass` or
    /// `fail`, or [`Unsealed::TempError`] when DNS did not answer. Not bounded in time
    /// here: the caller bounds it (`arc.timeout_secs`).
    pub async fn validate(&self, message: &[u8]) -> Result<Cv, Unsealed> {
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return Ok(Cv::Fail);
        };
        let output = self.0.verify_arc(Parameters::new(&parsed)).await;
        cv_of(output.result())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::borrow::Borrow;
    use std::collections::HashMap;
    use std::hash::Hash;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;

    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::{ResolverCache, Txt};

    /// Records served from memory: mail-auth asks it before the network.
    #[derive(Default)]
    struct Records(Mutex<HashMap<Box<str>, Txt>>);

    impl ResolverCache<Box<str>, Txt> for Records {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.lock().unwrap().get(name).cloned()
        }
        fn remove<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.lock().unwrap().remove(name)
        }
        fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
            self.0.lock().unwrap().insert(key, value);
        }
    }

    struct Hop {
        _dir: tempfile::TempDir,
        sealing: Sealing,
    }

    fn hop(domain: &str, records: &Records) -> Hop {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("arc.pem");
        let g = keys::generate(Algorithm::RsaSha256, 2048).unwrap();
        std::fs::write(&path, &g.pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = ArcConfig {
            seal: true,
            domain: domain.into(),
            selector: "arc".into(),
            key_file: path,
            ..ArcConfig::default()
        };
        let (sealing, load) = Sealing::load(&config, &format!("mx.{domain}"), None);
        assert!(load.unwrap().result.is_ok());
        let text = keys::record_text(Algorithm::RsaSha256, &g.public);
        records.insert(
            format!("arc._domainkey.{domain}.").into_boxed_str(),
            Txt::from(DomainKey::parse(text.as_bytes()).unwrap()),
            std::time::Instant::now(),
        );
        Hop { _dir: dir, sealing }
    }

    fn validator() -> MessageAuthenticator {
        MessageAuthenticator::new(
            mail_auth::hickory_resolver::config::ResolverConfig::default(),
            mail_auth::hickory_resolver::config::ResolverOpts::default(),
        )
        .unwrap()
    }

    async fn verdict(message: &[u8], records: &Records) -> DkimResult {
        let parsed = AuthenticatedMessage::parse(message).unwrap();
        validator()
            .verify_arc(Parameters::new(&parsed).with_txt_cache(records))
            .await
            .result()
            .clone()
    }

    /// Plans, seals as planned, and returns the message with its new set on top.
    fn forward(h: &Hop, message: &[u8]) -> Vec<u8> {
        let wire = wire_form(&[message]);
        let (cv, results) = match plan(&wire, h.sealing.authserv_id(), None) {
            Plan::Seal { cv, results, .. } => (cv, results),
            other => panic!("{other:?}"),
        };
        let mut out = h
            .sealing
            .sealer()
            .unwrap()
            .seal(&wire, cv, &results)
            .unwrap();
        out.extend_from_slice(&wire);
        out
    }

    const MESSAGE: &[u8] = b"Received: from client.test\nFrom: Ann <ann@origin.test>\nTo: bob@list.test\nSubject: hello\nDate: Sun, 6 Dec 2026 10:00:00 +0000\nMessage-ID: <1@origin.test>\n\nfirst line\nsecond line";

    #[tokio::test]
    async fn a_first_seal_is_cv_none_and_verifies_then_a_second_hop_passes() {
        let records = Records::default();
        let one = hop("forward.test", &records);
        let sealed = forward(&one, MESSAGE);
        let text = String::from_utf8_lossy(&sealed).to_string();
        assert!(
            text.starts_with("ARC-Seal: i=1; a=rsa-sha256; s=arc; d=forward.test; cv=none;"),
            "{text}"
        );
        assert!(
            text.contains("ARC-Authentication-Results: i=1; mx.forward.test; arc=none\r\n"),
            "{text}"
        );
        assert_eq!(verdict(&sealed, &records).await, DkimResult::Pass);

        // The next hop reads the chain (no Authentication-Results of its own: it
        // validates) and seals i=2 with cv=pass.
        let two = hop("second.test", &records);
        let wire = wire_form(&[&sealed]);
        let top = match plan(&wire, two.sealing.authserv_id(), None) {
            Plan::Validate { top } => top,
            other => panic!("{other:?}"),
        };
        let cv = cv_of(&verdict(&wire, &records).await).unwrap();
        assert_eq!(cv, Cv::Pass);
        let Plan::Seal { cv, results, .. } =
            chain::after_validation(cv, top, "mx.second.test", None)
        else {
            panic!()
        };
        let mut twice = two
            .sealing
            .sealer()
            .unwrap()
            .seal(&wire, cv, &results)
            .unwrap();
        twice.extend_from_slice(&wire);
        let text = String::from_utf8_lossy(&twice).to_string();
        assert!(
            text.starts_with("ARC-Seal: i=2; a=rsa-sha256; s=arc; d=second.test; cv=pass;"),
            "{text}"
        );
        assert_eq!(verdict(&twice, &records).await, DkimResult::Pass);

        // Tampering with the body breaks it: the check can fail.
        let mut bad = twice.clone();
        let at = bad.len() - 4;
        bad[at] = b'X';
        assert_ne!(verdict(&bad, &records).await, DkimResult::Pass);
    }

    #[tokio::test]
    async fn the_verifiers_results_become_the_aar_and_give_cv() {
        let records = Records::default();
        let one = hop("forward.test", &records);
        let sealed = forward(&one, MESSAGE);
        let two = hop("second.test", &records);
        // Tern's verifier put its results on top (long enough to be folded).
        let ar = format!(
            "Authentication-Results: mx.second.test;\r\n\tspf=pass smtp.mailfrom=ann@origin.test;\r\n\tdkim=none;\r\n\tarc=pass (i=1 {});\r\n\tdmarc=none header.from=origin.test\r\n",
            "x".repeat(90)
        );
        let mut stored = ar.into_bytes();
        stored.extend_from_slice(&sealed);
        let wire = wire_form(&[&stored]);
        let Plan::Seal { cv, results, .. } = plan(&wire, "mx.second.test", None) else {
            panic!("no seal planned")
        };
        assert_eq!(cv, Cv::Pass);
        let set = two
            .sealing
            .sealer()
            .unwrap()
            .seal(&wire, cv, &results)
            .unwrap();
        let text = String::from_utf8_lossy(&set).to_string();
        assert!(
            text.contains("ARC-Authentication-Results: i=2; mx.second.test; spf=pass"),
            "{text}"
        );
        assert!(text.lines().all(|l| l.len() < 100), "{text}");
        let mut out = set;
        out.extend_from_slice(&wire);
        assert_eq!(verdict(&out, &records).await, DkimResult::Pass);
    }

    #[tokio::test]
    async fn a_failed_chain_is_sealed_once_with_cv_fail_then_never_again() {
        let records = Records::default();
        let one = hop("forward.test", &records);
        let mut sealed = forward(&one, MESSAGE);
        // The body changes after the first seal: the chain fails at the next hop.
        sealed.extend_from_slice(b"appended by a mailing list\r\n");
        assert_ne!(verdict(&sealed, &records).await, DkimResult::Pass);
        let two = hop("second.test", &records);
        let wire = wire_form(&[&sealed]);
        let cv = cv_of(&verdict(&wire, &records).await).unwrap();
        assert_eq!(cv, Cv::Fail);
        let Plan::Seal { cv, results, .. } =
            chain::after_validation(cv, None, "mx.second.test", None)
        else {
            panic!()
        };
        let mut failed = two
            .sealing
            .sealer()
            .unwrap()
            .seal(&wire, cv, &results)
            .unwrap();
        assert!(String::from_utf8_lossy(&failed).contains("cv=fail"));
        failed.extend_from_slice(&wire);
        let three = hop("third.test", &records);
        assert_eq!(
            plan(&wire_form(&[&failed]), three.sealing.authserv_id(), None),
            Plan::Skip(Unsealed::ChainFailed)
        );
    }

    #[test]
    fn a_reload_that_cannot_read_the_key_keeps_the_previous_one() {
        let records = Records::default();
        let one = hop("forward.test", &records);
        let mut config = ArcConfig {
            seal: true,
            domain: "forward.test".into(),
            selector: "arc".into(),
            key_file: "/nonexistent/arc.pem".into(),
            ..ArcConfig::default()
        };
        let (again, load) = Sealing::load(&config, "mx", Some(&one.sealing));
        let load = load.unwrap();
        assert!(load.result.is_err());
        assert!(load.kept_previous);
        assert!(again.sealer().is_ok());
        // Another selector: the old key is not its key.
        config.selector = "other".into();
        let (none, load) = Sealing::load(&config, "mx", Some(&one.sealing));
        assert!(!load.unwrap().kept_previous);
        assert_eq!(none.sealer().unwrap_err(), Unsealed::NoKey);
        // Off: nothing loaded, nothing reported.
        let (off, load) = Sealing::load(&ArcConfig::default(), "mx", None);
        assert!(!off.enabled() && load.is_none());
    }

    #[test]
    fn the_wire_form_ends_every_line_with_crlf() {
        assert_eq!(wire_form(&[b"a\nb\r", b"\nc"]), b"a\r\nb\r\nc\r\n");
        assert_eq!(wire_form(&[b""]), b"");
    }
}
