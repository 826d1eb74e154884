// sagaflow dashboard: a saga's timeline (Gantt) drawn from its history. Two parts:
// timelineLayout(entries, end) is pure (history entries -> rows of bars with start,
// end and kind; tests call it in the page) and timelineSvg(layout) draws it as
// inline SVG. Loaded before app.js.
"use strict";

// Bar kinds, in legend order: the CSS classes are `tl-<kind>`.
const TIMELINE_KINDS = ["step", "attempt", "attempt_failed", "retry", "sleep", "wait",
  "compensation", "compensation_failed", "skipped"];

// What closes an open bar of each kind, and the kind the bar takes when it closes.
const TIMELINE_CLOSE = {
  step: { step_completed: "step", step_failed: "step", step_not_compensable: "step", step_skipped: "step" },
  attempt: { attempt_failed: "attempt_failed", attempt_timed_out: "attempt_failed", step_completed: "attempt",
             step_failed: "attempt_failed", step_skipped: "attempt" },
  retry: { attempt_started: "retry", step_failed: "retry", step_skipped: "retry" },
  sleep: { sleep_completed: "sleep", step_completed: "sleep", step_skipped: "sleep" },
  wait: { wait_completed: "wait", wait_timed_out: "wait", signal_received: "wait", step_completed: "wait", step_skipped: "wait" },
  compensation: { compensation_completed: "compensation", compensation_failed: "compensation_failed",
                  compensation_attempt_failed: "compensation_failed" },
};

// History entries (oldest first; {at, event, step, attempt, detail}) -> {start, end,
// rows}. A row per step (a parallel branch's row is grouped under its parallel step,
// named by `detail.in`), in order of first appearance; each row holds bars
// {kind, start, end, attempt, open} in ms since the epoch. A bar still open at the
// last entry ends at `end` (ms; default: the last entry) and is marked open.
function timelineLayout(entries, end) {
  const ms = (t) => new Date(t).getTime();
  const rows = [];
  const byKey = new Map();
  const rowFor = (e) => {
    const group = (e.detail && typeof e.detail.in === "string") ? e.detail.in : null;
    // A for_each step's elements share one row (thousands of rows would bury the
    // chart); their bars overlap on it.
    const element = group && typeof (e.detail || {}).index === "number";
    const step = element ? group + "[…]" : (e.step || "");
    const key = group ? group + "\u0000" + step : step;
    let row = byKey.get(key);
    if (!row) {
      row = { key, step, group, bars: [], open: {} };
      byKey.set(key, row);
      if (group && !byKey.has(group)) {
        // The parallel step's own row comes before its branches.
        const parent = { key: group, step: group, group: null, bars: [], open: {} };
        byKey.set(group, parent);
        rows.push(parent);
      }
      if (group) {
        // After its group's last row, so branches stay together.
        let at = rows.indexOf(byKey.get(group)) + 1;
        while (at < rows.length && rows[at].group === group) at++;
        rows.splice(at, 0, row);
      } else rows.push(row);
    }
    return row;
  };
  const open = (row, kind, at, e, until) => {
    const bar = { kind, start: at, end: until !== undefined ? until : null, attempt: e.attempt ?? null, open: false };
    row.bars.push(bar);
    row.open[kind] = bar;
  };
  const close = (row, at, event) => {
    for (const [kind, bar] of Object.entries(row.open)) {
      const as = TIMELINE_CLOSE[kind] && TIMELINE_CLOSE[kind][event];
      if (!as) continue;
      // A retry wait ends when its delay ran out, or at the next attempt if earlier.
      bar.start = Math.min(bar.start, at);
      bar.end = bar.end === null ? at : Math.min(bar.end, at);
      bar.kind = as;
      delete row.open[kind];
    }
  };
  let first = null;
  let last = null;
  for (const e of entries) {
    const at = ms(e.at);
    if (isNaN(at)) continue;
    if (first === null) first = at;
    last = at;
    if (!e.step) continue;
    const row = rowFor(e);
    const d = e.detail || {};
    close(row, at, e.event);
    switch (e.event) {
      case "step_started":
      case "parallel_started":
        if (!row.open.step) open(row, "step", at, e);
        // An activity step's first attempt starts with it (`attempt` 1).
        if (d.activity && !row.open.attempt) open(row, "attempt", at, e);
        break;
      case "attempt_started":
        if (row.open.compensation) break;
        if (!row.open.step) open(row, "step", at, e);
        if (row.open.attempt) {
          // The attempt a retry wait implied starts now rather than when planned.
          row.open.attempt.start = at;
          row.open.attempt.attempt = e.attempt ?? row.open.attempt.attempt;
        } else open(row, "attempt", at, e);
        break;
      case "retry_scheduled": {
        // The wait in a delay queue, then the next attempt: no entry marks its start,
        // so it is drawn from the end of the wait (`attempt` is the next one's).
        const delay = Number(d.delay_ms);
        const known = isFinite(delay) && delay >= 0;
        open(row, "retry", at, e, known ? at + delay : undefined);
        if (known) open(row, d.kind === "compensation" ? "compensation" : "attempt", at + delay, e);
        break;
      }
      case "sleep_started": {
        const until = ms(d.until);
        open(row, "sleep", at, e);
        if (!isNaN(until)) row.open.sleep.planned = until;
        break;
      }
      case "wait_started":
        open(row, "wait", at, e);
        break;
      case "compensation_started":
        if (!row.open.compensation) open(row, "compensation", at, e);
        break;
      case "step_skipped":
        row.bars.push({ kind: "skipped", start: at, end: at, attempt: null, open: false });
        break;
      default:
        break;
    }
  }
  // Open bars run to the end of the picture: `end`, the last entry, or the latest
  // planned end (a sleep's `until`, a retry's delay), whichever is latest.
  let stop = end !== undefined && end !== null && !isNaN(end) ? Math.max(end, last ?? end) : last;
  for (const row of rows) {
    for (const bar of row.bars) {
      if (bar.end === null && bar.planned !== undefined) bar.end = Math.max(bar.planned, bar.start);
      if (bar.end !== null) stop = Math.max(stop ?? bar.end, bar.end);
    }
  }
  for (const row of rows) {
    for (const bar of row.bars) {
      // Still open at the last entry: not ended, or planned to end after it.
      if (bar.end === null || (Object.values(row.open).includes(bar) && bar.end > last)) bar.open = true;
      if (bar.end === null) bar.end = stop;
      delete bar.planned;
    }
    delete row.open;
  }
  return { start: first, end: stop, rows };
}

// ---- drawing -------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    el.setAttribute(k === "testid" ? "data-testid" : k, String(v));
  }
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// The layout as an SVG Gantt chart: one line per row, the label on the left, each
// bar with a tooltip (kind, attempt, duration) and data-kind for tests.
function timelineSvg(layout, fmtDuration) {
  const label = 190, width = 1100, rowH = 22, top = 22;
  const span = Math.max(1, layout.end - layout.start);
  const x = (t) => label + ((t - layout.start) / span) * (width - label - 10);
  const height = top + layout.rows.length * rowH + 6;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", class: "timeline", testid: "gantt",
    role: "img", "aria-label": "timeline of the saga's steps" });
  for (let i = 0; i <= 4; i++) {
    const t = layout.start + (span * i) / 4;
    svg.append(svgEl("line", { x1: x(t), x2: x(t), y1: top - 4, y2: height, class: "tl-grid" }),
      svgEl("text", { x: x(t), y: 12, class: "tl-axis", "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
        "+" + fmtDuration(t - layout.start)));
  }
  layout.rows.forEach((row, i) => {
    const y = top + i * rowH;
    const g = svgEl("g", { testid: "gantt-row", "data-step": row.step, "data-group": row.group });
    g.append(svgEl("text", { x: row.group ? 18 : 4, y: y + 15, class: "tl-label" }, (row.group ? "└ " : "") + row.step));
    for (const b of row.bars) {
      const thin = b.kind === "step";
      const w = Math.max(b.kind === "skipped" ? 4 : 2, x(b.end) - x(b.start));
      const rect = svgEl("rect", {
        x: x(b.start), y: y + (thin ? 8 : 3), width: w, height: thin ? 6 : 16, rx: 2,
        class: "tl-" + b.kind + (b.open ? " tl-open" : ""), testid: "gantt-bar", "data-kind": b.kind,
        "data-step": row.step, "data-attempt": b.attempt });
      rect.append(svgEl("title", {}, `${row.step}: ${b.kind.replace("_", " ")}` +
        (b.attempt ? ` (attempt ${b.attempt})` : "") + `, ${fmtDuration(b.end - b.start)}` + (b.open ? ", not ended" : "")));
      g.append(rect);
    }
    svg.append(g);
  });
  return svg;
}

// The legend: a swatch and a name per kind that the layout uses.
function timelineLegend(layout) {
  const used = new Set(layout.rows.flatMap((r) => r.bars.map((b) => b.kind)));
  const legend = document.createElement("div");
  legend.className = "tl-legend";
  for (const kind of TIMELINE_KINDS.filter((k) => used.has(k))) {
    const item = document.createElement("span");
    const swatch = svgEl("svg", { width: 14, height: 10 }, svgEl("rect", { width: 14, height: 10, rx: 2, class: "tl-" + kind }));
    item.append(swatch, " " + kind.replace("_", " "));
    legend.append(item);
  }
  return legend;
}
