//! Schedule rows: the scheduler pass (lock due rows, advance them), the file sync, and
//! the operator's reads and writes. Decisions are made in `crate::scheduler`; this
//! module only moves rows.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Tx;

use super::{ctx, StoreError};

/// A schedule row as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScheduleRow {
    pub name: String,
    pub saga: String,
    pub cron: String,
    pub timezone: String,
    pub input: serde_json::Value,
    pub overlap: String,
    pub catch_up_window_ms: i64,
    pub paused: bool,
    pub source: String,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub last_fire_at: Option<DateTime<Utc>>,
    pub last_saga_id: Option<String>,
    pub missed_ticks: i64,
    pub skipped_ticks: i64,
    pub buffered_tick: Option<DateTime<Utc>>,
    pub trigger_requested_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A schedule row as selected. `input` is read as text and parsed by [`decode`], so an
/// input serde_json cannot read is an error naming the schedule, not a driver error.
struct ScheduleRecord {
    name: String,
    saga: String,
    cron: String,
    timezone: String,
    input: String,
    overlap: String,
    catch_up_window_ms: i64,
    paused: bool,
    source: String,
    next_fire_at: Option<DateTime<Utc>>,
    last_fire_at: Option<DateTime<Utc>>,
    last_saga_id: Option<String>,
    missed_ticks: i64,
    skipped_ticks: i64,
    buffered_tick: Option<DateTime<Utc>>,
    trigger_requested_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A schedule row; an `input` that does not parse is an error naming the schedule.
fn decode(r: ScheduleRecord) -> Result<ScheduleRow, StoreError> {
    let input = serde_json::from_str(&r.input).map_err(|e| StoreError::Unreadable {
        what: format!("schedule `{}`", r.name),
        reason: format!("column `input`: {e}"),
    })?;
    Ok(ScheduleRow {
        name: r.name,
        saga: r.saga,
        cron: r.cron,
        timezone: r.timezone,
        input,
        overlap: r.overlap,
        catch_up_window_ms: r.catch_up_window_ms,
        paused: r.paused,
        source: r.source,
        next_fire_at: r.next_fire_at,
        last_fire_at: r.last_fire_at,
        last_saga_id: r.last_saga_id,
        missed_ticks: r.missed_ticks,
        skipped_ticks: r.skipped_ticks,
        buffered_tick: r.buffered_tick,
        trigger_requested_at: r.trigger_requested_at,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

/// A schedule's definition, as written by the file sync or `schedule add`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchedule {
    pub name: String,
    pub saga: String,
    /// Normalised (6/7 fields).
    pub cron: String,
    pub timezone: String,
    pub input: serde_json::Value,
    pub overlap: String,
    pub catch_up_window_ms: i64,
    /// The first tick after the moment the row is written.
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// Locks up to `limit` rows with work for a pass: an unpaused row whose next tick is
/// due or whose buffered tick may be released, or any row with a manual trigger.
/// Rows another coordinator holds are skipped; rows of sagas this coordinator has not
/// loaded are left to a coordinator that has.
pub async fn lock_due(
    tx: &mut Tx,
    sagas: &[String],
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ScheduleRow>, StoreError> {
    let rows = sqlx::query_as!(
        ScheduleRecord,
        r#"SELECT name, saga, cron, timezone, input::text AS "input!", overlap,
                  catch_up_window_ms, paused, source, next_fire_at, last_fire_at, last_saga_id,
                  missed_ticks, skipped_ticks, buffered_tick, trigger_requested_at, created_at,
                  updated_at
           FROM schedules
           WHERE saga = ANY($1)
             AND ((NOT paused AND (next_fire_at <= $2 OR buffered_tick IS NOT NULL))
                  OR trigger_requested_at IS NOT NULL)
           ORDER BY next_fire_at NULLS LAST, name
           LIMIT $3 FOR UPDATE SKIP LOCKED"#,
        sagas,
        now,
        limit
    )
    .fetch_all(tx.conn())
    .await
    .map_err(ctx("lock due schedules"))?;
    rows.into_iter().map(decode).collect()
}

/// Status of each given saga that exists, as (id, status).
pub async fn saga_statuses(
    tx: &mut Tx,
    ids: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let rows = sqlx::query!("SELECT id, status FROM sagas WHERE id = ANY($1)", ids)
        .fetch_all(tx.conn())
        .await
        .map_err(ctx("read last runs"))?;
    Ok(rows.into_iter().map(|r| (r.id, r.status)).collect())
}

/// How a pass moved one schedule on.
#[derive(Debug, Clone, PartialEq)]
pub struct Advance {
    pub name: String,
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Set when a run started: its tick and saga id.
    pub last_fire: Option<(DateTime<Utc>, String)>,
    /// Added to the counters.
    pub missed: i64,
    pub skipped: i64,
    pub buffered_tick: Option<DateTime<Utc>>,
    /// The manual trigger was honoured: clear it.
    pub trigger_done: bool,
}

/// Writes what a pass decided for rows it holds locked.
pub async fn advance(tx: &mut Tx, rows: &[Advance]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let next: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.next_fire_at).collect();
    let last_at: Vec<Option<DateTime<Utc>>> = rows
        .iter()
        .map(|r| r.last_fire.as_ref().map(|l| l.0))
        .collect();
    let last_id: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.last_fire.as_ref().map(|l| l.1.as_str()))
        .collect();
    let missed: Vec<i64> = rows.iter().map(|r| r.missed).collect();
    let skipped: Vec<i64> = rows.iter().map(|r| r.skipped).collect();
    let buffered: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.buffered_tick).collect();
    let triggered: Vec<bool> = rows.iter().map(|r| r.trigger_done).collect();
    sqlx::query!(
        "UPDATE schedules s SET next_fire_at = u.next, buffered_tick = u.buffered,
                last_fire_at = COALESCE(u.last_at, s.last_fire_at),
                last_saga_id = COALESCE(u.last_id, s.last_saga_id),
                missed_ticks = s.missed_ticks + u.missed,
                skipped_ticks = s.skipped_ticks + u.skipped,
                trigger_requested_at = CASE WHEN u.triggered THEN NULL ELSE s.trigger_requested_at END,
                updated_at = now()
         FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::int8[],
                     $6::int8[], $7::timestamptz[], $8::bool[])
              AS u(name, next, last_at, last_id, missed, skipped, buffered, triggered)
         WHERE s.name = u.name",
        &names as &[&str],
        &next as &[Option<DateTime<Utc>>],
        &last_at as &[Option<DateTime<Utc>>],
        &last_id as &[Option<&str>],
        &missed,
        &skipped,
        &buffered as &[Option<DateTime<Utc>>],
        &triggered
    )
    .execute(tx.conn())
    .await
    .map_err(ctx("advance schedules"))?;
    Ok(())
}

/// Makes the file-sourced rows equal to `schedules` in one transaction: inserts new
/// ones, rewrites changed ones, deletes those no file defines any more. A row keeps its
/// next fire time and counters unless its cron or time zone changed. API rows are never
/// touched. Safe when several coordinators sync at once: rows are written in name order
/// (no deadlock) and the upsert leaves unchanged rows alone.
pub async fn sync_file(pool: &PgPool, schedules: &[NewSchedule]) -> Result<u64, StoreError> {
    let mut tx = super::begin(pool).await?;
    let col = |f: fn(&NewSchedule) -> String| -> Vec<String> { schedules.iter().map(f).collect() };
    let names = col(|s| s.name.clone());
    let inputs: Vec<&serde_json::Value> = schedules.iter().map(|s| &s.input).collect();
    let windows: Vec<i64> = schedules.iter().map(|s| s.catch_up_window_ms).collect();
    let next: Vec<Option<DateTime<Utc>>> = schedules.iter().map(|s| s.next_fire_at).collect();
    let sagas = col(|s| s.saga.clone());
    let crons = col(|s| s.cron.clone());
    let timezones = col(|s| s.timezone.clone());
    let overlaps = col(|s| s.overlap.clone());
    sqlx::query!(
        "INSERT INTO schedules (name, saga, cron, timezone, input, overlap, catch_up_window_ms,
                                source, next_fire_at)
         SELECT n, s, c, z, i, o, w, 'file', f
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[],
                     $7::int8[], $8::timestamptz[]) AS u(n, s, c, z, i, o, w, f)
         ORDER BY n
         ON CONFLICT (name) DO UPDATE SET
            saga = EXCLUDED.saga, input = EXCLUDED.input, overlap = EXCLUDED.overlap,
            catch_up_window_ms = EXCLUDED.catch_up_window_ms,
            next_fire_at = CASE
                WHEN schedules.cron = EXCLUDED.cron AND schedules.timezone = EXCLUDED.timezone
                THEN schedules.next_fire_at ELSE EXCLUDED.next_fire_at END,
            cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, updated_at = now()
         WHERE schedules.source = 'file'
           AND (schedules.saga, schedules.cron, schedules.timezone, schedules.input,
                schedules.overlap, schedules.catch_up_window_ms)
               IS DISTINCT FROM (EXCLUDED.saga, EXCLUDED.cron, EXCLUDED.timezone,
                EXCLUDED.input, EXCLUDED.overlap, EXCLUDED.catch_up_window_ms)",
        &names,
        &sagas,
        &crons,
        &timezones,
        &inputs as &[&serde_json::Value],
        &overlaps,
        &windows,
        &next as &[Option<DateTime<Utc>>]
    )
    .execute(tx.conn())
    .await
    .map_err(ctx("sync file schedules"))?;
    let deleted = sqlx::query!(
        "DELETE FROM schedules WHERE source = 'file' AND NOT (name = ANY($1))",
        &names
    )
    .execute(tx.conn())
    .await
    .map_err(ctx("delete stale file schedules"))?
    .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// Inserts an operator's schedule; `false` when the name is taken.
pub async fn insert_api(pool: &PgPool, s: &NewSchedule) -> Result<bool, StoreError> {
    let row = sqlx::query_scalar!(
        "INSERT INTO schedules (name, saga, cron, timezone, input, overlap, catch_up_window_ms,
                                source, next_fire_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'api', $8)
         ON CONFLICT (name) DO NOTHING RETURNING name",
        s.name,
        s.saga,
        s.cron,
        s.timezone,
        s.input,
        s.overlap,
        s.catch_up_window_ms,
        s.next_fire_at
    )
    .fetch_optional(pool)
    .await
    .map_err(ctx("insert schedule"))?;
    Ok(row.is_some())
}

/// One schedule.
pub async fn get(pool: &PgPool, name: &str) -> Result<Option<ScheduleRow>, StoreError> {
    let row = sqlx::query_as!(
        ScheduleRecord,
        r#"SELECT name, saga, cron, timezone, input::text AS "input!", overlap,
                  catch_up_window_ms, paused, source, next_fire_at, last_fire_at, last_saga_id,
                  missed_ticks, skipped_ticks, buffered_tick, trigger_requested_at, created_at,
                  updated_at
           FROM schedules WHERE name = $1"#,
        name
    )
    .fetch_optional(pool)
    .await
    .map_err(ctx("get schedule"))?;
    row.map(decode).transpose()
}

/// Every schedule by name, with the status of its last run (when that saga exists).
pub async fn list(pool: &PgPool) -> Result<Vec<(ScheduleRow, Option<String>)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT s.name, s.saga, s.cron, s.timezone, s.input::text AS "input!", s.overlap,
                  s.catch_up_window_ms, s.paused, s.source, s.next_fire_at, s.last_fire_at,
                  s.last_saga_id, s.missed_ticks, s.skipped_ticks, s.buffered_tick,
                  s.trigger_requested_at, s.created_at, s.updated_at,
                  g.status AS "last_status?"
           FROM schedules s
           LEFT JOIN sagas g ON g.id = s.last_saga_id ORDER BY s.name"#
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("list schedules"))?;
    rows.into_iter()
        .map(|r| {
            let row = decode(ScheduleRecord {
                name: r.name,
                saga: r.saga,
                cron: r.cron,
                timezone: r.timezone,
                input: r.input,
                overlap: r.overlap,
                catch_up_window_ms: r.catch_up_window_ms,
                paused: r.paused,
                source: r.source,
                next_fire_at: r.next_fire_at,
                last_fire_at: r.last_fire_at,
                last_saga_id: r.last_saga_id,
                missed_ticks: r.missed_ticks,
                skipped_ticks: r.skipped_ticks,
                buffered_tick: r.buffered_tick,
                trigger_requested_at: r.trigger_requested_at,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })?;
            Ok((row, r.last_status))
        })
        .collect()
}

/// Pauses a schedule; `None` when there is no such schedule.
pub async fn pause(pool: &PgPool, name: &str) -> Result<Option<ScheduleRow>, StoreError> {
    let row = sqlx::query_as!(
        ScheduleRecord,
        r#"UPDATE schedules SET paused = true, updated_at = now() WHERE name = $1
           RETURNING name, saga, cron, timezone, input::text AS "input!", overlap,
                  catch_up_window_ms, paused, source, next_fire_at, last_fire_at, last_saga_id,
                  missed_ticks, skipped_ticks, buffered_tick, trigger_requested_at, created_at,
                  updated_at"#,
        name
    )
    .fetch_optional(pool)
    .await
    .map_err(ctx("pause schedule"))?;
    row.map(decode).transpose()
}

/// Resumes a paused schedule with a fresh next fire time; `false` when it was not paused
/// (or does not exist).
pub async fn resume(
    pool: &PgPool,
    name: &str,
    next_fire_at: Option<DateTime<Utc>>,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE schedules SET paused = false, next_fire_at = $2, updated_at = now()
         WHERE name = $1 AND paused",
        name,
        next_fire_at
    )
    .execute(pool)
    .await
    .map_err(ctx("resume schedule"))?;
    Ok(done.rows_affected() == 1)
}

/// Asks the next pass for a manual run; returns the request time (whole seconds), which
/// names the run. A request still pending is kept rather than replaced, so two quick
/// triggers start one run. `None` when there is no such schedule.
pub async fn request_trigger(
    pool: &PgPool,
    name: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    sqlx::query_scalar!(
        r#"UPDATE schedules
           SET trigger_requested_at = COALESCE(trigger_requested_at, date_trunc('second', now())),
               updated_at = now()
           WHERE name = $1 RETURNING trigger_requested_at AS "trigger_requested_at!""#,
        name
    )
    .fetch_optional(pool)
    .await
    .map_err(ctx("trigger schedule"))
}

/// Deletes an API schedule; `false` when there is no such API schedule.
pub async fn delete_api(pool: &PgPool, name: &str) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "DELETE FROM schedules WHERE name = $1 AND source = 'api'",
        name
    )
    .execute(pool)
    .await
    .map_err(ctx("delete schedule"))?;
    Ok(done.rows_affected() == 1)
}
