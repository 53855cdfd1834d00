//! `tern sendmail` and `mailq`: the classic interface of cron, scripts and web
//! applications (also when the binary is invoked through a link of that name).
//!
//! Submission never touches the spool: the running server holds its lock. The message
//! and its envelope are written into the pickup directory as a pair
//! (`tern_local::maildrop`: `.env` then `.eml`, each synced and renamed, then the
//! directory synced), so it works whether or not the server runs; the server queues it
//! at its next scan or its next start. This is Postfix's maildrop, with the pickup
//! directory as the drop. Exit 0 means the pair is in the pickup directory, its data
//! synced, and will be queued; the directory is synced too when the submitter may read
//! it (not in a 1733 directory: see `tern_local::maildrop::DirSync`). A failure is
//! reported only when nothing was submitted, so a caller that retries never sends twice.
//!
//! Flags (docs/CONNECTORS.md): recipients as arguments (commas allowed), `-t` (recipients
//! from To, Cc and Bcc too; Bcc is then removed), `-f`/`-r` sender, `-F` full name (for a
//! missing From), `-i`/`-oi` (a lone dot does not end the input), `-bs` (SMTP on stdin
//! and stdout, the SMTP server's own session code, the client trusted as local), `-bp`
//! (= mailq), `-bm` (the default), `-N`/`-R`/`-V` (DSN NOTIFY, RET, ENVID), `-C` (the
//! configuration file). Accepted and ignored: `-o<anything>` (`-odi`, `-oem`, ...),
//! `-O x`, `-v` (prints the queued file), `-n`, `-U`, `-G`, `-m`, `-Ac`, `-Am`, `-B x`,
//! `-L x`, `-h x`, `-X x`. Anything else is a usage error (exit 64).
//!
//! The configuration comes from `-C FILE`, else `$TERN_CONFIG`, else
//! `/etc/tern/tern.toml` when it exists, else the embedded default.
//!
//! Trust: the submitting user is whoever may write the pickup directory; the server
//! records the files' owner (uid) in the Received header. Input is bounded by the largest
//! listener's `max_message_size`.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tern_events::EventLog;
use tern_local::envfile::{EnvelopeFile, RecipientDetail, RecipientEntry, parse_notify};
use tern_local::maildrop::{DirSync, Maildrop};
use tern_local::submit::{Hygiene, LocalMessage, one_line, qualify};
use tern_smtpd::session::Session;
use tern_smtpd::{ListenerContext, RelayPolicy, SmtpShared};
use tern_spool::QueueId;
use tern_spool::backpressure::BackPressure;

use crate::config::Config;

/// sysexits(3) codes, as sendmail's callers expect them.
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOINPUT: u8 = 66;
const EX_SOFTWARE: u8 = 70;
const EX_CANTCREAT: u8 = 73;
const EX_CONFIG: u8 = 78;

/// What the command line asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    mode: Mode,
    /// `-t`.
    extract: bool,
    /// `-f` / `-r`.
    sender: Option<String>,
    /// `-F`.
    full_name: Option<String>,
    /// A line holding only a dot ends the input (cleared by `-i` / `-oi`).
    dot_ends: bool,
    /// `-C`.
    config: Option<PathBuf>,
    /// `-v`.
    verbose: bool,
    /// `-N`, `-R`, `-V`.
    notify: Option<String>,
    ret: Option<String>,
    envid: Option<String>,
    recipients: Vec<String>,
}

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
enum Mode {
    /// Read a message from stdin.
    #[default]
    Deliver,
    /// `-bs`.
    Smtp,
    /// `-bp`.
    List,
}

/// Parses sendmail's command line (without the program name).
fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        dot_ends: true,
        ..Options::default()
    };
    let mut i = 0;
    // The value of an option: attached (`-fuser`) or the next argument (`-f user`).
    let value = |i: &mut usize, attached: &str, flag: &str| -> Result<String, String> {
        if !attached.is_empty() {
            return Ok(attached.to_owned());
        }
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| format!("option -{flag} needs a value"))
    };
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            i += 1;
            break;
        }
        let Some(opt) = arg.strip_prefix('-').filter(|o| !o.is_empty()) else {
            break;
        };
        let (flag, rest) = opt.split_at(opt.chars().next().map_or(0, char::len_utf8));
        match flag {
            "t" if rest.is_empty() => o.extract = true,
            "i" if rest.is_empty() => o.dot_ends = false,
            "v" if rest.is_empty() => o.verbose = true,
            "n" | "U" | "G" | "m" if rest.is_empty() => {}
            "A" if rest == "c" || rest == "m" => {}
            "o" => {
                // `-oi` matters; every other -o option (-odi, -oem, -om, ...) is harmless.
                if rest == "i" {
                    o.dot_ends = false;
                } else if rest.is_empty() {
                    value(&mut i, rest, flag)?;
                }
            }
            "O" | "B" | "L" | "h" | "X" => {
                value(&mut i, rest, flag)?;
            }
            "f" | "r" => o.sender = Some(value(&mut i, rest, flag)?),
            "F" => o.full_name = Some(value(&mut i, rest, flag)?),
            "C" => o.config = Some(PathBuf::from(value(&mut i, rest, flag)?)),
            "N" => o.notify = Some(value(&mut i, rest, flag)?),
            "R" => o.ret = Some(value(&mut i, rest, flag)?),
            "V" => o.envid = Some(value(&mut i, rest, flag)?),
            "b" => {
                o.mode = match rest {
                    "m" => Mode::Deliver,
                    "s" => Mode::Smtp,
                    "p" => Mode::List,
                    other => return Err(format!("-b{other} is not supported")),
                }
            }
            _ => return Err(format!("unknown option {arg}")),
        }
        i += 1;
    }
    for a in args.get(i..).unwrap_or_default() {
        o.recipients.extend(
            a.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(o)
}

fn to_strings(args: &[OsString]) -> Result<Vec<String>, String> {
    args.iter()
        .map(|a| {
            a.to_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("argument {a:?} is not UTF-8"))
        })
        .collect()
}

/// Loads the configuration (see the module header).
fn load_config(explicit: Option<&PathBuf>) -> Result<Config, String> {
    let path = explicit
        .cloned()
        .or_else(|| std::env::var_os("TERN_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let etc = PathBuf::from("/etc/tern/tern.toml");
            etc.exists().then_some(etc)
        });
    match path {
        Some(p) => Config::load(&p),
        None => Config::embedded_default(),
    }
    .map_err(|e| e.to_string().trim_end().to_owned())
}

fn fail(code: u8, text: &str) -> ExitCode {
    crate::term::errln!("tern sendmail: {text}");
    ExitCode::from(code)
}

/// `tern sendmail ARGS` (or a link named `sendmail`).
pub fn main(args: &[OsString]) -> ExitCode {
    let opts = match to_strings(args).and_then(|a| parse_args(&a)) {
        Ok(o) => o,
        Err(e) => return fail(EX_USAGE, &e),
    };
    let config = match load_config(opts.config.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(EX_CONFIG, &format!("invalid configuration: {e}")),
    };
    match opts.mode {
        Mode::List => list(&config),
        Mode::Smtp => smtp_on_stdio(&config),
        Mode::Deliver => match deliver(&config, &opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err((code, text)) => fail(code, &text),
        },
    }
}

/// `mailq` (a link named `mailq`): `tern queue list`. Takes `-C FILE`; ignores `-v`.
pub fn mailq(args: &[OsString]) -> ExitCode {
    let args = match to_strings(args) {
        Ok(a) => a,
        Err(e) => return fail(EX_USAGE, &e),
    };
    let mut config = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-C" | "--config" => config = it.next().map(PathBuf::from),
            "-v" => {}
            other => return fail(EX_USAGE, &format!("mailq: unknown argument {other}")),
        }
    }
    match load_config(config.as_ref()) {
        Ok(c) => list(&c),
        Err(e) => fail(EX_CONFIG, &format!("invalid configuration: {e}")),
    }
}

fn list(config: &Config) -> ExitCode {
    match crate::cli_queue::list(config, false, &crate::cli_queue::FilterArgs::default()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if crate::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fail(EX_SOFTWARE, &format!("{e:#}")),
    }
}

/// The pickup directory, created when missing (the server may never have run): mode
/// 0700, set explicitly, and given to the owner of the directory holding it (the data
/// directory, Tern's) when root creates it, so the server, which requires a pickup
/// directory of its own, starts.
fn maildrop(config: &Config) -> Result<Maildrop, (u8, String)> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = config.pickup_dir();
    let cannot = |e: std::io::Error| {
        (
            EX_CANTCREAT,
            format!("cannot create the pickup directory {}: {e}", dir.display()),
        )
    };
    if std::fs::symlink_metadata(&dir).is_err() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(cannot)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(cannot)?;
                if crate::sys::euid() == 0
                    && let Some(owner) = dir.parent().and_then(|p| std::fs::metadata(p).ok())
                {
                    std::os::unix::fs::chown(&dir, Some(owner.uid()), Some(owner.gid()))
                        .map_err(cannot)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(cannot(e)),
        }
    }
    Ok(Maildrop::new(dir))
}

/// The login name of the invoking user (for the default sender).
fn login_name() -> String {
    let uid = crate::sys::uid();
    crate::sys::user_name(uid)
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("uid{uid}"))
}

/// Reads the message from stdin: at most `limit` octets; without `-i`, up to a line that
/// holds only a dot.
fn read_message(dot_ends: bool, limit: u64) -> Result<Vec<u8>, (u8, String)> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let room = limit.saturating_sub(out.len() as u64).saturating_add(1);
        let n = (&mut input)
            .take(room)
            .read_until(b'\n', &mut line)
            .map_err(|e| (EX_NOINPUT, format!("reading the message: {e}")))?;
        if n == 0 {
            break;
        }
        if dot_ends && matches!(line.as_slice(), b".\n" | b".\r\n" | b".") {
            break;
        }
        out.extend_from_slice(&line);
        if out.len() as u64 > limit {
            return Err((
                EX_DATAERR,
                format!("the message is larger than the limit of {limit} octets"),
            ));
        }
    }
    Ok(out)
}

/// Reads, checks and submits one message.
fn deliver(config: &Config, o: &Options) -> Result<(), (u8, String)> {
    let hostname = &config.server.hostname;
    let usage = |e: tern_local::submit::SubmitError| (EX_USAGE, e.to_string());
    let sender = match o.sender.as_deref().map(str::trim) {
        Some("") | Some("<>") => String::new(),
        Some(s) => qualify(
            s.trim_start_matches('<').trim_end_matches('>'),
            hostname,
            "-f",
        )
        .map_err(usage)?,
        None => qualify(&login_name(), hostname, "sender").map_err(usage)?,
    };
    let mut recipients = Vec::new();
    for r in &o.recipients {
        recipients.push(qualify(r, hostname, "argument").map_err(usage)?);
    }
    let raw = read_message(o.dot_ends, config.max_message_size())?;
    let message = LocalMessage::parse(&raw).map_err(|e| (EX_DATAERR, e.to_string()))?;
    if o.extract {
        let limit = config.pickup_config().max_recipients;
        let from_headers = message
            .recipients_from_headers(hostname, limit)
            .map_err(|e| (EX_DATAERR, e.to_string()))?;
        recipients.extend(from_headers);
    }
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(tern_local::address::key_of(r)));
    if recipients.is_empty() {
        return Err((
            EX_USAGE,
            if o.extract {
                "no recipients: none given and none in To, Cc or Bcc".into()
            } else {
                "no recipients given (use -t to take them from the headers)".into()
            },
        ));
    }
    let id = QueueId::generate();
    let from = (!sender.is_empty()).then(|| {
        let name = o
            .full_name
            .clone()
            .or_else(|| std::env::var("NAME").ok())
            .filter(|n| !n.trim().is_empty());
        match name {
            Some(n) => format!("\"{}\" <{sender}>", one_line(&n).replace(['"', '\\'], "")),
            None => sender.clone(),
        }
    });
    let unique = id.to_string();
    let (content, _) = message.hygiene(&Hygiene {
        hostname,
        unique: &unique,
        remove_bcc: o.extract,
        from_if_missing: from.as_deref(),
    });
    let envelope = envelope_file(&sender, &recipients, o)?;
    let drop = maildrop(config)?;
    let submitted = drop
        .submit(id, &envelope, &content)
        .map_err(|e| (EX_CANTCREAT, format!("cannot submit: {e}")))?;
    // From here on the message is submitted: exit 0 whatever the directory sync says.
    if let DirSync::Failed(e) = &submitted.dir_synced {
        crate::term::errln!(
            "tern sendmail: submitted as {id}, but syncing {} failed ({e}): the submission may not survive a power loss in the next seconds",
            drop.dir().display()
        );
    }
    let paths = submitted.paths;
    if o.verbose {
        crate::term::outln!(
            "tern sendmail: queued as {id} ({})",
            paths.message.display()
        );
    }
    Ok(())
}

fn envelope_file(
    sender: &str,
    rcpts: &[String],
    o: &Options,
) -> Result<EnvelopeFile, (u8, String)> {
    let usage = |e: tern_local::envfile::EnvFileError| (EX_USAGE, e.to_string());
    if let Some(n) = &o.notify {
        parse_notify(n).map_err(usage)?;
    }
    let mut file = EnvelopeFile::new(sender, rcpts);
    if o.notify.is_some() {
        file.recipients = rcpts
            .iter()
            .map(|a| {
                RecipientEntry::Detailed(RecipientDetail {
                    address: a.clone(),
                    notify: o.notify.clone(),
                    orcpt: None,
                })
            })
            .collect();
    }
    file.ret = o.ret.clone();
    file.envid = o.envid.clone();
    // The same checks the pickup service will make, so an error is reported here.
    file.resolve("localhost", usize::MAX).map_err(usage)?;
    Ok(file)
}

/// `-bs`: one SMTP session on stdin and stdout, into the pickup directory.
fn smtp_on_stdio(config: &Config) -> ExitCode {
    let drop = match maildrop(config) {
        Ok(d) => d,
        Err((code, text)) => return fail(code, &text),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(EX_SOFTWARE, &format!("starting a runtime: {e}")),
    };
    let hostname = config.server.hostname.clone();
    let mut listener = config.listeners.first().cloned().unwrap_or_default();
    // A local program is not asked to authenticate (the first listener may be a
    // submission listener).
    listener.auth = tern_smtpd::AuthMode::None;
    runtime.block_on(async move {
        let shared = Arc::new(SmtpShared {
            relay: ArcSwap::from_pointee(RelayPolicy::new(&config.relay, &hostname)),
            hostname,
            intake: Arc::new(drop),
            events: EventLog::discard(),
            back_pressure: BackPressure::disabled(),
            resolver: None,
            rdns_timeout: Duration::from_secs(1),
            rdns_lookup_loopback: false,
            loop_mark: None,
            // A local program: no rate limit (as Postfix's sendmail bypasses anvil).
            limits: tern_smtpd::rate::RateLimits::disabled(),
            auth: None,
            screen: None,
            verify: arc_swap::ArcSwapOption::empty(),
            dmarc_recorder: Arc::new(tern_reports::NoReports),
            inbound_tls: None,
        });
        let ctx = ListenerContext::local(shared, listener);
        let (_keep, shutdown) = tokio::sync::watch::channel(false);
        let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        Session::run_local(ctx, Box::new(stdio), shutdown).await;
    });
    let _ = std::io::stdout().flush();
    // Stdin's reader thread may still be blocked in read(2): do not wait for it.
    runtime.shutdown_background();
    ExitCode::SUCCESS
}

/// Whether the program was invoked as `name` (the last path component of argv[0]).
pub fn invoked_as(argv0: Option<&OsStr>, name: &str) -> bool {
    argv0
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|f| f == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        parse_args(&args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn classic_command_lines_parse() {
        let o = parse(&["-t", "-oi", "-f", "cron@host", "-FCron Daemon"]).unwrap();
        assert!(o.extract && !o.dot_ends);
        assert_eq!(o.sender.as_deref(), Some("cron@host"));
        assert_eq!(o.full_name.as_deref(), Some("Cron Daemon"));
        assert!(o.recipients.is_empty());
        let o = parse(&[
            "-i",
            "-fwww@site",
            "-odi",
            "-oem",
            "-v",
            "a@x.test,b@y.test",
            "c",
        ])
        .unwrap();
        assert_eq!(o.recipients, ["a@x.test", "b@y.test", "c"]);
        assert_eq!(o.sender.as_deref(), Some("www@site"));
        assert!(o.verbose && !o.dot_ends && o.mode == Mode::Deliver);
        assert_eq!(parse(&["-bs"]).unwrap().mode, Mode::Smtp);
        assert_eq!(parse(&["-bp"]).unwrap().mode, Mode::List);
        let o = parse(&[
            "-N",
            "failure,delay",
            "-Rhdrs",
            "-V",
            "E1",
            "--",
            "-odd@x.test",
        ])
        .unwrap();
        assert_eq!(o.notify.as_deref(), Some("failure,delay"));
        assert_eq!(o.ret.as_deref(), Some("hdrs"));
        assert_eq!(o.envid.as_deref(), Some("E1"));
        assert_eq!(o.recipients, ["-odd@x.test"]);
        let o = parse(&[
            "-C",
            "/etc/t.toml",
            "-B",
            "8BITMIME",
            "-O",
            "x=y",
            "-Am",
            "r@x.test",
        ])
        .unwrap();
        assert_eq!(o.config, Some(PathBuf::from("/etc/t.toml")));
        assert_eq!(o.recipients, ["r@x.test"]);
        // Options end at the first recipient, as in sendmail.
        let o = parse(&["r@x.test", "-t"]).unwrap();
        assert!(!o.extract);
        assert_eq!(o.recipients, ["r@x.test", "-t"]);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for bad in [&["-f"][..], &["-x"], &["-bd"], &["-tq"], &["-F"]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_program_name_decides() {
        assert!(invoked_as(
            Some(OsStr::new("/usr/sbin/sendmail")),
            "sendmail"
        ));
        assert!(invoked_as(Some(OsStr::new("mailq")), "mailq"));
        assert!(!invoked_as(Some(OsStr::new("/usr/bin/tern")), "sendmail"));
        assert!(!invoked_as(None, "sendmail"));
    }
}
