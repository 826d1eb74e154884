//! Humane durations: parsing (`30s`, `1h 30m`) and rendering for error messages.

use super::*;

const DURATION_HINT: &str = "expected a duration like 250ms, 30s, 5m, 36h or 7d";

/// Parses a humane duration (`250ms`, `30s`, `5m`, `36h`, `7d`, `1h 30m`).
///
/// Empty and negative inputs are refused, as is anything longer than [`MAX_DURATION`], so
/// callers can add the result to a timestamp without overflow checks. Zero is accepted here;
/// whether zero makes sense depends on the field and is checked there.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(format!("{DURATION_HINT}, got an empty string"));
    }
    if trimmed.starts_with('-') {
        return Err(format!(
            "{DURATION_HINT}, got `{trimmed}` (negative durations are not allowed)"
        ));
    }
    let parsed = humantime::parse_duration(trimmed)
        .map_err(|e| format!("{DURATION_HINT}, got `{trimmed}` ({e})"))?;
    if parsed > MAX_DURATION {
        return Err(format!(
            "`{trimmed}` is too long: at most 100 years is allowed"
        ));
    }
    Ok(parsed)
}

/// Renders a duration the way users write them, for error messages.
pub(super) fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
