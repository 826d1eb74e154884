//! Activities of `sagas/group_newsletter.toml`: a group e-mail whose owner deferred
//! the send. `render` prepares it, the saga sleeps until `send_at`, `send` mails every
//! recipient (one effect per recipient, keyed `<idempotency_key>:<recipient>`, with a
//! heartbeat per recipient whose details let a retry resume where the last attempt
//! stopped), `record` records the delivery.

use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::activities::{behave, record_effect};
use crate::worker::{ActivityContext, ActivityError, Worker};

/// The newsletter activities.
pub const NEWSLETTER_ACTIVITIES: &[&str] =
    &["newsletter.render", "newsletter.send", "newsletter.record"];

#[derive(Debug, Deserialize)]
struct Input {
    saga: NewsletterInput,
    #[serde(default)]
    steps: Value,
}

#[derive(Debug, Deserialize)]
struct NewsletterInput {
    group: String,
    recipients: Vec<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Adds the newsletter handlers to `w`.
pub fn register(w: Worker, pool: PgPool) -> Worker {
    let (p1, p2, p3) = (pool.clone(), pool.clone(), pool);
    w.activity(
        "newsletter.render",
        move |ctx: ActivityContext, input: Input| {
            let pool = p1.clone();
            async move { render(&pool, &ctx, input).await }
        },
    )
    .activity(
        "newsletter.send",
        move |ctx: ActivityContext, input: Input| {
            let pool = p2.clone();
            async move { send(&pool, &ctx, input).await }
        },
    )
    .activity(
        "newsletter.record",
        move |ctx: ActivityContext, input: Input| {
            let pool = p3.clone();
            async move { record(&pool, &ctx, input).await }
        },
    )
}

fn raw_input(i: &NewsletterInput) -> Value {
    Value::Object(i.rest.clone())
}

async fn render(
    pool: &PgPool,
    ctx: &ActivityContext,
    input: Input,
) -> Result<Value, ActivityError> {
    behave(ctx, &raw_input(&input.saga)).await?;
    if input.saga.recipients.is_empty() {
        return Err(ActivityError::fatal(
            "no_recipients",
            format!("group {} has no recipients", input.saga.group),
        ));
    }
    record_effect(pool, &ctx.idempotency_key, ctx).await?;
    let subject = input
        .saga
        .subject
        .clone()
        .unwrap_or_else(|| format!("News for {}", input.saga.group));
    Ok(json!({ "subject": subject, "recipients": input.saga.recipients.len() }))
}

async fn send(pool: &PgPool, ctx: &ActivityContext, input: Input) -> Result<Value, ActivityError> {
    // Resume after the recipients an earlier attempt reported as sent.
    let done = ctx
        .heartbeat_details
        .as_ref()
        .and_then(|d| d.get("sent"))
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize;
    let recipients = &input.saga.recipients;
    for (n, to) in recipients.iter().enumerate().skip(done) {
        record_effect(pool, &format!("{}:{to}", ctx.idempotency_key), ctx).await?;
        ctx.heartbeat(json!({ "sent": n + 1 }));
    }
    behave(ctx, &raw_input(&input.saga)).await?;
    let subject = input
        .steps
        .pointer("/render/subject")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(json!({ "sent": recipients.len(), "subject": subject }))
}

async fn record(
    pool: &PgPool,
    ctx: &ActivityContext,
    input: Input,
) -> Result<Value, ActivityError> {
    behave(ctx, &raw_input(&input.saga)).await?;
    record_effect(pool, &ctx.idempotency_key, ctx).await?;
    let sent = input
        .steps
        .pointer("/send/sent")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(json!({ "group": input.saga.group, "delivered": sent }))
}
