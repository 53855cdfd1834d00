//! `tern queue list|show|delete|hold|release|retry|bounce|resubmit|export`: the queue
//! over the admin API (`/api/v1/queue...`, docs/ADMIN.md "Queues").
//!
//! Where the answers come from: when a server holds the spool lock, from its API
//! (`crate::client::Client`, no flags needed). When none runs, `list` reads the spool
//! read-only (`crate::queue`), and `release` and `delete` (without a bounce) open the
//! spool themselves (`crate::admin::directly`); the other actions need the queue and say
//! so.
//!
//! Actions take queue ids (each answered on its own line, `<id>: <result>`) or a filter
//! (the list's flags). A filter is worked through in pages: the matching ids are listed
//! first, then acted on [`PAGE`] at a time through the bulk endpoint with an `ids` filter
//! (plus the filter itself, so a message that changed meanwhile is left alone), with
//! progress on stderr when it is a terminal. Exit status 0 only when every message was
//! acted on.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use tern_admin::queue::filter::{Filter, FilterSpec, Summary};
use tern_admin::queue::{ActionResult, BulkBody, BulkResult, Detail, ListBody};
use tern_spool::{QueueId, Spool};

use crate::client::{Client, ClientError};
use crate::config::Config;

/// Messages acted on per bulk request.
pub const PAGE: usize = 100;
/// Messages listed per list request.
const LIST_PAGE: usize = 1000;

/// The list's filters, as flags.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct FilterArgs {
    /// Only this state: incoming, active, deferred, hold, poison, corrupt.
    #[arg(long)]
    pub state: Option<String>,
    /// Recipient domains still to be delivered containing this (case-insensitive).
    #[arg(long)]
    pub destination: Option<String>,
    /// Sender containing this (case-insensitive).
    #[arg(long)]
    pub sender: Option<String>,
    /// A recipient containing this (case-insensitive).
    #[arg(long)]
    pub recipient: Option<String>,
    /// At least this old: seconds, or with a unit (90s, 10m, 2h, 3d).
    #[arg(long, value_parser = parse_age)]
    pub min_age: Option<u64>,
    /// At most this old (same units).
    #[arg(long, value_parser = parse_age)]
    pub max_age: Option<u64>,
    /// At least this many delivery attempts.
    #[arg(long)]
    pub min_attempts: Option<u32>,
    /// The last error or a recipient's last reply containing this (case-insensitive).
    #[arg(long)]
    pub error: Option<String>,
}

/// `90`, `90s`, `10m`, `2h`, `3d` as seconds.
pub fn parse_age(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age (seconds, or 90s, 10m, 2h, 3d)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl FilterArgs {
    /// As the API's filter.
    pub fn spec(&self) -> FilterSpec {
        FilterSpec {
            state: self.state.clone(),
            destination: self.destination.clone(),
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            min_age_secs: self.min_age,
            max_age_secs: self.max_age,
            min_attempts: self.min_attempts,
            error: self.error.clone(),
            ids: None,
        }
    }

    /// Validated (the same rules as the server's).
    pub fn filter(&self) -> anyhow::Result<Filter> {
        Filter::from_spec(self.spec()).map_err(anyhow::Error::msg)
    }

    /// The query string of `GET /api/v1/queue`.
    fn query(&self) -> String {
        let mut q = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.push(format!("{k}={}", encode(&v)));
            }
        };
        add("state", self.state.clone());
        add("destination", self.destination.clone());
        add("sender", self.sender.clone());
        add("recipient", self.recipient.clone());
        add("min_age_secs", self.min_age.map(|v| v.to_string()));
        add("max_age_secs", self.max_age.map(|v| v.to_string()));
        add("min_attempts", self.min_attempts.map(|v| v.to_string()));
        add("error", self.error.clone());
        q.join("&")
    }
}

/// Percent-encoding of a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a server holds the spool (then it must be asked; only it changes the spool).
fn server_running(config: &Config) -> anyhow::Result<bool> {
    let dir = config.spool_dir();
    if !dir.exists() {
        return Ok(false);
    }
    let holder = Spool::lock_holder(&dir)
        .with_context(|| format!("reading the spool lock in {}", dir.display()))?;
    Ok(holder.is_some())
}

/// Every message matching `args`, from the server.
pub(crate) fn list_from_server(
    client: &Client,
    args: &FilterArgs,
) -> Result<Vec<Summary>, ClientError> {
    let query = args.query();
    let mut out = Vec::new();
    let mut offset = 0usize;
    // Bounded: stops when a page comes back short, or after as many pages as the first
    // answer's total needs (plus one, for messages that arrived meanwhile).
    let mut pages_left = usize::MAX;
    while pages_left > 0 {
        let sep = if query.is_empty() { "" } else { "&" };
        let page: ListBody = client.get(&format!(
            "/api/v1/queue?{query}{sep}limit={LIST_PAGE}&offset={offset}"
        ))?;
        if pages_left == usize::MAX {
            pages_left = page.total.div_ceil(LIST_PAGE) + 1;
        }
        pages_left -= 1;
        let n = page.messages.len();
        out.extend(page.messages);
        offset += n;
        if n < LIST_PAGE {
            break;
        }
    }
    Ok(out)
}

/// `tern queue list`: mailq style, from the server or else from the spool. `--json` is
/// the spool's JSON lines, the same with or without a server (`crate::queue`).
pub fn list(config: &Config, json: bool, args: &FilterArgs) -> anyhow::Result<()> {
    let filter = args.filter()?;
    if json {
        return crate::queue::list_json(config, &filter);
    }
    if server_running(config)?
        && let Ok(client) = Client::from_config(config)
    {
        match list_from_server(&client, args) {
            Ok(summaries) => return print_mailq(&summaries),
            // The server stops or its admin listener is off: the spool still answers.
            Err(ClientError::Unreachable { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let summaries = crate::queue::summaries(config, &filter)?;
    print_mailq(&summaries)
}

/// Postfix's mailq layout: id, state, size, arrival, sender; the reason it waits in
/// parentheses; the recipients indented; the total at the end.
pub fn print_mailq(messages: &[Summary]) -> anyhow::Result<()> {
    let mut out = crate::term::stdout();
    let rows: Vec<(Option<&str>, &Summary)> = messages.iter().map(|m| (None, m)).collect();
    write_mailq(&mut out, &rows, "Mail queue is empty")?;
    Ok(())
}

/// The mailq layout with each message's node (`tern queue list --cluster`), the nodes'
/// total at the end.
pub fn print_mailq_with_nodes(
    out: &mut impl Write,
    messages: &[(String, Summary)],
) -> std::io::Result<()> {
    let rows: Vec<(Option<&str>, &Summary)> = messages
        .iter()
        .map(|(n, m)| (Some(n.as_str()), m))
        .collect();
    write_mailq(
        out,
        &rows,
        "Mail queue is empty on every node that answered",
    )
}

/// The mailq layout of both: a `-Node-` column after the id when any row has a node.
fn write_mailq(
    out: &mut impl Write,
    rows: &[(Option<&str>, &Summary)],
    empty: &str,
) -> std::io::Result<()> {
    if rows.is_empty() {
        writeln!(out, "{empty}")?;
        return Ok(());
    }
    let with_nodes = rows.iter().any(|(n, _)| n.is_some());
    // The node column and the space after it; none without nodes.
    let nw = if with_nodes {
        rows.iter()
            .map(|(n, _)| n.map_or(0, str::len))
            .max()
            .unwrap_or(0)
            .max("-Node-".len())
            + 1
    } else {
        0
    };
    writeln!(
        out,
        "-Queue ID-       {:<nw$}-State-- --Size-- ----Arrival Time---- -Sender/Recipient-------",
        if with_nodes { "-Node-" } else { "" }
    )?;
    let mut total = 0u64;
    for (node, m) in rows {
        total = total.saturating_add(m.size);
        let sender = if m.state == "corrupt" {
            "(unreadable: quarantined)".to_owned()
        } else if m.sender.is_empty() {
            "MAILER-DAEMON".to_owned()
        } else {
            m.sender.clone()
        };
        let when = i64::try_from(m.arrival_unix_ms)
            .unwrap_or(0)
            .saturating_mul(1000);
        writeln!(
            out,
            "{:<16} {:<nw$}{:<8} {:>8} {:<20} {}",
            m.id,
            node.unwrap_or(""),
            m.state,
            m.size,
            crate::queue::short_time(when),
            sender
        )?;
        if let Some(err) = &m.last_error {
            writeln!(out, "{:>10}({err})", "")?;
        }
        for r in &m.recipients {
            writeln!(out, "{:width$}{r}", "", width = 56 + nw)?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "-- {} Kbytes in {} Requests.",
        total.div_ceil(1024),
        rows.len()
    )?;
    Ok(())
}

/// `tern queue show ID`.
pub fn show(config: &Config, id: &str, json: bool) -> anyhow::Result<()> {
    let id = QueueId::parse(id).with_context(|| format!("{id:?} is not a queue id"))?;
    if !server_running(config)? {
        bail!("no server is running: `tern queue list --json --state ...` reads the spool");
    }
    let client = Client::from_config(config)?;
    if json {
        let v: serde_json::Value = client.get(&format!("/api/v1/queue/{id}"))?;
        crate::term::outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let d: Detail = client.get(&format!("/api/v1/queue/{id}"))?;
    let s = &d.summary;
    let mut out = crate::term::stdout();
    let when = crate::queue::rfc3339(i64::try_from(s.arrival_unix_ms).unwrap_or(0) * 1000);
    writeln!(out, "Queue ID:   {}", s.id)?;
    writeln!(out, "State:      {}", s.state)?;
    writeln!(out, "Stored in:  {}", d.path)?;
    writeln!(
        out,
        "Sender:     {}",
        if s.sender.is_empty() { "<>" } else { &s.sender }
    )?;
    writeln!(out, "Size:       {} octets", s.size)?;
    writeln!(out, "Arrived:    {when} ({} s ago)", s.age_secs)?;
    writeln!(out, "Attempts:   {} (crashes: {})", s.attempts, d.crashes)?;
    if let Some(next) = s.next_attempt_unix_ms {
        let next = crate::queue::rfc3339(i64::try_from(next).unwrap_or(0) * 1000);
        writeln!(out, "Next try:   {next}")?;
    }
    if let Some(e) = &s.last_error {
        writeln!(out, "Last error: {e}")?;
    }
    writeln!(out, "Recipients:")?;
    for r in &d.recipient_status {
        writeln!(
            out,
            "  {:<40} {:<9} attempts {}{}",
            r.address,
            r.status,
            r.attempts,
            r.last_reply
                .as_deref()
                .map(|t| format!("  {t}"))
                .unwrap_or_default()
        )?;
        for h in &r.history {
            let at = crate::queue::rfc3339(i64::try_from(h.at_unix_ms).unwrap_or(0) * 1000);
            writeln!(
                out,
                "      {at} {:<9} {} {}",
                h.result,
                h.remote.as_deref().unwrap_or("-"),
                h.reply.as_deref().unwrap_or("")
            )?;
        }
    }
    writeln!(out, "Headers:")?;
    for (k, v) in &d.headers {
        writeln!(out, "  {k}: {v}")?;
    }
    if d.headers_truncated {
        writeln!(out, "  (more not shown)")?;
    }
    Ok(())
}

/// `tern queue export ID [-o FILE]`.
pub fn export(config: &Config, id: &str, output: Option<&PathBuf>) -> anyhow::Result<()> {
    let id = QueueId::parse(id).with_context(|| format!("{id:?} is not a queue id"))?;
    let bytes = if server_running(config)? {
        Client::from_config(config)?.get_bytes(&format!("/api/v1/queue/{id}/raw"))?
    } else {
        // No server: the spool read-only, checksum verified.
        let spool = Spool::open_read_only(&config.spool_dir())?;
        let state = spool
            .find(id, &tern_spool::QueueState::ALL)
            .with_context(|| format!("no message {id} in the queue"))?;
        spool.read(state, id)?.body
    };
    match output {
        Some(p) => std::fs::write(p, &bytes).with_context(|| format!("writing {}", p.display()))?,
        // The message's bytes as they are, unless a terminal would interpret them.
        None if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
            crate::term::stdout().write_all(&bytes)?;
        }
        None => std::io::stdout().lock().write_all(&bytes)?,
    }
    Ok(())
}

/// What to act on.
pub struct Target<'a> {
    /// Queue ids given on the command line.
    pub ids: &'a [String],
    /// Or a filter.
    pub filter: &'a FilterArgs,
}

/// `tern queue <action>`: `Ok(false)` when any message was not acted on.
pub fn act(
    config: &Config,
    action: &str,
    bounce: bool,
    target: &Target<'_>,
) -> anyhow::Result<bool> {
    let spec = target.filter.spec();
    let by_filter = !Filter::from_spec(spec.clone())
        .map_err(anyhow::Error::msg)?
        .is_empty();
    match (target.ids.is_empty(), by_filter) {
        (true, false) => bail!("give queue ids or a filter (--state, --destination, ...)"),
        (false, true) => bail!("give queue ids or a filter, not both"),
        _ => {}
    }
    let mut ids = Vec::new();
    for s in target.ids {
        ids.push(QueueId::parse(s).with_context(|| format!("{s:?} is not a queue id"))?);
    }
    if !server_running(config)? {
        return act_directly(config, action, bounce, ids, target.filter);
    }
    let client = Client::from_config(config)?;
    if !ids.is_empty() {
        let mut all_ok = true;
        let body = serde_json::json!({ "bounce": bounce });
        for id in ids {
            let r: Result<ActionResult, ClientError> =
                client.post(&format!("/api/v1/queue/{id}/{action}"), &body);
            match r {
                Ok(r) => crate::term::outln!("{id}: {}", r.result),
                Err(ClientError::Api {
                    status: 404,
                    message,
                    ..
                }) => {
                    all_ok = false;
                    crate::term::outln!("{id}: not found: {message}");
                }
                Err(ClientError::Api { message, .. }) => {
                    all_ok = false;
                    crate::term::outln!("{id}: {message}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(all_ok);
    }
    // By filter: the ids first, then page by page.
    let matched: Vec<String> = list_from_server(&client, target.filter)?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let progress = std::io::stderr().is_terminal();
    let (mut touched, mut failed) = (0usize, Vec::new());
    for (n, page) in matched.chunks(PAGE).enumerate() {
        let mut f = spec.clone();
        f.ids = Some(page.to_vec());
        let body = BulkBody { filter: f, bounce };
        let r: BulkResult = client.post(&format!("/api/v1/queue/actions/{action}"), &body)?;
        touched += r.touched;
        // Matched before, gone or changed now: not acted on, and said so.
        let gone = page.len().saturating_sub(r.matched);
        failed.extend(r.failed.into_iter().map(|f| (f.id, f.error)));
        if gone > 0 {
            failed.push((
                format!("{gone} message(s)"),
                "no longer matched the filter (delivered or changed meanwhile)".into(),
            ));
        }
        if progress {
            crate::term::err!(
                "\r{action}: {}/{} messages, {touched} done",
                (n * PAGE + page.len()).min(matched.len()),
                matched.len()
            );
        }
    }
    if progress && !matched.is_empty() {
        crate::term::errln!();
    }
    for (id, e) in &failed {
        crate::term::outln!("{id}: {e}");
    }
    crate::term::outln!(
        "{action}: {} matched, {touched} done, {} not done",
        matched.len(),
        matched.len().saturating_sub(touched)
    );
    Ok(touched == matched.len())
}

/// No server: `release` and `delete` (no bounce) on the spool directly.
fn act_directly(
    config: &Config,
    action: &str,
    bounce: bool,
    mut ids: Vec<QueueId>,
    filter: &FilterArgs,
) -> anyhow::Result<bool> {
    let what = match (action, bounce) {
        ("release" | "resubmit", _) => crate::admin::Action::Release,
        ("delete", false) => crate::admin::Action::Delete,
        _ => bail!(
            "no server is running: {action}{} needs the running queue (only release and delete work without it)",
            if bounce { " --bounce" } else { "" }
        ),
    };
    if ids.is_empty() {
        let f = filter.filter()?;
        ids = crate::queue::summaries(config, &f)?
            .iter()
            .filter_map(|s| QueueId::parse(&s.id).ok())
            .collect();
    }
    let answers = crate::admin::directly(config, what, &ids)?;
    let mut all_ok = true;
    for (id, answer) in ids.iter().zip(answers) {
        match answer {
            Ok(text) => crate::term::outln!("{id}: {text}"),
            Err(text) => {
                all_ok = false;
                crate::term::outln!("{id}: {text}");
            }
        }
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_units() {
        assert_eq!(parse_age("90"), Ok(90));
        assert_eq!(parse_age("90s"), Ok(90));
        assert_eq!(parse_age("10m"), Ok(600));
        assert_eq!(parse_age("2h"), Ok(7200));
        assert_eq!(parse_age("3d"), Ok(259_200));
        assert!(parse_age("soon").is_err());
        assert!(parse_age("-1").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
    }

    #[test]
    fn query_values_are_encoded() {
        let f = FilterArgs {
            sender: Some("a b&c@x".into()),
            min_age: Some(60),
            ..FilterArgs::default()
        };
        assert_eq!(f.query(), "sender=a%20b%26c@x&min_age_secs=60");
        assert_eq!(FilterArgs::default().query(), "");
    }
}
