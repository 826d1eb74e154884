//! File-defined schedules into the `schedules` table, at coordinator start.
//!
//! Only the newest loaded version of each saga contributes: older versions stay loaded
//! for the sagas still running them, but their schedules are history. A file schedule
//! is stored as `<saga>.<schedule>`; operator (`api`) schedules have no dots in their
//! names, so the two never collide, and the sync never touches `api` rows.

use chrono::{DateTime, Utc};

use super::cron::Cron;
use crate::saga::definition::Catalog;
use crate::store::schedules::{self, NewSchedule};
use crate::store::StoreError;

/// The stored name of a file schedule.
pub fn file_schedule_name(saga: &str, schedule: &str) -> String {
    format!("{saga}.{schedule}")
}

/// The rows the catalog's files define, with next fire times computed from `now`
/// (used only for new rows and rows whose cron or time zone changed).
pub fn file_schedules(catalog: &Catalog, now: DateTime<Utc>) -> Vec<NewSchedule> {
    let mut out = vec![];
    for saga in catalog.names() {
        let Some(def) = catalog.latest(&saga) else {
            continue;
        };
        for s in &def.schedules {
            let next_fire_at = match Cron::parse(&s.cron, s.timezone) {
                Ok(cron) => cron.next_after(now),
                // The catalog validated it; this only guards a future validation gap.
                Err(e) => {
                    tracing::error!(saga = %def.name, schedule = %s.name, error = %e, "schedule skipped");
                    continue;
                }
            };
            out.push(NewSchedule {
                name: file_schedule_name(&def.name, &s.name),
                saga: def.name.clone(),
                cron: s.cron.clone(),
                timezone: s.timezone.name().to_string(),
                input: s.input.clone(),
                overlap: s.overlap.as_str().to_string(),
                catch_up_window_ms: i64::try_from(s.catch_up_window.as_millis())
                    .unwrap_or(i64::MAX),
                next_fire_at,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Writes the catalog's file schedules; returns (rows defined, stale rows deleted).
pub async fn sync(
    pool: &sqlx::PgPool,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<(usize, u64), StoreError> {
    let rows = file_schedules(catalog, now);
    let deleted = schedules::sync_file(pool, &rows).await?;
    Ok((rows.len(), deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"
name = "reports"
version = 1
[[steps]]
name = "build"
activity = "reports.build"
[[schedules]]
name = "old"
cron = "0 0 * * *"
"#;

    const V2: &str = r#"
name = "reports"
version = 2
[[steps]]
name = "build"
activity = "reports.build"
[[schedules]]
name = "nightly"
cron = "0 0 * * *"
timezone = "Europe/Berlin"
overlap = "buffer_one"
catch_up_window = "1h"
input = { scope = "all" }
"#;

    #[test]
    fn only_the_newest_version_defines_schedules_named_saga_dot_schedule() {
        let mut catalog = Catalog::new();
        for (i, text) in [V1, V2].iter().enumerate() {
            let def = crate::saga::definition::parse(&format!("f{i}.toml"), text).unwrap();
            catalog.insert(def, &format!("f{i}.toml")).unwrap();
        }
        let now = DateTime::parse_from_rfc3339("2026-07-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let rows = file_schedules(&catalog, now);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.name, "reports.nightly");
        assert_eq!(
            (r.saga.as_str(), r.cron.as_str()),
            ("reports", "0 0 0 * * *")
        );
        assert_eq!(
            (r.timezone.as_str(), r.overlap.as_str()),
            ("Europe/Berlin", "buffer_one")
        );
        assert_eq!(r.catch_up_window_ms, 3_600_000);
        assert_eq!(r.input, serde_json::json!({"scope": "all"}));
        // Midnight in Berlin (CEST) is 22:00 UTC.
        assert_eq!(
            r.next_fire_at.unwrap().to_rfc3339(),
            "2026-07-01T22:00:00+00:00"
        );
    }
}
