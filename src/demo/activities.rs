//! The demo activities hosted by `sagaflow worker --demo`: an order saga's steps that
//! record their effects in Postgres, and a no-op for the benchmark.
//!
//! Failures are injected through the saga input, so every path can be shown by hand:
//! `{"fail": {"payments.charge": {"code": "card_declined", "retryable": false}}}` fails
//! that activity on every attempt; add `"times": 2` to fail only the first two attempts.
//!
//! Each effect is a row in `demo_effects` keyed by the task's idempotency key — what a
//! real downstream system does with the key. Running a handler again for a key whose
//! effect exists does not apply it again; it bumps `calls`, so a re-run is detected
//! (tests assert on it) rather than hidden.

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

/// What every demo activity receives.
#[derive(Debug, Deserialize)]
struct DemoInput {
    #[serde(default)]
    saga: Value,
}

/// Creates the effects table (idempotent).
pub async fn prepare(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS demo_effects (
            idempotency_key text PRIMARY KEY,
            saga_id text NOT NULL,
            activity text NOT NULL,
            calls integer NOT NULL DEFAULT 1,
            created_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A worker hosting every demo activity.
pub fn worker(pool: PgPool) -> Worker {
    let mut w = Worker::new().activity(
        NOOP_ACTIVITY,
        |_ctx: ActivityContext, _input: Value| async move { Ok::<_, ActivityError>(Value::Null) },
    );
    for activity in ORDER_ACTIVITIES {
        let pool = pool.clone();
        w = w.activity(activity, move |ctx: ActivityContext, input: DemoInput| {
            let pool = pool.clone();
            async move { effect(&pool, &ctx, &input.saga).await }
        });
    }
    w
}

/// The injected failure for this activity and attempt, if any.
fn injected_failure(activity: &str, attempt: u32, saga_input: &Value) -> Option<ActivityError> {
    let spec = saga_input.get("fail")?.get(activity)?;
    let times = spec
        .get("times")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    if u64::from(attempt) > times {
        return None;
    }
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
    if let Some(e) = injected_failure(&ctx.activity, ctx.attempt, saga_input) {
        return Err(e);
    }
    sqlx::query(
        "INSERT INTO demo_effects (idempotency_key, saga_id, activity) VALUES ($1, $2, $3)
         ON CONFLICT (idempotency_key) DO UPDATE SET calls = demo_effects.calls + 1",
    )
    .bind(&ctx.idempotency_key)
    .bind(&ctx.saga_id)
    .bind(&ctx.activity)
    .execute(pool)
    .await
    .map_err(|e| ActivityError::retryable("db_unavailable", e.to_string()))?;
    Ok(json!({ "activity": ctx.activity, "ref": ctx.idempotency_key }))
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
}
