//! A message that already carries a valid ARC set made by another forwarder (dkimpy's
//! `arc_sign`, `i=1`) is sealed by Tern as `i=2; cv=pass`: verification is off here, so
//! Tern validates the chain itself at delivery, asking the scripted DNS server for the
//! upstream key through its `[dns]` name servers, and dkimpy's `arc_verify` validates
//! the whole chain at the next hop. The same message with its body changed after the
//! upstream seal is sealed `i=2; cv=fail` (RFC 8617 §5.1.2), which dkimpy does not
//! accept as a valid chain.

use std::time::Duration;

use crate::common::arc::{
    Forwarding, assert_sealed, forward_all, forwarding, good_and_broken, section, top_seal, verify,
};
use crate::common::peers::delivering;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn an_upstream_set_is_validated_and_extended() {
    let Forwarding {
        keys: _keys,
        up,
        ours,
        dns,
        port,
        sink,
    } = forwarding();
    let tern = delivering(&dns, port, "")
        .section("[relay]\ndomains = [\"dest.test\"]\nnetworks = [\"127.0.0.9/32\"]\n")
        .section(&section(&ours, ""))
        .start();

    let (good, broken) = good_and_broken(&up);
    let got = forward_all(tern.addr(), &sink, &[&good, &broken]);
    for r in &got {
        let text = String::from_utf8_lossy(&r.content).to_string();
        if text.contains("X-Case: good") {
            assert_sealed(&r.content, &[&up, &ours], 2, "pass", "good");
            let v = verify(&r.content, &[&up, &ours]);
            assert_eq!(v["instances"].as_array().unwrap().len(), 2, "{v}");
            assert!(
                text.replace("\r\n\t", " ")
                    .contains("ARC-Authentication-Results: i=2; mx.tern.test; arc=pass"),
                "{text}"
            );
        } else {
            assert_eq!(
                top_seal(&r.content),
                Some((2, "fail".to_string())),
                "{text}"
            );
            let v = verify(&r.content, &[&up, &ours]);
            assert_ne!(v["cv"], "pass", "a failed chain validates: {v}");
        }
    }
    let sealed = tern.wait_for_events(4113, 2, Duration::from_secs(10));
    let mut cvs: Vec<String> = sealed
        .iter()
        .map(|e| {
            assert_eq!(e["results"], "validated", "{e}");
            assert_eq!(e["instance"], "2", "{e}");
            e["cv"].as_str().unwrap().to_string()
        })
        .collect();
    cvs.sort();
    assert_eq!(cvs, ["fail", "pass"]);
    // The validation asked Tern's DNS server for the upstream key.
    assert!(
        dns.queries_for(&up.name()) > 0,
        "the upstream key was never asked for"
    );
}
