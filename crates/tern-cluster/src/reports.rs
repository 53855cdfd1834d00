//! The shared DMARC aggregate report data of a cluster (docs/cluster/state.md): each
//! node's share of a closed period, the period's lease, and which `(node, domain)`
//! pairs are reported. The shares are opaque text here (JSON written and validated by
//! `tern-reports`); this module only bounds what it reads.
//!
//! Keys (one hash tag per period, so that Redis Cluster keeps them on one shard):
//! - `<p>:{dmarc:<begin>}:data` hash node → share, kept [`ReportKeys::keep_ms`];
//! - `<p>:{dmarc:<begin>}:lease` the node merging the period (`SET NX PX`);
//! - `<p>:{dmarc:<begin>}:sent` set of `<node>\n<domain>`, kept like the data.
//!
//! Invariants: nothing read is trusted: counts are checked before a fetch (at most
//! [`MAX_FIELDS`] shares, [`MAX_SENT`] sent pairs), values longer than
//! [`MAX_VALUE`] are dropped, members without a node part are ignored.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Cluster, ClusterError, membership};

/// Shares read per period at most (more: the period is refused, its nodes report alone).
pub const MAX_FIELDS: usize = 256;
/// Sent pairs read per period at most.
pub const MAX_SENT: usize = 1_000_000;
/// Longest share kept when read (bytes).
pub const MAX_VALUE: usize = 32 << 20;

/// The key layout and lifetimes of the report exchange.
#[derive(Debug, Clone)]
pub struct ReportKeys {
    /// The cluster handle.
    pub cluster: Cluster,
    /// Life of a period's data and sent pairs, milliseconds.
    pub keep_ms: u64,
    /// Life of a period's lease, milliseconds.
    pub lease_ms: u64,
}

/// What a period holds in Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodData {
    /// Nodes alive now (their heartbeat stands).
    pub live: BTreeSet<String>,
    /// Node → its share.
    pub shares: BTreeMap<String, String>,
    /// Node → domains reported with its data.
    pub sent: BTreeMap<String, BTreeSet<String>>,
}

impl ReportKeys {
    fn key(&self, begin: u64, rest: &str) -> String {
        self.cluster.key(&format!("{{dmarc:{begin}}}:{rest}"))
    }

    /// Stores this node's share of the period (one pipelined call).
    pub async fn publish(&self, begin: u64, share: &str) -> Result<(), ClusterError> {
        let data = self.key(begin, "data");
        let mut pipe = redis::pipe();
        pipe.hset(&data, self.cluster.node(), share)
            .ignore()
            .pexpire(&data, self.keep_ms as i64)
            .ignore();
        self.cluster.pipeline::<()>(&pipe).await
    }

    /// Takes the period's lease, or confirms this node holds it.
    pub async fn claim(&self, begin: u64) -> Result<bool, ClusterError> {
        let lease = self.key(begin, "lease");
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&lease)
            .arg(self.cluster.node())
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ms)
            .ignore()
            .get(&lease);
        let (holder,): (Option<String>,) = self.cluster.pipeline(&pipe).await?;
        Ok(holder.as_deref() == Some(self.cluster.node()))
    }

    /// Every share, the live nodes and the sent pairs of the period.
    pub async fn collect(&self, begin: u64) -> Result<PeriodData, ClusterError> {
        let (data, sent) = (self.key(begin, "data"), self.key(begin, "sent"));
        let mut pipe = redis::pipe();
        pipe.hlen(&data).scard(&sent);
        let (fields, pairs): (usize, usize) = self.cluster.pipeline(&pipe).await?;
        if fields > MAX_FIELDS || pairs > MAX_SENT {
            return Err(ClusterError::Reply(format!(
                "{data}: {fields} shares, {pairs} sent pairs: too many"
            )));
        }
        let mut pipe = redis::pipe();
        pipe.hgetall(&data).smembers(&sent);
        let (shares, members): (BTreeMap<String, String>, Vec<String>) =
            self.cluster.pipeline(&pipe).await?;
        let live = membership::nodes(&self.cluster)
            .await?
            .into_iter()
            .filter(|n| n.alive)
            .map(|n| n.name)
            .collect();
        Ok(PeriodData {
            live,
            shares: shares
                .into_iter()
                .filter(|(n, v)| crate::config::valid_node_name(n) && v.len() <= MAX_VALUE)
                .collect(),
            sent: split_pairs(&members),
        })
    }

    /// Records reported `(node, domain)` pairs (one pipelined call).
    pub async fn mark_sent(
        &self,
        begin: u64,
        pairs: &[(String, String)],
    ) -> Result<(), ClusterError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let sent = self.key(begin, "sent");
        let mut pipe = redis::pipe();
        let members: Vec<String> = pairs.iter().map(|(n, d)| format!("{n}\n{d}")).collect();
        pipe.sadd(&sent, members)
            .ignore()
            .pexpire(&sent, self.keep_ms as i64)
            .ignore();
        self.cluster.pipeline::<()>(&pipe).await
    }

    /// The domains reported with this node's data.
    pub async fn sent(&self, begin: u64) -> Result<BTreeSet<String>, ClusterError> {
        let sent = self.key(begin, "sent");
        let pairs: usize = self.cluster.query(redis::cmd("SCARD").arg(&sent)).await?;
        if pairs > MAX_SENT {
            return Err(ClusterError::Reply(format!("{sent}: too many members")));
        }
        let members: Vec<String> = self
            .cluster
            .query(redis::cmd("SMEMBERS").arg(&sent))
            .await?;
        Ok(split_pairs(&members)
            .remove(self.cluster.node())
            .unwrap_or_default())
    }
}

/// `<node>\n<domain>` members by node (others ignored).
fn split_pairs(members: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in members {
        if let Some((node, domain)) = m.split_once('\n')
            && crate::config::valid_node_name(node)
            && !domain.is_empty()
            && domain.len() <= 255
        {
            out.entry(node.to_owned())
                .or_default()
                .insert(domain.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_pairs_are_split_by_node_and_garbage_ignored() {
        let m = split_pairs(&[
            "n1\nexample.org".into(),
            "n2\nexample.org".into(),
            "n1\nother.test".into(),
            "no-newline".into(),
            "n1\n".into(),
            "Bad Node\nx.test".into(),
        ]);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("n1").map(BTreeSet::len), Some(2));
        assert_eq!(m.get("n2").map(BTreeSet::len), Some(1));
    }
}
