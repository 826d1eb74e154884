//! Saga rows: locking, fenced writes, operator reads and listings (their history is
//! [`super::history`]).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Tx;

use super::{ctx, StoreError};
use crate::saga::state::SagaState;

/// A saga row as loaded for update.
#[derive(Debug, Clone)]
pub struct StoredSaga {
    pub state: SagaState,
    pub row_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which committed row a write may replace: its `row_version`, and its
/// `created_at`, which tells this saga from an earlier one with the same id that was
/// purged (its versions started at 1 too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub version: i64,
    pub created_at: DateTime<Utc>,
}

impl StoredSaga {
    /// The fence a write of this row, as read, must pass.
    pub fn fence(&self) -> Fence {
        Fence {
            version: self.row_version,
            created_at: self.created_at,
        }
    }
}

/// A saga row to write after the machine ran.
#[derive(Debug, Clone)]
pub struct SagaWrite<'a> {
    pub state: &'a SagaState,
    /// `None` for a new saga; otherwise the row as read (under lock, or cached).
    pub fence: Option<Fence>,
}

/// A saga row whose stored state cannot be decoded (or contradicts its row): what can
/// be read of its columns, and why. It is reported, never a panic: the API and the CLI
/// show it as `unreadable`, and the coordinator dead-letters inputs for it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UnreadableSaga {
    pub id: String,
    /// The `name`, `version` and `status` columns, when they can be read.
    pub saga: Option<String>,
    pub version: Option<i32>,
    pub status: Option<String>,
    pub wake_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub reason: String,
}

impl UnreadableSaga {
    /// As an error: `stored state of saga X is unreadable: …`.
    pub fn error(&self) -> StoreError {
        StoreError::Corrupt {
            id: self.id.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// A saga row as read: decoded, or why not (boxed: it is the rare, larger case).
pub type SagaRow = Result<StoredSaga, Box<UnreadableSaga>>;

/// Locked saga rows: those that decode, and those that do not.
#[derive(Debug, Default)]
pub struct Locked {
    pub sagas: Vec<StoredSaga>,
    pub unreadable: Vec<UnreadableSaga>,
}

impl Locked {
    fn from_rows(rows: Vec<SagaRecord>) -> Locked {
        let mut locked = Locked::default();
        for row in rows {
            match decode(row) {
                Ok(s) => locked.sagas.push(s),
                Err(u) => {
                    tracing::warn!(saga_id = %u.id, reason = %u.reason, "stored saga state is unreadable");
                    locked.unreadable.push(*u);
                }
            }
        }
        locked
    }

    /// Rows locked, readable or not.
    pub fn len(&self) -> usize {
        self.sagas.len() + self.unreadable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of every locked row.
    pub fn ids(&self) -> Vec<String> {
        self.sagas
            .iter()
            .map(|s| s.state.id.clone())
            .chain(self.unreadable.iter().map(|u| u.id.clone()))
            .collect()
    }
}

/// A saga row as selected. `state` is read as text and parsed here, not by the driver,
/// so a state that is not readable JSON (too deep for serde_json, a number out of
/// range) makes this one row unreadable instead of failing the whole query.
struct SagaRecord {
    id: String,
    state: String,
    row_version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    name: String,
    version: i32,
    status: String,
    wake_at: Option<DateTime<Utc>>,
}

fn decode(row: SagaRecord) -> SagaRow {
    let unreadable = |reason: String| {
        Box::new(UnreadableSaga {
            id: row.id.clone(),
            saga: Some(row.name.clone()),
            version: Some(row.version),
            status: Some(row.status.clone()),
            wake_at: row.wake_at,
            created_at: Some(row.created_at),
            updated_at: Some(row.updated_at),
            reason,
        })
    };
    let state: serde_json::Value = serde_json::from_str(&row.state)
        .map_err(|e| unreadable(format!("the stored state is not readable JSON: {e}")))?;
    let state: SagaState = serde_json::from_value(state).map_err(|e| unreadable(e.to_string()))?;
    if state.id != row.id {
        // Acting on it would write another saga's state into this row.
        return Err(unreadable(format!(
            "the state names saga `{}`, not `{}`",
            state.id, row.id
        )));
    }
    Ok(StoredSaga {
        state,
        row_version: row.row_version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Locks the given sagas in id order (a fixed order keeps concurrent coordinators
/// from deadlocking on each other's batches). A row whose state does not decode is
/// locked too and returned in `unreadable`, so it cannot fail the whole batch.
pub async fn lock(tx: &mut Tx, ids: &[String]) -> Result<Locked, StoreError> {
    let rows = sqlx::query_as!(
        SagaRecord,
        r#"SELECT id, (CASE WHEN input IS NULL THEN state ELSE jsonb_set(state, '{input}', input) END)::text AS "state!", row_version, created_at, updated_at, name, version,
                  status, wake_at
           FROM sagas WHERE id = ANY($1) ORDER BY id FOR UPDATE"#,
        ids
    )
    .fetch_all(tx.conn())
    .await
    .map_err(ctx("lock sagas"))?;
    Ok(Locked::from_rows(rows))
}

/// Locks up to `limit` sagas whose wake-up is due, skipping rows another coordinator
/// holds; unreadable rows come back in `unreadable`.
pub async fn lock_due(tx: &mut Tx, now: DateTime<Utc>, limit: i64) -> Result<Locked, StoreError> {
    let rows = sqlx::query_as!(
        SagaRecord,
        r#"SELECT id, (CASE WHEN input IS NULL THEN state ELSE jsonb_set(state, '{input}', input) END)::text AS "state!", row_version, created_at, updated_at, name, version,
                  status, wake_at
           FROM sagas WHERE wake_at <= $1 ORDER BY wake_at LIMIT $2 FOR UPDATE SKIP LOCKED"#,
        now,
        limit
    )
    .fetch_all(tx.conn())
    .await
    .map_err(ctx("lock due sagas"))?;
    Ok(Locked::from_rows(rows))
}

pub(super) struct Columns {
    pub(super) ids: Vec<String>,
    pub(super) names: Vec<String>,
    pub(super) versions: Vec<i32>,
    pub(super) statuses: Vec<String>,
    /// Each state as JSON text without its input (which has a column of its own).
    pub(super) states: Vec<String>,
    /// The inputs as JSON text, when asked for (new sagas).
    pub(super) inputs: Vec<String>,
    pub(super) wakes: Vec<Option<DateTime<Utc>>>,
    pub(super) expected: Vec<i64>,
    pub(super) created: Vec<DateTime<Utc>>,
}

pub(super) fn columns<'a>(
    writes: impl Iterator<Item = &'a SagaWrite<'a>>,
    with_inputs: bool,
) -> Columns {
    let mut c = Columns {
        ids: vec![],
        names: vec![],
        versions: vec![],
        statuses: vec![],
        states: vec![],
        inputs: vec![],
        wakes: vec![],
        expected: vec![],
        created: vec![],
    };
    for w in writes {
        let s = w.state;
        c.ids.push(s.id.clone());
        c.names.push(s.saga.clone());
        c.versions.push(s.version as i32);
        c.statuses.push(s.status.as_str().to_string());
        c.states.push(s.to_stored_json());
        if with_inputs {
            c.inputs.push(s.input.to_string());
        }
        c.wakes.push(s.next_wake());
        c.expected.push(w.fence.map_or(0, |f| f.version));
        c.created
            .push(w.fence.map_or(DateTime::UNIX_EPOCH, |f| f.created_at));
    }
    c
}

/// The saga name and start input of each stored saga among `ids`, to tell a repeated
/// start from a conflicting one.
pub async fn identities(
    tx: &mut Tx,
    ids: &[String],
) -> Result<Vec<(String, String, serde_json::Value)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT id, name, COALESCE(input, state->'input', 'null'::jsonb)::text AS "input!"
           FROM sagas WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(tx.conn())
    .await
    .map_err(ctx("read saga identities"))?;
    rows.into_iter()
        .map(|r| {
            let input = serde_json::from_str(&r.input).map_err(|e| StoreError::Unreadable {
                what: format!("saga {}", r.id),
                reason: format!("column `state`, its `input`: {e}"),
            })?;
            Ok((r.id, r.name, input))
        })
        .collect()
}

/// Moves the wake-up of `ids` to `until` (sagas this coordinator cannot handle now).
pub async fn postpone_wake(
    tx: &mut Tx,
    ids: &[String],
    until: DateTime<Utc>,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE sagas SET wake_at = $2 WHERE id = ANY($1)",
        ids,
        until
    )
    .execute(tx.conn())
    .await
    .map_err(ctx("postpone wake-up"))?;
    Ok(())
}

/// One saga, without locking (operator reads); a state that does not decode is
/// `Err(StoreError::Corrupt)`. See [`read`] to show such a saga anyway.
pub async fn get(pool: &PgPool, id: &str) -> Result<Option<StoredSaga>, StoreError> {
    match read(pool, id).await? {
        None => Ok(None),
        Some(Ok(s)) => Ok(Some(s)),
        Some(Err(u)) => Err(u.error()),
    }
}

/// One saga, without locking, decoded or with why its state cannot be.
pub async fn read(pool: &PgPool, id: &str) -> Result<Option<SagaRow>, StoreError> {
    let row = sqlx::query_as!(
        SagaRecord,
        r#"SELECT id, (CASE WHEN input IS NULL THEN state ELSE jsonb_set(state, '{input}', input) END)::text AS "state!", row_version, created_at, updated_at, name, version,
                  status, wake_at
           FROM sagas WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await
    .map_err(ctx("get saga"))?;
    Ok(row.map(decode))
}

/// Saga counts by status (for progress displays and tests).
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT status, count(*) AS "n!" FROM sagas GROUP BY status ORDER BY status"#
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("count sagas"))?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
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
    /// Only sagas the reconciler flagged stuck and that are still not moving.
    pub stuck: bool,
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
    /// Set when the row cannot be shown as it is: the stored state is not an object
    /// naming this row's id, saga, version and status (a cheap check in SQL; the
    /// listing does not decode whole states). The other fields are `NOT NULL` columns
    /// whose types the query macro checked at compile time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
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
    let rows = sqlx::query!(
        r#"SELECT id, name, version, status, created_at, updated_at,
                COALESCE(state @> jsonb_build_object('id', id, 'saga', name, 'version', version,
                                                     'status', status), false) AS "consistent!"
         FROM sagas
         WHERE ($1::text IS NULL OR name = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR starts_with(id, $3))
           AND ($4::timestamptz IS NULL OR created_at > $4)
           AND ($5::timestamptz IS NULL OR created_at < $5)
           AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::text))
           AND (NOT $9 OR stuck_since IS NOT NULL)
         ORDER BY created_at DESC, id DESC
         LIMIT $8"#,
        f.saga,
        f.status,
        f.id_prefix,
        f.created_after,
        f.created_before,
        after_at,
        after_id,
        limit,
        f.stuck
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("list sagas"))?;
    Ok(rows
        .into_iter()
        .map(|r| SagaSummary {
            id: r.id,
            saga: r.name,
            version: r.version,
            status: r.status,
            created_at: r.created_at,
            updated_at: r.updated_at,
            unreadable: (!r.consistent).then(|| {
                "the stored state does not match its row (id, saga, version, status)".into()
            }),
        })
        .collect())
}

/// A child saga of a parent: its id and status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChildSaga {
    pub id: String,
    pub status: String,
}

/// The child sagas `parent` started (its `saga` steps and branches), by id; through
/// the partial index `sagas_parent`.
pub async fn children(pool: &PgPool, parent: &str) -> Result<Vec<ChildSaga>, StoreError> {
    sqlx::query_as!(
        ChildSaga,
        r#"SELECT id, status FROM sagas
           WHERE state ? 'parent' AND state->'parent'->>'saga_id' = $1
           ORDER BY id"#,
        parent
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("read child sagas"))
}
