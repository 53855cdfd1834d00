//! `tern dkim generate` writes a key file with mode 0600 (whatever the umask), refuses to
//! replace an existing one, and prints the TXT record in strings of at most 255 octets;
//! `tern dkim check` asks the configured name server (a dnslib server on loopback) and
//! says for each selector of the domain: `matches` when the printed record is
//! published, `differs` when another key's record is, `missing` when none is; its exit
//! code is non-zero unless every selector matches.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::common::dkim::{generate, generate_with_umask, section};
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
            section(&[&rsa, &ed], "")
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
    let (ok, text) = check(&config);
    assert!(ok, "{text}");
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
