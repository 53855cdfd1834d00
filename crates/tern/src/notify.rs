//! The systemd notification protocol (`sd_notify(3)`), for `Type=notify` and
//! `WatchdogSec=` in `dist/tern.service` (docs/OPERATIONS.md).
//!
//! Tern sends `READY=1` once every listener is up (after event 1001), `RELOADING=1` and
//! `READY=1` around a reload, `STOPPING=1` at a stop, and `WATCHDOG=1` from the
//! supervisor thread (`supervise`) only while its watchdog sees the essential workers
//! healthy: a stuck Tern stops pinging and systemd restarts it.
//!
//! One datagram per message to the socket named by `$NOTIFY_SOCKET`: a path, or an
//! abstract-namespace name written `@name`. With the variable unset (not under systemd)
//! every call does nothing. The `sd-notify` crate was considered; it does not connect
//! to abstract-namespace addresses, which systemd may hand out, so this is the few lines
//! of std's `UnixDatagram` it takes.
//!
//! Trust: the variables come from the service manager. A value that is not a usable
//! address or number turns the feature off (with event 7083 for the socket); nothing
//! here can panic, and a send never blocks (the socket is non-blocking: a full queue
//! loses one notification, which the next one repeats).

use std::ffi::OsString;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// Longest `$NOTIFY_SOCKET` accepted (a `sockaddr_un` path holds 108 octets).
const MAX_ADDR: usize = 108;
/// Shortest ping interval honoured, whatever `$WATCHDOG_USEC` says.
const MIN_PING: Duration = Duration::from_millis(50);

/// The connection to the service manager; cheap to clone. Disabled when Tern does not
/// run under a manager that asked for notifications.
#[derive(Clone, Default)]
pub struct Notifier {
    socket: Option<Arc<UnixDatagram>>,
}

/// Why `$NOTIFY_SOCKET` could not be used.
#[derive(Debug, thiserror::Error)]
#[error("NOTIFY_SOCKET={value:?}: {reason}")]
pub struct NotifyError {
    /// The variable's value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`: `Ok(disabled)` when unset or empty.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(Notifier::default()),
            Some(v) if v.is_empty() => Ok(Notifier::default()),
            Some(v) => Notifier::connect(&v),
        }
    }

    /// Connects to `value` (a path, or `@name` in the abstract namespace).
    pub fn connect(value: &OsString) -> Result<Notifier, NotifyError> {
        let fail = |reason: String| NotifyError {
            value: value.to_string_lossy().into_owned(),
            reason,
        };
        let bytes = value.as_encoded_bytes();
        if bytes.len() > MAX_ADDR {
            return Err(fail(format!("longer than {MAX_ADDR} octets")));
        }
        let addr = match bytes.first() {
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..]).map_err(|e| fail(e.to_string()))?
            }
            Some(b'/') => SocketAddr::from_pathname(value).map_err(|e| fail(e.to_string()))?,
            _ => {
                return Err(fail(
                    "neither an absolute path nor an @abstract name".into(),
                ));
            }
        };
        let socket = UnixDatagram::unbound().map_err(|e| fail(e.to_string()))?;
        socket
            .connect_addr(&addr)
            .map_err(|e| fail(e.to_string()))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Notifier {
            socket: Some(Arc::new(socket)),
        })
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (newline-separated `KEY=value` assignments) as one datagram.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let Some(s) = &self.socket else {
            return Ok(());
        };
        let n = s.send(state.as_bytes())?;
        if n != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification truncated",
            ));
        }
        Ok(())
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `RELOADING=1` with the monotonic time systemd (253 and later) asks for.
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1\nSTATUS=stopping")
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when that is set and
/// `$WATCHDOG_PID` (if set) is this process. `None`: the manager wants no pings.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    interval_from(&usec, pid.as_deref(), std::process::id())
}

/// The rule of [`watchdog_interval`], on given values.
fn interval_from(usec: &str, pid: Option<&str>, own: u32) -> Option<Duration> {
    if let Some(p) = pid
        && p.trim().parse::<u32>().ok() != Some(own)
    {
        return None;
    }
    let usec: u64 = usec.trim().parse().ok().filter(|n| *n > 0)?;
    Some((Duration::from_micros(usec) / 2).max(MIN_PING))
}

/// A status text as one line (systemd reads the datagram line by line).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

/// `CLOCK_MONOTONIC` in microseconds.
fn monotonic_usec() -> u64 {
    crate::sys::monotonic_usec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(s: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(&path.clone().into_os_string()).unwrap();
        assert!(n.enabled());
        n.ready("up on 127.0.0.1:25\nwith a newline").unwrap();
        assert_eq!(
            recv(&server),
            "READY=1\nSTATUS=up on 127.0.0.1:25 with a newline"
        );
        n.watchdog().unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
        n.reloading().unwrap();
        assert!(recv(&server).starts_with("RELOADING=1\nMONOTONIC_USEC="));
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("tern-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::connect(&format!("@{name}").into()).unwrap();
        n.stopping().unwrap();
        assert_eq!(recv(&server), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn unusable_addresses_are_errors_and_disabled_sends_nothing() {
        assert!(Notifier::connect(&"relative/path".into()).is_err());
        assert!(Notifier::connect(&"x".repeat(200).into()).is_err());
        assert!(Notifier::connect(&"/nonexistent/tern/notify".into()).is_err());
        let off = Notifier::default();
        assert!(!off.enabled());
        off.ready("x").unwrap();
    }

    /// dist/tern.service keeps what this module's protocol relies on.
    #[test]
    fn the_unit_file_asks_for_notify_and_the_watchdog() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/tern.service");
        let unit = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = unit.lines().map(str::trim).collect();
        for want in [
            "Type=notify",
            "NotifyAccess=main",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/tern",
            "PrivateTmp=yes",
        ] {
            assert!(lines.contains(&want), "dist/tern.service lacks {want}");
        }
        assert!(
            lines.iter().any(|l| l.starts_with("WatchdogSec=")),
            "no WatchdogSec"
        );
    }

    #[test]
    fn watchdog_interval_is_half_and_only_for_this_pid() {
        assert_eq!(
            interval_from("2000000", None, 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            interval_from("2000000", Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(interval_from("2000000", Some("8"), 7), None);
        assert_eq!(interval_from("0", None, 7), None);
        assert_eq!(interval_from("soon", None, 7), None);
        assert_eq!(interval_from("10", None, 7), Some(MIN_PING));
    }
}
