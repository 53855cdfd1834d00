//! SCRAM-SHA-256 (RFC 7677) against a real client library: Python's `scramp` computes the
//! client side and smtplib's low-level `docmd` carries it over STARTTLS. The password is
//! stored as Dovecot's `{SCRAM-SHA-256}` (made by doveadm) for one user and `{PLAIN}` for
//! another; both authenticate, scramp verifies the server's signature (so Tern proved it
//! knows the keys), and mail is queued. A wrong password fails with 535 5.7.8 after the
//! client's proof, and an unknown user looks the same.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::submission::{NO_RELAY_NETWORK, doveadm_pw, tls_keys};
use crate::common::{Listener, Setup, python, require_python_modules, toml_str};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

const CLIENT: &str = r#"
import base64, json, smtplib, ssl, sys
from scramp import ScramClient

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
b64 = lambda s: base64.b64encode(s.encode()).decode()
s = smtplib.SMTP(host, port, timeout=20)
s.ehlo("client.test")
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
code, ehlo = s.ehlo("client.test")
result = {"ehlo": ehlo.decode()}
c = ScramClient(["SCRAM-SHA-256"], user, password)
code, msg = s.docmd("AUTH", "SCRAM-SHA-256 " + b64(c.get_client_first()))
result["first"] = code
if code == 334:
    c.set_server_first(base64.b64decode(msg).decode())
    code, msg = s.docmd(b64(c.get_client_final()))
    result["final"] = [code, msg.decode()]
    if code == 334:
        c.set_server_final(base64.b64decode(msg).decode())  # raises if the signature is wrong
        code, msg = s.docmd("")
        result["done"] = [code, msg.decode()]
        if code == 235:
            s.sendmail("sender@example.com", ["friend@example.org"], "Subject: scram\r\n\r\nhi\r\n")
            result["sent"] = True
s.quit()
print(json.dumps(result))
"#;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn scramp_authenticates_and_a_wrong_password_fails() {
    require_python_modules(&["scramp"]);
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        format!(
            "carol:{}\ndave:{{PLAIN}}dave-pw\n",
            doveadm_pw("SCRAM-SHA-256", "carol-pw")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tern = Setup::new()
        .listeners(vec![
            Listener::new("submission", LOOPBACK)
                .with(&tls_keys(dir.path()))
                .with("auth = \"required\""),
        ])
        .section(NO_RELAY_NETWORK)
        .section(&format!(
            "[auth]\npasswd_file = {}\nmechanisms = [\"SCRAM-SHA-256\", \"PLAIN\"]\nfailure_delay_ms = 10\n",
            toml_str(&users.display().to_string())
        ))
        .start();
    let addr = tern.addr_of("submission");
    let run = |user: &str, pw: &str| {
        let out = python(
            CLIENT,
            &[&addr.ip().to_string(), &addr.port().to_string(), user, pw],
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "{user}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    for (user, pw) in [("carol", "carol-pw"), ("dave", "dave-pw")] {
        let r = run(user, pw);
        assert!(
            r["ehlo"]
                .as_str()
                .unwrap()
                .contains("AUTH SCRAM-SHA-256 PLAIN"),
            "{r}"
        );
        assert_eq!(r["done"][0], 235, "{user}: {r}");
        assert_eq!(r["sent"], true, "{user}: {r}");
    }
    for (user, pw) in [("carol", "wrong"), ("nobody", "carol-pw")] {
        let r = run(user, pw);
        assert_eq!(r["first"], 334, "{r}");
        assert_eq!(
            r["final"],
            serde_json::json!([535, "5.7.8 Authentication credentials invalid"]),
            "{user}: {r}"
        );
    }
    let ok = tern.wait_for_events(2101, 2, Duration::from_secs(10));
    assert!(
        ok.iter().all(|e| e["mechanism"] == "SCRAM-SHA-256"),
        "{ok:?}"
    );
    let failed = tern.wait_for_events(2102, 2, Duration::from_secs(10));
    let reasons: Vec<&str> = failed.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, ["wrong_password", "unknown_user"]);
    let spooled = tern.spooled();
    assert_eq!(spooled.len(), 2);
}
