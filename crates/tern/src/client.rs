//! The CLI's way to a running server: the admin API over HTTP.
//!
//! [`Client::from_config`] finds the server the way an operator expects, with no flags:
//! the address the server wrote to `<data_dir>/admin.addr` when it started (falling back
//! to `admin.listen` from the configuration), and the token from `admin.token` in the
//! configuration or `<data_dir>/admin.token`. Every request has a timeout, so a stuck
//! server never hangs the command. Error answers are turned into their JSON `message`.
//!
//! The token goes only to the server that owns the data directory: the spool lock must be
//! held, and the listener must first prove it knows the token (`/proof`, an HMAC of a
//! fresh nonce). What is left is a window of one command: the server stopping and
//! another program taking its port between the proof and a later request of the same
//! command (docs/SECURITY.md).

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Config;

/// Timeout of one request (bulk actions page their work, so each request is short).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to a running server's admin API.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server answered at the address (none runs, or the admin listener is off).
    #[error("no server answers at {addr}: {reason}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// The transport error.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The stable error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The listener could not prove that it knows the token: it is not this data
    /// directory's Tern. The token was not sent.
    #[error(
        "the listener at {addr} is not this Tern: it could not prove it knows the admin token \
         (a stale admin.addr, or another program on the port); the token was not sent"
    )]
    NotTern {
        /// The address tried.
        addr: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl Client {
    /// Finds the server for `config`, and makes sure it is that server before anything
    /// carries the token:
    /// 1. a process holds the spool lock of the configuration's data directory (no server
    ///    running: nothing is sent anywhere);
    /// 2. the listener at the address answers the proof challenge
    ///    (`tern_admin::auth::proof`): only a server that knows the token can, so another
    ///    user's program on the port (after Tern stopped, or a stale `admin.addr`) never
    ///    sees it.
    pub fn from_config(config: &Config) -> anyhow::Result<Client> {
        let spool = config.spool_dir();
        let holder = tern_spool::Spool::lock_holder(&spool)
            .with_context(|| format!("reading the spool lock in {}", spool.display()))?;
        if holder.is_none() {
            anyhow::bail!(
                "no Tern server runs for {} (its spool lock is free)",
                config.server.data_dir.display()
            );
        }
        let addr = match std::fs::read_to_string(config.admin_addr_path()) {
            Ok(text) => text.trim().to_owned(),
            Err(_) => match config.admin.listen {
                Some(a) => a.to_string(),
                None => anyhow::bail!(
                    "the admin API has no TCP address (admin.listen) and no server wrote {}",
                    config.admin_addr_path().display()
                ),
            },
        };
        let token = if config.admin.token.is_empty() {
            tern_admin::auth::read_token(&config.server.data_dir)?.with_context(|| {
                format!(
                    "no admin token: {} is missing (has the server ever started?)",
                    tern_admin::auth::token_path(&config.server.data_dir).display()
                )
            })?
        } else {
            config.admin.token.clone()
        };
        let client = Client::new(&addr, token);
        client.check_server()?;
        Ok(client)
    }

    /// A client of another cluster node's admin API at `endpoint` (`host:port`, from
    /// its `admin_url` in Redis) with this cluster's token, each request bounded by
    /// `timeout`. The node must prove it knows the token first (the same rule as for
    /// the local server): an `admin_url` written into Redis by someone else never gets
    /// the token.
    pub fn node(endpoint: &str, token: String, timeout: Duration) -> Result<Client, ClientError> {
        let client = Client::with_timeout(endpoint, token, timeout);
        client.check_server()?;
        Ok(client)
    }

    /// The token this client sends (for asking the other nodes of a cluster).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A client of the server at `addr` (`host:port`) with `token`.
    fn new(addr: &str, token: String) -> Client {
        Client::with_timeout(addr, token, REQUEST_TIMEOUT)
    }

    fn with_timeout(addr: &str, token: String, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        Client {
            base: format!("http://{addr}"),
            token,
            agent,
        }
    }

    /// Asks the listener to prove it knows the token (without sending it); an error when
    /// it cannot.
    fn check_server(&self) -> Result<(), ClientError> {
        let nonce = tern_admin::auth::new_nonce();
        let resp = self
            .agent
            .get(format!("{}/proof?nonce={nonce}", self.base))
            .call();
        let body = self.read(resp, 4096)?;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let answer = v["proof"].as_str().unwrap_or_default();
        if tern_admin::auth::verify_proof(&self.token, &nonce, answer) {
            Ok(())
        } else {
            Err(ClientError::NotTern {
                addr: self.base.clone(),
            })
        }
    }

    /// Reads an answer (at most `limit` octets): the body of a 2xx, otherwise the
    /// error the server's JSON `{"error": {"code", "message"}}` names.
    fn read(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let mut resp = resp.map_err(|e| ClientError::Unreachable {
            addr: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !(200..300).contains(&status) {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            return Err(ClientError::Api {
                status,
                code: v["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
                message: v["error"]["message"].as_str().map_or_else(
                    || String::from_utf8_lossy(&body).trim().to_owned(),
                    str::to_owned,
                ),
            });
        }
        Ok(body)
    }

    /// A JSON answer, parsed.
    fn finish<T: DeserializeOwned>(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let body = self.read(resp, 64 * 1024 * 1024)?;
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::Protocol(format!("{e}: {:.200}", String::from_utf8_lossy(&body)))
        })
    }

    /// A request for `path` (under the server's root) with the token.
    fn authed<S>(
        &self,
        make: impl FnOnce(String) -> ureq::RequestBuilder<S>,
        path: &str,
    ) -> ureq::RequestBuilder<S> {
        make(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
    }

    /// `GET path` (under the server's root, e.g. `/api/v1/status`), JSON answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.finish(self.authed(|u| self.agent.get(u), path).call())
    }

    /// `GET path`, the raw body (an exported message: at most 1 GiB).
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.read(
            self.authed(|u| self.agent.get(u), path).call(),
            1024 * 1024 * 1024,
        )
    }

    /// `POST path` with a JSON body, JSON answer.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.finish(self.authed(|u| self.agent.post(u), path).send_json(body))
    }

    /// `DELETE path`, JSON answer.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.finish(self.authed(|u| self.agent.delete(u), path).call())
    }

    /// `PUT path` with a JSON body, JSON answer.
    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.finish(self.authed(|u| self.agent.put(u), path).send_json(body))
    }
}
