//! With message and recipient limits shared by three nodes through one real
//! redis-server, a message whose RCPT commands the client pipelines after MAIL FROM
//! (RFC 2920) costs one round trip to Redis: MAIL FROM spends the message and sets aside
//! the recipients in the same script, and the RCPTs spend what was set aside. The limit
//! still holds exactly across the nodes: with `sender_domain_recipients = "20/1h"`,
//! messages of 3 recipients sent round the nodes get exactly 20 recipients accepted (the
//! seventh message 2 of its 3, what one transaction leaves unspent going back to the
//! bucket), the rest refused with `451 4.7.1`. The round trips are read from each node's
//! `tern_cluster_limit_calls_total`.

use std::time::Duration;

use crate::common::admin::Admin;
use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::{Setup, SmtpClient, Tern, simple_message};

const LIMIT: Duration = Duration::from_secs(30);

/// One message from `from` to `rcpts`, MAIL, the RCPTs and DATA in one write: the codes
/// of the RCPT replies, and of the message's final reply (0 when there was none).
fn pipelined(t: &Tern, from: &str, rcpts: &[String]) -> (Vec<u16>, u16) {
    let mut c = SmtpClient::connect(t.addr()).expect("connect");
    c.hello("client.test");
    let mut batch = format!("MAIL FROM:<{from}>\r\n");
    for r in rcpts {
        batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    batch.push_str("DATA\r\n");
    c.write_raw(batch.as_bytes()).expect("write");
    let mail = c.read_reply().expect("MAIL reply");
    assert_eq!(mail.code, 250, "{}", mail.text());
    let codes: Vec<u16> = rcpts
        .iter()
        .map(|_| c.read_reply().expect("RCPT reply").code)
        .collect();
    let data = c.read_reply().expect("DATA reply");
    let last = if data.code == 354 {
        let mut body = simple_message("pipelined", "body");
        body.extend_from_slice(b".\r\n");
        c.write_raw(&body).expect("body");
        c.read_reply().expect("final reply").code
    } else {
        0
    };
    let _ = c.command("QUIT");
    (codes, last)
}

fn limit_calls(t: &Tern) -> u64 {
    let text = Admin::of(t).get("/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix("tern_cluster_limit_calls_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn cluster_pipelined_recipients_cost_one_round_trip_per_message() {
    let redis = RedisServer::start();
    let nodes = start_nodes(&redis, 3, "", |_| {
        Setup::new().section(
            "[limits]\nsender_domain_messages = \"100/1h\"\nsender_domain_recipients = \"20/1h\"\n",
        )
    });
    wait_for_members(&nodes, 3, LIMIT);
    let calls = || nodes.iter().map(limit_calls).sum::<u64>();
    let rcpts =
        |m: usize| -> Vec<String> { (0..3).map(|r| format!("m{m}r{r}@localhost")).collect() };

    // Six messages of 3 recipients (18 of 20): one call each.
    let before = calls();
    for m in 0..6 {
        let (codes, last) = pipelined(&nodes[m % 3], "alice@sender.test", &rcpts(m));
        assert_eq!(codes, vec![250, 250, 250], "message {m}");
        assert_eq!(last, 250, "message {m}");
    }
    let used = calls() - before;
    assert_eq!(used, 6, "one round trip per message, not one per RCPT");

    // The seventh gets 2 of its 3; the eighth none.
    let (codes, last) = pipelined(&nodes[0], "alice@sender.test", &rcpts(6));
    assert_eq!(codes.iter().filter(|c| **c == 250).count(), 2, "{codes:?}");
    assert!(codes.contains(&451), "{codes:?}");
    assert_eq!(last, 250);
    let (codes, _) = pipelined(&nodes[1], "alice@sender.test", &rcpts(7));
    assert!(codes.iter().all(|c| *c == 451), "{codes:?}");
    // The bucket is spent: a recipient alone, on the third node, is refused too: 20 in
    // all, never a 21st.
    let (codes, _) = pipelined(&nodes[2], "alice@sender.test", &rcpts(8)[..1]);
    assert_eq!(codes, vec![451], "20 recipients in all, no more");
    drop(redis);
}
