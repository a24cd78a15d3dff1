// The orderd operations console (gateway/src/http/console.rs serves it). Plain DOM, no
// framework: every value from the server is put in the page as text (textContent and text
// nodes, never HTML), the API key lives in sessionStorage only and goes in the Authorization
// header of each fetch().
"use strict";

/** Overview and Shards refresh this often (milliseconds). */
const POLL_MS = 2000;
/** The overview runs the health inspection (about 200 ms of server work) at most this often. */
const INSPECTION_REFRESH_MS = 60000;
/** Points kept in the overview's charts (2 minutes at POLL_MS). */
const CHART_POINTS = 60;
/** Rows per page on the Audit, Changes and Backups pages. */
const PAGE_ROWS = 25;
const KEY_STORAGE = "orderd.console.key";

const state = {
  key: null,
  who: null,
  page: "overview",
  timer: null,
  // Overview: the previous /metrics sample and the chart series.
  lastSample: null,
  rate: [],
  p99: [],
  inspection: null,
  inspectionAt: 0,
  auditAfter: [],
  selectedChange: null,
  changeSetting: null,
  // Incremented each time a page is shown: polls of an earlier showing stop.
  token: 0,
};

// ---------------------------------------------------------------- DOM helpers (text only)

/** An element with attributes (set as properties or attributes, never HTML) and children:
 * strings become text nodes. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A table: `headers` and rows of cells (strings, numbers or nodes). */
function table(headers, rows, caption) {
  return el("table", {},
    caption ? el("caption", {}, caption) : null,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell) => el("td", {}, show(cell)))))));
}

/** A value as text for a cell: null as "—", objects as JSON. */
function show(value) {
  if (value instanceof Node) return value;
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function badge(text) {
  return el("span", { class: "badge " + String(text).replace(/[^a-z_]/gi, "") }, text);
}

function setStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text || "";
  status.className = isError ? "error" : "";
}

function page() { return document.getElementById("page"); }

/** Whether the signed-in key's role may call `route` ("METHOD /template"), per /v1/whoami. */
function can(route) {
  return !!(state.who && state.who.may.includes(route));
}

/** A button that runs `action` (async); disabled when the key's role may not call `route`. */
function action(label, route, run, attrs) {
  const allowed = route === null || can(route);
  const extra = Object.assign({}, attrs || {});
  const disabled = !allowed || !!extra.disabled;
  delete extra.disabled;
  return el("button", Object.assign({
    type: "button",
    disabled,
    title: allowed ? null : "this key's role may not call " + route,
    onclick: async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try { await run(); } catch (error) { setStatus(error.message, true); }
      finally { if (button.isConnected) button.disabled = false; }
    },
  }, extra), label);
}

function section(title, ...children) {
  return el("section", {}, el("h2", {}, title), children);
}

function ago(iso) {
  if (!iso) return "—";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 120) return Math.round(seconds) + " s ago";
  if (seconds < 7200) return Math.round(seconds / 60) + " min ago";
  if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h ago";
  return (seconds / 86400).toFixed(1) + " days ago";
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || ("HTTP " + status));
    this.status = status;
    this.problem = problem;
  }
}

/** Calls the API with the key; answers the decoded JSON (or text), throws ApiError. */
async function api(method, path, body) {
  const headers = { "Authorization": "Bearer " + state.key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const type = response.headers.get("content-type") || "";
  const payload = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (response.status === 401 && path !== "/v1/whoami") {
    signOut("The key was refused (401): sign in again.");
    throw new ApiError(401, payload);
  }
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

// ---------------------------------------------------------------- sign-in

async function signIn(key) {
  state.key = key;
  try {
    state.who = await api("GET", "/v1/whoami");
  } catch (error) {
    state.key = null;
    state.who = null;
    sessionStorage.removeItem(KEY_STORAGE);
    setSigninError(error.status === 401 ? "This key is unknown or revoked." : error.message);
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  document.getElementById("key").value = "";
  document.getElementById("signin-view").hidden = true;
  document.getElementById("app").hidden = false;
  document.getElementById("identity").hidden = false;
  document.getElementById("who").textContent =
    state.who.key_id + " · role " + state.who.role + " · owner " + state.who.owner;
  state.rate = [];
  state.p99 = [];
  state.lastSample = null;
  state.inspection = null;
  state.inspectionAt = 0;
  showPage("overview");
}

function setSigninError(text) {
  let note = document.getElementById("signin-error");
  if (!note) {
    note = el("p", { id: "signin-error", class: "error", role: "alert" });
    document.getElementById("signin").after(note);
  }
  note.textContent = text;
}

function signOut(reason) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
  state.who = null;
  state.token += 1;
  stopPolling();
  page().replaceChildren();
  document.getElementById("app").hidden = true;
  document.getElementById("identity").hidden = true;
  document.getElementById("signin-view").hidden = false;
  if (reason) setSigninError(reason);
  document.getElementById("key").focus();
}

// ---------------------------------------------------------------- confirmation dialog

/** Asks in a modal dialog; resolves true when confirmed. */
function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const yes = document.getElementById("confirm-yes");
    const no = document.getElementById("confirm-no");
    const done = (answer) => {
      yes.removeEventListener("click", onYes);
      no.removeEventListener("click", onNo);
      dialog.removeEventListener("cancel", onNo);
      dialog.close();
      resolve(answer);
    };
    const onYes = () => done(true);
    const onNo = () => done(false);
    yes.addEventListener("click", onYes);
    no.addEventListener("click", onNo);
    dialog.addEventListener("cancel", onNo);
    dialog.showModal();
    no.focus();
  });
}

// ---------------------------------------------------------------- pages

const PAGES = {
  overview: { title: "Overview", load: loadOverview, poll: true },
  shards: { title: "Shards", load: loadShards, poll: true },
  incidents: { title: "Incidents", load: loadIncidents },
  inspection: { title: "Inspection", load: loadInspection },
  backups: { title: "Backups", load: loadBackups },
  changes: { title: "Changes", load: loadChanges },
  audit: { title: "Audit", load: loadAudit },
  orders: { title: "Orders", load: loadOrders },
  stock: { title: "Stock", load: loadStock },
};

function stopPolling() {
  if (state.timer !== null) clearTimeout(state.timer);
  state.timer = null;
}

function showPage(name) {
  stopPolling();
  state.page = name;
  state.token += 1;
  for (const button of document.querySelectorAll("nav button")) {
    if (button.dataset.page === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  page().replaceChildren(el("h2", { class: "page-title" }, PAGES[name].title));
  page().dataset.page = name;
  setStatus("");
  refresh(name);
}

/** Loads the page (and again every POLL_MS for polling pages while it is shown): a load that
 * ends after the page was left or shown anew schedules nothing, so one loop polls. */
async function refresh(name) {
  const token = state.token;
  try {
    await PAGES[name].load();
  } catch (error) {
    if (token === state.token) setStatus(error.message, true);
  }
  if (PAGES[name].poll && token === state.token && state.key) {
    state.timer = setTimeout(() => refresh(name), POLL_MS);
  }
}

/** Replaces the page's body below its title. Polling pages re-render every POLL_MS: focus
 * inside the page moves to the new element with the same id, so keyboard users keep their
 * place. */
function render(name, ...children) {
  // A load that ends after its page was left renders nothing.
  if (state.page !== name) return;
  const focused = document.activeElement;
  const focusedId = focused && page().contains(focused) ? focused.id : "";
  const title = page().querySelector(".page-title");
  page().replaceChildren(title, ...children);
  if (focusedId) {
    const again = document.getElementById(focusedId);
    if (again) again.focus();
  }
}

/** A part of a page that may be refused to this key: the refusal as text, else `build(data)`. */
async function part(title, path, build) {
  try {
    return section(title, build(await api("GET", path)));
  } catch (error) {
    if (error.status === 401) throw error;
    return section(title, el("p", { class: "error" }, error.message));
  }
}

// ---- Overview

/** Whether a `route` label counts in the overview's charts: the requests the change watch
 * judges too (HTTP under /v1/ outside /v1/ops, and TCP), not the console's own polling. */
function served(route) {
  return (route.startsWith("/v1/") && !route.startsWith("/v1/ops")) || route.startsWith("tcp ");
}

/** Sums of `orderd_request_duration_seconds` over the series that count: the request count
 * and the cumulative buckets by `le`. */
function parseMetrics(text) {
  let count = 0;
  const buckets = new Map();
  for (const line of text.split("\n")) {
    if (!line.startsWith("orderd_request_duration_seconds_")) continue;
    const route = /route="([^"]*)"/.exec(line);
    if (!route || !served(route[1])) continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (line.startsWith("orderd_request_duration_seconds_count")) {
      count += value;
    } else if (line.startsWith("orderd_request_duration_seconds_bucket")) {
      const match = /le="([^"]+)"/.exec(line);
      if (!match) continue;
      const le = match[1] === "+Inf" ? Infinity : Number(match[1]);
      buckets.set(le, (buckets.get(le) || 0) + value);
    }
  }
  return { at: Date.now(), count, buckets };
}

/** Requests per second and the p99 (ms, an upper bucket bound) between two samples. */
function between(before, after) {
  const seconds = (after.at - before.at) / 1000;
  const requests = after.count - before.count;
  const rate = seconds > 0 ? requests / seconds : 0;
  let p99 = null;
  if (requests > 0) {
    const bounds = [...after.buckets.keys()].sort((a, b) => a - b);
    for (const le of bounds) {
      const within = after.buckets.get(le) - (before.buckets.get(le) || 0);
      if (within >= 0.99 * requests) { p99 = le === Infinity ? null : le * 1000; break; }
    }
  }
  return { rate, p99 };
}

/** A small bar chart of `values` (one bar per poll, newest right) on a canvas. */
function sparkline(label, values, unit) {
  const canvas = el("canvas", { width: 320, height: 60, class: "chart", role: "img",
    "aria-label": label });
  const ctx = canvas.getContext("2d");
  const points = values.filter((v) => v !== null && Number.isFinite(v));
  const max = Math.max(1e-9, ...points);
  const width = (canvas.width - 4) / CHART_POINTS;
  ctx.fillStyle = "#2a6";
  values.forEach((value, i) => {
    if (value === null || !Number.isFinite(value)) return;
    const h = Math.max(1, (value / max) * (canvas.height - 6));
    const x = 2 + (CHART_POINTS - values.length + i) * width;
    ctx.fillRect(x, canvas.height - 2 - h, Math.max(1, width - 1), h);
  });
  const last = values.length ? values[values.length - 1] : null;
  return el("figure", { class: "spark" },
    canvas,
    el("figcaption", {}, label + ": ",
      el("strong", { class: "figure-value" }, last === null ? "—" : last.toFixed(2) + " " + unit),
      " (max " + (points.length ? max.toFixed(2) : "—") + ")"));
}

async function loadOverview() {
  const [ready, metrics] = await Promise.all([
    fetch("/readyz", { cache: "no-store" }).then(async (r) => ({ ok: r.ok, body: await r.json() })),
    fetch("/metrics", { cache: "no-store" }).then((r) => r.text()),
  ]);
  const sample = parseMetrics(metrics);
  if (state.lastSample) {
    const { rate, p99 } = between(state.lastSample, sample);
    state.rate.push(rate);
    state.p99.push(p99);
    if (state.rate.length > CHART_POINTS) { state.rate.shift(); state.p99.shift(); }
  }
  state.lastSample = sample;
  if (can("GET /v1/ops/inspection") && Date.now() - state.inspectionAt >= INSPECTION_REFRESH_MS) {
    state.inspectionAt = Date.now();
    state.inspection = await api("GET", "/v1/ops/inspection").catch((e) => ({ error: e.message }));
  }
  const readiness = section("Readiness",
    el("p", { id: "readiness" }, badge(ready.ok ? "ready" : "not_ready"), " ",
      ready.ok ? "every shard runs and storage is open" : (ready.body.detail || "not ready")));
  const shards = await part("Shards", "/v1/ops/shards", shardTable);
  const incidents = await part("Open incidents", "/v1/ops/incidents?limit=100", (items) => {
    const open = items.filter((i) => !i.recovered_at);
    return open.length === 0
      ? el("p", { id: "open-incidents" }, "none open (" + items.length + " recent, all recovered)")
      : table(["at", "component", "kind", "detail"],
        open.map((i) => [i.at, i.component, i.kind, i.detail]));
  });
  const backups = await part("Backups", "/v1/ops/backups?limit=" + PAGE_ROWS, (list) => {
    const newest = list.items[0];
    const drilled = list.items.find((b) => b.verified_at);
    return el("p", { id: "backup-summary" },
      newest ? "newest " + newest.id + ", " + ago(newest.created_at) + ", off-site " + newest.offsite
        : "no backup yet",
      el("br"),
      drilled ? "last drill " + ago(drilled.verified_at) + " on " + drilled.id + ": " +
        (drilled.verified ? "passed" : "FAILED") : "no restore drill yet");
  });
  let inspection = null;
  if (state.inspection && !state.inspection.error) {
    const report = state.inspection;
    const failing = report.checks.filter((c) => c.status !== "pass");
    inspection = section("Inspection",
      el("p", { id: "inspection-summary" }, badge(report.overall), " at " + report.at + "; ",
        failing.length ? failing.map((c) => c.name + " " + c.status).join(", ") : "every check passes"));
  } else if (state.inspection) {
    inspection = section("Inspection", el("p", { class: "error" }, state.inspection.error));
  }
  const charts = section("Requests under /v1 outside /v1/ops, and TCP (from /metrics, every " +
    POLL_MS / 1000 + " s, the last " + CHART_POINTS * POLL_MS / 60000 + " minutes)",
    el("div", { class: "charts" },
      sparkline("request rate", state.rate, "req/s"),
      sparkline("p99", state.p99, "ms")));
  const wasOpen = document.getElementById("may");
  const role = el("details", { id: "may", open: !!(wasOpen && wasOpen.open) },
    el("summary", { id: "may-summary" }, "What this key (role " + state.who.role + ") may do"),
    el("ul", {}, state.who.may.map((route) => el("li", {}, el("code", {}, route)))));
  render("overview", readiness, shards, inspection, incidents, backups, charts, role);
}

// ---- Shards

function shardTable(shards) {
  return table(["shard", "state", "mailbox", "restarts", "last seq", "orders"],
    shards.map((s) => [String(s.id), badge(s.state), s.mailbox_depth, s.restarts, s.last_seq, s.orders]));
}

async function loadShards() {
  const shards = await api("GET", "/v1/ops/shards");
  const rows = shards.map((s) => [String(s.id), badge(s.state), s.mailbox_depth, s.restarts,
    s.last_seq, s.orders,
    action("Restart shard " + s.id, "POST /v1/ops/shards/{id}/restart", async () => {
      if (!(await confirmAction("Restart shard " + s.id + "? Its requests get 503 while it is rebuilt from storage."))) return;
      const answer = await api("POST", "/v1/ops/shards/" + s.id + "/restart");
      setStatus("shard " + answer.id + ": " + answer.state);
      await loadShards();
    }, { id: "restart-" + s.id })]);
  render("shards", el("div", { id: "shards" },
    table(["shard", "state", "mailbox", "restarts", "last seq", "orders", ""], rows)));
}

// ---- Incidents

async function loadIncidents() {
  const incidents = await part("Incidents (newest 100)", "/v1/ops/incidents?limit=100", (items) =>
    table(["id", "at", "component", "kind", "detail", "action", "recovered"],
      items.slice().reverse().map((i) => [i.id, i.at, i.component, i.kind, i.detail, i.action,
        i.recovered_at || badge("open")])));
  const quarantine = await part("Quarantined commands", "/v1/ops/quarantine?limit=100", (list) =>
    table(["fingerprint", "command", "message", "since", ""], list.items.map((q) => [q.fingerprint,
      q.command, q.message, q.quarantined_at,
      action("Lift", "DELETE /v1/ops/quarantine/{fingerprint}", async () => {
        if (!(await confirmAction("Lift the quarantine of " + q.fingerprint + "?"))) return;
        await api("DELETE", "/v1/ops/quarantine/" + encodeURIComponent(q.fingerprint));
        await loadIncidents();
      })])));
  render("incidents", el("p", {}, action("Refresh", null, loadIncidents, { id: "incidents-refresh" })),
    incidents, quarantine);
}

// ---- Inspection

async function loadInspection(report) {
  const run = action("Run inspection now", "GET /v1/ops/inspection", async () => {
    setStatus("inspecting…");
    const fresh = await api("GET", "/v1/ops/inspection");
    setStatus("inspection done in " + fresh.duration_ms + " ms");
    await loadInspection(fresh);
  }, { id: "inspection-run" });
  if (!report) {
    render("inspection", el("p", {}, run), el("p", {}, "Run the inspection to see every check."));
    return;
  }
  const last = report.last_scheduled;
  render("inspection", el("p", {}, run),
    el("p", { id: "inspection-overall" }, "overall ", badge(report.overall), " at " + report.at +
      " (" + report.duration_ms + " ms)"),
    table(["check", "status", "value", "detail"],
      report.checks.map((c) => [c.name, badge(c.status), c.value, c.detail]), "Checks"),
    el("p", {}, last ? "last scheduled run " + last.at + ": " + last.overall +
      (last.failed.length ? ", failed " + last.failed.join(", ") : "") +
      (last.warned.length ? ", warned " + last.warned.join(", ") : "") : "no scheduled run yet"));
}

// ---- Backups

async function loadBackups(note) {
  const create = action("Create backup", "POST /v1/ops/backups", async () => {
    const backup = await api("POST", "/v1/ops/backups");
    setStatus("backup " + backup.id + " created");
    await loadBackups();
  }, { id: "backup-create" });
  const list = await api("GET", "/v1/ops/backups?limit=" + PAGE_ROWS);
  const rows = list.items.map((b) => [b.id, b.created_at, b.size_bytes, b.files,
    el("span", {}, badge(b.offsite), b.offsite_detail ? " " + b.offsite_detail : ""),
    b.verified === null ? "not yet" : el("span", {}, badge(b.verified ? "passed" : "failed"),
      " " + (b.verified_at || "") + " " + (b.verify_detail || "")),
    action("Verify " + b.id, "POST /v1/ops/backups/{id}/verify", async () => {
      setStatus("restore drill of " + b.id + " running…");
      const drill = await api("POST", "/v1/ops/backups/" + encodeURIComponent(b.id) + "/verify");
      setStatus("drill of " + drill.id + " (" + drill.source + "): " +
        (drill.verified ? "verified" : "FAILED") + " in " + drill.duration_ms + " ms");
      await loadBackups(drill);
    }, { class: "verify" })]);
  render("backups", el("p", {}, create, " ", action("Refresh", null, () => loadBackups(), { id: "backups-refresh" })),
    note ? el("p", { id: "drill-result" }, "Drill of " + note.id + ": ",
      badge(note.verified ? "passed" : "failed"), " " + note.detail) : null,
    el("div", { id: "backups" },
      table(["id", "created", "bytes", "files", "off-site", "restore drill", ""], rows)));
}

// ---- Changes

function parseValue(setting, text) {
  if (setting.type === "integer") {
    const number = Number(text);
    if (!Number.isInteger(number)) throw new Error(setting.setting + " takes an integer");
    return number;
  }
  return text;
}

/** Before/after bars of a change's watch: error rate and p99 of the window before apply and
 * the window since. */
function watchChart(watch) {
  const canvas = el("canvas", { width: 360, height: 120, class: "chart", id: "watch-chart",
    role: "img", "aria-label": "watch window: error rate and p99 before and after" });
  const ctx = canvas.getContext("2d");
  const before = watch.baseline;
  const after = watch.observed || { error_rate: null, p99_ms: null, requests: 0 };
  // error_rate is a fraction (errors / requests): shown in percent.
  const percent = (rate) => (rate === null || rate === undefined ? null : rate * 100);
  const groups = [["error rate %", percent(before.error_rate), percent(after.error_rate)],
    ["p99 ms", before.p99_ms, after.p99_ms]];
  ctx.font = "11px sans-serif";
  groups.forEach(([label, b, a], g) => {
    const x0 = 20 + g * 170;
    const max = Math.max(1e-9, b || 0, a || 0);
    [[b, "#888"], [a, "#2a6"]].forEach(([value, color], i) => {
      const h = value === null || value === undefined ? 0 : Math.max(1, (value / max) * 80);
      ctx.fillStyle = color;
      ctx.fillRect(x0 + i * 50, 95 - h, 40, h);
      ctx.fillStyle = "#000";
      ctx.fillText(value === null || value === undefined ? "—" : Number(value).toFixed(2), x0 + i * 50, 92 - h);
    });
    ctx.fillText(label + " (before, after)", x0, 112);
  });
  return el("figure", {}, canvas, el("figcaption", { id: "watch-figures" },
    "verdict " + watch.verdict + "; before: " + before.requests + " requests, error rate " +
    percent(before.error_rate).toFixed(2) + " %, p99 " + show(before.p99_ms) + " ms; after: " +
    (watch.observed ? watch.observed.requests + " requests, error rate " +
      percent(watch.observed.error_rate).toFixed(2) + " %, p99 " + show(watch.observed.p99_ms) + " ms"
      : "not judged yet")));
}

function changeActions(change) {
  const step = (label, verb) => action(label + " " + change.id, "POST /v1/ops/changes/{id}/" + verb, async () => {
    const next = await api("POST", "/v1/ops/changes/" + encodeURIComponent(change.id) + "/" + verb);
    setStatus(next.id + " is " + next.status);
    state.selectedChange = next.id;
    await loadChanges();
  }, { class: verb });
  const out = [action("Show " + change.id, "GET /v1/ops/changes/{id}", async () => {
    state.selectedChange = change.id;
    await loadChanges();
  }, { class: "show" })];
  if (change.status === "pending") out.push(step("Approve", "approve"));
  if (change.status === "approved") out.push(step("Apply", "apply"));
  if (change.status === "applied" || change.status === "closed") out.push(step("Roll back", "rollback"));
  return el("span", { class: "actions" }, out);
}

async function loadChanges() {
  const parts = [];
  if (can("GET /v1/ops/config")) {
    const config = await api("GET", "/v1/ops/config");
    const select = el("select", { id: "change-setting" },
      config.items.map((s) => el("option", { value: s.setting }, s.setting)));
    const about = el("p", { id: "setting-about" });
    const value = el("input", { id: "change-value", required: true });
    const describe = () => {
      const s = config.items.find((i) => i.setting === select.value);
      about.textContent = s.type + (s.min !== null ? ", " + s.min + " to " + s.max : "") +
        "; now " + show(s.value) + "; risk " + s.risk + "; " + (s.live ? "live" : "at the next start") +
        ". " + s.description;
      value.type = s.type === "integer" ? "number" : "text";
      if (s.min !== null) { value.min = s.min; value.max = s.max; }
      else { value.removeAttribute("min"); value.removeAttribute("max"); }
    };
    if (state.changeSetting) select.value = state.changeSetting;
    select.addEventListener("change", () => { state.changeSetting = select.value; describe(); });
    describe();
    const reason = el("input", { id: "change-reason", required: true, maxlength: 1000 });
    const plan = el("input", { id: "change-plan", maxlength: 1000 });
    const watch = el("input", { id: "change-watch", type: "number", min: 1, value: 60 });
    const form = el("form", { id: "change-form", class: "grid" },
      el("label", { for: "change-setting" }, "setting"), select,
      el("span"), about,
      el("label", { for: "change-value" }, "new value"), value,
      el("label", { for: "change-reason" }, "reason"), reason,
      el("label", { for: "change-plan" }, "rollback plan"), plan,
      el("label", { for: "change-watch" }, "watch window (s)"), watch,
      el("span"), el("button", { type: "submit", id: "change-submit",
        disabled: !can("POST /v1/ops/changes") }, "Request change"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const s = config.items.find((i) => i.setting === select.value);
        const body = { setting: s.setting, value: parseValue(s, value.value), reason: reason.value };
        if (plan.value) body.rollback_plan = plan.value;
        if (watch.value) body.watch_window_s = Number(watch.value);
        const change = await api("POST", "/v1/ops/changes", body);
        setStatus(change.id + " requested: " + change.assessment.summary + " (" + change.status + ")");
        state.selectedChange = change.id;
        await loadChanges();
      } catch (error) { setStatus(error.message, true); }
    });
    parts.push(section("Request a change", form));
  }
  const list = await api("GET", "/v1/ops/changes?limit=" + PAGE_ROWS);
  parts.push(section("Changes (newest first)", el("div", { id: "changes" },
    table(["id", "status", "setting", "old → new", "risk", "requested by", ""],
      list.items.map((c) => [c.id, badge(c.status), c.setting, show(c.old_value) + " → " + show(c.value),
        c.risk, c.requested_by, changeActions(c)])))));
  const chosen = list.items.find((c) => c.id === state.selectedChange);
  if (chosen) {
    parts.push(section("Change " + chosen.id, el("div", { id: "change-detail" },
      el("p", {}, chosen.assessment.summary + " — " + chosen.reason),
      chosen.watch ? watchChart(chosen.watch) : el("p", {}, "no watch yet (applied changes are watched)"),
      table(["step", "actor", "at", "detail"], chosen.steps.map((s) => [s.step, s.actor, s.at, s.detail]), "Steps"))));
  }
  render("changes", ...parts);
}

// ---- Audit

async function loadAudit(verify) {
  const after = state.auditAfter[state.auditAfter.length - 1];
  const path = "/v1/audit?limit=" + PAGE_ROWS + (after ? "&after=" + encodeURIComponent(after) : "");
  const list = await api("GET", path);
  const check = action("Verify the chain", "GET /v1/audit/verify", async () => {
    await loadAudit(await api("GET", "/v1/audit/verify"));
  }, { id: "audit-verify" });
  const newer = action("Previous page", "GET /v1/audit", async () => {
    state.auditAfter.pop();
    await loadAudit();
  }, { id: "audit-prev", disabled: state.auditAfter.length === 0 });
  const older = action("Next page", "GET /v1/audit", async () => {
    state.auditAfter.push(list.next);
    await loadAudit();
  }, { id: "audit-next", disabled: !list.next });
  render("audit", el("p", {}, check, " ", newer, " ", older),
    verify ? el("div", { id: "audit-verified" },
      el("p", {}, badge(verify.ok ? "ok" : "broken"), " " + verify.entries + " entries: " + verify.detail),
      table(["chain", "ok", "entries", "first bad seq"],
        verify.chains.map((c) => [c.chain, String(c.ok), c.entries, c.first_bad_seq]))) : null,
    el("div", { id: "audit" }, table(["seq", "chain", "at", "actor", "action", "target", "detail"],
      list.items.map((a) => [a.seq, a.chain, a.at, a.actor, a.action, a.target, a.detail]))));
}

// ---- Orders

async function showOrder(order) {
  const shipments = [];
  for (const id of order.shipments || []) {
    try {
      const s = await api("GET", "/v1/shipments/" + encodeURIComponent(id));
      shipments.push([s.id, s.carrier, s.tracking_number, badge(s.status),
        s.lines.map((l) => l.sku + " × " + l.qty).join(", "),
        s.events.map((e) => e.status + (e.note ? " (" + e.note + ")" : "")).join(" → ")]);
    } catch (error) {
      shipments.push([id, error.message, "", "", "", ""]);
    }
  }
  return el("article", { class: "order" },
    el("h3", {}, order.id + " ", badge(order.status)),
    table(["customer", "total", "note", "shipping address", "created", "updated"],
      [[order.customer_id, order.total, order.note, order.shipping_address, order.created_at, order.updated_at]]),
    table(["sku", "qty", "unit price", "shipped"], order.lines.map((l) => [l.sku, l.qty, l.unit_price, l.shipped_qty]), "Lines"),
    table(["at", "status", "actor"], (order.history || []).map((h) => [h.at, h.status, h.actor]), "History"),
    shipments.length ? table(["shipment", "carrier", "tracking", "status", "lines", "events"], shipments, "Shipments")
      : el("p", {}, "no shipments"));
}

function lookupForm(id, label, placeholder, run) {
  const input = el("input", { id: id + "-query", required: true, placeholder, spellcheck: "false" });
  const form = el("form", { id: id + "-form" },
    el("label", { for: id + "-query" }, label), " ", input, " ",
    el("button", { type: "submit", id: id + "-submit" }, "Look up"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const results = document.getElementById(id + "-results");
    results.replaceChildren(el("p", {}, "loading…"));
    try {
      results.replaceChildren(await run(input.value.trim()));
    } catch (error) {
      results.replaceChildren(el("p", { class: "error" }, error.message));
    }
  });
  return [form, el("div", { id: id + "-results" })];
}

async function loadOrders() {
  render("orders", ...lookupForm("orders", "Order id or customer id", "ord_… or cus_…", async (query) => {
    if (query.startsWith("cus_")) {
      const id = encodeURIComponent(query);
      const customer = await api("GET", "/v1/customers/" + id).catch((e) => ({ error: e.message }));
      const list = await api("GET", "/v1/orders?limit=" + PAGE_ROWS + "&customer_id=" + id);
      const orders = [];
      for (const order of list.items) orders.push(await showOrder(order));
      return el("div", {},
        customer.error ? el("p", { class: "error" }, "customer: " + customer.error)
          : table(["customer", "name", "email", "phone", "address"],
            [[customer.id, customer.name, customer.email, customer.phone, customer.address]], "Customer"),
        el("p", {}, list.items.length + " order(s)" + (list.next ? " (newest " + PAGE_ROWS + ")" : "")),
        orders);
    }
    return showOrder(await api("GET", "/v1/orders/" + encodeURIComponent(query)));
  }));
}

// ---- Stock

async function loadStock() {
  render("stock", ...lookupForm("stock", "SKU", "MUG-BLUE", async (sku) => {
    const stock = await api("GET", "/v1/stock/" + encodeURIComponent(sku));
    return table(["sku", "on hand", "reserved", "available"],
      [[stock.sku, stock.on_hand, stock.reserved, stock.available]]);
  }));
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = document.getElementById("key").value.trim();
    if (key) signIn(key);
  });
  document.getElementById("signout").addEventListener("click", () => signOut(null));
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => {
      if (button.dataset.page === "audit") state.auditAfter = [];
      showPage(button.dataset.page);
    });
  }
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) signIn(saved);
});
