//! Unit tests of the DANE check with rcgen certificates.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, PublicKeyData};

fn sha256(b: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, b).as_ref().to_vec()
}

fn sha512(b: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA512, b).as_ref().to_vec()
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn verifier(records: Vec<Tlsa>, names: &[&str]) -> DaneVerifier {
    DaneVerifier::new(
        Arc::new(DaneTlsa {
            records,
            names: names.iter().map(|n| n.to_string()).collect(),
        }),
        &rustls::crypto::ring::default_provider(),
    )
}

fn rec(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
    Tlsa {
        usage,
        selector,
        matching,
        data,
    }
}

/// A self-signed leaf for `name` and its key's SPKI.
fn leaf(name: &str) -> (CertificateDer<'static>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.der().clone(), key.subject_public_key_info())
}

/// A CA, an intermediate signed by it, a leaf for `name` signed by the intermediate.
struct Chain {
    root: CertificateDer<'static>,
    intermediate: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
}

fn chain(name: &str, leaf_expired: bool) -> Chain {
    let ca_params = || {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let root = CertifiedIssuer::self_signed(ca_params(), KeyPair::generate().unwrap()).unwrap();
    let inter =
        CertifiedIssuer::signed_by(ca_params(), KeyPair::generate().unwrap(), &root).unwrap();
    let mut lp = CertificateParams::new(vec![name.to_string()]).unwrap();
    if leaf_expired {
        lp.not_before = rcgen::date_time_ymd(2020, 1, 1);
        lp.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = lp.signed_by(&leaf_key, &inter).unwrap();
    Chain {
        root: root.der().clone(),
        intermediate: inter.der().clone(),
        leaf: leaf.der().clone(),
    }
}

#[test]
fn dane_ee_matches_by_certificate_and_spki_with_each_matching_type() {
    let (cert, spki) = leaf("mx.example.com");
    let der = cert.as_ref().to_vec();
    for r in [
        rec(3, 0, 0, der.clone()),
        rec(3, 0, 1, sha256(&der)),
        rec(3, 0, 2, sha512(&der)),
        rec(3, 1, 0, spki.clone()),
        rec(3, 1, 1, sha256(&spki)),
        rec(3, 1, 2, sha512(&spki)),
    ] {
        let shown = format!("{r:?}");
        // Under DANE-EE the name does not matter (RFC 7672 §3.1.1).
        let v = verifier(vec![r], &["other.example.net"]);
        assert_eq!(v.check(&cert, &[], now()), Ok(()), "{shown}");
    }
}

#[test]
fn dane_ee_ignores_expiry() {
    let c = chain("mx.example.com", true);
    let v = verifier(
        vec![rec(3, 0, 1, sha256(c.leaf.as_ref()))],
        &["mx.example.com"],
    );
    assert_eq!(v.check(&c.leaf, &[], now()), Ok(()));
}

#[test]
fn mismatched_digest_is_tlsa_invalid() {
    let (cert, spki) = leaf("mx.example.com");
    let mut wrong = sha256(&spki);
    wrong[0] ^= 1;
    let v = verifier(vec![rec(3, 1, 1, wrong)], &["mx.example.com"]);
    let err = v.check(&cert, &[], now()).unwrap_err();
    assert_eq!(err.failure, TlsFailure::TlsaInvalid);
    // Another key entirely.
    let (_, other_spki) = leaf("mx.example.com");
    let v = verifier(vec![rec(3, 1, 1, sha256(&other_spki))], &[]);
    assert_eq!(
        v.check(&cert, &[], now()).unwrap_err().failure,
        TlsFailure::TlsaInvalid
    );
}

#[test]
fn pkix_and_unknown_records_never_match() {
    let (cert, spki) = leaf("mx.example.com");
    let digest = sha256(&spki);
    for r in [
        rec(0, 1, 1, digest.clone()),
        rec(1, 1, 1, digest.clone()),
        rec(3, 2, 1, digest.clone()),
        rec(3, 1, 3, digest.clone()),
        rec(3, 1, 1, digest[..20].to_vec()),
        rec(3, 1, 0, Vec::new()),
    ] {
        assert!(!usable(&r), "{r:?} usable");
        let v = verifier(vec![r], &["mx.example.com"]);
        assert!(v.check(&cert, &[], now()).is_err());
    }
}

#[test]
fn dane_ta_matches_a_chain_certificate_and_checks_the_name() {
    let c = chain("mx.example.com", false);
    let presented = [c.intermediate.clone(), c.root.clone()];
    // The root (selector 0, SHA-256) and the intermediate (SPKI, SHA-512).
    let inter_spki = webpki::EndEntityCert::try_from(&c.intermediate)
        .unwrap()
        .subject_public_key_info()
        .as_ref()
        .to_vec();
    for r in [
        rec(2, 0, 1, sha256(c.root.as_ref())),
        rec(2, 1, 2, sha512(&inter_spki)),
    ] {
        let shown = format!("{r:?}");
        let v = verifier(vec![r.clone()], &["mx.example.com", "example.com"]);
        assert_eq!(v.check(&c.leaf, &presented, now()), Ok(()), "{shown}");
        // The leaf names none of the reference names: refused under DANE-TA.
        let v = verifier(vec![r], &["other.example.net"]);
        let err = v.check(&c.leaf, &presented, now()).unwrap_err();
        assert_eq!(err.failure, TlsFailure::CertificateHostMismatch, "{shown}");
    }
}

#[test]
fn dane_ta_needs_the_anchor_in_the_chain_and_a_valid_leaf() {
    let c = chain("mx.example.com", false);
    let r = rec(2, 0, 1, sha256(c.root.as_ref()));
    // The root is not presented: nothing of the chain matches.
    let v = verifier(vec![r.clone()], &["mx.example.com"]);
    assert_eq!(
        v.check(&c.leaf, std::slice::from_ref(&c.intermediate), now())
            .unwrap_err()
            .failure,
        TlsFailure::TlsaInvalid
    );
    // A DANE-TA record for an unrelated CA presented alongside.
    let other = chain("mx.example.com", false);
    let v = verifier(
        vec![rec(2, 0, 1, sha256(other.root.as_ref()))],
        &["mx.example.com"],
    );
    assert!(
        v.check(
            &c.leaf,
            &[c.intermediate.clone(), other.root.clone()],
            now()
        )
        .is_err()
    );
    // An expired leaf under DANE-TA.
    let old = chain("mx.example.com", true);
    let v = verifier(
        vec![rec(2, 0, 1, sha256(old.root.as_ref()))],
        &["mx.example.com"],
    );
    assert_eq!(
        v.check(
            &old.leaf,
            &[old.intermediate.clone(), old.root.clone()],
            now()
        )
        .unwrap_err()
        .failure,
        TlsFailure::CertificateExpired
    );
}

#[test]
fn the_mismatch_travels_inside_the_rustls_error() {
    let (cert, _) = leaf("mx.example.com");
    let v = verifier(vec![rec(3, 1, 1, vec![0; 32])], &[]);
    let name = ServerName::try_from("mx.example.com").unwrap();
    let err = v
        .verify_server_cert(&cert, &[], &name, &[], now())
        .unwrap_err();
    assert_eq!(TlsFailure::of_rustls(&err), TlsFailure::TlsaInvalid);
}
