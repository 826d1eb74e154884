//! The factory: sagas and schedules in any state, written through the store's own
//! functions, so a test can start from "running at step 2, woken an hour ago" without
//! driving the engine there.
//!
//! ```ignore
//! let state = env
//!     .saga("s-1")
//!     .definition("order_fulfillment")
//!     .at(an_hour_ago)
//!     .step(1)
//!     .insert()
//!     .await;
//! let row = env
//!     .schedule("nightly")
//!     .saga("order_fulfillment")
//!     .cron("0 0 * * *")
//!     .next_fire_at(since)
//!     .insert()
//!     .await;
//! ```

use chrono::{DateTime, Utc};
use sagaflow::saga::definition::StepKind;
use sagaflow::saga::machine::{self, Event, HistoryEntry};
use sagaflow::saga::state::{SagaState, SagaStatus, StepStatus};
use sagaflow::scheduler::admin::{self, AddRequest};
use sagaflow::store::{self, sagas, schedules};
use serde_json::{json, Value};

use super::TestEnv;

impl TestEnv {
    /// A saga row to write; see [`SagaBuilder`].
    pub fn saga(&self, id: &str) -> SagaBuilder<'_> {
        SagaBuilder {
            env: self,
            id: id.to_string(),
            definition: None,
            version: None,
            input: json!({}),
            at: Utc::now(),
            step: 0,
            status: None,
            edits: vec![],
            wake_at: None,
            updated_at: None,
        }
    }

    /// A schedule row to write; see [`ScheduleBuilder`].
    pub fn schedule(&self, name: &str) -> ScheduleBuilder<'_> {
        ScheduleBuilder {
            env: self,
            request: AddRequest {
                name: name.to_string(),
                saga: String::new(),
                cron: "0 0 * * *".into(),
                timezone: "UTC".into(),
                input: json!({}),
                overlap: "skip".into(),
                catch_up_window: "5m".into(),
            },
            next_fire_at: None,
            missed_ticks: 0,
            paused: false,
        }
    }
}

/// A change to a saga's state before it is written.
type Edit<'e> = Box<dyn FnOnce(&mut SagaState) + 'e>;

/// A saga as the machine leaves it, then bent into any state: started by
/// `machine::start` at [`SagaBuilder::at`], moved to [`SagaBuilder::step`] by the
/// machine itself (each step before it answered), then [`SagaBuilder::status`] and
/// [`SagaBuilder::edit`] for states the engine would not produce. Written with
/// `store::batch::write` (the history the machine wrote on
/// the way); only the timestamps the store sets itself (`wake_at` from the state,
/// `created_at`/`updated_at` as now) are then overwritten when asked.
pub struct SagaBuilder<'e> {
    env: &'e TestEnv,
    id: String,
    definition: Option<String>,
    version: Option<u32>,
    input: Value,
    at: DateTime<Utc>,
    step: usize,
    status: Option<SagaStatus>,
    edits: Vec<Edit<'e>>,
    wake_at: Option<Option<DateTime<Utc>>>,
    updated_at: Option<DateTime<Utc>>,
}

impl<'e> SagaBuilder<'e> {
    /// The definition's name (its latest loaded version). Required.
    pub fn definition(mut self, name: &str) -> Self {
        self.definition = Some(name.to_string());
        self
    }

    /// A loaded version of the definition (default: its latest).
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// The saga input (default `{}`).
    pub fn input(mut self, input: Value) -> Self {
        self.input = input;
        self
    }

    /// When it started and its steps ran: the machine's `now`, and the row's
    /// `created_at` and `updated_at` (default: now).
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = at;
        self
    }

    /// Moves it to step `n` through the machine: each step before it completes
    /// (an activity answers `{}`, a sleep ends, a wait gets its signal), and step `n`
    /// starts as the machine starts it (an activity dispatched, a sleep or wait armed).
    pub fn step(mut self, n: usize) -> Self {
        self.step = n;
        self
    }

    /// Overrides the status (of the state and so of the row), whatever the steps say.
    pub fn status(mut self, status: SagaStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Any other change to the state before it is written.
    pub fn edit(mut self, f: impl FnOnce(&mut SagaState) + 'e) -> Self {
        self.edits.push(Box::new(f));
        self
    }

    /// Overrides the `wake_at` column (default: what the state says, as the
    /// coordinator writes it).
    pub fn wake_at(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.wake_at = Some(at);
        self
    }

    /// Overrides `updated_at` (default: [`SagaBuilder::at`]).
    pub fn updated_at(mut self, at: DateTime<Utc>) -> Self {
        self.updated_at = Some(at);
        self
    }

    /// Writes the row and its history; returns the state written.
    pub async fn insert(self) -> SagaState {
        let env = self.env;
        let name = self
            .definition
            .as_deref()
            .expect("env.saga(id).definition(name) names the saga");
        let def = match self.version {
            Some(v) => env.catalog.get(name, v),
            None => env.catalog.latest(name),
        }
        .unwrap_or_else(|| panic!("definition {name} (version {:?}) is loaded", self.version));
        let d = machine::start(&def, &self.id, self.input, None, self.at);
        let mut history: Vec<HistoryEntry> = d.history;
        let mut state = d.state;
        while state.cursor < self.step && state.status == SagaStatus::Running {
            let at_step = state.cursor;
            let (event, now) = finishing(&def.steps[at_step].kind, &state, self.at);
            let d = machine::apply(&def, state, event, now);
            history.extend(d.history);
            state = d.state;
            assert!(
                state.cursor > at_step || state.status != SagaStatus::Running,
                "the factory could not finish step {at_step} of {}",
                self.id
            );
        }
        assert_eq!(
            (state.cursor, state.status),
            (self.step, SagaStatus::Running),
            "{} runs step {} after the steps before it completed",
            self.id,
            self.step
        );
        if let Some(status) = self.status {
            state.status = status;
        }
        for edit in self.edits {
            edit(&mut state);
        }

        let mut tx = store::begin(&env.pool).await.unwrap();
        let write = sagas::SagaWrite {
            state: &state,
            fence: None,
        };
        let entries: Vec<(&str, &HistoryEntry)> =
            history.iter().map(|h| (self.id.as_str(), h)).collect();
        let batch = store::batch::BatchWrite {
            new: vec![write],
            history: entries,
            ..Default::default()
        };
        let written = store::batch::write(&mut tx, batch).await.unwrap();
        assert_eq!(
            written.inserted,
            [self.id.as_str()],
            "saga {} exists already",
            self.id
        );
        tx.commit().await.unwrap();
        // The timestamps the store sets itself.
        let wake_at = self.wake_at.unwrap_or_else(|| state.next_wake());
        sqlx::query(
            "UPDATE sagas SET wake_at = $2, created_at = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(&self.id)
        .bind(wake_at)
        .bind(self.at)
        .bind(self.updated_at.unwrap_or(self.at))
        .execute(&env.pool)
        .await
        .unwrap();
        state
    }
}

/// The event that completes the current step, and when it arrives.
fn finishing(kind: &StepKind, state: &SagaState, at: DateTime<Utc>) -> (Event, DateTime<Utc>) {
    let step = &state.steps[state.cursor];
    match (kind, state.tasks.first()) {
        (StepKind::Activity(_), Some(active)) => (
            Event::Result {
                task_id: active.task_id.clone(),
                attempt: Some(active.attempt),
                result: Ok(json!({})),
            },
            at,
        ),
        (StepKind::Sleep(_) | StepKind::SleepUntil(_), _)
            if step.status == StepStatus::Sleeping =>
        {
            (Event::Wake, step.until.unwrap_or(at).max(at))
        }
        (StepKind::Wait(w), _) => (
            Event::Signal {
                name: w.signal.clone(),
                payload: Value::Null,
            },
            at,
        ),
        _ => panic!(
            "the factory cannot finish step {} of {} ({:?})",
            state.cursor, state.id, step.status
        ),
    }
}

/// A schedule row in any state: validated and written as `sagaflow schedule add`
/// does (`admin::validate`, `store::schedules::insert_api`), then moved as a
/// scheduler pass would (`store::schedules::advance`) and paused as an operator would.
pub struct ScheduleBuilder<'e> {
    env: &'e TestEnv,
    request: AddRequest,
    next_fire_at: Option<Option<DateTime<Utc>>>,
    missed_ticks: i64,
    paused: bool,
}

impl ScheduleBuilder<'_> {
    /// The saga it starts. Required.
    pub fn saga(mut self, saga: &str) -> Self {
        self.request.saga = saga.to_string();
        self
    }

    /// A cron expression as an operator types it (default `0 0 * * *`).
    pub fn cron(mut self, cron: &str) -> Self {
        self.request.cron = cron.to_string();
        self
    }

    /// `skip` (default), `buffer_one` or `allow_all`.
    pub fn overlap(mut self, overlap: &str) -> Self {
        self.request.overlap = overlap.to_string();
        self
    }

    /// A duration such as `2s` (default `5m`).
    pub fn catch_up_window(mut self, window: &str) -> Self {
        self.request.catch_up_window = window.to_string();
        self
    }

    pub fn input(mut self, input: Value) -> Self {
        self.request.input = input;
        self
    }

    /// Overrides the next tick (default: the cron's first tick after now).
    pub fn next_fire_at(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.next_fire_at = Some(at);
        self
    }

    /// Ticks counted as missed so far.
    pub fn missed_ticks(mut self, n: i64) -> Self {
        self.missed_ticks = n;
        self
    }

    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }

    /// Writes the row; returns it as stored.
    pub async fn insert(self) -> schedules::ScheduleRow {
        let env = self.env;
        let name = self.request.name.clone();
        let mut new = admin::validate(&self.request, &env.catalog, Utc::now())
            .unwrap_or_else(|e| panic!("schedule {name}: {e}"));
        if let Some(at) = self.next_fire_at {
            new.next_fire_at = at;
        }
        assert!(
            schedules::insert_api(&env.pool, &new).await.unwrap(),
            "schedule {name} exists already"
        );
        if self.missed_ticks != 0 {
            let mut tx = store::begin(&env.pool).await.unwrap();
            let advance = schedules::Advance {
                name: name.clone(),
                next_fire_at: new.next_fire_at,
                last_fire: None,
                missed: self.missed_ticks,
                skipped: 0,
                buffered_tick: None,
                trigger_done: false,
            };
            schedules::advance(&mut tx, &[advance]).await.unwrap();
            tx.commit().await.unwrap();
        }
        if self.paused {
            schedules::pause(&env.pool, &name).await.unwrap();
        }
        schedules::get(&env.pool, &name)
            .await
            .unwrap()
            .expect("the schedule just written")
    }
}
