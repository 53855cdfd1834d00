//! A forwarded message arriving with an ARC chain (another forwarder's `i=1` set, made by
//! dkimpy's `arc_sign`) is verified on the way in (`[verify]`, issue 18 §1): Tern's
//! Authentication-Results says `arc=pass` for an intact chain and `arc=fail` for one
//! whose body changed after the upstream seal. When Tern forwards it on (`[arc] seal`),
//! its own set takes that verdict as it is: `cv=` from the `arc=` result and the
//! ARC-Authentication-Results from the verifier's header (event 4113 `results =
//! "verifier"`, not a second validation at delivery), and dkimpy's `arc_verify` validates
//! the whole chain at the next hop.

use std::time::Duration;

use crate::common::arc::{
    Forwarding, assert_sealed, forward_all, forwarding, good_and_broken, section, top_seal, verify,
};
use crate::common::peers::delivering;

/// The value of the first header field `name` (unfolded), if any.
fn field(msg: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(msg)
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ");
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    head.lines()
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l.as_bytes()[name.len()] == b':'
        })
        .map(|l| l[name.len() + 1..].trim().to_string())
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn the_inbound_arc_verdict_becomes_the_seals_cv_and_aar() {
    let Forwarding {
        keys: _keys,
        up,
        ours,
        dns,
        port,
        sink,
    } = forwarding();
    // The client (127.0.0.1) is outside the relay networks: its mail is verified, and
    // forwarded mail from outside is what Tern seals.
    let tern = delivering(&dns, port, "")
        .section("[relay]\ndomains = [\"dest.test\"]\nnetworks = [\"127.0.0.9/32\"]\n")
        .section("[verify]\nenabled = true\nauthserv_id = \"mx.tern.test\"\n")
        .section(&section(&ours, ""))
        .start();

    let (good, broken) = good_and_broken(&up);
    let got = forward_all(tern.addr(), &sink, &[&good, &broken]);
    for r in &got {
        let text = String::from_utf8_lossy(&r.content).to_string();
        let ar = field(&r.content, "Authentication-Results").unwrap_or_default();
        assert!(
            ar.starts_with("mx.tern.test;"),
            "Tern's verdict first: {text}"
        );
        let aar = field(&r.content, "ARC-Authentication-Results").unwrap_or_default();
        if text.contains("X-Case: good") {
            assert!(ar.contains("arc=pass"), "{ar}");
            assert_sealed(&r.content, &[&up, &ours], 2, "pass", "good");
            let v = verify(&r.content, &[&up, &ours]);
            assert_eq!(v["instances"].as_array().unwrap().len(), 2, "{v}");
        } else {
            assert!(ar.contains("arc=fail"), "{ar}");
            assert_eq!(
                top_seal(&r.content),
                Some((2, "fail".to_string())),
                "{text}"
            );
        }
        // The new set's AAR is Tern's verdict, carried over.
        assert!(aar.starts_with("i=2; mx.tern.test;"), "AAR {aar} in {text}");
        for method in ["spf=", "dkim=", "dmarc=", "arc="] {
            assert!(aar.contains(method), "{method} missing from the AAR {aar}");
        }
    }
    // Sealed from the verifier's header, both of them: no second validation.
    let sealed = tern.wait_for_events(4113, 2, Duration::from_secs(10));
    let mut cvs: Vec<String> = sealed
        .iter()
        .map(|e| {
            assert_eq!(e["results"], "verifier", "{e}");
            e["cv"].as_str().unwrap().to_string()
        })
        .collect();
    cvs.sort();
    assert_eq!(cvs, ["fail", "pass"]);
    // And the inbound verdicts are events too (tracked: `tern track` shows them).
    let verdicts = tern.wait_for_events(2151, 2, Duration::from_secs(10));
    let mut arcs: Vec<String> = verdicts
        .iter()
        .map(|e| e["arc"].as_str().unwrap_or("?").to_string())
        .collect();
    arcs.sort();
    assert_eq!(arcs, ["fail", "pass"], "{verdicts:?}");
}
