//! The `[cluster]` section (docs/CLUSTER.md): whether this node shares its control plane
//! with others, who it is, and where Redis is.
//!
//! Every key has a default, so an absent section means one node on its own; `problems()`
//! checks values and names the dotted key of each problem.

use serde::{Deserialize, Serialize};

/// How Redis is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis server (its first address in `redis`).
    #[default]
    Standalone,
    /// Redis Cluster: `redis` lists seed nodes; keys that must move together share a
    /// hash tag (docs/CLUSTER.md, "Keys").
    Cluster,
    /// Redis Sentinel: `redis` lists the sentinels, `sentinel_master` names the service;
    /// the master is asked of them again at every reconnection.
    Sentinel,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// Share limits, destination state and membership with other nodes through Redis.
    pub enabled: bool,
    /// This node's name in the cluster: unique, `[a-z0-9-]`, 1 to 63 characters. Empty:
    /// the host name's first label, lower-cased.
    pub node_name: String,
    /// This node's number, 1 to 1023, unique in the cluster: it is written into every
    /// queue id this node makes (docs/CLUSTER.md, "Queue ids"), so ids never collide
    /// across nodes and the node is recognisable in them. Required when `enabled`.
    pub node_id: u16,
    /// Redis addresses (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS is
    /// not offered): one for `standalone`, seed nodes for `cluster`, sentinels for
    /// `sentinel`.
    pub redis: Vec<String>,
    /// `standalone`, `cluster` or `sentinel`.
    pub mode: RedisMode,
    /// The Sentinel service name (`mode = "sentinel"`).
    pub sentinel_master: String,
    /// Prefix of every key Tern writes, so that several clusters (or other programs) may
    /// share one Redis.
    pub key_prefix: String,
    /// The longest any Redis operation may take on a path mail waits on, in
    /// milliseconds. Past it the operation counts as failed and the node decides alone
    /// (degraded mode).
    pub op_timeout_ms: u64,
    /// How often this node writes its heartbeat, in milliseconds.
    pub heartbeat_ms: u64,
    /// A node whose heartbeat is older than this is dead (its entry expires, its leases
    /// with it), in milliseconds.
    pub dead_after_ms: u64,
    /// While Redis is unreachable, each node keeps this share of every cluster-wide limit
    /// to itself (0.0 to 1.0; e.g. 0.34 for three nodes). Default: one third.
    pub local_share: f64,
    /// The admin API address other nodes and `--cluster` commands use to reach this
    /// node (`http://host:port`). Empty: `http://` + `[admin] listen`, which must then
    /// not be a wildcard address.
    pub admin_url: String,
    /// Automatic adoption (docs/cluster/adopt.md): where a dead node's spool is
    /// reachable from this node, a path with `{node}` standing for the dead node's name
    /// (e.g. `/srv/tern/{node}/spool`). The node that declares a node dead (event 8004)
    /// adopts its spool there when the directory exists. Empty (the default): off.
    pub adopt_path: String,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            enabled: false,
            node_name: String::new(),
            node_id: 0,
            redis: vec!["redis://127.0.0.1:6379".into()],
            mode: RedisMode::Standalone,
            sentinel_master: String::new(),
            key_prefix: "tern".into(),
            op_timeout_ms: 250,
            heartbeat_ms: 1000,
            dead_after_ms: 10_000,
            local_share: 1.0 / 3.0,
            admin_url: String::new(),
            adopt_path: String::new(),
        }
    }
}

/// One problem in the section, with the dotted key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `cluster.node_id`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn problem(key: &str, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

/// True for a valid node name: 1 to 63 of `a-z`, `0-9`, `-`, not starting with `-`.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl ClusterConfig {
    /// The node name in force: `node_name`, or the host name's first label.
    pub fn effective_node_name(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        let host = gethostname::gethostname().to_string_lossy().to_lowercase();
        let first: String = host
            .split('.')
            .next()
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(63)
            .collect();
        let trimmed = first.trim_start_matches('-');
        if trimmed.is_empty() {
            "node".into()
        } else {
            trimmed.into()
        }
    }

    /// Every problem in the section (none when it is off, but for value ranges).
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if !self.node_name.is_empty() && !valid_node_name(&self.node_name) {
            p.push(problem(
                "cluster.node_name",
                "1 to 63 of a-z, 0-9 and '-', not starting with '-'",
            ));
        }
        if self.node_id > 1023 {
            p.push(problem("cluster.node_id", "must be 1 to 1023"));
        }
        if !(10..=10_000).contains(&self.op_timeout_ms) {
            p.push(problem("cluster.op_timeout_ms", "must be 10 to 10000"));
        }
        if !(100..=60_000).contains(&self.heartbeat_ms) {
            p.push(problem("cluster.heartbeat_ms", "must be 100 to 60000"));
        }
        if self.dead_after_ms < self.heartbeat_ms.saturating_mul(3)
            || self.dead_after_ms > 3_600_000
        {
            p.push(problem(
                "cluster.dead_after_ms",
                "must be at least three heartbeats and at most an hour",
            ));
        }
        if !(self.local_share > 0.0 && self.local_share <= 1.0) {
            p.push(problem(
                "cluster.local_share",
                "must be above 0 and at most 1",
            ));
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 32
            || !self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            p.push(problem(
                "cluster.key_prefix",
                "1 to 32 of letters, digits, '-' and '_'",
            ));
        }
        if !self.adopt_path.is_empty()
            && (!self.adopt_path.starts_with('/')
                || !self.adopt_path.contains("{node}")
                || self.adopt_path.len() > 1024)
        {
            p.push(problem(
                "cluster.adopt_path",
                "an absolute path containing {node} (the dead node's name), or empty",
            ));
        }
        if !self.enabled {
            return p;
        }
        if self.node_id == 0 {
            p.push(problem(
                "cluster.node_id",
                "required with cluster.enabled: a number from 1 to 1023, unique in the cluster",
            ));
        }
        if self.redis.is_empty() {
            p.push(problem("cluster.redis", "at least one address"));
        }
        for (i, url) in self.redis.iter().enumerate() {
            if !url.starts_with("redis://") {
                p.push(problem(
                    &format!("cluster.redis[{i}]"),
                    "must start with redis://",
                ));
            } else if redis::IntoConnectionInfo::into_connection_info(url.as_str()).is_err() {
                p.push(problem(
                    &format!("cluster.redis[{i}]"),
                    "not a Redis address",
                ));
            }
        }
        if self.mode == RedisMode::Sentinel && self.sentinel_master.is_empty() {
            p.push(problem(
                "cluster.sentinel_master",
                "required with mode = \"sentinel\"",
            ));
        }
        let url = &self.admin_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            p.push(problem(
                "cluster.admin_url",
                "must start with http:// or https://",
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_valid() {
        let c = ClusterConfig::default();
        assert!(!c.enabled);
        assert!(c.problems().is_empty());
    }

    #[test]
    fn enabled_needs_a_node_id_and_good_values() {
        let c = ClusterConfig {
            enabled: true,
            node_name: "Bad_Name".into(),
            redis: vec!["http://x".into()],
            mode: RedisMode::Sentinel,
            local_share: 0.0,
            ..ClusterConfig::default()
        };
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "cluster.node_name",
                "cluster.local_share",
                "cluster.node_id",
                "cluster.redis[0]",
                "cluster.sentinel_master"
            ]
        );
        let ok = ClusterConfig {
            enabled: true,
            node_name: "mx-1".into(),
            node_id: 7,
            ..ClusterConfig::default()
        };
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("mx1"));
        assert!(valid_node_name("a-b-3"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("-a"));
        assert!(!valid_node_name("a.b"));
        assert!(!valid_node_name(&"a".repeat(64)));
        let c = ClusterConfig::default();
        assert!(valid_node_name(&c.effective_node_name()));
    }
}
