//! The `tern` command: runs the server and the operator tools.
//!
//! `tern serve` runs the mail gateway; `tern check-config` validates a configuration file
//! and prints every problem; `tern queue list` reads the spool directly (it works whether
//! or not the server runs); `tern status` shows the watchdog's view of the running server;
//! `tern sendmail` submits mail the classic way (also as a link named `sendmail`, and
//! `mailq` as a link lists the queue). `tern dest`, `tern queue summary`, `tern config
//! show`, and `tern reload` / `tern status` when the admin listener answers, talk to the
//! running server over its admin API (`remote`).
//! Only this binary uses `anyhow`; the library crates return typed errors. `unsafe` is
//! denied except in `sys`, where the few libc calls live.

#![deny(unsafe_code)]

mod admin;
mod adopt;
mod cli_queue;
mod client;
mod cluster;
mod cluster_view;
mod config;
mod dkim;
mod dmarc;
mod notify;
mod queue;
mod remote;
mod screen;
mod sendmail;
mod serve;
mod status;
mod supervise;
#[allow(unsafe_code)]
mod sys;
mod term;
mod tlsrpt;
mod track;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(name = "tern", version, about = "Tern mail gateway")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the mail server (embedded default configuration when --config is not given).
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file; print every problem with its key.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
    /// Reload the configuration of the running server (like SIGHUP): the file is checked
    /// first and an invalid one is refused with its errors.
    Reload {
        /// Configuration file (TOML); the server must have been started with the same one.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show the server's workers as its watchdog sees them (state, progress, stalls).
    Status {
        /// Configuration file, to find the data directory.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Submit a message like sendmail (recipients as arguments, -t, -f, -F, -i, -bs, ...;
    /// see docs/CONNECTORS.md). Works whether or not the server runs. Also invoked as a
    /// link named `sendmail`; a link named `mailq` lists the queue.
    Sendmail {
        /// sendmail's own options and the recipients.
        #[arg(allow_hyphen_values = true, trailing_var_arg = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
    /// Inspect the queue.
    Queue {
        #[command(subcommand)]
        command: QueueCmd,
    },
    /// Follow a message through the tracking log (read directly: works with or without a
    /// running server): a queue id (with the DSNs it produced), a Message-ID (every queue
    /// id that carried it) or an address (every message from or to it).
    Track {
        /// Configuration file, to find the data directory.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The records as one JSON object ({"query", "records", "truncated", "ids"}).
        #[arg(long)]
        json: bool,
        /// Most records shown (the newest), 1 to 10000.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Ask every node of the cluster (through each node's admin API, in parallel) and
        /// merge the answers with each row's node; exit status 3 when a node did not
        /// answer (the answer is partial).
        #[arg(long)]
        cluster: bool,
        /// Queue id, Message-ID or address.
        query: String,
    },
    /// The cluster this node belongs to ([cluster], docs/CLUSTER.md).
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// Show the running server's log level, or set it (debug, info, notice, warning,
    /// error) until the next reload or restart.
    LogLevel {
        /// Configuration file, to find the server.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The new level; without it, the current one is shown.
        level: Option<String>,
    },
    /// Destinations (next hops) of the running server: list, retry now, suspend, resume.
    Dest {
        #[command(subcommand)]
        command: DestCmd,
    },
    /// The running server's configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// DKIM signing keys: generate one, check the published records (docs/DKIM.md).
    Dkim {
        #[command(subcommand)]
        command: DkimCmd,
    },
    /// DMARC aggregate reports of the running server (docs/REPORTS.md).
    DmarcReports {
        #[command(subcommand)]
        command: DmarcReportsCmd,
    },
    /// SMTP TLS reports (RFC 8460) of the running server (docs/TLS.md).
    TlsReports {
        #[command(subcommand)]
        command: DmarcReportsCmd,
    },
    /// Spools of a cluster (docs/cluster/adopt.md): adopt a dead node's, clear a fence.
    Spool {
        #[command(subcommand)]
        command: SpoolCmd,
    },
}

#[derive(Subcommand)]
enum SpoolCmd {
    /// The running server takes over another node's spool (its disk attached here, or a
    /// shared volume): every message in every state merged here and scheduled, the other
    /// node fenced. Run it again if it was interrupted: it completes the adoption.
    Adopt {
        /// Configuration file, to find the server.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The counts as JSON.
        #[arg(long)]
        json: bool,
        /// The other node's spool directory (e.g. /srv/tern/node2/spool).
        path: PathBuf,
    },
    /// Clears this node's fence after its spool was adopted (the spool's `adopted`
    /// marker and the cluster's record in Redis), so that it can start again. The server
    /// must be stopped; check first that the adopting node has the mail.
    Unfence {
        /// Configuration file, to find the spool and the cluster.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DmarcReportsCmd {
    /// Send the reports now: the open period ends at this second and every report due
    /// is queued (instead of waiting for the end of the UTC day).
    Send {
        /// Configuration file, to find the server.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The run's counts as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DkimCmd {
    /// Write a new signing key (mode 0600, never over an existing file) and print the
    /// DNS TXT record to publish.
    Generate {
        /// The signing domain (d=).
        domain: String,
        /// The selector (s=): the record goes at <selector>._domainkey.<domain>.
        #[arg(long)]
        selector: String,
        /// rsa (rsa-sha256) or ed25519 (ed25519-sha256).
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// RSA key size in bits (2048 to 4096).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Directory for the key file <domain>.<selector>.pem (created 0700 if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Compare every configured key of DOMAIN with its published TXT record: matches,
    /// differs or missing for each selector; the exit code is 1 unless all match.
    Check {
        /// Configuration file (keys, and the name servers asked).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The signing domain.
        domain: String,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Every node as Redis lists it (name, id, alive or dead, version, admin URL, last
    /// heartbeat, queue counts) and this node's link to Redis. Exit status 0 when every
    /// listed node is alive and this node's link is up; 3 when a node is dead (declared
    /// dead and not yet forgotten) or this node is degraded or connecting; 1 on an
    /// error (no server, not in a cluster).
    Status {
        /// Configuration file, to find the server.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The API's JSON answer (`GET /api/v1/cluster`) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a dead node from the list (it comes back by itself if it sends a
    /// heartbeat again). A live node is refused.
    Forget {
        /// Configuration file, to find the server.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The node's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum DestCmd {
    /// Every destination with its queue length, state, connections and last error.
    List {
        /// Configuration file, to find the server.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The API's JSON answer instead of the table.
        #[arg(long)]
        json: bool,
        /// Ask every node of the cluster (through each node's admin API, in parallel) and
        /// merge the answers with each row's node; exit status 3 when a node did not
        /// answer (the answer is partial).
        #[arg(long)]
        cluster: bool,
    },
    /// One destination: its state, queue, connections, last error, and the TLS policy
    /// its hosts were last tried under (shown even once its mail is gone).
    Show {
        #[command(flatten)]
        dest: DestArgs,
        /// Ask every node of the cluster and show the destination on each node that
        /// knows it; exit status 3 when a node did not answer, 1 when none knows it.
        #[arg(long)]
        cluster: bool,
    },
    /// Retry a destination now: clear its down mark, try its waiting messages.
    Retry(DestArgs),
    /// Suspend a destination: no new connections, its mail waits (until resume or a
    /// restart).
    Suspend(DestArgs),
    /// Resume a suspended destination; its waiting messages are tried now.
    Resume(DestArgs),
}

#[derive(clap::Args)]
struct DestArgs {
    /// Configuration file, to find the server.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The API's JSON answer instead of its text.
    #[arg(long)]
    json: bool,
    /// The destination, as `tern dest list` names it (e.g. mx:example.com, smtp:[10.0.0.5]:25, maildir:/var/mail).
    name: String,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the running server's effective configuration (defaults filled in, secrets
    /// redacted), as TOML or, with --json, JSON.
    Show {
        /// Configuration file, to find the server.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// List queued messages, mailq style (from the running server, else from the spool),
    /// or one JSON object per message per line with --json (from the spool).
    List {
        /// Configuration file, to find the data directory and the server.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One JSON object per message per line (with --cluster: one JSON object,
        /// {"messages", "nodes", "missing", "partial"}).
        #[arg(long)]
        json: bool,
        /// Ask every node of the cluster (through each node's admin API, in parallel) and
        /// merge the answers with each row's node; exit status 3 when a node did not
        /// answer (the answer is partial).
        #[arg(long)]
        cluster: bool,
        #[command(flatten)]
        filter: cli_queue::FilterArgs,
    },
    /// Show one message: envelope, each recipient's status and attempts, headers.
    Show {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The API's JSON instead of the text.
        #[arg(long)]
        json: bool,
        /// Queue id.
        id: String,
    },
    /// Destination by age table of the running server's queue (like Postfix's qshape).
    Summary {
        /// Configuration file, to find the server.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The API's JSON answer instead of the table.
        #[arg(long)]
        json: bool,
        /// States counted, comma-separated (default incoming,active,deferred).
        #[arg(long)]
        state: Option<String>,
        /// Group by `destination` (next hop, the default) or `domain`.
        #[arg(long)]
        by: Option<String>,
        /// Ask every node of the cluster (through each node's admin API, in parallel) and
        /// merge the answers with each row's node; exit status 3 when a node did not
        /// answer (the answer is partial).
        #[arg(long)]
        cluster: bool,
    },
    /// Write a message as stored (message/rfc822) to stdout or a file.
    Export {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Queue id.
        id: String,
    },
    /// Delete messages (deferred, hold, poison, corrupt); --bounce tells the sender first.
    Delete(ActionArgs),
    /// Move deferred messages to the hold queue.
    Hold(ActionArgs),
    /// Release messages from the hold or poison queue: crash count reset, tried now.
    Release(ActionArgs),
    /// Try deferred messages now.
    Retry(ActionArgs),
    /// Bounce messages now: undelivered recipients fail, the sender gets a bounce.
    Bounce(ActionArgs),
    /// Resubmit poisoned messages: crash count reset, tried now.
    Resubmit(ActionArgs),
}

/// The messages an action takes: ids, or a filter.
#[derive(clap::Args)]
struct ActionArgs {
    /// Configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Queue ids (or use the filter flags).
    ids: Vec<String>,
    #[command(flatten)]
    filter: cli_queue::FilterArgs,
    /// delete only: bounce to the sender for the recipients not yet delivered.
    #[arg(long)]
    bounce: bool,
}

fn load(config: Option<&PathBuf>) -> Result<Config, config::ConfigErrors> {
    match config {
        Some(p) => Config::load(p),
        None => Config::embedded_default(),
    }
}

fn main() -> ExitCode {
    // sendmail's command line is not clap's (-oi, -fuser, options ending at the first
    // recipient): it is parsed by `sendmail`, before clap sees it.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv0 = argv.first().map(std::ffi::OsString::as_os_str);
    let rest = argv.get(1..).unwrap_or_default();
    if sendmail::invoked_as(argv0, "sendmail") {
        return sendmail::main(rest);
    }
    if sendmail::invoked_as(argv0, "mailq") {
        return sendmail::mailq(rest);
    }
    if argv.get(1).is_some_and(|a| a == "sendmail") {
        return sendmail::main(argv.get(2..).unwrap_or_default());
    }
    let cli = Cli::parse();
    match cli.command {
        Cmd::Sendmail { args } => sendmail::main(&args),
        Cmd::Serve { config } => match load(config.as_ref()) {
            Ok(c) => match serve::run(c, config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    crate::term::errln!("tern: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                crate::term::err!("tern: invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Reload { config } => match load(config.as_ref()) {
            Err(e) => {
                crate::term::out!("{e}");
                crate::term::outln!("tern: reload refused; the running configuration is unchanged");
                ExitCode::FAILURE
            }
            Ok(c) => match remote::reload(&c) {
                remote::Reload::Done(text) => {
                    crate::term::outln!("tern: {text}");
                    ExitCode::SUCCESS
                }
                remote::Reload::Refused(why) => {
                    crate::term::outln!("tern: {why}");
                    crate::term::outln!(
                        "tern: reload refused; the running configuration is unchanged"
                    );
                    ExitCode::FAILURE
                }
                // No admin listener answers: the signal does it (the server checks the
                // file and logs event 1008 if it refuses it).
                remote::Reload::NoApi(api) => match reload_server(&c) {
                    Ok(pid) => {
                        crate::term::outln!("tern: reload requested (server pid {pid})");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        crate::term::errln!("tern: {e:#} (admin API: {api})");
                        ExitCode::FAILURE
                    }
                },
            },
        },
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                // Key files, the passwd-file and the sender-login map are read here, not
                // in `Config::load`: a reload with a broken one keeps the previous one
                // instead of refusing the whole file.
                let mut problems = dkim::key_problems(&c);
                problems.extend(c.auth_file_problems());
                if problems.is_empty() {
                    crate::term::outln!("{}: OK", file.display());
                    ExitCode::SUCCESS
                } else {
                    let e = config::ConfigErrors {
                        file: file.display().to_string(),
                        problems,
                    };
                    crate::term::out!("{e}");
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                crate::term::out!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Dkim {
            command:
                DkimCmd::Generate {
                    domain,
                    selector,
                    algorithm,
                    bits,
                    out,
                },
        } => {
            let algorithm = match algorithm.as_str() {
                "rsa" | "rsa-sha256" => tern_dkim::Algorithm::RsaSha256,
                "ed25519" | "ed25519-sha256" => tern_dkim::Algorithm::Ed25519Sha256,
                other => {
                    crate::term::errln!("tern: unknown algorithm {other:?}: rsa or ed25519");
                    return ExitCode::from(2);
                }
            };
            exit_of(dkim::generate(&domain, &selector, algorithm, bits, &out).map(|()| true))
        }
        Cmd::Dkim {
            command: DkimCmd::Check { config, domain },
        } => exit_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| dkim::check(&c, &domain)),
        ),
        Cmd::DmarcReports {
            command: DmarcReportsCmd::Send { config, json },
        } => exit_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| remote::dmarc_send(&c, json).map(|()| true)),
        ),
        Cmd::TlsReports {
            command: DmarcReportsCmd::Send { config, json },
        } => exit_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| remote::tls_send(&c, json).map(|()| true)),
        ),
        Cmd::Spool {
            command: SpoolCmd::Adopt { config, json, path },
        } => exit_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| adopt::cli_adopt(&c, &path, json).map(|()| true)),
        ),
        Cmd::Spool {
            command: SpoolCmd::Unfence { config },
        } => exit_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| adopt::cli_unfence(&c).map(|()| true)),
        ),
        Cmd::Status { config, json } => exit_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| match remote::status(&c, json)? {
                    Some(healthy) => Ok(healthy),
                    None => status::show(&c, json),
                }),
        ),
        Cmd::Track {
            config,
            json,
            limit,
            cluster: true,
            query,
        } => code_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| cluster_view::track(&c, &query, limit, json)),
        ),
        Cmd::Track {
            config,
            json,
            limit,
            cluster: false,
            query,
        } => exit_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| track::track(&c, &query, limit, json)),
        ),
        Cmd::Cluster {
            command: ClusterCmd::Status { config, json },
        } => code_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| cluster_view::status(&c, json)),
        ),
        Cmd::Cluster {
            command: ClusterCmd::Forget { config, name },
        } => api_command(config.as_ref(), |c| cluster_view::forget(c, &name)),
        Cmd::LogLevel { config, level } => {
            api_command(config.as_ref(), |c| track::log_level(c, level.as_deref()))
        }
        Cmd::Dest {
            command:
                DestCmd::List {
                    config,
                    json,
                    cluster: true,
                },
        } => code_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| cluster_view::dest_list(&c, json)),
        ),
        Cmd::Dest {
            command:
                DestCmd::List {
                    config,
                    json,
                    cluster: false,
                },
        } => api_command(config.as_ref(), |c| remote::dest_list(c, json)),
        Cmd::Dest {
            command:
                DestCmd::Show {
                    dest: a,
                    cluster: true,
                },
        } => code_of(
            load(a.config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| cluster_view::dest_show(&c, &a.name, a.json)),
        ),
        Cmd::Dest {
            command:
                DestCmd::Show {
                    dest: a,
                    cluster: false,
                },
        } => api_command(a.config.as_ref(), |c| remote::dest_show(c, &a.name, a.json)),
        Cmd::Dest {
            command: DestCmd::Retry(a),
        } => api_command(a.config.as_ref(), |c| {
            remote::dest_action(c, &a.name, "retry", a.json)
        }),
        Cmd::Dest {
            command: DestCmd::Suspend(a),
        } => api_command(a.config.as_ref(), |c| {
            remote::dest_action(c, &a.name, "suspend", a.json)
        }),
        Cmd::Dest {
            command: DestCmd::Resume(a),
        } => api_command(a.config.as_ref(), |c| {
            remote::dest_action(c, &a.name, "resume", a.json)
        }),
        Cmd::Config {
            command: ConfigCmd::Show { config, json },
        } => api_command(config.as_ref(), |c| remote::config_show(c, json)),
        Cmd::Queue { command } => queue_command(command),
    }
}

/// A command over the admin API: exit 0 when it succeeded.
fn api_command(
    config: Option<&PathBuf>,
    run: impl FnOnce(&Config) -> anyhow::Result<()>,
) -> ExitCode {
    match load(config)
        .map_err(anyhow::Error::from)
        .and_then(|c| run(&c))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            crate::term::errln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit status a `--cluster` command chose (0, 1, or 3 for a partial answer).
fn code_of(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            crate::term::errln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn exit_of(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // `tern queue list | head` closes the pipe early: stop quietly, like mailq.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            crate::term::errln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn queue_command(command: QueueCmd) -> ExitCode {
    let with = |config: Option<&PathBuf>, f: &dyn Fn(&Config) -> anyhow::Result<bool>| {
        exit_of(
            load(config)
                .map_err(anyhow::Error::from)
                .and_then(|c| f(&c)),
        )
    };
    let action = |name: &str, a: ActionArgs| {
        if a.bounce && name != "delete" {
            crate::term::errln!("tern: --bounce goes with delete only");
            return ExitCode::from(2);
        }
        with(a.config.as_ref(), &|c| {
            let target = cli_queue::Target {
                ids: &a.ids,
                filter: &a.filter,
            };
            cli_queue::act(c, name, a.bounce, &target)
        })
    };
    match command {
        QueueCmd::List {
            config,
            json,
            cluster: true,
            filter,
        } => code_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| cluster_view::queue_list(&c, json, &filter)),
        ),
        QueueCmd::List {
            config,
            json,
            cluster: false,
            filter,
        } => with(config.as_ref(), &|c| {
            cli_queue::list(c, json, &filter).map(|()| true)
        }),
        QueueCmd::Show { config, json, id } => with(config.as_ref(), &|c| {
            cli_queue::show(c, &id, json).map(|()| true)
        }),
        QueueCmd::Export { config, output, id } => with(config.as_ref(), &|c| {
            cli_queue::export(c, &id, output.as_ref()).map(|()| true)
        }),
        QueueCmd::Delete(a) => action("delete", a),
        QueueCmd::Hold(a) => action("hold", a),
        QueueCmd::Release(a) => action("release", a),
        QueueCmd::Retry(a) => action("retry", a),
        QueueCmd::Bounce(a) => action("bounce", a),
        QueueCmd::Resubmit(a) => action("resubmit", a),
        QueueCmd::Summary {
            config,
            json,
            state,
            by,
            cluster: true,
        } => code_of(
            load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| cluster_view::summary(&c, json, state.as_deref(), by.as_deref())),
        ),
        QueueCmd::Summary {
            config,
            json,
            state,
            by,
            cluster: false,
        } => api_command(config.as_ref(), |c| {
            remote::summary(c, json, state.as_deref(), by.as_deref())
        }),
    }
}

/// Sends SIGHUP to the server that holds the configuration's spool.
fn reload_server(config: &Config) -> anyhow::Result<u32> {
    use anyhow::Context;
    let dir = config.spool_dir();
    let pid = tern_spool::Spool::lock_holder(&dir)
        .with_context(|| format!("reading the spool lock in {}", dir.display()))?
        .with_context(|| format!("no server is running on {}", dir.display()))?;
    signal_server(pid, libc::SIGHUP)?;
    Ok(pid)
}

/// Sends `signal` to the server process `pid` (from the spool lock).
fn signal_server(pid: u32, signal: i32) -> anyhow::Result<()> {
    use anyhow::Context;
    let raw = i32::try_from(pid).context("bad pid in the spool lock")?;
    crate::sys::kill(raw, signal).context(format!("signalling pid {pid}"))
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
