//! `tern serve`: opens the data directory, recovers the spool, starts the listeners and
//! runs until SIGTERM or SIGINT, then shuts down within the grace period.
//!
//! Start order matters: the event log first (so recovery is logged), then the spool
//! (recovery and quarantine happen before any listener accepts, except when the queue
//! delivers: `Spool::open_lazy` then does only the bounded part, and the queue runs the
//! rest, the segments a kill left and the validation of the state directories, then
//! `deferred/` and `records/`, in the background, so the listeners answer at once
//! whatever the spool holds; docs/SPOOL.md), then back pressure,
//! then the listeners, then the queue (crash evidence judged from `active/` before any
//! message is touched) and the pickup service (the second way in, through the same
//! intake). A listener that cannot bind stops the start with an error naming it. At
//! a stop the pickup service ends first (after the file in progress), then the listeners.
//!
//! With `[watchdog] enabled`, one `Watchdog` registry is made before the spool, and each
//! worker gets its heartbeat from it explicitly: the spool's group-commit threads, the
//! listeners' accept loops, the scheduler, the DNS resolver and every delivery worker.
//! The supervisor thread (`supervise`) starts once the spool is open and stops last.
//!
//! Under systemd (`Type=notify`, `notify`): `READY=1` after event 1001, `RELOADING=1`
//! and `READY=1` around a SIGHUP reload, `STOPPING=1` when a stop begins, and
//! `WATCHDOG=1` from the supervisor thread while the essential workers are healthy.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use hickory_resolver::TokioResolver;
use tern_deliver::{ClientConfig, ClientContext, Timeouts};
use tern_events::{EventLog, Severity, catalog, fields};
use tern_local::pickup::Pickup;
use tern_queue::{Context as QueueContext, Queue, QueueIntake, Runtime};
use tern_route::RoutingTable;
use tern_route::dns::Resolver;
use tern_smtpd::{RelayPolicy, Server, SmtpShared};
use tern_spool::backpressure::BackPressure;
use tern_spool::{MessageIntake, Spool};
use tern_watchdog::{Heartbeat, Kind, Watchdog};

use crate::config::{Config, DnsSection};
use crate::notify::Notifier;
use crate::supervise::{Supervisor, SystemdWatchdog};

/// Runs the server until a stop signal. `path` is the configuration file (reloaded on
/// SIGHUP); `None` for the embedded default, which a reload leaves as it is.
pub fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tern")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(config, path));
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut signals = Signals::install();
    let data_dir = &config.server.data_dir;
    // Mode 0750 when Tern makes it (as OPERATIONS.md's layout has it); an existing
    // directory keeps the mode its administrator gave it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    // The message tracking log is written by the same thread, from the tracked events.
    let events = EventLog::open_with_tracking(
        Some(&data_dir.join("events.jsonl")),
        config.server.log_stderr,
        config.tracking_config(),
    )
    .with_context(|| format!("opening event log in {}", data_dir.display()))?;
    events.set_min_severity(Severity::parse(&config.server.log_level).unwrap_or(Severity::Info));

    let watchdog = config
        .watchdog
        .enabled
        .then(|| Watchdog::new(Duration::from_secs(config.watchdog.stall_after_secs)));
    // A cluster node's number goes into every queue id, from the first one.
    crate::cluster::set_node_id(&config);
    let spool_dir = config.spool_dir();
    // A spool another node adopted is not this node's any more (docs/cluster/adopt.md).
    crate::adopt::check_marker(&spool_dir, &config.cluster.effective_node_name(), &events)?;
    let open = if config.queue.deliver {
        Spool::open_lazy
    } else {
        Spool::open_watched
    };
    let (spool, _report) = open(&spool_dir, events.clone(), watchdog.as_ref())
        .with_context(|| format!("opening spool {}", spool_dir.display()))?;
    spool.set_commit_mode(config.spool.commit);
    // Dropped on every way out of this function: stops the thread, removes status.json.
    // systemd's notification socket (Type=notify, WatchdogSec=): nothing when unset.
    let notifier = match Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            events.emit(
                &catalog::SYSTEMD_NOTIFY_FAILED,
                fields!("message" => "all", "error" => e),
            );
            Notifier::default()
        }
    };
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let systemd = crate::notify::watchdog_interval()
        .filter(|_| notifier.enabled())
        .map(|every| SystemdWatchdog {
            notifier: notifier.clone(),
            every,
            armed: Arc::clone(&armed),
        });
    let supervisor = Supervisor::start(
        watchdog.clone(),
        events.clone(),
        config.status_path(),
        systemd,
    )
    .context("starting the watchdog")?;
    let back_pressure =
        BackPressure::start(spool.clone(), config.back_pressure.clone(), events.clone());
    // The shared control plane (docs/CLUSTER.md): never waited for, the node starts
    // deciding alone until Redis answers.
    let mut cluster_node = crate::cluster::start(&config, &events, &spool, watchdog.as_ref());
    let cluster = cluster_node.as_ref().map(|n| n.cluster.clone());
    if let Some(c) = &cluster {
        // Before any listener or delivery: a node whose spool another adopted stops here.
        if let Err(e) = crate::adopt::check_redis_fence(c, &spool_dir, &events).await {
            if let Some(node) = cluster_node.take() {
                node.stop().await;
            }
            return Err(e);
        }
        crate::adopt::write_node_file(&config, &spool_dir)?;
    }
    let hostname = config.server.hostname.clone();
    let scheduler_beat = beat(
        watchdog.as_ref().filter(|_| config.queue.deliver),
        "queue.scheduler",
        Kind::QueueManager,
    );
    let (queue_handle, queue_rx) = tern_queue::scheduler::channel(scheduler_beat);
    let queue_intake = QueueIntake::new(spool.clone(), queue_handle);
    let intake: Arc<dyn MessageIntake> = if config.queue.deliver {
        Arc::new(queue_intake.clone())
    } else {
        Arc::new(spool.clone())
    };
    // SMTP AUTH (docs/SUBMISSION.md): built when a listener offers it or [auth] names a
    // source. A credential file that cannot be loaded stops the start.
    let auth = if config.auth.has_backend()
        || config
            .listeners
            .iter()
            .any(|l| l.auth != tern_smtpd::AuthMode::None)
    {
        // The salts SCRAM shows for unknown users stay the same across restarts.
        let key = data_dir.join("auth.key");
        let secret = tern_auth::private_file::load_or_create_secret(&key)
            .with_context(|| format!("the SCRAM salt key {}", key.display()))?;
        // A cluster node counts failures and lockouts in Redis (docs/cluster/limits.md).
        let (service, report) = match &cluster {
            Some(c) => tern_auth::AuthService::with_ledger(
                &config.auth,
                secret,
                Arc::new(tern_cluster::auth::SharedLedger::new(c.clone())),
            ),
            None => tern_auth::AuthService::with_secret(&config.auth, secret),
        };
        auth_loaded(&events, &report);
        if report.has_errors() {
            events.flush(Duration::from_secs(2));
            anyhow::bail!("[auth]: {}", auth_errors(&report));
        }
        match service.probe_dovecot().await {
            Ok(Some(mechs)) => events.emit(
                &catalog::AUTH_DOVECOT_CONNECTED,
                fields!("socket" => config.auth.dovecot_socket.as_deref().unwrap_or(Path::new("")).display(), "mechanisms" => mechs.join(" ")),
            ),
            Ok(None) => {}
            Err(e) => events.emit(
                &catalog::SMTP_AUTH_UNAVAILABLE,
                fields!("client" => "-", "mechanism" => "-", "error" => e),
            ),
        }
        Some(service)
    } else {
        None
    };
    // Screening and greylisting (docs/SCREENING.md): the greylist file is read here.
    let screening = crate::screen::Screening::start(&config, &events, cluster.as_ref());
    // DMARC aggregate reports: the store and its writer before the sessions record.
    let mut dmarc = crate::dmarc::open(&config, &events);
    // TLS reports: the store and its writer before the delivery workers record.
    let mut tls_reports = crate::tlsrpt::open(&config, &events);
    // One per process: in the greeting of our server, recognised by our client.
    let loop_mark = tern_route::own::new_loop_mark();
    let shared = Arc::new(SmtpShared {
        relay: ArcSwap::from_pointee(
            RelayPolicy::new(&config.relay, &hostname)
                .with_local(Arc::clone(&config.local_directory)),
        ),
        hostname: hostname.clone(),
        intake: Arc::clone(&intake),
        events: events.clone(),
        back_pressure,
        resolver: resolver(&config.dns),
        rdns_timeout: Duration::from_millis(config.dns.client_lookup_timeout_ms),
        rdns_lookup_loopback: false,
        loop_mark: Some(loop_mark.clone()),
        // Shared by every node through Redis when `[cluster] enabled`, this node's share
        // of each limit while Redis is away (docs/cluster/limits.md).
        limits: match &cluster {
            Some(c) => tern_smtpd::rate::RateLimits::new(
                &config.limits,
                tern_cluster::limits::SharedLimiter::new(c.clone(), config.limits.max_tracked_keys),
            ),
            None => tern_smtpd::rate::RateLimits::in_memory(&config.limits),
        },
        auth,
        screen: Some(Arc::clone(&screening.screen)),
        verify: arc_swap::ArcSwapOption::new(match crate::verify::build(&config, &hostname) {
            Ok(v) => v,
            Err(e) => {
                events.emit(&catalog::VERIFY_SETUP_FAILED, fields!("error" => e));
                events.flush(Duration::from_secs(2));
                anyhow::bail!("[verify]: {e}");
            }
        }),
        dmarc_recorder: Arc::clone(&dmarc.recorder),
        inbound_tls: config
            .tls_reports
            .inbound_events
            .then(|| Arc::new(tern_smtpd::inbound_tls::InboundTlsEvents::new())),
    });
    let server = match Server::start_watched(
        Arc::clone(&shared),
        &config.listeners,
        watchdog.as_ref(),
    )
    .await
    {
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
    let queue = if config.queue.deliver {
        let mut ctx = queue_context(
            &config,
            spool.clone(),
            events.clone(),
            queue_intake,
            server.local_addrs().to_vec(),
            loop_mark,
            watchdog.clone(),
        )?;
        // A cluster node holds the destination limits with the other nodes.
        if cluster.is_some() {
            ctx.destinations = Arc::new(destination_limits(&config.delivery, cluster.as_ref()));
        }
        // The delivery workers record each reported session's TLS outcome.
        ctx.tls_reports = Arc::clone(&tls_reports.recorder);
        let ctx = Arc::new(ctx);
        let q = Queue::start(Arc::clone(&ctx), queue_rx)
            .await
            .context("starting the queue")?;
        // In a cluster, destination marks are shared (docs/cluster/state.md).
        if let Some(c) = &cluster {
            crate::cluster::share_destinations(c, &q.handle());
        }
        Some((q, ctx))
    } else {
        None
    };

    maps_loaded(&events, &config);
    // Reports are queued through the same intake as received mail.
    dmarc.start_reporter(&config, Arc::clone(&intake), &events, cluster.as_ref());
    tls_reports.start_reporter(&config, Arc::clone(&intake), &events);
    // The second way in: files from other systems and `tern sendmail`, through the same
    // intake as SMTP mail.
    let pickup = if config.pickup.enabled {
        let started = Pickup::start(
            config.pickup_config(),
            intake,
            events.clone(),
            Some(shared.back_pressure.clone()),
            beat(watchdog.as_ref(), "pickup", Kind::Listener),
        );
        Some(started.context("starting the pickup service")?)
    } else {
        None
    };

    // The configuration in force, for `GET /api/v1/config`: updated at each reload.
    let current = Arc::new(ArcSwap::from_pointee(config.clone()));
    // Adoptions of dead nodes' spools (docs/cluster/adopt.md): by an administrator
    // through the admin API, or automatically (`cluster.adopt_path`).
    let adopter = Arc::new(crate::adopt::Adopter {
        spool: spool.clone(),
        queue: queue.as_ref().map(|(q, _)| q.handle()),
        cluster: cluster.clone(),
        events: events.clone(),
        by: if config.cluster.enabled {
            config.cluster.effective_node_name()
        } else {
            config.server.hostname.clone()
        },
        poison_threshold: {
            let current = Arc::clone(&current);
            Arc::new(move || current.load().queue.settings.poison_threshold)
        },
        running: std::sync::atomic::AtomicBool::new(false),
    });
    let admin = if config.admin.enabled {
        let (token, file) = tern_admin::auth::load_or_create(&config.admin.token, data_dir)?;
        if let tern_admin::auth::TokenFile::Tightened(mode) = file {
            events.emit(
                &catalog::ADMIN_TOKEN_MODE_FIXED,
                fields!(
                    "path" => tern_admin::auth::token_path(data_dir).display(),
                    "mode" => format!("{mode:04o}"),
                ),
            );
        }
        let control = Arc::new(ServerControl {
            path: path.clone(),
            events: events.clone(),
            shared: Arc::clone(&shared),
            queue: queue.as_ref().map(|(_, ctx)| Arc::clone(ctx)),
            current: Arc::clone(&current),
            dmarc: dmarc.asker(),
            tls: tls_reports.asker(),
            adopter: Arc::clone(&adopter),
        });
        let next_hop = queue.as_ref().map(|(_, ctx)| {
            let ctx = Arc::clone(ctx);
            let f: tern_admin::NextHopOf = Arc::new(move |domain: &str| {
                ctx.runtime.load().routes.route(domain).next_hop.to_string()
            });
            f
        });
        let state = tern_admin::AdminState {
            token,
            spool: spool.clone(),
            queue: queue.as_ref().map(|(q, _)| q.handle()),
            events: events.clone(),
            watchdog: watchdog.clone(),
            back_pressure: shared.back_pressure.clone(),
            control,
            next_hop,
            tracking_dir: config.tracking_dir(),
            listeners_up: std::sync::atomic::AtomicBool::new(true),
            started: std::time::Instant::now(),
            history: Default::default(),
            readiness: Default::default(),
            cluster: cluster.clone(),
            destination_limits: queue.as_ref().map(|(_, ctx)| Arc::clone(&ctx.destinations)),
        };
        match start_admin(&config, state).await {
            Ok(started) => Some(started),
            Err(e) => {
                events.emit(
                    &catalog::LISTENER_FAILED,
                    fields!("error" => format!("{e:#}")),
                );
                events.flush(Duration::from_secs(2));
                return Err(e);
            }
        }
    } else {
        None
    };

    // The heartbeat carries the admin listener's bound address: after it is bound.
    if let Some(node) = cluster_node.as_mut() {
        let on_dead = crate::adopt::on_dead(&adopter, &node.cluster, &config.cluster.adopt_path);
        node.announce(
            &config,
            admin.as_ref().and_then(|(s, _)| s.local_addr()),
            on_dead,
        );
    }
    events.emit(
        &catalog::SERVER_STARTED,
        fields!(
            "version" => env!("CARGO_PKG_VERSION"),
            "hostname" => hostname,
            "data_dir" => data_dir.display(),
            "listeners" => addrs.join(","),
        ),
    );
    // After event 1001: every listener is bound and the queue runs.
    notify(
        &events,
        "READY=1",
        notifier.ready(&format!("accepting mail on {}", addrs.join(","))),
    );
    armed.store(true, std::sync::atomic::Ordering::Release);

    let reason = loop {
        match next_signal(&mut signals).await {
            Signal::Stop(reason) => break reason,
            Signal::Reload => {
                notify(&events, "RELOADING=1", notifier.reloading());
                let _ = reload(
                    path.as_deref(),
                    &events,
                    &shared,
                    queue.as_ref().map(|(_, ctx)| ctx.as_ref()),
                    &current,
                );
                notify(&events, "READY=1", notifier.ready("reloaded"));
            }
        }
    };
    notify(&events, "STOPPING=1", notifier.stopping());
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    events.emit(
        &catalog::SERVER_STOPPING,
        fields!("signal" => reason, "grace_secs" => grace.as_secs()),
    );
    if let Some((_, state)) = &admin {
        state.set_listeners_up(false);
    }
    if let Some(p) = pickup {
        p.stop().await;
    }
    server.shutdown(grace).await;
    // Every session has ended: the greylist is saved as they left it.
    screening.stop().await;
    dmarc.stop().await;
    if let Some((q, ctx)) = queue {
        q.shutdown(&ctx).await;
    }
    // The workers have stopped recording: the writer flushes the journal.
    tls_reports.stop().await;
    if let Some((server, _)) = admin {
        server.shutdown(Duration::from_secs(2)).await;
        let _ = std::fs::remove_file(config.admin_addr_path());
    }
    if let Some(node) = cluster_node {
        node.stop().await;
    }
    drop(supervisor);

    events.emit(&catalog::SERVER_STOPPED, fields!("signal" => reason));
    events.flush(Duration::from_secs(2));
    Ok(())
}

/// Reports a failed notification to systemd (event 7083); a lost notification never
/// stops Tern.
fn notify(events: &EventLog, message: &str, sent: std::io::Result<()>) {
    if let Err(e) = sent {
        events.emit(
            &catalog::SYSTEMD_NOTIFY_FAILED,
            fields!("message" => message, "error" => e),
        );
    }
}

enum Signal {
    Stop(&'static str),
    Reload,
}

/// The signal streams, created once before the server announces itself, so a SIGHUP
/// never finds the default action (which would end the process) and none is lost between
/// two waits.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(Signals {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
        })
    }
}

async fn next_signal(signals: &mut Option<Signals>) -> Signal {
    let Some(s) = signals else {
        // Without signal handlers, only Ctrl-C through tokio's portable handler is left.
        let _ = tokio::signal::ctrl_c().await;
        return Signal::Stop("SIGINT");
    };
    tokio::select! {
        _ = s.term.recv() => Signal::Stop("SIGTERM"),
        _ = s.int.recv() => Signal::Stop("SIGINT"),
        _ = s.hup.recv() => Signal::Reload,
    }
}

/// Reloads the configuration file: relay policy, rate limits, routes, local maps and queue settings
/// are swapped atomically; an invalid file changes nothing and is reported (event 1008),
/// and its problems are returned. Listeners, the data directory and DNS servers need a
/// restart. Called at SIGHUP and by the admin API's reload.
fn reload(
    path: Option<&std::path::Path>,
    events: &EventLog,
    shared: &SmtpShared,
    queue: Option<&QueueContext>,
    current: &ArcSwap<Config>,
) -> Result<String, Vec<String>> {
    let Some(path) = path else {
        events.emit(
            &catalog::SERVER_RELOADED,
            fields!("file" => "<embedded>", "changed" => "nothing (embedded default)"),
        );
        return Ok("nothing changed: the server runs on the embedded default".into());
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let list: Vec<String> = e
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect();
            events.emit(
                &catalog::SERVER_RELOAD_FAILED,
                fields!("file" => path.display(), "errors" => list.join("; ")),
            );
            return Err(list);
        }
    };
    let routes = match RoutingTable::new(&config.routes) {
        Ok(r) => r,
        Err(problems) => {
            // Unreachable: Config::load checked the table. Kept so a reload never panics.
            let list: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
            events.emit(
                &catalog::SERVER_RELOAD_FAILED,
                fields!("file" => path.display(), "errors" => list.join("; ")),
            );
            return Err(list);
        }
    };
    // The SMTP server's view (relay policy with the local directory) and the queue's
    // (routes with the same directory) are swapped one after the other; each is
    // consistent in itself, and a message accepted under the old maps and delivered
    // under the new ones is handled by the delivery-time mailbox check (event 6006).
    shared.relay.store(Arc::new(
        RelayPolicy::new(&config.relay, &shared.hostname)
            .with_local(Arc::clone(&config.local_directory)),
    ));
    // Rate limits: the new rates at once; what each key spent is kept
    // (limits.max_tracked_keys needs a restart).
    shared.limits.reload(&config.limits);
    // [screen]: the new settings at once; the pass cache and the greylist are kept.
    if let Some(screen) = &shared.screen {
        screen.reload(&config.screen);
    }
    if let Some(ctx) = queue {
        // DKIM keys: one that cannot be read now keeps the key loaded before (4102).
        let dkim = crate::dkim::load_at_reload(&config, &ctx.runtime.load().dkim, events);
        // The ARC key likewise (4112).
        let arc = crate::dkim::load_arc_at_reload(&config, &ctx.runtime.load().arc, events);
        ctx.runtime.store(Arc::new(Runtime {
            routes: Arc::new(routes),
            queue: config.queue.settings.clone(),
            local: Arc::clone(&config.local_directory),
            dkim,
            arc,
        }));
        // Addresses added to the machine since count for the MX self rule at once.
        ctx.own_addrs.refresh();
    }
    maps_loaded(events, &config);
    // [auth]: files read again; one that cannot be loaded keeps the previous (event
    // 2106 or 2109). A listener's `auth` mode needs a restart, like the listeners.
    if let Some(auth) = &shared.auth {
        auth_loaded(events, &auth.reload(&config.auth));
    }
    // [verify]: rebuilt; a setup that fails keeps the previous one (event 2154).
    match crate::verify::build(&config, &shared.hostname) {
        Ok(v) => shared.verify.store(v),
        Err(e) => events.emit(&catalog::VERIFY_SETUP_FAILED, fields!("error" => e)),
    }
    current.store(Arc::new(current.load().with_reloaded(&config)));
    // The file's log level wins over one set at run time (`tern log-level`).
    let level = Severity::parse(&config.server.log_level).unwrap_or(Severity::Info);
    let old = events.min_severity();
    if old != level {
        events.change_level(level, "reload");
    }
    events.emit(
        &catalog::SERVER_RELOADED,
        fields!("file" => path.display(), "routes" => config.routes.len()),
    );
    Ok(format!(
        "reloaded {}: {} route(s), relay policy, local maps and queue settings",
        path.display(),
        config.routes.len()
    ))
}

/// The admin API's way to the binary's reload and configuration.
struct ServerControl {
    path: Option<PathBuf>,
    events: EventLog,
    shared: Arc<SmtpShared>,
    queue: Option<Arc<QueueContext>>,
    /// The configuration in force (the start's, with each reload's swapped parts).
    current: Arc<ArcSwap<Config>>,
    /// The DMARC report task; `None` when the reports are off.
    dmarc: Option<tern_reports::reporter::ReportAsker>,
    /// The TLS report task; `None` when sending is off.
    tls: Option<tern_reports::reporter::ReportAsker<tern_reports::tlsrpt::reporter::RunSummary>>,
    /// Adoptions of other nodes' spools (`POST /api/v1/spool/adopt`).
    adopter: Arc<crate::adopt::Adopter>,
}

impl tern_admin::Control for ServerControl {
    fn reload(&self) -> Result<String, tern_admin::ControlError> {
        reload(
            self.path.as_deref(),
            &self.events,
            &self.shared,
            self.queue.as_deref(),
            &self.current,
        )
        .map_err(tern_admin::ControlError::Refused)
    }

    fn effective_config(&self) -> serde_json::Value {
        self.current.load().effective_json()
    }

    fn send_dmarc_reports(
        &self,
    ) -> tern_admin::ControlFuture<Result<tern_admin::DmarcRun, tern_admin::ControlError>> {
        let asker = self.dmarc.clone();
        Box::pin(async move {
            let Some(asker) = asker else {
                return Err(tern_admin::ControlError::Off(
                    "DMARC aggregate reports are off ([dmarc_reports] enabled = false)".into(),
                ));
            };
            match asker.send_now().await {
                Some(s) => Ok(tern_admin::DmarcRun {
                    periods: s.periods,
                    domains: s.domains,
                    queued: s.queued,
                    skipped: s.skipped,
                    failed: s.failed,
                    waiting: s.waiting,
                }),
                None => Err(tern_admin::ControlError::Unavailable(
                    "the report task has stopped".into(),
                )),
            }
        })
    }

    fn adopt_spool(
        &self,
        path: String,
    ) -> tern_admin::ControlFuture<Result<tern_admin::AdoptRun, tern_admin::ControlError>> {
        let adopter = Arc::clone(&self.adopter);
        Box::pin(async move { adopter.adopt(PathBuf::from(path), false).await })
    }

    fn send_tls_reports(
        &self,
    ) -> tern_admin::ControlFuture<Result<tern_admin::TlsRun, tern_admin::ControlError>> {
        let asker = self.tls.clone();
        Box::pin(async move {
            let Some(asker) = asker else {
                return Err(tern_admin::ControlError::Off(
                    "TLS reports are off ([tls_reports] enabled = false)".into(),
                ));
            };
            match asker.send_now().await {
                Some(s) => Ok(tern_admin::TlsRun {
                    periods: s.periods,
                    domains: s.domains,
                    queued: s.queued,
                    posted: s.posted,
                    skipped: s.skipped,
                    failed: s.failed,
                }),
                None => Err(tern_admin::ControlError::Unavailable(
                    "the report task has stopped".into(),
                )),
            }
        })
    }
}

/// Starts the admin listener and writes its address to `<data_dir>/admin.addr` for the
/// CLI (the file is removed at the stop).
async fn start_admin(
    config: &Config,
    state: tern_admin::AdminState,
) -> anyhow::Result<(tern_admin::AdminServer, Arc<tern_admin::AdminState>)> {
    let state = Arc::new(state);
    // An address left by an earlier run must not send the CLI to whoever binds that port
    // now: it goes before anything is bound, and only a bound address is written back.
    let file = config.admin_addr_path();
    match std::fs::remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
    }
    let server = tern_admin::AdminServer::start(&config.admin, Arc::clone(&state)).await?;
    if let Some(addr) = server.local_addr() {
        let tmp = file.with_extension("addr.tmp");
        write_private(&tmp, format!("{addr}\n").as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &file))
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok((server, state))
}

/// Writes `bytes` to `path` (created or truncated, mode 0600 whatever the umask, never
/// through a link).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(bytes)
}

/// Events 2105, 2106, 2108 and 2109: what `[auth]` loaded, and what it could not.
fn auth_loaded(events: &EventLog, report: &tern_auth::LoadReport) {
    if let Some((file, users)) = &report.passwd {
        events.emit(
            &catalog::AUTH_PASSWD_LOADED,
            fields!("file" => file.display(), "users" => users),
        );
    }
    if let Some((file, e)) = &report.passwd_error {
        events.emit(
            &catalog::AUTH_PASSWD_FAILED,
            fields!("file" => file.display(), "error" => e),
        );
    }
    if let Some((file, entries)) = &report.senders {
        events.emit(
            &catalog::AUTH_SENDER_MAP_LOADED,
            fields!("file" => file.display(), "entries" => entries),
        );
    }
    if let Some((file, e)) = &report.senders_error {
        events.emit(
            &catalog::AUTH_SENDER_MAP_FAILED,
            fields!("file" => file.display(), "error" => e),
        );
    }
}

/// The load errors of a report, on one line.
fn auth_errors(report: &tern_auth::LoadReport) -> String {
    let mut e = Vec::new();
    if let Some((_, err)) = &report.passwd_error {
        e.push(err.to_string());
    }
    if let Some((_, err)) = &report.senders_error {
        e.push(err.to_string());
    }
    e.join("; ")
}

/// Event 6007: what the local directory holds now.
fn maps_loaded(events: &EventLog, config: &Config) {
    let (mailboxes, aliases) = config.local_directory.counts();
    events.emit(
        &catalog::LOCAL_MAPS_LOADED,
        fields!(
            "domains" => config.local_directory.domains().count(),
            "mailboxes" => mailboxes,
            "aliases" => aliases,
        ),
    );
}

/// A heartbeat from `watchdog`, or a detached one when nothing watches.
fn beat(watchdog: Option<&Watchdog>, name: &str, kind: Kind) -> Heartbeat {
    match watchdog {
        Some(w) => w.register(name, kind),
        None => Heartbeat::detached(name, kind),
    }
}

/// Builds the queue's shared context from the configuration.
fn queue_context(
    config: &Config,
    spool: Spool,
    events: EventLog,
    intake: QueueIntake,
    listeners: Vec<SocketAddr>,
    loop_mark: String,
    watchdog: Option<Watchdog>,
) -> anyhow::Result<QueueContext> {
    let d = &config.delivery;
    let helo = if d.helo_name.is_empty() {
        config.server.hostname.clone()
    } else {
        d.helo_name.clone()
    };
    let extra_roots_pem = match &d.ca_file {
        Some(p) => Some(
            std::fs::read(p)
                .with_context(|| format!("reading delivery.ca_file {}", p.display()))?,
        ),
        None => None,
    };
    let command = Duration::from_secs(d.command_timeout_secs);
    let client = ClientContext::new(ClientConfig {
        helo_name: helo,
        timeouts: Timeouts {
            connect: Duration::from_secs(d.connect_timeout_secs),
            greeting: Duration::from_secs(d.greeting_timeout_secs),
            ehlo: command,
            starttls: command,
            mail: command,
            rcpt: command,
            data_start: Duration::from_secs(d.data_start_timeout_secs),
            data_block: Duration::from_secs(d.data_block_timeout_secs),
            data_end: Duration::from_secs(d.data_end_timeout_secs),
            rset: command,
            quit: command,
        },
        extra_roots_pem,
        loop_mark: Some(loop_mark),
    })
    .context("setting up the SMTP client's TLS")?;
    let resolver = Resolver::with_heartbeat(
        &config.dns.resolver_config(),
        beat(watchdog.as_ref(), "dns", Kind::Dns),
    )
    .context("setting up the DNS resolver")?;
    let mta_sts = mta_sts_service(config, &resolver, &events)?;
    let anchor = config.dane.trust_anchor()?;
    let dane = tern_route::dns::Resolver::validating(
        &config.dane.resolver_config(&config.dns),
        anchor,
        beat(watchdog.as_ref(), "dns-dnssec", Kind::Dns),
    )
    .context("setting up the DNSSEC-validating resolver ([dane])")?;
    let routes = RoutingTable::new(&config.routes)
        .map_err(|p| anyhow::anyhow!("routing table: {} problem(s)", p.len()))?;
    // A DKIM key that cannot be loaded stops the start (like OpenDKIM's).
    let dkim = crate::dkim::load_at_start(config, &events)?;
    let arc = crate::dkim::load_arc_at_start(config, &events)?;
    Ok(QueueContext {
        spool,
        events,
        runtime: ArcSwap::from_pointee(Runtime {
            routes: Arc::new(routes),
            queue: config.queue.settings.clone(),
            local: Arc::clone(&config.local_directory),
            dkim,
            arc,
        }),
        delivery: d.clone(),
        resolver,
        client,
        hostname: config.server.hostname.clone(),
        own_addrs: tern_route::OwnAddresses::new(listeners),
        shutdown_grace: Duration::from_secs(config.server.shutdown_grace_secs),
        intake,
        watchdog,
        large_conversions: tern_queue::LargeConversions::default(),
        arc_chain: arc_validator(&config.dns),
        // Set by the caller when `[tls_reports]` records.
        tls_reports: Arc::new(tern_reports::tlsrpt::NoTlsReports),
        tls_book: tern_queue::security::TlsBook::default(),
        mta_sts,
        dane: tern_queue::Dane::new(dane),
        // This node's own; replaced by the caller on a cluster node.
        destinations: Arc::new(destination_limits(d, None)),
    })
}

/// `[[delivery.destination_limits]]` over this node's own counts, or shared through
/// Redis on a cluster node (docs/cluster/limits.md).
fn destination_limits(
    d: &tern_queue::config::DeliveryConfig,
    cluster: Option<&tern_cluster::Cluster>,
) -> tern_queue::destlimits::DestinationLimits {
    use tern_queue::destlimits::DestinationLimits;
    let wait = Duration::from_secs(d.destination_limit_wait_secs);
    match cluster {
        Some(c) if !d.destination_limits.is_empty() => DestinationLimits::new(
            &d.destination_limits,
            wait,
            tern_cluster::leases::SharedLeases::start(c.clone()),
            tern_cluster::limits::SharedLimiter::new(c.clone(), 1000),
        ),
        _ => DestinationLimits::local(&d.destination_limits, wait),
    }
}

/// The MTA-STS service from `[mta_sts]`, on the queue's resolver (`[dns]`), its cache in
/// `<data_dir>/mta-sts/`; `None` when disabled. An unreadable `ca_file` stops the start.
fn mta_sts_service(
    config: &Config,
    resolver: &Resolver,
    events: &EventLog,
) -> anyhow::Result<Option<Arc<tern_mtasts::MtaSts>>> {
    let m = &config.mta_sts;
    if !m.enabled {
        return Ok(None);
    }
    let extra_roots_pem = match &m.ca_file {
        Some(p) => Some(
            std::fs::read(p).with_context(|| format!("reading mta_sts.ca_file {}", p.display()))?,
        ),
        None => None,
    };
    let service = tern_mtasts::MtaSts::new(
        tern_mtasts::Config {
            fetch_timeout: Duration::from_secs(m.fetch_timeout_secs),
            max_policy_bytes: m.max_policy_bytes,
            cache_max_domains: m.cache_max_domains,
            retry_failed: Duration::from_secs(m.retry_failed_secs),
            extra_roots_pem,
            allow_private_addresses: m.allow_private_addresses,
        },
        resolver.clone(),
        events.clone(),
        Some(&config.server.data_dir),
    )
    .context("setting up MTA-STS")?;
    Ok(Some(service))
}

/// The ARC chain validator of the queue: the `[dns]` name servers, each query bounded
/// by `dns.timeout` (the whole validation by `arc.timeout_secs`).
fn arc_validator(dns: &DnsSection) -> Option<tern_dkim::arc::ChainValidator> {
    let mut builder = tern_route::dns::resolver_builder(&dns.nameservers).ok()?;
    builder.options_mut().timeout = dns.resolver_config().timeout;
    builder.options_mut().attempts = 1;
    builder
        .build()
        .ok()
        .map(tern_dkim::arc::ChainValidator::new)
}

/// The resolver for client names, or `None` when reverse lookups are off.
fn resolver(dns: &DnsSection) -> Option<TokioResolver> {
    if !dns.reverse_lookups {
        return None;
    }
    let timeout = Duration::from_millis(dns.client_lookup_timeout_ms);
    let builder = tern_route::dns::resolver_builder(&dns.nameservers).ok()?;
    let mut builder = builder;
    builder.options_mut().timeout = timeout;
    builder.options_mut().attempts = 1;
    builder.build().ok()
}
