//! ARC helpers for the sealing scenarios: the `[arc]` section for a key made with `tern
//! dkim generate` (`crate::common::dkim::generate`), an upstream forwarder's seal made
//! by dkimpy (`dkim.arc_sign`), and an independent verifier, dkimpy's `dkim.arc_verify`,
//! answering its DNS queries from the records the test publishes, never the network.

#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

use super::dkim::{TestKey, generate};
use super::peers::{DnsServer, Received, SmtpPeer, send_with};
use super::{free_port, require_python_modules, toml_str};

/// A forwarding world for the sealing scenarios: an upstream forwarder's key
/// (`u1._domainkey.upstream.test`, published), Tern's sealing key (`arc` at
/// `forward.test`, not published: the verifier is given it), and `dest.test`'s MX on
/// 127.0.0.2 answered by `sink`.
pub struct Forwarding {
    /// Holds the key files.
    pub keys: tempfile::TempDir,
    /// The upstream forwarder's key.
    pub up: TestKey,
    /// Tern's sealing key.
    pub ours: TestKey,
    /// The scripted DNS server.
    pub dns: DnsServer,
    /// The next hop's port on 127.0.0.2.
    pub port: u16,
    /// The next hop.
    pub sink: SmtpPeer,
}

/// Builds the [`Forwarding`] world.
pub fn forwarding() -> Forwarding {
    let keys = tempfile::tempdir().unwrap();
    let up = generate(keys.path(), "upstream.test", "u1", "rsa");
    let ours = generate(keys.path(), "forward.test", "arc", "rsa");
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("dest.test", &[(10, "mx.dest.test")], 300);
    dns.set_a("mx.dest.test", "127.0.0.2".parse().unwrap(), 300);
    dns.set_txt(&up.name(), &up.strings, 300);
    let sink = SmtpPeer::start_on("127.0.0.2", port, &[]);
    Forwarding {
        keys,
        up,
        ours,
        dns,
        port,
        sink,
    }
}

/// The two cases the chain scenarios forward, each already sealed `i=1` by the upstream
/// forwarder `up` (checked with dkimpy): `good` (`X-Case: good`, the chain valid) and
/// `broken` (`X-Case: broken`, a footer added after the seal: the chain fails).
pub fn good_and_broken(up: &TestKey) -> (Vec<u8>, Vec<u8>) {
    let good = upstream_seal(&posted("good"), up, "upstream.test");
    assert_eq!(top_seal(&good), Some((1, "none".to_string())));
    assert_eq!(verify(&good, &[up])["cv"], "pass", "the upstream set");
    let mut broken = upstream_seal(&posted("broken"), up, "upstream.test");
    broken.extend_from_slice(b"-- \r\nA footer added after the seal.\r\n");
    assert_eq!(verify(&broken, &[up])["cv"], "fail", "the broken set");
    (good, broken)
}

/// Sends each message from ann@origin.test to a@dest.test through Tern at `tern` and
/// returns what `sink` received, all of them.
pub fn forward_all(tern: std::net::SocketAddr, sink: &SmtpPeer, msgs: &[&[u8]]) -> Vec<Received> {
    for m in msgs {
        send_with(
            tern,
            "MAIL FROM:<ann@origin.test>",
            &["RCPT TO:<a@dest.test>"],
            m,
        );
    }
    let got = sink.wait_for(msgs.len(), Duration::from_secs(30));
    assert_eq!(got.len(), msgs.len());
    got
}

/// A message posted by ann@origin.test to a list at upstream.test that forwards it, with
/// the upstream's own Authentication-Results (which dkimpy's `arc_sign` seals); `case`
/// is its Subject and `X-Case`.
pub fn posted(case: &str) -> Vec<u8> {
    format!(
        "Authentication-Results: upstream.test; spf=pass smtp.mailfrom=ann@origin.test\r\nX-Case: {case}\r\nFrom: Ann <ann@origin.test>\r\nTo: <list@upstream.test>\r\nSubject: {case}\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{case}@origin.test>\r\n\r\nPosted to a list that forwards.\r\n"
    )
    .into_bytes()
}

/// An `[arc]` section sealing with `key`, plus `extra` keys.
pub fn section(key: &TestKey, extra: &str) -> String {
    format!(
        "[arc]\nseal = true\ndomain = {}\nselector = {}\nkey_file = {}\n{extra}\n",
        toml_str(&key.domain),
        toml_str(&key.selector),
        toml_str(&key.file.display().to_string())
    )
}

const SIGN: &str = r#"
import dkim, sys
msg = open(sys.argv[1], "rb").read()
key = open(sys.argv[2], "rb").read()
fields = dkim.arc_sign(msg, sys.argv[3].encode(), sys.argv[4].encode(), key, sys.argv[5].encode(),
                       include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
if not fields:
    sys.exit("dkimpy made no ARC set")
sys.stdout.buffer.write(b"".join(fields) + msg)
"#;

/// `content` sealed by dkimpy as an upstream forwarder: it must carry an
/// Authentication-Results of `srv_id` (whose `arc=` result dkimpy takes as `cv=`).
pub fn upstream_seal(content: &[u8], key: &TestKey, srv_id: &str) -> Vec<u8> {
    require_python_modules(&["dkim", "authres"]);
    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, content).unwrap();
    let out = super::python(
        SIGN,
        &[
            msg.to_str().unwrap(),
            key.file.to_str().unwrap(),
            &key.selector,
            &key.domain,
            srv_id,
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "dkimpy arc_sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

const VERIFY: &str = r#"
import dkim, json, sys
records = json.load(open(sys.argv[2]))
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return records.get(name.rstrip(".").lower(), "").encode()
msg = open(sys.argv[1], "rb").read()
cv, results, comment = dkim.arc_verify(msg, dnsfunc=dnsfunc)
print(json.dumps({"cv": (cv or b"").decode(), "comment": comment,
                  "instances": [{"instance": r["instance"], "cv": r["cv"].decode(),
                                 "ams_valid": bool(r["ams-valid"]), "as_valid": bool(r["as-valid"]),
                                 "ams_domain": r["ams-domain"].decode() if isinstance(r["ams-domain"], bytes) else r["ams-domain"]}
                                for r in results]}))
"#;

/// dkimpy's verdict on the ARC chain of `content`: `cv` (`pass`, `fail`, `none`, or
/// empty when a seal said fail), `comment`, and per instance `cv`, `ams_valid`,
/// `as_valid`, with the keys' records as the only DNS.
pub fn verify(content: &[u8], keys: &[&TestKey]) -> Value {
    require_python_modules(&["dkim"]);
    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, content).unwrap();
    let records: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| (k.name(), Value::String(k.text())))
        .collect();
    let zone = dir.path().join("records.json");
    std::fs::write(&zone, Value::Object(records).to_string()).unwrap();
    let out = super::python(
        VERIFY,
        &[msg.to_str().unwrap(), zone.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "dkimpy arc_verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `i=` and `cv=` of the topmost ARC-Seal, `None` when there is none.
pub fn top_seal(content: &[u8]) -> Option<(u32, String)> {
    let text = String::from_utf8_lossy(content);
    let line = text.lines().find_map(|l| l.strip_prefix("ARC-Seal:"))?;
    let tag = |name: &str| {
        line.split(';')
            .map(str::trim)
            .find_map(|t| t.strip_prefix(name))
            .map(str::to_string)
    };
    Some((tag("i=")?.parse().ok()?, tag("cv=")?))
}

/// Asserts that dkimpy validates the chain of `content`, whose newest set is `i=
/// instance` with `cv`, by `sealer`.
pub fn assert_sealed(content: &[u8], keys: &[&TestKey], instance: u32, cv: &str, what: &str) {
    let head = String::from_utf8_lossy(&content[..content.len().min(4000)]).to_string();
    assert_eq!(
        top_seal(content),
        Some((instance, cv.to_string())),
        "{what}: {head}"
    );
    let v = verify(content, keys);
    assert_eq!(v["cv"], "pass", "{what}: dkimpy says {v}\n{head}");
}
