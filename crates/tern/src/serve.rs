//! `tern serve`: opens the data directory, recovers the spool, starts the listeners and
//! runs until SIGTERM or SIGINT, then shuts down within the grace period.
//!
//! Start order matters: the event log first (so recovery is logged), then the spool
//! (recovery and quarantine happen before any listener accepts), then back pressure, then
//! the listeners. A listener that cannot bind stops the start with an error naming it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tern_events::{EventLog, Severity, catalog, fields};
use tern_smtpd::{RelayPolicy, Server, SmtpShared};
use tern_spool::Spool;
use tern_spool::backpressure::BackPressure;

use crate::config::{Config, DnsSection};

/// Runs the server until a stop signal.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tern")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(config));
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let events = EventLog::open(
        Some(&data_dir.join("events.jsonl")),
        config.server.log_stderr,
    )
    .with_context(|| format!("opening event log in {}", data_dir.display()))?;
    events.set_min_severity(Severity::parse(&config.server.log_level).unwrap_or(Severity::Info));

    let spool_dir = config.spool_dir();
    let (spool, _report) = Spool::open(&spool_dir, events.clone())
        .with_context(|| format!("opening spool {}", spool_dir.display()))?;
    let back_pressure =
        BackPressure::start(spool.clone(), config.back_pressure.clone(), events.clone());
    let hostname = config.server.hostname.clone();
    let shared = Arc::new(SmtpShared {
        relay: ArcSwap::from_pointee(RelayPolicy::new(&config.relay, &hostname)),
        hostname: hostname.clone(),
        intake: Arc::new(spool),
        events: events.clone(),
        back_pressure,
        resolver: resolver(&config.dns),
        rdns_timeout: Duration::from_millis(config.dns.client_lookup_timeout_ms),
        rdns_lookup_loopback: false,
    });
    let server = match Server::start(Arc::clone(&shared), &config.listeners).await {
        Ok(s) => s,
        Err(e) => {
            events.emit(&catalog::LISTENER_FAILED, fields!("error" => e));
            events.flush(Duration::from_secs(2));
            return Err(e.into());
        }
    };
    let addrs: Vec<String> = server
        .local_addrs()
        .iter()
        .map(SocketAddr::to_string)
        .collect();
    events.emit(
        &catalog::SERVER_STARTED,
        fields!(
            "version" => env!("CARGO_PKG_VERSION"),
            "hostname" => hostname,
            "data_dir" => data_dir.display(),
            "listeners" => addrs.join(","),
        ),
    );

    let reason = stop_signal().await;
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    events.emit(
        &catalog::SERVER_STOPPING,
        fields!("signal" => reason, "grace_secs" => grace.as_secs()),
    );
    server.shutdown(grace).await;
    events.emit(&catalog::SERVER_STOPPED, fields!("signal" => reason));
    events.flush(Duration::from_secs(2));
    Ok(())
}

async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, only Ctrl-C through tokio's portable handler is left.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The resolver for client names, or `None` when reverse lookups are off.
fn resolver(dns: &DnsSection) -> Option<TokioResolver> {
    if !dns.reverse_lookups {
        return None;
    }
    let timeout = Duration::from_millis(dns.client_lookup_timeout_ms);
    let builder = if dns.nameservers.is_empty() {
        TokioResolver::builder_tokio().ok()?
    } else {
        let servers = dns
            .nameservers
            .iter()
            .map(|sa| {
                let conn = |protocol| {
                    let mut c = ConnectionConfig::new(protocol);
                    c.port = sa.port();
                    c
                };
                NameServerConfig::new(
                    sa.ip(),
                    true,
                    vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
                )
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioRuntimeProvider::default(),
        )
    };
    let mut builder = builder;
    builder.options_mut().timeout = timeout;
    builder.options_mut().attempts = 1;
    builder.build().ok()
}
