//! The admin API checked against its own OpenAPI document by schemathesis (a real,
//! independent client that generates valid and invalid requests for every operation the
//! document lists): no request, however malformed, gets a 5xx; every answer's status
//! code, content type and body match what the document declares. The server has mail in
//! it (deferred to a destination that refuses connections, and held), so the queue,
//! destination and summary endpoints answer with real data; the document is fetched with
//! the token like any API path.

use std::process::Command;
use std::time::Duration;

use crate::common::admin::Admin;
use crate::common::{Setup, free_port, require_program, run, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn admin_api_conforms_to_its_openapi_document() {
    let st = require_program("schemathesis");
    let refused = free_port("127.0.0.1".parse().unwrap());
    let tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 600\nmax_backoff_secs = 600\n")
        .section(&format!(
            "[[route]]\ndomains = [\"down.test\"]\ntransport = \"smtp\"\nhosts = [\"127.0.0.1:{refused}\"]\n\n[[route]]\ndomains = [\"held.test\"]\ntransport = \"hold\"\n"
        ))
        .start();
    for (n, to) in ["a@down.test", "b@down.test", "c@held.test"]
        .iter()
        .enumerate()
    {
        send_one(
            tern.addr(),
            "s@client.test",
            &[to],
            &simple_message(&format!("message {n}"), "for the API checks"),
        );
    }
    let admin = Admin::of(&tern);
    let doc = admin.get("/api/v1/openapi.json");
    assert_eq!(doc.status, 200, "{doc:?}");
    let file = tern.dir.join("openapi.json");
    std::fs::write(&file, &doc.body).unwrap();

    let out = run(
        Command::new(st)
            // Its cache of findings goes into the test's directory, not the repository.
            .current_dir(&tern.dir)
            .arg("run")
            .arg(&file)
            .arg("--url")
            .arg(&admin.base)
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", admin.token))
            .args(["--max-examples", "25", "--seed", "1", "--no-color"])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .env("SCHEMATHESIS_HOOKS", ""),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}\n--- server log ---\n{}",
        tern.log()
    );
    assert!(stdout.contains("passed"), "{stdout}");
    // Every operation of the document was exercised.
    assert!(!stdout.contains("Tested: 0"), "{stdout}");
}
