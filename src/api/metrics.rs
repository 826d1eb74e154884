//! `GET /metrics`: gauges computed from Postgres and the broker at scrape time.
//!
//! Saga counts by name and status are a gauge (`sagaflow_sagas`), not counters:
//! started/completed/compensated totals are its sums and differences over time. Who
//! needs true event counters subscribes to the `<ns>.events` exchange, which
//! carries every outcome. Broker figures are left out (and `sagaflow_broker_up` is
//! 0) when RabbitMQ is unreachable, so Postgres figures still get scraped.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::prom::Exposition;
use super::queues::{activity_loads, queue_views, DEFAULT_WINDOW_SECS};
use super::{ApiError, ApiState};
use crate::store::{outbox, stats};

#[utoipa::path(get, path = "/metrics", tag = "metrics", operation_id = "metrics", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn serve(State(st): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let mut e = Exposition::default();
    store_metrics(&st, &mut e).await?;
    counter_metrics(&st, &mut e).await?;
    scaling_metrics(&st, &mut e).await?;
    broker_metrics(&st, &mut e).await;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        e.finish(),
    ))
}

async fn store_metrics(st: &ApiState, e: &mut Exposition) -> Result<(), ApiError> {
    e.gauge("sagaflow_sagas", "Sagas by definition name and status.");
    for (saga, status, n) in stats::sagas_by_name_status(&st.pool).await? {
        e.sample(
            "sagaflow_sagas",
            &[("saga", &saga), ("status", &status)],
            n as f64,
        );
    }
    let backlog = outbox::backlog(&st.pool).await?;
    e.gauge("sagaflow_outbox_backlog", "Outbox rows not yet published.")
        .sample("sagaflow_outbox_backlog", &[], backlog as f64);
    let w = stats::wakeups(&st.pool).await?;
    e.gauge(
        "sagaflow_wakeups_due",
        "Sagas whose wake-up (timer, delayed start, parked retry) is due.",
    )
    .sample("sagaflow_wakeups_due", &[], w.due as f64)
    .gauge(
        "sagaflow_timer_lag_seconds",
        "Seconds since the oldest due wake-up; 0 if none.",
    )
    .sample("sagaflow_timer_lag_seconds", &[], w.lag_seconds);
    let stuck = crate::store::stuck::count(&st.pool).await?;
    e.gauge(
        "sagaflow_stuck_sagas",
        "Sagas the reconciler found with nothing to move them and that are still not moving.",
    )
    .sample("sagaflow_stuck_sagas", &[], stuck as f64);
    let stored = crate::store::versions::stored(&st.pool).await?;
    let loaded = crate::versions::loaded(&st.catalog);
    unloaded_versions(e, &crate::versions::unloaded(&loaded, &stored));
    Ok(())
}

/// `sagaflow_sagas_unloaded_version{saga,version}`: non-terminal sagas of versions
/// this process does not load. The API reports against its own `sagas_dir`, a
/// coordinator (on its health listener) against what it loaded.
pub fn unloaded_versions(e: &mut Exposition, found: &[crate::versions::Unloaded]) {
    const NAME: &str = "sagaflow_sagas_unloaded_version";
    e.gauge(
        NAME,
        "Scheduled, running and compensating sagas of a definition version this process does not load: they do not move until a coordinator loads it (see `sagaflow versions`).",
    );
    for u in found {
        let version = u.version.to_string();
        e.sample(
            NAME,
            &[("saga", &u.saga), ("version", &version)],
            u.open as f64,
        );
    }
}

/// Counters the coordinators keep in `metric_counters`: (family, type, help).
const COUNTERS: &[(&str, &str, &str)] = &[
    ("sagaflow_sagas_started_total", "counter", "Sagas started, by definition."),
    ("sagaflow_sagas_finished_total", "counter", "Sagas that reached a terminal status, by definition and status."),
    ("sagaflow_sagas_purged_total", "counter", "Ended sagas deleted with their history (retention or erasure on demand), by definition."),
    ("sagaflow_retries_total", "counter", "Retries scheduled, by activity."),
    ("sagaflow_attempts_failed_total", "counter", "Failed or timed-out attempts, by activity."),
    ("sagaflow_step_duration_seconds", "histogram", "Time from a task chain's first scheduling to its success (queueing, attempts and retry waits included), by activity."),
];

async fn counter_metrics(st: &ApiState, e: &mut Exposition) -> Result<(), ApiError> {
    let rows = crate::store::counters::all(&st.pool).await?;
    for (family, kind, help) in COUNTERS {
        e.family(family, kind, help);
        let prefix = format!("{family}_");
        let of_family: Vec<&Row> = rows
            .iter()
            .filter(|(n, _, _)| n == family || n.starts_with(&prefix))
            .collect();
        let samples = if *kind == "histogram" {
            cumulative(&of_family)
        } else {
            of_family.into_iter().cloned().collect()
        };
        for (name, labels, value) in &samples {
            e.rendered(name, labels, *value);
        }
    }
    Ok(())
}

/// A stored counter: name, rendered labels, value.
type Row = (String, String, f64);

/// The step duration histogram's samples as Prometheus reads them: for each
/// activity, every bucket in `le` order holding the steps at or under its bound
/// (the coordinators store each step in one bucket only,
/// `coordinator::counters::STEP_DURATION_IN_BUCKET`; cumulative `_bucket` rows an
/// older version stored are added in), then `_sum` and `_count`.
fn cumulative(rows: &[&Row]) -> Vec<Row> {
    use crate::coordinator::counters::{DURATION_BUCKETS, STEP_DURATION_IN_BUCKET};
    const BUCKET: &str = "sagaflow_step_duration_seconds_bucket";
    let bounds: Vec<String> = DURATION_BUCKETS
        .iter()
        .map(ToString::to_string)
        .chain(["+Inf".to_string()])
        .collect();
    // Per activity's labels: steps per bucket, and the cumulative counts stored before.
    let mut buckets: std::collections::BTreeMap<&str, [Vec<f64>; 2]> = Default::default();
    for (name, labels, value) in rows.iter().copied() {
        let kind = match name.as_str() {
            STEP_DURATION_IN_BUCKET => 0,
            BUCKET => 1,
            _ => continue,
        };
        let Some((activity, le)) = labels.rsplit_once(",le=\"") else {
            continue;
        };
        let Some(i) = bounds
            .iter()
            .position(|b| Some(b.as_str()) == le.strip_suffix('"'))
        else {
            continue; // not a bucket this version knows
        };
        let counts = buckets
            .entry(activity)
            .or_insert_with(|| [vec![0.0; bounds.len()], vec![0.0; bounds.len()]]);
        counts[kind][i] += value;
    }
    let others = |activity: &str| -> Vec<Row> {
        rows.iter()
            .filter(|(name, labels, _)| {
                name != STEP_DURATION_IN_BUCKET && name != BUCKET && labels == activity
            })
            .map(|r| (*r).clone())
            .collect()
    };
    let mut samples = Vec::new();
    for (activity, [steps, before]) in &buckets {
        let mut running = 0.0;
        for (i, le) in bounds.iter().enumerate() {
            running += steps[i];
            let labels = format!("{activity},le=\"{le}\"");
            samples.push((BUCKET.to_string(), labels, running + before[i]));
        }
        samples.extend(others(activity));
    }
    samples.extend(
        rows.iter()
            .map(|r| (*r).clone())
            .filter(|(name, labels, _)| {
                name != STEP_DURATION_IN_BUCKET
                    && name != BUCKET
                    && !buckets.contains_key(labels.as_str())
            }),
    );
    samples
}

/// Reads one figure of an activity's load.
type LoadValue = fn(&stats::ActivityLoad) -> f64;

async fn scaling_metrics(st: &ApiState, e: &mut Exposition) -> Result<(), ApiError> {
    let loads = activity_loads(st, DEFAULT_WINDOW_SECS).await?;
    let families: [(&str, &str, LoadValue); 3] = [
        (
            "sagaflow_activity_outstanding",
            "Tasks dispatched and not answered (ready, unacked or in a delay queue).",
            |l| l.outstanding as f64,
        ),
        (
            "sagaflow_activity_due_soon",
            "Parked retries dispatching within 60 seconds.",
            |l| l.due_soon as f64,
        ),
        (
            "sagaflow_activity_oldest_age_seconds",
            "Age of the oldest outstanding task.",
            |l| l.oldest_age_seconds,
        ),
    ];
    for (name, help, value) in families {
        e.gauge(name, help);
        for l in &loads {
            e.sample(name, &[("activity", &l.activity)], value(l));
        }
    }
    Ok(())
}

async fn broker_metrics(st: &ApiState, e: &mut Exposition) {
    let views = queue_views(st).await;
    e.gauge(
        "sagaflow_broker_up",
        "1 when RabbitMQ answered this scrape.",
    )
    .sample("sagaflow_broker_up", &[], views.is_ok() as u8 as f64);
    let Ok(views) = views else { return };
    e.gauge(
        "sagaflow_task_queue_ready",
        "Ready messages per task queue (coordinator: its input queue).",
    );
    for v in &views {
        e.sample(
            "sagaflow_task_queue_ready",
            &[("activity", &v.activity)],
            v.ready as f64,
        );
    }
    e.gauge("sagaflow_task_queue_consumers", "Consumers per task queue.");
    for v in &views {
        e.sample(
            "sagaflow_task_queue_consumers",
            &[("activity", &v.activity)],
            v.consumers as f64,
        );
    }
    dead_letter_metrics(st, e).await;
}

async fn dead_letter_metrics(st: &ApiState, e: &mut Exposition) {
    let activities: Vec<String> = st.catalog.activities().into_iter().collect();
    let Ok(client) = st.broker.client().await else {
        return;
    };
    let Ok(queues) =
        crate::dead_letters::summaries(client.connection(), &st.names, &activities).await
    else {
        return;
    };
    e.gauge("sagaflow_dead_letters", "Messages per dead-letter queue.");
    for q in queues {
        e.sample(
            "sagaflow_dead_letters",
            &[("queue", &q.queue)],
            q.messages as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, labels: &str, value: f64) -> Row {
        (name.to_string(), labels.to_string(), value)
    }

    #[test]
    fn step_buckets_are_summed_up_in_le_order_with_what_an_older_version_stored() {
        use crate::coordinator::counters::STEP_DURATION_IN_BUCKET as IN;
        const OLD: &str = "sagaflow_step_duration_seconds_bucket";
        let pay = "activity=\"pay\"";
        // An older version counted a step of 0.3 s in every bucket from 0.5 s up.
        let mut rows: Vec<Row> = crate::coordinator::counters::DURATION_BUCKETS
            .iter()
            .filter(|le| **le >= 0.5)
            .map(ToString::to_string)
            .chain(["+Inf".to_string()])
            .map(|le| row(OLD, &format!("{pay},le=\"{le}\""), 1.0))
            .collect();
        rows.sort_by(|a, b| a.1.cmp(&b.1)); // as `store::counters::all` orders them
        rows.extend([
            row("sagaflow_step_duration_seconds_count", pay, 4.0),
            row(IN, "activity=\"pay\",le=\"+Inf\"", 1.0),
            row(IN, "activity=\"pay\",le=\"0.01\"", 2.0),
            row(IN, "activity=\"pay\",le=\"99\"", 7.0),
            row("sagaflow_step_duration_seconds_sum", pay, 4000.5),
            row(
                "sagaflow_step_duration_seconds_sum",
                "activity=\"ship\"",
                1.0,
            ),
        ]);
        let refs: Vec<&Row> = rows.iter().collect();
        let out = cumulative(&refs);
        let le = |b: &str| {
            out.iter()
                .find(|(n, l, _)| n == OLD && *l == format!("{pay},le=\"{b}\""))
                .map(|r| r.2)
        };
        assert_eq!(le("0.005"), Some(0.0));
        assert_eq!(le("0.01"), Some(2.0));
        assert_eq!(le("0.25"), Some(2.0));
        assert_eq!(le("0.5"), Some(3.0), "the older version's step under 0.5 s");
        assert_eq!(le("1800"), Some(3.0));
        assert_eq!(le("+Inf"), Some(4.0), "the count");
        assert_eq!(
            le("99"),
            None,
            "a bound this version does not know is left out"
        );
        let names: Vec<&str> = out.iter().map(|(n, _, _)| n.as_str()).collect();
        let buckets = 1 + crate::coordinator::counters::DURATION_BUCKETS.len();
        assert!(names[..buckets].iter().all(|n| *n == OLD), "{names:?}");
        assert_eq!(
            &names[buckets..],
            [
                "sagaflow_step_duration_seconds_count",
                "sagaflow_step_duration_seconds_sum",
                "sagaflow_step_duration_seconds_sum"
            ],
            "the activity's count and sum after its buckets, then the rest"
        );
        assert!(
            !names.contains(&IN),
            "the stored per-bucket counts are not exposed"
        );
    }
}
