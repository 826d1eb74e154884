//! `sagaflow sagas show <id>`: one saga as stored, readable or not.

use super::{SagaNotFound, ShowArgs};
use crate::cli::database::pool;
use crate::config::Settings;
use crate::store::sagas;

/// `sagas show <id>` (and the deprecated `status <id>`): the saga, its timers and its
/// history. A saga that does not exist is [`SagaNotFound`] (exit code 3).
pub async fn show(settings: &Settings, args: ShowArgs) -> anyhow::Result<()> {
    let (id, json) = (args.id.as_str(), args.json);
    let pool = pool(settings).await?;
    let saga = match sagas::read(&pool, id).await? {
        None => return Err(SagaNotFound(id.to_string()).into()),
        Some(Ok(saga)) => saga,
        Some(Err(u)) => return unreadable(&pool, *u, json).await,
    };
    let history = sagas::history(&pool, id).await?;
    if json {
        let out = serde_json::json!({ "saga": saga.state, "created_at": saga.created_at, "updated_at": saga.updated_at, "history": history });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let s = &saga.state;
    println!("saga     {} ({} v{})", s.id, s.saga, s.version);
    println!("status   {}", s.status);
    if let Some(at) = s.run_at {
        println!("runs at  {}", at.to_rfc3339());
    }
    if let Some(at) = s.next_wake().filter(|_| s.run_at.is_none()) {
        println!(
            "wakes at {} (sleep, wait timeout, activity timeout or parked retry)",
            at.to_rfc3339()
        );
    }
    println!(
        "created  {}   updated {}",
        saga.created_at.to_rfc3339(),
        saga.updated_at.to_rfc3339()
    );
    if let Some(e) = &s.error {
        println!("error    {}: {}", e.code, e.message);
    }
    println!(
        "\n{:<28} {:<26} {:<18} {:>7}  detail",
        "at", "event", "step", "attempt"
    );
    for h in history {
        let attempt = h.attempt.map(|a| a.to_string()).unwrap_or_default();
        let detail = if h.detail == serde_json::json!({}) {
            String::new()
        } else {
            h.detail.to_string()
        };
        println!(
            "{:<28} {:<26} {:<18} {:>7}  {}",
            h.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            h.event,
            h.step.unwrap_or_default(),
            attempt,
            detail
        );
    }
    Ok(())
}

/// `show` of a saga whose stored state cannot be decoded: what its columns say, the
/// reason and its history, then an error (exit code 1) naming the reason.
async fn unreadable(
    pool: &sqlx::PgPool,
    u: sagas::UnreadableSaga,
    json: bool,
) -> anyhow::Result<()> {
    let history = sagas::history(pool, &u.id).await?;
    if json {
        let out = serde_json::json!({ "saga": null, "unreadable": &u, "history": history });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Err(u.error().into());
    }
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    println!(
        "saga     {} ({} v{})",
        u.id,
        or_unknown(u.saga.clone()),
        or_unknown(u.version.map(|v| v.to_string()))
    );
    println!(
        "status   unreadable (the status column says {})",
        or_unknown(u.status.clone())
    );
    println!("reason   {}", u.reason);
    println!(
        "\n{:<28} {:<26} {:<18} {:>7}  detail",
        "at", "event", "step", "attempt"
    );
    for h in history {
        println!(
            "{:<28} {:<26} {:<18} {:>7}  {}",
            h.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            h.event,
            h.step.unwrap_or_default(),
            h.attempt.map(|a| a.to_string()).unwrap_or_default(),
            h.detail
        );
    }
    Err(u.error().into())
}
