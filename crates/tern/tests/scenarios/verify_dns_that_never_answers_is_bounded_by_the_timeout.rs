//! A DNS server that never answers (SPF and DMARC queries dropped): the end-of-data
//! reply comes within `verify.timeout` (2 s) plus a margin, with `temperror`; with
//! `temperror = "defer"` it is `451`, nothing queued; after a reload to `"accept"` the
//! message is queued with `dmarc=temperror` and `spf=temperror` in its header.

use std::time::Duration;

use serde_json::json;

use crate::common::peers::DnsServer;
use crate::common::verify::{
    CLIENT, first_field, message, result_of, send_from, stored, verifying,
};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn end_of_data_reply_comes_within_the_timeout() {
    let mut dns = DnsServer::start();
    dns.set("slow.test", json!({"behaviour": "drop"}));
    dns.set("_dmarc.slow.test", json!({"behaviour": "drop"}));
    let tern = verifying(&dns, "temperror = \"defer\"\n")
        .section("")
        .start();
    // verifying() sets timeout = 5; this test wants 2.
    tern.replace_in_config("timeout = 5", "timeout = 2");
    let out = crate::common::run(&mut tern.tern_command(&["reload"]), Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Before the admin listener is up, `tern reload` signals (SIGHUP) and returns at
    // once: wait for the reload itself (event 1007).
    tern.wait_for_events(1007, 1, Duration::from_secs(20));

    let limit = Duration::from_secs(2) + Duration::from_millis(1500);
    let sent = send_from(
        &tern,
        CLIENT,
        "a@slow.test",
        &message("a@slow.test", "slow"),
    );
    assert!(sent.waited < limit, "waited {:?}", sent.waited);
    assert_eq!(sent.reply.code, 451, "{}", sent.reply.text());
    assert!(tern.spooled().is_empty());

    tern.replace_in_config("temperror = \"defer\"", "temperror = \"accept\"");
    let out = crate::common::run(&mut tern.tern_command(&["reload"]), Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tern.wait_for_events(1007, 2, Duration::from_secs(20));
    let sent = send_from(
        &tern,
        CLIENT,
        "a@slow.test",
        &message("a@slow.test", "slow2"),
    );
    assert!(sent.waited < limit, "waited {:?}", sent.waited);
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let ar = first_field(&stored(&tern, &id));
    assert_eq!(
        result_of(&ar, "dmarc").as_deref(),
        Some("temperror"),
        "{ar}"
    );
    assert_eq!(result_of(&ar, "spf").as_deref(), Some("temperror"), "{ar}");
}
