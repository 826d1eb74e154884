//! The demo: example activities (`activities`, `newsletter`) and the `sagaflow demo`
//! runner (`run`).

pub mod activities;
pub mod newsletter;
pub mod run;

pub use activities::{prepare, worker, NOOP_ACTIVITY, ORDER_ACTIVITIES};
