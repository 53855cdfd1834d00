//! `tern check-config FILE` validates a configuration and reports every problem at once,
//! each with its dotted key (README: "prints every problem with its key; exit 1 on
//! error"); a valid file prints `FILE: OK` and exits 0; `tern --version` prints the
//! version.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{run, tern_bin};

fn check_config(file: &Path) -> Output {
    run(
        Command::new(tern_bin()).arg("check-config").arg(file),
        Duration::from_secs(30),
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts that some line of `report` names each key (a line starts with the key
/// followed by `:` once indentation is removed).
fn assert_keys_listed(report: &str, keys: &[&[&str]]) {
    let lines: Vec<&str> = report.lines().map(str::trim_start).collect();
    let mut missing = Vec::new();
    for alternatives in keys {
        let found = alternatives
            .iter()
            .any(|k| lines.iter().any(|l| l.starts_with(&format!("{k}:"))));
        if !found {
            missing.push(alternatives[0]);
        }
    }
    assert!(
        missing.is_empty(),
        "check-config did not list {missing:?}; it printed:\n{report}"
    );
}

#[test]
fn several_unknown_keys_and_bad_values_are_all_listed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"
[server]
hostnme = "typo.example"
log_level = "loud"

[relay]
network = ["10.0.0.0/8"]
networks = ["0.0.0.0/0"]

[dns]
client_lookup_timeout_ms = 0

[back_pressure]
max_queued_messages = 0

[[listener]]
address = "127.0.0.1:2600"
max_conn = 3
max_recipients = 0
"#,
    )
    .unwrap();
    let out = check_config(&file);
    let report = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status for an invalid file; stdout:\n{report}"
    );
    assert_keys_listed(
        &report,
        &[
            &["server.hostnme"],
            &["relay.network"],
            &["listener[0].max_conn", "listener.0.max_conn"],
            &["server.log_level"],
            &["relay.networks[0]"],
            &["dns.client_lookup_timeout_ms"],
            &["back_pressure.max_queued_messages"],
            &["listener[0].max_recipients"],
        ],
    );
}

#[test]
fn several_bad_values_are_all_listed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.toml");
    std::fs::write(
        &file,
        r#"
[server]
log_level = "loud"
hostname = "not a host name"

[relay]
domains = ["bad domain!"]
networks = ["0.0.0.0/0"]

[back_pressure]
max_queued_messages = 0

[[listener]]
name = "a"
address = "127.0.0.1:2600"
max_recipients = 0
tls = "implicit"

[[listener]]
name = "a"
address = "127.0.0.1:2601"
max_message_size = 10
"#,
    )
    .unwrap();
    let out = check_config(&file);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{report}");
    assert_keys_listed(
        &report,
        &[
            &["server.log_level"],
            &["server.hostname"],
            &["relay.domains[0]"],
            &["relay.networks[0]"],
            &["back_pressure.max_queued_messages"],
            &["listener[0].max_recipients"],
            &["listener[0].certificate"],
            &["listener[1].name"],
            &["listener[1].max_message_size"],
        ],
    );
    assert!(
        report.contains("9 problem(s)"),
        "the summary counts every problem:\n{report}"
    );
}

#[test]
fn a_type_error_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("type.toml");
    std::fs::write(
        &file,
        "[[listener]]\naddress = \"127.0.0.1:2600\"\nmax_connections = \"many\"\n",
    )
    .unwrap();
    let out = check_config(&file);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{report}");
    assert!(report.contains("max_connections"), "{report}");
}

#[test]
fn a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.toml");
    let out = check_config(&file);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("(file)"), "{}", stdout(&out));
}

#[test]
fn a_valid_file_prints_ok_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.toml");
    std::fs::write(
        &file,
        r#"
[server]
hostname = "mx.example.test"
data_dir = "/var/spool/tern-test"
log_level = "notice"
shutdown_grace_secs = 10

[relay]
domains = ["example.test", ".sub.example.test"]
networks = ["192.0.2.0/24", "2001:db8::/32"]

[dns]
nameservers = ["127.0.0.1:5353"]
client_lookup_timeout_ms = 1500

[back_pressure]
min_free_percent = 2.5
max_queued_messages = 1000

[[listener]]
name = "mx"
address = "127.0.0.1:2600"
max_message_size = 1048576

[[listener]]
name = "v6"
address = "[::1]:2600"
tls = "none"
[listener.timeouts]
command = 60
"#,
    )
    .unwrap();
    let out = check_config(&file);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).trim(), format!("{}: OK", file.display()));
}

#[test]
fn version_prints_the_package_version() {
    let out = run(
        Command::new(tern_bin()).arg("--version"),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("tern {}", env!("CARGO_PKG_VERSION"))
    );
}
