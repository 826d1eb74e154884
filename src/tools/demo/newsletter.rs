//! Activities of `sagas/group_newsletter.toml`: a group e-mail whose owner deferred
//! the send. `render` prepares it, the saga sleeps until `send_at`, `send` mails one
//! recipient (a `for_each` step: one task per recipient, the recipient as the task's
//! `item`; one effect each, keyed by the element's idempotency key), `recall` undoes
//! one send, `record` records the delivery.

use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::activities::{behave, record_effect};
use crate::worker::{ActivityContext, ActivityError, Worker};

/// The newsletter activities.
pub const NEWSLETTER_ACTIVITIES: &[&str] = &[
    "newsletter.render",
    "newsletter.send",
    "newsletter.recall",
    "newsletter.record",
];

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
    let (p1, p2, p3, p4) = (pool.clone(), pool.clone(), pool.clone(), pool);
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
        "newsletter.recall",
        move |ctx: ActivityContext, input: Input| {
            let pool = p4.clone();
            async move { recall(&pool, &ctx, input).await }
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

/// Mails one recipient: the task's `item`.
async fn send(pool: &PgPool, ctx: &ActivityContext, input: Input) -> Result<Value, ActivityError> {
    let to = recipient(ctx)?;
    behave(ctx, &raw_input(&input.saga)).await?;
    record_effect(pool, &ctx.idempotency_key, ctx).await?;
    let subject = input
        .steps
        .pointer("/render/subject")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(json!({ "to": to, "subject": subject }))
}

/// Recalls the e-mail one send mailed (its compensation): an effect of its own.
async fn recall(
    pool: &PgPool,
    ctx: &ActivityContext,
    input: Input,
) -> Result<Value, ActivityError> {
    let to = recipient(ctx)?;
    behave(ctx, &raw_input(&input.saga)).await?;
    record_effect(pool, &ctx.idempotency_key, ctx).await?;
    Ok(json!({ "recalled": to }))
}

/// The recipient a `for_each` task carries as its `item`. An address in the
/// reserved `.invalid` domain (RFC 2606) is refused for good: how the demo shows a
/// failed send undoing the others.
fn recipient(ctx: &ActivityContext) -> Result<String, ActivityError> {
    match &ctx.item {
        Some(Value::String(to)) if to.ends_with(".invalid") => Err(ActivityError::fatal(
            "bad_recipient",
            format!("{to} cannot receive mail"),
        )),
        Some(Value::String(to)) => Ok(to.clone()),
        other => Err(ActivityError::fatal(
            "bad_recipient",
            format!("expected the recipient (a string) as the task's item, got {other:?}"),
        )),
    }
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
        .get("send_each")
        .and_then(Value::as_array)
        .map(|a| Value::from(a.len()))
        .unwrap_or(Value::Null);
    Ok(json!({ "group": input.saga.group, "delivered": sent }))
}
