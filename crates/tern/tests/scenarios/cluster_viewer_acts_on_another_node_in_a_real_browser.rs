//! The web viewer of a cluster node in a real browser (issue 20 §3; Debian's headless
//! Chromium through Playwright, as `web_viewer_in_a_real_browser`): signed in on node 1
//! only, the header's node selector and the overview's cluster table list both nodes;
//! choosing node 2 lists node 2's messages (not node 1's), and a confirmed hold there
//! moves node 2's message to its hold queue, through node 1's proxy
//! (`testpeers/browser/viewer-test.js --cluster`).

use std::time::Duration;

use crate::common::Setup;
use crate::common::admin::Admin;
use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::{free_port, send_one, simple_message};
use crate::web_viewer_in_a_real_browser::{require_browser, run_script, wait_for_files};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn cluster_viewer_acts_on_another_node_in_a_real_browser() {
    let node = require_browser();
    let redis = RedisServer::start();
    let refused = free_port("127.0.5.2".parse().unwrap());
    let nodes = start_nodes(&redis, 2, "", |_| {
        Setup::new()
            .queue("[queue]\ndeliver = true\nmin_backoff_secs = 600\nmax_backoff_secs = 600\n")
            .section(&format!(
                "[[route]]\ndomains = [\"down.test\"]\ntransport = \"smtp\"\nhosts = [\"127.0.5.2:{refused}\"]\n\n[[route]]\ndomains = [\"held.test\"]\ntransport = \"hold\"\n"
            ))
    });
    wait_for_members(&nodes, 2, Duration::from_secs(30));
    let local_held = send_one(
        nodes[0].addr(),
        "s@client.test",
        &["h@held.test"],
        &simple_message("held on node 1", "a hold route keeps it"),
    );
    let other_deferred = send_one(
        nodes[1].addr(),
        "s@client.test",
        &["d@down.test"],
        &simple_message("deferred on node 2", "its destination refuses connections"),
    );
    wait_for_files(&nodes[0], "hold", 1);
    wait_for_files(&nodes[1], "deferred", 1);

    let admin = Admin::of(&nodes[0]);
    let cluster = serde_json::json!({
        "local": "node1",
        "other": "node2",
        "other_deferred": other_deferred,
        "local_held": local_held,
    });
    run_script(
        &node,
        &[
            "--base".to_string(),
            admin.base.clone(),
            "--token".into(),
            admin.token.clone(),
            "--cluster".into(),
            cluster.to_string(),
        ],
    );
    let held = Admin::of(&nodes[1]).get(&format!("/api/v1/queue/{other_deferred}"));
    assert_eq!(held.json()["state"], "hold", "{}", held.body);
}
