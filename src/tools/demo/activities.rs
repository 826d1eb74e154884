//! The demo activities hosted by `sagaflow worker --demo`: an order saga's steps that
//! record their effects in Postgres, and the benchmark's activities (a no-op, a no-op
//! compensation and one that always fails).
//!
//! Failures are injected through the saga input, so every path can be shown by hand:
//! `{"fail": {"payments.charge": {"code": "card_declined", "retryable": false}}}` fails
//! that activity on every attempt; add `"times": 2` to fail only the first two attempts.
//! `{"slow": {"shipping.ship": {"ms": 3000, "times": 1, "heartbeat": true}}}` makes the
//! first attempt take 3 s (heartbeating every 100 ms when asked), to show timeouts.
//! Either may carry `"while": "<switch>"`: it applies only while the table
//! `demo_switches` holds a row of that name (an outage that lasts until someone ends
//! it with [`set_switch`], so an operator's retry succeeds; tests flip it instead of
//! racing a clock). Order activities only.
//!
//! Each effect is a row in `demo_effects` keyed by the task's idempotency key — what a
//! real downstream system does with the key. Running a handler again for a key whose
//! effect exists does not apply it again; it bumps `calls`, so a re-run is detected
//! (tests assert on it) rather than hidden.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::worker::{ActivityContext, ActivityError, Worker};

/// Activities of the shipped example sagas.
pub const ORDER_ACTIVITIES: &[&str] = &[
    "inventory.reserve",
    "inventory.release",
    "payments.charge",
    "payments.refund",
    "shipping.ship",
];

/// The benchmark's activity: does nothing, touches no table.
pub const NOOP_ACTIVITY: &str = "bench.noop";

/// The benchmark's compensation (`--workload compensate`): does nothing either; a
/// name of its own so its tasks are told from the actions' in queues and history.
pub const UNDO_ACTIVITY: &str = "bench.undo";

/// The benchmark's failing step (`--workload compensate`): fails every attempt with a
/// retryable error, so the saga spends its retries and then compensates.
pub const FAIL_ACTIVITY: &str = "bench.fail";

/// The benchmark's activities, hosted by every demo worker.
pub const BENCH_ACTIVITIES: &[&str] = &[NOOP_ACTIVITY, UNDO_ACTIVITY, FAIL_ACTIVITY];

/// What [`FAIL_ACTIVITY`] answers to `attempt`; public so the benchmark's preload can
/// write the history a real failure leaves.
pub fn bench_failure(attempt: u32) -> ActivityError {
    ActivityError::retryable(
        "bench_failure",
        format!("{FAIL_ACTIVITY} fails every attempt (attempt {attempt})"),
    )
}

/// What every demo activity receives.
#[derive(Debug, Deserialize)]
struct DemoInput {
    #[serde(default)]
    saga: Value,
}

/// Creates the demo's tables (see [`crate::store::demo`]).
pub async fn prepare(pool: &PgPool) -> Result<(), crate::store::StoreError> {
    crate::store::demo::prepare(pool).await
}

/// Turns the switch `name` on or off: an injection with `"while": name` applies only
/// while it is on.
pub async fn set_switch(
    pool: &PgPool,
    name: &str,
    on: bool,
) -> Result<(), crate::store::StoreError> {
    crate::store::demo::set_switch(pool, name, on).await
}

/// A worker hosting every demo activity.
pub fn worker(pool: PgPool) -> Worker {
    let noop =
        |_ctx: ActivityContext, _input: Value| async move { Ok::<_, ActivityError>(Value::Null) };
    let mut w = Worker::new()
        .activity(NOOP_ACTIVITY, noop)
        .activity(UNDO_ACTIVITY, noop)
        .activity(
            FAIL_ACTIVITY,
            |ctx: ActivityContext, _input: Value| async move {
                Err::<Value, _>(bench_failure(ctx.attempt))
            },
        );
    w = super::newsletter::register(w, pool.clone());
    for activity in ORDER_ACTIVITIES {
        let pool = pool.clone();
        w = w.activity(activity, move |ctx: ActivityContext, input: DemoInput| {
            let pool = pool.clone();
            async move { effect(&pool, &ctx, &input.saga).await }
        });
    }
    w
}

/// The `kind` ("fail" or "slow") injection for this activity, if it applies to
/// `attempt` (`"times": n` limits it to the first n attempts).
fn injection<'a>(
    kind: &str,
    activity: &str,
    attempt: u32,
    saga_input: &'a Value,
) -> Option<&'a Value> {
    let spec = saga_input.get(kind)?.get(activity)?;
    let times = spec
        .get("times")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    (u64::from(attempt) <= times).then_some(spec)
}

/// The saga input without this activity's injections whose `"while"` switch is off.
async fn switched<'a>(
    pool: &PgPool,
    activity: &str,
    saga_input: &'a Value,
) -> Result<Cow<'a, Value>, ActivityError> {
    let mut input = Cow::Borrowed(saga_input);
    for kind in ["fail", "slow"] {
        let Some(switch) = saga_input
            .get(kind)
            .and_then(|k| k.get(activity))
            .and_then(|spec| spec.get("while"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let on = crate::store::demo::switch_on(pool, switch)
            .await
            .map_err(|e| ActivityError::retryable("db_unavailable", e.to_string()))?;
        if !on {
            if let Some(k) = input.to_mut().get_mut(kind).and_then(Value::as_object_mut) {
                k.remove(activity);
            }
        }
    }
    Ok(input)
}

/// The injected failure for this activity and attempt, if any.
fn injected_failure(activity: &str, attempt: u32, saga_input: &Value) -> Option<ActivityError> {
    let spec = injection("fail", activity, attempt, saga_input)?;
    let code = spec
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or("demo_failure")
        .to_string();
    let retryable = spec
        .get("retryable")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let message = format!("injected failure of {activity} (attempt {attempt})");
    Some(ActivityError {
        code,
        message,
        retryable,
    })
}

async fn effect(
    pool: &PgPool,
    ctx: &ActivityContext,
    saga_input: &Value,
) -> Result<Value, ActivityError> {
    let saga_input = switched(pool, &ctx.activity, saga_input).await?;
    behave(ctx, &saga_input).await?;
    record_effect(pool, &ctx.idempotency_key, ctx).await?;
    Ok(json!({ "activity": ctx.activity, "ref": ctx.idempotency_key }))
}

/// Applies the injected slowness and failure for this activity and attempt.
pub(super) async fn behave(ctx: &ActivityContext, saga_input: &Value) -> Result<(), ActivityError> {
    if let Some((ms, heartbeat)) = injected_delay(&ctx.activity, ctx.attempt, saga_input) {
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
        while tokio::time::Instant::now() < until {
            if heartbeat {
                ctx.heartbeat(json!({ "slow": true }));
            }
            tokio::time::sleep(
                std::time::Duration::from_millis(100).min(until - tokio::time::Instant::now()),
            )
            .await;
        }
    }
    match injected_failure(&ctx.activity, ctx.attempt, saga_input) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The injected delay (milliseconds, whether to heartbeat) for this attempt, if any.
fn injected_delay(activity: &str, attempt: u32, saga_input: &Value) -> Option<(u64, bool)> {
    let spec = injection("slow", activity, attempt, saga_input)?;
    let ms = spec.get("ms").and_then(Value::as_u64).unwrap_or(1000);
    Some((
        ms,
        spec.get("heartbeat")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    ))
}

/// How long an effect write rides out an unreachable database before the attempt
/// fails: a downstream system's client retries a short outage (a failover) itself,
/// rather than spend one of the step's attempts on it.
const EFFECT_OUTAGE_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// Records one effect under `key` (a downstream system's idempotent write), retrying
/// while the database is unreachable for up to [`EFFECT_OUTAGE_GRACE`].
pub(super) async fn record_effect(
    pool: &PgPool,
    key: &str,
    ctx: &ActivityContext,
) -> Result<(), ActivityError> {
    let give_up = tokio::time::Instant::now() + EFFECT_OUTAGE_GRACE;
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match crate::store::demo::record_effect(pool, key, &ctx.saga_id, &ctx.activity).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && tokio::time::Instant::now() + pause < give_up => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            Err(e) => return Err(ActivityError::retryable("db_unavailable", e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_injection_by_activity_and_attempt() {
        let input = json!({"fail": {"payments.charge": {"code": "card_declined", "retryable": false}, "shipping.ship": {"times": 2}}});
        let e = injected_failure("payments.charge", 7, &input).unwrap();
        assert_eq!((e.code.as_str(), e.retryable), ("card_declined", false));
        assert!(
            injected_failure("shipping.ship", 2, &input)
                .unwrap()
                .retryable
        );
        assert!(injected_failure("shipping.ship", 3, &input).is_none());
        assert!(injected_failure("inventory.reserve", 1, &input).is_none());
        assert!(injected_failure("inventory.reserve", 1, &json!({})).is_none());
    }

    #[test]
    fn delay_injection_by_activity_and_attempt() {
        let input = json!({"slow": {"shipping.ship": {"ms": 250, "times": 1, "heartbeat": true}, "payments.charge": {}}});
        assert_eq!(
            injected_delay("shipping.ship", 1, &input),
            Some((250, true))
        );
        assert_eq!(injected_delay("shipping.ship", 2, &input), None);
        assert_eq!(
            injected_delay("payments.charge", 9, &input),
            Some((1000, false))
        );
        assert_eq!(injected_delay("inventory.reserve", 1, &input), None);
    }
}
