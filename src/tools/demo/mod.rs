//! The demo: example activities (`activities`, `newsletter`) and the `sagaflow demo`
//! runner (`run`), with its dashboard child process (`dashboard`) and its progress
//! display (`progress`).

pub mod activities;
pub mod dashboard;
pub mod newsletter;
pub mod progress;
pub mod run;

pub use activities::{
    bench_failure, prepare, worker, BENCH_ACTIVITIES, FAIL_ACTIVITY, NOOP_ACTIVITY,
    ORDER_ACTIVITIES, UNDO_ACTIVITY,
};

/// Every activity the demo worker hosts (and so declares a queue for): what a
/// teardown of a namespace the demo worker ran in must delete.
pub fn activity_names() -> Vec<String> {
    let mut all: Vec<String> = BENCH_ACTIVITIES.iter().map(|s| s.to_string()).collect();
    all.extend(ORDER_ACTIVITIES.iter().map(|s| s.to_string()));
    all.extend(
        newsletter::NEWSLETTER_ACTIVITIES
            .iter()
            .map(|s| s.to_string()),
    );
    all
}
