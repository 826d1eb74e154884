//! `sagaflow schedules …` (the deprecated spelling is `schedule`): the operator's view
//! of cron schedules. The work is done by [`crate::scheduler::admin`] against Postgres;
//! coordinators pick changes up on their next pass. File schedules are listed as
//! `<saga>.<schedule>`.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::Value;

use super::database::pool;
use super::definitions::load_catalog;
use super::parse_json;
use crate::config::Settings;
use crate::scheduler::admin::{self, AddRequest};
use crate::store::schedules::{self, ScheduleRow};

#[derive(Debug, Subcommand)]
pub enum SchedulesCmd {
    /// Add a schedule that starts a saga on every cron tick.
    Add {
        /// Schedule name: ASCII letters, digits, `_` or `-`. Saga ids are `<name>@<tick>`.
        name: String,
        /// Saga to start (must be defined in sagas_dir).
        #[arg(long)]
        saga: String,
        /// Cron expression: 5 fields (crontab, `0 0 * * *`) or 6/7 with seconds first
        /// (`*/10 * * * * *`), or `@daily`-style shorthands.
        #[arg(long)]
        cron: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Saga input as JSON; an object also gets `scheduled_at` (the tick).
        #[arg(long, default_value = "{}", value_parser = parse_json)]
        input: Value,
        /// What a tick does while the previous run is still open.
        #[arg(long, default_value = "skip", value_parser = ["skip", "buffer_one", "allow_all"])]
        overlap: String,
        /// After downtime, due ticks older than this are skipped and counted as missed.
        #[arg(long, default_value = "5m")]
        catch_up_window: String,
    },
    /// List schedules with their next and last fire, last run and counters.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop firing ticks (a pending manual trigger still runs).
    Pause { name: String },
    /// Fire again from now on; ticks that fell in the pause are not caught up.
    Resume { name: String },
    /// Start one run now, whatever the overlap policy or a pause say.
    Trigger { name: String },
    /// Delete a schedule added with `schedules add` (file schedules live in their file).
    Delete { name: String },
}

/// Runs one `schedules` subcommand.
pub async fn run(settings: &Settings, cmd: SchedulesCmd) -> anyhow::Result<()> {
    let pool = pool(settings).await?;
    match cmd {
        SchedulesCmd::Add {
            name,
            saga,
            cron,
            timezone,
            input,
            overlap,
            catch_up_window,
        } => {
            let catalog = load_catalog(settings)?;
            let req = AddRequest {
                name,
                saga,
                cron,
                timezone,
                input,
                overlap,
                catch_up_window,
            };
            let s = admin::add(&pool, &catalog, &req).await?;
            println!(
                "schedule {} added: saga {}, cron `{}` in {}, overlap {}; next fire {}",
                s.name,
                s.saga,
                s.cron,
                s.timezone,
                s.overlap,
                when(s.next_fire_at)
            );
        }
        SchedulesCmd::List { json } => list(&pool, json).await?,
        SchedulesCmd::Pause { name } => {
            admin::pause(&pool, &name).await?;
            println!("schedule {name} paused");
        }
        SchedulesCmd::Resume { name } => match admin::resume(&pool, &name, Utc::now()).await? {
            Some(next) => println!(
                "schedule {name} resumed; next fire {} (ticks during the pause are not caught up)",
                when(Some(next))
            ),
            None => println!("schedule {name} is not paused; nothing changed"),
        },
        SchedulesCmd::Trigger { name } => {
            let id = admin::trigger(&pool, &name).await?;
            println!(
                "run of {name} requested; the next coordinator pass starts saga {id} \
                 (follow it with: sagaflow sagas show {id})"
            );
        }
        SchedulesCmd::Delete { name } => {
            admin::delete(&pool, &name).await?;
            println!("schedule {name} deleted");
        }
    }
    Ok(())
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

async fn list(pool: &sqlx::PgPool, json: bool) -> anyhow::Result<()> {
    let rows = schedules::list(pool).await.context("list schedules")?;
    if json {
        let out: Vec<Value> = rows
            .iter()
            .map(|(r, st)| to_json(r, st.as_deref()))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<32} {:<20} {:<20} {:<14} {:<10} {:<6} {:<23} {:<23} {:>7} {:>7}  last run",
        "name",
        "saga",
        "cron",
        "timezone",
        "overlap",
        "paused",
        "next fire",
        "last fire",
        "missed",
        "skipped"
    );
    for (r, status) in &rows {
        let last = match (&r.last_saga_id, status) {
            (Some(id), Some(st)) => format!("{id} ({st})"),
            (Some(id), None) => format!("{id} (not found)"),
            (None, _) => "-".into(),
        };
        println!(
            "{:<32} {:<20} {:<20} {:<14} {:<10} {:<6} {:<23} {:<23} {:>7} {:>7}  {}",
            r.name,
            r.saga,
            r.cron,
            r.timezone,
            r.overlap,
            if r.paused { "yes" } else { "no" },
            when(r.next_fire_at),
            when(r.last_fire_at),
            r.missed_ticks,
            r.skipped_ticks,
            last
        );
    }
    Ok(())
}

fn to_json(r: &ScheduleRow, last_status: Option<&str>) -> Value {
    let mut v = serde_json::to_value(r).expect("schedule row serialises");
    v["last_status"] = last_status.map_or(Value::Null, |s| Value::String(s.into()));
    v
}
