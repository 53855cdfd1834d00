//! CLI commands that talk to the running server over the admin API ([`crate::client`]):
//! `tern dest list|retry|suspend|resume`, `tern queue summary`, `tern config show`, and
//! the API side of `tern reload` and `tern status` (which fall back to SIGHUP and
//! `status.json` when no admin listener answers). Tables by default, `--json` prints
//! the API's answer as it is, for scripts.

use std::io::Write;

use anyhow::Context;
use serde::Deserialize;

use crate::client::{Client, ClientError};
use crate::config::Config;

/// Longest last-error text shown in a table row; `--json` has it whole.
const MAX_ERROR_COLUMN: usize = 100;

#[derive(Debug, Deserialize)]
struct Destinations {
    destinations: Vec<Destination>,
    /// Absent from servers before the destination limits were shown.
    #[serde(default)]
    limits: Vec<DestinationLimit>,
}

/// One `[[delivery.destination_limits]]` entry as `GET /api/v1/destinations` shows it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DestinationLimit {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) next_hops: Vec<String>,
    #[serde(default)]
    pub(crate) mx_hosts: Vec<String>,
    pub(crate) max_connections: Option<u32>,
    pub(crate) max_messages: Option<String>,
    /// Connections held under it (by the node that answered; summed over the nodes by
    /// `--cluster`).
    pub(crate) connections: Option<u64>,
    #[serde(default)]
    pub(crate) scope: String,
}

/// The destination limits block of `tern dest list`: each limit, what it covers, and the
/// connections held under it (`held` names whose: `here`, or `cluster` summed over the
/// nodes that answered).
pub(crate) fn write_limits(
    out: &mut dyn Write,
    limits: &[DestinationLimit],
    held: &str,
) -> std::io::Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let width = limits
        .iter()
        .map(|l| l.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("LIMIT".len());
    let conns = format!("CONNECTIONS ({held})");
    writeln!(
        out,
        "\n{:<width$}  {:<7}  {:<cw$}  {:<14}  COVERS",
        "LIMIT",
        "SCOPE",
        conns,
        "MESSAGES",
        cw = conns.len()
    )?;
    for l in limits {
        let connections = match (l.connections, l.max_connections) {
            (Some(n), Some(max)) => format!("{n}/{max}"),
            (None, Some(max)) => format!("?/{max}"),
            _ => "-".into(),
        };
        let covers: Vec<String> = l
            .next_hops
            .iter()
            .cloned()
            .chain(l.mx_hosts.iter().map(|m| format!("mx {m}")))
            .collect();
        writeln!(
            out,
            "{:<width$}  {:<7}  {:<cw$}  {:<14}  {}",
            l.name,
            shorten(&l.scope, 7),
            connections,
            l.max_messages.as_deref().unwrap_or("-"),
            shorten(&covers.join(", "), MAX_ERROR_COLUMN),
            cw = conns.len()
        )?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Destination {
    name: String,
    queued: u64,
    state: String,
    down_until_unix_ms: Option<u64>,
    in_use: u64,
    limit: u64,
    last_error: Option<String>,
    /// Absent from servers before issue 19, and until a delivery was tried.
    #[serde(default)]
    tls: Option<DestinationTls>,
    /// In a cluster: the node that set a down mark or suspension.
    #[serde(default)]
    set_by: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DestinationTls {
    /// Absent from servers before `tern dest show`.
    #[serde(default)]
    decided_unix_ms: Option<u64>,
    summary: String,
    #[serde(default)]
    hosts: Vec<HostTls>,
}

#[derive(Debug, Deserialize)]
struct HostTls {
    host: String,
    policy: String,
    reason: String,
}

/// `GET /api/v1/queue/summary`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Summary {
    pub(crate) buckets: Vec<String>,
    pub(crate) rows: Vec<SummaryRow>,
    pub(crate) total: u64,
    pub(crate) counts: Vec<u64>,
    /// False when mail moved while the server counted (a server from before issue 16
    /// does not say: taken as exact, as it claimed then).
    #[serde(default = "exact_by_default")]
    pub(crate) exact: bool,
}

fn exact_by_default() -> bool {
    true
}

/// One destination's line of a [`Summary`].
#[derive(Debug, Deserialize)]
pub(crate) struct SummaryRow {
    pub(crate) destination: String,
    pub(crate) total: u64,
    pub(crate) counts: Vec<u64>,
}

fn time_of(unix_ms: u64) -> String {
    crate::queue::rfc3339(i64::try_from(unix_ms.saturating_mul(1000)).unwrap_or(i64::MAX))
}

fn shorten(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut s: String = one_line.chars().take(max.saturating_sub(3)).collect();
    s.push_str("...");
    s
}

/// `tern dest list`.
pub fn dest_list(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = Client::from_config(config)?;
    let value: serde_json::Value = client.get("/api/v1/destinations")?;
    let mut out = crate::term::stdout();
    if json {
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let list: Destinations =
        serde_json::from_value(value).context("unexpected answer from the server")?;
    if list.destinations.is_empty() {
        writeln!(out, "No destinations have mail queued")?;
    } else {
        write_destinations(&mut out, &list.destinations)?;
    }
    write_limits(&mut out, &list.limits, "here")?;
    Ok(())
}

/// `tern dest show NAME`.
pub fn dest_show(config: &Config, name: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::from_config(config)?;
    let path = format!("/api/v1/destinations/{}", encode_segment(name));
    let value: serde_json::Value = client.get(&path)?;
    let mut out = crate::term::stdout();
    if json {
        writeln!(out, "{value}")?;
        return Ok(());
    }
    write_destination_value(&mut out, &value)
}

/// One destination from the API's JSON, as [`write_destination`] writes it.
pub(crate) fn write_destination_value(
    out: &mut impl Write,
    value: &serde_json::Value,
) -> anyhow::Result<()> {
    let d: Destination =
        serde_json::from_value(value.clone()).context("unexpected answer from the server")?;
    write_destination(out, &d)?;
    Ok(())
}

/// One destination, a field a line, then its hosts' TLS policies.
fn write_destination(out: &mut impl Write, d: &Destination) -> std::io::Result<()> {
    let field = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "{k:<12}{v}");
    field(out, "Destination", &shorten(&d.name, 255))?;
    let state = match &d.set_by {
        Some(node) if d.state != "active" => format!("{} (set by {})", d.state, shorten(node, 64)),
        _ => shorten(&d.state, 16),
    };
    field(out, "State", &state)?;
    if let Some(t) = d.down_until_unix_ms {
        field(out, "Down until", &time_of(t))?;
    }
    field(out, "Queued", &d.queued.to_string())?;
    field(out, "In use", &format!("{}/{}", d.in_use, d.limit))?;
    field(
        out,
        "Last error",
        &d.last_error
            .as_deref()
            .map_or_else(|| "-".into(), |e| shorten(e, 1000)),
    )?;
    let Some(t) = &d.tls else {
        return field(
            out,
            "TLS",
            "- (no SMTP delivery to it tried since the start)",
        );
    };
    let when = t
        .decided_unix_ms
        .map(|ms| format!(", decided {}", time_of(ms)))
        .unwrap_or_default();
    field(out, "TLS", &format!("{}{when}", shorten(&t.summary, 64)))?;
    write_tls_hosts(out, &t.hosts, 255)
}

/// One line per host: its name (cut at `host_max`), TLS policy and why.
fn write_tls_hosts(
    out: &mut impl Write,
    hosts: &[HostTls],
    host_max: usize,
) -> std::io::Result<()> {
    for h in hosts {
        writeln!(
            out,
            "  {}  {}  {}",
            shorten(&h.host, host_max),
            shorten(&h.policy, 24),
            shorten(&h.reason, MAX_ERROR_COLUMN)
        )?;
    }
    Ok(())
}

fn write_destinations(out: &mut impl Write, list: &[Destination]) -> std::io::Result<()> {
    let width = list
        .iter()
        .map(|d| d.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("DESTINATION".len());
    // In a cluster, a mark shows the node that set it: `down by node-1`.
    let state_of = |d: &Destination| match &d.set_by {
        Some(node) if d.state != "active" => format!("{} by {}", d.state, shorten(node, 32)),
        _ => d.state.clone(),
    };
    let swidth = list
        .iter()
        .map(|d| state_of(d).chars().count())
        .max()
        .unwrap_or(0)
        .max(9);
    writeln!(
        out,
        "{:<width$}  {:<swidth$}  {:>6}  {:>7}  {:<20}  {:<22}  LAST ERROR",
        "DESTINATION", "STATE", "QUEUED", "IN USE", "DOWN UNTIL", "TLS"
    )?;
    for d in list {
        writeln!(
            out,
            "{:<width$}  {:<swidth$}  {:>6}  {:>7}  {:<20}  {:<22}  {}",
            d.name,
            state_of(d),
            d.queued,
            format!("{}/{}", d.in_use, d.limit),
            d.down_until_unix_ms
                .map(time_of)
                .unwrap_or_else(|| "-".into()),
            d.tls
                .as_ref()
                .map_or_else(|| "-".into(), |t| shorten(&t.summary, 22)),
            d.last_error
                .as_deref()
                .map_or_else(|| "-".into(), |e| shorten(e, MAX_ERROR_COLUMN)),
        )?;
    }
    // Where DANE or MTA-STS decided (or refused hosts), each host's policy and why.
    for d in list {
        let Some(t) = d.tls.as_ref().filter(|t| !t.summary.starts_with("route ")) else {
            continue;
        };
        writeln!(out, "\nTLS of {}:", shorten(&d.name, MAX_ERROR_COLUMN))?;
        write_tls_hosts(out, &t.hosts, 64)?;
    }
    Ok(())
}

/// `tern dest retry|suspend|resume NAME`.
pub fn dest_action(config: &Config, name: &str, action: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::from_config(config)?;
    let path = format!("/api/v1/destinations/{}/{action}", encode_segment(name));
    let value: serde_json::Value = client.post(&path, &serde_json::json!({}))?;
    if json {
        crate::term::outln!("{value}");
    } else {
        crate::term::outln!(
            "{}",
            value["result"].as_str().unwrap_or("done (no result text)")
        );
    }
    Ok(())
}

/// `tern tls-reports send`: closes the open TLS report period and sends the reports.
pub fn tls_send(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = Client::from_config(config)?;
    let value: serde_json::Value =
        client.post("/api/v1/tls-reports/send", &serde_json::json!({}))?;
    if json {
        crate::term::outln!("{value}");
    } else {
        let n = |k: &str| value[k].as_u64().unwrap_or(0);
        crate::term::outln!(
            "TLS reports: {} queued and {} posted for {} domain(s) from {} period(s); {} address(es) skipped, {} failed (tried again later)",
            n("queued"),
            n("posted"),
            n("domains"),
            n("periods"),
            n("skipped"),
            n("failed")
        );
    }
    Ok(())
}

/// `tern dmarc-reports send`: closes the open report period and queues the reports.
pub fn dmarc_send(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = Client::from_config(config)?;
    let value: serde_json::Value =
        client.post("/api/v1/dmarc-reports/send", &serde_json::json!({}))?;
    if json {
        crate::term::outln!("{value}");
    } else {
        let n = |k: &str| value[k].as_u64().unwrap_or(0);
        crate::term::outln!(
            "reports: {} queued to {} domain(s) from {} period(s); {} address(es) skipped, {} failed (tried again later)",
            n("queued"),
            n("domains"),
            n("periods"),
            n("skipped"),
            n("failed")
        );
        if n("waiting") > 0 {
            crate::term::outln!(
                "{} period(s) waiting on the other nodes of the cluster (run again within 15 s)",
                n("waiting")
            );
        }
    }
    Ok(())
}

/// Percent-encodes a path segment (destination names are printable ASCII).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `tern queue summary`: the qshape-like table.
pub fn summary(
    config: &Config,
    json: bool,
    state: Option<&str>,
    by: Option<&str>,
) -> anyhow::Result<()> {
    let client = Client::from_config(config)?;
    let path = summary_path(state, by);
    let value: serde_json::Value = client.get(&path)?;
    let mut out = crate::term::stdout();
    if json {
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let s: Summary = serde_json::from_value(value).context("unexpected answer from the server")?;
    write_summary(&mut out, &s)?;
    Ok(())
}

/// The path of `GET /api/v1/queue/summary` with its options.
pub(crate) fn summary_path(state: Option<&str>, by: Option<&str>) -> String {
    let mut query = Vec::new();
    if let Some(s) = state {
        query.push(format!("state={}", encode_segment(s)));
    }
    if let Some(b) = by {
        query.push(format!("by={}", encode_segment(b)));
    }
    if query.is_empty() {
        "/api/v1/queue/summary".to_owned()
    } else {
        format!("/api/v1/queue/summary?{}", query.join("&"))
    }
}

fn write_summary(out: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    write_summary_with_nodes(out, s, &[])
}

/// The qshape table; with `nodes` (`tern queue summary --cluster`), each node's own
/// total line under the cluster's TOTAL, as `node <name>`.
pub(crate) fn write_summary_with_nodes(
    out: &mut impl Write,
    s: &Summary,
    nodes: &[(String, Summary)],
) -> std::io::Result<()> {
    let node_label = |n: &str| format!("node {n}");
    let width = s
        .rows
        .iter()
        .map(|r| r.destination.chars().count())
        .chain(nodes.iter().map(|(n, _)| node_label(n).chars().count()))
        .max()
        .unwrap_or(0)
        .max("TOTAL".len());
    let cols: Vec<usize> = s.buckets.iter().map(|b| b.len().max(5)).collect();
    write!(out, "{:>width$} {:>6}", "", "T")?;
    for (b, w) in s.buckets.iter().zip(&cols) {
        write!(out, " {b:>w$}")?;
    }
    writeln!(out)?;
    let mut row = |name: &str, total: u64, counts: &[u64]| -> std::io::Result<()> {
        write!(out, "{name:>width$} {total:>6}")?;
        for (c, w) in counts.iter().zip(&cols) {
            write!(out, " {c:>w$}")?;
        }
        writeln!(out)
    };
    row("TOTAL", s.total, &s.counts)?;
    for (n, ns) in nodes {
        row(&node_label(n), ns.total, &ns.counts)?;
    }
    for r in &s.rows {
        row(&r.destination, r.total, &r.counts)?;
    }
    if !s.exact {
        writeln!(
            out,
            "(approximate: mail moved while counting; each message is counted at most once)"
        )?;
    }
    Ok(())
}

/// `tern config show`: the server's effective configuration (as TOML, or JSON).
pub fn config_show(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = Client::from_config(config)?;
    let value: serde_json::Value = client.get("/api/v1/config")?;
    if json {
        crate::term::outln!("{value}");
        return Ok(());
    }
    let mut value = value;
    drop_nulls(&mut value);
    let text = toml::to_string_pretty(&value).context("printing the configuration as TOML")?;
    crate::term::out!(
        "# The effective configuration of the running server (secrets redacted).\n\n{text}"
    );
    Ok(())
}

/// TOML has no null: unset optional keys are left out.
fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// What `tern reload` over the API came to.
pub enum Reload {
    /// Reloaded; the server's text.
    Done(String),
    /// The server refused its file; the problems.
    Refused(String),
    /// No admin listener answers: use SIGHUP.
    NoApi(String),
}

/// `tern reload` over the API.
pub fn reload(config: &Config) -> Reload {
    if !config.admin.enabled {
        return Reload::NoApi("the admin listener is off (admin.enabled = false)".into());
    }
    if !config.admin_addr_path().exists() {
        return Reload::NoApi(format!(
            "no server wrote {}",
            config.admin_addr_path().display()
        ));
    }
    let client = match Client::from_config(config) {
        Ok(c) => c,
        Err(e) => return Reload::NoApi(format!("{e:#}")),
    };
    match client.post::<_, serde_json::Value>("/api/v1/reload", &serde_json::json!({})) {
        Ok(v) => Reload::Done(v["result"].as_str().unwrap_or("reloaded").to_owned()),
        Err(ClientError::Api {
            status: 400,
            message,
            ..
        }) => Reload::Refused(message),
        // Unreachable, a wrong token (a stale admin.addr), a server error: the signal.
        Err(e) => Reload::NoApi(e.to_string()),
    }
}

/// `tern status` over the API: `None` when no admin listener of this data directory
/// answers (the caller reads `status.json` and the spool lock instead); else whether the
/// server is healthy (its listeners up).
pub fn status(config: &Config, json: bool) -> anyhow::Result<Option<bool>> {
    if !config.admin.enabled || !config.admin_addr_path().exists() {
        return Ok(None);
    }
    let Ok(client) = Client::from_config(config) else {
        return Ok(None);
    };
    // Any failure (a stale admin.addr after a crash, a wrong token): the file path says
    // whether a server runs.
    let Ok(body) = client.get::<serde_json::Value>("/api/v1/status") else {
        return Ok(None);
    };
    let healthy = body["listeners_up"].as_bool().unwrap_or(false);
    let snapshot: Option<tern_watchdog::Snapshot> =
        serde_json::from_value(body["workers"].clone()).ok();
    let mut out = crate::term::stdout();
    if json {
        // The keys of the `status.json` form, plus the API's.
        let obj = serde_json::json!({
            "running": true,
            "pid": body["pid"],
            "stale": false,
            "age_ms": 0,
            "snapshot": body["workers"],
            "source": "api",
            "version": body["version"],
            "uptime_secs": body["uptime_secs"],
            "listeners_up": body["listeners_up"],
            "delivery": body["delivery"],
            "cluster": body["cluster"],
        });
        writeln!(out, "{obj}")?;
        return Ok(Some(healthy));
    }
    writeln!(
        out,
        "tern {} pid {}, up {} s; listeners {}, delivery {}",
        body["version"].as_str().unwrap_or("?"),
        body["pid"],
        body["uptime_secs"],
        if healthy { "up" } else { "DOWN" },
        if body["delivery"].as_bool().unwrap_or(false) {
            "on"
        } else {
            "off (queue.deliver = false)"
        }
    )?;
    if let Some(c) = body.get("cluster").filter(|c| c.is_object()) {
        // Degraded mode is said in capitals: limits are local, the cluster may exceed them.
        let state = c["state"].as_str().unwrap_or("?");
        writeln!(
            out,
            "cluster: {} since {} (node {}, id {}, redis {}, {} failed operations)",
            if state == "up" {
                state.to_string()
            } else {
                state.to_uppercase()
            },
            time_of(c["since_ms"].as_u64().unwrap_or(0)),
            c["node"].as_str().unwrap_or("?"),
            c["node_id"],
            c["mode"].as_str().unwrap_or("?"),
            c["failed_ops"]
        )?;
    }
    match &snapshot {
        Some(snap) => {
            writeln!(out)?;
            crate::status::write_snapshot_body(&mut out, snap)?;
        }
        None => writeln!(out, "the watchdog is off ([watchdog] enabled = false)")?,
    }
    Ok(Some(healthy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_destination_is_shown_a_field_a_line_with_its_hosts_tls() {
        let d: Destination = serde_json::from_value(serde_json::json!({
            "name": "mx:example.com", "queued": 0, "state": "down",
            "down_until_unix_ms": 1_800_000_000_000u64, "in_use": 0, "limit": 20,
            "last_error": "connect refused", "set_by": "node-2",
            "tls": {"decided_unix_ms": 1_800_000_000_000u64, "summary": "dane (dane)",
                    "hosts": [{"host": "mx1.example.com", "policy": "dane (dane)",
                               "usable": true, "reason": "TLSA 3 1 1 published"}]}
        }))
        .unwrap();
        let mut out = Vec::new();
        write_destination(&mut out, &d).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Destination mx:example.com", "{text}");
        assert_eq!(lines[1], "State       down (set by node-2)", "{text}");
        assert!(lines[2].starts_with("Down until  2027-"), "{text}");
        assert!(text.contains("In use      0/20"), "{text}");
        assert!(
            text.contains("TLS         dane (dane), decided 2027-"),
            "{text}"
        );
        assert!(
            text.ends_with("  mx1.example.com  dane (dane)  TLSA 3 1 1 published\n"),
            "{text}"
        );
        let plain: Destination = serde_json::from_value(serde_json::json!({
            "name": "smtp:[10.0.0.5]:25", "queued": 2, "state": "active",
            "down_until_unix_ms": null, "in_use": 1, "limit": 20, "last_error": null
        }))
        .unwrap();
        let mut out = Vec::new();
        write_destination(&mut out, &plain).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("State       active\n"), "{text}");
        assert!(!text.contains("Down until"), "{text}");
        assert!(text.contains("TLS         - (no SMTP delivery"), "{text}");
    }

    #[test]
    fn limits_block_shows_held_connections_and_what_each_covers() {
        let limits: Vec<DestinationLimit> = serde_json::from_value(serde_json::json!([
            {"name": "slow", "next_hops": ["slow.test"], "mx_hosts": [],
             "max_connections": 10, "max_messages": null, "connections": 3, "scope": "cluster"},
            {"name": "google", "next_hops": [], "mx_hosts": ["*.google.com"],
             "max_connections": null, "max_messages": "600/1m", "connections": null,
             "scope": "cluster"}
        ]))
        .unwrap();
        let mut out = Vec::new();
        write_limits(&mut out, &limits, "here").unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("LIMIT "), "{text}");
        assert!(lines[1].contains("CONNECTIONS (here)"), "{text}");
        assert!(lines[2].starts_with("slow "), "{text}");
        assert!(lines[2].contains(" 3/10 "), "{text}");
        assert!(lines[2].ends_with("slow.test"), "{text}");
        assert!(lines[3].contains(" 600/1m "), "{text}");
        assert!(lines[3].ends_with("mx *.google.com"), "{text}");
        let mut out = Vec::new();
        write_limits(&mut out, &[], "here").unwrap();
        assert!(out.is_empty(), "no limits, no block");
    }

    #[test]
    fn summary_table_is_aligned_like_qshape() {
        let s = Summary {
            buckets: vec!["0-5m".into(), "5-10m".into()],
            rows: vec![
                SummaryRow {
                    destination: "mx:example.com".into(),
                    total: 3,
                    counts: vec![2, 1],
                },
                SummaryRow {
                    destination: "(other)".into(),
                    total: 1,
                    counts: vec![1, 0],
                },
            ],
            total: 4,
            counts: vec![3, 1],
            exact: true,
        };
        let mut out = Vec::new();
        write_summary(&mut out, &s).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].ends_with("T  0-5m 5-10m"), "{text}");
        assert!(
            lines[1]
                .trim_start()
                .starts_with("TOTAL      4     3     1"),
            "{text}"
        );
        assert!(lines[2].starts_with("mx:example.com"), "{text}");
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
        // Counted while mail moved: the table says so under the rows.
        let moving = Summary { exact: false, ..s };
        let mut out = Vec::new();
        write_summary(&mut out, &moving).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines()
                .last()
                .is_some_and(|l| l.starts_with("(approximate: mail moved")),
            "{text}"
        );
    }

    #[test]
    fn names_are_encoded_for_the_path_and_errors_shortened() {
        assert_eq!(encode_segment("mx:example.com"), "mx:example.com");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(shorten("abc", 10), "abc");
        assert_eq!(shorten("a\nb", 10), "a b");
        assert_eq!(shorten(&"x".repeat(20), 10), "xxxxxxx...");
    }
}
