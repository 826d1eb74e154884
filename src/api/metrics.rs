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
        for (name, labels, value) in rows
            .iter()
            .filter(|(n, _, _)| n == family || n.starts_with(&prefix))
        {
            e.rendered(name, labels, *value);
        }
    }
    Ok(())
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
