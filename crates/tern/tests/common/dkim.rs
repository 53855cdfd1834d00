//! DKIM helpers for the signing scenarios: keys made with `tern dkim generate` (the
//! TXT record it prints is parsed back), the `[dkim]` section, and an independent
//! verifier, dkimpy (Python, with PyNaCl for Ed25519), answering its DNS queries from the
//! records the test publishes (`dnsfunc`), never from the network.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{require_python_modules, run, tern_bin, toml_str};

/// A key `tern dkim generate` wrote, and the record it printed.
#[derive(Debug, Clone)]
pub struct TestKey {
    pub domain: String,
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: &'static str,
    pub file: PathBuf,
    /// The TXT record's character-strings as printed.
    pub strings: Vec<String>,
}

impl TestKey {
    /// `<selector>._domainkey.<domain>`.
    pub fn name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The record's text (strings joined).
    pub fn text(&self) -> String {
        self.strings.concat()
    }
}

/// Runs `tern dkim generate` into `dir` and parses what it prints.
pub fn generate(dir: &Path, domain: &str, selector: &str, algorithm: &str) -> TestKey {
    generate_with_umask(dir, domain, selector, algorithm, None)
}

/// [`generate`] with the command's umask set (through `sh`, so the test process's own
/// umask, shared by its threads, is never changed).
pub fn generate_with_umask(
    dir: &Path,
    domain: &str,
    selector: &str,
    algorithm: &str,
    umask: Option<u32>,
) -> TestKey {
    let mut cmd = match umask {
        Some(m) => {
            let mut c = Command::new("sh");
            c.args([
                "-c",
                &format!("umask {m:03o}; exec \"$0\" \"$@\""),
                tern_bin(),
            ]);
            c
        }
        None => Command::new(tern_bin()),
    };
    let out = run(
        cmd.args([
            "dkim",
            "generate",
            domain,
            "--selector",
            selector,
            "--algorithm",
            algorithm,
            "--out",
            dir.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "tern dkim generate failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("._domainkey.") && l.contains(" IN TXT "))
        .unwrap_or_else(|| panic!("no TXT line in {stdout}"));
    assert!(line.starts_with(&format!("{selector}._domainkey.{domain}. IN TXT \"")));
    let strings: Vec<String> = line
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(strings.iter().all(|s| s.len() <= 255), "{line}");
    TestKey {
        domain: domain.into(),
        selector: selector.into(),
        algorithm: if algorithm == "rsa" {
            "rsa-sha256"
        } else {
            "ed25519-sha256"
        },
        file: dir.join(format!("{domain}.{selector}.pem")),
        strings,
    }
}

/// A `[dkim]` section signing each key's domain with its keys (relay networks, local
/// and authenticated origins), plus `extra` keys for `[dkim]`.
pub fn section(keys: &[&TestKey], extra: &str) -> String {
    let mut t = format!("[dkim]\n{extra}\n");
    let mut domains: Vec<&str> = keys.iter().map(|k| k.domain.as_str()).collect();
    domains.dedup();
    for d in domains {
        t.push_str(&format!("[[dkim.domain]]\nname = {}\n", toml_str(d)));
        for k in keys.iter().filter(|k| k.domain == d) {
            t.push_str(&format!(
                "[[dkim.domain.key]]\nselector = {}\nalgorithm = {}\nkey_file = {}\n",
                toml_str(&k.selector),
                toml_str(k.algorithm),
                toml_str(&k.file.display().to_string())
            ));
        }
    }
    t
}

const VERIFY: &str = r#"
import dkim, json, sys
records = json.load(open(sys.argv[2]))
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return records.get(name.rstrip(".").lower(), "").encode()
msg = open(sys.argv[1], "rb").read()
d = dkim.DKIM(msg)
sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
out = []
for i, v in enumerate(sigs):
    tags = dict(t.strip().split("=", 1) for t in v.decode().replace("\r\n", "").split(";") if "=" in t)
    try:
        ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
        err = ""
    except Exception as e:  # a malformed message or signature is a failed verification
        ok, err = False, repr(e)
    out.append({"d": tags.get("d", "").strip(), "s": tags.get("s", "").strip(),
                "a": tags.get("a", "").strip(), "h": "".join(tags.get("h", "").split()),
                "c": tags.get("c", "").strip(), "ok": bool(ok), "error": err})
print(json.dumps(out))
"#;

/// dkimpy's verdict on every DKIM-Signature of `content`, in order: `d`, `s`, `a`,
/// `h`, `c` and `ok`, with the keys' records as the only DNS.
pub fn verify(content: &[u8], keys: &[&TestKey]) -> Vec<Value> {
    require_python_modules(&["dkim", "nacl"]);
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
        "dkimpy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Asserts that `content` carries exactly one valid signature per key, by those keys.
pub fn assert_signed_by(content: &[u8], keys: &[&TestKey], what: &str) {
    let got = verify(content, keys);
    assert_eq!(
        got.len(),
        keys.len(),
        "{what}: signatures {got:?}\n{}",
        String::from_utf8_lossy(&content[..content.len().min(3000)])
    );
    for k in keys {
        let sig = got
            .iter()
            .find(|s| s["s"] == k.selector.as_str() && s["d"] == k.domain.as_str())
            .unwrap_or_else(|| panic!("{what}: no signature by {} in {got:?}", k.name()));
        assert_eq!(sig["a"], k.algorithm, "{what}");
        assert_eq!(sig["c"], "relaxed/relaxed", "{what}");
        assert_eq!(
            sig["ok"],
            true,
            "{what}: dkimpy says the {} signature does not verify: {sig}",
            k.name()
        );
    }
}
