//! Schedule administration, what `sagaflow schedules …` and `/api/schedules/…` do minus
//! the printing: validate an operator's schedule, and pause, resume, trigger, delete by
//! name. Every operation goes through the `schedules` table; coordinators pick the
//! change up on their next pass.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use super::cron::{parse_timezone, Cron};
use super::decide::{manual_id, parse_overlap};
use crate::saga::definition::{normalize_cron, parse_duration, Catalog, MAX_NAME_LEN};
use crate::store::schedules::{self, NewSchedule};
use crate::store::StoreError;

/// Why a schedule administration command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleAdminError {
    #[error("no schedule named `{0}` (see `sagaflow schedules list`)")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("a schedule named `{0}` exists already (delete it first, or pick another name)")]
    Exists(String),
    #[error(
        "schedule `{0}` is defined in a definition file: remove it there (the next coordinator \
         start deletes it), or pause it"
    )]
    FileOwned(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `schedules add` as typed by the operator.
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub name: String,
    pub saga: String,
    pub cron: String,
    pub timezone: String,
    pub input: Value,
    pub overlap: String,
    pub catch_up_window: String,
}

fn invalid(what: &str, why: impl std::fmt::Display) -> ScheduleAdminError {
    ScheduleAdminError::Invalid(format!("{what}: {why}"))
}

/// Checks a request against the catalog and computes the first fire time after `now`.
/// Names have no dots: `<saga>.<schedule>` is how file schedules are named, so an
/// operator's schedule can never take a file schedule's place.
pub fn validate(
    req: &AddRequest,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<NewSchedule, ScheduleAdminError> {
    let name_ok = !req.name.is_empty()
        && req.name.len() <= MAX_NAME_LEN
        && req
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !name_ok {
        return Err(invalid(
            "name",
            format!(
                "`{}`: expected 1 to {MAX_NAME_LEN} ASCII letters, digits, `_` or `-` (no dots: \
                 `<saga>.<name>` is reserved for schedules from definition files)",
                req.name
            ),
        ));
    }
    if catalog.latest(&req.saga).is_none() {
        let known: Vec<String> = catalog.names().into_iter().collect();
        return Err(invalid(
            "--saga",
            format!("unknown saga `{}`; known: {}", req.saga, known.join(", ")),
        ));
    }
    let cron = normalize_cron(&req.cron).map_err(|e| invalid("--cron", e))?;
    let tz = parse_timezone(&req.timezone).map_err(|e| invalid("--timezone", e))?;
    let overlap = parse_overlap(&req.overlap).map_err(|e| invalid("--overlap", e))?;
    let window =
        parse_duration(&req.catch_up_window).map_err(|e| invalid("--catch-up-window", e))?;
    let parsed = Cron::parse(&cron, tz).map_err(|e| invalid("--cron", e))?;
    let next_fire_at = parsed.next_after(now);
    if next_fire_at.is_none() {
        return Err(invalid(
            "--cron",
            format!("`{}` never fires after now", req.cron),
        ));
    }
    Ok(NewSchedule {
        name: req.name.clone(),
        saga: req.saga.clone(),
        cron,
        timezone: tz.name().to_string(),
        input: req.input.clone(),
        overlap: overlap.as_str().to_string(),
        catch_up_window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
        next_fire_at,
    })
}

/// Validates and stores an operator's schedule.
pub async fn add(
    pool: &PgPool,
    catalog: &Catalog,
    req: &AddRequest,
) -> Result<NewSchedule, ScheduleAdminError> {
    let new = validate(req, catalog, Utc::now())?;
    if !schedules::insert_api(pool, &new).await? {
        return Err(ScheduleAdminError::Exists(new.name));
    }
    Ok(new)
}

/// Pauses a schedule: no ticks fire until `resume`. A pending manual trigger still runs.
pub async fn pause(pool: &PgPool, name: &str) -> Result<(), ScheduleAdminError> {
    match schedules::pause(pool, name).await? {
        Some(_) => Ok(()),
        None => Err(ScheduleAdminError::Unknown(name.to_string())),
    }
}

/// Resumes a paused schedule from now: ticks that fell in the pause are not caught up.
/// Returns the next fire time, or `Ok(None)` when it was not paused.
pub async fn resume(
    pool: &PgPool,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ScheduleAdminError> {
    let row = schedules::get(pool, name)
        .await?
        .ok_or_else(|| ScheduleAdminError::Unknown(name.to_string()))?;
    if !row.paused {
        return Ok(None);
    }
    let tz = parse_timezone(&row.timezone).map_err(ScheduleAdminError::Invalid)?;
    let next = Cron::parse(&row.cron, tz)
        .map_err(ScheduleAdminError::Invalid)?
        .next_after(now);
    schedules::resume(pool, name, next).await?;
    Ok(next)
}

/// Asks the next pass for one run now, whatever the overlap policy or a pause say;
/// returns the saga id it will have.
pub async fn trigger(pool: &PgPool, name: &str) -> Result<String, ScheduleAdminError> {
    match schedules::request_trigger(pool, name).await? {
        Some(at) => Ok(manual_id(name, at)),
        None => Err(ScheduleAdminError::Unknown(name.to_string())),
    }
}

/// Deletes an operator's schedule. File schedules belong to their file.
pub async fn delete(pool: &PgPool, name: &str) -> Result<(), ScheduleAdminError> {
    let row = schedules::get(pool, name)
        .await?
        .ok_or_else(|| ScheduleAdminError::Unknown(name.to_string()))?;
    if row.source == "file" {
        return Err(ScheduleAdminError::FileOwned(name.to_string()));
    }
    if !schedules::delete_api(pool, name).await? {
        return Err(ScheduleAdminError::Unknown(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let text = "name = \"reports\"\nversion = 1\n[[steps]]\nname = \"a\"\nactivity = \"x.y\"\n";
        let mut c = Catalog::new();
        c.insert(
            crate::saga::definition::parse("r.toml", text).unwrap(),
            "r.toml",
        )
        .unwrap();
        c
    }

    fn req() -> AddRequest {
        AddRequest {
            name: "nightly-report".into(),
            saga: "reports".into(),
            cron: "0 0 * * *".into(),
            timezone: "Europe/Berlin".into(),
            input: serde_json::json!({"a": 1}),
            overlap: "buffer_one".into(),
            catch_up_window: "5m".into(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_valid_request_is_normalised_with_its_first_fire_time() {
        let s = validate(&req(), &catalog(), now()).unwrap();
        assert_eq!(s.cron, "0 0 0 * * *");
        assert_eq!(s.catch_up_window_ms, 300_000);
        assert_eq!(s.overlap, "buffer_one");
        // Midnight in Berlin (CET) is 23:00 UTC.
        assert_eq!(
            s.next_fire_at.unwrap().to_rfc3339(),
            "2026-01-10T23:00:00+00:00"
        );
    }

    #[test]
    fn each_bad_field_is_named_with_what_was_expected() {
        type Change = fn(&mut AddRequest);
        let cases: [(&str, Change); 7] = [
            ("name", |r| r.name = "reports.nightly".into()),
            ("name", |r| r.name = String::new()),
            ("unknown saga `nope`; known: reports", |r| {
                r.saga = "nope".into()
            }),
            ("--cron", |r| r.cron = "every night".into()),
            ("--timezone: unknown time zone `Mars/Base`", |r| {
                r.timezone = "Mars/Base".into()
            }),
            ("--overlap: unknown overlap policy `sometimes`", |r| {
                r.overlap = "sometimes".into()
            }),
            ("--catch-up-window: expected a duration", |r| {
                r.catch_up_window = "soon".into()
            }),
        ];
        for (want, change) in cases {
            let mut r = req();
            change(&mut r);
            let e = validate(&r, &catalog(), now()).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut r = req();
        r.cron = "0 0 0 1 1 * 2020".into();
        let e = validate(&r, &catalog(), now()).unwrap_err().to_string();
        assert!(e.contains("never fires"), "{e}");
    }
}
