// sagaflow dashboard: plain JavaScript, no build step. Hash routes:
//   #/ and #/overview (overview.js)   #/sagas?status=failed   #/saga/<id>   #/dead-letters   #/schedules   #/queues   #/versions
"use strict";

const TOKEN_KEY = "sagaflow.token";
const view = document.getElementById("view");

// ---- helpers -------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "testid") el.setAttribute("data-testid", v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function status(s) {
  return h("span", { class: "status s-" + s, testid: "status" }, s);
}

function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d) ? t : d.toISOString().replace("T", " ").replace("Z", " UTC");
}

function fmtDur(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return "";
  const sign = ms < 0 ? "-" : "";
  ms = Math.abs(ms);
  if (ms < 1000) return sign + Math.round(ms) + " ms";
  if (ms < 60000) return sign + (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  if (ms < 3600000) return sign + Math.floor(ms / 60000) + " m " + Math.round((ms % 60000) / 1000) + " s";
  if (ms < 86400000) return sign + Math.floor(ms / 3600000) + " h " + Math.round((ms % 3600000) / 60000) + " m";
  return sign + Math.floor(ms / 86400000) + " d " + Math.round((ms % 86400000) / 3600000) + " h";
}

function json(v) {
  if (v === null || v === undefined) return "";
  return h("pre", {}, typeof v === "string" ? v : JSON.stringify(v, null, 1));
}

function flash(msg, isError) {
  const f = document.getElementById("flash");
  f.textContent = msg;
  f.className = isError ? "error" : "";
  f.hidden = !msg;
}

function sagaLink(id) {
  if (!id) return "";
  return h("a", { href: "#/saga/" + encodeURIComponent(id), class: "mono", testid: "saga-link" }, id);
}

// ---- API -----------------------------------------------------------------

class ApiError extends Error {}

async function api(path, opts) {
  for (let tries = 0; tries < 3; tries++) {
    // X-Sagaflow-Request: an API without tokens refuses changes without it (a
    // cross-site form cannot send it; see docs/security.md).
    const headers = { Accept: "application/json", "X-Sagaflow-Request": "1" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    const init = { method: "GET", headers };
    if (opts && opts.body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body);
    }
    const r = await fetch("/api" + path, init);
    if (r.status === 401) {
      const t = window.prompt("This sagaflow API needs a bearer token (kept for this tab only):");
      if (!t) throw new ApiError("unauthorized: no token given");
      sessionStorage.setItem(TOKEN_KEY, t.trim());
      document.getElementById("forget-token").hidden = false;
      continue;
    }
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) {
      const e = body && body.error;
      throw new ApiError(e ? `${e.code}: ${e.message}` : `HTTP ${r.status}`);
    }
    return body;
  }
  throw new ApiError("unauthorized");
}

async function act(label, path, body, after) {
  try {
    const r = await api(path, { body });
    flash(label + ": done" + summarize(r));
  } catch (e) {
    flash(label + ": " + e.message, true);
  }
  if (after) await after();
}

function summarize(r) {
  if (r && Array.isArray(r.messages)) {
    const applied = r.messages.filter((m) => m.applied).length;
    return ` (${applied} of ${r.messages.length} message(s) applied)`;
  }
  return "";
}

// ---- views ---------------------------------------------------------------

async function sagasView(params) {
  const q = new URLSearchParams();
  for (const k of ["saga", "status", "id_prefix", "stuck", "cursor"]) if (params.get(k)) q.set(k, params.get(k));
  q.set("limit", "50");
  const statuses = ["", "scheduled", "running", "compensating", "completed", "compensated", "failed", "cancelled"];
  const form = h("form", { class: "filters", testid: "saga-filters" },
    h("label", {}, "saga", h("input", { name: "saga", value: params.get("saga") || "", testid: "filter-saga" })),
    h("label", {}, "status", h("select", { name: "status", testid: "filter-status" },
      statuses.map((s) => h("option", { value: s, selected: (params.get("status") || "") === s }, s || "any")))),
    h("label", {}, "id prefix", h("input", { name: "id_prefix", value: params.get("id_prefix") || "", class: "mono", testid: "filter-id" })),
    // Sagas the reconciler found with nothing to move them (see the README, Reliability).
    h("label", { title: "flagged by the stuck-saga reconciler and still not moving" }, "stuck only",
      h("input", { type: "checkbox", name: "stuck", value: "true", checked: params.get("stuck") === "true", testid: "filter-stuck" })),
    h("button", { type: "submit", testid: "filter-apply" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) p.set(k, v);
    location.hash = "#/sagas" + (p.toString() ? "?" + p : "");
  });
  form.querySelector("select").addEventListener("change", () => form.requestSubmit());
  const page = await api("/sagas?" + q);
  // A row whose stored state cannot be read shows as `unreadable` (the reason on hover);
  // the rest of the list is unaffected.
  const rowStatus = (s) => s.unreadable
    ? h("span", { class: "status s-unreadable", testid: "status", title: s.unreadable }, "unreadable")
    : status(s.status);
  const rows = page.sagas.map((s) =>
    h("tr", { class: "clickable", testid: "saga-row", "data-id": s.id, "data-status": s.unreadable ? "unreadable" : s.status,
              onclick: () => { location.hash = "#/saga/" + encodeURIComponent(s.id); } },
      h("td", {}, sagaLink(s.id)), h("td", {}, s.saga + " v" + s.version), h("td", {}, rowStatus(s)),
      h("td", { class: "mono" }, fmtTime(s.created_at)), h("td", { class: "mono" }, fmtTime(s.updated_at))));
  const nav = h("div", { class: "actions" });
  if (params.get("cursor")) {
    const p = new URLSearchParams(params); p.delete("cursor");
    nav.append(h("a", { href: "#/sagas?" + p, testid: "first-page" }, "« first page"));
  }
  if (page.next_cursor) {
    const p = new URLSearchParams(params); p.set("cursor", page.next_cursor);
    nav.append(h("a", { href: "#/sagas?" + p, testid: "next-page" }, "next page »"));
  }
  // Bulk action on the current filter: a dry run first, the count in the confirm.
  const bulk = async (action) => {
    const filter = {};
    for (const k of ["saga", "status", "id_prefix"]) if (params.get(k)) filter[k] = params.get(k);
    if (!Object.keys(filter).length) { flash("bulk actions need a filter", true); return; }
    try {
      const dry = await api("/sagas/actions", { body: { action: { action }, ...filter, dry_run: true } });
      const ok = dry.sagas.filter((v) => !v.refused).length;
      if (!window.confirm(`${action}: applies to ${ok} of ${dry.sagas.length} selected saga(s). Send it?`)) return;
      const r = await api("/sagas/actions", { body: { action: { action }, ...filter } });
      flash(`${action}: sent to ${r.sent} saga(s)`);
    } catch (e) {
      flash(action + ": " + e.message, true);
    }
  };
  const bulkButtons = h("div", { class: "actions" },
    h("button", { type: "button", testid: "bulk-retry", onclick: () => bulk("retry") }, "Retry all matching…"),
    h("button", { type: "button", testid: "bulk-compensate", class: "danger", onclick: () => bulk("compensate") }, "Compensate all matching…"));
  return [h("h2", {}, "Sagas"), form, bulkButtons,
    rows.length ? h("table", { testid: "sagas-table" },
      h("tr", {}, h("th", {}, "id"), h("th", {}, "saga"), h("th", {}, "status"), h("th", {}, "created"), h("th", {}, "updated")), rows)
      : h("p", { class: "muted", testid: "sagas-empty" }, "No sagas match."),
    nav];
}

const BAD_EVENTS = /failed|timed_out|not_compensable|cancel|refused/;
const OK_EVENTS = /completed$|compensated$/;

async function sagaView(id) {
  const enc = encodeURIComponent(id);
  const [detail, history] = await Promise.all([api("/sagas/" + enc), historyPage(id, null)]);
  if (detail.unreadable) return unreadableView(id, detail.unreadable, history);
  const st = detail.state;
  const names = detail.step_names || [];
  const refresh = () => render();
  const op = (action, extra) => () => {
    if (!window.confirm(`${action} saga ${id}?`)) return;
    return act(action, "/sagas/" + enc + "/actions", Object.assign({ action }, extra || {}), refresh);
  };
  const info = h("dl", { class: "kv", testid: "saga-info" },
    h("dt", {}, "id"), h("dd", { class: "mono", testid: "saga-id" }, st.id),
    h("dt", {}, "saga"), h("dd", {}, st.saga + " v" + st.version),
    h("dt", {}, "status"), h("dd", { testid: "saga-status" }, status(st.status)),
    h("dt", {}, "created"), h("dd", { class: "mono" }, fmtTime(detail.created_at)),
    h("dt", {}, "updated"), h("dd", { class: "mono" }, fmtTime(detail.updated_at) + "  (" + fmtDur(new Date(detail.updated_at) - new Date(detail.created_at)) + " after creation)"),
    st.error ? [h("dt", {}, "error"), h("dd", { class: "err", testid: "saga-error" }, `${st.error.code}: ${st.error.message}`)] : null,
    h("dt", {}, "input"), h("dd", {}, json(st.input)));

  const timers = [];
  if (st.run_at) timers.push(["run_at (delayed start)", st.run_at]);
  if (detail.wake_at) timers.push(["wake_at (next wake-up)", detail.wake_at]);
  st.steps.forEach((s, i) => { if (s.until) timers.push([`until (${names[i] || "#" + i}: ${s.status})`, s.until]); });
  if (st.active && st.active.dispatch_at) timers.push(["retry dispatch_at", st.active.dispatch_at]);
  if (st.active && st.active.timeout_at) timers.push(["activity timeout_at", st.active.timeout_at]);
  const now = Date.now();
  const timerTable = timers.length
    ? h("table", { testid: "timers" }, h("tr", {}, h("th", {}, "timer"), h("th", {}, "at"), h("th", {}, "in")),
        timers.map(([k, t]) => h("tr", { testid: "timer-row" }, h("td", {}, k), h("td", { class: "mono" }, fmtTime(t)), h("td", {}, fmtDur(new Date(t) - now)))))
    : h("p", { class: "muted" }, "No pending timers.");

  const steps = h("table", { testid: "steps" },
    h("tr", {}, h("th", {}, "#"), h("th", {}, "step"), h("th", {}, "status"), h("th", {}, "attempts"), h("th", {}, "comp. attempts"), h("th", {}, "output"), h("th", {}, "error")),
    st.steps.map((s, i) => h("tr", { testid: "step-row", "data-step": names[i] || String(i), "data-status": s.status },
      h("td", {}, i === st.cursor && !["completed", "compensated", "failed", "cancelled"].includes(st.status) ? "▶ " + i : i),
      h("td", { class: "mono" }, names[i] || "#" + i),
      h("td", {}, status(s.status), s.fan_out ? fanOutSummary(s) : null),
      h("td", {}, s.attempts), h("td", {}, s.comp_attempts),
      h("td", {}, json(s.output)),
      h("td", { class: "err" }, s.error ? `${s.error.code}: ${s.error.message}${s.error.retryable ? "" : " (not retryable)"}` : ""))));

  // The Gantt chart of the history loaded so far (timeline.js), redrawn per page.
  const gantt = h("div", { testid: "gantt-section" });
  const family = await familySection(id, st);

  // The first page starts at the first entry, so t0 holds across "Load more".
  const t0 = history.entries.length ? new Date(history.entries[0].at) : null;
  let prev = t0;
  const timeline = historySection(id, history,
    h("tr", {}, h("th", {}, "at"), h("th", {}, "+since start"), h("th", {}, "+since previous"), h("th", {}, "event"), h("th", {}, "step"), h("th", {}, "attempt"), h("th", {}, "detail")),
    (e) => {
      const at = new Date(e.at);
      const row = h("tr", { testid: "event-row", "data-event": e.event },
        h("td", { class: "mono" }, fmtTime(e.at)),
        h("td", {}, fmtDur(at - t0)), h("td", {}, fmtDur(at - prev)),
        h("td", { class: BAD_EVENTS.test(e.event) ? "ev-bad" : OK_EVENTS.test(e.event) ? "ev-ok" : "" }, h("strong", {}, e.event)),
        h("td", { class: "mono" }, e.step || ""), h("td", {}, e.attempt ?? ""),
        h("td", {}, e.detail && Object.keys(e.detail).length ? json(e.detail) : ""));
      prev = at;
      return row;
    },
    (entries) => {
      const ended = ["completed", "compensated", "failed", "cancelled"].includes(st.status);
      const layout = timelineLayout(entries, ended ? undefined : Date.now());
      gantt.replaceChildren(...(layout.rows.length
        ? [timelineSvg(layout, fmtDur), timelineLegend(layout)]
        : [h("p", { class: "muted" }, "No steps have started.")]));
    });

  const buttons = h("div", { class: "actions" },
    h("button", { type: "button", testid: "action-retry", onclick: op("retry") }, "Retry failed step"),
    h("button", { type: "button", testid: "action-compensate", class: "danger", onclick: op("compensate") }, "Compensate"),
    h("button", { type: "button", testid: "action-skip", onclick: () => {
      const out = window.prompt("Skip the current step. Output to record (JSON):", "{}");
      if (out === null) return;
      let output;
      try { output = JSON.parse(out); } catch (e) { flash("skip: output is not JSON", true); return; }
      return op("skip", { output })();
    } }, "Skip step…"),
    h("button", { type: "button", testid: "action-resume", onclick: () => {
      const step = window.prompt("Resume the saga at step (the steps before it must still be completed):", names[st.cursor] || "");
      if (!step) return;
      return op("resume_at", { step })();
    } }, "Resume at step…"));

  return [h("h2", {}, "Saga ", h("span", { class: "mono" }, id)), info, family, h("h3", {}, "Operator actions"), buttons,
    h("h3", {}, "Timeline"), gantt,
    h("h3", {}, "Steps"), steps, h("h3", {}, "Timers"), timerTable, ...timeline];
}

// Parent and child sagas: the parent from `state.parent`; the children are the
// sagas with the id prefix `<id>/` (a child's id is `<parent id>/<step>`; deeper
// descendants are their children's), with the running ones named by `state.tasks`
// even before their row is listed.
async function familySection(id, st) {
  const parent = st.parent && st.parent.saga_id;
  let children = [];
  let error = null;
  try {
    const page = await api("/sagas?" + new URLSearchParams({ id_prefix: id + "/", limit: "100" }));
    children = page.sagas.filter((s) => !s.id.slice(id.length + 1).includes("/"));
  } catch (e) {
    error = e.message;
  }
  for (const t of st.tasks || []) {
    if (t.child && !children.some((c) => c.id === t.child)) children.push({ id: t.child, status: "running" });
  }
  if (!parent && !children.length && !error) return null;
  return h("dl", { class: "kv", testid: "saga-family" },
    parent ? [h("dt", {}, "parent"), h("dd", { testid: "saga-parent" }, sagaLink(parent))] : null,
    children.length || error ? [h("dt", {}, "children"), h("dd", { testid: "saga-children" },
      error ? h("span", { class: "err" }, error) : null,
      children.map((c) => h("span", { class: "child", testid: "saga-child", "data-id": c.id }, sagaLink(c.id), " ", status(c.status), " ")))] : null);
}

// A saga whose stored state cannot be decoded: its columns, the reason, its history
// (`history`: its first page).
function unreadableView(id, u, history) {
  const info = h("dl", { class: "kv", testid: "saga-info" },
    h("dt", {}, "id"), h("dd", { class: "mono", testid: "saga-id" }, id),
    h("dt", {}, "saga"), h("dd", {}, (u.saga || "?") + " v" + (u.version ?? "?")),
    h("dt", {}, "status"), h("dd", { testid: "saga-status" },
      h("span", { class: "status s-unreadable", testid: "status" }, "unreadable"), " (column: " + (u.status || "?") + ")"),
    h("dt", {}, "reason"), h("dd", { class: "err", testid: "saga-unreadable" }, u.reason),
    h("dt", {}, "created"), h("dd", { class: "mono" }, fmtTime(u.created_at)),
    h("dt", {}, "updated"), h("dd", { class: "mono" }, fmtTime(u.updated_at)));
  const timeline = historySection(id, history,
    h("tr", {}, h("th", {}, "at"), h("th", {}, "event"), h("th", {}, "step"), h("th", {}, "attempt"), h("th", {}, "detail")),
    (e) => h("tr", { testid: "event-row", "data-event": e.event },
      h("td", { class: "mono" }, fmtTime(e.at)), h("td", {}, h("strong", {}, e.event)),
      h("td", { class: "mono" }, e.step || ""), h("td", {}, e.attempt ?? ""),
      h("td", {}, e.detail && Object.keys(e.detail).length ? json(e.detail) : "")));
  return [h("h2", {}, "Saga ", h("span", { class: "mono" }, id)),
    h("p", { class: "err" }, "The stored state of this saga cannot be read: the coordinator dead-letters every message for it. Repair or delete the row in Postgres."),
    info, ...timeline];
}

async function deadLettersView() {
  const d = await api("/dead-letters?limit=50");
  const refresh = () => render();
  const dlq = (queue, action, saga) => () => {
    const what = saga ? `the dead letters of saga ${saga} in ${queue}` : `ALL dead letters in ${queue}`;
    if (!window.confirm(`${action === "replay" ? "Replay" : "Purge (delete for good)"} ${what}?`)) return;
    return act(action, `/dead-letters/${encodeURIComponent(queue)}/${action}`, { saga: saga || null, dry_run: false }, refresh);
  };
  const queues = h("table", { testid: "dlq-queues" },
    h("tr", {}, h("th", {}, "queue"), h("th", {}, "messages"), h("th", {}, "")),
    d.queues.map((q) => h("tr", { testid: "dlq-queue", "data-queue": q.queue, "data-count": q.messages },
      h("td", { class: "mono" }, q.queue),
      h("td", { testid: "dlq-count", class: q.messages ? "err" : "" }, q.messages),
      h("td", {}, q.messages ? [
        h("button", { type: "button", testid: "replay-queue", onclick: dlq(q.queue, "replay", null) }, "Replay all"), " ",
        h("button", { type: "button", class: "danger", testid: "purge-queue", onclick: dlq(q.queue, "purge", null) }, "Purge all")] : ""))));
  const msgs = d.messages.length
    ? h("table", { testid: "dlq-messages" },
        h("tr", {}, h("th", {}, "queue"), h("th", {}, "reason"), h("th", {}, "saga"), h("th", {}, "step"), h("th", {}, "activity"), h("th", {}, "attempt"), h("th", {}, "body"), h("th", {}, "")),
        d.messages.map((m) => h("tr", { testid: "dead-letter", "data-queue": m.queue, "data-saga": m.about.saga_id || "" },
          h("td", { class: "mono" }, m.queue), h("td", { class: "err" }, m.reason),
          h("td", {}, sagaLink(m.about.saga_id)), h("td", { class: "mono" }, m.about.step || ""),
          h("td", { class: "mono" }, m.about.activity || ""), h("td", {}, m.about.attempt ?? ""),
          h("td", {}, json(m.body)),
          h("td", {}, m.about.saga_id ? [
            h("button", { type: "button", testid: "replay", onclick: dlq(m.queue, "replay", m.about.saga_id) }, "Replay"), " ",
            h("button", { type: "button", class: "danger", testid: "purge", onclick: dlq(m.queue, "purge", m.about.saga_id) }, "Purge")] : ""))))
    : h("p", { class: "muted", testid: "dlq-empty" }, "No dead letters.");
  return [h("h2", {}, "Dead letters"), queues, h("h3", {}, "Messages"), msgs];
}

async function schedulesView() {
  const d = await api("/schedules");
  const rows = d.schedules || [];
  const refresh = () => render();
  const cmd = (name, action) => () => {
    if (!window.confirm(`${action} schedule ${name}?`)) return;
    return act(action, `/schedules/${encodeURIComponent(name)}/${action}`, {}, refresh);
  };
  if (!rows.length) return [h("h2", {}, "Schedules"), h("p", { class: "muted", testid: "schedules-empty" }, "No schedules.")];
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => k !== "input");
  return [h("h2", {}, "Schedules"), h("table", { testid: "schedules" },
    h("tr", {}, cols.map((c) => h("th", {}, c)), h("th", {}, "input"), h("th", {}, "")),
    rows.map((r) => h("tr", { testid: "schedule-row", "data-name": r.name },
      cols.map((c) => h("td", { class: /_at$|^name$/.test(c) ? "mono" : "" },
        typeof r[c] === "boolean" ? (c === "paused" && r[c] ? status("paused") : String(r[c]))
          : r[c] !== null && typeof r[c] === "object" ? json(r[c]) : /_at$/.test(c) ? fmtTime(r[c]) : r[c] ?? "")),
      h("td", {}, json(r.input)),
      h("td", {},
        r.paused
          ? h("button", { type: "button", testid: "schedule-resume", onclick: cmd(r.name, "resume") }, "Resume")
          : h("button", { type: "button", testid: "schedule-pause", onclick: cmd(r.name, "pause") }, "Pause"), " ",
        h("button", { type: "button", testid: "schedule-trigger", onclick: cmd(r.name, "trigger") }, "Trigger now")))))];
}

async function queuesView() {
  const qs = await api("/queues");
  return [h("h2", {}, "Queues"), h("table", { testid: "queues" },
    h("tr", {}, h("th", {}, "activity"), h("th", {}, "queue"), h("th", {}, "ready"), h("th", {}, "consumers")),
    qs.map((q) => h("tr", { testid: "queue-row", "data-queue": q.queue },
      h("td", { class: "mono" }, q.activity), h("td", { class: "mono" }, q.queue),
      h("td", { class: q.ready > 0 ? "err" : "" }, q.ready),
      h("td", { class: q.consumers === 0 ? "err" : "" }, q.consumers))))];
}

// The version drain: what still holds each definition version (see docs/operations.md).
async function versionsView() {
  const r = await api("/versions");
  const cols = ["scheduled", "running", "compensating", "failed", "schedules"];
  const loaded = (v) => !v.loaded ? h("span", { class: "err" }, "NOT LOADED") : v.latest ? "latest" : "yes";
  const table = r.versions.length
    ? h("table", { testid: "versions" },
        h("tr", {}, h("th", {}, "saga"), h("th", {}, "version"), h("th", {}, "loaded"), cols.map((c) => h("th", {}, c)), h("th", {}, "safe to unload")),
        r.versions.map((v) => h("tr", { testid: "version-row", "data-saga": v.saga, "data-version": v.version, "data-safe": String(v.safe_to_unload) },
          h("td", { class: "mono" }, v.saga), h("td", {}, v.version), h("td", {}, loaded(v)),
          cols.map((c) => h("td", { testid: "version-" + c, class: c === "failed" && v[c] > 0 ? "err" : "" }, v[c])),
          h("td", { class: v.safe_to_unload ? "" : "err" }, v.safe_to_unload ? "yes" : "no: " + v.reason))))
    : h("p", { class: "muted", testid: "versions-empty" }, "No definitions loaded and no sagas stored.");
  const orphans = r.unloaded_schedules.map((s) =>
    h("p", { class: "err", testid: "unloaded-schedules" }, `${s.schedules} schedule(s) of ${s.saga} start nothing: no version of it is loaded.`));
  return [h("h2", {}, "Versions"),
    h("p", { class: "muted" }, "Loaded: by this API process (its sagas_dir). Remove a version's file only when it is safe to unload."),
    table, orphans];
}

// ---- routing -------------------------------------------------------------

let generation = 0;

async function render() {
  const gen = ++generation;
  const hash = location.hash.replace(/^#\/?/, "") || "overview";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const top = path.split("/")[0];
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === "#/" + (top === "saga" ? "sagas" : top));
  }
  let content;
  try {
    if (top === "saga") content = await sagaView(decodeURIComponent(path.slice(5)));
    else if (top === "dead-letters") content = await deadLettersView();
    else if (top === "schedules") content = await schedulesView();
    else if (top === "queues") content = await queuesView();
    else if (top === "versions") content = await versionsView();
    else if (top === "sagas") content = await sagasView(params);
    else content = await overviewView();
  } catch (e) {
    content = h("p", { class: "err", testid: "load-error" }, "Could not load: " + e.message);
  }
  if (gen !== generation) return; // a newer navigation won
  view.replaceChildren(...[content].flat());
  view.setAttribute("data-loaded", String(gen));
}

window.addEventListener("hashchange", () => { flash(""); render(); });
document.getElementById("refresh").addEventListener("click", () => render());
document.getElementById("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
document.getElementById("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("forget-token").hidden = true;
});
render();

// A for_each step's elements in one line: finished elements are rows of their own,
// so the state has counters and the elements in flight (`s.elements`).
function fanOutSummary(s) {
  const p = s.fan_out;
  const inFlight = Object.values(s.elements || {}).filter((e) => ["running", "compensating"].includes(e.status)).length;
  const parts = [`${p.completed}/${p.total} done`, `${inFlight} running`, `${p.failed} failed`];
  if (p.compensated) parts.push(`${p.compensated} undone`);
  return h("div", { class: "muted", testid: "fan-out-summary" }, parts.join(" · "));
}
