//! One view of the cluster from the command line (docs/cluster/view.md): `tern cluster
//! status|forget`, and `--cluster` on `tern queue summary`, `tern queue list`, `tern
//! track` and `tern dest list`.
//!
//! How a `--cluster` command works: it asks the local server (found and proven as for
//! any command, `crate::client`) for the node list (`GET /api/v1/cluster`), then asks
//! every live node's admin API (its `admin_url` from Redis) the same question, one thread
//! per node, each request bounded by [`NODE_TIMEOUT`], and merges the answers: rows get
//! the node's name, summaries add up with per-node detail.
//!
//! Invariants:
//! - the token goes to a node only after it proved it knows it (`/proof`,
//!   `Client::node`): whoever writes an `admin_url` into Redis cannot collect it;
//! - a node that is dead, has an unusable `admin_url`, does not answer in time or answers
//!   garbage is named in the output (`missing`, in `--json` too) and the exit status is
//!   [`PARTIAL`]; the command never waits longer than the per-node bound (the nodes are
//!   asked in parallel);
//! - at most `tern_cluster::membership::MAX_NODES` nodes are asked.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tern_cluster::membership::{MAX_NODES, NodeInfo, admin_endpoint};

use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::remote::DestinationLimit;

/// Bound of each request to one node (a list may take a few, one per page).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit status of a `--cluster` command when a node did not answer (the answer is
/// partial), and of `tern cluster status` when a node is dead or this one is degraded.
pub const PARTIAL: u8 = 3;

/// A node that gave no answer, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Missing {
    /// Its name.
    pub node: String,
    /// Why (dead, unreachable, refused the proof, an error answer).
    pub error: String,
}

/// The answers of every node to one question.
pub struct Answers<T> {
    /// Each node that answered, by name, in name order.
    pub answered: Vec<(String, T)>,
    /// Each node that did not.
    pub missing: Vec<Missing>,
}

impl<T> Answers<T> {
    /// Whether some node did not answer.
    pub fn partial(&self) -> bool {
        !self.missing.is_empty()
    }

    /// `0`, or [`PARTIAL`].
    pub fn exit(&self) -> u8 {
        if self.partial() { PARTIAL } else { 0 }
    }

    fn missing_json(&self) -> Value {
        json!(self.missing)
    }
}

/// The local server's `GET /api/v1/cluster`.
fn cluster_of(local: &Client) -> anyhow::Result<Value> {
    match local.get::<Value>("/api/v1/cluster") {
        Ok(v) => Ok(v),
        Err(ClientError::Api { status: 409, .. }) => {
            anyhow::bail!("this server is not in a cluster ([cluster] enabled = false)")
        }
        Err(e) => Err(e.into()),
    }
}

/// The nodes listed in the local server's answer, bounded and parsed.
fn nodes_of(cluster: &Value) -> anyhow::Result<Vec<NodeInfo>> {
    if let Some(e) = cluster["error"].as_str() {
        anyhow::bail!("the node list could not be read from Redis: {e}");
    }
    let list = cluster["nodes"].as_array().cloned().unwrap_or_default();
    Ok(list
        .into_iter()
        .take(MAX_NODES)
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect())
}

/// Asks every node listed by the local server `ask`, in parallel; merges nothing (the
/// caller does).
pub fn ask_all<T: Send>(
    config: &Config,
    ask: impl Fn(&Client) -> Result<T, ClientError> + Sync,
) -> anyhow::Result<Answers<T>> {
    let local = Client::from_config(config)?;
    let nodes = nodes_of(&cluster_of(&local)?)?;
    if nodes.is_empty() {
        anyhow::bail!("Redis lists no node (not even this one yet: is its heartbeat running?)");
    }
    let token = local.token().to_string();
    let mut missing = Vec::new();
    let mut to_ask = Vec::new();
    for n in nodes {
        if !n.alive {
            missing.push(Missing {
                error: "dead (no heartbeat)".into(),
                node: n.name,
            });
            continue;
        }
        match admin_endpoint(&n.admin_url) {
            Some(e) => to_ask.push((n.name, e)),
            None => missing.push(Missing {
                error: format!("its admin URL {:?} is not http://host:port", n.admin_url),
                node: n.name,
            }),
        }
    }
    let results: Vec<(String, Result<T, ClientError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = to_ask
            .iter()
            .map(|(name, endpoint)| {
                let token = token.clone();
                let ask = &ask;
                (
                    name.clone(),
                    s.spawn(move || {
                        let client = Client::node(endpoint, token, NODE_TIMEOUT)?;
                        ask(&client)
                    }),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(ClientError::Protocol("the request panicked".into())));
                (name, r)
            })
            .collect()
    });
    let mut answered = Vec::new();
    for (node, r) in results {
        match r {
            Ok(v) => answered.push((node, v)),
            Err(e) => missing.push(Missing {
                node,
                error: e.to_string(),
            }),
        }
    }
    missing.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(Answers { answered, missing })
}

fn get<T: DeserializeOwned>(path: &str) -> impl Fn(&Client) -> Result<T, ClientError> + Sync {
    move |c: &Client| c.get::<T>(path)
}

/// Writes the nodes that did not answer, after the table.
fn write_missing(out: &mut impl Write, missing: &[Missing]) -> std::io::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nPARTIAL ANSWER: {} node(s) did not answer:",
        missing.len()
    )?;
    for m in missing {
        writeln!(out, "  {}: {}", m.node, shorten(&m.error, 200))?;
    }
    Ok(())
}

fn shorten(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() <= max {
        return line;
    }
    let mut s: String = line.chars().take(max.saturating_sub(3)).collect();
    s.push_str("...");
    s
}

fn time_of(unix_ms: u64) -> String {
    crate::queue::rfc3339(i64::try_from(unix_ms.saturating_mul(1000)).unwrap_or(i64::MAX))
}

// ---- tern cluster status / forget --------------------------------------------------

/// `tern cluster status`: exit 0 when every listed node is alive and this node's link
/// to Redis is up, else [`PARTIAL`].
pub fn status(config: &Config, json: bool) -> anyhow::Result<u8> {
    let local = Client::from_config(config)?;
    let cluster = cluster_of(&local)?;
    let state = cluster["health"]["state"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let list_error = cluster["error"].as_str().map(str::to_string);
    let nodes: Vec<NodeInfo> = cluster["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .take(MAX_NODES)
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let healthy = state == "up" && list_error.is_none() && nodes.iter().all(|n| n.alive);
    let mut out = crate::term::stdout();
    if json {
        writeln!(out, "{cluster}")?;
        return Ok(if healthy { 0 } else { PARTIAL });
    }
    let now = tern_watchdog::clock::unix_ms();
    writeln!(
        out,
        "this node: {} (id {}), redis {}",
        cluster["node"].as_str().unwrap_or("?"),
        cluster["node_id"],
        if state == "up" {
            state.clone()
        } else {
            state.to_uppercase()
        }
    )?;
    if let Some(e) = &list_error {
        writeln!(out, "the node list could not be read: {}", shorten(e, 200))?;
    }
    let width = nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(0)
        .max("NODE".len());
    writeln!(
        out,
        "{:<width$}  {:>4}  {:<5}  {:<10}  {:<28}  {:>9}  QUEUE",
        "NODE", "ID", "STATE", "VERSION", "ADMIN URL", "LAST SEEN"
    )?;
    for n in &nodes {
        let counts = queue_counts(&n.report);
        let seen = if n.seen_ms == 0 {
            "-".to_string()
        } else {
            format!("{:.1}s ago", now.saturating_sub(n.seen_ms) as f64 / 1000.0)
        };
        writeln!(
            out,
            "{:<width$}  {:>4}  {:<5}  {:<10}  {:<28}  {:>9}  {}",
            n.name,
            n.id,
            if n.alive { "alive" } else { "DEAD" },
            shorten(&n.version, 10),
            shorten(&n.admin_url, 28),
            seen,
            counts
        )?;
        if let Some(at) = n.dead_since_ms {
            writeln!(
                out,
                "{:<width$}  declared dead at {} (`tern cluster forget {}` removes it)",
                "",
                time_of(at),
                n.name
            )?;
        }
    }
    Ok(if healthy { 0 } else { PARTIAL })
}

/// `incoming 1 active 0 deferred 3 ...` from a heartbeat's report.
fn queue_counts(report: &Value) -> String {
    let Some(m) = report.as_object() else {
        return "-".into();
    };
    let mut parts = Vec::new();
    for s in tern_spool::QueueState::ALL {
        if let Some(n) = m.get(&s.to_string()).and_then(Value::as_u64) {
            parts.push(format!("{s} {n}"));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// `tern cluster forget NAME`.
pub fn forget(config: &Config, name: &str) -> anyhow::Result<()> {
    let local = Client::from_config(config)?;
    let path = format!("/api/v1/cluster/nodes/{}", encode(name));
    let answer: Result<Value, ClientError> = local.delete(&path);
    let v = answer?;
    crate::term::outln!("{}", v["result"].as_str().unwrap_or("forgotten"));
    Ok(())
}

/// Percent-encoding of a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---- tern track --cluster -----------------------------------------------------------

/// `tern track --cluster QUERY`: every node's tracking log. Exit 0 when found and every
/// node answered, 1 when nothing matched anywhere that answered, [`PARTIAL`] when a
/// node did not answer.
pub fn track(config: &Config, query: &str, limit: usize, json: bool) -> anyhow::Result<u8> {
    let q = query.trim();
    if q.is_empty() {
        anyhow::bail!("give a queue id, a Message-ID or an address");
    }
    if !(1..=tern_events::tracking::MAX_LIMIT).contains(&limit) {
        anyhow::bail!("--limit must be 1 to {}", tern_events::tracking::MAX_LIMIT);
    }
    let path = format!("/api/v1/track?q={}&limit={limit}", encode(q));
    let answers = ask_all(config, get::<Value>(&path))?;
    let mut records: Vec<Value> = Vec::new();
    let mut found_on = Vec::new();
    let mut truncated = false;
    for (node, v) in &answers.answered {
        let recs = v["records"].as_array().cloned().unwrap_or_default();
        if !recs.is_empty() {
            found_on.push(node.clone());
        }
        truncated |= v["truncated"].as_bool().unwrap_or(false);
        for mut r in recs.into_iter().take(limit) {
            if let Some(o) = r.as_object_mut() {
                o.insert("node".into(), Value::String(node.clone()));
                records.push(r);
            }
        }
    }
    records.sort_by_key(|r| r["at_unix_ms"].as_u64().unwrap_or(0));
    let mut out = crate::term::stdout();
    if json {
        let body = json!({
            "query": query,
            "records": records,
            "truncated": truncated,
            "nodes": found_on,
            "missing": answers.missing_json(),
            "partial": answers.partial(),
        });
        writeln!(out, "{body}")?;
    } else if found_on.is_empty() {
        writeln!(out, "tern: nothing in any node's tracking log matches {q}")?;
    } else {
        if truncated {
            writeln!(
                out,
                "(only the newest {limit} records per node are shown; raise --limit for more)"
            )?;
        }
        for node in &found_on {
            let mine: Vec<Value> = records
                .iter()
                .filter(|r| r["node"].as_str() == Some(node))
                .cloned()
                .collect();
            writeln!(out, "== node {node} ==")?;
            write!(out, "{}", tern_events::tracking::timeline(&mine))?;
        }
    }
    if !json {
        write_missing(&mut out, &answers.missing)?;
    }
    out.flush()?;
    Ok(match (answers.partial(), found_on.is_empty()) {
        (true, _) => PARTIAL,
        (false, true) => 1,
        (false, false) => 0,
    })
}

// ---- tern queue list --cluster ------------------------------------------------------

/// `tern queue list --cluster`: every node's messages with the node's name.
pub fn queue_list(
    config: &Config,
    json: bool,
    args: &crate::cli_queue::FilterArgs,
) -> anyhow::Result<u8> {
    args.filter()?;
    let answers = ask_all(config, |c| crate::cli_queue::list_from_server(c, args))?;
    let mut rows: Vec<(String, tern_admin::queue::filter::Summary)> = Vec::new();
    for (node, list) in &answers.answered {
        for m in list {
            rows.push((node.clone(), m.clone()));
        }
    }
    rows.sort_by(|a, b| {
        (a.1.arrival_unix_ms, &a.1.id, &a.0).cmp(&(b.1.arrival_unix_ms, &b.1.id, &b.0))
    });
    let mut out = crate::term::stdout();
    if json {
        let messages: Vec<Value> = rows
            .iter()
            .filter_map(|(node, m)| {
                let mut v = serde_json::to_value(m).ok()?;
                v.as_object_mut()?
                    .insert("node".into(), Value::String(node.clone()));
                Some(v)
            })
            .collect();
        let body = json!({
            "messages": messages,
            "nodes": answers.answered.iter().map(|(n, l)| json!({"node": n, "messages": l.len()})).collect::<Vec<_>>(),
            "missing": answers.missing_json(),
            "partial": answers.partial(),
        });
        writeln!(out, "{body}")?;
        return Ok(answers.exit());
    }
    crate::cli_queue::print_mailq_with_nodes(&mut out, &rows)?;
    write_missing(&mut out, &answers.missing)?;
    Ok(answers.exit())
}

// ---- tern queue summary --cluster ---------------------------------------------------

/// `tern queue summary --cluster`: the tables of every node added up per destination
/// and age bucket, with each node's total.
pub fn summary(
    config: &Config,
    json: bool,
    state: Option<&str>,
    by: Option<&str>,
) -> anyhow::Result<u8> {
    let path = crate::remote::summary_path(state, by);
    let answers = ask_all(config, get::<crate::remote::Summary>(&path))?;
    let merged = merge_summaries(&answers.answered);
    let mut out = crate::term::stdout();
    if json {
        let body = json!({
            "buckets": merged.sum.buckets,
            "total": merged.sum.total,
            "counts": merged.sum.counts,
            "exact": merged.sum.exact,
            "rows": merged.sum.rows.iter().map(|r| json!({
                "destination": r.destination,
                "total": r.total,
                "counts": r.counts,
                "nodes": merged.per_row.get(&r.destination).cloned().unwrap_or_default(),
            })).collect::<Vec<_>>(),
            "nodes": merged.nodes.iter().map(|(n, s)| json!({
                "node": n, "total": s.total, "counts": s.counts, "exact": s.exact,
            })).collect::<Vec<_>>(),
            "missing": answers.missing.iter().cloned().chain(merged.incompatible.iter().cloned()).collect::<Vec<_>>(),
            "partial": answers.partial() || !merged.incompatible.is_empty(),
        });
        writeln!(out, "{body}")?;
    } else {
        crate::remote::write_summary_with_nodes(&mut out, &merged.sum, &merged.nodes)?;
        let mut missing = answers.missing.clone();
        missing.extend(merged.incompatible.iter().cloned());
        write_missing(&mut out, &missing)?;
    }
    Ok(if answers.partial() || !merged.incompatible.is_empty() {
        PARTIAL
    } else {
        0
    })
}

/// Summaries added up.
struct MergedSummary {
    /// The sum over nodes.
    sum: crate::remote::Summary,
    /// Each node's own total line (name, its summary without rows).
    nodes: Vec<(String, crate::remote::Summary)>,
    /// Per destination, each node's total.
    per_row: BTreeMap<String, BTreeMap<String, u64>>,
    /// Nodes whose age buckets differ from the first node's (another version): left out.
    incompatible: Vec<Missing>,
}

fn merge_summaries(answers: &[(String, crate::remote::Summary)]) -> MergedSummary {
    let buckets = answers
        .first()
        .map(|(_, s)| s.buckets.clone())
        .unwrap_or_default();
    let width = buckets.len();
    let mut total = 0u64;
    let mut counts = vec![0u64; width];
    let mut exact = true;
    let mut rows: BTreeMap<String, (u64, Vec<u64>)> = BTreeMap::new();
    let mut per_row: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut nodes = Vec::new();
    let mut incompatible = Vec::new();
    let add = |into: &mut Vec<u64>, from: &[u64]| {
        for (a, b) in into.iter_mut().zip(from) {
            *a = a.saturating_add(*b);
        }
    };
    for (node, s) in answers {
        if s.buckets != buckets || s.counts.len() != width {
            incompatible.push(Missing {
                node: node.clone(),
                error: "its age buckets differ from the other nodes' (another version?)".into(),
            });
            continue;
        }
        total = total.saturating_add(s.total);
        add(&mut counts, &s.counts);
        exact &= s.exact;
        for r in &s.rows {
            let e = rows
                .entry(r.destination.clone())
                .or_insert_with(|| (0, vec![0; width]));
            e.0 = e.0.saturating_add(r.total);
            add(&mut e.1, &r.counts);
            *per_row
                .entry(r.destination.clone())
                .or_default()
                .entry(node.clone())
                .or_insert(0) += r.total;
        }
        nodes.push((
            node.clone(),
            crate::remote::Summary {
                buckets: buckets.clone(),
                rows: Vec::new(),
                total: s.total,
                counts: s.counts.clone(),
                exact: s.exact,
            },
        ));
    }
    let mut rows: Vec<crate::remote::SummaryRow> = rows
        .into_iter()
        .map(|(destination, (total, counts))| crate::remote::SummaryRow {
            destination,
            total,
            counts,
        })
        .collect();
    // Largest first, like qshape.
    rows.sort_by(|a, b| {
        b.total
            .cmp(&a.total)
            .then(a.destination.cmp(&b.destination))
    });
    MergedSummary {
        sum: crate::remote::Summary {
            buckets,
            rows,
            total,
            counts,
            exact,
        },
        nodes,
        per_row,
        incompatible,
    }
}

// ---- tern dest list --cluster -------------------------------------------------------

/// `tern dest list --cluster`: every node's destinations, one row per destination and
/// node, with the cluster's total per destination.
pub fn dest_list(config: &Config, json: bool) -> anyhow::Result<u8> {
    let answers = ask_all(config, get::<Value>("/api/v1/destinations"))?;
    let mut rows: Vec<(String, Value)> = Vec::new();
    for (node, v) in &answers.answered {
        for d in v["destinations"].as_array().cloned().unwrap_or_default() {
            if d["name"].is_string() {
                rows.push((node.clone(), d));
            }
        }
    }
    rows.sort_by(|a, b| (a.1["name"].as_str(), &a.0).cmp(&(b.1["name"].as_str(), &b.0)));
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (_, d) in &rows {
        let e = totals
            .entry(d["name"].as_str().unwrap_or_default().to_string())
            .or_default();
        e.0 = e.0.saturating_add(d["queued"].as_u64().unwrap_or(0));
        e.1 = e.1.saturating_add(d["in_use"].as_u64().unwrap_or(0));
    }
    let limits = merged_limits(&answers.answered);
    let mut out = crate::term::stdout();
    if json {
        let destinations: Vec<Value> = rows
            .into_iter()
            .map(|(node, mut d)| {
                if let Some(o) = d.as_object_mut() {
                    o.insert("node".into(), Value::String(node));
                }
                d
            })
            .collect();
        let body = json!({
            "destinations": destinations,
            "totals": totals.iter().map(|(n, (q, u))| json!({"name": n, "queued": q, "in_use": u})).collect::<Vec<_>>(),
            "limits": limits.iter().map(|l| json!({
                "name": l.name,
                "next_hops": l.next_hops,
                "mx_hosts": l.mx_hosts,
                "max_connections": l.max_connections,
                "max_messages": l.max_messages,
                "connections": l.connections,
                "scope": l.scope,
            })).collect::<Vec<_>>(),
            "missing": answers.missing_json(),
            "partial": answers.partial(),
        });
        writeln!(out, "{body}")?;
        return Ok(answers.exit());
    }
    if rows.is_empty() {
        writeln!(
            out,
            "No destinations have mail queued on any node that answered"
        )?;
    } else {
        let w = rows
            .iter()
            .map(|(_, d)| d["name"].as_str().unwrap_or("").chars().count())
            .max()
            .unwrap_or(0)
            .max("DESTINATION".len());
        let nw = rows
            .iter()
            .map(|(n, _)| n.len())
            .max()
            .unwrap_or(0)
            .max("NODE".len());
        writeln!(
            out,
            "{:<w$}  {:<nw$}  {:<9}  {:>6}  {:>7}  {:<20}  LAST ERROR",
            "DESTINATION", "NODE", "STATE", "QUEUED", "IN USE", "DOWN UNTIL"
        )?;
        let mut last_name: Option<String> = None;
        let print_total = |out: &mut dyn Write, name: &str| -> std::io::Result<()> {
            if let Some((q, u)) = totals.get(name) {
                writeln!(
                    out,
                    "{:<w$}  {:<nw$}  {:<9}  {:>6}  {:>7}",
                    "", "(all)", "", q, u
                )?;
            }
            Ok(())
        };
        for (node, d) in &rows {
            let name = d["name"].as_str().unwrap_or("").to_string();
            if let Some(prev) = &last_name
                && *prev != name
            {
                print_total(&mut out, prev)?;
            }
            writeln!(
                out,
                "{:<w$}  {:<nw$}  {:<9}  {:>6}  {:>7}  {:<20}  {}",
                shorten(&name, 255),
                node,
                shorten(d["state"].as_str().unwrap_or("?"), 9),
                d["queued"].as_u64().unwrap_or(0),
                format!(
                    "{}/{}",
                    d["in_use"].as_u64().unwrap_or(0),
                    d["limit"].as_u64().unwrap_or(0)
                ),
                d["down_until_unix_ms"]
                    .as_u64()
                    .map(time_of)
                    .unwrap_or_else(|| "-".into()),
                d["last_error"]
                    .as_str()
                    .map_or_else(|| "-".into(), |e| shorten(e, 100)),
            )?;
            last_name = Some(name);
        }
        if let Some(prev) = &last_name {
            print_total(&mut out, prev)?;
        }
    }
    crate::remote::write_limits(&mut out, &limits, "cluster")?;
    write_missing(&mut out, &answers.missing)?;
    Ok(answers.exit())
}

/// `tern dest show NAME --cluster`: the destination on every node that knows it (a node
/// answering 404 knows nothing of it: not a missing answer), one block per node.
pub fn dest_show(config: &Config, name: &str, json: bool) -> anyhow::Result<u8> {
    let path = format!(
        "/api/v1/destinations/{}",
        crate::remote::encode_segment(name)
    );
    let answers = ask_all(config, |c: &Client| match c.get::<Value>(&path) {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Api { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    })?;
    let found: Vec<(String, Value)> = answers
        .answered
        .iter()
        .filter_map(|(node, v)| v.clone().map(|v| (node.clone(), v)))
        .collect();
    let mut out = crate::term::stdout();
    if json {
        let body = json!({
            "name": name,
            "nodes": found.iter().map(|(node, v)| json!({"node": node, "destination": v})).collect::<Vec<_>>(),
            "missing": answers.missing_json(),
            "partial": answers.partial(),
        });
        writeln!(out, "{body}")?;
    } else {
        if found.is_empty() {
            writeln!(out, "No node that answered knows {}", shorten(name, 255))?;
        }
        for (i, (node, v)) in found.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            writeln!(out, "== node {node}")?;
            crate::remote::write_destination_value(&mut out, v)?;
        }
    }
    write_missing(&mut out, &answers.missing)?;
    if answers.partial() {
        return Ok(answers.exit());
    }
    // Found nowhere: as `tern dest show` on one node, a failure.
    Ok(if found.is_empty() { 1 } else { 0 })
}

/// The destination limits of every node that answered, by name (the first node's
/// configuration of each), with the connections held summed over the nodes.
fn merged_limits(answered: &[(String, Value)]) -> Vec<DestinationLimit> {
    let mut merged: Vec<DestinationLimit> = Vec::new();
    for (_, v) in answered {
        let Ok(limits) = serde_json::from_value::<Vec<DestinationLimit>>(
            v.get("limits").cloned().unwrap_or(Value::Array(Vec::new())),
        ) else {
            continue;
        };
        for l in limits {
            match merged.iter_mut().find(|m| m.name == l.name) {
                Some(m) => {
                    m.connections = match (m.connections, l.connections) {
                        (Some(a), Some(b)) => Some(a.saturating_add(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => merged.push(l),
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{Summary, SummaryRow};

    #[test]
    fn limits_sum_their_connections_over_the_nodes() {
        let node = |held: u64| {
            json!({"destinations": [], "limits": [
                {"name": "slow", "next_hops": ["slow.test"], "mx_hosts": [],
                 "max_connections": 10, "max_messages": null, "connections": held,
                 "scope": "cluster"}
            ]})
        };
        let answered = vec![
            ("n1".to_string(), node(3)),
            ("n2".to_string(), node(4)),
            ("n3".to_string(), json!({"destinations": []})),
        ];
        let merged = merged_limits(&answered);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].connections, Some(7));
        assert_eq!(merged[0].max_connections, Some(10));
    }

    fn s(total: u64, counts: Vec<u64>, rows: Vec<(&str, u64, Vec<u64>)>) -> Summary {
        Summary {
            buckets: vec!["0-5m".into(), "5-10m".into()],
            rows: rows
                .into_iter()
                .map(|(d, t, c)| SummaryRow {
                    destination: d.into(),
                    total: t,
                    counts: c,
                })
                .collect(),
            total,
            counts,
            exact: true,
        }
    }

    #[test]
    fn summaries_add_up_per_destination_with_each_node() {
        let a = s(
            3,
            vec![2, 1],
            vec![("mx:a.test", 2, vec![1, 1]), ("mx:b.test", 1, vec![1, 0])],
        );
        let b = s(4, vec![4, 0], vec![("mx:a.test", 4, vec![4, 0])]);
        let mut odd = s(1, vec![1, 0], vec![("mx:c.test", 1, vec![1, 0])]);
        odd.buckets = vec!["other".into(), "x".into()];
        let m = merge_summaries(&[("n1".into(), a), ("n2".into(), b), ("n3".into(), odd)]);
        assert_eq!((m.sum.total, m.sum.counts.clone()), (7, vec![6, 1]));
        assert_eq!(m.sum.rows[0].destination, "mx:a.test");
        assert_eq!(
            (m.sum.rows[0].total, m.sum.rows[0].counts.clone()),
            (6, vec![5, 1])
        );
        assert_eq!(m.per_row["mx:a.test"]["n2"], 4);
        assert_eq!(m.nodes.len(), 2);
        assert_eq!(
            m.incompatible.len(),
            1,
            "buckets of another shape are not added"
        );
        assert_eq!(m.incompatible[0].node, "n3");
    }

    #[test]
    fn queue_counts_of_a_report() {
        assert_eq!(queue_counts(&Value::Null), "-");
        assert_eq!(
            queue_counts(&json!({"hold": 2, "deferred": 1, "junk": "x"})),
            "deferred 1, hold 2"
        );
    }
}
