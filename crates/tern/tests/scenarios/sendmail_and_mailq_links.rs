//! The binary invoked through links named `sendmail` and `mailq` behaves as those
//! commands (as after `ln -s /usr/local/bin/tern /usr/sbin/sendmail`): `sendmail -t`
//! submits, and `mailq` lists the queue like `tern queue list`. The configuration comes
//! from `$TERN_CONFIG` here (and from `-C` elsewhere).

use std::process::Command;
use std::time::Duration;

use crate::common::connectors::{FAST_PICKUP, assert_ok, run_with_stdin, wait_pickup_empty};
use crate::common::{Setup, run, tern_bin};

#[test]
fn links_named_sendmail_and_mailq_act_as_those_commands() {
    let mut tern = Setup::new().section(FAST_PICKUP).start();
    let bin = tern.dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for name in ["sendmail", "mailq"] {
        std::os::unix::fs::symlink(tern_bin(), bin.join(name)).unwrap();
    }
    let config = tern.config_path.clone().unwrap();

    let out = run_with_stdin(
        Command::new(bin.join("sendmail"))
            .env("TERN_CONFIG", &config)
            .args(["-t", "-oi"]),
        b"To: linked@example.net\nSubject: through the link\n\nhi\n",
        Duration::from_secs(30),
    );
    assert_ok(&out, "sendmail through its link");
    wait_pickup_empty(&tern, Duration::from_secs(20));
    let spooled = tern.spooled();
    assert_eq!(spooled.len(), 1);
    let id = spooled[0].0.id.to_string();

    let out = run(
        Command::new(bin.join("mailq")).env("TERN_CONFIG", &config),
        Duration::from_secs(30),
    );
    let listing = assert_ok(&out, "mailq through its link");
    assert!(listing.starts_with("-Queue ID-"), "{listing}");
    assert!(listing.contains(&id), "{listing}");
    assert!(listing.contains("linked@example.net"), "{listing}");
    let direct = run(
        &mut tern.tern_command(&["queue", "list"]),
        Duration::from_secs(30),
    );
    assert_eq!(
        assert_ok(&direct, "tern queue list"),
        listing,
        "mailq = tern queue list"
    );

    // `sendmail -bp` is mailq too; an unknown mailq argument is a usage error.
    let out = run(
        Command::new(bin.join("sendmail"))
            .env("TERN_CONFIG", &config)
            .arg("-bp"),
        Duration::from_secs(30),
    );
    assert_eq!(assert_ok(&out, "sendmail -bp"), listing);
    let out = run(
        Command::new(bin.join("mailq"))
            .env("TERN_CONFIG", &config)
            .arg("--frobnicate"),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(64));
    tern.stop(Duration::from_secs(15));
}
