//! `sagaflow bench`: sagas of a workload through the real stack — a coordinator and
//! a worker process started exactly as a user would — in a fresh namespace and
//! database, offered in a burst, a closed loop or an open loop ([`super::drive`]),
//! after an optional preload of finished sagas ([`super::preload`]), which the
//! coordinator may purge during the run (`purge`: retention's cost). Timed from the
//! first start to the last terminal event; prints one JSON line with the latency
//! quantiles, the rates, the statuses and each process's CPU time in that window.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use super::cpu::{self, Targets};
use super::drive::{drive, Driven, Load, Mode};
use super::tally;
use super::workload::Workload;
use super::{subscribe, Sandbox};
use crate::broker::Names;
use crate::client::Client;
use crate::config::{DatabaseSettings, Settings};
use crate::saga::definition::{parse, Definition};
use crate::tools::launch;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub sagas: usize,
    pub steps: usize,
    pub timeout: Duration,
    pub mode: Mode,
    pub workload: Workload,
    /// Finished sagas written before the timed run.
    pub preload: usize,
    /// The coordinator runs with retention 1 s, so it purges the preloaded sagas
    /// (and the timed ones a second after they end) during the run; otherwise with
    /// retention 0 (keep for ever).
    pub purge: bool,
}

impl BenchArgs {
    /// Why these arguments cannot run, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.sagas == 0 {
            return Err("--sagas must be at least 1".into());
        }
        self.workload.check_steps(self.steps)?;
        if self.purge && self.preload == 0 {
            return Err("--purge needs --preload: there is nothing to purge".into());
        }
        match self.mode {
            Mode::Closed { concurrency: 0 } => Err("--concurrency must be at least 1".into()),
            Mode::Open { rate } if !(rate.is_finite() && rate > 0.0) => {
                Err("--rate must be a number of starts per second above 0".into())
            }
            _ => Ok(()),
        }
    }
}

/// How long the benchmark waits for the children to consume their queues.
const READY: Duration = Duration::from_secs(60);

/// Runs the benchmark in a fresh namespace and database; returns the JSON line. The
/// sandbox is torn down whatever happened in between.
pub async fn run(settings: &Settings, args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    args.check().map_err(anyhow::Error::msg)?;
    let saga = args.workload.saga(args.steps);
    let text = args.workload.definition(args.steps);
    let def = parse("<bench>", &text)?;
    let mut sandbox = Sandbox::new(settings, "bench", &[(format!("{saga}.toml"), text)]).await?;
    let result = run_in(settings, &mut sandbox, &def, args).await;
    // The demo worker declares a queue for every demo activity: delete them all.
    sandbox
        .teardown(settings, &crate::tools::demo::activity_names())
        .await?;
    result
}

async fn run_in(
    settings: &Settings,
    sandbox: &mut Sandbox,
    def: &Definition,
    args: &BenchArgs,
) -> anyhow::Result<serde_json::Value> {
    // No statement timeout: a preload's statements and its VACUUM run for minutes.
    let db = DatabaseSettings {
        statement_timeout_ms: 0,
        ..DatabaseSettings::new(&sandbox.db_url, 2)
    };
    let pool = crate::store::connect_with(&db).await?;
    let preloaded = match args.preload {
        0 => None,
        n => Some(super::preload::preload(&pool, def, super::preload::PREFIX, n).await?),
    };
    // Each child serves its own /metrics, for the per-hop breakdown.
    let listens = [super::hops::free_listen()?, super::hops::free_listen()?];
    let retention = if args.purge { "1s" } else { "0" };
    sandbox.spawn(
        &["coordinator"],
        &[
            ("SAGAFLOW__COORDINATOR__HEALTH_LISTEN", &listens[0]),
            ("SAGAFLOW__RETENTION__DEFAULT", retention),
        ],
    )?;
    sandbox.spawn(
        &["worker", "--demo"],
        &[("SAGAFLOW__WORKER__HEALTH_LISTEN", &listens[1])],
    )?;
    let result = measure(settings, sandbox, &pool, def, args, &listens).await;
    pool.close().await;
    let mut out = result?;
    out["preloaded"] = json!(args.preload);
    if let Some(s) = preloaded {
        out["preload_seconds"] = json!((s * 10.0).round() / 10.0);
    }
    Ok(out)
}

/// Waits for the children, then offers the load and measures it.
async fn measure(
    settings: &Settings,
    sandbox: &Sandbox,
    pool: &PgPool,
    def: &Definition,
    args: &BenchArgs,
    listens: &[String],
) -> anyhow::Result<serde_json::Value> {
    let names = Names::new(&sandbox.namespace);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-bench").await?;
    let client = Client::connect(&settings.amqp.url, &sandbox.namespace).await?;
    let mut events = subscribe(&conn, &names, &def.name).await?;
    let mut queues = vec![names.coordinator_queue()];
    queues.extend(def.activities().iter().map(|a| names.task_queue(a)));
    for queue in &queues {
        launch::wait_for_consumer(&conn, queue, READY)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let targets = Targets {
        pids: sandbox.pids(),
        postmaster: postmaster(pool).await,
    };
    let load = Load {
        client: &client,
        saga: &def.name,
        total: args.sagas,
        timeout: args.timeout,
    };
    let hops_before = super::hops::read(listens).await;
    let kept_before = preloaded_left(pool, args).await?;
    let before = cpu::sample(&cpu::processes(), &targets);
    let driven = drive(args.mode, &load, &mut events).await;
    let after = cpu::sample(&cpu::processes(), &targets);
    let kept_after = preloaded_left(pool, args).await?;
    let hops = super::hops::breakdown(&hops_before, &super::hops::read(listens).await);
    client.close().await;
    conn.close("done").await;
    let mut out = report(args, &driven?, &cpu::seconds_between(&before, &after));
    out["hops"] = hops;
    if args.preload > 0 {
        out["purge"] = json!(args.purge);
        out["preloaded_purged_in_window"] = json!(kept_before - kept_after);
        out["preloaded_left"] = json!(kept_after);
    }
    Ok(out)
}

/// How many preloaded sagas are still stored (0 without a preload).
async fn preloaded_left(pool: &PgPool, args: &BenchArgs) -> anyhow::Result<i64> {
    if args.preload == 0 {
        return Ok(0);
    }
    Ok(crate::store::bench::count_with_prefix(pool, super::preload::PREFIX).await?)
}

/// The postmaster of the database server, when this machine can see its processes.
async fn postmaster(pool: &PgPool) -> Option<u32> {
    let pid = crate::store::bench::backend_pid(pool).await.ok()?;
    cpu::postmaster_of(&cpu::processes(), u32::try_from(pid).ok()?)
}

/// The output line.
fn report(
    args: &BenchArgs,
    driven: &Driven,
    cpu_s: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let t = &driven.tally;
    let done = t.ended_count();
    let seconds = t.window().as_secs_f64();
    let per_s = |n: usize| {
        if seconds > 0.0 {
            (n as f64 / seconds).round()
        } else {
            f64::NAN
        }
    };
    let mut out = args.mode.describe();
    let fields = json!({
        "workload": args.workload,
        "sagas": args.sagas,
        "steps": args.steps,
        "finished": done,
        "statuses": t.statuses(),
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "sagas_per_s": per_s(done),
        "steps_per_s": per_s(done * args.steps),
        "tasks_per_s": per_s(done * args.workload.tasks_per_saga(args.steps)),
        "cpu_s": cpu_s,
    });
    extend(&mut out, fields);
    extend(
        &mut out,
        tally::quantiles("latency", &t.latencies_ms()).into(),
    );
    extend(&mut out, driven.extra.clone().into());
    out
}

/// Adds the fields of the object `more` to the object `out`.
fn extend(out: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(o), serde_json::Value::Object(m)) = (out.as_object_mut(), more) {
        o.extend(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mode: Mode, workload: Workload, steps: usize) -> BenchArgs {
        BenchArgs {
            sagas: 10,
            steps,
            timeout: Duration::from_secs(1),
            mode,
            workload,
            preload: 0,
            purge: false,
        }
    }

    #[test]
    fn arguments_that_cannot_run_are_refused() {
        assert!(args(Mode::Burst, Workload::Happy, 3).check().is_ok());
        assert!(args(Mode::Closed { concurrency: 0 }, Workload::Happy, 3)
            .check()
            .is_err());
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(args(Mode::Open { rate }, Workload::Happy, 3)
                .check()
                .is_err());
        }
        assert!(args(Mode::Burst, Workload::Compensate, 4).check().is_err());
        let none = BenchArgs {
            sagas: 0,
            ..args(Mode::Burst, Workload::Happy, 3)
        };
        assert!(none.check().is_err());
        let nothing_to_purge = BenchArgs {
            purge: true,
            ..args(Mode::Open { rate: 10.0 }, Workload::Happy, 3)
        };
        assert!(nothing_to_purge.check().is_err());
    }

    #[test]
    fn the_report_has_every_field() {
        let mut tally = tally::Tally::default();
        let t0 = std::time::Instant::now();
        tally.started("b-0".into(), t0);
        tally.ended("b-0", "completed", t0 + Duration::from_millis(500));
        let driven = Driven {
            tally,
            extra: serde_json::Map::from_iter([("late_starts".into(), json!(0))]),
        };
        let cpu = serde_json::Map::from_iter([("coordinator".into(), json!(0.25))]);
        let a = args(Mode::Closed { concurrency: 4 }, Workload::Happy, 3);
        let r = report(&a, &driven, &cpu);
        assert_eq!(r["mode"], "closed");
        assert_eq!(r["concurrency"], 4);
        assert_eq!(r["workload"], "happy");
        assert_eq!(r["finished"], 1);
        assert_eq!(r["statuses"]["completed"], 1);
        assert_eq!(r["seconds"], 0.5);
        assert_eq!(r["sagas_per_s"], 2.0);
        assert_eq!(r["steps_per_s"], 6.0);
        assert_eq!(r["tasks_per_s"], 6.0);
        assert_eq!(r["latency_p50_ms"], 500.0);
        assert_eq!(r["latency_max_ms"], 500.0);
        assert_eq!(r["cpu_s"]["coordinator"], 0.25);
        assert_eq!(r["late_starts"], 0);
    }
}
