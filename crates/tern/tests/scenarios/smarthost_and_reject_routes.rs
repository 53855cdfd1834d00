//! Routes: a `smtp` route sends its domains to fixed relay hosts in order, without any MX
//! lookup; a `reject` route fails at once with its configured reply, which the bounce
//! quotes.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering, parse_dsn_with_python};
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn smarthost_takes_its_domains_and_reject_bounces_with_its_reply() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("client.test", &[(10, "mx.client.test")], 300);
    dns.set_a("mx.client.test", "127.0.0.4".parse().unwrap(), 300);
    let sender_mx = SmtpPeer::start_on("127.0.0.4", port, &["accept"]);
    // The first relay host refuses (nobody listens on 127.0.0.6); the second takes it.
    let relay = SmtpPeer::start("127.0.0.7", &["accept"]);
    let dead = format!("127.0.0.6:{}", free_port("127.0.0.6".parse().unwrap()));
    let routes = format!(
        "[[route]]\ndomains = [\"corp.test\", \".corp.test\"]\ntransport = \"smtp\"\nhosts = [\"{dead}\", \"{}\"]\n\n\
         [[route]]\ndomains = [\"blocked.test\"]\ntransport = \"reject\"\nreply = \"550 5.7.1 No mail for blocked.test here\"\n",
        relay.addr
    );
    let tern = delivering(&dns, port, &routes).start();

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@corp.test", "b@eng.corp.test"],
        &simple_message("relay", "via the smarthost"),
    );
    let got = relay.wait_for(1, Duration::from_secs(20));
    let mut rcpts = got[0].rcpts();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec!["a@corp.test", "b@eng.corp.test"],
        "one transaction"
    );
    assert_eq!(
        dns.queries_for("corp.test"),
        0,
        "no MX lookup for a smarthost route"
    );
    assert_eq!(dns.queries_for("eng.corp.test"), 0);

    send_one(
        tern.addr(),
        "s@client.test",
        &["x@blocked.test"],
        &simple_message("nope", "rejected by route"),
    );
    let bounces = sender_mx.wait_for(1, Duration::from_secs(20));
    let dsn = parse_dsn_with_python(&bounces[0].content);
    let r = &dsn["recipients"][0];
    assert_eq!(r["Final-Recipient"], "rfc822; x@blocked.test");
    assert_eq!(r["Status"], "5.7.1");
    assert!(
        dsn["text"]
            .as_str()
            .unwrap()
            .contains("No mail for blocked.test here"),
        "{dsn}"
    );
    assert_eq!(dns.queries_for("blocked.test"), 0);
}
