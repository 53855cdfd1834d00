//! Interop with the reference MTA in both directions: a real Postfix instance (private
//! configuration and queue in this test's directory) relays mail into Tern, and Tern
//! relays mail into Postfix's smtp-sink, which counts what it receives.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Setup, require_program, run, send_one, simple_message};

fn free_local_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Postfix {
    etc: std::path::PathBuf,
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = run(
            Command::new("postfix").arg("-c").arg(&self.etc).arg("stop"),
            Duration::from_secs(60),
        );
    }
}

fn start_postfix(dir: &std::path::Path, port: u16, relayhost: &str) -> Postfix {
    let etc = dir.join("etc");
    let queue = dir.join("queue");
    let data = dir.join("data");
    for d in [&etc, &queue, &data] {
        std::fs::create_dir_all(d).unwrap();
    }
    let ok = run(
        Command::new("chown").arg("postfix").arg(&data),
        Duration::from_secs(10),
    );
    assert!(
        ok.status.success(),
        "chown postfix (is the test running as root?)"
    );
    std::fs::write(
        etc.join("main.cf"),
        format!(
            "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {d}\nmail_owner = postfix\n\
             setgid_group = postdrop\nsyslog_name = postfix-tern-test\nmaillog_file = {dir}/maillog\n\
             maillog_file_prefixes = {dir}\nmyhostname = postfix.interop.test\nmydestination =\n\
             relay_domains = interop.test\nlocal_recipient_maps =\nalias_maps =\nalias_database =\n\
             biff = no\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\nrelayhost = {relayhost}\n\
             smtp_tls_security_level = none\nsmtp_dns_support_level = disabled\ndisable_dns_lookups = yes\n",
            q = queue.display(),
            d = data.display(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testpeers/postfix/master.cf.in"),
    )
    .unwrap();
    std::fs::write(
        etc.join("master.cf"),
        template.replace("@LISTEN@", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let pf = Postfix { etc: etc.clone() };
    let start = run(
        Command::new("postfix").arg("-c").arg(&etc).arg("start"),
        Duration::from_secs(60),
    );
    assert!(
        start.status.success(),
        "postfix start: {}",
        String::from_utf8_lossy(&start.stderr)
    );
    pf
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn postfix_relays_into_tern_and_tern_relays_into_smtp_sink() {
    require_program("postfix");
    let smtp_sink = require_program("smtp-sink");
    let dir = tempfile::tempdir().unwrap();

    // Tern relays `sink.test` to smtp-sink and keeps `interop.test` (hold route).
    let sink_port = free_local_port();
    let sink_out = dir.path().join("sink.out");
    let mut sink: Child = Command::new(smtp_sink)
        .args([
            "-c",
            "-u",
            "nobody",
            &format!("127.0.0.1:{sink_port}"),
            "100",
        ])
        .stdout(Stdio::from(std::fs::File::create(&sink_out).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the sink listens (a refused first attempt would mark it down).
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", sink_port)).is_err() {
        assert!(Instant::now() < deadline, "smtp-sink did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .section(&format!(
            "[relay]\ndomains = [\"interop.test\"]\nnetworks = [\"127.0.0.0/8\"]\n\n\
             [[route]]\ndomains = [\"sink.test\"]\ntransport = \"smtp\"\nhosts = [\"127.0.0.1:{sink_port}\"]\n\n\
             [[route]]\ndomains = [\"interop.test\"]\ntransport = \"hold\"\n"
        ))
        .start();

    // Tern -> smtp-sink: 50 messages, all counted by the sink.
    for n in 0..50 {
        send_one(
            tern.addr(),
            "s@client.test",
            &[&format!("r{n}@sink.test")],
            &simple_message(&format!("to sink {n}"), "x"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::fs::read_to_string(&sink_out).unwrap_or_default();
        let count = out
            .rsplit("mesg=")
            .next()
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0);
        if count >= 50 {
            assert_eq!(count, 50);
            break;
        }
        assert!(Instant::now() < deadline, "smtp-sink counted {count} of 50");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = sink.kill();
    let _ = sink.wait();

    // Postfix -> Tern: Postfix's relayhost is Tern; its smtp client delivers 3 messages.
    let pf_port = free_local_port();
    let _postfix = start_postfix(
        &dir.path().join("postfix"),
        pf_port,
        &format!("[127.0.0.1]:{}", tern.addr().port()),
    );
    let pf_addr = format!("127.0.0.1:{pf_port}").parse().unwrap();
    let mut sent = Vec::new();
    for n in 0..3 {
        let body = simple_message(&format!("via postfix {n}"), "hello from postfix");
        send_one(
            pf_addr,
            "p@client.test",
            &[&format!("u{n}@interop.test")],
            &body,
        );
        sent.push(format!("via postfix {n}"));
    }
    let held = tern.wait_for_events(4009, 3, Duration::from_secs(60));
    assert_eq!(held.len(), 3);
    let spooled = tern.spooled();
    for subject in sent {
        let found = spooled.iter().find(|(_, m)| {
            String::from_utf8_lossy(&m.body).contains(&format!("Subject: {subject}"))
        });
        let (listed, msg) = found.unwrap_or_else(|| panic!("{subject} not in Tern's spool"));
        let env = listed.envelope.as_ref().unwrap();
        assert_eq!(env.sender, "p@client.test");
        assert_eq!(
            env.client.helo, "postfix.interop.test",
            "Postfix's smtp client spoke"
        );
        let text = String::from_utf8_lossy(&msg.body);
        assert!(
            text.contains("by postfix.interop.test"),
            "Postfix's Received header"
        );
    }
}
