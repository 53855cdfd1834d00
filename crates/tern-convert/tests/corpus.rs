//! The malformed-MIME corpus (`tests/corpus/`, described in its README): every message
//! goes through the downgrade, as 8-bit and as binary content, and must never panic or
//! hang. A file named `ok-…` must convert; Python's `email` package (an independent
//! reader) must then find in the copy the same parts, in the same tree, with the same
//! media types, decoded bodies, file names and decoded header fields as in the original.
//! A file named `refuse-…` must be refused with the error listed for it in [`REFUSALS`]
//! (the message stays queued).
//!
//! Text bodies are compared with every line end as CRLF, because that is how the
//! original would have reached the next hop (the dot-stuffer sends bare CR and LF as
//! CRLF); every other body is compared octet for octet with the stored original.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tern_convert::fuzzing::check;
use tern_convert::{Limits, Source, downgrade_8bit, is_7bit};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("tests/corpus")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus has {} messages", files.len());
    files
}

/// Why each `refuse-…` file is refused (the error variant).
const REFUSALS: &[(&str, &str)] = &[
    ("refuse-8bit-address.eml", "EightBitAddress"),
    ("refuse-8bit-boundary.eml", "EightBitBoundary"),
    ("refuse-8bit-message-id.eml", "EightBitStructuredField"),
    ("refuse-latin1-from.eml", "NotUtf8Field"),
    ("refuse-message-partial-8bit.eml", "EncodingForbidden"),
    ("refuse-nested-150-deep.eml", "TooDeep"),
    ("refuse-received-8bit.eml", "EightBitStructuredField"),
    ("refuse-too-many-parts.eml", "TooManyParts"),
    ("refuse-uuencode-8bit.eml", "UnknownEncoding"),
];

/// Dumps each message as Python's `email` reads it.
const DUMP: &str = r#"
import base64, email, email.policy, json, sys

def clean(s):
    return None if s is None else " ".join(
        str(s).encode("utf-8", "surrogateescape").decode("utf-8", "replace").split())

def dump(path):
    m = email.message_from_bytes(open(path, "rb").read(), policy=email.policy.default)
    parts = []
    def walk(p, where):
        entry = {"path": where, "type": p.get_content_type(), "multipart": p.is_multipart()}
        parts.append(entry)
        if p.is_multipart():
            for i, c in enumerate(p.get_payload()):
                walk(c, where + [i])
        else:
            entry["payload"] = base64.b64encode(p.get_payload(decode=True) or b"").decode()
            entry["filename"] = clean(p.get_filename())
    walk(m, [])
    headers = {}
    for part in [m] + [p for p in m.walk() if p is not m]:
        for name in ("subject", "comments", "content-description", "x-mailer",
                     "x-original-subject", "x-spam-report"):
            for v in part.get_all(name) or []:
                headers.setdefault(name, []).append(clean(v))
        for name in ("from", "to", "cc"):
            for v in part.get_all(name) or []:
                groups = [[clean(g.display_name),
                           [[clean(a.display_name), clean(a.addr_spec)] for a in g.addresses]]
                          for g in v.groups]
                headers.setdefault(name, []).append(groups)
    return {"parts": parts, "headers": headers}

out = {}
for path in sys.argv[1:]:
    try:
        out[path] = dump(path)
    except Exception as e:
        out[path] = {"error": repr(e)}
print(json.dumps(out))
"#;

fn python_dump(paths: &[PathBuf]) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(DUMP).args(paths);
    let out = cmd
        .output()
        .expect("python3 is needed for the corpus test (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from python")
}

fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (b, bytes.get(i + 1)) {
            (b'\r', Some(b'\n')) => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            (b'\r' | b'\n', _) => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn payload(part: &Value) -> Vec<u8> {
    use std::io::Write;
    let text = part["payload"].as_str().unwrap_or_default();
    // Python gave base64; decode it with Python-free code.
    let mut out = Vec::new();
    let mut bits = 0u32;
    let mut n = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.write_all(&[(bits >> n) as u8]).unwrap();
        }
    }
    out
}

fn is_text(ty: &str) -> bool {
    ty.starts_with("text/") || ty.starts_with("multipart/") || ty.starts_with("message/")
}

#[test]
fn every_corpus_message_converts_or_is_refused_and_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut pairs = Vec::new();
    for (name, raw) in corpus() {
        let started = Instant::now();
        for source in [Source::EightBit, Source::Binary] {
            check(&raw, source, &Limits::default());
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
        let result = downgrade_8bit(&raw);
        if name.starts_with("refuse-") {
            let want = REFUSALS
                .iter()
                .find(|(file, _)| *file == name)
                .map(|(_, why)| *why)
                .unwrap_or_else(|| panic!("{name}: add its expected error to REFUSALS"));
            match result {
                Err(e) => assert!(
                    format!("{e:?}").starts_with(want),
                    "{name} was refused with {e:?}, not {want}"
                ),
                Ok(out) => panic!("{name} was converted:\n{}", String::from_utf8_lossy(&out)),
            }
            continue;
        }
        assert!(name.starts_with("ok-"), "{name}: name it ok-… or refuse-…");
        let out = result.unwrap_or_else(|e| panic!("{name} was refused: {e}"));
        assert!(is_7bit(&out), "{name}: 8-bit octet in the copy");
        let original = dir.path().join(&name);
        let converted = dir.path().join(format!("{name}.7bit"));
        std::fs::write(&original, &raw).unwrap();
        std::fs::write(&converted, &out).unwrap();
        pairs.push((name, original, converted));
    }
    let paths: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|(_, a, b)| [a.clone(), b.clone()])
        .collect();
    let dumps = python_dump(&paths);
    for (name, original, converted) in &pairs {
        let before = &dumps[original.to_str().unwrap()];
        let after = &dumps[converted.to_str().unwrap()];
        assert!(before.get("error").is_none(), "{name}: {before}");
        assert!(after.get("error").is_none(), "{name} converted: {after}");
        let (bp, ap) = (
            before["parts"].as_array().unwrap(),
            after["parts"].as_array().unwrap(),
        );
        assert_eq!(bp.len(), ap.len(), "{name}: part count");
        for (b, a) in bp.iter().zip(ap) {
            for key in ["path", "type", "multipart", "filename"] {
                assert_eq!(b[key], a[key], "{name}: {key} of part {}", b["path"]);
            }
            if b["multipart"] == Value::Bool(false) {
                let ty = b["type"].as_str().unwrap();
                let (mut pb, mut pa) = (payload(b), payload(a));
                if is_text(ty) {
                    (pb, pa) = (crlf(&pb), crlf(&pa));
                }
                assert!(
                    pb == pa,
                    "{name}: body of part {} ({ty}) differs:\n before {:?}\n after  {:?}",
                    b["path"],
                    String::from_utf8_lossy(&pb),
                    String::from_utf8_lossy(&pa)
                );
            }
        }
        assert_eq!(before["headers"], after["headers"], "{name}: header fields");
    }
}
