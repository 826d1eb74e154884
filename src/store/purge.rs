//! Deleting ended sagas with their history, ledger and element rows: in the background
//! once their retention has passed (`coordinator::retention`), and on demand (`sagaflow
//! sagas purge`, `POST /api/sagas/purge`). Only terminal sagas are ever deleted. Each
//! call is one short statement over at most `limit` sagas, claimed with
//! `SKIP LOCKED` so coordinators share the work and a saga a batch holds is left for
//! later.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::counters::{self, Delta};
use super::{ctx, StoreError, Tx};
use crate::saga::state::SagaStatus;

/// Which ended sagas have expired at one instant: those of a definition with its own
/// retention ended before that definition's cutoff; the others before
/// `default_cutoff` (`None`: kept for ever). Definitions in `forever` are never
/// expired.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expiry {
    pub named: Vec<(String, DateTime<Utc>)>,
    pub forever: Vec<String>,
    pub default_cutoff: Option<DateTime<Utc>>,
}

impl Expiry {
    /// The latest cutoff of any rule: nothing that ended after it can be expired, so
    /// the scan of `(status, updated_at)` stops there.
    fn latest(&self) -> Option<DateTime<Utc>> {
        self.named
            .iter()
            .map(|(_, c)| *c)
            .chain(self.default_cutoff)
            .max()
    }
}

/// Deleted sagas as (id, definition name).
pub type Purged = Vec<(String, String)>;

fn terminal() -> Vec<String> {
    SagaStatus::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str().to_string())
        .collect()
}

/// Deletes up to `limit` expired sagas (oldest first) with their history, ledger and
/// element rows, and counts them in `sagaflow_sagas_purged_total`, in one transaction.
/// Each batch reads only what it deletes, however many ended sagas are stored: the
/// queries spell the terminal statuses literally, as the partial index `sagas_ended`
/// does (migrations/0011_sagas_ended.sql), so the planner takes the oldest-first
/// order from it (a unit test holds both to [`SagaStatus::is_terminal`]).
pub async fn expired(pool: &PgPool, expiry: &Expiry, limit: i64) -> Result<Purged, StoreError> {
    let Some(latest) = expiry.latest() else {
        return Ok(vec![]);
    };
    let (names, cutoffs): (Vec<String>, Vec<DateTime<Utc>>) = expiry.named.iter().cloned().unzip();
    let mut tx = super::begin(pool).await?;
    let rows = sqlx::query!(
        r#"WITH rules AS (SELECT * FROM UNNEST($1::text[], $2::timestamptz[]) AS r(name, cutoff)),
           doomed AS (
             SELECT s.id FROM sagas s LEFT JOIN rules r ON r.name = s.name
             WHERE s.status IN ('completed', 'compensated', 'failed', 'cancelled')
               AND s.status = ANY($3::text[])
               AND s.updated_at < $5::timestamptz
               AND s.updated_at < COALESCE(r.cutoff, $4::timestamptz)
               AND NOT (s.name = ANY($6::text[]))
             ORDER BY s.updated_at
             LIMIT $7
             FOR UPDATE OF s SKIP LOCKED),
           history AS (DELETE FROM saga_history h USING doomed d WHERE h.saga_id = d.id),
           ledger AS (DELETE FROM idempotency_ledger l USING doomed d WHERE l.saga_id = d.id),
           elements AS (DELETE FROM saga_elements e USING doomed d WHERE e.saga_id = d.id)
           DELETE FROM sagas s USING doomed d WHERE s.id = d.id
           RETURNING s.id, s.name"#,
        &names,
        &cutoffs,
        &terminal(),
        expiry.default_cutoff,
        latest,
        &expiry.forever,
        limit
    )
    .fetch_all(tx.conn())
    .await
    .map_err(ctx("purge expired sagas"))?;
    let purged: Purged = rows.into_iter().map(|r| (r.id, r.name)).collect();
    count(&mut tx, &purged).await?;
    tx.commit().await?;
    Ok(purged)
}

/// What an on-demand purge selects; every given field must match. Only ended sagas
/// are selected, whatever the filter says.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub ids: Option<Vec<String>>,
    pub saga: Option<String>,
    pub status: Option<SagaStatus>,
    /// Ended (last updated) before this instant.
    pub before: Option<DateTime<Utc>>,
}

/// Why an on-demand purge of `sel` is refused, if it is: one that names no filter
/// (a purge of every ended saga must say so with `before`), a status that has not
/// ended, or an id that does not exist or has not ended. The CLI and the API ask the
/// same question.
pub async fn refusal(pool: &PgPool, sel: &Selection) -> Result<Option<String>, StoreError> {
    let no_filter = sel.ids.as_ref().is_none_or(|i| i.is_empty())
        && sel.saga.is_none()
        && sel.status.is_none()
        && sel.before.is_none();
    if no_filter {
        return Ok(Some("give at least one of id, saga, status, before (a purge of every ended saga must say so: before <now>)".into()));
    }
    if let Some(s) = sel.status.filter(|s| !s.is_terminal()) {
        return Ok(Some(format!("status {s}: only ended sagas are purged (completed, compensated, failed, cancelled); cancel a running saga first")));
    }
    for id in sel.ids.iter().flatten() {
        match super::sagas::get(pool, id).await? {
            None => return Ok(Some(format!("no saga with id `{id}`"))),
            Some(s) if !s.state.status.is_terminal() => {
                return Ok(Some(format!(
                    "saga `{id}` is {}: only ended sagas are purged; cancel it first",
                    s.state.status
                )))
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

/// The ended sagas `sel` selects, oldest first, at most `limit` (a dry run).
pub async fn matching(pool: &PgPool, sel: &Selection, limit: i64) -> Result<Purged, StoreError> {
    let statuses = statuses(sel);
    let rows = sqlx::query!(
        r#"SELECT id, name FROM sagas
           WHERE status = ANY($1::text[])
             AND ($2::text[] IS NULL OR id = ANY($2))
             AND ($3::text IS NULL OR name = $3)
             AND ($4::timestamptz IS NULL OR updated_at < $4)
           ORDER BY updated_at LIMIT $5"#,
        &statuses,
        sel.ids.as_deref(),
        sel.saga.as_deref(),
        sel.before,
        limit
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("select sagas to purge"))?;
    Ok(rows.into_iter().map(|r| (r.id, r.name)).collect())
}

/// Deletes up to `limit` of the ended sagas `sel` selects (oldest first) with their
/// history, ledger and element rows, in one transaction; sagas other transactions hold are
/// skipped (call again for the rest).
pub async fn selected(pool: &PgPool, sel: &Selection, limit: i64) -> Result<Purged, StoreError> {
    let statuses = statuses(sel);
    let mut tx = super::begin(pool).await?;
    let rows = sqlx::query!(
        r#"WITH doomed AS (
             SELECT id FROM sagas
             WHERE status IN ('completed', 'compensated', 'failed', 'cancelled')
               AND status = ANY($1::text[])
               AND ($2::text[] IS NULL OR id = ANY($2))
               AND ($3::text IS NULL OR name = $3)
               AND ($4::timestamptz IS NULL OR updated_at < $4)
             ORDER BY updated_at LIMIT $5
             FOR UPDATE SKIP LOCKED),
           history AS (DELETE FROM saga_history h USING doomed d WHERE h.saga_id = d.id),
           ledger AS (DELETE FROM idempotency_ledger l USING doomed d WHERE l.saga_id = d.id),
           elements AS (DELETE FROM saga_elements e USING doomed d WHERE e.saga_id = d.id)
           DELETE FROM sagas s USING doomed d WHERE s.id = d.id
           RETURNING s.id, s.name"#,
        &statuses,
        sel.ids.as_deref(),
        sel.saga.as_deref(),
        sel.before,
        limit
    )
    .fetch_all(tx.conn())
    .await
    .map_err(ctx("purge sagas"))?;
    let purged: Purged = rows.into_iter().map(|r| (r.id, r.name)).collect();
    count(&mut tx, &purged).await?;
    tx.commit().await?;
    Ok(purged)
}

/// The terminal statuses a selection allows (one, or all of them).
fn statuses(sel: &Selection) -> Vec<String> {
    match sel.status {
        Some(s) if s.is_terminal() => vec![s.as_str().to_string()],
        Some(_) => vec![],
        None => terminal(),
    }
}

/// `sagaflow_sagas_purged_total{saga}`, in the purging transaction.
async fn count(tx: &mut Tx, purged: &Purged) -> Result<(), StoreError> {
    let mut per_saga: std::collections::BTreeMap<&str, f64> = Default::default();
    for (_, name) in purged {
        *per_saga.entry(name.as_str()).or_default() += 1.0;
    }
    let deltas: Vec<Delta> = per_saga
        .into_iter()
        .map(|(saga, n)| Delta {
            name: "sagaflow_sagas_purged_total",
            labels: counters::labels(&[("saga", saga)]),
            value: n,
        })
        .collect();
    counters::add(tx, &deltas).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_queries_and_the_index_spell_the_terminal_statuses_alike() {
        let quoted: Vec<String> = terminal().iter().map(|s| format!("'{s}'")).collect();
        let list = format!("status IN ({})", quoted.join(", "));
        let index = include_str!("../../migrations/0011_sagas_ended.sql");
        assert!(index.contains(&list), "{list} in the index");
        let source = include_str!("purge.rs");
        assert_eq!(source.matches(&format!("s.{list}")).count(), 1, "expired()");
        assert_eq!(
            source.matches(&format!("WHERE {list}")).count(),
            1,
            "selected()"
        );
    }

    #[test]
    fn the_scan_stops_at_the_latest_cutoff_of_any_rule() {
        let mut e = Expiry::default();
        assert_eq!(e.latest(), None, "nothing expires: no query at all");
        e.named.push(("a".into(), at("2026-01-01T00:00:00Z")));
        e.default_cutoff = Some(at("2026-02-01T00:00:00Z"));
        assert_eq!(e.latest(), Some(at("2026-02-01T00:00:00Z")));
    }

    #[test]
    fn a_selection_only_ever_names_ended_statuses() {
        let all = statuses(&Selection::default());
        assert_eq!(all, ["completed", "compensated", "failed", "cancelled"]);
        let running = Selection {
            status: Some(SagaStatus::Running),
            ..Default::default()
        };
        assert!(statuses(&running).is_empty());
    }
}
