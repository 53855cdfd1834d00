//! An Authentication-Results field that arrives claiming Tern's own authserv-id (a
//! sender forging `dmarc=pass` for Tern's users) is removed (RFC 8601 §5); one with
//! another authserv-id is kept. Tern's own field is the topmost, and event 2151 counts
//! the removal.

use std::time::Duration;

use crate::common::peers::DnsServer;
use crate::common::verify::{AUTHSERV, CLIENT, first_field, message, send_from, stored, verifying};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn forged_results_with_our_id_are_removed_others_kept() {
    let dns = DnsServer::start();
    let tern = verifying(&dns, "").start();
    let mut content = format!(
        "Authentication-Results: {AUTHSERV};\r\n\tdmarc=pass header.from=bank.test\r\nAuthentication-Results: other.example; spf=pass smtp.mailfrom=x.test\r\nAuthentication-Results: (forged) MX.TERN.TEST; dkim=pass\r\n"
    )
    .into_bytes();
    content.extend_from_slice(&message("a@x.test", "forged"));
    let sent = send_from(&tern, CLIENT, "a@x.test", &content);
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let stored = stored(&tern, &id);
    let text = String::from_utf8_lossy(&stored).to_string();
    assert!(first_field(&stored).starts_with(&format!("Authentication-Results: {AUTHSERV};")));
    let ours = text
        .to_ascii_lowercase()
        .matches(&format!("authentication-results: {AUTHSERV}"))
        .count();
    assert_eq!(ours, 1, "only Tern's own: {text}");
    assert!(
        !text.contains("(forged)") && !text.contains("dmarc=pass header.from=bank.test"),
        "{text}"
    );
    assert!(
        text.contains("Authentication-Results: other.example; spf=pass"),
        "{text}"
    );
    let v = tern.wait_for_events(2151, 1, Duration::from_secs(10));
    assert_eq!(v[0]["removed"], "2", "{v:?}");
}
