//! `sagaflow sagas show <id>`: one saga as stored, readable or not, with the newest
//! part of its history (`--history-limit N`, default 200) or all of it (`--all`,
//! streamed a page at a time: a saga may have 100,000 entries).

use std::io::Write;

use super::{SagaNotFound, ShowArgs};
use crate::cli::database::pool;
use crate::config::Settings;
use crate::store::history::{self, HistoryRow, Order};
use crate::store::sagas;

/// History entries shown without `--history-limit` or `--all`.
pub const DEFAULT_HISTORY: u64 = 200;

/// Rows per query when paging through a history (the API's largest page).
const PAGE: i64 = 1000;

/// Which history entries to show.
#[derive(Debug, Clone, Copy)]
enum Span {
    Newest(u64),
    All,
}

/// `sagas show <id>` (and the deprecated `status <id>`): the saga, its timers and its
/// history. A saga that does not exist is [`SagaNotFound`] (exit code 3).
pub async fn show(settings: &Settings, args: ShowArgs) -> anyhow::Result<()> {
    let (id, json) = (args.id.as_str(), args.json);
    let span = if args.all {
        Span::All
    } else {
        Span::Newest(args.history_limit)
    };
    let pool = pool(settings).await?;
    let saga = match sagas::read(&pool, id).await? {
        None => return Err(SagaNotFound(id.to_string()).into()),
        Some(Ok(saga)) => saga,
        Some(Err(u)) => return unreadable(&pool, *u, json, span).await,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout());
    if json {
        let children = sagas::children(&pool, id).await?;
        let head = serde_json::json!({ "saga": saga.state, "children": children, "created_at": saga.created_at, "updated_at": saga.updated_at });
        return print_history(&pool, id, span, Some(head), &mut out).await;
    }
    let s = &saga.state;
    writeln!(out, "saga     {} ({} v{})", s.id, s.saga, s.version)?;
    writeln!(out, "status   {}", s.status)?;
    if let Some(at) = s.run_at {
        writeln!(out, "runs at  {}", at.to_rfc3339())?;
    }
    if let Some(at) = s.next_wake().filter(|_| s.run_at.is_none()) {
        writeln!(
            out,
            "wakes at {} (sleep, wait timeout, activity timeout or parked retry)",
            at.to_rfc3339()
        )?;
    }
    writeln!(
        out,
        "created  {}   updated {}",
        saga.created_at.to_rfc3339(),
        saga.updated_at.to_rfc3339()
    )?;
    if let Some(e) = &s.error {
        writeln!(out, "error    {}: {}", e.code, e.message)?;
    }
    if let Some(p) = &s.parent {
        writeln!(out, "parent   {}", p.saga_id)?;
    }
    for c in sagas::children(&pool, id).await? {
        writeln!(out, "child    {} ({})", c.id, c.status)?;
    }
    print_history(&pool, id, span, None, &mut out).await
}

/// `show` of a saga whose stored state cannot be decoded: what its columns say, the
/// reason and its history, then an error (exit code 1) naming the reason.
async fn unreadable(
    pool: &sqlx::PgPool,
    u: sagas::UnreadableSaga,
    json: bool,
    span: Span,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout());
    if json {
        let head = serde_json::json!({ "saga": null, "unreadable": &u });
        print_history(pool, &u.id, span, Some(head), &mut out).await?;
        return Err(u.error().into());
    }
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    writeln!(
        out,
        "saga     {} ({} v{})",
        u.id,
        or_unknown(u.saga.clone()),
        or_unknown(u.version.map(|v| v.to_string()))
    )?;
    writeln!(
        out,
        "status   unreadable (the status column says {})",
        or_unknown(u.status.clone())
    )?;
    writeln!(out, "reason   {}", u.reason)?;
    print_history(pool, &u.id, span, None, &mut out).await?;
    Err(u.error().into())
}

/// Prints the history entries `span` selects, oldest first: as a table (after a line
/// saying how many older entries are left out, if any), or, with a JSON `head`, as
/// that object with `history_hidden` (that count) and `history` added. `--all` prints
/// each page as it is read, so memory holds one page whatever the history's length.
async fn print_history(
    pool: &sqlx::PgPool,
    id: &str,
    span: Span,
    head: Option<serde_json::Value>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (shown, hidden) = match span {
        Span::Newest(n) => newest(pool, id, n).await?,
        Span::All => (vec![], 0),
    };
    let mut sink = match head {
        Some(head) => Sink::json(out, head, hidden)?,
        None => {
            if hidden > 0 {
                writeln!(
                    out,
                    "\n{hidden} older history entries are not shown (the newest {} are); \
                     --history-limit N shows the newest N, --all shows every entry",
                    shown.len()
                )?;
            }
            Sink::table(out)?
        }
    };
    match span {
        Span::Newest(_) => sink.rows(out, &shown)?,
        Span::All => {
            let mut after = None;
            loop {
                let page = history::page(pool, id, Order::Asc, after, PAGE).await?;
                sink.rows(out, &page)?;
                out.flush()?;
                match page.last() {
                    Some(last) if page.len() as i64 == PAGE => after = Some(last.id),
                    _ => break,
                }
            }
        }
    }
    sink.finish(out)?;
    out.flush()?;
    Ok(())
}

/// The newest `n` entries, oldest first, and how many older ones there are.
async fn newest(pool: &sqlx::PgPool, id: &str, n: u64) -> anyhow::Result<(Vec<HistoryRow>, i64)> {
    let mut rows: Vec<HistoryRow> = vec![];
    let mut exhausted = false;
    while !exhausted && (rows.len() as u64) < n {
        let want = (n - rows.len() as u64).min(PAGE as u64) as i64;
        let after = rows.last().map(|r| r.id);
        let page = history::page(pool, id, Order::Desc, after, want).await?;
        exhausted = (page.len() as i64) < want;
        rows.extend(page);
    }
    let hidden = if exhausted {
        0
    } else {
        let oldest = rows.last().map_or(i64::MAX, |r| r.id);
        history::count_before(pool, id, oldest).await?
    };
    rows.reverse();
    Ok((rows, hidden))
}

/// Where history rows go: table lines, or the elements of a JSON array written one
/// at a time after the rest of the object.
enum Sink {
    Table,
    Json { first: bool },
}

impl Sink {
    fn table(out: &mut impl Write) -> std::io::Result<Sink> {
        writeln!(
            out,
            "\n{:<28} {:<26} {:<18} {:>7}  detail",
            "at", "event", "step", "attempt"
        )?;
        Ok(Sink::Table)
    }

    /// Writes `head` (an object) without its closing brace, then opens `history`.
    fn json(
        out: &mut impl Write,
        mut head: serde_json::Value,
        hidden: i64,
    ) -> anyhow::Result<Sink> {
        if let Some(o) = head.as_object_mut() {
            o.insert("history_hidden".into(), hidden.into());
        }
        let text = serde_json::to_string_pretty(&head)?;
        let open = text.strip_suffix("\n}").unwrap_or(&text);
        write!(out, "{open},\n  \"history\": [")?;
        Ok(Sink::Json { first: true })
    }

    fn rows(&mut self, out: &mut impl Write, rows: &[HistoryRow]) -> anyhow::Result<()> {
        for h in rows {
            match self {
                Sink::Table => {
                    let detail = if h.detail == serde_json::json!({}) {
                        String::new()
                    } else {
                        h.detail.to_string()
                    };
                    writeln!(
                        out,
                        "{:<28} {:<26} {:<18} {:>7}  {}",
                        h.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                        h.event,
                        h.step.as_deref().unwrap_or_default(),
                        h.attempt.map(|a| a.to_string()).unwrap_or_default(),
                        detail
                    )?;
                }
                Sink::Json { first } => {
                    let sep = if *first { "" } else { "," };
                    *first = false;
                    write!(out, "{sep}\n    {}", serde_json::to_string(h)?)?;
                }
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut impl Write) -> std::io::Result<()> {
        match self {
            Sink::Table => Ok(()),
            Sink::Json { first: true } => writeln!(out, "]\n}}"),
            Sink::Json { first: false } => writeln!(out, "\n  ]\n}}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, event: &str) -> HistoryRow {
        HistoryRow {
            id,
            at: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
            event: event.into(),
            step: Some("s".into()),
            attempt: Some(1),
            detail: serde_json::json!({"k": 1}),
        }
    }

    /// The JSON is written in pieces; the pieces make one document.
    #[test]
    fn streamed_json_is_one_document() {
        for pages in [
            vec![],
            vec![vec![]],
            vec![vec![row(1, "a")], vec![row(2, "b"), row(3, "c")]],
        ] {
            let mut out = vec![];
            let head = serde_json::json!({"saga": {"id": "o-1"}, "created_at": "x"});
            let mut sink = Sink::json(&mut out, head, 7).unwrap();
            for p in &pages {
                sink.rows(&mut out, p).unwrap();
            }
            sink.finish(&mut out).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
            assert_eq!(v["saga"]["id"], "o-1");
            assert_eq!(v["history_hidden"], 7);
            let events: Vec<&str> = v["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event"].as_str().unwrap())
                .collect();
            let expected: Vec<String> = pages.iter().flatten().map(|r| r.event.clone()).collect();
            assert_eq!(events, expected);
            assert!(
                v["history"][0].get("id").is_none(),
                "the row id is internal"
            );
        }
    }
}
