// sagaflow dashboard: the overview (home page, #/ and #/overview) from
// GET /api/overview and GET /api/dead-letters: sagas per definition and status,
// started and ended per minute over the last hour as an inline SVG chart, stuck
// sagas, dead letters and the oldest open sagas. Loaded before app.js; uses its h(),
// api(), status(), sagaLink(), fmtTime() and fmtDur() when called.
"use strict";

const OVERVIEW_STATUSES = ["scheduled", "running", "compensating", "completed", "compensated", "failed", "cancelled"];
// Stacked in this order above the axis; `started` is drawn beside them.
const ENDED_KINDS = ["completed", "compensated", "failed", "cancelled"];

async function overviewView() {
  const [o, dl] = await Promise.all([
    api("/overview"),
    // The broker may be down while Postgres answers: the rest still shows.
    api("/dead-letters?limit=1").catch((e) => ({ error: e.message })),
  ]);
  const bySaga = new Map();
  for (const c of o.counts) {
    if (!bySaga.has(c.saga)) bySaga.set(c.saga, {});
    bySaga.get(c.saga)[c.status] = c.count;
  }
  const cell = (saga, s, n) => h("td", { testid: "overview-count", "data-saga": saga, "data-status": s, "data-count": n || 0 },
    n ? h("a", { href: "#/sagas?" + new URLSearchParams({ saga, status: s }) }, n) : h("span", { class: "muted" }, "0"));
  const counts = bySaga.size
    ? h("table", { testid: "overview-counts" },
        h("tr", {}, h("th", {}, "saga"), OVERVIEW_STATUSES.map((s) => h("th", {}, status(s)))),
        [...bySaga].map(([saga, n]) => h("tr", {}, h("td", { class: "mono" }, saga),
          OVERVIEW_STATUSES.map((s) => cell(saga, s, n[s])))))
    : h("p", { class: "muted", testid: "overview-empty" }, "No sagas stored.");

  const dlTotal = dl.error ? null : dl.queues.reduce((n, q) => n + q.messages, 0);
  const tiles = h("div", { class: "tiles" },
    h("a", { class: "tile" + (o.stuck ? " bad" : ""), href: "#/sagas?stuck=true", testid: "overview-stuck", "data-count": o.stuck },
      h("strong", {}, o.stuck), " stuck sagas"),
    h("a", { class: "tile" + (dlTotal ? " bad" : ""), href: "#/dead-letters", testid: "overview-dead-letters", "data-count": dlTotal ?? "" },
      dl.error ? ["dead letters: ", h("span", { class: "err" }, dl.error)] : [h("strong", {}, dlTotal), " dead letters"]),
    h("span", { class: "tile", testid: "overview-started-hour" },
      h("strong", {}, o.throughput.reduce((n, m) => n + m.started, 0)), " started in the last hour"),
    h("span", { class: "tile", testid: "overview-failed-hour" },
      h("strong", {}, o.throughput.reduce((n, m) => n + m.failed + m.compensated, 0)), " failed or compensated in the last hour"));

  const oldest = o.oldest_open.length
    ? h("table", { testid: "overview-oldest" },
        h("tr", {}, h("th", {}, "id"), h("th", {}, "saga"), h("th", {}, "status"), h("th", {}, "created"), h("th", {}, "age"), h("th", {}, "updated")),
        o.oldest_open.map((s) => h("tr", { testid: "oldest-row", "data-id": s.id },
          h("td", {}, sagaLink(s.id)), h("td", {}, s.saga + " v" + s.version), h("td", {}, status(s.status)),
          h("td", { class: "mono" }, fmtTime(s.created_at)), h("td", {}, fmtDur(new Date(o.now) - new Date(s.created_at))),
          h("td", { class: "mono" }, fmtTime(s.updated_at)))))
    : h("p", { class: "muted" }, "No running or compensating sagas.");

  return [h("h2", {}, "Overview"), tiles,
    h("h3", {}, "Sagas by definition and status"), counts,
    h("h3", {}, "Last hour, per minute"), ...throughputChart(o.throughput),
    h("h3", {}, "Oldest running and compensating sagas"), oldest,
    h("p", {}, h("a", { href: "#/sagas", testid: "overview-all-sagas" }, "All sagas »"))];
}

// Per minute: a `started` bar and beside it the ended sagas stacked by status, on one
// scale; a rect per non-zero count with data-minute, data-kind and data-count.
function throughputChart(minutes) {
  const W = 1100, H = 200, left = 40, bottom = 20, top = 8;
  const max = Math.max(1, ...minutes.map((m) => Math.max(m.started, ENDED_KINDS.reduce((n, k) => n + m[k], 0))));
  const slot = (W - left - 4) / Math.max(1, minutes.length);
  const y = (n) => H - bottom - (n / max) * (H - bottom - top);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "chart", testid: "throughput-chart",
    role: "img", "aria-label": "sagas started and ended per minute over the last hour" });
  for (const n of [0, Math.round(max / 2), max]) {
    svg.append(svgEl("line", { x1: left, x2: W, y1: y(n), y2: y(n), class: "tl-grid" }),
      svgEl("text", { x: left - 4, y: y(n) + 4, "text-anchor": "end", class: "tl-axis" }, n));
  }
  minutes.forEach((m, i) => {
    const x0 = left + i * slot;
    const bar = (kind, x, from, n) => {
      if (!n) return;
      const r = svgEl("rect", { x, y: y(from + n), width: Math.max(1, slot / 2 - 1), height: y(from) - y(from + n),
        class: "ch-" + kind, testid: "chart-bar", "data-kind": kind, "data-count": n, "data-minute": m.minute });
      r.append(svgEl("title", {}, `${fmtTime(m.minute)}: ${n} ${kind}`));
      svg.append(r);
    };
    bar("started", x0, 0, m.started);
    let from = 0;
    for (const k of ENDED_KINDS) { bar(k, x0 + slot / 2, from, m[k]); from += m[k]; }
    if (i % 10 === 0 || i === minutes.length - 1) {
      const ago = minutes.length - 1 - i;
      svg.append(svgEl("text", { x: x0 + slot / 2, y: H - 5, "text-anchor": "middle", class: "tl-axis" }, ago ? `-${ago} min` : "now"));
    }
  });
  const legend = h("div", { class: "tl-legend" }, ["started", ...ENDED_KINDS].map((k) =>
    h("span", {}, svgEl("svg", { width: 14, height: 10 }, svgEl("rect", { width: 14, height: 10, class: "ch-" + k })), " " + k)));
  return [svg, legend];
}
