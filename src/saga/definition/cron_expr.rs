//! Cron expressions: normalisation of crontab/shorthand forms and timezone-aware checks.

use std::str::FromStr;

use super::*;

/// Normalises a cron expression to the 6/7-field form (seconds first, optional year) that
/// the `cron` crate parses, and checks that it parses.
///
/// * 6 or 7 fields and `@daily`-style shorthands are kept (whitespace collapsed). Their
///   day-of-week field uses the `cron` crate's numbering: 1 = Sunday ... 7 = Saturday.
/// * 5 fields are classic crontab (minute first): `0 ` is prepended for the seconds field and
///   a numeric day-of-week (crontab: 0 or 7 = Sunday, 1 = Monday ... 6 = Saturday) is
///   rewritten to the `cron` crate's numbering, so `0 9 * * 1-5` still means weekdays.
///   Crontab fires when day-of-month OR day-of-week match, the `cron` crate only when both
///   do; a 5-field expression restricting both is refused rather than silently changed.
pub fn normalize_cron(expr: &str) -> Result<String, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let normalised = match fields.as_slice() {
        [] => return Err("must not be empty".to_string()),
        [single] if single.starts_with('@') => (*single).to_string(),
        [minute, hour, dom, month, dow] => {
            if is_restricted(dom) && is_restricted(dow) {
                return Err(format!(
                    "`{expr}` restricts both day-of-month and day-of-week; crontab would fire \
                     when either matches, this scheduler only when both do. Restrict only one, \
                     or use the 6-field form (seconds first) where both must match"
                ));
            }
            let dow = crontab_dow_to_cron(dow)
                .map_err(|e| format!("invalid day-of-week in `{expr}`: {e}"))?;
            format!("0 {minute} {hour} {dom} {month} {dow}")
        }
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => fields.join(" "),
        _ => {
            return Err(format!(
                "`{expr}` has {} fields; expected 5 (minute hour day-of-month month \
                 day-of-week) or 6/7 (seconds first, optional year)",
                fields.len()
            ))
        }
    };
    parse_cron(&normalised, expr)?;
    Ok(normalised)
}

/// True when a day field is more than a wildcard.
fn is_restricted(field: &str) -> bool {
    field != "*" && field != "?"
}

/// Rewrites a crontab day-of-week field (0/7 = Sunday) to the `cron` crate's numbering
/// (1 = Sunday). Fields without digits (`*`, `MON-FRI`) mean the same in both and are kept;
/// numeric fields are expanded to an explicit sorted list, which sidesteps ranges such as
/// `5-7` whose rewritten ends would wrap around.
fn crontab_dow_to_cron(field: &str) -> Result<String, String> {
    if !field.bytes().any(|b| b.is_ascii_digit()) {
        return Ok(field.to_string());
    }
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        days.extend(crontab_dow_item(item)?);
    }
    let list: Vec<String> = days.iter().map(|d| (d + 1).to_string()).collect();
    Ok(list.join(","))
}

/// Expands one comma-separated crontab day-of-week item (`3`, `1-5`, `*/2`, `mon-fri/2`) to
/// crontab day numbers 0..=6.
fn crontab_dow_item(item: &str) -> Result<Vec<u32>, String> {
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => {
            let step: u32 = s
                .parse()
                .map_err(|_| format!("`{item}`: step `{s}` is not a number"))?;
            if step == 0 {
                return Err(format!("`{item}`: step must be at least 1"));
            }
            (r, Some(step))
        }
        None => (item, None),
    };
    let (first, last) = match range.split_once('-') {
        _ if range == "*" || range == "?" => (0, 6),
        Some((a, b)) => (crontab_day(a)?, crontab_day(b)?),
        None => {
            let day = crontab_day(range)?;
            (day, if step.is_some() { 6 } else { day })
        }
    };
    if first > last {
        return Err(format!("`{item}`: range runs backwards"));
    }
    let step = step.unwrap_or(1) as usize;
    Ok((first..=last).step_by(step).map(|d| d % 7).collect())
}

/// One crontab day: 0..=7, or an English day name (three-letter or full, any case).
fn crontab_day(s: &str) -> Result<u32, String> {
    const NAMES: [(&str, &str); 7] = [
        ("sun", "sunday"),
        ("mon", "monday"),
        ("tue", "tuesday"),
        ("wed", "wednesday"),
        ("thu", "thursday"),
        ("fri", "friday"),
        ("sat", "saturday"),
    ];
    if let Ok(n) = s.parse::<u32>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("`{s}` is out of range (0-7, 0 and 7 are Sunday)"))
        };
    }
    let lower = s.to_ascii_lowercase();
    NAMES
        .iter()
        .position(|(short, long)| lower == *short || lower == *long)
        .map(|i| i as u32)
        .ok_or_else(|| format!("`{s}` is not a day of the week"))
}

/// Parses with the `cron` crate, turning its multi-line caret message into one line.
/// `written` is what the user wrote, named in the message when it differs.
fn parse_cron(expr: &str, written: &str) -> Result<cron::Schedule, String> {
    cron::Schedule::from_str(expr).map_err(|e| {
        let shown = if expr == written.trim() {
            format!("`{expr}`")
        } else {
            format!("`{expr}` (normalised from `{}`)", written.trim())
        };
        format!(
            "invalid cron expression {shown}: {}",
            describe_cron_error(&e)
        )
    })
}

/// The `cron` crate reports `expr\n   ^\nmessage`; keep the message and the position.
fn describe_cron_error(err: &cron::error::Error) -> String {
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let caret = lines.get(1).and_then(|l| l.find('^'));
    let message = lines.get(2..).unwrap_or(&[]).join(" ");
    match (caret, message.trim()) {
        (Some(col), "") => format!("cannot parse at character {}", col + 1),
        (Some(col), msg) => format!("{msg} (at character {})", col + 1),
        (None, _) => text.replace('\n', " "),
    }
}

/// Checks a normalised cron expression: it must parse and fire at least once. The firing
/// check starts at 1970 (not "now") so that validity does not depend on the clock; it catches
/// impossible dates such as 31 February.
pub(super) fn check_cron(expr: &str, tz: chrono_tz::Tz) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    let schedule = parse_cron(expr, expr).map_err(|e| {
        if fields == 5 {
            format!("{e}; 5-field crontab expressions must be converted with normalize_cron")
        } else {
            e
        }
    })?;
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH.with_timezone(&tz);
    if schedule.after(&epoch).next().is_none() {
        return Err(format!("cron expression `{expr}` never fires"));
    }
    Ok(())
}
