//! Resolution of `[[schedules]]` entries: the cron expression normalised, the time
//! zone, the input table converted to JSON (reporting values JSON cannot carry at
//! their path), the overlap policy and the catch-up window.

use super::cron_expr::normalize_cron;
use super::raw::{RawOverlap, RawSchedule};
use super::validate::Problems;
use super::*;

pub(super) fn resolve_schedule(i: usize, raw: RawSchedule, out: &mut Problems) -> ScheduleSpec {
    if raw.name.is_none() {
        out.push(format!("schedules[{i}].name"), "is required");
    }
    let cron = match raw.cron.as_deref().map(normalize_cron) {
        Some(Ok(normalised)) => normalised,
        Some(Err(reason)) => {
            out.push(format!("schedules[{i}].cron"), reason);
            String::new()
        }
        None => {
            out.push(format!("schedules[{i}].cron"), "is required");
            String::new()
        }
    };
    let input_path = format!("schedules[{i}].input");
    let input = match raw.input {
        Some(value) => toml_to_json(value, &input_path, out),
        None => serde_json::Value::Object(serde_json::Map::new()),
    };
    ScheduleSpec {
        name: raw.name.unwrap_or_default(),
        cron,
        timezone: raw.timezone.map_or(chrono_tz::Tz::UTC, |t| t.0),
        input,
        overlap: match raw.overlap {
            None | Some(RawOverlap::Skip) => OverlapPolicy::Skip,
            Some(RawOverlap::BufferOne) => OverlapPolicy::BufferOne,
            Some(RawOverlap::AllowAll) => OverlapPolicy::AllowAll,
        },
        catch_up_window: raw
            .catch_up_window
            .map_or(Duration::from_secs(300), |d| d.0),
    }
}

/// Converts a TOML value to JSON. Datetimes become RFC 3339 strings; NaN and infinity, which
/// JSON cannot carry, are reported at their path.
fn toml_to_json(value: toml::Value, path: &str, out: &mut Problems) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(n) => J::from(n),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(J::Number)
            .unwrap_or_else(|| {
                out.push(path, format!("{f} cannot be represented in JSON"));
                J::Null
            }),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(dt) => J::String(dt.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| toml_to_json(v, &format!("{path}[{i}]"), out))
                .collect(),
        ),
        toml::Value::Table(table) => J::Object(
            table
                .into_iter()
                .map(|(k, v)| {
                    let child = toml_to_json(v, &format!("{path}.{k}"), out);
                    (k, child)
                })
                .collect(),
        ),
    }
}
