//! Saga rows and their history.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::{ctx, StoreError};
use crate::saga::machine::HistoryEntry;
use crate::saga::state::SagaState;

/// A saga row as loaded for update.
#[derive(Debug, Clone)]
pub struct StoredSaga {
    pub state: SagaState,
    pub row_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A saga row to write after the machine ran.
#[derive(Debug, Clone)]
pub struct SagaWrite<'a> {
    pub state: &'a SagaState,
    /// `None` for a new saga; otherwise the version read under lock.
    pub expected_version: Option<i64>,
}

fn decode(row: &sqlx::postgres::PgRow) -> Result<StoredSaga, StoreError> {
    let id: String = row.get("id");
    let state: serde_json::Value = row.get("state");
    let state = serde_json::from_value(state).map_err(|e| StoreError::Corrupt {
        id,
        reason: e.to_string(),
    })?;
    Ok(StoredSaga {
        state,
        row_version: row.get("row_version"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

const COLUMNS: &str = "id, state, row_version, created_at, updated_at";

/// Locks the given sagas in id order (a fixed order keeps concurrent coordinators
/// from deadlocking on each other's batches).
pub async fn lock(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[String],
) -> Result<Vec<StoredSaga>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM sagas WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    let rows = sqlx::query(&sql)
        .bind(ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(ctx("lock sagas"))?;
    rows.iter().map(decode).collect()
}

/// Locks up to `limit` sagas whose wake-up is due, skipping rows another coordinator holds.
pub async fn lock_due(
    tx: &mut Transaction<'_, Postgres>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<StoredSaga>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM sagas WHERE wake_at <= $1 ORDER BY wake_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let rows = sqlx::query(&sql)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await
        .map_err(ctx("lock due sagas"))?;
    rows.iter().map(decode).collect()
}

struct Columns {
    ids: Vec<String>,
    names: Vec<String>,
    versions: Vec<i32>,
    statuses: Vec<String>,
    states: Vec<serde_json::Value>,
    wakes: Vec<Option<DateTime<Utc>>>,
    expected: Vec<i64>,
}

fn columns<'a>(writes: impl Iterator<Item = &'a SagaWrite<'a>>) -> Columns {
    let mut c = Columns {
        ids: vec![],
        names: vec![],
        versions: vec![],
        statuses: vec![],
        states: vec![],
        wakes: vec![],
        expected: vec![],
    };
    for w in writes {
        let s = w.state;
        c.ids.push(s.id.clone());
        c.names.push(s.saga.clone());
        c.versions.push(s.version as i32);
        c.statuses.push(s.status.as_str().to_string());
        c.states
            .push(serde_json::to_value(s).expect("saga state serialises"));
        c.wakes.push(s.next_wake());
        c.expected.push(w.expected_version.unwrap_or(0));
    }
    c
}

/// Inserts new sagas; returns the ids actually inserted (an existing id is left alone:
/// a second start with the same id starts nothing).
pub async fn insert_new(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[SagaWrite<'_>],
) -> Result<Vec<String>, StoreError> {
    if writes.is_empty() {
        return Ok(vec![]);
    }
    let c = columns(writes.iter());
    let rows = sqlx::query(
        "INSERT INTO sagas (id, name, version, status, state, wake_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[], $5::jsonb[], $6::timestamptz[])
         ORDER BY 1
         ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind(&c.ids).bind(&c.names).bind(&c.versions).bind(&c.statuses).bind(&c.states).bind(&c.wakes)
    .fetch_all(&mut **tx)
    .await
    .map_err(ctx("insert sagas"))?;
    Ok(rows.iter().map(|r| r.get("id")).collect())
}

/// Writes changed sagas, fenced by the version read under lock.
pub async fn update(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[SagaWrite<'_>],
) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let c = columns(writes.iter());
    let done = sqlx::query(
        "UPDATE sagas s SET status = u.status, state = u.state, wake_at = u.wake_at,
                row_version = s.row_version + 1, updated_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::int8[])
              AS u(id, status, state, wake_at, expected)
         WHERE s.id = u.id AND s.row_version = u.expected",
    )
    .bind(&c.ids)
    .bind(&c.statuses)
    .bind(&c.states)
    .bind(&c.wakes)
    .bind(&c.expected)
    .execute(&mut **tx)
    .await
    .map_err(ctx("update sagas"))?;
    if done.rows_affected() != writes.len() as u64 {
        return Err(StoreError::Conflict(c.ids.join(",")));
    }
    Ok(())
}

/// Appends history entries, each tagged with its saga id.
pub async fn append_history(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[(&str, &HistoryEntry)],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = entries.iter().map(|(id, _)| *id).collect();
    let ats: Vec<DateTime<Utc>> = entries.iter().map(|(_, h)| h.at).collect();
    let events: Vec<&str> = entries.iter().map(|(_, h)| h.event).collect();
    let steps: Vec<Option<&str>> = entries.iter().map(|(_, h)| h.step.as_deref()).collect();
    let attempts: Vec<Option<i32>> = entries
        .iter()
        .map(|(_, h)| h.attempt.map(|a| a as i32))
        .collect();
    let details: Vec<&serde_json::Value> = entries.iter().map(|(_, h)| &h.detail).collect();
    sqlx::query(
        "INSERT INTO saga_history (saga_id, at, event, step, attempt, detail)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::int4[], $6::jsonb[])",
    )
    .bind(&ids).bind(&ats).bind(&events).bind(&steps).bind(&attempts).bind(&details)
    .execute(&mut **tx)
    .await
    .map_err(ctx("append history"))?;
    Ok(())
}

/// Moves the wake-up of `ids` to `until` (sagas this coordinator cannot handle now).
pub async fn postpone_wake(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[String],
    until: DateTime<Utc>,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE sagas SET wake_at = $2 WHERE id = ANY($1)")
        .bind(ids)
        .bind(until)
        .execute(&mut **tx)
        .await
        .map_err(ctx("postpone wake-up"))?;
    Ok(())
}

/// One saga, without locking (operator reads).
pub async fn get(pool: &PgPool, id: &str) -> Result<Option<StoredSaga>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM sagas WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(ctx("get saga"))?;
    row.as_ref().map(decode).transpose()
}

/// A history line as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    pub at: DateTime<Utc>,
    pub event: String,
    pub step: Option<String>,
    pub attempt: Option<i32>,
    pub detail: serde_json::Value,
}

/// The history of one saga, oldest first.
pub async fn history(pool: &PgPool, id: &str) -> Result<Vec<HistoryRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT at, event, step, attempt, detail FROM saga_history WHERE saga_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(ctx("read history"))?;
    Ok(rows
        .iter()
        .map(|r| HistoryRow {
            at: r.get("at"),
            event: r.get("event"),
            step: r.get("step"),
            attempt: r.get("attempt"),
            detail: r.get("detail"),
        })
        .collect())
}

/// Saga counts by status (for progress displays and tests).
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    let rows =
        sqlx::query("SELECT status, count(*) AS n FROM sagas GROUP BY status ORDER BY status")
            .fetch_all(pool)
            .await
            .map_err(ctx("count sagas"))?;
    Ok(rows.iter().map(|r| (r.get("status"), r.get("n"))).collect())
}

/// Filters of an operator listing; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub saga: Option<String>,
    pub status: Option<String>,
    pub id_prefix: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Keyset position: rows strictly after this (created_at, id) in descending order.
    pub after: Option<(DateTime<Utc>, String)>,
}

/// One line of a listing: the columns, not the whole state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SagaSummary {
    pub id: String,
    pub saga: String,
    pub version: i32,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Up to `limit` sagas, newest first by (created_at, id). Keyset pagination rather
/// than OFFSET, so a page costs the same however deep it is and rows inserted
/// meanwhile do not shift later pages.
pub async fn list(
    pool: &PgPool,
    f: &ListFilter,
    limit: i64,
) -> Result<Vec<SagaSummary>, StoreError> {
    let (after_at, after_id) = f.after.clone().unzip();
    let rows = sqlx::query(
        "SELECT id, name, version, status, created_at, updated_at FROM sagas
         WHERE ($1::text IS NULL OR name = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR starts_with(id, $3))
           AND ($4::timestamptz IS NULL OR created_at > $4)
           AND ($5::timestamptz IS NULL OR created_at < $5)
           AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::text))
         ORDER BY created_at DESC, id DESC
         LIMIT $8",
    )
    .bind(&f.saga)
    .bind(&f.status)
    .bind(&f.id_prefix)
    .bind(f.created_after)
    .bind(f.created_before)
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(ctx("list sagas"))?;
    Ok(rows
        .iter()
        .map(|r| SagaSummary {
            id: r.get("id"),
            saga: r.get("name"),
            version: r.get("version"),
            status: r.get("status"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        })
        .collect())
}
