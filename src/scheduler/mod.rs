//! Cron schedules: the tick maths (`cron`) and overlap decisions (`overlap`).

pub mod cron;
pub mod overlap;
