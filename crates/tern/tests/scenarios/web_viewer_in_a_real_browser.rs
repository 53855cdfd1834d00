//! Issue 6 §3 and §7, the web queue viewer in a real browser: Debian's Chromium, headless,
//! driven by Playwright (`testpeers/browser/viewer-test.js`, `playwright-core` pinned in
//! its package-lock.json; `scripts/test.sh` installs both). The server has real traffic:
//! mail deferred (its destination refuses connections) and mail held (a hold route), one
//! message with markup in its Subject. The script checks the token prompt (a wrong token
//! refused, a 401 brings it back), the overview's counts, charts, destinations and
//! workers, the list and its filters, the details (hostile headers shown as text, no
//! element made from them), and confirmed actions (hold then release, a cancelled and a
//! confirmed delete) with the list following. A second test drives the same script
//! against `testpeers/browser/mock-api.js`, which answers the API contract exactly.
//!
//! Missing node, Chromium or Playwright fail the test; nothing is skipped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::admin::Admin;
use crate::common::peers::DnsServer;
use crate::common::{Setup, free_port, require_program, send_one, simple_message, try_run};

const HOSTILE_SUBJECT: &str = "<img src=x onerror=\"window.__pwned=1\"> <b>bold</b>";
const SCRIPT_LIMIT: Duration = Duration::from_secs(240);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testpeers/browser")
}

/// node, Chromium and the pinned Playwright, or a failure saying how to get them.
pub(crate) fn require_browser() -> PathBuf {
    let node = require_program("node");
    let chromium =
        std::env::var_os("TERN_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    assert!(
        chromium.is_file(),
        "Chromium is not installed at {} (run scripts/test.sh, which installs Debian's chromium)",
        chromium.display()
    );
    let pw = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        pw.is_file(),
        "playwright-core is not installed in testpeers/browser (run scripts/test.sh, which runs npm ci there)"
    );
    node
}

pub(crate) fn run_script(node: &Path, args: &[String]) {
    let mut cmd = std::process::Command::new(node);
    cmd.current_dir(browser_dir())
        .arg("viewer-test.js")
        .args(args);
    let out = try_run(&mut cmd, SCRIPT_LIMIT).unwrap_or_else(|e| panic!("viewer-test.js: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with --nocapture: which checks ran.
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

pub(crate) fn wait_for_files(tern: &crate::common::Tern, area: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let files: Vec<String> = tern
            .spool_files(area)
            .into_iter()
            .filter(|f| !f.contains('.'))
            .collect();
        if files.len() == n {
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "spool/{area} has {files:?}, expected {n} messages"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn web_viewer_in_a_real_browser() {
    let node = require_browser();
    let dns = DnsServer::start();
    let refused = free_port("127.0.0.1".parse().unwrap());
    let tern = Setup::new()
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 600\nmax_backoff_secs = 600\n")
        .section(&format!(
            "[[route]]\ndomains = [\"down.test\"]\ntransport = \"smtp\"\nhosts = [\"127.0.0.1:{refused}\"]\n\n[[route]]\ndomains = [\"held.test\"]\ntransport = \"hold\"\n"
        ))
        .start();
    let mut deferred = Vec::new();
    for n in 0..2 {
        deferred.push(send_one(
            tern.addr(),
            "s@client.test",
            &[&format!("r{n}@down.test")],
            &simple_message(
                &format!("deferred {n}"),
                "its destination refuses connections",
            ),
        ));
    }
    let hostile = send_one(
        tern.addr(),
        "evil@client.test",
        &["x@down.test"],
        &simple_message(HOSTILE_SUBJECT, "markup in the subject"),
    );
    deferred.push(hostile.clone());
    let mut held = Vec::new();
    for n in 0..2 {
        held.push(send_one(
            tern.addr(),
            "s@client.test",
            &[&format!("h{n}@held.test")],
            &simple_message(&format!("held {n}"), "a hold route keeps it"),
        ));
    }
    // Settled: each deferred once (next try in 10 minutes), each held.
    wait_for_files(&tern, "deferred", 3);
    wait_for_files(&tern, "hold", 2);

    let admin = Admin::of(&tern);
    let expect = serde_json::json!({
        "deferred": deferred,
        "held": held,
        "hostile": hostile,
        "hostile_subject": HOSTILE_SUBJECT,
        // The next hop's name is the route's (`smtp:...`), not a domain: any name.
        "destination": "",
    });
    let shot = std::env::var_os("TERN_VIEWER_SCREENSHOT")
        .map_or_else(|| tern.dir.join("viewer-overview.png"), PathBuf::from);
    let args = vec![
        "--base".to_string(),
        admin.base.clone(),
        "--token".into(),
        admin.token.clone(),
        "--expect".into(),
        expect.to_string(),
        "--screenshot".into(),
        shot.display().to_string(),
        // Every endpoint the viewer uses must answer: a missing one fails the test.
        "--require-all".into(),
    ];
    run_script(&node, &args);
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn web_viewer_against_the_api_contract() {
    let node = require_browser();
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tern-admin/web");
    run_script(
        &node,
        &[
            "--mock".to_string(),
            "--web-dir".into(),
            web.display().to_string(),
        ],
    );
}
