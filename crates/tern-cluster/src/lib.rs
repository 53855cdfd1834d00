//! Several Tern nodes as one service: the shared control plane (docs/CLUSTER.md).
//!
//! The data plane stays on each node: it receives into its own durable spool and
//! delivers from it. What nodes share goes through Redis (standalone, Sentinel or Redis
//! Cluster), never through a replication layer of Tern's own:
//! - membership and health ([`membership`]): heartbeats, the list of nodes, the notice of
//!   a dead one;
//! - rate limits ([`limits`]: the GCRA of `tern-limits` as one Lua script per session
//!   step), AUTH failure counts and lockouts ([`auth`]), destination connection leases
//!   ([`leases`]), each with this node's `local_share` as its fall-back;
//! - destination state (built on [`Cluster`] by the crates that own it).
//!
//! Invariants:
//! - Mail never waits on Redis beyond `cluster.op_timeout_ms`: every operation is bounded
//!   and fails at once while no connection is up ([`ClusterError::Unavailable`]); callers
//!   then decide locally with `cluster.local_share` of each cluster-wide limit.
//! - One event per change of health (8002 degraded, 8003 recovered); reconnection is
//!   automatic (`client.rs`).
//! - Everything read back from Redis is bounded and validated before use: another node,
//!   or anyone who can write to Redis, is a peer.

#![forbid(unsafe_code)]

pub mod auth;
mod client;
pub mod config;
pub mod destinations;
pub mod leases;
pub mod limits;
pub mod membership;
pub mod reports;
pub mod screening;

pub use client::{Cluster, ClusterError, Health, HealthState};
pub use config::{ClusterConfig, RedisMode};
