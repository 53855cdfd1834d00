//! The passwd-file is reloaded with the configuration (SIGHUP): a user added to it can
//! log in after the reload (event 2105 again). A broken file (a bad line, or a mode that
//! lets others read it) is refused with event 2106 naming the problem, and the previous
//! users keep working. At start a file readable by others stops the server.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::submission::{doveadm_pw, replies_with, swaks, tls_keys, transcript};
use crate::common::{Listener, Setup, run, tern_bin, toml_str};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn reload_takes_a_good_file_and_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let alice = format!("alice:{}\n", doveadm_pw("SHA512-CRYPT", "alice-pw"));
    std::fs::write(&users, &alice).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o640)).unwrap();
    let setup = Setup::new()
        .listeners(vec![
            Listener::new("submission", LOOPBACK)
                .with(&tls_keys(dir.path()))
                .with("auth = \"required\""),
        ])
        .section(&format!(
            "[auth]\npasswd_file = {}\nfailure_delay_ms = 0\n",
            toml_str(&users.display().to_string())
        ));
    let tern = setup.clone().start();
    let login = |user: &str, pw: &str| {
        let out = swaks(
            tern.addr_of("submission"),
            &[
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                user,
                "--auth-password",
                pw,
                "--quit-after",
                "AUTH",
            ],
        );
        let t = transcript(&out);
        !replies_with(&t, "235").is_empty()
    };
    assert!(login("alice", "alice-pw"));
    assert!(!login("frank", "frank-pw"));

    let reloads = |n| tern.wait_for_events(1007, n, Duration::from_secs(10));
    std::fs::write(
        &users,
        format!("{alice}frank:{}\n", doveadm_pw("ARGON2ID", "frank-pw")),
    )
    .unwrap();
    tern.signal(libc::SIGHUP);
    reloads(1);
    let loaded = tern.wait_for_events(2105, 2, Duration::from_secs(10));
    assert_eq!(loaded[1]["users"], "2", "{loaded:?}");
    assert!(login("frank", "frank-pw"));

    // A bad line: the whole file is refused, the previous one stays.
    std::fs::write(&users, format!("{alice}george:{{MD5}}abc\n")).unwrap();
    tern.signal(libc::SIGHUP);
    reloads(2);
    let failed = tern.wait_for_events(2106, 1, Duration::from_secs(10));
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{}:2:", users.display())),
        "{error}"
    );
    assert!(
        login("frank", "frank-pw"),
        "the last good file is still in force"
    );

    // Readable by others: refused too.
    std::fs::write(&users, &alice).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).unwrap();
    tern.signal(libc::SIGHUP);
    reloads(3);
    let failed = tern.wait_for_events(2106, 2, Duration::from_secs(10));
    assert!(
        failed[1]["error"].as_str().unwrap().contains("mode 0644"),
        "{failed:?}"
    );
    assert!(login("frank", "frank-pw"));
    drop(tern);

    // At start, the same file stops the server, and check-config says why.
    let data = dir.path().join("data-2");
    let config = dir.path().join("tern.toml");
    std::fs::write(&config, setup.config_text_for(&data)).unwrap();
    let check = run(
        std::process::Command::new(tern_bin())
            .arg("check-config")
            .arg(&config),
        Duration::from_secs(30),
    );
    assert!(!check.status.success());
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        said.contains("auth.passwd_file") && said.contains("mode 0644"),
        "{said}"
    );
    let serve = run(
        std::process::Command::new(tern_bin())
            .args(["serve", "--config"])
            .arg(&config),
        Duration::from_secs(30),
    );
    assert!(!serve.status.success());
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("mode 0644"),
        "{}",
        String::from_utf8_lossy(&serve.stderr)
    );
}
