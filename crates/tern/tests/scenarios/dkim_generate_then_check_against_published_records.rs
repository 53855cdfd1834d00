//! `tern dkim generate` writes a key file with mode 0600 (whatever the umask), refuses to
//! replace an existing one, and prints the TXT record in strings of at most 255 octets;
//! `tern dkim check` asks the configured name server (a dnslib server on loopback) and
//! says for each selector of the domain: `matches` when the printed record is
//! published, `differs` when another key's record is, `missing` when none is; its exit
//! code is non-zero unless every selector matches.
//!
//! Keys move between tools: OpenSSL reads both generated keys and derives the very public
//! key Tern printed, and an Ed25519 key written by `openssl genpkey` (PKCS#8 v1, what a
//! site coming from OpenDKIM has) is loaded by Tern and checked against its record.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::common::dkim::{TestKey, generate, generate_with_umask, section};
use crate::common::peers::DnsServer;
use crate::common::{run, tern_bin};

fn check(config: &std::path::Path) -> (bool, String) {
    let out = run(
        Command::new(tern_bin()).args([
            "dkim",
            "check",
            "--config",
            config.to_str().unwrap(),
            "example.test",
        ]),
        Duration::from_secs(60),
    );
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The public key OpenSSL derives from a private key file, as DKIM's `p=` holds it:
/// SubjectPublicKeyInfo DER for RSA, its last 32 octets (the raw key) for Ed25519.
fn openssl_public(file: &std::path::Path, algorithm: &str) -> Vec<u8> {
    let out = run(
        Command::new("openssl").args([
            "pkey",
            "-in",
            file.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "openssl cannot read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let der = out.stdout;
    if algorithm == "ed25519-sha256" {
        assert_eq!(der.len(), 44, "an Ed25519 SubjectPublicKeyInfo");
        der[12..].to_vec()
    } else {
        der
    }
}

/// Standard base64 of `data`, through Python (an implementation that is not Tern's).
fn b64(data: &[u8]) -> String {
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    let out = run(
        Command::new("python3").args([
            "-c",
            "import base64,sys; print(base64.b64encode(bytes.fromhex(sys.argv[1])).decode())",
            &hex,
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn generated_records_are_checked_against_dns() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    // Generated under a permissive umask: the key is still 0600, its new directory 0700.
    let rsa = generate_with_umask(&keys, "example.test", "r1", "rsa", Some(0));
    let ed = generate(&keys, "example.test", "e1", "ed25519");
    for k in [&rsa, &ed] {
        let mode = std::fs::metadata(&k.file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", k.file.display());
    }
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(
        rsa.strings.len() >= 2,
        "a 2048-bit record needs two strings"
    );
    assert!(rsa.text().starts_with("v=DKIM1; k=rsa; p="));
    assert!(ed.text().starts_with("v=DKIM1; k=ed25519; p="));
    // OpenSSL reads both files and finds the public key Tern printed.
    for k in [&rsa, &ed] {
        let p = b64(&openssl_public(&k.file, k.algorithm));
        assert!(
            k.text().ends_with(&format!("p={p}")),
            "{}: OpenSSL's public key {p} is not the record's: {}",
            k.file.display(),
            k.text()
        );
    }
    // An Ed25519 key from `openssl genpkey` (PKCS#8 v1, the seed only), mode 0600.
    let ossl_file = keys.join("o1.pem");
    let out = run(
        Command::new("openssl").args([
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            ossl_file.to_str().unwrap(),
        ]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&ossl_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ossl = TestKey {
        domain: "example.test".into(),
        selector: "o1".into(),
        algorithm: "ed25519-sha256",
        strings: vec![format!(
            "v=DKIM1; k=ed25519; p={}",
            b64(&openssl_public(&ossl_file, "ed25519-sha256"))
        )],
        file: ossl_file,
    };

    // Never over an existing file.
    let before = std::fs::read(&rsa.file).unwrap();
    let out = run(
        Command::new(tern_bin()).args([
            "dkim",
            "generate",
            "example.test",
            "--selector",
            "r1",
            "--out",
            keys.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&rsa.file).unwrap(), before);

    let mut dns = DnsServer::start();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\n[[listener]]\nname = \"smtp\"\naddress = \"127.0.0.1:2525\"\n{}\n{}",
            dir.path().join("data").display(),
            dns.dns_section(),
            section(&[&rsa, &ed, &ossl], "")
        ),
    )
    .unwrap();

    // Nothing published.
    let (ok, text) = check(&config);
    assert!(!ok, "{text}");
    assert!(
        text.contains("r1._domainkey.example.test: missing"),
        "{text}"
    );
    assert!(
        text.contains("e1._domainkey.example.test: missing"),
        "{text}"
    );

    // Both published as printed.
    dns.set_txt(&rsa.name(), &rsa.strings, 60);
    dns.set_txt(&ed.name(), &ed.strings, 60);
    dns.set_txt(&ossl.name(), &ossl.strings, 60);
    let (ok, text) = check(&config);
    assert!(ok, "{text}");
    assert!(
        text.contains("o1._domainkey.example.test: matches"),
        "{text}"
    );
    assert!(
        text.contains("r1._domainkey.example.test: matches"),
        "{text}"
    );
    assert!(
        text.contains("e1._domainkey.example.test: matches"),
        "{text}"
    );

    // Another key's record at r1: differs, and the exit code says so.
    let other = generate(&dir.path().join("other"), "example.test", "r1", "rsa");
    dns.set_txt(&rsa.name(), &other.strings, 60);
    let (ok, text) = check(&config);
    assert!(!ok, "{text}");
    assert!(
        text.contains("r1._domainkey.example.test: differs"),
        "{text}"
    );
    assert!(
        text.contains("e1._domainkey.example.test: matches"),
        "{text}"
    );
}
