//! How `sagaflow bench` offers its load (`--concurrency`, `--rate`, or neither): the
//! publishing side of each mode, all watching the same subscription to saga events,
//! declared before the first start. The bookkeeping is [`super::tally`].

use std::cell::RefCell;
use std::time::{Duration, Instant};

use serde_json::json;

use super::tally::{self, Tally};
use crate::broker::Subscription;
use crate::client::{Client, StartOptions};
use crate::messages::SagaEvent;

/// How the starts are offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Every start at once (confirmed batches of [`BURST_BATCH`]): throughput under a
    /// backlog; latency is mostly queueing.
    Burst,
    /// Closed loop: `concurrency` sagas in flight, the next started as each ends.
    Closed { concurrency: usize },
    /// Open loop: `rate` starts per second on schedule, whatever the system does.
    Open { rate: f64 },
}

impl Mode {
    /// Its fields in the output line.
    pub fn describe(self) -> serde_json::Value {
        match self {
            Mode::Burst => json!({ "mode": "burst" }),
            Mode::Closed { concurrency } => json!({ "mode": "closed", "concurrency": concurrency }),
            Mode::Open { rate } => json!({ "mode": "open", "rate": rate }),
        }
    }
}

/// Starts per confirmed batch of a burst.
const BURST_BATCH: usize = 500;

/// At most this many events are taken in one go before the closed loop refills, so
/// a flood of events cannot starve the publisher.
const DRAIN_MAX: usize = 1024;

/// What one saga run needs: where to publish, what, how many, how long to wait.
pub struct Load<'a> {
    pub client: &'a Client,
    pub saga: &'a str,
    pub total: usize,
    pub timeout: Duration,
}

/// What a run observed; `extra` holds mode-specific output fields.
pub struct Driven {
    pub tally: Tally,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Offers `load` in `mode` until every saga ended or `load.timeout` passed.
pub async fn drive(
    mode: Mode,
    load: &Load<'_>,
    events: &mut Subscription,
) -> anyhow::Result<Driven> {
    let deadline = tokio::time::Instant::now() + load.timeout;
    match mode {
        Mode::Burst => burst(load, events, deadline).await,
        Mode::Closed { concurrency } => closed(load, concurrency, events, deadline).await,
        Mode::Open { rate } => open(load, rate, events, deadline).await,
    }
}

/// Records sagas `from..to` as started now and publishes their starts in one batch.
async fn start(
    load: &Load<'_>,
    tally: &RefCell<Tally>,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    let ids: Vec<String> = (from..to).map(|i| format!("b-{i}")).collect();
    let now = Instant::now();
    for id in &ids {
        tally.borrow_mut().started(id.clone(), now);
    }
    let starts: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let options = StartOptions {
                id: Some(id),
                ..Default::default()
            };
            (load.saga.to_string(), json!({}), options)
        })
        .collect();
    load.client.start_many(&starts).await?;
    Ok(())
}

/// Records one event body in `tally` (a body that is not a saga event is not ours).
fn record(tally: &RefCell<Tally>, body: &[u8]) {
    if let Ok(e) = serde_json::from_slice::<SagaEvent>(body) {
        tally
            .borrow_mut()
            .ended(&e.saga_id, &e.status, Instant::now());
    }
}

/// Takes events until `total` sagas ended or `deadline` passed.
async fn collect(
    events: &mut Subscription,
    tally: &RefCell<Tally>,
    total: usize,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    while tally.borrow().ended_count() < total {
        let Some(body) = events.next_before(deadline).await else {
            break;
        };
        record(tally, &body);
    }
    Ok(())
}

async fn burst(
    load: &Load<'_>,
    events: &mut Subscription,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Driven> {
    let tally = RefCell::new(Tally::default());
    let publisher = async {
        for from in (0..load.total).step_by(BURST_BATCH) {
            start(load, &tally, from, (from + BURST_BATCH).min(load.total)).await?;
        }
        anyhow::Ok(())
    };
    tokio::try_join!(publisher, collect(events, &tally, load.total, deadline))?;
    Ok(Driven {
        tally: tally.into_inner(),
        extra: Default::default(),
    })
}

async fn closed(
    load: &Load<'_>,
    concurrency: usize,
    events: &mut Subscription,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Driven> {
    let tally = RefCell::new(Tally::default());
    loop {
        let (started, ended) = {
            let t = tally.borrow();
            (t.started_count(), t.ended_count())
        };
        if ended >= load.total {
            break;
        }
        let n = tally::refill(concurrency, started, ended, load.total);
        if n > 0 {
            start(load, &tally, started, started + n).await?;
        }
        let Some(body) = events.next_before(deadline).await else {
            break;
        };
        record(&tally, &body);
        // Everything already delivered, so one batch starts as many as just ended:
        // a deadline in the past still returns a delivery that is ready.
        for _ in 0..DRAIN_MAX {
            let Some(body) = events.next_before(tokio::time::Instant::now()).await else {
                break;
            };
            record(&tally, &body);
        }
    }
    Ok(Driven {
        tally: tally.into_inner(),
        extra: Default::default(),
    })
}

async fn open(
    load: &Load<'_>,
    rate: f64,
    events: &mut Subscription,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Driven> {
    let tally = RefCell::new(Tally::default());
    let publisher = async {
        let began = Instant::now();
        let mut ticks = tokio::time::interval(tally::tick(rate));
        // A tick missed while a publish waited for its confirm is not made up: the
        // next tick publishes everything due by then.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut lags_ms = Vec::with_capacity(load.total);
        let mut next = 0;
        while next < load.total {
            ticks.tick().await;
            let due = tally::due_by(began.elapsed(), rate, load.total);
            if due == next {
                continue;
            }
            let now = Instant::now();
            for i in next..due {
                let lag = now.saturating_duration_since(began + tally::due_at(i, rate));
                lags_ms.push(lag.as_secs_f64() * 1000.0);
            }
            start(load, &tally, next, due).await?;
            next = due;
        }
        anyhow::Ok((lags_ms, began.elapsed()))
    };
    let ((mut lags_ms, publishing), ()) =
        tokio::try_join!(publisher, collect(events, &tally, load.total, deadline))?;
    lags_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(Driven {
        tally: tally.into_inner(),
        extra: open_report(rate, &lags_ms, publishing, load.total),
    })
}

/// The open loop's own fields: how closely the publisher kept its schedule.
fn open_report(
    rate: f64,
    sorted_lags_ms: &[f64],
    publishing: Duration,
    total: usize,
) -> serde_json::Map<String, serde_json::Value> {
    let late_ms = tally::LATE_AFTER.as_secs_f64() * 1000.0;
    let late = sorted_lags_ms.iter().filter(|l| **l > late_ms).count();
    let mut out = tally::quantiles("publish_lag", sorted_lags_ms);
    out.insert("late_starts".into(), json!(late));
    out.insert("late_after_ms".into(), json!(late_ms));
    out.insert(
        "publisher_fell_behind".into(),
        json!(tally::fell_behind(late, total)),
    );
    // The last start is due at (total - 1) / rate; over that span the rate offered.
    let span = publishing.as_secs_f64();
    let offered = if total > 1 && span > 0.0 {
        ((total - 1) as f64 / span * 10.0).round() / 10.0
    } else {
        rate
    };
    out.insert("starts_per_s".into(), json!(offered));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_loop_reports_lags_late_starts_and_the_rate_held() {
        // 100 starts at 50/s: due over 1.98 s; three of them more than 10 ms late.
        let mut lags: Vec<f64> = vec![1.0; 97];
        lags.extend([12.0, 30.0, 45.0]);
        let r = open_report(50.0, &lags, Duration::from_millis(1980), 100);
        assert_eq!(r["publish_lag_p50_ms"], 1.0);
        assert_eq!(r["publish_lag_max_ms"], 45.0);
        assert_eq!(r["late_starts"], 3);
        assert_eq!(r["late_after_ms"], 10.0);
        assert_eq!(r["publisher_fell_behind"], true);
        assert_eq!(r["starts_per_s"], 50.0);
    }

    #[test]
    fn one_start_reports_the_rate_asked_for() {
        let r = open_report(5.0, &[0.4], Duration::ZERO, 1);
        assert_eq!(r["starts_per_s"], 5.0);
        assert_eq!(r["publisher_fell_behind"], false);
    }

    #[test]
    fn each_mode_names_itself_in_the_output() {
        assert_eq!(Mode::Burst.describe(), json!({ "mode": "burst" }));
        assert_eq!(
            Mode::Closed { concurrency: 8 }.describe(),
            json!({ "mode": "closed", "concurrency": 8 })
        );
        assert_eq!(
            Mode::Open { rate: 2.5 }.describe(),
            json!({ "mode": "open", "rate": 2.5 })
        );
    }
}
