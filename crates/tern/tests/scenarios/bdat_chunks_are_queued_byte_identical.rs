//! CHUNKING (RFC 3030): a well-formed message (CRLF line endings) sent in BDAT chunks is
//! queued byte-for-byte, whatever the chunk boundaries (inside a CRLF, inside a
//! `CRLF.CRLF`), with no dot-unstuffing and no end-of-data detection inside the chunks;
//! both one chunk per round trip and a fully pipelined transaction ending in
//! `BDAT 0 LAST` work. BDAT content is held to the same rules as DATA content: bare LFs
//! and CRs are stored as CRLF (the default `bare_line_endings = "normalize"`), a CRLF
//! split between chunks stays one line ending, and a 921,608-octet line is refused with
//! `552 5.6.0` while the session stays in sync.
//!
//! Driven by a Python raw socket client, because swaks (20201014) cannot send BDAT.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::common::{Setup, python, require_python_modules, split_received};

const SCRIPT: &str = r#"
import json, socket, sys
host, port, path, cuts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
content = open(path, "rb").read()
cuts = [int(x) for x in cuts.split(",")]
parts = [content[a:b] for a, b in zip([0] + cuts, cuts + [len(content)])]
s = socket.create_connection((host, port), timeout=30)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        l = f.readline()
        if not l:
            raise EOFError("server closed the connection")
        lines.append(l.decode().rstrip("\r\n"))
        if l[3:4] != b"-":
            return lines
out = {"greeting": reply()}
s.sendall(b"EHLO bdat.client.test\r\n")
out["ehlo"] = reply()
# Message 1: one command and one chunk per round trip.
r = []
s.sendall(b"MAIL FROM:<bdat1@client.test>\r\n"); r.append(reply())
s.sendall(b"RCPT TO:<one@localhost>\r\n"); r.append(reply())
for i, p in enumerate(parts):
    last = b" LAST" if i == len(parts) - 1 else b""
    s.sendall(b"BDAT %d%s\r\n" % (len(p), last) + p)
    r.append(reply())
out["m1"] = r
# Message 2: the whole transaction in one write, closed by BDAT 0 LAST.
buf = b"MAIL FROM:<bdat2@client.test>\r\nRCPT TO:<two@localhost>\r\n"
for p in parts:
    buf += b"BDAT %d\r\n" % len(p) + p
buf += b"BDAT 0 LAST\r\n"
s.sendall(buf)
out["m2"] = [reply() for _ in range(2 + len(parts) + 1)]
# Message 3: bare LFs and CRs; a CRLF split between chunks; a CR ending a chunk with no
# LF after it.
bare = [b"Subject: bare\n\nline one\nline two\r", b"\nline three\rline four\r", b"no LF after that CR\r\n"]
buf = b"MAIL FROM:<bdat3@client.test>\r\nRCPT TO:<three@localhost>\r\n"
for i, p in enumerate(bare):
    buf += b"BDAT %d%s\r\n" % (len(p), b" LAST" if i == len(bare) - 1 else b"") + p
s.sendall(buf)
out["m3"] = [reply() for _ in range(2 + len(bare))]
# Message 4: one line of 921,608 octets in one chunk: refused, and the session is in sync.
s.sendall(b"MAIL FROM:<bdat4@client.test>\r\nRCPT TO:<four@localhost>\r\nBDAT 921608 LAST\r\n" + b"x" * 921606 + b"\r\nNOOP\r\n")
out["m4"] = [reply() for _ in range(4)]
s.sendall(b"QUIT\r\n")
out["quit"] = reply()
print(json.dumps(out))
"#;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn bdat_chunks_are_stored_exactly_as_sent() {
    require_python_modules(&["socket", "json"]);
    let tern = Setup::new().start();
    let work = tempfile::tempdir().unwrap();

    let head = "From: <bdat@client.test>\r\nSubject: chunked\r\n\r\nfirst line\r\n".as_bytes();
    let mut content = head.to_vec();
    // A lone dot line: in DATA this would end the message; in BDAT it is content.
    let lone_dot_at = content.len();
    content.extend_from_slice(b".\r\n..two dots stay two dots\r\n.leading dot\r\n");
    content.extend_from_slice("8-bit: Grüße, ½ ✓\r\n".as_bytes());
    let crlf_at = content.len();
    content.extend_from_slice(b"a line whose CRLF is split across chunks\r\n");
    while content.len() < 100_000 {
        content.extend_from_slice(b"filler filler filler filler filler filler filler filler\r\n");
    }
    content.extend_from_slice(b"last line\r\n");
    let path = work.path().join("message.eml");
    std::fs::write(&path, &content).unwrap();
    // Cut just after the CRLF before the lone dot, after the dot, between a CR and its
    // LF, and in the filler.
    let cr = crlf_at + "a line whose CRLF is split across chunks\r".len();
    let cuts = [lone_dot_at - 2, lone_dot_at + 1, cr, 50_000];
    let cuts_arg = cuts
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");

    let addr = tern.addr();
    let out = python(
        SCRIPT,
        &[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &path.display().to_string(),
            &cuts_arg,
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "BDAT client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ehlo: Vec<&str> = r["ehlo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        ehlo.contains(&"250-CHUNKING"),
        "CHUNKING advertised: {ehlo:?}"
    );

    let mut ids = Vec::new();
    for m in ["m1", "m2"] {
        let replies: Vec<String> = r[m]
            .as_array()
            .unwrap()
            .iter()
            .map(|rep| {
                rep.as_array()
                    .unwrap()
                    .last()
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let (last, rest) = replies.split_last().unwrap();
        for rep in rest {
            assert!(
                rep.starts_with("250 "),
                "{m}: every command and chunk accepted: {replies:?}"
            );
        }
        let id = last
            .strip_prefix("250 2.0.0 Ok: queued as ")
            .unwrap_or_else(|| panic!("{m} not queued: {replies:?}"));
        ids.push(id.to_string());
    }
    let chunk_reply = r["m1"][2][0].as_str().unwrap();
    assert_eq!(
        chunk_reply,
        format!("250 2.0.0 {} octets received", cuts[0])
    );

    let last_line = |m: &str| -> Vec<String> {
        r[m].as_array()
            .unwrap()
            .iter()
            .map(|rep| {
                rep.as_array()
                    .unwrap()
                    .last()
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let m3 = last_line("m3");
    let id3 = m3
        .last()
        .and_then(|l| l.strip_prefix("250 2.0.0 Ok: queued as "))
        .unwrap_or_else(|| panic!("m3 not queued: {m3:?}"))
        .to_string();
    let m4 = last_line("m4");
    assert_eq!(
        m4,
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "552 5.6.0 Message has a line longer than 8192 octets",
            "250 2.0.0 Ok"
        ],
        "the over-long line is refused and the session stays in sync"
    );

    let spooled = tern.spooled();
    assert_eq!(spooled.len(), 3);
    let (_, bare) = spooled
        .iter()
        .find(|(m, _)| m.id.to_string() == id3)
        .unwrap();
    let (_, rest) = split_received(&bare.body);
    assert_eq!(
        String::from_utf8_lossy(rest),
        "Subject: bare\r\n\r\nline one\r\nline two\r\nline three\r\nline four\r\nno LF after that CR\r\n",
        "bare line endings stored as CRLF"
    );
    for (id, rcpt) in ids.iter().zip(["one@localhost", "two@localhost"]) {
        let (listed, stored) = spooled
            .iter()
            .find(|(m, _)| m.id.to_string() == *id)
            .unwrap();
        assert_eq!(
            listed.envelope.as_ref().unwrap().recipients[0].address,
            rcpt
        );
        let (received, rest) = split_received(&stored.body);
        assert!(received.contains(&format!("id {id}")), "{received}");
        assert!(
            rest == content.as_slice(),
            "{id}: stored {} bytes, sent {}; first difference at {:?}",
            rest.len(),
            content.len(),
            rest.iter().zip(&content).position(|(a, b)| a != b)
        );
    }
}
