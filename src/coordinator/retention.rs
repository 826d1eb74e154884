//! Retention: every `retention.interval_ms` each coordinator deletes sagas that ended
//! longer ago than their definition's `retention` (else `retention.default`), with
//! their history and ledger rows, in batches of `retention.batch_size` and at most
//! `retention.max_per_second`. Several coordinators share the work (rows are claimed
//! with SKIP LOCKED); a saga is only ever deleted once it has ended.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionSettings;
use crate::saga::definition::Catalog;
use crate::store::purge::{self, Expiry};

/// Runs the purge until `stop`.
pub async fn run(
    pool: PgPool,
    catalog: Arc<Catalog>,
    settings: RetentionSettings,
    stop: CancellationToken,
) {
    let default = settings.default_retention();
    let mut tick = tokio::time::interval(Duration::from_millis(settings.interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expiry = expiry(&catalog, default, Utc::now());
        // Batches back to back while there is a backlog, paced to max_per_second.
        loop {
            let started = tokio::time::Instant::now();
            let n = match purge::expired(&pool, &expiry, settings.batch_size as i64).await {
                Ok(purged) => purged.len(),
                Err(e) => {
                    tracing::warn!(error = %e, "purging expired sagas failed; trying again at the next interval");
                    break;
                }
            };
            if n > 0 {
                tracing::info!(sagas = n, "expired sagas purged");
            }
            if n < settings.batch_size as usize {
                break;
            }
            let pace = Duration::from_secs_f64(n as f64 / settings.max_per_second as f64);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(started + pace) => {}
            }
        }
    }
}

/// What has expired at `now`, given the loaded definitions and the default
/// retention (`None`: keep for ever). A definition name whose versions disagree keeps
/// its sagas for the longest of their retentions (a version without its own takes
/// the default), so no version's promise is broken.
pub fn expiry(catalog: &Catalog, default: Option<Duration>, now: DateTime<Utc>) -> Expiry {
    // Per name: `None` = for ever, `Some(d)` = the longest retention of its versions.
    let mut per_name: BTreeMap<&str, Option<Duration>> = BTreeMap::new();
    for def in catalog.iter() {
        if def.retention.is_none() && !per_name.contains_key(def.name.as_str()) {
            continue;
        }
        let own = match def.retention {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => default,
        };
        let merged = match per_name.get(def.name.as_str()) {
            None => own,
            Some(prev) => longest(*prev, own),
        };
        per_name.insert(def.name.as_str(), merged);
    }
    // Versions without their own retention, seen before a version with one.
    for def in catalog.iter().filter(|d| d.retention.is_none()) {
        if let Some(prev) = per_name.get_mut(def.name.as_str()) {
            *prev = longest(*prev, default);
        }
    }
    let cutoff = |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let mut e = Expiry {
        default_cutoff: default.map(cutoff),
        ..Default::default()
    };
    for (name, retention) in per_name {
        match retention {
            None => e.forever.push(name.to_string()),
            Some(d) => e.named.push((name.to_string(), cutoff(d))),
        }
    }
    e
}

/// The longer of two retentions, `None` being for ever.
fn longest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::definition::parse;

    fn def(name: &str, version: u32, retention: Option<&str>) -> String {
        let r = retention
            .map(|r| format!("retention = \"{r}\"\n"))
            .unwrap_or_default();
        format!(
            "name = \"{name}\"\nversion = {version}\n{r}[[steps]]\nname = \"a\"\nactivity = \"x.y\"\n"
        )
    }

    fn catalog(defs: &[String]) -> Catalog {
        let mut c = Catalog::new();
        for (i, d) in defs.iter().enumerate() {
            let file = format!("{i}.toml");
            c.insert(parse(&file, d).unwrap(), &file).unwrap();
        }
        c
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn definitions_without_retention_take_the_default() {
        let c = catalog(&[def("order", 1, None), def("audit", 1, Some("365d"))]);
        let e = expiry(&c, Some(30 * DAY), now());
        assert_eq!(e.default_cutoff, Some(now() - chrono::Duration::days(30)));
        assert_eq!(
            e.named,
            [("audit".to_string(), now() - chrono::Duration::days(365))]
        );
        assert!(e.forever.is_empty());
    }

    #[test]
    fn zero_keeps_for_ever_and_so_does_a_zero_default() {
        let c = catalog(&[def("ledger", 1, Some("0")), def("order", 1, None)]);
        let e = expiry(&c, None, now());
        assert_eq!(e.forever, ["ledger"]);
        assert_eq!(e.default_cutoff, None);
        assert!(e.named.is_empty());
    }

    #[test]
    fn versions_that_disagree_keep_for_the_longest() {
        let c = catalog(&[
            def("order", 1, Some("7d")),
            def("order", 2, Some("90d")),
            def("pay", 1, Some("7d")),
            def("pay", 2, None),
            def("once", 1, None),
            def("once", 2, Some("0")),
        ]);
        let e = expiry(&c, Some(30 * DAY), now());
        let named: BTreeMap<_, _> = e.named.iter().cloned().collect();
        assert_eq!(named["order"], now() - chrono::Duration::days(90));
        assert_eq!(named["pay"], now() - chrono::Duration::days(30));
        assert_eq!(e.forever, ["once"]);
    }
}
