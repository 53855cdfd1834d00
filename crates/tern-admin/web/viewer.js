// Tern's web queue viewer (docs/ADMIN.md, "Web queue viewer").
//
// Plain JavaScript, no build step, no external resource: the server embeds this file.
// It speaks only the JSON API under /api/v1 with the bearer token the operator pastes
// (kept in sessionStorage, so it dies with the tab). A 401 forgets the token and asks
// again; a 404 from an endpoint this server does not have shows "not available".
//
// On a cluster node (GET /api/v1/cluster answers), a node selector in the header picks
// the node shown: every call then goes through this server's proxy,
// /api/v1/cluster/nodes/<name>/..., so the page talks to one origin with one token and
// can see and act on any node. The choice is kept in sessionStorage like the token.
//
// Every value from the server (addresses, headers, errors: hostile input) reaches the
// page through textContent or attributes set with setAttribute on elements built here,
// never parsed as markup. The Content-Security-Policy forbids inline scripts anyway.
"use strict";

(function () {
  const TOKEN_KEY = "tern.admin.token";
  const NODE_KEY = "tern.admin.node";
  const STATES = ["incoming", "active", "deferred", "hold", "poison", "corrupt"];
  const TOTALS = ["received", "delivered", "deferred", "bounced", "poisoned", "quarantined", "rejected"];
  const FILTERS = ["state", "destination", "sender", "recipient", "min_age_secs", "max_age_secs", "min_attempts", "error"];
  const REFRESH_MS = 10000;
  const RAW_SHOWN = 1 << 20;

  const $ = (id) => document.getElementById(id);
  let refreshTimer = null;

  class NotAvailable extends Error {}
  class Unauthorized extends Error {}

  // ---- DOM helpers: text only -------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function notAvailable(what) {
    return el("p", { class: "na" }, (what ? what + ": " : "") + "not available on this server");
  }

  function table(headers, rows, numeric) {
    const head = el("tr", {}, ...headers.map((h, i) => el("th", { class: numeric && numeric[i] ? "num" : null }, h)));
    const body = rows.map((cells) =>
      el("tr", {}, ...cells.map((c, i) => el("td", { class: numeric && numeric[i] ? "num" : null }, c))));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
  }

  function stateBadge(s) {
    const safe = /^[a-z_]+$/.test(String(s)) ? String(s) : "other";
    return el("span", { class: "state " + safe }, String(s));
  }

  function fmtAge(secs) {
    if (typeof secs !== "number" || !isFinite(secs)) return "";
    if (secs < 60) return Math.floor(secs) + "s";
    if (secs < 3600) return Math.floor(secs / 60) + "m";
    if (secs < 86400) return Math.floor(secs / 3600) + "h" + String(Math.floor((secs % 3600) / 60)).padStart(2, "0");
    return Math.floor(secs / 86400) + "d" + Math.floor((secs % 86400) / 3600) + "h";
  }

  function fmtTime(ms) {
    if (typeof ms !== "number") return "";
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function fmtSize(n) {
    if (typeof n !== "number") return "";
    if (n < 1024) return n + " B";
    if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
    return (n / (1 << 20)).toFixed(1) + " MiB";
  }

  function flash(msg) {
    const f = $("flash");
    f.textContent = msg || "";
    f.hidden = !msg;
  }

  // ---- API --------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  // The node shown ("" for this one).
  function node() {
    return sessionStorage.getItem(NODE_KEY) || "";
  }

  async function api(path, opts) {
    const t = token();
    if (!t) throw new Unauthorized("no token");
    const init = Object.assign({ headers: {} }, opts || {});
    const via = node() && !init.local ? "/cluster/nodes/" + encodeURIComponent(node()) : "";
    delete init.local;
    init.headers = Object.assign({ Authorization: "Bearer " + t }, init.headers);
    if (init.json !== undefined) {
      init.method = init.method || "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(init.json);
      delete init.json;
    }
    const resp = await fetch("/api/v1" + via + path, init);
    if (resp.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("The server refused the token; paste it again.");
      throw new Unauthorized("401");
    }
    if (resp.status === 404 && !init.expectNotFound) {
      let body = null;
      try { body = await resp.json(); } catch (_) { /* not JSON */ }
      const msg = body && body.error && body.error.message ? body.error.message : "not found";
      const e = new NotAvailable(msg);
      e.status = 404;
      throw e;
    }
    if (init.raw) return resp;
    let body = null;
    try { body = await resp.json(); } catch (_) { /* not JSON */ }
    if (!resp.ok) {
      const msg = body && body.error ? body.error.code + ": " + body.error.message : "HTTP " + resp.status;
      const e = new Error(msg);
      e.status = resp.status;
      throw e;
    }
    return body;
  }

  // ---- Login ------------------------------------------------------------------------

  function showOnly(id) {
    for (const s of ["login", "page-overview", "page-queue", "page-message"]) $(s).hidden = s !== id;
  }

  function showLogin(message) {
    stopRefresh();
    showOnly("login");
    $("signout").hidden = true;
    $("server").textContent = "";
    $("login-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  async function login(ev) {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    try {
      await api("/status", { local: true });
    } catch (e) {
      if (!(e instanceof Unauthorized)) showLogin("Cannot reach the server: " + e.message);
      return;
    }
    route();
  }

  // ---- Cluster ----------------------------------------------------------------------

  const COUNTED = ["incoming", "active", "deferred", "hold", "poison", "corrupt"];

  function pickNode(name) {
    if (name) sessionStorage.setItem(NODE_KEY, name); else sessionStorage.removeItem(NODE_KEY);
    route();
  }

  // Fills the node selector and the overview's cluster table from this server's
  // /cluster; hides both on a node alone (409) or when it cannot be read.
  async function loadCluster() {
    let c;
    try {
      c = await api("/cluster", { local: true });
    } catch (e) {
      if (e instanceof Unauthorized) throw e;
      sessionStorage.removeItem(NODE_KEY);
      $("node-pick").hidden = true;
      $("cluster-section").hidden = true;
      return;
    }
    const nodes = Array.isArray(c.nodes) ? c.nodes.filter((n) => n && typeof n.name === "string") : [];
    const sel = clear($("node"));
    sel.append(el("option", { value: "" }, "this node (" + String(c.node) + ")"));
    for (const n of nodes) {
      if (n.name === c.node) continue;
      sel.append(el("option", { value: n.name, disabled: n.alive ? null : "disabled" }, n.name + (n.alive ? "" : " (dead)")));
    }
    const wanted = node();
    if (wanted && !nodes.some((n) => n.name === wanted && n.alive)) {
      sessionStorage.removeItem(NODE_KEY);
      flash("Node " + wanted + " is no longer alive: showing this node.");
    }
    sel.value = node();
    $("node-pick").hidden = false;
    const h = c.health || {};
    $("cluster-health").textContent = "This node: " + String(c.node) + " (id " + String(c.node_id) + "), Redis " +
      String(h.state || "?") + (c.error ? " · node list: " + String(c.error) : "") + ".";
    const now = Date.now();
    const rows = nodes.map((n) => {
      const r = n.report && typeof n.report === "object" ? n.report : {};
      const show = el("button", { type: "button", class: "secondary", "data-node": n.name, disabled: n.alive ? null : "disabled" },
        "Show");
      show.addEventListener("click", () => pickNode(n.name === c.node ? "" : n.name));
      return [el("code", {}, n.name), n.id, stateBadge(n.alive ? "alive" : "dead"), String(n.version || ""),
        typeof n.seen_ms === "number" && n.seen_ms > 0 ? fmtAge(Math.max(0, (now - n.seen_ms) / 1000)) + " ago" : "",
        ...COUNTED.map((k) => (typeof r[k] === "number" ? r[k] : "")), show];
    });
    const t = table(["Node", "Id", "State", "Version", "Last heartbeat", ...COUNTED, ""], rows,
      [false, true, false, false, true, true, true, true, true, true, true, false]);
    t.id = "cluster-table";
    clear($("cluster-nodes")).append(t);
    $("cluster-section").hidden = false;
  }

  // ---- Overview ---------------------------------------------------------------------

  async function section(node, what, load, render) {
    try {
      const data = await load();
      clear(node).append(render(data));
    } catch (e) {
      if (e instanceof Unauthorized) throw e;
      clear(node).append(e instanceof NotAvailable ? notAvailable(what) : el("p", { class: "error" }, what + ": " + e.message));
    }
  }

  function card(label, value, id, bad) {
    return el("div", { class: "card" + (bad ? " bad" : ""), id: id },
      el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  }

  async function overview() {
    showOnly("page-overview");
    const status = section($("workers"), "Workers", () => api("/status"), renderWorkers);
    const ov = section($("states"), "Queue states", () => api("/overview"), (o) => {
      const frag = document.createDocumentFragment();
      for (const s of STATES) {
        const n = o.states && typeof o.states[s] === "number" ? o.states[s] : 0;
        const c = card(s, n, "state-" + s, (s === "poison" || s === "corrupt") && n > 0);
        const link = el("a", { href: "#/queue?state=" + s, class: "cardlink" }, c);
        frag.append(link);
      }
      renderTotals(o.totals || {});
      renderCharts((o.history && o.history.samples) || [], (o.history && o.history.interval_secs) || 10);
      return frag;
    }).then(() => {
      if ($("states").querySelector(".na")) {
        clear($("totals")).append(notAvailable("Counters"));
        clear($("chart-throughput")).append(notAvailable("History"));
        clear($("chart-queue")).append(notAvailable("History"));
      }
    });
    const dests = section($("destinations"), "Destinations", () => api("/destinations"), renderDestinations);
    await Promise.all([status, ov, dests]);
  }

  function renderTotals(t) {
    const node = clear($("totals"));
    for (const k of TOTALS) node.append(card(k, typeof t[k] === "number" ? t[k] : 0, "total-" + k));
  }

  function renderWorkers(s) {
    $("server").textContent = (node() ? "Node " + node() + " · " : "") + "Tern " + s.version + " · pid " + s.pid + " · up " + fmtAge(s.uptime_secs);
    const frag = document.createDocumentFragment();
    frag.append(el("p", {}, "Listeners ", s.listeners_up ? "up" : "down", ", delivery ", s.delivery ? "on" : "off", "."));
    const snap = s.workers;
    if (!snap || !Array.isArray(snap.workers)) {
      frag.append(el("p", { class: "na" }, "The watchdog is off: no worker health."));
      return frag;
    }
    const rows = snap.workers.map((w) => [
      el("code", {}, w.name), w.kind, stateBadge(w.state), w.processed, w.waiting,
      ((w.last_progress_ms || 0) / 1000).toFixed(1) + " s", w.restarts]);
    frag.append(table(["Worker", "Kind", "State", "Processed", "Waiting", "Last progress", "Restarts"], rows,
      [false, false, false, true, true, true, true]));
    const stalls = Array.isArray(snap.stalls) ? snap.stalls.slice(-5) : [];
    if (stalls.length) {
      frag.append(el("h3", {}, "Recent stalls"));
      frag.append(table(["Worker", "At", "Waited", "Restarted", "Outcome"], stalls.map((r) =>
        [r.worker, fmtTime(r.stalled_at_unix_ms), (r.waited_ms / 1000).toFixed(1) + " s", r.restarted ? "yes" : "no", r.outcome])));
    }
    return frag;
  }

  function renderDestinations(d) {
    const list = (d.destinations || []).filter((x) => x.queued > 0 || x.state !== "active").slice(0, 10);
    if (!list.length) return el("p", { class: "muted" }, "No destination has mail waiting.");
    // The list's destination filter matches recipient domains: only an `mx:<domain>` next
    // hop (or a bare domain) names one; a route's next hop (`smtp:[relay]:25`) is not linked.
    const domainOf = (name) => {
      const m = /^(?:mx:)?([A-Za-z0-9.-]+)$/.exec(String(name));
      return m ? m[1] : null;
    };
    const rows = list.map((x) => [
      domainOf(x.name) ? el("a", { href: "#/queue?destination=" + encodeURIComponent(domainOf(x.name)) }, x.name) : el("span", {}, x.name),
      x.queued, stateBadge(x.state),
      x.down_until_unix_ms ? fmtTime(x.down_until_unix_ms) : "",
      String(x.in_use) + " / " + String(x.limit),
      x.tls ? el("span", { title: (x.tls.hosts || []).map((h) => h.host + ": " + h.policy + ", " + h.reason).join("\n") }, x.tls.summary) : "",
      el("span", { class: "wrap" }, x.last_error || "")]);
    return table(["Destination", "Queued", "State", "Down until", "Connections", "TLS", "Last error"], rows,
      [false, true, false, false, true, false, false]);
  }

  // Draws lines of `series` ([{name, values}]) over the same x steps into `node` as SVG.
  function lineChart(node, series, intervalSecs) {
    clear(node);
    const NS = "http://www.w3.org/2000/svg";
    const W = 600, H = 180, L = 40, B = 20, T = 8, R = 8;
    const n = Math.max(0, ...series.map((s) => s.values.length));
    const max = Math.max(1, ...series.flatMap((s) => s.values.filter((v) => typeof v === "number")));
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const mk = (tag, attrs) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
      return e;
    };
    const x = (i) => L + (n <= 1 ? 0 : (i * (W - L - R)) / (n - 1));
    const y = (v) => H - B - (v * (H - B - T)) / max;
    svg.append(mk("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    svg.append(mk("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    const top = mk("text", { x: 2, y: T + 8 });
    top.textContent = String(max);
    const zero = mk("text", { x: 2, y: H - B });
    zero.textContent = "0";
    const span = mk("text", { x: L, y: H - 4 });
    span.textContent = "-" + fmtAge(n * intervalSecs);
    const now = mk("text", { x: W - R - 20, y: H - 4 });
    now.textContent = "now";
    svg.append(top, zero, span, now);
    const colors = ["#1f6feb", "#1a7f37", "#9a6700"];
    series.forEach((s, k) => {
      const pts = s.values.map((v, i) => x(i).toFixed(1) + "," + y(typeof v === "number" ? v : 0).toFixed(1));
      if (pts.length === 1) pts.push((W - R) + "," + y(s.values[0] || 0).toFixed(1));
      svg.append(mk("polyline", { points: pts.join(" "), fill: "none", stroke: colors[k % 3], "stroke-width": 2 }));
    });
    node.append(svg);
    const legend = el("div", { class: "legend" });
    series.forEach((s, k) => legend.append(el("span", { class: "swatch s" + (k % 3) }), s.name));
    node.append(legend);
    if (!n) node.append(el("p", { class: "muted" }, "No samples yet."));
  }

  function renderCharts(samples, intervalSecs) {
    const ok = samples.filter((s) => s && typeof s === "object");
    lineChart($("chart-throughput"), [
      { name: "received", values: ok.map((s) => s.received) },
      { name: "delivered", values: ok.map((s) => s.delivered) },
    ], intervalSecs);
    lineChart($("chart-queue"), [{ name: "queued", values: ok.map((s) => s.queued) }], intervalSecs);
  }

  // ---- Message list -----------------------------------------------------------------

  function queryOf(hash) {
    const i = hash.indexOf("?");
    return new URLSearchParams(i < 0 ? "" : hash.slice(i + 1));
  }

  async function queueList(params) {
    showOnly("page-queue");
    const form = $("filters");
    for (const k of FILTERS) form.elements[k].value = params.get(k) || "";
    const limit = params.get("limit") || "100";
    form.elements.limit.value = limit;
    const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
    const q = new URLSearchParams();
    for (const k of FILTERS) if (params.get(k)) q.set(k, params.get(k));
    q.set("limit", limit);
    q.set("offset", String(offset));
    const node = $("queue-table");
    $("queue-info").textContent = "Loading…";
    try {
      const r = await api("/queue?" + q.toString());
      const msgs = r.messages || [];
      $("queue-info").textContent = r.total === 0 ? "No message matches." :
        "Messages " + (r.offset + 1) + "–" + (r.offset + msgs.length) + " of " + r.total + ", oldest first.";
      const rows = msgs.map((m) => [
        el("a", { href: "#/message/" + encodeURIComponent(m.id), class: "mono msg-link" }, m.id),
        stateBadge(m.state), el("span", { class: "wrap" }, m.sender === "" ? "<>" : m.sender),
        el("span", { class: "wrap" }, (m.recipients || []).join(", ")),
        fmtSize(m.size), fmtAge(m.age_secs), m.attempts,
        el("span", { class: "wrap" }, m.last_error || ""),
        m.next_attempt_unix_ms ? fmtTime(m.next_attempt_unix_ms) : ""]);
      const t = table(["Queue id", "State", "Sender", "Recipients", "Size", "Age", "Attempts", "Last error", "Next attempt"],
        rows, [false, false, false, false, true, true, true, false, false]);
      t.id = "messages";
      msgs.forEach((m, i) => t.tBodies[0].rows[i].setAttribute("data-id", String(m.id)));
      clear(node).append(t);
      const lim = parseInt(limit, 10) || 100;
      $("prev").disabled = offset === 0;
      $("next").disabled = offset + msgs.length >= r.total;
      $("prev").onclick = () => go(params, Math.max(0, offset - lim));
      $("next").onclick = () => go(params, offset + lim);
    } catch (e) {
      if (e instanceof Unauthorized) return;
      $("queue-info").textContent = "";
      $("prev").disabled = $("next").disabled = true;
      clear(node).append(e instanceof NotAvailable ? notAvailable("The queue list") : el("p", { class: "error" }, e.message));
    }
  }

  function go(params, offset) {
    const p = new URLSearchParams(params);
    p.set("offset", String(offset));
    location.hash = "#/queue?" + p.toString();
  }

  function applyFilters(ev) {
    ev.preventDefault();
    const form = $("filters");
    const p = new URLSearchParams();
    for (const k of FILTERS) {
      const v = form.elements[k].value.trim();
      if (v) p.set(k, v);
    }
    p.set("limit", form.elements.limit.value);
    const next = "#/queue?" + p.toString();
    if (location.hash === next) route(); else location.hash = next;
  }

  // ---- One message ------------------------------------------------------------------

  function dl(pairs) {
    const d = el("dl");
    for (const [k, v] of pairs) d.append(el("dt", {}, k), el("dd", {}, v));
    return d;
  }

  async function message(id) {
    showOnly("page-message");
    $("msg-id").textContent = id;
    $("raw").hidden = true;
    const body = clear($("msg-body"));
    for (const b of $("msg-actions").querySelectorAll("button")) b.disabled = true;
    let m;
    try {
      m = await api("/queue/" + encodeURIComponent(id));
    } catch (e) {
      if (e instanceof Unauthorized) return;
      if (e instanceof NotAvailable) {
        body.append(el("p", { class: "na" }, e.message.startsWith("no endpoint") ? "Message details: not available on this server" :
          "This message is no longer in the queue."));
      } else {
        body.append(el("p", { class: "error" }, e.message));
      }
      return;
    }
    for (const b of $("msg-actions").querySelectorAll("button")) b.disabled = false;
    body.append(dl([
      ["State", stateBadge(m.state)],
      ["Sender", m.sender === "" ? "<>" : m.sender],
      ["Recipients", (m.recipients || []).join(", ")],
      ["Size", fmtSize(m.size)],
      ["Arrived", fmtTime(m.arrival_unix_ms) + " (" + fmtAge(m.age_secs) + " ago)"],
      ["Attempts", m.attempts],
      ["Last error", m.last_error || ""],
      ["Next attempt", m.next_attempt_unix_ms ? fmtTime(m.next_attempt_unix_ms) : ""],
      ["Destinations", (m.destinations || []).join(", ")],
      ["Stored at", el("code", {}, m.path || "")],
    ]));
    body.append(el("h2", {}, "Recipients"));
    const rs = m.recipient_status || [];
    const rows = [];
    for (const r of rs) {
      rows.push([r.address, stateBadge(r.status), r.attempts, el("span", { class: "wrap" }, r.last_reply || "")]);
    }
    body.append(table(["Recipient", "Status", "Attempts", "Last reply"], rows, [false, false, true, false]));
    const hist = [];
    for (const r of rs) for (const h of r.history || []) hist.push([fmtTime(h.at_unix_ms), r.address, h.result, h.remote || "", el("span", { class: "wrap" }, h.reply || "")]);
    if (hist.length) {
      body.append(el("h2", {}, "Attempts"));
      body.append(table(["At", "Recipient", "Result", "Remote", "Reply"], hist));
    }
    body.append(el("h2", {}, "Headers"));
    const headers = (m.headers || []).filter((h) => Array.isArray(h)).map((h) => [el("code", {}, String(h[0])), el("span", { class: "wrap header-value" }, String(h[1]))]);
    const ht = table(["Field", "Value"], headers);
    ht.id = "headers";
    body.append(ht);
    body.append(el("h2", {}, "Envelope"));
    body.append(el("pre", { id: "envelope" }, JSON.stringify(m.envelope === undefined ? null : m.envelope, null, 2)));
  }

  function confirmDialog(text, withBounce) {
    const d = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-bounce-row").hidden = !withBounce;
    $("confirm-bounce").checked = false;
    return new Promise((resolve) => {
      d.addEventListener("close", () => resolve(d.returnValue === "ok" ? { bounce: $("confirm-bounce").checked } : null), { once: true });
      d.returnValue = "";
      d.showModal();
    });
  }

  const ACTION_TEXT = {
    retry: "Try to deliver message %s now?",
    hold: "Put message %s on hold? It is not delivered until released.",
    release: "Release message %s? It is tried again now.",
    resubmit: "Resubmit message %s from the poison queue?",
    delete: "Delete message %s? This cannot be undone.",
  };

  async function act(action) {
    const id = $("msg-id").textContent;
    const ok = await confirmDialog(ACTION_TEXT[action].replace("%s", id), action === "delete");
    if (!ok) return;
    const out = $("msg-result");
    out.className = "";
    out.textContent = "Working…";
    try {
      const body = action === "delete" ? { bounce: ok.bounce } : {};
      const r = await api("/queue/" + encodeURIComponent(id) + "/" + action, { json: body });
      out.textContent = action + ": " + (r && r.result ? r.result : "done");
    } catch (e) {
      if (e instanceof Unauthorized) return;
      out.className = "error";
      out.textContent = action + " failed: " + (e instanceof NotAvailable ? "not available on this server" : e.message);
      return;
    }
    // Re-read it, unless the operator has moved on to another page meanwhile.
    if (location.hash === "#/message/" + encodeURIComponent(id)) await message(id);
  }

  async function showRaw() {
    const id = $("msg-id").textContent;
    const pre = $("raw");
    try {
      const resp = await api("/queue/" + encodeURIComponent(id) + "/raw", { raw: true });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const text = await resp.text();
      pre.textContent = text.length > RAW_SHOWN ? text.slice(0, RAW_SHOWN) + "\n[… cut at 1 MiB]" : text;
    } catch (e) {
      if (e instanceof Unauthorized) return;
      pre.textContent = e instanceof NotAvailable ? "The raw message: not available on this server" : e.message;
    }
    pre.hidden = false;
  }

  // ---- Routing ----------------------------------------------------------------------

  function stopRefresh() {
    if (refreshTimer) clearInterval(refreshTimer);
    refreshTimer = null;
  }

  async function route() {
    flash("");
    stopRefresh();
    if (!token()) { showLogin(""); return; }
    $("signout").hidden = false;
    const h = location.hash || "#/";
    for (const a of document.querySelectorAll("header nav a")) a.classList.remove("current");
    try {
      await loadCluster();
      if (h.startsWith("#/queue")) {
        $("nav-queue").classList.add("current");
        await queueList(queryOf(h));
      } else if (h.startsWith("#/message/")) {
        $("nav-queue").classList.add("current");
        let id = h.slice("#/message/".length);
        try { id = decodeURIComponent(id); } catch (_) { /* keep as is */ }
        // The result of an action stays while its message is re-read, not across pages.
        $("msg-result").textContent = "";
        $("msg-result").className = "";
        await message(id);
      } else {
        $("nav-overview").classList.add("current");
        await overview();
        refreshTimer = setInterval(() => { loadCluster().then(overview).catch(() => {}); }, REFRESH_MS);
      }
    } catch (e) {
      if (!(e instanceof Unauthorized)) flash(e.message);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("filters").addEventListener("submit", applyFilters);
    $("clear").addEventListener("click", () => { location.hash = "#/queue"; });
    $("signout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem(NODE_KEY); showLogin(""); });
    $("node").addEventListener("change", () => pickNode($("node").value));
    $("show-raw").addEventListener("click", showRaw);
    for (const b of $("msg-actions").querySelectorAll("button[data-action]")) {
      b.addEventListener("click", () => act(b.getAttribute("data-action")));
    }
    window.addEventListener("hashchange", route);
    route();
  });
})();
