//! Cron schedules against the real RabbitMQ and Postgres: deterministic ids, one saga
//! per tick with two coordinators, pause/resume, catch-up, overlap policies, restarts,
//! the file sync and the operator commands.
//!
//! Timing-dependent facts are checked as invariants over what happened (every tick
//! accounted for once, no two runs open at once by history order), not as counts at a
//! moment, so the tests hold on a slow machine too.

mod common;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::{eventually, TestEnv};
use sagaflow::scheduler::{admin, sync};
use sagaflow::store::schedules::{self, ScheduleRow};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

/// A quick saga (no worker needed: a sleep step fires from Postgres) with two
/// every-second file schedules.
const TICK: &str = r#"
name = "tick"
version = 1
[[steps]]
name = "nap"
sleep = "100ms"
[[schedules]]
name = "every_second"
cron = "* * * * * *"
overlap = "allow_all"
input = { source = "test" }
[[schedules]]
name = "witness"
cron = "* * * * * *"
overlap = "allow_all"
"#;

/// A saga that stays open for two seconds; no file schedules.
const SLOW: &str = r#"
name = "slow"
version = 1
[[steps]]
name = "nap"
sleep = "2s"
"#;

async fn row(env: &TestEnv, name: &str) -> ScheduleRow {
    schedules::get(&env.pool, name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("schedule {name} exists"))
}

/// Ticks of the sagas a schedule started (from their ids), oldest first.
async fn ticks(env: &TestEnv, schedule: &str) -> Vec<DateTime<Utc>> {
    let prefix = format!("{schedule}@");
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM sagas WHERE starts_with(id, $1) ORDER BY id")
            .bind(&prefix)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    ids.iter()
        .filter(|id| !id.contains("@manual-"))
        .map(|id| {
            let tick = DateTime::parse_from_rfc3339(&id[prefix.len()..]).expect("RFC 3339 tick");
            assert_eq!(id[prefix.len()..].len(), 20, "whole seconds, UTC: {id}");
            tick.with_timezone(&Utc)
        })
        .collect()
}

fn id(schedule: &str, tick: DateTime<Utc>) -> String {
    format!(
        "{schedule}@{}",
        tick.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// Waits until `schedule` has started a saga for a tick at or after `at`.
async fn wait_tick_from(env: &TestEnv, schedule: &str, at: DateTime<Utc>) {
    eventually(&format!("{schedule} fires at or after {at}"), T, || async {
        let last = ticks(env, schedule).await.last().copied();
        last.filter(|t| *t >= at).map(|_| ()).ok_or(last)
    })
    .await;
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// History id of a saga's first event named `event`.
async fn history_id(env: &TestEnv, saga_id: &str, event: &str) -> i64 {
    sqlx::query_scalar("SELECT min(id) FROM saga_history WHERE saga_id = $1 AND event = $2")
        .bind(saga_id)
        .bind(event)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

fn add_request(name: &str, saga: &str, cron: &str, overlap: &str) -> admin::AddRequest {
    admin::AddRequest {
        name: name.into(),
        saga: saga.into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        input: json!({}),
        overlap: overlap.into(),
        catch_up_window: "5m".into(),
    }
}

#[tokio::test]
async fn every_second_schedule_starts_sagas_with_deterministic_ids() {
    let mut env = TestEnv::new(&[("tick.toml", TICK)]).await;
    env.start_coordinator().await;
    let name = "tick.every_second";
    let got = eventually("three ticks", T, || async {
        let t = ticks(&env, name).await;
        if t.len() >= 3 {
            Ok(t)
        } else {
            Err(t)
        }
    })
    .await;
    assert!(got.windows(2).all(|w| w[1] - w[0] == secs(1)), "{got:?}");
    let first = id(name, got[0]);
    let saga = sagaflow::store::sagas::get(&env.pool, &first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        saga.state.input,
        json!({"source": "test", "scheduled_at": &first[name.len() + 1..]})
    );
    env.wait_status(&first, "completed", T).await;
    let r = row(&env, name).await;
    assert_eq!((r.source.as_str(), r.saga.as_str()), ("file", "tick"));
    assert_eq!(r.cron, "* * * * * *");
    assert!(r.next_fire_at.unwrap() > r.last_fire_at.unwrap());
    assert!(r.last_saga_id.unwrap().starts_with("tick.every_second@"));
    assert_eq!((r.missed_ticks, r.skipped_ticks), (0, 0));
    env.cleanup().await;
}

#[tokio::test]
async fn two_coordinators_start_exactly_one_saga_per_tick() {
    let mut env = TestEnv::new(&[("tick.toml", TICK)]).await;
    env.start_coordinator().await;
    env.start_coordinator().await;
    let name = "tick.every_second";
    let first = eventually("a first tick", T, || async {
        ticks(&env, name).await.first().copied().ok_or("no tick")
    })
    .await;
    wait_tick_from(&env, name, first + secs(3)).await;
    admin::pause(&env.pool, name).await.unwrap();
    let got = ticks(&env, name).await;
    let r = row(&env, name).await;
    // Every tick from the first to the one before next_fire_at started exactly one saga.
    let span = (r.next_fire_at.unwrap() - first).num_seconds();
    assert_eq!(got.len() as i64, span, "{got:?} next {:?}", r.next_fire_at);
    assert!(got.windows(2).all(|w| w[1] - w[0] == secs(1)), "{got:?}");
    let started: Vec<(String, i64)> = sqlx::query_as(
        "SELECT saga_id, count(*) FROM saga_history WHERE event = 'saga_started'
         AND starts_with(saga_id, $1) GROUP BY saga_id",
    )
    .bind(format!("{name}@"))
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(started.len(), got.len());
    assert!(started.iter().all(|(_, n)| *n == 1), "{started:?}");
    assert_eq!((r.missed_ticks, r.skipped_ticks), (0, 0));
    env.cleanup().await;
}

#[tokio::test]
async fn pause_stops_new_runs_and_resume_starts_them_again_from_now() {
    let mut env = TestEnv::new(&[("tick.toml", TICK)]).await;
    env.start_coordinator().await;
    let (name, witness) = ("tick.every_second", "tick.witness");
    let first = eventually("a first tick", T, || async {
        ticks(&env, name).await.first().copied().ok_or("no tick")
    })
    .await;
    admin::pause(&env.pool, name).await.unwrap();
    let paused_at = row(&env, name).await.next_fire_at.unwrap();
    assert!(paused_at > first);
    // The witness ticking on proves passes ran over the paused schedule's due ticks.
    wait_tick_from(&env, witness, paused_at + secs(2)).await;
    assert!(ticks(&env, name).await.iter().all(|t| *t < paused_at));
    let resumed = admin::resume(&env.pool, name, Utc::now())
        .await
        .unwrap()
        .expect("it was paused");
    assert!(resumed > paused_at + secs(2));
    wait_tick_from(&env, name, resumed).await;
    let got = ticks(&env, name).await;
    assert!(
        got.iter().all(|t| *t < paused_at || *t >= resumed),
        "nothing from the pause is caught up: {got:?}"
    );
    assert_eq!(row(&env, name).await.missed_ticks, 0);
    assert_eq!(
        admin::resume(&env.pool, name, Utc::now()).await.unwrap(),
        None,
        "resuming an active schedule changes nothing"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn catch_up_starts_only_ticks_inside_the_window_and_counts_the_rest() {
    let mut env = TestEnv::new(&[("slow.toml", SLOW)]).await;
    // The schedule has been due for an hour while no coordinator ran.
    let since = DateTime::from_timestamp(Utc::now().timestamp() - 3600, 0).unwrap();
    env.schedule("hourly_gap")
        .saga("slow")
        .cron("* * * * * *")
        .overlap("allow_all")
        .catch_up_window("2s")
        .next_fire_at(Some(since))
        .insert()
        .await;
    env.start_coordinator().await;
    eventually("missed ticks counted", T, || async {
        let missed = row(&env, "hourly_gap").await.missed_ticks;
        (missed > 0).then_some(()).ok_or(missed)
    })
    .await;
    admin::pause(&env.pool, "hourly_gap").await.unwrap();
    let r = row(&env, "hourly_gap").await;
    let got = ticks(&env, "hourly_gap").await;
    assert!(!got.is_empty());
    assert!(
        got[0] >= since + secs(3600 - 2),
        "only the last 2 s before the first pass are caught up: {got:?}"
    );
    assert!(r.missed_ticks >= 3598, "{}", r.missed_ticks);
    // Every tick since the gap began was either missed or started, once.
    let span = (r.next_fire_at.unwrap() - since).num_seconds();
    assert_eq!(r.missed_ticks + got.len() as i64, span);
    env.cleanup().await;
}

#[tokio::test]
async fn skip_drops_ticks_while_the_last_run_is_open() {
    let mut env = TestEnv::new(&[("slow.toml", SLOW)]).await;
    env.start_coordinator().await;
    admin::add(
        &env.pool,
        &env.catalog,
        &add_request("skipper", "slow", "* * * * * *", "skip"),
    )
    .await
    .unwrap();
    eventually("two runs", T, || async {
        let runs = ticks(&env, "skipper").await;
        (runs.len() >= 2).then_some(()).ok_or(runs)
    })
    .await;
    admin::pause(&env.pool, "skipper").await.unwrap();
    let got = ticks(&env, "skipper").await;
    assert!(row(&env, "skipper").await.skipped_ticks >= 1);
    for w in got.windows(2) {
        let (a, b) = (id("skipper", w[0]), id("skipper", w[1]));
        assert!(w[1] - w[0] >= secs(2), "{got:?}");
        assert!(
            history_id(&env, &a, "saga_completed").await
                < history_id(&env, &b, "saga_started").await,
            "{b} started while {a} was open"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn buffer_one_starts_the_buffered_tick_right_after_the_run_ends() {
    let mut env = TestEnv::new(&[("slow.toml", SLOW)]).await;
    env.start_coordinator().await;
    admin::add(
        &env.pool,
        &env.catalog,
        &add_request("buffered", "slow", "* * * * * *", "buffer_one"),
    )
    .await
    .unwrap();
    eventually("two runs", T, || async {
        let runs = ticks(&env, "buffered").await;
        (runs.len() >= 2).then_some(()).ok_or(runs)
    })
    .await;
    admin::pause(&env.pool, "buffered").await.unwrap();
    let got = ticks(&env, "buffered").await;
    // The tick after the first run's came while it was open: kept, then started next.
    assert_eq!(got[1], got[0] + secs(1), "{got:?}");
    let (a, b) = (id("buffered", got[0]), id("buffered", got[1]));
    assert!(
        history_id(&env, &a, "saga_completed").await < history_id(&env, &b, "saga_started").await
    );
    // Later runs (if any started before the pause) never overlap either.
    for w in got.windows(2).skip(1) {
        let (a, b) = (id("buffered", w[0]), id("buffered", w[1]));
        assert!(
            history_id(&env, &a, "saga_completed").await
                < history_id(&env, &b, "saga_started").await
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_tick_that_fell_due_while_no_coordinator_ran_fires_after_restart() {
    let mut env = TestEnv::new(&[("slow.toml", SLOW)]).await;
    env.start_coordinator().await;
    env.stop_services().await;
    // Added while no coordinator runs, so nothing can fire it before the restart.
    let at = DateTime::from_timestamp(Utc::now().timestamp() + 2, 0).unwrap();
    let once = at.format("%-S %-M %-H %-d %-m * %Y").to_string();
    admin::add(
        &env.pool,
        &env.catalog,
        &add_request("once", "slow", &once, "skip"),
    )
    .await
    .unwrap();
    assert_eq!(row(&env, "once").await.next_fire_at, Some(at));
    // Let the tick fall due with no coordinator running.
    let due = at + chrono::Duration::milliseconds(300);
    eventually("the tick falls due", T, || async {
        let now = Utc::now();
        (now >= due).then_some(()).ok_or(now)
    })
    .await;
    assert!(ticks(&env, "once").await.is_empty());
    env.start_coordinator().await;
    let saga = id("once", at);
    env.wait_status(&saga, "completed", T).await;
    let r = row(&env, "once").await;
    assert_eq!(r.last_saga_id.as_deref(), Some(saga.as_str()));
    assert_eq!((r.next_fire_at, r.missed_ticks), (None, 0));
    env.cleanup().await;
}

#[tokio::test]
async fn file_sync_keeps_state_recomputes_on_cron_change_and_leaves_api_rows_alone() {
    let env = TestEnv::new(&[("tick.toml", TICK)]).await;
    let catalog_of = |text: &str| {
        let mut c = sagaflow::saga::definition::Catalog::new();
        let def = sagaflow::saga::definition::parse("tick.toml", text).unwrap();
        c.insert(def, "tick.toml").unwrap();
        c
    };
    // Two coordinators starting at once.
    let now = Utc::now();
    let (a, b) = tokio::join!(
        sync::sync(&env.pool, &env.catalog, now),
        sync::sync(&env.pool, &env.catalog, now)
    );
    assert_eq!(a.unwrap().0, 2);
    assert_eq!(b.unwrap().0, 2);
    let kept = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    env.schedule("mine")
        .saga("tick")
        .cron("0 0 * * *")
        .next_fire_at(Some(kept))
        .missed_ticks(7)
        .insert()
        .await;
    // The file rows as a pass left them: next tick in 2030, seven ticks missed.
    let mut tx = sagaflow::store::begin(&env.pool).await.unwrap();
    let passed = |name: &str| schedules::Advance {
        name: name.into(),
        next_fire_at: Some(kept),
        last_fire: None,
        missed: 7,
        skipped: 0,
        buffered_tick: None,
        trigger_done: false,
    };
    schedules::advance(
        &mut tx,
        &[passed("tick.every_second"), passed("tick.witness")],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Same files, a new input: state kept.
    let changed_input = TICK.replace("source = \"test\"", "source = \"changed\"");
    sync::sync(&env.pool, &catalog_of(&changed_input), Utc::now())
        .await
        .unwrap();
    let r = row(&env, "tick.every_second").await;
    assert_eq!(r.input, json!({"source": "changed"}));
    assert_eq!((r.next_fire_at, r.missed_ticks), (Some(kept), 7));
    // A new cron: next fire recomputed, counters kept; the removed witness is deleted.
    let hourly = TICK
        .replacen("cron = \"* * * * * *\"", "cron = \"0 * * * *\"", 1)
        .replace(
            "[[schedules]]\nname = \"witness\"\ncron = \"* * * * * *\"\noverlap = \"allow_all\"\n",
            "",
        );
    let (n, deleted) = sync::sync(&env.pool, &catalog_of(&hourly), Utc::now())
        .await
        .unwrap();
    assert_eq!((n, deleted), (1, 1));
    let r = row(&env, "tick.every_second").await;
    assert_eq!(r.cron, "0 0 * * * *");
    assert!(r.next_fire_at.unwrap() < kept);
    assert_eq!(r.missed_ticks, 7);
    assert!(schedules::get(&env.pool, "tick.witness")
        .await
        .unwrap()
        .is_none());
    let mine = row(&env, "mine").await;
    assert_eq!(
        (mine.source.as_str(), mine.next_fire_at),
        ("api", Some(kept))
    );
    env.cleanup().await;
}

#[tokio::test]
async fn trigger_runs_a_paused_schedule_once_and_operator_errors_are_clear() {
    let mut env = TestEnv::new(&[("tick.toml", TICK)]).await;
    env.start_coordinator().await;
    admin::add(
        &env.pool,
        &env.catalog,
        &add_request("manual", "tick", "0 0 0 1 1 *", "skip"),
    )
    .await
    .unwrap();
    admin::pause(&env.pool, "manual").await.unwrap();
    let saga = admin::trigger(&env.pool, "manual").await.unwrap();
    assert!(saga.starts_with("manual@manual-"), "{saga}");
    env.wait_status(&saga, "completed", T).await;
    let r = row(&env, "manual").await;
    assert_eq!(r.last_saga_id.as_deref(), Some(saga.as_str()));
    assert!(r.trigger_requested_at.is_none() && r.paused);
    let unknown = admin::pause(&env.pool, "nope")
        .await
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("no schedule named `nope`"), "{unknown}");
    let exists = admin::add(
        &env.pool,
        &env.catalog,
        &add_request("manual", "tick", "0 0 * * *", "skip"),
    )
    .await
    .unwrap_err();
    assert!(exists.to_string().contains("exists already"), "{exists}");
    let file = admin::delete(&env.pool, "tick.witness").await.unwrap_err();
    assert!(file.to_string().contains("definition file"), "{file}");
    admin::delete(&env.pool, "manual").await.unwrap();
    assert!(admin::trigger(&env.pool, "manual").await.is_err());
    env.cleanup().await;
}

#[test]
fn the_nightly_example_fires_at_midnight_utc() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sagas");
    let catalog = sagaflow::saga::definition::Catalog::load_dir(&dir).expect("sagas/ loads");
    let now = DateTime::parse_from_rfc3339("2026-11-30T13:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let rows = sync::file_schedules(&catalog, now);
    let nightly = rows
        .iter()
        .find(|r| r.name == "nightly_cleanup.nightly")
        .expect("the nightly example");
    assert_eq!(
        (nightly.cron.as_str(), nightly.timezone.as_str()),
        ("0 0 0 * * *", "UTC")
    );
    assert_eq!(nightly.overlap, "skip");
    assert_eq!(
        nightly
            .next_fire_at
            .map(|t| id("nightly_cleanup.nightly", t)),
        Some("nightly_cleanup.nightly@2026-12-01T00:00:00Z".to_string())
    );
}

/// Runs the `sagaflow` binary against this test's deployment.
async fn sagaflow(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(args)
        .envs(env.child_env())
        .output()
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[tokio::test]
async fn the_schedules_cli_validates_input_and_exits_non_zero_on_errors() {
    let env = TestEnv::new(&[("slow.toml", SLOW)]).await;
    let (code, _, err) = sagaflow(&env, &["schedules", "pause", "nope"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no schedule named `nope`"), "{err}");
    let bad = [
        "schedules",
        "add",
        "r",
        "--saga",
        "slow",
        "--cron",
        "0 0 * *",
    ];
    let (code, _, err) = sagaflow(&env, &bad).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("--cron") && err.contains("expected 5"),
        "{err}"
    );
    let ok = [
        "schedules",
        "add",
        "r",
        "--saga",
        "slow",
        "--cron",
        "0 0 * * *",
        "--timezone",
        "Europe/Berlin",
        "--overlap",
        "buffer_one",
        "--catch-up-window",
        "10m",
    ];
    let (code, out, err) = sagaflow(&env, &ok).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("schedule r added"), "{out}");
    let (code, out, _) = sagaflow(&env, &["schedules", "list", "--json"]).await;
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["name"], "r");
    assert_eq!(listed[0]["cron"], "0 0 0 * * *");
    assert_eq!(listed[0]["catch_up_window_ms"], 600_000);
    let (code, out, _) = sagaflow(&env, &["schedules", "trigger", "r"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("r@manual-"), "{out}");
    // `schedule …` is the deprecated spelling of `schedules …`: it still works.
    let (code, _, _) = sagaflow(&env, &["schedule", "delete", "r"]).await;
    assert_eq!(code, 0);
    env.cleanup().await;
}
