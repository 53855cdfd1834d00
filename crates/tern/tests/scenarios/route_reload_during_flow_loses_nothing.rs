//! Reloading while mail flows: 5,000 messages from smtp-source; part-way, the route of
//! their domain is switched from one smarthost to another by `tern reload`. Every message
//! arrives (at one host or the other), the switch takes effect for later messages, and
//! an invalid configuration is refused (by `tern reload` itself, and by the server on a
//! bare SIGHUP, event 1008) while the old routes stay in force.

use std::time::{Duration, Instant};

use crate::common::peers::{
    DnsServer, SmtpPeer, delivering, finish_smtp_source, spawn_smtp_source,
};
use crate::common::{free_port, run};

const MESSAGES: usize = 5000;

fn route(host: std::net::SocketAddr) -> String {
    format!("[[route]]\ndomains = [\"flow.test\"]\ntransport = \"smtp\"\nhosts = [\"{host}\"]\n")
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn five_thousand_messages_survive_a_route_reload() {
    let dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    let a = SmtpPeer::start("127.0.0.2", &["accept"]);
    let b = SmtpPeer::start("127.0.0.3", &["accept"]);
    let tern = delivering(&dns, port, &route(a.addr)).start();
    let config = tern.config_path.clone().unwrap();
    let original = std::fs::read_to_string(&config).unwrap();

    let source = spawn_smtp_source(&tern.server_arg(), MESSAGES, "sink@flow.test");

    // Part-way through the flow...
    let deadline = Instant::now() + Duration::from_secs(120);
    while a.received().len() < 500 {
        assert!(Instant::now() < deadline, "the flow did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...an invalid file is refused by `tern reload` before it signals anything...
    std::fs::write(
        &config,
        original.replace("transport = \"smtp\"", "transport = \"smpt\""),
    )
    .unwrap();
    let refused = run(&mut tern.tern_command(&["reload"]), Duration::from_secs(20));
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(text.contains("smpt") && text.contains("refused"), "{text}");
    // ...and by the server itself on a bare SIGHUP: it keeps the old routes.
    tern.signal(libc::SIGHUP);
    let failed = tern.wait_for_events(1008, 1, Duration::from_secs(20));
    assert!(
        failed[0]["errors"].as_str().unwrap().contains("smpt"),
        "{failed:?}"
    );

    // The real switch, by `tern reload`.
    std::fs::write(&config, original.replace(&route(a.addr), &route(b.addr))).unwrap();
    let ok = run(&mut tern.tern_command(&["reload"]), Duration::from_secs(20));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    tern.wait_for_events(1007, 1, Duration::from_secs(20));

    finish_smtp_source(source);

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let total = a.received().len() + b.received().len();
        if total >= MESSAGES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {total} of {MESSAGES} arrived; queue: {}",
            tern.queue_json(&[]).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (na, nb) = (a.received().len(), b.received().len());
    assert!(
        na >= 500 && nb > 0,
        "a={na} b={nb}: the reload moved later mail to b"
    );
    // At least once: duplicates could only come from a crash, and there was none.
    assert_eq!(na + nb, MESSAGES, "a={na} b={nb}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tern.queue_json(&[]).is_empty() {
        assert!(Instant::now() < deadline, "queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
}
