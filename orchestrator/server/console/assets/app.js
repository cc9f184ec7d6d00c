// The orchestrator's web console. Plain JavaScript, served by `orchestrator serve`
// itself. Pages are rendered from the JSON API under /console/api/; everything live
// arrives on one server-sent-event stream per page (no polling). Every value is put
// into the page as text (textContent), never as HTML.
"use strict";

const stats = (window.consoleStats = { fetches: 0, sseEvents: 0, states: [], renders: 0 });
let session = null;
let lastStatus = null;

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  stats.fetches++;
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session) headers["X-CSRF-Token"] = session.csrf;
  const r = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  return { status: r.status, ok: r.ok, data: data || {} };
}

const dateFmt = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZoneName: "short",
});

// A time with its time zone (the viewer's), the UTC original on hover.
function when(ts) {
  if (!ts) return h("span", { class: "muted" }, "—");
  const d = new Date(ts);
  if (isNaN(d)) return h("span", {}, ts);
  return h("time", { datetime: ts, title: d.toISOString() }, dateFmt.format(d));
}

function dur(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60), r = Math.round(s % 60);
  if (m < 60) return `${m} min ${r} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

const OUTCOME_CLASS = { recovered: "ok", rolled_back: "warn", false_alarm: "ok", escalated: "bad", aborted: "warn", held: "bad" };
function statePill(inc) {
  const name = inc.outcome || inc.state;
  const cls = inc.outcome ? OUTCOME_CLASS[inc.outcome] || "" : name === "awaiting_approval" ? "warn" : "";
  return h("span", { class: `pill ${cls}`, dataset: { state: name } }, name.replace(/_/g, " "));
}

function incLink(id) {
  return h("a", { href: `/console/incidents/${encodeURIComponent(id)}` }, id);
}

// DOM's own append/replaceChildren print null as "null": children go through here.
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function parseJSON(s) { try { return JSON.parse(s); } catch (_) { return null; } }

// ---------------------------------------------------------------- chrome: who, pause

function renderWho() {
  const el = document.getElementById("who");
  el.replaceChildren();
  if (!session) return;
  el.append(
    h("span", { id: "signed-in-as" }, `${session.who} (${session.role === "viewer" ? "read-only" : "approver token"})`),
    " · until ", when(session.expires_at),
    h("button", { class: "secondary small", id: "sign-out", onclick: signOut }, "Sign out"),
  );
}

async function signOut() {
  await api("POST", "/console/api/logout");
  session = null;
  location.href = "/";
}

function renderPause(status) {
  lastStatus = status;
  const b = document.getElementById("pause-banner");
  b.hidden = false;
  b.replaceChildren();
  b.dataset.paused = status.paused ? "true" : "false";
  b.classList.toggle("running", !status.paused);
  const mayAct = session && session.role === "approver";
  const add = (...xs) => b.append(...xs.filter((x) => x !== null && x !== undefined && x !== false));
  if (status.paused) {
    add(
      h("span", { id: "pause-state" }, "Automatic failover is PAUSED"),
      h("span", {}, " — by ", status.paused_by || "?", " at ", when(status.paused_at),
        status.paused_until ? h("span", { id: "pause-until" }, " until ", when(status.paused_until), " (a maintenance window: it lifts itself)") : null,
        status.pause_reason ? h("span", { id: "pause-reason" }, ": ", status.pause_reason) : null,
        ". Alerts are journaled and start nothing."),
      mayAct ? h("button", { id: "unpause", class: "small", onclick: () => setPaused(false) }, "Unpause") : null,
    );
  } else {
    add(
      h("span", { id: "pause-state" }, "Automatic failover is on"),
      status.paused_by ? h("span", { class: "muted" }, ` (last unpaused by ${status.paused_by} at `, when(status.paused_at), ")") : null,
      mayAct ? h("button", { id: "pause", class: "small secondary", onclick: () => setPaused(true) }, "Pause failover") : null,
    );
  }
}

async function setPaused(paused) {
  const r = await api("POST", "/console/api/pause", { paused });
  if (r.ok) renderPause(r.data);
  else alertNotice(r.data.error || `HTTP ${r.status}`);
}

function alertNotice(text) {
  const main = document.getElementById("main");
  main.prepend(h("div", { class: "notice bad", role: "alert" }, text));
}

// ---------------------------------------------------------------- live stream

let source = null;
function connect(incident, handlers) {
  const url = "/console/api/stream" + (incident ? `?incident=${encodeURIComponent(incident)}` : "");
  source = new EventSource(url);
  const live = document.getElementById("live");
  source.onopen = () => { if (live) { live.textContent = "live"; live.classList.remove("off"); } };
  source.onerror = () => { if (live) { live.textContent = "reconnecting…"; live.classList.add("off"); } };
  source.addEventListener("status", (e) => {
    stats.sseEvents++;
    const s = parseJSON(e.data);
    if (!s) return;
    renderPause(s);
    if (handlers.status) handlers.status(s);
  });
  source.addEventListener("timeline", (e) => {
    stats.sseEvents++;
    const t = parseJSON(e.data);
    if (t && handlers.timeline) handlers.timeline(t);
  });
  source.addEventListener("expired", () => {
    source.close();
    session = null;
    renderLogin("Your session expired. Sign in again.");
  });
}

// ---------------------------------------------------------------- sign in

function renderLogin(message) {
  document.body.dataset.page = "login";
  document.getElementById("who").replaceChildren();
  document.getElementById("pause-banner").hidden = true;
  const err = h("div", { id: "login-error", class: "notice bad", role: "alert", hidden: !message }, message || "");
  const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "approver or viewer token", required: true });
  const form = h("form", { class: "card login", id: "login-form", onsubmit: async (e) => {
    e.preventDefault();
    const r = await api("POST", "/console/api/login", { token: input.value });
    input.value = "";
    if (r.ok) { location.reload(); return; }
    err.hidden = false;
    err.textContent = r.status === 401 ? "That token is not known here." : r.data.error || `HTTP ${r.status}`;
  } },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste your approver token (or a viewer token). It is exchanged for a session cookie and not kept by the page."),
    err,
    h("label", { for: "token" }, "Token"),
    input,
    h("button", { type: "submit", id: "sign-in" }, "Sign in"),
  );
  document.getElementById("main").replaceChildren(form);
  input.focus();
}

// ---------------------------------------------------------------- targets

function renderTargets(status) {
  const main = document.getElementById("main");
  const cards = status.targets.map((t) => h("section", { class: "card target", dataset: { target: t.name } },
    h("h2", {}, t.name, " ", h("span", { class: `pill ${t.armed ? "ok" : "warn"}`, dataset: { armed: String(t.armed) } }, t.armed ? "armed" : "not armed")),
    h("p", { class: "muted" }, t.armed_reason),
    h("dl", { class: "kv" },
      h("dt", {}, "Active"), h("dd", {}, h("strong", {}, t.active_role), " ", h("code", {}, t.active)),
      h("dt", {}, "Standby"), h("dd", {}, h("code", {}, t.standby)),
      h("dt", {}, "Target"), h("dd", {}, h("code", {}, t.endpoint)),
      h("dt", {}, "Paused"), h("dd", { class: "paused-flag" }, t.paused ? "yes" : "no"),
      h("dt", {}, "Watch loop"), h("dd", {}, t.watch_loop ? "on" : "off"),
      h("dt", {}, "Open incident"), h("dd", {}, t.open_incident ? [incLink(t.open_incident.id), " ", statePill(t.open_incident), " since ", when(t.open_incident.opened_at)] : "none"),
      h("dt", {}, "Last incident"), h("dd", {}, t.last_closed ? [incLink(t.last_closed.id), " ", statePill(t.last_closed), " ", when(t.last_closed.closed_at)] : "none"),
      h("dt", {}, "Gated steps"), h("dd", {}, t.gated_steps.length ? t.gated_steps.join(", ") : "none (runs unattended)"),
      h("dt", {}, "Approvers"), h("dd", {}, t.approvers.join(", ") || "none"),
    ),
  ));
  main.replaceChildren(h("h1", {}, "Targets"), h("div", { class: "grid" }, cards));
  document.body.dataset.ready = "targets";
}

async function pageTargets() {
  document.body.dataset.page = "targets";
  const r = await api("GET", "/console/api/targets");
  if (!r.ok) return alertNotice(r.data.error || `HTTP ${r.status}`);
  renderPause(r.data);
  renderTargets(r.data);
  connect(null, { status: renderTargets });
}

// ---------------------------------------------------------------- incidents

const OUTCOMES = ["", "open", "recovered", "rolled_back", "false_alarm", "escalated", "aborted", "held", "would_fail_over", "would_escalate"];

function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

async function pageIncidents() {
  document.body.dataset.page = "incidents";
  const q = new URLSearchParams(location.search);
  const main = document.getElementById("main");
  const status = await api("GET", "/console/api/targets");
  if (status.ok) renderPause(status.data);
  const targets = status.ok ? status.data.targets : [];
  const target = h("select", { name: "target", id: "f-target" }, h("option", { value: "" }, "any target"),
    targets.map((t) => h("option", { value: t.name, selected: q.get("target") === t.name }, t.name)));
  const outcome = h("select", { name: "outcome", id: "f-outcome" },
    OUTCOMES.map((o) => h("option", { value: o, selected: (q.get("outcome") || "") === o }, o ? o.replace(/_/g, " ") : "any outcome")));
  const since = h("input", { type: "datetime-local", name: "since", id: "f-since", value: localInput(q.get("since")) });
  const until = h("input", { type: "datetime-local", name: "until", id: "f-until", value: localInput(q.get("until")) });
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const form = h("form", { class: "card filters row", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    if (target.value) p.set("target", target.value);
    if (outcome.value) p.set("outcome", outcome.value);
    if (since.value) p.set("since", new Date(since.value).toISOString());
    if (until.value) p.set("until", new Date(until.value).toISOString());
    location.search = p.toString();
  } },
    h("label", {}, "Target", target), h("label", {}, "Outcome", outcome),
    h("label", {}, `Opened after (${tz})`, since), h("label", {}, `Opened before (${tz})`, until),
    h("button", { type: "submit" }, "Filter"),
  );
  const page = Math.max(1, parseInt(q.get("page") || "1", 10));
  const p = new URLSearchParams(q); p.set("page", String(page)); p.set("per_page", "25");
  const r = await api("GET", `/console/api/incidents?${p}`);
  if (!r.ok) { main.replaceChildren(form); return alertNotice(r.data.error || `HTTP ${r.status}`); }
  const { incidents, total, per_page } = r.data;
  const pages = Math.max(1, Math.ceil(total / per_page));
  const nav = (n, label) => {
    const np = new URLSearchParams(q); np.set("page", String(n));
    return h("a", { class: "button secondary", href: `?${np}`, rel: label === "Newer" ? "prev" : "next" }, label);
  };
  const rows = incidents.map((i) => {
    const ms = i.closed_at ? new Date(i.closed_at) - new Date(i.opened_at) : Date.now() - new Date(i.opened_at);
    return h("tr", { dataset: { incident: i.id } },
      h("td", {}, incLink(i.id)), h("td", {}, statePill(i)), h("td", {}, i.playbook_name, h("br"), h("code", { class: "muted" }, i.target)),
      h("td", {}, when(i.opened_at)), h("td", {}, dur(ms)), h("td", {}, `${i.trigger_source}: ${i.trigger_detail}`));
  });
  main.replaceChildren(
    h("h1", {}, "Incidents"), form,
    h("p", { class: "muted", id: "incident-count" }, `${total} incident${total === 1 ? "" : "s"} · page ${page} of ${pages}`),
    incidents.length ? h("table", { class: "incidents" },
      h("thead", {}, h("tr", {}, ["Incident", "State", "Target", "Opened", "Took", "Trigger"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows)) : h("p", { class: "card" }, "No incident matches."),
    h("div", { class: "row" }, page > 1 ? nav(page - 1, "Newer") : null, page < pages ? nav(page + 1, "Older") : null),
  );
  document.body.dataset.ready = "incidents";
  connect(null, {});
}

// ---------------------------------------------------------------- one incident

let view = null; // the last timeline the stream sent
const openDetails = new Set();
let countdown = null;
let extraAlerts = []; // alerts loaded beyond the first page

function keepDetails(el, key, openByDefault) {
  el.dataset.key = key;
  if (openDetails.has(key) || (openByDefault && !openDetails.has("closed:" + key))) el.open = true;
  el.addEventListener("toggle", () => {
    if (el.open) { openDetails.add(key); openDetails.delete("closed:" + key); } else { openDetails.delete(key); openDetails.add("closed:" + key); }
  });
  return el;
}

function renderChecks(checks, key) {
  if (!checks.length) return null;
  const failing = checks.filter((c) => !c.holds).length;
  return keepDetails(h("details", { class: "checks" },
    h("summary", {}, `${checks.length} checks${failing ? `, ${failing} not holding` : ", all hold"}`),
    h("ul", { class: "checks" }, checks.map((c) => h("li", {},
      h("span", { class: c.holds ? "holds" : "fails" }, c.holds ? "✓ " : "✗ "),
      h("strong", {}, c.phase, " · ", c.item), ": ", c.observed)))), key, false);
}

function observations(t) {
  const ev = parseJSON(t.observations);
  if (!ev) return null;
  const rest = Object.fromEntries(Object.entries(ev).filter(([k]) => !["type", "checks", "preflight"].includes(k)));
  if (!Object.keys(rest).length) return null;
  return keepDetails(h("details", {}, h("summary", {}, "observations"), h("pre", { class: "mono" }, JSON.stringify(rest, null, 2))), `obs:${t.seq}`, false);
}

function feed(t) {
  const opened = new Date(t.incident.opened_at);
  const items = [];
  for (const tr of t.transitions) items.push({ at: tr.at, kind: "transition", tr });
  for (const e of t.effects) if (e.kind !== "notify") items.push({ at: e.intent_at, kind: "effect", e });
  for (const c of t.commands) items.push({ at: c.at, kind: "command", c });
  items.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  const since = (at) => `+${dur(new Date(at) - opened)}`;
  return items.map((it) => {
    if (it.kind === "transition") {
      const tr = it.tr;
      const moved = !tr.rejected && tr.from_state !== tr.to_state;
      return h("li", { class: `transition${tr.rejected ? " rejected" : ""}` },
        h("div", { class: "when" }, when(tr.at), " ", since(tr.at), moved ? ` · ${dur(tr.in_step_ms)} in ${tr.from_state}` : ""),
        h("div", { class: "what" }, moved ? `${tr.from_state} → ${tr.to_state}` : tr.from_state, " ", h("span", { class: "muted" }, `(${tr.event}, by ${tr.actor})`)),
        tr.rejected ? h("div", { class: "notice bad" }, "refused: ", tr.rejected) : null,
        tr.note ? h("div", { class: "note" }, tr.note) : null,
        tr.gist ? h("div", { class: "note muted" }, tr.gist) : null,
        renderChecks(tr.checks, `checks:${tr.seq}`),
        observations(tr));
    }
    if (it.kind === "effect") {
      const e = it.e;
      const cls = e.outcome === "ok" || e.outcome === "reconciled" ? "ok" : e.outcome ? "bad" : "warn";
      return h("li", { class: "effect" },
        h("div", { class: "when" }, when(e.intent_at), " ", since(e.intent_at), e.done_at ? ` · took ${dur(new Date(e.done_at) - new Date(e.intent_at))}` : ""),
        h("div", { class: "what" }, "effect ", e.kind, " ", h("span", { class: `pill ${cls}` }, e.outcome || "in flight")),
        keepDetails(h("details", {}, h("summary", {}, "intent and result"),
          h("pre", { class: "mono" }, "intent: ", e.intent, "\nresult: ", e.result || "—")), `effect:${e.key}`, false));
    }
    const c = it.c;
    const verdict = c.accepted === null ? "pending" : c.accepted ? "accepted" : "refused";
    return h("li", { class: "command" },
      h("div", { class: "when" }, when(c.at), " ", since(c.at)),
      h("div", { class: "what" }, `${c.kind} by ${c.actor} via ${c.via}`, c.os_user ? ` (${c.os_user})` : "", " ",
        h("span", { class: `pill ${c.accepted ? "ok" : c.accepted === false ? "bad" : "warn"}` }, verdict)),
      c.comment ? h("div", { class: "note" }, "“", c.comment, "”") : null,
      c.result ? h("div", { class: "note muted" }, c.result) : null);
  });
}

function renderGate(t) {
  const g = t.gate;
  const box = document.getElementById("gate");
  if (!g) { box.replaceChildren(); box.hidden = true; if (countdown) clearInterval(countdown); return; }
  box.hidden = false;
  const key = JSON.stringify(g);
  if (box.dataset.key === key) return; // unchanged: keep the comment being typed
  const comment = document.getElementById("gate-comment");
  const typed = comment ? comment.value : "";
  box.dataset.key = key;
  const mayAct = session.role === "approver";
  const listed = g.approvers.includes(session.who);
  const left = h("strong", { id: "gate-left" }, "");
  const tick = () => {
    const ms = new Date(g.expires_at) - Date.now();
    left.textContent = ms > 0 ? dur(ms) : "expired (the runner gives up at its next step)";
  };
  tick();
  if (countdown) clearInterval(countdown);
  countdown = setInterval(tick, 1000); // a local clock, no request
  const text = h("textarea", { id: "gate-comment", placeholder: "comment (journaled with your name)" });
  text.value = typed;
  const send = (action) => async () => {
    const out = document.getElementById("command-result");
    out.className = "notice warn"; out.hidden = false; out.textContent = `${action}: sending…`;
    const r = await api("POST", `/console/api/incidents/${encodeURIComponent(t.incident.id)}/${action}`, { comment: text.value });
    if (r.status === 200) { out.className = "notice ok"; out.textContent = `${action} accepted: ${r.data.result}`; text.value = ""; }
    else if (r.status === 202) { out.className = "notice warn"; out.textContent = `${action} journaled; the runner has not applied it yet`; }
    else { out.className = "notice bad"; out.textContent = `${action} refused: ${(r.data.result || r.data.error || "HTTP " + r.status).replace(/^refused: /, "")}`; }
  };
  fill(box,
    h("h2", {}, `Waiting for approval: ${g.step}`),
    h("dl", { class: "kv" },
      h("dt", {}, "Waiting since"), h("dd", {}, when(g.waiting_since)),
      h("dt", {}, "Time left"), h("dd", {}, left, " (expires ", when(g.expires_at), ")"),
      h("dt", {}, "Who may approve"), h("dd", { id: "gate-approvers" }, g.approvers.join(", ") || "nobody", ` — ${g.required} needed`),
      h("dt", {}, "Approvals so far"), h("dd", { id: "gate-approvals" }, g.approvals.length ? g.approvals.join(", ") : "none"),
    ),
    h("h3", {}, "Approving lets this happen"),
    h("ol", { id: "gate-plan" }, g.plan.steps.map((s) => h("li", { dataset: { step: s.step } },
      h("strong", {}, s.step), s.gated ? h("span", { class: "pill warn" }, "gated again") : null, ": ", s.what,
      s.flush ? h("dl", { class: "kv" },
        h("dt", {}, "Patterns"), h("dd", {}, s.flush.patterns.map((p) => h("code", {}, p, " "))),
        h("dt", {}, "On"), h("dd", {}, h("code", {}, s.flush.endpoint)),
        h("dt", {}, "Estimate"), h("dd", { id: "flush-estimate" }, s.flush.estimate === null ? "unknown" : `${s.flush.estimate} keys`,
          s.flush.per_pattern.length ? ` (${s.flush.per_pattern.map(([p, n]) => `${p}: ${n}`).join(", ")})` : ""),
        h("dt", {}, ""), h("dd", { class: "muted" }, s.flush.note)) : null))),
    !mayAct ? h("div", { class: "notice warn", id: "gate-readonly" }, `You are signed in read-only (${session.who}): you can watch, not decide.`) : null,
    mayAct && !listed ? h("div", { class: "notice bad", id: "gate-not-listed" },
      `You are signed in as ${session.who}, who is not on this incident's approver list (${g.approvers.join(", ")}): approving or rejecting will be refused and journaled.`) : null,
    mayAct ? h("div", {}, text, h("div", { class: "row" },
      h("button", { class: "approve", id: "approve", onclick: send("approve") }, `Approve ${g.step}`),
      h("button", { class: "danger", id: "reject", onclick: send("reject") }, "Reject"))) : null,
  );
}

function renderIncident(t) {
  view = t;
  stats.renders++;
  const inc = t.incident;
  if (stats.states[stats.states.length - 1] !== (inc.outcome || inc.state)) stats.states.push(inc.outcome || inc.state);
  document.title = `${inc.id} · ${inc.outcome || inc.state}`;
  const open = !inc.outcome;
  const link = t.links.public || location.origin + t.links.page;
  const end = inc.closed_at ? new Date(inc.closed_at) : new Date();
  document.getElementById("inc-head").replaceChildren(
    h("h1", {}, inc.id, " ", h("span", { id: "incident-state" }, statePill(inc))),
    h("div", { class: "row" },
      h("span", { id: "live", class: `live${open ? "" : " off"}` }, open ? "live" : "ended"),
      h("span", { class: "copy" }, "Link: ", h("a", { href: link, id: "incident-link" }, link)),
      h("button", { class: "secondary small", onclick: () => navigator.clipboard && navigator.clipboard.writeText(link) }, "Copy link")),
  );
  document.getElementById("inc-facts").replaceChildren(
    h("dl", { class: "kv" },
      h("dt", {}, "Target"), h("dd", {}, inc.playbook_name, " · ", h("code", {}, inc.target)),
      h("dt", {}, "Opened"), h("dd", {}, when(inc.opened_at)),
      h("dt", {}, inc.closed_at ? "Closed" : "Running for"), h("dd", {}, inc.closed_at ? [when(inc.closed_at), ` (took ${dur(end - new Date(inc.opened_at))})`] : dur(end - new Date(inc.opened_at))),
      h("dt", {}, "Trigger"), h("dd", {}, `${inc.trigger_source}: ${inc.trigger_detail}`),
      h("dt", {}, "Journal head"), h("dd", {}, h("code", {}, t.journal_head || "—"))),
    h("div", { class: "steps", id: "time-per-step" }, t.time_per_step.map(([s, ms]) => h("span", {}, `${s} ${dur(ms)}`))),
  );
  renderGate(t);
  const actions = document.getElementById("actions");
  actions.replaceChildren();
  if (open && session.role === "approver") {
    const reason = h("input", { id: "abort-reason", placeholder: "why (journaled with your name)" });
    const really = h("span", { hidden: true, class: "row" }, "Abort this incident? After the switch it rolls back first.", reason,
      h("button", { class: "danger", id: "abort-confirm", onclick: async () => {
        const r = await api("POST", `/console/api/incidents/${encodeURIComponent(inc.id)}/abort`, { comment: reason.value || "aborted from the console" });
        const out = document.getElementById("command-result");
        out.hidden = false;
        out.className = r.status === 200 ? "notice ok" : "notice bad";
        out.textContent = r.status === 200 ? `abort accepted: ${r.data.result}` : `abort refused: ${(r.data.result || r.data.error || "").replace(/^refused: /, "")}`;
      } }, "Yes, abort"));
    actions.append(h("button", { class: "danger", id: "abort", onclick: () => { really.hidden = false; } }, "Abort incident…"), really);
  }
  fill(document.getElementById("timeline"), feed(t));
  const notes = t.effects.filter((e) => e.kind === "notify");
  fill(document.getElementById("notifications"), notes.length ? keepDetails(h("details", {},
    h("summary", {}, `${notes.length} notifications`),
    h("ul", {}, notes.map((e) => h("li", {}, when(e.intent_at), " ", parseJSON(e.intent)?.title || e.intent, " — ", e.outcome || "in flight")))), "notifications", false) : "");
  renderAlerts(t);
  document.body.dataset.ready = "incident";
  if (!stats.firstRender) { stats.firstRender = performance.now(); performance.mark("console-rendered"); }
}

function alertRow(a) {
  return h("tr", {}, h("td", {}, when(a.received_at)), h("td", {}, a.source), h("td", {}, a.status), h("td", {}, a.disposition), h("td", { class: "mono" }, a.fingerprint), h("td", {}, a.summary));
}

function renderAlerts(t) {
  const box = document.getElementById("alerts");
  const shown = t.alerts.length + extraAlerts.length;
  const more = h("button", { class: "secondary small", id: "more-alerts", hidden: shown >= t.alerts_total, onclick: async () => {
    const r = await api("GET", `/console/api/incidents/${encodeURIComponent(t.incident.id)}/alerts?offset=${t.alerts.length + extraAlerts.length}&limit=200`);
    if (r.ok) { extraAlerts = extraAlerts.concat(r.data.alerts); renderAlerts(view); }
  } }, "Show more");
  const d = keepDetails(h("details", { id: "alerts-details" },
    h("summary", { id: "alerts-summary" }, `${t.alerts_total.toLocaleString("en-US")} alert${t.alerts_total === 1 ? "" : "s"} attached`, shown < t.alerts_total ? ` (first ${shown} shown)` : ""),
    h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["Received", "Source", "Status", "Disposition", "Fingerprint", "Summary"].map((c) => h("th", {}, c)))),
      h("tbody", {}, t.alerts.map(alertRow), extraAlerts.map(alertRow)))),
    more), "alerts", t.alerts_total <= 5);
  box.replaceChildren(d);
}

async function pageIncident(id) {
  document.body.dataset.page = "incident";
  const main = document.getElementById("main");
  main.replaceChildren(
    h("div", { id: "inc-head" }, h("p", { class: "muted" }, "Loading ", id, "…")),
    h("section", { id: "gate", class: "card gate", hidden: true }),
    h("div", { id: "command-result", class: "notice", role: "status", hidden: true }),
    h("div", { id: "actions", class: "row" }),
    h("div", { id: "inc-facts" }),
    h("h2", {}, "Timeline"),
    h("ol", { class: "timeline", id: "timeline" }),
    h("div", { id: "notifications" }),
    h("h2", {}, "Alerts"),
    h("div", { id: "alerts" }),
  );
  // The first view comes from the stream too: one source of truth, no second fetch.
  connect(id, { timeline: renderIncident });
}

// ---------------------------------------------------------------- boot

async function boot() {
  const r = await api("GET", "/console/api/session");
  if (r.status === 401) return renderLogin();
  if (!r.ok) return alertNotice(r.data.error || `HTTP ${r.status}`);
  session = r.data;
  renderWho();
  const path = location.pathname.replace(/\/+$/, "");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", (a.dataset.nav === "incidents") === path.startsWith("/console/incidents"));
  const m = path.match(/^\/console\/incidents\/([^/]+)$/);
  if (m) return pageIncident(decodeURIComponent(m[1]));
  if (path === "/console/incidents") return pageIncidents();
  return pageTargets();
}

boot();
