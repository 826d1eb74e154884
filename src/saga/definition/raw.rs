//! The raw serde layer: TOML shapes deserialized before any resolution or validation.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::durations::parse_duration;
use super::*;

/// A duration field, parsed while deserializing so that errors carry the field path.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration string such as \"250ms\", \"30s\", \"5m\", \"36h\" or \"7d\"",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDuration, E> {
                parse_duration(s).map(RawDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// An IANA time zone name, parsed while deserializing.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawTz(pub(super) chrono_tz::Tz);

impl<'de> Deserialize<'de> for RawTz {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawTz;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IANA time zone name such as \"Europe/Berlin\" or \"UTC\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawTz, E> {
                s.parse::<chrono_tz::Tz>().map(RawTz).map_err(|_| {
                    E::custom(format!(
                        "unknown time zone `{s}`; expected an IANA name such as `Europe/Berlin` or `UTC`"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefinition {
    pub(super) name: Option<String>,
    pub(super) version: Option<u32>,
    pub(super) description: Option<String>,
    pub(super) retention: Option<RawDuration>,
    pub(super) defaults: Option<RawDefaults>,
    pub(super) steps: Option<Vec<RawStep>>,
    #[serde(default)]
    pub(super) schedules: Vec<RawSchedule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) start_to_close: Option<RawDuration>,
    pub(super) schedule_to_start: Option<RawDuration>,
    pub(super) schedule_to_close: Option<RawDuration>,
    pub(super) heartbeat: Option<RawDuration>,
    pub(super) retry: Option<RawRetry>,
    pub(super) compensate_retry: Option<RawRetry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) initial_interval: Option<RawDuration>,
    pub(super) backoff_coefficient: Option<f64>,
    pub(super) max_interval: Option<RawDuration>,
    pub(super) max_attempts: Option<u32>,
    pub(super) non_retryable: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) name: Option<String>,
    pub(super) activity: Option<String>,
    pub(super) sleep: Option<RawDuration>,
    pub(super) sleep_until: Option<String>,
    pub(super) wait: Option<String>,
    pub(super) compensate: Option<String>,
    pub(super) retry: Option<RawRetry>,
    pub(super) compensate_retry: Option<RawRetry>,
    pub(super) start_to_close: Option<RawDuration>,
    pub(super) schedule_to_start: Option<RawDuration>,
    pub(super) schedule_to_close: Option<RawDuration>,
    pub(super) heartbeat: Option<RawDuration>,
    pub(super) timeout: Option<RawDuration>,
    pub(super) on_timeout: Option<RawOnTimeout>,
    pub(super) parallel: Option<Vec<RawStep>>,
    pub(super) saga: Option<String>,
    pub(super) when: Option<String>,
    pub(super) input: Option<std::collections::BTreeMap<String, String>>,
    pub(super) for_each: Option<String>,
    pub(super) max_concurrency: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawOnTimeout {
    Fail,
    Continue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) name: Option<String>,
    pub(super) cron: Option<String>,
    pub(super) timezone: Option<RawTz>,
    pub(super) input: Option<toml::Value>,
    pub(super) overlap: Option<RawOverlap>,
    pub(super) catch_up_window: Option<RawDuration>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawOverlap {
    Skip,
    BufferOne,
    AllowAll,
}

/// Deserializes the file, mapping serde/TOML errors to a field path (or `<toml>` for syntax
/// errors) and a reason with line and column.
pub(super) fn deserialize_raw(file: &str, text: &str) -> Result<RawDefinition, DefinitionError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let location = inner
            .span()
            .and_then(|span| line_column(text, span.start))
            .map(|(line, col)| format!(" (line {line}, column {col})"))
            .unwrap_or_default();
        DefinitionError {
            file: file.to_string(),
            field: if path == "." {
                "<toml>".to_string()
            } else {
                path
            },
            reason: format!("{message}{location}"),
        }
    })
}

/// 1-based line and column (in characters) of a byte offset; None if the offset is not on
/// a character boundary.
pub(super) fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..)?.chars().count() + 1;
    Some((line, column))
}
