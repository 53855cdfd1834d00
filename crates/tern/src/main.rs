//! The `tern` command: runs the server and the operator tools.
//!
//! `tern serve` runs the mail gateway; `tern check-config` validates a configuration file
//! and prints every problem; `tern queue list` reads the spool directly (it works whether
//! or not the server runs). Only this binary uses `anyhow`; the library crates return typed
//! errors.

mod config;
mod queue;
mod serve;

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
    /// Inspect the queue.
    Queue {
        #[command(subcommand)]
        command: QueueCmd,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// List queued messages (mailq style, or one JSON object per line with --json).
    List {
        /// Configuration file, to find the data directory.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One JSON object per message per line.
        #[arg(long)]
        json: bool,
        /// Only this state: incoming, active, deferred, hold, poison, corrupt.
        #[arg(long)]
        state: Option<String>,
    },
}

fn load(config: Option<&PathBuf>) -> Result<Config, config::ConfigErrors> {
    match config {
        Some(p) => Config::load(p),
        None => Config::embedded_default(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve { config } => match load(config.as_ref()) {
            Ok(c) => match serve::run(c) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tern: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprint!("tern: invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                print!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Queue {
            command:
                QueueCmd::List {
                    config,
                    json,
                    state,
                },
        } => {
            let result = load(config.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|c| queue::list(&c, json, state.as_deref()));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                // `tern queue list | head` closes the pipe early: stop quietly, like mailq.
                Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tern: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
