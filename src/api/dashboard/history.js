// sagaflow dashboard: a saga's history a page at a time. A saga may have 100,000
// entries, so its page loads the first HISTORY_PAGE and a "Load more" button
// appends the next page by the API's cursor (GET /api/sagas/{id}/history). Loaded
// before app.js; uses its h(), api() and flash() when called.
"use strict";

const HISTORY_PAGE = 200;

// One page of saga `id`'s history, oldest first, after `cursor` (none: the first).
function historyPage(id, cursor) {
  const q = new URLSearchParams({ limit: String(HISTORY_PAGE) });
  if (cursor) q.set("cursor", cursor);
  return api("/sagas/" + encodeURIComponent(id) + "/history?" + q);
}

// The history section of saga `id` from its first page: a heading with the count
// shown, a table (`header` row, then `row(entry)` per entry, called in order across
// pages) and the "Load more" button, hidden once there is nothing more.
// `onPage(entries)`, when given, is called after each page with every entry so far.
function historySection(id, first, header, row, onPage) {
  const table = h("table", { testid: "timeline" }, header);
  const count = h("span", { testid: "history-count" });
  const more = h("button", { type: "button", testid: "history-more" }, "Load more");
  let cursor = null;
  let shown = 0;
  const all = [];
  const add = (page) => {
    for (const e of page.entries) table.append(row(e));
    all.push(...page.entries);
    if (onPage) onPage(all);
    shown += page.entries.length;
    cursor = page.next_cursor;
    more.hidden = !cursor;
    count.textContent = cursor ? `first ${shown} events; more to load` : `${shown} events`;
  };
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      add(await historyPage(id, cursor));
    } catch (e) {
      flash("history: " + e.message, true);
    }
    more.disabled = false;
  });
  add(first);
  return [h("h3", {}, "History (", count, ")"), table, h("div", { class: "actions" }, more)];
}
