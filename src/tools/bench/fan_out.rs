//! `sagaflow bench-fan-out`: one saga whose `for_each` step runs a no-op activity
//! over an array of `elements`, `max_concurrency` at a time, through the real stack
//! (a coordinator and a worker process) in a fresh namespace and database. The step
//! has `input = {}`, as a real fan-out over a large array should (each task then
//! carries its element, not the array); `whole_input` leaves it out. Timed
//! from the start to the saga's terminal event; prints one JSON line with the
//! elements per second and each process's CPU time in that window.

use std::time::{Duration, Instant};

use serde_json::json;

use super::cpu::{self, Targets};
use super::{collect, subscribe, Sandbox};
use crate::broker::Names;
use crate::client::{Client, StartOptions};
use crate::config::Settings;
use crate::saga::definition::parse;
use crate::tools::demo::NOOP_ACTIVITY;
use crate::tools::launch;

/// What to run.
#[derive(Debug, Clone)]
pub struct FanOutArgs {
    pub elements: usize,
    pub max_concurrency: u32,
    /// Tasks carry the whole saga input (no `input` map on the step).
    pub whole_input: bool,
    pub timeout: Duration,
}

const SAGA: &str = "bench_fan_out";

/// The definition: one `for_each` step over `input.items`.
pub fn definition(max_concurrency: u32, whole_input: bool) -> String {
    let input = if whole_input { "" } else { "input = {}\n" };
    format!(
        "name = \"{SAGA}\"\nversion = 1\n\n[[steps]]\nname = \"each\"\nfor_each = \"input.items\"\n\
         max_concurrency = {max_concurrency}\nactivity = \"{NOOP_ACTIVITY}\"\nstart_to_close = \"30s\"\n{input}"
    )
}

/// Runs the benchmark; the sandbox is torn down whatever happened in between.
pub async fn run(settings: &Settings, args: &FanOutArgs) -> anyhow::Result<serde_json::Value> {
    let text = definition(args.max_concurrency, args.whole_input);
    parse("<bench>", &text)?;
    let files = [(format!("{SAGA}.toml"), text)];
    let mut sandbox = Sandbox::new(settings, "fanout", &files).await?;
    let result = run_in(settings, &mut sandbox, args).await;
    sandbox
        .teardown(settings, &crate::tools::demo::activity_names())
        .await?;
    result
}

async fn run_in(
    settings: &Settings,
    sandbox: &mut Sandbox,
    args: &FanOutArgs,
) -> anyhow::Result<serde_json::Value> {
    sandbox.spawn(&["coordinator"], &[])?;
    sandbox.spawn(&["worker", "--demo"], &[])?;
    let names = Names::new(&sandbox.namespace);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-bench-fan-out").await?;
    let client = Client::connect(&settings.amqp.url, &sandbox.namespace).await?;
    let mut events = subscribe(&conn, &names, SAGA).await?;
    for queue in [names.coordinator_queue(), names.task_queue(NOOP_ACTIVITY)] {
        launch::wait_for_consumer(&conn, &queue, Duration::from_secs(60))
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let pool = crate::store::connect(&sandbox.db_url, 1).await?;
    let postmaster = crate::store::bench::backend_pid(&pool)
        .await
        .ok()
        .and_then(|pid| cpu::postmaster_of(&cpu::processes(), u32::try_from(pid).ok()?));
    pool.close().await;
    let targets = Targets {
        pids: sandbox.pids(),
        postmaster,
    };
    let items: Vec<usize> = (0..args.elements).collect();
    let before = cpu::sample(&cpu::processes(), &targets);
    let began = Instant::now();
    let options = StartOptions {
        id: Some("fan-out-1".into()),
        ..Default::default()
    };
    client
        .start(SAGA, json!({ "items": items }), options)
        .await?;
    let mut status = None;
    collect(&mut events, 1, args.timeout, |e| status = Some(e.status)).await?;
    let seconds = began.elapsed().as_secs_f64();
    let after = cpu::sample(&cpu::processes(), &targets);
    client.close().await;
    conn.close("done").await;
    Ok(json!({
        "elements": args.elements,
        "max_concurrency": args.max_concurrency,
        "whole_input": args.whole_input,
        "status": status,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "elements_per_s": (args.elements as f64 / seconds).round(),
        "cpu_s": cpu::seconds_between(&before, &after),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_is_a_valid_fan_out() {
        let def = parse("<bench>", &definition(500, false)).unwrap();
        let f = def.steps[0].for_each.as_ref().unwrap();
        assert_eq!(f.max_concurrency, 500);
        assert_eq!(f.items.to_string(), "input.items");
        assert_eq!(def.steps[0].input.as_ref().map(|m| m.len()), Some(0));
        let whole = parse("<bench>", &definition(500, true)).unwrap();
        assert!(whole.steps[0].input.is_none());
    }
}
