//! The signing state in force ([`Signing`]: an immutable snapshot the binary swaps on
//! reload) and one message's signatures ([`Signatures`]: fed the content once, piece by
//! piece, then finished into the `DKIM-Signature` fields to put before it).
//!
//! Memory: a [`Signatures`] holds, per key, the header section until its end (at most
//! [`MAX_HEADER_SECTION`] octets: past that the message is refused, never buffered
//! further) and a hash state for the body; nothing of the body is kept, so a signature
//! costs the same whatever the message size.
//!
//! What is signed is what the peer receives: the content is fed through the same line
//! end rule as the SMTP client's DATA encoder (`tern-deliver`'s `DotStuffer`: a bare CR
//! or LF becomes CRLF, an unterminated last line gets CRLF), so a signature over
//! content with bare line ends still verifies at the receiver.
//!
//! CPU: RSA signing and hashing are CPU work; callers run [`Signatures`] on a blocking
//! thread (the queue does), never on an async worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::Done as Ready;
use mail_auth::dkim::{Canonicalization, DkimSigner, DkimSigningStream};

use crate::config::{Algorithm, DkimConfig, OnFailure, Origin};
use crate::keys::{self, PrivateKey};
use crate::rules::{self, Source, Unsigned};

/// Most octets of a header section a signature buffers; a message whose header section
/// is longer cannot be signed ([`SignError::HeaderTooLarge`]).
pub const MAX_HEADER_SECTION: usize = 1024 * 1024;

/// Why a message that should be signed was not. Mapped by the queue to a deferral
/// (`4.7.0`, `dkim.on_failure = "defer"`) or to sending it unsigned, with event 4103 or
/// 4104; the peer sees at most the deferral text.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The header section is longer than [`MAX_HEADER_SECTION`].
    #[error("the header section is longer than {MAX_HEADER_SECTION} octets")]
    HeaderTooLarge,
    /// The signer failed for one key (a crypto failure, or none of the listed fields).
    #[error("signing with {selector} ({algorithm}) failed: {reason}")]
    Signer {
        /// The key's selector.
        selector: String,
        /// Its algorithm.
        algorithm: &'static str,
        /// mail-auth's reason.
        reason: String,
    },
    /// The content could not be read while it was being signed (the caller's reason).
    #[error("reading the message to sign it: {0}")]
    Read(String),
}

/// One key of a signing domain, with its signer (header list, relaxed/relaxed).
pub struct KeySigner {
    /// Selector.
    pub selector: String,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// The file it was read from.
    pub path: PathBuf,
    /// The public key (`p=`).
    pub public: Vec<u8>,
    key: PrivateKey,
    signer: DkimSigner<PrivateKey, Ready>,
}

impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySigner")
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A signing domain and its keys.
#[derive(Debug)]
pub struct DomainSigner {
    /// The `d=` domain, lower case.
    pub domain: String,
    /// Signs its subdomains' mail too.
    pub subdomains: bool,
    /// Every key; each signs every message (dual signatures). Never empty.
    pub keys: Vec<KeySigner>,
}

/// How loading one configured key went (for events 4101 and 4102).
#[derive(Debug)]
pub struct KeyLoad {
    /// Signing domain.
    pub domain: String,
    /// Selector.
    pub selector: String,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Key file.
    pub path: PathBuf,
    /// `Ok(bits)`, or the reason it failed.
    pub result: Result<usize, keys::KeyError>,
    /// It failed and the key loaded before (same domain, selector and algorithm) is kept.
    pub kept_previous: bool,
}

/// What to do with one message.
#[derive(Debug)]
pub enum Decision {
    /// Sign it with every key of this domain.
    Sign(Arc<DomainSigner>),
    /// Leave it unsigned, for this reason.
    Skip(Unsigned),
}

/// The signing configuration with its keys loaded: immutable, swapped whole on reload.
#[derive(Debug, Default)]
pub struct Signing {
    origins: Vec<Origin>,
    on_failure: OnFailure,
    domains: HashMap<String, Arc<DomainSigner>>,
}

fn build_signer(
    key: &PrivateKey,
    domain: &str,
    selector: &str,
    headers: &[String],
) -> DkimSigner<PrivateKey, Ready> {
    DkimSigner::from_key(key.clone())
        .domain(domain)
        .selector(selector)
        .headers(headers.iter().cloned())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

impl Signing {
    /// No signing at all.
    pub fn disabled() -> Signing {
        Signing::default()
    }

    /// Loads every key of `config` (reading the files: blocking). A key that fails to
    /// load is replaced by the same key (domain, selector, algorithm) of `previous` when
    /// there is one; otherwise it is left out, and a domain left without keys signs
    /// nothing. Each key's outcome is returned for the events.
    pub fn load(config: &DkimConfig, previous: Option<&Signing>) -> (Signing, Vec<KeyLoad>) {
        // The signed list: `headers`, then each `oversign` name once more.
        let mut headers = config.headers.clone();
        headers.extend(config.oversign.iter().cloned());
        let mut domains = HashMap::new();
        let mut report = Vec::new();
        for d in &config.domains {
            let domain = d.name.to_ascii_lowercase();
            let mut signers = Vec::new();
            for k in &d.keys {
                let loaded = keys::load_key(&k.key_file, k.algorithm);
                let old = previous
                    .and_then(|p| p.domains.get(&domain))
                    .and_then(|ds| {
                        ds.keys.iter().find(|o| {
                            o.selector.eq_ignore_ascii_case(&k.selector)
                                && o.algorithm == k.algorithm
                        })
                    });
                let (key, public, result, kept) = match (loaded, old) {
                    (Ok(l), _) => (Some(l.key), l.public, Ok(l.bits), false),
                    (Err(e), Some(o)) => (Some(o.key.clone()), o.public.clone(), Err(e), true),
                    (Err(e), None) => (None, Vec::new(), Err(e), false),
                };
                if let Some(key) = key {
                    signers.push(KeySigner {
                        selector: k.selector.clone(),
                        algorithm: k.algorithm,
                        path: k.key_file.clone(),
                        public,
                        signer: build_signer(&key, &domain, &k.selector, &headers),
                        key,
                    });
                }
                report.push(KeyLoad {
                    domain: domain.clone(),
                    selector: k.selector.clone(),
                    algorithm: k.algorithm,
                    path: k.key_file.clone(),
                    result,
                    kept_previous: kept,
                });
            }
            if !signers.is_empty() {
                domains.insert(
                    domain.clone(),
                    Arc::new(DomainSigner {
                        domain,
                        subdomains: d.subdomains,
                        keys: signers,
                    }),
                );
            }
        }
        let signing = Signing {
            origins: config.origins.clone(),
            on_failure: config.on_failure,
            domains,
        };
        (signing, report)
    }

    /// Whether any domain can sign.
    pub fn enabled(&self) -> bool {
        !self.domains.is_empty()
    }

    /// What a signing failure does.
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    /// The domain signer of `domain` (exact), if any: `tern dkim check`.
    pub fn domain(&self, domain: &str) -> Option<&Arc<DomainSigner>> {
        self.domains.get(&domain.to_ascii_lowercase())
    }

    /// Decides for one message from its origin and its header section (see `rules`).
    pub fn decide(&self, source: Source, head: &[u8]) -> Decision {
        if self.domains.is_empty() {
            return Decision::Skip(Unsigned::Disabled);
        }
        if !source.origins().any(|o| self.origins.contains(&o)) {
            return Decision::Skip(Unsigned::NotOurs);
        }
        let from = match rules::from_domain(head) {
            Ok(d) => d,
            Err(why) => return Decision::Skip(why),
        };
        for (candidate, exact) in rules::candidates(&from) {
            if let Some(d) = self.domains.get(candidate)
                && (exact || d.subdomains)
            {
                return Decision::Sign(Arc::clone(d));
            }
        }
        Decision::Skip(Unsigned::NoKey(from))
    }
}

/// The line end rule of the SMTP client's DATA encoder, without its dot-stuffing: a bare
/// CR or LF becomes CRLF (a CR at the end of one piece and an LF at the start of the next
/// are one CRLF); [`LineEnds::finish`] ends an unterminated last line.
#[derive(Debug, Default)]
pub(crate) struct LineEnds {
    pending_cr: bool,
    at_line_start: bool,
    any: bool,
}

impl LineEnds {
    /// At the start of the content.
    pub(crate) fn new() -> LineEnds {
        LineEnds {
            at_line_start: true,
            ..LineEnds::default()
        }
    }

    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len().saturating_add(8));
        for &byte in input {
            self.any = true;
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                _ => {
                    out.push(byte);
                    self.at_line_start = false;
                }
            }
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.at_line_start = true;
            out.extend_from_slice(b"\r\n");
        }
        if self.any && !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// One message's signatures in progress: feed the content with [`Signatures::feed`],
/// then [`Signatures::finish`].
pub struct Signatures<'a> {
    domain: &'a DomainSigner,
    streams: Vec<DkimSigningStream<'a, PrivateKey>>,
    lines: LineEnds,
    buf: Vec<u8>,
    /// Octets fed before the end of the header section was seen.
    head_len: usize,
    /// The last three octets fed while in the header section (a boundary may straddle
    /// two pieces).
    tail: Vec<u8>,
    in_body: bool,
    failed: Option<SignError>,
}

impl DomainSigner {
    /// Starts the signatures of one message (one per key).
    pub fn start(&self) -> Signatures<'_> {
        Signatures {
            domain: self,
            streams: self
                .keys
                .iter()
                .map(|k| k.signer.sign_streaming())
                .collect(),
            lines: LineEnds {
                at_line_start: true,
                ..LineEnds::default()
            },
            buf: Vec::new(),
            head_len: 0,
            tail: Vec::with_capacity(8),
            in_body: false,
            failed: None,
        }
    }
}

impl Signatures<'_> {
    /// Feeds the next piece of the content, as it will be sent (before dot-stuffing).
    pub fn feed(&mut self, piece: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.lines.feed(piece, &mut buf);
        self.write(&buf);
        self.buf = buf;
    }

    fn write(&mut self, data: &[u8]) {
        if !self.in_body {
            // The end of the header section (CRLF CRLF) may straddle two pieces: look in
            // the last three octets before this piece joined to its first three, and in
            // the piece itself.
            let mut joined = std::mem::take(&mut self.tail);
            joined.extend_from_slice(data.get(..data.len().min(3)).unwrap_or_default());
            if joined.windows(4).any(|w| w == b"\r\n\r\n")
                || data.windows(4).any(|w| w == b"\r\n\r\n")
            {
                self.in_body = true;
            } else {
                self.head_len = self.head_len.saturating_add(data.len());
                if self.head_len > MAX_HEADER_SECTION {
                    self.failed = Some(SignError::HeaderTooLarge);
                    self.streams.clear();
                    return;
                }
                let last = if data.len() >= 3 { data } else { &joined[..] };
                self.tail = last
                    .get(last.len().saturating_sub(3)..)
                    .unwrap_or_default()
                    .to_vec();
            }
        }
        for s in &mut self.streams {
            s.write(data);
        }
    }

    /// Feeds a failure to read the content: [`Signatures::finish`] returns it.
    pub fn fail(&mut self, reason: String) {
        if self.failed.is_none() {
            self.failed = Some(SignError::Read(reason));
        }
    }

    /// The `DKIM-Signature` fields (each ending in CRLF), in the order of the keys, to
    /// put before the content.
    pub fn finish(mut self) -> Result<Vec<u8>, SignError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut end = Vec::new();
        self.lines.finish(&mut end);
        if !end.is_empty() {
            for s in &mut self.streams {
                s.write(&end);
            }
        }
        let mut out = Vec::new();
        for (stream, key) in self.streams.into_iter().zip(&self.domain.keys) {
            match stream.finish() {
                Ok(sig) => out.extend_from_slice(sig.to_header().as_bytes()),
                Err(e) => {
                    return Err(SignError::Signer {
                        selector: key.selector.clone(),
                        algorithm: key.algorithm.as_str(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The keys' algorithms, in order (metrics).
    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.domain.keys.iter().map(|k| k.algorithm)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::{DomainConfig, KeyConfig};
    use std::os::unix::fs::PermissionsExt;

    struct Keys {
        dir: tempfile::TempDir,
    }

    impl Keys {
        fn new() -> Keys {
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
            Keys { dir }
        }

        fn key(&self, name: &str, algorithm: Algorithm) -> KeyConfig {
            let path = self.dir.path().join(name);
            let g = keys::generate(algorithm, 2048).unwrap();
            std::fs::write(&path, g.pem).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            KeyConfig {
                selector: name.into(),
                algorithm,
                key_file: path,
            }
        }
    }

    fn config(domains: Vec<DomainConfig>) -> DkimConfig {
        DkimConfig {
            domains,
            ..DkimConfig::default()
        }
    }

    const RELAYED: Source = Source {
        authenticated: false,
        relay_network: true,
        local: false,
    };

    fn sign_in_pieces(d: &DomainSigner, content: &[u8], size: usize) -> String {
        let mut s = d.start();
        for piece in content.chunks(size) {
            s.feed(piece);
        }
        String::from_utf8(s.finish().unwrap()).unwrap()
    }

    fn tag<'a>(fields: &'a str, name: &str) -> Vec<&'a str> {
        let unfolded: &str = fields;
        unfolded
            .split(';')
            .filter_map(|t| {
                let t = t.trim_start_matches(|c: char| c.is_whitespace());
                t.strip_prefix(name).and_then(|v| v.strip_prefix('='))
            })
            .collect()
    }

    #[test]
    fn only_our_mail_from_a_configured_domain_is_signed() {
        let k = Keys::new();
        let (signing, report) = Signing::load(
            &config(vec![
                DomainConfig {
                    name: "Example.com".into(),
                    subdomains: true,
                    keys: vec![k.key("ed", Algorithm::Ed25519Sha256)],
                },
                DomainConfig {
                    name: "other.test".into(),
                    subdomains: false,
                    keys: vec![k.key("o", Algorithm::Ed25519Sha256)],
                },
            ]),
            None,
        );
        assert!(report.iter().all(|r| r.result.is_ok()));
        let head = |from: &str| format!("From: {from}\r\nSubject: s\r\n\r\n");
        let domain = |d: Decision| match d {
            Decision::Sign(d) => d.domain.clone(),
            Decision::Skip(why) => format!("{why:?}"),
        };
        let h = head("a@example.com");
        assert_eq!(domain(signing.decide(RELAYED, h.as_bytes())), "example.com");
        // A subdomain with `subdomains = true` signs as the parent; not so for other.test.
        let h = head("a@mail.EXAMPLE.com");
        assert_eq!(domain(signing.decide(RELAYED, h.as_bytes())), "example.com");
        let h = head("a@x.other.test");
        assert!(
            matches!(signing.decide(RELAYED, h.as_bytes()), Decision::Skip(Unsigned::NoKey(d)) if d == "x.other.test")
        );
        // Mail passing through is never signed, even From our domain.
        let h = head("a@example.com");
        assert!(matches!(
            signing.decide(Source::default(), h.as_bytes()),
            Decision::Skip(Unsigned::NotOurs)
        ));
        // Each origin counts only when listed.
        let only_auth = DkimConfig {
            origins: vec![Origin::Authenticated],
            ..config(vec![DomainConfig {
                name: "example.com".into(),
                subdomains: false,
                keys: vec![k.key("e2", Algorithm::Ed25519Sha256)],
            }])
        };
        let (s2, _) = Signing::load(&only_auth, None);
        assert!(matches!(
            s2.decide(RELAYED, h.as_bytes()),
            Decision::Skip(Unsigned::NotOurs)
        ));
        let submitted = Source {
            authenticated: true,
            ..Source::default()
        };
        assert!(matches!(
            s2.decide(submitted, h.as_bytes()),
            Decision::Sign(_)
        ));
        assert!(matches!(
            Signing::disabled().decide(submitted, h.as_bytes()),
            Decision::Skip(Unsigned::Disabled)
        ));
        assert!(matches!(
            signing.decide(RELAYED, b"Subject: none\r\n\r\n"),
            Decision::Skip(Unsigned::NoFrom(_))
        ));
    }

    #[test]
    fn dual_signatures_oversign_from_and_do_not_depend_on_pieces_or_line_ends() {
        let k = Keys::new();
        let (signing, _) = Signing::load(
            &config(vec![DomainConfig {
                name: "example.com".into(),
                subdomains: false,
                keys: vec![
                    k.key("rsa", Algorithm::RsaSha256),
                    k.key("ed", Algorithm::Ed25519Sha256),
                ],
            }]),
            None,
        );
        let Decision::Sign(d) = signing.decide(RELAYED, b"From: a@example.com\r\n\r\n") else {
            panic!("not signed");
        };
        let mut content =
            b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n\r\n".to_vec();
        for i in 0..5000 {
            content.extend_from_slice(format!("line {i}  with  spaces \r\n").as_bytes());
        }
        let whole = sign_in_pieces(&d, &content, content.len());
        assert!(whole.starts_with("DKIM-Signature:"));
        assert_eq!(whole.matches("DKIM-Signature:").count(), 2);
        assert!(whole.contains("a=rsa-sha256") && whole.contains("a=ed25519-sha256"));
        assert!(whole.contains("s=rsa") && whole.contains("s=ed"));
        assert!(whole.contains("c=relaxed/relaxed"));
        let h: String = tag(&whole, "h")[0].split_whitespace().collect();
        assert_eq!(
            h.split(':')
                .filter(|x| x.eq_ignore_ascii_case("From"))
                .count(),
            2,
            "From oversigned: {h}"
        );
        let bh = tag(&whole, "bh");
        for size in [1, 3, 7, 4096, 65536] {
            assert_eq!(
                tag(&sign_in_pieces(&d, &content, size), "bh"),
                bh,
                "pieces of {size}"
            );
        }
        // Bare LF line ends are signed as the CRLF the SMTP client sends.
        let lf: Vec<u8> = String::from_utf8(content.clone())
            .unwrap()
            .replace("\r\n", "\n")
            .into_bytes();
        assert_eq!(tag(&sign_in_pieces(&d, &lf, 1000), "bh"), bh);
        // An unterminated last line is signed as terminated, as it is sent.
        let mut open = content.clone();
        open.truncate(open.len() - 2);
        assert_eq!(tag(&sign_in_pieces(&d, &open, 999), "bh"), bh);
    }

    #[test]
    fn an_endless_header_section_is_refused_not_buffered() {
        let k = Keys::new();
        let (signing, _) = Signing::load(
            &config(vec![DomainConfig {
                name: "example.com".into(),
                subdomains: false,
                keys: vec![k.key("ed", Algorithm::Ed25519Sha256)],
            }]),
            None,
        );
        let Decision::Sign(d) = signing.decide(RELAYED, b"From: a@example.com\r\n\r\n") else {
            panic!("not signed");
        };
        let mut s = d.start();
        s.feed(b"From: a@example.com\r\n");
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for _ in 0..(MAX_HEADER_SECTION / line.len() + 2) {
            s.feed(line);
        }
        assert!(matches!(s.finish(), Err(SignError::HeaderTooLarge)));
        // The boundary split across pieces is found.
        let mut s = d.start();
        s.feed(b"From: a@example.com\r\n\r");
        s.feed(b"\n");
        for _ in 0..(MAX_HEADER_SECTION / line.len() + 2) {
            s.feed(line);
        }
        assert!(s.finish().is_ok());
    }

    #[test]
    fn a_reload_with_a_broken_key_keeps_the_previous_one() {
        let k = Keys::new();
        let cfg = config(vec![DomainConfig {
            name: "example.com".into(),
            subdomains: false,
            keys: vec![
                k.key("ed", Algorithm::Ed25519Sha256),
                k.key("new", Algorithm::Ed25519Sha256),
            ],
        }]);
        let (first, _) = Signing::load(&cfg, None);
        let public = first.domain("example.com").unwrap().keys[0].public.clone();
        // Both files become unreadable (mode 0644): the old "ed" key is kept, and so is
        // "new"; a third key with no previous is left out.
        for key in &cfg.domains[0].keys {
            std::fs::set_permissions(&key.key_file, std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let mut cfg2 = cfg.clone();
        let mut third = k.key("third", Algorithm::Ed25519Sha256);
        std::fs::set_permissions(&third.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        third.selector = "third".into();
        cfg2.domains[0].keys.push(third);
        let (second, report) = Signing::load(&cfg2, Some(&first));
        assert_eq!(report.len(), 3);
        assert!(report.iter().all(|r| r.result.is_err()));
        assert_eq!(
            report.iter().map(|r| r.kept_previous).collect::<Vec<_>>(),
            [true, true, false]
        );
        let d = second.domain("example.com").unwrap();
        assert_eq!(d.keys.len(), 2);
        assert_eq!(d.keys[0].public, public);
        // Without a previous state, nothing signs.
        let (none, _) = Signing::load(&cfg, None);
        assert!(!none.enabled());
    }
}
