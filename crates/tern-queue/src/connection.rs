//! Open connections and where they lead: what the delivery workers, the LMTP delivery
//! and the scheduler's connection cache (`conncache.rs`) pass between them.
//!
//! Invariant: a [`Conn`] is only ever made from a session `SmtpSession::connect`
//! returned, so it passed the greeting's loop check (`attempt.rs`) when it was opened.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern_deliver::SmtpSession;

use crate::Context;

/// Where an open connection can be reused: the cache's key. A connection made for one
/// next hop serves another whose walk reaches the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum EndpointKey {
    /// SMTP to `addr` under the TLS policy `tls`. Under `verify`, `name` is the host name
    /// the certificate was checked against (a job whose MX host has another name needs
    /// a connection of its own); under `dane` it is the host name and a digest of the
    /// TLSA records the certificate matched ([`EndpointKey::for_request`]: a connection
    /// opened under one TLSA set serves only that host with that set); under the other
    /// policies any certificate is accepted, so the name does not matter and is `None`.
    Smtp {
        addr: SocketAddr,
        tls: tern_deliver::TlsPolicy,
        name: Option<String>,
    },
    /// LMTP to this server.
    Lmtp(tern_deliver::Endpoint),
}

impl EndpointKey {
    /// The key of an SMTP connection to `addr` (MX host `host`) under `tls`.
    pub(crate) fn smtp(addr: SocketAddr, tls: tern_deliver::TlsPolicy, host: &str) -> Self {
        EndpointKey::Smtp {
            addr,
            tls,
            name: matches!(
                tls,
                tern_deliver::TlsPolicy::Verify | tern_deliver::TlsPolicy::Dane
            )
            .then(|| host.to_ascii_lowercase()),
        }
    }
}

impl EndpointKey {
    /// The key of an SMTP connection to `addr` (MX host `host`) opened under `request`:
    /// [`EndpointKey::smtp`], with the TLSA records' digest added to the name under
    /// `dane`.
    pub(crate) fn for_request(
        addr: SocketAddr,
        request: &tern_deliver::TlsRequest,
        host: &str,
    ) -> Self {
        let mut key = EndpointKey::smtp(addr, request.policy, host);
        if let (EndpointKey::Smtp { name: Some(n), .. }, Some(tlsa)) = (&mut key, &request.dane) {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            tlsa.records.hash(&mut h);
            n.push_str(&format!(" tlsa={:016x}", h.finish()));
        }
        key
    }
}

impl std::fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointKey::Smtp { addr, tls, name } => {
                write!(f, "{addr} tls={tls:?}")?;
                match name {
                    Some(n) => write!(f, " verified={n}"),
                    None => Ok(()),
                }
            }
            EndpointKey::Lmtp(e) => write!(f, "lmtp {e}"),
        }
    }
}

/// An open, greeted connection, and what it may be reused for.
pub(crate) struct Conn {
    /// Where it leads (the cache's key).
    pub key: EndpointKey,
    /// Boxed: a connection travels in the scheduler's commands.
    pub session: Box<SmtpSession>,
    /// The host name it is used under now (results say `host[address]`).
    pub host: String,
    /// When it was opened.
    pub opened: Instant,
    /// The destination limits' connection leases it holds (`destlimits.rs`): as long as
    /// it is open, idle in the cache included; released when it is dropped. Declared
    /// after `session`, so a dropped connection's socket is closed before its leases go.
    pub leases: Vec<crate::destlimits::Lease>,
}

impl Conn {
    /// A connection just opened to `key` under the host name `host`.
    pub(crate) fn new(key: EndpointKey, session: SmtpSession, host: &str) -> Conn {
        Conn {
            key,
            session: Box::new(session),
            host: host.to_string(),
            opened: Instant::now(),
            leases: Vec::new(),
        }
    }

    /// `host[address]` for results and events.
    pub(crate) fn remote(&self) -> String {
        format!("{}[{}]", self.host, self.session.peer().ip())
    }

    /// Whether it may carry another transaction at `now`: in sync, under
    /// `max_messages_per_connection` and `max_connection_age_secs`.
    pub(crate) fn reusable(&self, ctx: &Context, now: Instant) -> bool {
        self.session.is_usable()
            && self.session.transactions() < ctx.delivery.max_messages_per_connection
            && now.saturating_duration_since(self.opened)
                < Duration::from_secs(ctx.delivery.max_connection_age_secs)
    }
}

/// Closes `conn` in a task of its own (QUIT, bounded by the QUIT timeout): for
/// connections the scheduler lets go (idle time over, queue stopping), which no worker
/// holds.
/// Its destination limits' leases are released once the connection is closed, never
/// before (a lease stands for an open connection).
pub(crate) fn close_in_background(conn: Conn) {
    let Conn {
        session, leases, ..
    } = conn;
    tokio::spawn(async move {
        session.quit().await;
        drop(leases);
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tern_deliver::{DaneTlsa, TlsPolicy, TlsRequest, Tlsa};

    use super::EndpointKey;

    fn dane(data: u8) -> TlsRequest {
        TlsRequest {
            policy: TlsPolicy::Dane,
            dane: Some(Arc::new(DaneTlsa {
                records: vec![Tlsa {
                    usage: 3,
                    selector: 1,
                    matching: 1,
                    data: vec![data; 32],
                }],
                names: vec!["mx.example.com".into()],
            })),
            audit: false,
        }
    }

    #[test]
    fn dane_connections_are_keyed_by_host_and_tlsa_set() {
        let a = "192.0.2.1:25".parse().expect("address");
        let key = |r: &TlsRequest, host: &str| EndpointKey::for_request(a, r, host);
        assert_eq!(
            key(&dane(1), "mx.example.com"),
            key(&dane(1), "MX.example.com")
        );
        assert_ne!(
            key(&dane(1), "mx.example.com"),
            key(&dane(2), "mx.example.com")
        );
        assert_ne!(
            key(&dane(1), "mx.example.com"),
            key(&dane(1), "mx.example.net")
        );
        // Never shared with a connection opened under `may` or `verify`.
        let may = TlsRequest::plain(TlsPolicy::May);
        let verify = TlsRequest::plain(TlsPolicy::Verify);
        assert_ne!(key(&dane(1), "mx.example.com"), key(&may, "mx.example.com"));
        assert_ne!(
            key(&dane(1), "mx.example.com"),
            key(&verify, "mx.example.com")
        );
    }
}
