// A stand-in for Tern's admin API that answers exactly the contract of docs/ADMIN.md
// (queue, destinations, overview, status), with hostile data in it, and serves the
// viewer's files from crates/tern-admin/web with the same Content-Security-Policy as
// Tern. viewer-test.js drives the viewer against it (`--mock`) to prove the viewer
// against the contract independently of which endpoints a server build has; the real
// server is driven the same way by the Rust scenario web_viewer_in_a_real_browser.
"use strict";

const http = require("node:http");
const fs = require("node:fs");
const path = require("node:path");

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const HOSTILE = '<img src=x onerror="window.__pwned=1">';

function start(webDir, token) {
  const now = Date.now();
  const msgs = [];
  const add = (id, state, sender, rcpt, dest, subject, attempts, err) => msgs.push({
    id, state, sender, recipients: [rcpt], size: 1234 + msgs.length, arrival_unix_ms: now - (msgs.length + 1) * 61000,
    attempts, last_error: err, next_attempt_unix_ms: state === "deferred" ? now + 600000 : null,
    destinations: [dest], subject,
  });
  add("0000MOCKDEF01", "deferred", "a@client.test", "r1@down.test", "down.test", "deferred one", 1, "connection refused");
  add("0000MOCKDEF02", "deferred", "b@client.test", "r2@down.test", "down.test", "deferred two", 2, "connection refused");
  add("0000MOCKEVIL1", "deferred", '"' + HOSTILE + '"@evil.test', "x@down.test", "down.test", HOSTILE, 1, HOSTILE);
  add("0000MOCKHLD01", "hold", "c@client.test", "h1@held.test", "held.test", "held one", 0, null);
  add("0000MOCKHLD02", "hold", "d@client.test", "h2@held.test", "held.test", "held two", 0, null);

  const files = {
    "/": ["index.html", "text/html; charset=utf-8"],
    "/index.html": ["index.html", "text/html; charset=utf-8"],
    "/viewer.js": ["viewer.js", "text/javascript; charset=utf-8"],
    "/viewer.css": ["viewer.css", "text/css; charset=utf-8"],
  };
  const json = (res, status, body) => {
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
  };
  const err = (res, status, code, message) => json(res, status, { error: { code, message } });
  const summary = (m) => {
    const { subject, ...rest } = m;
    return Object.assign({}, rest, { age_secs: Math.floor((Date.now() - m.arrival_unix_ms) / 1000) });
  };
  const matches = (m, q) => {
    const has = (hay, k) => !q.get(k) || String(hay).toLowerCase().includes(q.get(k).toLowerCase());
    return (!q.get("state") || m.state === q.get("state")) && has(m.sender, "sender") &&
      has(m.recipients.join(" "), "recipient") && has(m.destinations.join(" "), "destination") &&
      has(m.last_error || "", "error") && (!q.get("min_attempts") || m.attempts >= Number(q.get("min_attempts")));
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://mock");
    const p = url.pathname;
    if (!p.startsWith("/api/")) {
      const f = files[p];
      if (!f) { res.writeHead(404); res.end("not found\n"); return; }
      res.writeHead(200, { "Content-Type": f[1], "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff" });
      res.end(fs.readFileSync(path.join(webDir, f[0])));
      return;
    }
    if (req.headers.authorization !== "Bearer " + token) { err(res, 401, "unauthorized", "a valid bearer token is required"); return; }
    let body = "";
    req.on("data", (c) => { body += c; if (body.length > 65536) req.destroy(); });
    req.on("end", () => {
      const v1 = p.slice("/api/v1".length);
      if (v1 === "/status") {
        json(res, 200, { version: "mock", pid: process.pid, uptime_secs: 42, listeners_up: true, delivery: true, workers: {
          format: 1, pid: process.pid, started_unix_ms: now, written_unix_ms: now, tick_ms: 1000, stall_after_ms: 60000,
          workers: [{ id: 1, name: "queue.scheduler", kind: "queue_manager", state: "idle", processed: 7, last_progress_ms: 120, waiting: 0, budget_ms: 0, restarts: 0 },
            { id: 2, name: "listener.smtp", kind: "listener", state: "busy", processed: 5, last_progress_ms: 10, waiting: 0, budget_ms: 0, restarts: 0 }],
          totals: [], stalls: [] } });
      } else if (v1 === "/overview") {
        const states = { incoming: 0, active: 0, deferred: 0, hold: 0, poison: 0, corrupt: 0 };
        for (const m of msgs) states[m.state] += 1;
        const samples = [];
        for (let i = 0; i < 60; i++) samples.push({ at_unix_ms: now - (60 - i) * 10000, received: i % 7, delivered: (i * 3) % 5, queued: 3 + (i % 4) });
        json(res, 200, { states, totals: { received: 40, delivered: 33, deferred: 6, bounced: 1, poisoned: 0, quarantined: 0, rejected: 2 },
          history: { interval_secs: 10, samples } });
      } else if (v1 === "/destinations") {
        json(res, 200, { destinations: [
          { name: "down.test", queued: msgs.filter((m) => m.destinations[0] === "down.test").length, state: "down", down_until_unix_ms: now + 300000, in_use: 0, limit: 20, last_error: "connection refused " + HOSTILE },
          { name: "held.test", queued: 2, state: "active", down_until_unix_ms: null, in_use: 0, limit: 20, last_error: null }] });
      } else if (v1 === "/queue") {
        const limit = Math.min(1000, Number(url.searchParams.get("limit") || 100));
        const offset = Number(url.searchParams.get("offset") || 0);
        const all = msgs.filter((m) => matches(m, url.searchParams));
        json(res, 200, { total: all.length, offset, limit, messages: all.slice(offset, offset + limit).map(summary) });
      } else if (/^\/queue\/[^/]+(\/[a-z]+)?$/.test(v1)) {
        const [, , id, action] = v1.split("/");
        const m = msgs.find((x) => x.id === id);
        if (!m) { err(res, 404, "not_found", "no message " + id + " in the queue"); return; }
        if (!action) {
          json(res, 200, Object.assign(summary(m), { path: "/var/lib/tern/spool/" + m.state + "/" + m.id,
            envelope: { sender: m.sender, recipients: m.recipients },
            recipient_status: m.recipients.map((a) => ({ address: a, status: m.state === "hold" ? "pending" : "deferred", attempts: m.attempts, last_reply: m.last_error,
              history: m.attempts ? [{ at_unix_ms: now - 30000, result: "deferred", remote: "127.0.0.1:9", reply: m.last_error }] : [] })),
            headers: [["From", m.sender], ["To", m.recipients[0]], ["Subject", m.subject]] }));
        } else if (action === "raw" && req.method === "GET") {
          res.writeHead(200, { "Content-Type": "message/rfc822" });
          res.end("From: " + m.sender + "\r\nSubject: " + m.subject + "\r\n\r\nbody\r\n");
        } else if (req.method === "POST") {
          const allowed = { hold: ["deferred", "incoming"], release: ["hold", "poison"], retry: ["deferred"], delete: null, bounce: null, resubmit: ["poison"] };
          if (!(action in allowed)) { err(res, 404, "not_found", "no action " + action); return; }
          if (allowed[action] && !allowed[action].includes(m.state)) { err(res, 409, "conflict", action + " does not apply to a message in " + m.state); return; }
          if (action === "hold") m.state = "hold";
          if (action === "release" || action === "resubmit") m.state = "deferred";
          if (action === "delete" || action === "bounce") msgs.splice(msgs.indexOf(m), 1);
          json(res, 200, { id, action, result: action === "delete" ? "deleted" : "now " + m.state });
        } else {
          err(res, 404, "not_found", "no endpoint " + p);
        }
      } else {
        err(res, 404, "not_found", "no endpoint " + p);
      }
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    resolve({
      server,
      base: "http://127.0.0.1:" + server.address().port,
      expect: {
        deferred: ["0000MOCKDEF01", "0000MOCKDEF02", "0000MOCKEVIL1"],
        held: ["0000MOCKHLD01", "0000MOCKHLD02"],
        hostile: "0000MOCKEVIL1",
        hostile_subject: HOSTILE,
        destination: "down.test",
      },
    });
  }));
}

module.exports = { start, CSP, HOSTILE };
