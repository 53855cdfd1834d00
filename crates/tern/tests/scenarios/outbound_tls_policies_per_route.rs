//! Outbound TLS per route: `verify` delivers over TLS when the certificate chains to a
//! trusted CA (`delivery.ca_file`) and names the host, and defers when the name is
//! wrong; `encrypt` defers rather than send in clear to a peer without STARTTLS; `may`
//! (the default) encrypts whenever the peer offers it. The TLS version and cipher are in
//! event 4001.

use std::path::Path;
use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{free_port, send_one, simple_message};

/// A CA and a leaf certificate for `names`, as PEM files in `dir`; returns (ca, cert, key).
fn pki(dir: &Path, names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tern route test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    std::fs::write(p("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(p("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(p("key.pem"), leaf_key.serialize_pem()).unwrap();
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn verify_encrypt_and_may_each_do_what_they_promise() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), &["mx.secure.test"]);
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    // secure.test: right name. wrongname.test: the same certificate under another name.
    dns.set_mx("secure.test", &[(10, "mx.secure.test")], 300);
    dns.set_a("mx.secure.test", "127.0.0.2".parse().unwrap(), 300);
    dns.set_mx("wrongname.test", &[(10, "mx.wrongname.test")], 300);
    dns.set_a("mx.wrongname.test", "127.0.0.2".parse().unwrap(), 300);
    dns.set_mx("plain.test", &[(10, "mx.plain.test")], 300);
    dns.set_a("mx.plain.test", "127.0.0.3".parse().unwrap(), 300);
    let tls_peer = SmtpPeer::start_on_with_tls("127.0.0.2", port, &cert, &key);
    let plain_peer = SmtpPeer::start_on("127.0.0.3", port, &["accept"]);
    let routes = format!(
        "[[route]]\ndomains = [\"secure.test\", \"wrongname.test\"]\ntransport = \"mx\"\nport = {port}\ntls = \"verify\"\n\n\
         [[route]]\ndomains = [\"plain.test\"]\ntransport = \"mx\"\nport = {port}\ntls = \"encrypt\"\n"
    );
    let tern = delivering_with(&dns, port, &format!("ca_file = \"{ca}\"\n"), &routes).start();

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@secure.test"],
        &simple_message("v", "x"),
    );
    let got = tls_peer.wait_for(1, Duration::from_secs(20));
    let tls = got[0].meta["tls"].as_str().unwrap_or_default().to_string();
    assert!(
        tls.starts_with("TLSv1."),
        "delivered over TLS: {:?}",
        got[0].meta
    );
    let delivered = tern.wait_for_events(4001, 1, Duration::from_secs(10));
    assert!(
        delivered[0]["tls"].as_str().unwrap().starts_with("TLSv1."),
        "{delivered:?}"
    );

    send_one(
        tern.addr(),
        "s@client.test",
        &["b@wrongname.test"],
        &simple_message("w", "x"),
    );
    send_one(
        tern.addr(),
        "s@client.test",
        &["c@plain.test"],
        &simple_message("p", "x"),
    );
    let deferred = tern.wait_for_events(4002, 2, Duration::from_secs(20));
    let reasons: Vec<String> = deferred
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("mx.wrongname.test")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("mx.plain.test")),
        "{reasons:?}"
    );
    assert_eq!(
        tls_peer.received().len(),
        1,
        "nothing sent to the wrong name"
    );
    assert!(
        plain_peer.received().is_empty(),
        "nothing sent in clear under encrypt"
    );

    // `may` (the `*` route): the certificate's name does not matter, TLS is used.
    dns.set_mx("maytls.test", &[(10, "mx.wrongname.test")], 300);
    send_one(
        tern.addr(),
        "s@client.test",
        &["d@maytls.test"],
        &simple_message("m", "x"),
    );
    let got = tls_peer.wait_for(2, Duration::from_secs(20));
    let last = got
        .iter()
        .find(|r| r.rcpts() == vec!["d@maytls.test".to_string()])
        .unwrap();
    assert!(
        last.meta["tls"]
            .as_str()
            .unwrap_or_default()
            .starts_with("TLSv1.")
    );
}
