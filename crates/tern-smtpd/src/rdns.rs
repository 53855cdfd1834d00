//! The client's name: reverse DNS confirmed by a forward lookup.
//!
//! [`ClientName::start`] begins the lookup in its own task as soon as a connection is
//! accepted; the session greets at once and only awaits the result when it needs it (for
//! the Received header and the events), bounded by the configured timeout. A name counts
//! only when one of its A/AAAA records is the client's address (forward-confirmed reverse
//! DNS); otherwise the client is `unknown`, as in Postfix.
//!
//! Trust: DNS answers are untrusted. A PTR name is used only after forward confirmation,
//! at most [`MAX_PTR_NAMES`] PTR names are tried, and names are checked for host-name
//! syntax before they are put in a header.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{Name, RData};
use tokio::task::JoinHandle;

/// Most PTR names checked per client.
pub const MAX_PTR_NAMES: usize = 4;

/// A lookup in progress or finished.
#[derive(Debug)]
pub enum ClientName {
    /// Still running.
    Pending(JoinHandle<Option<String>>),
    /// Finished; `None` means unknown.
    Done(Option<String>),
}

impl ClientName {
    /// Starts the lookup for `ip`, or records `unknown` at once when no resolver is
    /// configured. Loopback clients are `localhost` without a query unless
    /// `lookup_loopback` is set.
    pub fn start(
        resolver: Option<TokioResolver>,
        ip: IpAddr,
        timeout: Duration,
        lookup_loopback: bool,
    ) -> ClientName {
        if ip.is_loopback() && !lookup_loopback {
            return ClientName::Done(Some("localhost".into()));
        }
        match resolver {
            None => ClientName::Done(None),
            Some(r) => ClientName::Pending(tokio::spawn(async move {
                tokio::time::timeout(timeout, confirmed_name(&r, ip))
                    .await
                    .ok()
                    .flatten()
            })),
        }
    }

    /// The name, waiting for the lookup if it is still running (it is bounded by its own
    /// timeout).
    pub async fn get(&mut self) -> Option<String> {
        if let ClientName::Pending(handle) = self {
            let name = handle.await.ok().flatten();
            *self = ClientName::Done(name);
        }
        match self {
            ClientName::Done(n) => n.clone(),
            ClientName::Pending(_) => None,
        }
    }
}

impl Drop for ClientName {
    fn drop(&mut self) {
        if let ClientName::Pending(h) = self {
            h.abort();
        }
    }
}

async fn confirmed_name(resolver: &TokioResolver, ip: IpAddr) -> Option<String> {
    let lookup = resolver.reverse_lookup(Name::from(ip)).await.ok()?;
    let names: Vec<String> = lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::PTR(ptr) => Some(ptr.0.to_utf8()),
            _ => None,
        })
        .take(MAX_PTR_NAMES)
        .collect();
    for name in names {
        let host = name.trim_end_matches('.').to_lowercase();
        if !tern_proto::address::valid_domain(&host) || !host.is_ascii() {
            continue;
        }
        if let Ok(ips) = resolver.lookup_ip(format!("{host}.")).await
            && ips.iter().any(|a| a == ip)
        {
            return Some(host);
        }
    }
    None
}
