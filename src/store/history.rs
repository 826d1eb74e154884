//! A saga's history rows: appended by the coordinator, read a page at a time by the
//! API, the CLI and the dashboard.
//!
//! A page is a keyset range of `saga_history_saga (saga_id, id)`, the index whose
//! order is one saga's entries in order (the row id orders them):
//! `WHERE (saga_id, id) > ($1, $2) AND saga_id <= $1 ORDER BY saga_id, id LIMIT $3`
//! (mirrored for newest first). Postgres answers it with one range scan of that index
//! that stops after `limit` rows: no sort, no row of another saga, no row of this
//! saga outside the page. So the first page and a page deep into a 100,000-entry
//! history cost the same (tests/history.rs checks the plans; BENCHMARKS.md has the
//! figures). An OFFSET would read and discard every entry before the page.
//!
//! Why not the plainer `WHERE saga_id = $1 AND id > $2 ORDER BY id`: `saga_id = $1`
//! makes the planner treat `saga_id` as a constant, so the primary key (on `id`)
//! gives that order too, and for a saga that holds much of the table the planner
//! prefers it — walking every saga's rows by id and filtering (seen in the plan
//! test). Keyed on the pair, only `saga_history_saga` has the order asked for.
//!
//! The page queries live in `sql/` so that the test EXPLAINs the very text the code
//! runs ([`PAGE_ASC`], [`PAGE_DESC`]).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{ctx, StoreError};

/// The SQL of an ascending page: `$1` saga id, `$2` the id to start after, `$3` limit.
pub const PAGE_ASC: &str = include_str!("sql/history_page_asc.sql");
/// The SQL of a descending page: `$1` saga id, `$2` the id to start before, `$3` limit.
pub const PAGE_DESC: &str = include_str!("sql/history_page_desc.sql");

/// Which way a page runs through the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

impl std::str::FromStr for Order {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "asc" => Ok(Order::Asc),
            "desc" => Ok(Order::Desc),
            other => Err(format!("order must be `asc` or `desc`, not `{other}`")),
        }
    }
}

/// A history line as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    /// The row id: the position of the entry in its saga's history, and what a page
    /// cursor records. Not shown: it is an internal sequence, not an audit field.
    #[serde(skip)]
    pub id: i64,
    pub at: DateTime<Utc>,
    pub event: String,
    pub step: Option<String>,
    pub attempt: Option<i32>,
    pub detail: serde_json::Value,
}

/// A history row as selected (`detail` as text, parsed by [`decode`]).
struct Record {
    id: i64,
    at: DateTime<Utc>,
    event: String,
    step: Option<String>,
    attempt: Option<i32>,
    detail: String,
}

fn decode(saga_id: &str, r: Record) -> Result<HistoryRow, StoreError> {
    let detail = serde_json::from_str(&r.detail).map_err(|e| StoreError::Unreadable {
        what: format!("history entry {} of saga {saga_id}", r.id),
        reason: format!("column `detail`: {e}"),
    })?;
    Ok(HistoryRow {
        id: r.id,
        at: r.at,
        event: r.event,
        step: r.step,
        attempt: r.attempt,
        detail,
    })
}

/// Up to `limit` entries of saga `saga_id` in `order`, strictly after the entry with
/// id `after` in that order (`None`: from the start, or for `Desc` from the newest).
/// Entries appended meanwhile never shift a later page: an ascending reader meets
/// them at the end, a descending one never (they are newer than where it started).
pub async fn page(
    pool: &PgPool,
    saga_id: &str,
    order: Order,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<HistoryRow>, StoreError> {
    let rows = match order {
        // Ids start at 1 (bigserial), so 0 and i64::MAX are before and after every row.
        Order::Asc => {
            sqlx::query_file_as!(
                Record,
                "src/store/sql/history_page_asc.sql",
                saga_id,
                after.unwrap_or(0),
                limit
            )
            .fetch_all(pool)
            .await
        }
        Order::Desc => {
            sqlx::query_file_as!(
                Record,
                "src/store/sql/history_page_desc.sql",
                saga_id,
                after.unwrap_or(i64::MAX),
                limit
            )
            .fetch_all(pool)
            .await
        }
    }
    .map_err(ctx("read a history page"))?;
    rows.into_iter().map(|r| decode(saga_id, r)).collect()
}

/// How many entries of saga `saga_id` come before the entry with id `before` (those a
/// newest-first page left out). An index-only count on `saga_history_saga`.
pub async fn count_before(pool: &PgPool, saga_id: &str, before: i64) -> Result<i64, StoreError> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM saga_history WHERE saga_id = $1 AND id < $2"#,
        saga_id,
        before
    )
    .fetch_one(pool)
    .await
    .map_err(ctx("count history entries"))
}

/// The whole history of one saga, oldest first, in memory. For tests and tools that
/// know the history is short; the operator surfaces read [`page`]s.
pub async fn all(pool: &PgPool, saga_id: &str) -> Result<Vec<HistoryRow>, StoreError> {
    let rows = sqlx::query_as!(
        Record,
        r#"SELECT id, at, event, step, attempt, detail::text AS "detail!"
           FROM saga_history WHERE saga_id = $1 ORDER BY id"#,
        saga_id
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("read history"))?;
    rows.into_iter().map(|r| decode(saga_id, r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_parses_its_two_spellings_only() {
        assert_eq!("asc".parse::<Order>(), Ok(Order::Asc));
        assert_eq!("desc".parse::<Order>(), Ok(Order::Desc));
        for bad in ["", "ASC", "up", "desc "] {
            let e = bad.parse::<Order>().unwrap_err();
            assert!(e.contains("`asc` or `desc`"), "{e}");
        }
        for o in [Order::Asc, Order::Desc] {
            assert_eq!(o.as_str().parse::<Order>(), Ok(o));
        }
    }

    /// The page queries are the keyset form the index serves (see the module doc).
    #[test]
    fn pages_are_keyset_ranges_of_the_index_pair() {
        assert!(PAGE_ASC.contains("(saga_id, id) > ($1, $2) AND saga_id <= $1"));
        assert!(PAGE_ASC.contains("ORDER BY saga_id, id\n"));
        assert!(PAGE_DESC.contains("(saga_id, id) < ($1, $2) AND saga_id >= $1"));
        assert!(PAGE_DESC.contains("ORDER BY saga_id DESC, id DESC"));
        for q in [PAGE_ASC, PAGE_DESC] {
            assert!(q.contains("LIMIT $3") && !q.to_lowercase().contains("offset"));
        }
    }
}
