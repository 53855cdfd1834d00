//! The DNSSEC-signed test world for DANE scenarios: a real authoritative server (Knot DNS,
//! `knotd` in the foreground, its own run and storage directories in a temp dir, on a
//! loopback port) serving zones signed with `ldns-signzone` (ECDSAP256SHA256, one key per
//! zone, fresh for each world):
//! - `dane.test.`: signed, the trust anchor Tern is given (its DNSKEY);
//! - `secure.dane.test.`: signed, its DS in the parent;
//! - `insecure.dane.test.`: not signed, no DS (an insecure delegation);
//! - `bogus.dane.test.`: signed, DS in the parent, but the signature over its MX RRset
//!   altered (a bogus signature).
//!
//! Each child has `@ MX 10 mx`, `mx A <mx_ip>` and the extra records the test gives
//! (TLSA). Knot answers for the parent and the children itself. Waits poll a condition
//! (`kdig` getting the parent's SOA) with a deadline; the server is stopped by `Drop`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Setup, free_port, terminate};

/// The extra records of each child zone (relative names, one record a line).
#[derive(Debug, Clone, Default)]
pub struct ChildRecords {
    /// `secure.dane.test.`
    pub secure: String,
    /// `insecure.dane.test.`
    pub insecure: String,
    /// `bogus.dane.test.`
    pub bogus: String,
}

/// A running signed world.
pub struct SignedZones {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Knot's `address:port` (UDP and TCP).
    pub addr: SocketAddr,
    /// The `dane.test.` DNSKEY file, for `[dane] trust_anchor`.
    pub anchor: PathBuf,
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is missing: install knot, knot-dnsutils and ldnsutils (scripts/test.sh)"
    );
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new key for `zone` in `dir`: its base name (`K<zone>.+013+<id>`).
fn keygen(dir: &Path, zone: &str) -> String {
    let out = run(
        Command::new("ldns-keygen")
            .current_dir(dir)
            .args(["-a", "ECDSAP256SHA256", "-k", zone]),
        "ldns-keygen",
    );
    out.trim().to_string()
}

fn sign(dir: &Path, zone: &str, key: &str) {
    run(
        Command::new("ldns-signzone")
            .current_dir(dir)
            .arg(format!("{zone}.zone"))
            .arg(key),
        "ldns-signzone",
    );
}

fn soa() -> &'static str {
    "@ 300 IN SOA ns.dane.test. hostmaster.dane.test. 1 3600 600 86400 300\n"
}

fn child_zone(name: &str, mx_ip: &str, extra: &str) -> String {
    format!(
        "$ORIGIN {name}.dane.test.\n$TTL 300\n{}@ NS ns.dane.test.\n@ MX 10 mx\nmx A {mx_ip}\n{extra}\n",
        soa()
    )
}

/// Alters the first character of the signature over the MX RRset (tab-separated lines
/// as ldns-signzone writes them).
fn break_mx_signature(path: &Path) {
    let text = std::fs::read_to_string(path).expect("signed zone");
    let mut out = String::new();
    let mut broken = false;
    for line in text.lines() {
        let mut fields: Vec<String> = line.split('\t').map(str::to_string).collect();
        if fields.len() >= 5 && fields[3] == "RRSIG" && fields[4].starts_with("MX ") {
            let mut parts: Vec<String> = fields[4].split(' ').map(str::to_string).collect();
            let sig = parts.last_mut().expect("signature");
            let first = if sig.starts_with('A') { "B" } else { "A" };
            sig.replace_range(0..1, first);
            fields[4] = parts.join(" ");
            broken = true;
        }
        out.push_str(&fields.join("\t"));
        out.push('\n');
    }
    assert!(broken, "no MX signature found to break");
    std::fs::write(path, out).expect("write");
}

impl SignedZones {
    /// Builds and starts the world; MX hosts of every child are at `mx_ip`.
    pub fn start(mx_ip: &str, records: &ChildRecords) -> SignedZones {
        for tool in ["knotd", "kdig", "ldns-keygen", "ldns-signzone"] {
            need(tool);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let zones = dir.path().join("zones");
        for d in ["zones", "run", "db"] {
            std::fs::create_dir(dir.path().join(d)).expect("dir");
        }
        let parent_key = keygen(&zones, "dane.test");
        let secure_key = keygen(&zones, "secure.dane.test");
        let bogus_key = keygen(&zones, "bogus.dane.test");
        let ds = |key: &str| {
            std::fs::read_to_string(zones.join(format!("{key}.ds")))
                .expect("ds")
                .replace("\tIN\tDS", " 300 IN DS")
        };
        let parent = format!(
            "$ORIGIN dane.test.\n$TTL 300\n{}@ NS ns\nns A 127.0.0.1\nsecure NS ns\ninsecure NS ns\nbogus NS ns\n{}{}",
            soa(),
            ds(&secure_key),
            ds(&bogus_key)
        );
        std::fs::write(zones.join("dane.test.zone"), parent).expect("zone");
        for (name, extra) in [
            ("secure", &records.secure),
            ("insecure", &records.insecure),
            ("bogus", &records.bogus),
        ] {
            std::fs::write(
                zones.join(format!("{name}.dane.test.zone")),
                child_zone(name, mx_ip, extra),
            )
            .expect("zone");
        }
        sign(&zones, "dane.test", &parent_key);
        sign(&zones, "secure.dane.test", &secure_key);
        sign(&zones, "bogus.dane.test", &bogus_key);
        break_mx_signature(&zones.join("bogus.dane.test.zone.signed"));
        let anchor = dir.path().join("anchor.key");
        std::fs::copy(zones.join(format!("{parent_key}.key")), &anchor).expect("anchor");

        let port = free_port("127.0.0.1".parse().expect("ip"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let p = |s: &str| dir.path().join(s).display().to_string();
        let conf = format!(
            "server:\n    rundir: \"{run}\"\n    listen: 127.0.0.1@{port}\ndatabase:\n    storage: \"{db}\"\nlog:\n  - target: stderr\n    any: info\ntemplate:\n  - id: default\n    storage: \"{zones}\"\n    semantic-checks: off\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\nzone:\n  - domain: dane.test\n    file: dane.test.zone.signed\n  - domain: secure.dane.test\n    file: secure.dane.test.zone.signed\n  - domain: bogus.dane.test\n    file: bogus.dane.test.zone.signed\n  - domain: insecure.dane.test\n    file: insecure.dane.test.zone\n",
            run = p("run"),
            db = p("db"),
            zones = p("zones"),
        );
        let conf_path = dir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).expect("conf");
        let log = std::fs::File::create(dir.path().join("knot.log")).expect("log");
        let child = Command::new("knotd")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("knotd");
        let mut world = SignedZones {
            child: Some(child),
            dir,
            addr,
            anchor,
        };
        world.wait_ready();
        world
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Every zone loaded: the last one's SOA answers.
            let ok = [
                "dane.test",
                "secure.dane.test",
                "insecure.dane.test",
                "bogus.dane.test",
            ]
            .iter()
            .all(|z| {
                Command::new("kdig")
                    .arg(format!("@{}", self.addr.ip()))
                    .args(["-p", &self.addr.port().to_string(), "+short", "SOA", z])
                    .output()
                    .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
            });
            if ok {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("knotd exited: {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "knotd not ready within 20 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Knot's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }

    /// `[dns]` (Knot) and `[dane]` (its trust anchor) for Tern.
    pub fn sections(&self) -> String {
        format!(
            "[dns]\nreverse_lookups = false\nnameservers = [\"{}\"]\ntimeout_ms = 2000\nfailure_ttl_secs = 1\n\n[dane]\ntrust_anchor = \"{}\"\n",
            self.addr,
            self.anchor.display()
        )
    }

    /// A Tern that delivers through this world: retries after 1-2 s, `routes` first, then
    /// every `.dane.test` domain by MX on `mx_port` with `tls` (e.g. `"dane"`).
    pub fn tern(&self, mx_port: u16, tls: &str, routes: &str) -> super::Tern {
        Setup::new()
            .dns(&self.sections())
            .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
            .section(&format!(
                "[delivery]\nconnect_timeout_secs = 2\ngreeting_timeout_secs = 3\ncommand_timeout_secs = 5\n\n{routes}\n[[route]]\ndomains = [\".dane.test\"]\ntransport = \"mx\"\nport = {mx_port}\ntls = \"{tls}\"\n"
            ))
            .start()
    }
}

impl Drop for SignedZones {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }
}

/// A self-signed certificate for `name` as PEM files in `dir`: (cert, key, SHA-256 of its
/// SubjectPublicKeyInfo in hex, for a `3 1 1` TLSA record).
pub fn tls_leaf(dir: &Path, name: &str) -> (String, String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let p = |n: &str| dir.join(n).display().to_string();
    std::fs::write(p("cert.pem"), cert.pem()).expect("cert");
    std::fs::write(p("key.pem"), key.serialize_pem()).expect("key");
    (p("cert.pem"), p("key.pem"), hex)
}

/// A `3 1 1` TLSA line for `mx` at `port`.
pub fn tlsa_3_1_1(port: u16, hex: &str) -> String {
    format!("_{port}._tcp.mx 300 IN TLSA 3 1 1 {hex}")
}

/// A CA and a leaf for `name` signed by it, as PEM files in `dir` (the leaf's file holds
/// the leaf then the CA, so the peer sends both): (chain, key, SHA-256 of the CA
/// certificate in hex, for a `2 0 1` TLSA record).
pub fn tls_chain(dir: &Path, name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tern DANE-TA test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let digest = ring::digest::digest(&ring::digest::SHA256, ca.der());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let p = |n: &str| dir.join(n).display().to_string();
    std::fs::write(p("chain.pem"), format!("{}{}", leaf.pem(), ca.pem())).expect("chain");
    std::fs::write(p("chain-key.pem"), key.serialize_pem()).expect("key");
    (p("chain.pem"), p("chain-key.pem"), hex)
}

/// What a DANE refusal leaves, waited for in order: event 4181 (`delivery.tls.refused`)
/// whose reason has `4.7.5` and `reason_part`, then the deferral (4002) with `4.7.5`.
/// Returns the 4181 events.
pub fn expect_refused_then_deferred(
    tern: &super::Tern,
    reason_part: &str,
) -> Vec<serde_json::Value> {
    let refused = tern.wait_for_events(4181, 1, Duration::from_secs(30));
    let reason = refused[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("4.7.5") && reason.contains(reason_part),
        "{refused:?}"
    );
    let deferred = tern.wait_for_events(4002, 1, Duration::from_secs(20));
    assert!(
        deferred[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("4.7.5"),
        "{deferred:?}"
    );
    refused
}

/// The world of most DANE scenarios: a TLS peer on 127.0.0.2 (a free port) presenting a
/// leaf certificate for `host`, and the signed zones built by `records(port, spki)` from
/// that port and the certificate's SPKI digest (e.g. a `3 1 1` record of it).
pub struct LeafPeer {
    /// The signed zones.
    pub world: SignedZones,
    /// The TLS peer.
    pub peer: super::peers::SmtpPeer,
    /// Its port.
    pub port: u16,
    /// Holds the certificate files.
    pub dir: tempfile::TempDir,
}

/// Starts a [`LeafPeer`].
pub fn leaf_peer(host: &str, records: impl FnOnce(u16, &str) -> ChildRecords) -> LeafPeer {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, spki) = tls_leaf(dir.path(), host);
    let port = free_port("127.0.0.2".parse().expect("address"));
    let world = SignedZones::start("127.0.0.2", &records(port, &spki));
    let peer = super::peers::SmtpPeer::start_on_with_tls("127.0.0.2", port, &cert, &key);
    LeafPeer {
        world,
        peer,
        port,
        dir,
    }
}
