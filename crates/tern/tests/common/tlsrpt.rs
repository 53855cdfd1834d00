//! Helpers of the TLS reporting scenarios (RFC 8460): a test PKI, an HTTPS report
//! receiver (Python's `http.server` under `ssl` on a loopback address, stopped by
//! `Drop`), and the check of a report against the JSON Schema written from RFC 8460
//! (`crates/tern-reports/schema/rfc8460-report.schema.json`, Python `jsonschema`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{python, require_program};

/// The schema written from RFC 8460 §4.4.
pub const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tern-reports/schema/rfc8460-report.schema.json"
);

/// A CA and a leaf certificate for `names`, as PEM files in `dir`: (ca, cert, key).
pub fn pki(dir: &Path, names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Tern TLS-RPT test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    std::fs::write(p("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(p("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(p("key.pem"), key.serialize_pem()).unwrap();
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

const RECEIVER: &str = r#"
import http.server, json, os, ssl, sys
ip, cert, key, out, portfile = sys.argv[1:6]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get('Content-Length', '0'))
        body = self.rfile.read(min(n, 1 << 20))
        k = len([f for f in os.listdir(out) if f.endswith('.json')])
        with open(os.path.join(out, '%d.json' % k), 'w') as f:
            json.dump({'path': self.path, 'content_type': self.headers.get('Content-Type')}, f)
        with open(os.path.join(out, '%d.tmp' % k), 'wb') as f:
            f.write(body)
        os.rename(os.path.join(out, '%d.tmp' % k), os.path.join(out, '%d.body' % k))
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer((ip, 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open(portfile + '.tmp', 'w') as f:
    f.write(str(srv.server_address[1]))
os.rename(portfile + '.tmp', portfile)
srv.serve_forever()
"#;

/// One POST the receiver took.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The request path.
    pub path: String,
    /// Its `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

/// An HTTPS server taking report POSTs on `ip`, answering 200.
pub struct HttpsReceiver {
    child: Child,
    dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
}

impl HttpsReceiver {
    /// Starts it with `cert` and `key` (PEM files); waits until it listens.
    pub fn start(ip: IpAddr, cert: &str, key: &str) -> HttpsReceiver {
        let py = require_program("python3");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("posts");
        std::fs::create_dir(&out).unwrap();
        let portfile = dir.path().join("port");
        let mut child = Command::new(py)
            .arg("-c")
            .arg(RECEIVER)
            .args([&ip.to_string(), cert, key])
            .arg(&out)
            .arg(&portfile)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(t) = std::fs::read_to_string(&portfile)
                && let Ok(p) = t.trim().parse::<u16>()
            {
                break p;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the HTTPS receiver exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "HTTPS receiver not ready in 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        HttpsReceiver { child, dir, port }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("posts")
    }

    /// The POSTs taken so far, in order.
    pub fn posts(&self) -> Vec<Posted> {
        let mut got = Vec::new();
        for k in 0.. {
            let body = self.out().join(format!("{k}.body"));
            let Ok(body) = std::fs::read(body) else { break };
            let meta: Value = serde_json::from_str(
                &std::fs::read_to_string(self.out().join(format!("{k}.json"))).unwrap(),
            )
            .unwrap();
            got.push(Posted {
                path: meta["path"].as_str().unwrap_or_default().to_owned(),
                content_type: meta["content_type"].as_str().unwrap_or_default().to_owned(),
                body,
            });
        }
        got
    }

    /// Waits for `n` POSTs.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Posted> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.posts();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} POSTs in {limit:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CHECK: &str = r#"
import email, email.policy, gzip, json, sys, jsonschema
kind, path, schema_path = sys.argv[1:4]
raw = open(path, 'rb').read()
meta = {}
if kind == 'mail':
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    ct = msg.get_content_type()
    assert ct == 'multipart/report', ct
    assert msg.get_param('report-type') == 'tlsrpt', msg.get_param('report-type')
    parts = [p for p in msg.walk() if p.get_content_type() == 'application/tlsrpt+gzip']
    assert len(parts) == 1, [p.get_content_type() for p in msg.walk()]
    texts = [p for p in msg.walk() if p.get_content_type() == 'text/plain']
    assert len(texts) == 1
    meta = {'filename': parts[0].get_filename(), 'subject': str(msg['subject']),
            'from': str(msg['from']), 'domain': str(msg['TLS-Report-Domain']),
            'submitter': str(msg['TLS-Report-Submitter'])}
    raw = parts[0].get_content()
report = json.loads(gzip.decompress(raw))
schema = json.load(open(schema_path))
jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(report)
print(json.dumps({'report': report, 'meta': meta}))
"#;

/// Validates a report against the schema: `mail` is a whole message (checked as RFC
/// 8460 §5.3 says), or else the gzipped JSON. Returns {"report": .., "meta": ..}.
pub fn check(mail: bool, bytes: &[u8]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report");
    std::fs::write(&file, bytes).unwrap();
    let kind = if mail { "mail" } else { "gzip" };
    let out = python(
        CHECK,
        &[kind, file.to_str().unwrap(), SCHEMA],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "the report does not validate:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(bytes)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The summary of the report's policy of `policy_type` (successes, failures).
pub fn counts(report: &Value, policy_type: &str) -> (u64, u64) {
    let p = report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"]["policy-type"] == policy_type)
        .unwrap_or_else(|| panic!("no {policy_type} policy in {report}"));
    (
        p["summary"]["total-successful-session-count"]
            .as_u64()
            .unwrap(),
        p["summary"]["total-failure-session-count"]
            .as_u64()
            .unwrap(),
    )
}
