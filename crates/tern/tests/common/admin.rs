//! A client of a test server's admin listener: finds it the way the CLI does (the
//! address in `<data_dir>/admin.addr`, the token in `<data_dir>/admin.token`) and speaks
//! HTTP with ureq. Answers of every status are returned, not turned into errors, so a
//! test can check a 401 or a 404 as easily as a 200.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Tern;

/// How long a test waits for the server to write `admin.addr`.
const ADMIN_DEADLINE: Duration = Duration::from_secs(20);

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body as text.
    pub body: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
}

impl Answer {
    /// The body parsed as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// The admin listener of one running test server.
pub struct Admin {
    /// `http://<addr>`.
    pub base: String,
    /// The bearer token.
    pub token: String,
    agent: ureq::Agent,
}

impl Admin {
    /// Waits (bounded) for the server's `admin.addr`, then reads its token.
    pub fn of(tern: &Tern) -> Admin {
        let file = tern.data_dir.join("admin.addr");
        let deadline = Instant::now() + ADMIN_DEADLINE;
        let addr: SocketAddr = loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(a) = text.trim().parse()
            {
                break a;
            }
            assert!(
                Instant::now() < deadline,
                "the server wrote no {} within {ADMIN_DEADLINE:?}\n--- log ---\n{}",
                file.display(),
                tern.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let token = match std::fs::read_to_string(tern.data_dir.join("admin.token")) {
            Ok(t) => t.trim().to_owned(),
            // A token given in the configuration (`[admin] token`): no file.
            Err(_) => configured_token(&tern.config_text()).expect("admin.token or [admin] token"),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Admin {
            base: format!("http://{addr}"),
            token,
            agent,
        }
    }

    fn answer(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut resp = resp.expect("HTTP request to the admin listener");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.body_mut().read_to_string().expect("read body");
        Answer {
            status,
            body,
            content_type,
        }
    }

    /// `GET path` with the token.
    pub fn get(&self, path: &str) -> Answer {
        Self::answer(
            self.agent
                .get(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {}", self.token))
                .call(),
        )
    }

    /// `GET path` with the given `Authorization` header (`None`: without one).
    pub fn get_with_auth(&self, path: &str, auth: Option<&str>) -> Answer {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        Self::answer(req.call())
    }

    /// `POST path` with the token and a JSON body.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Answer {
        Self::answer(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {}", self.token))
                .send_json(body),
        )
    }

    /// `PUT path` with the token and a JSON body.
    pub fn put(&self, path: &str, body: &serde_json::Value) -> Answer {
        Self::answer(
            self.agent
                .put(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {}", self.token))
                .send_json(body),
        )
    }

    /// `POST path` with a raw body (sent as JSON) and the given `Authorization` header
    /// (`None`: without one).
    pub fn post_raw(&self, path: &str, body: &str, auth: Option<&str>) -> Answer {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        Self::answer(req.send(body))
    }
}

impl Admin {
    /// `POST path` with an empty JSON body and the given `Authorization` header (`None`:
    /// without one).
    pub fn post_with_auth(&self, path: &str, auth: Option<&str>) -> Answer {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        Self::answer(req.send_json(serde_json::json!({})))
    }
}

/// Now as Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `token = "..."` of the `[admin]` section of a configuration text.
fn configured_token(config: &str) -> Option<String> {
    let section = config.split("[admin]").nth(1)?;
    let section = section.split("\n[").next()?;
    section.lines().find_map(|l| {
        let v = l
            .trim()
            .strip_prefix("token")?
            .trim()
            .strip_prefix('=')?
            .trim();
        Some(v.trim_matches('"').to_owned())
    })
}
