//! The screening stores shared by every node (docs/cluster/state.md): the greylist, the
//! DNS list answers and the pass cache of `tern-screen`, in Redis, so that a client
//! greylisted on node A passes on node B after the delay, and a list answer one node
//! looked up is reused by the others for the rest of its TTL.
//!
//! Keys (`<p>` is `cluster.key_prefix`; `<net>` the client's /24 or /64 base address):
//! - `<p>:{gl:<net>}:t:<digest>`: one greylist triplet (the 128-bit digest of
//!   `tern-screen`, hex), `first:last:passed`, expiring when the triplet is forgotten
//!   (`greylist_window` after its first attempt, `greylist_expire` after its last pass);
//! - `<p>:{gl:<net>}:n`: the network allowed automatically, its last pass, expiring
//!   `greylist_expire` after it; the two keys of one decision share the hash tag;
//! - `<p>:dnsbl:<query name>`: a list answer, the listed addresses comma-separated (empty:
//!   not listed, at most 16), expiring with the answer's TTL;
//! - `<p>:pass:<address>`: what a client passed, `greet_until:lists_until`, expiring at
//!   the later of the two.
//!
//! Operations: the greylist decision is one script call per recipient (atomic, the same
//! rules as `tern_screen::greylist::decide`); a list answer is one GET per site and
//! client not in the pass cache, one SET per answer looked up; the pass cache is one GET
//! per connection and one SET per pass.
//!
//! Invariants:
//! - Every key expires (PX on every write).
//! - While Redis is unreachable (or an operation fails or takes longer than
//!   `cluster.op_timeout_ms`), each store answers from its in-process counterpart, which
//!   also receives every write, so the node keeps deciding alone with what it saw.
//! - What is read back is parsed strictly and bounded; anything else counts as absent.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use redis::Script;
use tern_screen::greylist::{network, triplet};
use tern_screen::{
    GreylistStore, ListCache, MemoryGreylist, MemoryListCache, MemoryPassCache, PassCache, Passed,
    Pending, Policy, Verdict,
};

use crate::client::Cluster;

/// Addresses kept from one list answer (as `tern-screen` keeps).
const MAX_ADDRESSES: usize = 16;
/// Longest query name stored.
const MAX_QUERY_NAME: usize = 255;
/// Longest value read back.
const MAX_VALUE: usize = 16 * 16;

/// The greylist decision of `tern_screen::greylist::decide`, atomic in Redis.
/// KEYS: triplet, network. ARGV: now, delay, window, expire.
/// Returns {kind, n}: kind 0 greylisted (n: retry in ms; third item 1 when new),
/// 1 passed (n: after ms), 2 known, 3 network allowed.
const GREYLIST: &str = r"
local now = tonumber(ARGV[1])
local delay = tonumber(ARGV[2])
local window = math.max(1, tonumber(ARGV[3]))
local expire = math.max(1, tonumber(ARGV[4]))
local allowed = redis.call('EXISTS', KEYS[2]) == 1
local cur = redis.call('GET', KEYS[1])
local first, last, passed = nil, nil, nil
if cur then
  local f, l, p = string.match(cur, '^(%d+):(%d+):([01])$')
  if f then first = tonumber(f); last = tonumber(l); passed = (p == '1') end
end
local valid = false
if first then
  local exp
  if passed then exp = last + expire else exp = first + window end
  valid = exp > now
end
local function put(f, l, p, ttl)
  redis.call('SET', KEYS[1], string.format('%d:%d:%d', f, l, p), 'PX', math.max(1, ttl))
end
local function allow()
  redis.call('SET', KEYS[2], string.format('%d', now), 'PX', expire)
end
if allowed then
  if valid then put(first, now, 1, expire) end
  allow()
  return {3, 0, 0}
end
if not valid then
  put(now, now, 0, window)
  return {0, delay, 1}
end
if passed then
  put(first, now, 1, expire)
  allow()
  return {2, 0, 0}
end
local waited = now - first
if waited < delay then
  return {0, delay - waited, 0}
end
if waited > window then
  put(now, now, 0, window)
  return {0, delay, 1}
end
put(first, now, 1, expire)
allow()
return {1, waited, 0}
";

/// The shared greylist, with the in-process one while Redis is unreachable.
pub struct SharedGreylist {
    cluster: Cluster,
    local: Arc<MemoryGreylist>,
    script: Script,
}

impl SharedGreylist {
    /// Shares through `cluster`; `local` decides while Redis is unreachable (and is the
    /// one saved to disk).
    pub fn new(cluster: Cluster, local: Arc<MemoryGreylist>) -> SharedGreylist {
        SharedGreylist {
            cluster,
            local,
            script: Script::new(GREYLIST),
        }
    }

    async fn shared(
        &self,
        client: IpAddr,
        sender: &str,
        recipient: &str,
        policy: Policy,
        now_ms: u64,
    ) -> Option<Verdict> {
        if !self.cluster.is_up() {
            return None;
        }
        let net = network(client);
        let digest = triplet(client, sender, recipient);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let tkey = self.cluster.key(&format!("{{gl:{net}}}:t:{hex}"));
        let nkey = self.cluster.key(&format!("{{gl:{net}}}:n"));
        let mut inv = self.script.prepare_invoke();
        inv.key(tkey)
            .key(nkey)
            .arg(now_ms)
            .arg(policy.delay_ms)
            .arg(policy.window_ms)
            .arg(policy.expire_ms);
        let out: Vec<i64> = self.cluster.script(&inv).await.ok()?;
        verdict(&out)
    }
}

/// Reads the script's answer strictly.
fn verdict(out: &[i64]) -> Option<Verdict> {
    let (&kind, &n, &new) = match out {
        [k, n, new] => (k, n, new),
        _ => return None,
    };
    let n = u64::try_from(n).ok()?;
    Some(match kind {
        0 => Verdict::Greylisted {
            retry_in_ms: n,
            new: new == 1,
        },
        1 => Verdict::Passed { after_ms: n },
        2 => Verdict::Known,
        3 => Verdict::NetworkAllowed,
        _ => return None,
    })
}

impl GreylistStore for SharedGreylist {
    fn check<'a>(
        &'a self,
        client: IpAddr,
        sender: &'a str,
        recipient: &'a str,
        policy: Policy,
        now_ms: u64,
    ) -> Pending<'a, Verdict> {
        Box::pin(async move {
            match self.shared(client, sender, recipient, policy, now_ms).await {
                Some(v) => v,
                None => self
                    .local
                    .decide_now(client, sender, recipient, &policy, now_ms),
            }
        })
    }
}

/// The shared cache of DNS list answers, with the in-process one while Redis is
/// unreachable (it also keeps every answer this node looked up).
pub struct SharedListCache {
    cluster: Cluster,
    local: MemoryListCache,
}

impl SharedListCache {
    /// Shares through `cluster`; `capacity` bounds the in-process cache.
    pub fn new(cluster: Cluster, capacity: usize) -> SharedListCache {
        SharedListCache {
            cluster,
            local: MemoryListCache::new(capacity),
        }
    }
}

/// Parses a stored answer: addresses comma-separated, at most [`MAX_ADDRESSES`].
fn parse_answer(v: &str) -> Option<Vec<Ipv4Addr>> {
    if v.len() > MAX_VALUE {
        return None;
    }
    if v.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for part in v.split(',') {
        if out.len() >= MAX_ADDRESSES {
            return None;
        }
        out.push(part.parse().ok()?);
    }
    Some(out)
}

impl ListCache for SharedListCache {
    fn get<'a>(&'a self, name: &'a str, now_ms: u64) -> Pending<'a, Option<Vec<Ipv4Addr>>> {
        Box::pin(async move {
            if self.cluster.is_up() && name.len() <= MAX_QUERY_NAME {
                let key = self.cluster.key(&format!("dnsbl:{name}"));
                if let Ok(v) = self
                    .cluster
                    .query::<Option<String>>(redis::cmd("GET").arg(key))
                    .await
                {
                    return v.as_deref().and_then(parse_answer);
                }
            }
            self.local.get(name, now_ms).await
        })
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        answer: Vec<Ipv4Addr>,
        expires_ms: u64,
        now_ms: u64,
    ) -> Pending<'a, ()> {
        Box::pin(async move {
            let ttl = expires_ms.saturating_sub(now_ms);
            if self.cluster.is_up() && ttl > 0 && name.len() <= MAX_QUERY_NAME {
                let key = self.cluster.key(&format!("dnsbl:{name}"));
                let value = answer
                    .iter()
                    .take(MAX_ADDRESSES)
                    .map(Ipv4Addr::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let _ = self
                    .cluster
                    .query::<()>(redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl))
                    .await;
            }
            self.local.put(name, answer, expires_ms, now_ms).await;
        })
    }
}

/// The shared pass cache, with the in-process one while Redis is unreachable (it also
/// keeps every pass this node recorded).
pub struct SharedPassCache {
    cluster: Cluster,
    local: MemoryPassCache,
}

impl SharedPassCache {
    /// Shares through `cluster`; `capacity` bounds the in-process cache.
    pub fn new(cluster: Cluster, capacity: usize) -> SharedPassCache {
        SharedPassCache {
            cluster,
            local: MemoryPassCache::new(capacity),
        }
    }
}

/// Parses `greet_until:lists_until`, keeping only times after `now_ms`.
fn parse_passed(v: &str, now_ms: u64) -> Option<Passed> {
    if v.len() > 64 {
        return None;
    }
    let (g, l) = v.split_once(':')?;
    let strict = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (g, l) = (strict(g)?, strict(l)?);
    Some(Passed {
        greet_until: if g > now_ms { g } else { 0 },
        lists_until: if l > now_ms { l } else { 0 },
    })
}

impl PassCache for SharedPassCache {
    fn get<'a>(&'a self, client: IpAddr, now_ms: u64) -> Pending<'a, Passed> {
        Box::pin(async move {
            if self.cluster.is_up() {
                let key = self.cluster.key(&format!("pass:{client}"));
                if let Ok(v) = self
                    .cluster
                    .query::<Option<String>>(redis::cmd("GET").arg(key))
                    .await
                {
                    return v
                        .as_deref()
                        .and_then(|v| parse_passed(v, now_ms))
                        .unwrap_or_default();
                }
            }
            self.local.get(client, now_ms).await
        })
    }

    fn put<'a>(&'a self, client: IpAddr, passed: Passed, now_ms: u64) -> Pending<'a, ()> {
        Box::pin(async move {
            let ttl = passed
                .greet_until
                .max(passed.lists_until)
                .saturating_sub(now_ms);
            if self.cluster.is_up() {
                let key = self.cluster.key(&format!("pass:{client}"));
                let cmd = if ttl == 0 {
                    redis::cmd("DEL").arg(key).clone()
                } else {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(format!("{}:{}", passed.greet_until, passed.lists_until))
                        .arg("PX")
                        .arg(ttl)
                        .clone()
                };
                let _ = self.cluster.query::<()>(&cmd).await;
            }
            self.local.put(client, passed, now_ms).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_are_parsed_strictly() {
        assert_eq!(parse_answer(""), Some(vec![]));
        assert_eq!(
            parse_answer("127.0.0.2,127.0.0.4"),
            Some(vec![
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 4)
            ])
        );
        assert_eq!(parse_answer("127.0.0.2,"), None);
        assert_eq!(parse_answer("x"), None);
        let many = vec!["127.0.0.2"; 17].join(",");
        assert_eq!(parse_answer(&many), None);
        assert_eq!(
            parse_passed("2000:1500", 1000),
            Some(Passed {
                greet_until: 2000,
                lists_until: 1500
            })
        );
        assert_eq!(
            parse_passed("500:1500", 1000),
            Some(Passed {
                greet_until: 0,
                lists_until: 1500
            })
        );
        assert_eq!(parse_passed("+5:1", 0), None);
        assert_eq!(parse_passed("5", 0), None);
        assert_eq!(
            verdict(&[0, 300, 1]),
            Some(Verdict::Greylisted {
                retry_in_ms: 300,
                new: true
            })
        );
        assert_eq!(verdict(&[1, 5, 0]), Some(Verdict::Passed { after_ms: 5 }));
        assert_eq!(verdict(&[9, 0, 0]), None);
        assert_eq!(verdict(&[0, -1, 0]), None);
        assert_eq!(verdict(&[0]), None);
    }
}
