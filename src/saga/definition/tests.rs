//! Unit tests of definition parsing and validation: one or more per rule.
use super::raw::line_column;
use super::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Minimal valid top of a file (top-level keys must precede any table).
macro_rules! head {
    () => {
        "name = \"s\"\nversion = 1\n"
    };
}

/// One valid activity step.
macro_rules! step {
    () => {
        "[[steps]]\nname = \"a\"\nactivity = \"act.a\"\n"
    };
}

const FILE: &str = "sagas/test.toml";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ok(text: &str) -> Definition {
    match parse_all(FILE, text) {
        Ok(def) => def,
        Err(errs) => panic!("expected a valid definition, got {errs:#?}"),
    }
}

fn assert_refused(text: &str, field: &str, reason: &str) {
    let errs = match parse_all(FILE, text) {
        Ok(def) => panic!("expected `{field}: ...{reason}...`, but it parsed: {def:#?}"),
        Err(errs) => errs,
    };
    assert!(
        errs.iter()
            .any(|e| e.file == FILE && e.field == field && e.reason.contains(reason)),
        "expected `{field}: ...{reason}...` in {errs:#?}"
    );
    // `parse` must refuse too, with the first of the same errors.
    assert_eq!(parse(FILE, text).err(), errs.first().cloned());
}

fn activity(def: &Definition, step: &str) -> ActivityStep {
    let i = def.step_index(step).expect("step exists");
    match &def.steps[i].kind {
        StepKind::Activity(a) => a.clone(),
        other => panic!("{step} is not an activity step: {other:?}"),
    }
}

/// One `#[test]` per row: the TOML text, the expected field path and a reason substring.
macro_rules! refuses {
    ($($name:ident: $text:expr, $field:expr, $reason:expr;)*) => {
        $(
            #[test]
            fn $name() {
                assert_refused(&$text, $field, $reason);
            }
        )*
    };
}

// ----- unknown fields, TOML syntax and types ---------------------------------------------

refuses! {
    unknown_top_level_field:
        concat!(head!(), "nmae = \"x\"\n", step!()), "nmae", "unknown field `nmae`";
    unknown_top_level_field_lists_allowed_fields:
        concat!(head!(), "nmae = \"x\"\n", step!()), "nmae", "`description`";
    unknown_defaults_field:
        concat!(head!(), "[defaults]\nstart_to_clos = \"1s\"\n", step!()),
        "defaults.start_to_clos", "unknown field `start_to_clos`";
    unknown_defaults_retry_field:
        concat!(head!(), "[defaults]\nretry = { max_attempt = 1 }\n", step!()),
        "defaults.retry.max_attempt", "unknown field `max_attempt`";
    unknown_defaults_compensate_retry_field:
        concat!(head!(), "[defaults]\ncompensate_retry = { jitter = 1 }\n", step!()),
        "defaults.compensate_retry.jitter", "unknown field `jitter`";
    unknown_step_field:
        concat!(head!(), step!(), "[[steps]]\nname = \"b\"\nactivity = \"x\"\nretyr = {}\n"),
        "steps[1].retyr", "unknown field `retyr`";
    unknown_step_field_lists_allowed_fields:
        concat!(head!(), step!(), "[[steps]]\nname = \"b\"\nactivity = \"x\"\nretyr = {}\n"),
        "steps[1].retyr", "`retry`";
    unknown_step_retry_field:
        concat!(head!(), step!(), "[[steps]]\nname = \"b\"\nactivity = \"x\"\n",
                "retry = { max_attemps = 3 }\n"),
        "steps[1].retry.max_attemps", "unknown field `max_attemps`";
    unknown_step_compensate_retry_field:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"x\"\ncompensate = \"y\"\n",
                "compensate_retry = { tries = 3 }\n"),
        "steps[0].compensate_retry.tries", "unknown field `tries`";
    unknown_schedule_field:
        concat!(head!(), step!(), "[[schedules]]\nname = \"n\"\ncron = \"0 0 * * *\"\ncrn = 1\n"),
        "schedules[0].crn", "unknown field `crn`";
    toml_syntax_error_names_line_and_column:
        "name = \"s\"\nversion = \n", "<toml>", "line 2, column 11";
    toml_syntax_error_keeps_message:
        "name = \"s\"\nversion = \n", "<toml>", "invalid string";
    toml_duplicate_key:
        "name = \"a\"\nname = \"b\"\n", "<toml>", "duplicate key `name`";
    wrong_type_names_field:
        concat!("name = \"s\"\nversion = \"one\"\n", step!()), "version", "expected u32";
    wrong_type_names_line_and_column:
        concat!("name = \"s\"\nversion = \"one\"\n", step!()), "version", "line 2, column 11";
    negative_version:
        concat!("name = \"s\"\nversion = -1\n", step!()), "version", "invalid value";
    negative_max_attempts:
        concat!(head!(), step!(), "retry = { max_attempts = -1 }\n"),
        "steps[0].retry.max_attempts", "invalid value";
    steps_not_an_array:
        concat!(head!(), "steps = 3\n"), "steps", "expected a sequence";
}

// ----- required fields and names ----------------------------------------------------------

refuses! {
    missing_name: concat!("version = 1\n", step!()), "name", "is required";
    missing_version: concat!("name = \"s\"\n", step!()), "version", "is required";
    missing_steps: head!(), "steps", "is required";
    version_zero: concat!("name = \"s\"\nversion = 0\n", step!()), "version", "at least 1";
    empty_steps: concat!(head!(), "steps = []\n"), "steps", "at least one";
    missing_step_name:
        concat!(head!(), "[[steps]]\nactivity = \"x\"\n"), "steps[0].name", "is required";
    saga_name_with_dot:
        concat!("name = \"order.fulfil\"\nversion = 1\n", step!()), "name", "no dots";
    saga_name_empty:
        concat!("name = \"\"\nversion = 1\n", step!()), "name", "must not be empty";
    saga_name_too_long:
        format!("name = \"{}\"\nversion = 1\n{}", "n".repeat(MAX_NAME_LEN + 1), step!()),
        "name", "at most 128";
    step_name_with_space:
        concat!(head!(), "[[steps]]\nname = \"reserve stock\"\nactivity = \"x\"\n"),
        "steps[0].name", "contains ' '";
    step_name_with_dot:
        concat!(head!(), "[[steps]]\nname = \"reserve.stock\"\nactivity = \"x\"\n"),
        "steps[0].name", "contains '.'";
    activity_name_bad_char:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"pay/charge\"\n"),
        "steps[0].activity", "contains '/'";
    activity_name_empty:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"\"\n"),
        "steps[0].activity", "must not be empty";
    compensate_name_bad_char:
        concat!(head!(), step!(), "compensate = \"undo it\"\n"),
        "steps[0].compensate", "contains ' '";
    signal_name_bad_char:
        concat!(head!(), "[[steps]]\nname = \"w\"\nwait = \"ok?\"\n"),
        "steps[0].wait", "contains '?'";
    schedule_name_with_dot:
        concat!(head!(), step!(), "[[schedules]]\nname = \"night.ly\"\ncron = \"@daily\"\n"),
        "schedules[0].name", "no dots";
    duplicate_step_name_names_first_occurrence:
        concat!(head!(), step!(), "[[steps]]\nname = \"b\"\nsleep = \"1s\"\n",
                "[[steps]]\nname = \"a\"\nsleep = \"1s\"\n"),
        "steps[2].name", "duplicate step name `a` (first used by steps[0])";
}

// ----- step shape ------------------------------------------------------------------------

refuses! {
    step_without_kind:
        concat!(head!(), step!(), "[[steps]]\nname = \"b\"\n"), "steps[1]", "it has none";
    step_with_two_kinds:
        concat!(head!(), step!(), "sleep = \"1s\"\n"), "steps[0]", "`activity` and `sleep`";
    step_with_three_kinds:
        concat!(head!(), step!(), "sleep = \"1s\"\nwait = \"sig\"\n"),
        "steps[0]", "`activity` and `sleep` and `wait`";
    compensate_on_sleep:
        concat!(head!(), "[[steps]]\nname = \"z\"\nsleep = \"1s\"\ncompensate = \"x\"\n"),
        "steps[0].compensate", "only valid on activity steps";
    retry_on_wait:
        concat!(head!(), "[[steps]]\nname = \"w\"\nwait = \"s\"\nretry = {}\n"),
        "steps[0].retry", "only valid on activity steps";
    compensate_retry_on_sleep:
        concat!(head!(), "[[steps]]\nname = \"z\"\nsleep = \"1s\"\ncompensate_retry = {}\n"),
        "steps[0].compensate_retry", "only valid on activity steps";
    start_to_close_on_sleep:
        concat!(head!(), "[[steps]]\nname = \"z\"\nsleep = \"1s\"\nstart_to_close = \"1s\"\n"),
        "steps[0].start_to_close", "only valid on activity steps";
    schedule_to_start_on_wait:
        concat!(head!(), "[[steps]]\nname = \"w\"\nwait = \"s\"\nschedule_to_start = \"1s\"\n"),
        "steps[0].schedule_to_start", "only valid on activity steps";
    schedule_to_close_on_sleep:
        concat!(head!(), "[[steps]]\nname = \"z\"\nsleep = \"1s\"\nschedule_to_close = \"1s\"\n"),
        "steps[0].schedule_to_close", "only valid on activity steps";
    heartbeat_on_wait:
        concat!(head!(), "[[steps]]\nname = \"w\"\nwait = \"s\"\nheartbeat = \"1s\"\n"),
        "steps[0].heartbeat", "only valid on activity steps";
    compensate_retry_without_compensate:
        concat!(head!(), step!(), "compensate_retry = { max_attempts = 2 }\n"),
        "steps[0].compensate_retry", "needs `compensate`";
    timeout_on_activity:
        concat!(head!(), step!(), "timeout = \"1s\"\n"),
        "steps[0].timeout", "only valid on wait steps";
    timeout_on_sleep:
        concat!(head!(), "[[steps]]\nname = \"z\"\nsleep = \"1s\"\ntimeout = \"1s\"\n"),
        "steps[0].timeout", "only valid on wait steps";
    on_timeout_on_sleep:
        concat!(head!(), "[[steps]]\nname = \"z\"\nsleep = \"1s\"\non_timeout = \"fail\"\n"),
        "steps[0].on_timeout", "only valid on wait steps";
    on_timeout_continue_without_timeout:
        concat!(head!(), "[[steps]]\nname = \"w\"\nwait = \"s\"\non_timeout = \"continue\"\n"),
        "steps[0].on_timeout", "needs `timeout`";
    on_timeout_fail_without_timeout:
        concat!(head!(), "[[steps]]\nname = \"w\"\nwait = \"s\"\non_timeout = \"fail\"\n"),
        "steps[0].on_timeout", "needs `timeout`";
    on_timeout_unknown_value:
        concat!(head!(), "[[steps]]\nname = \"w\"\nwait = \"s\"\ntimeout = \"1s\"\n",
                "on_timeout = \"retry\"\n"),
        "steps[0].on_timeout", "unknown variant `retry`";
}

// ----- durations -------------------------------------------------------------------------

refuses! {
    sleep_not_a_duration:
        concat!(head!(), "[[steps]]\nname = \"z\"\nsleep = \"abc\"\n"),
        "steps[0].sleep", "expected a duration like 250ms, 30s, 5m, 36h or 7d, got `abc`";
    sleep_as_integer:
        concat!(head!(), "[[steps]]\nname = \"z\"\nsleep = 30\n"),
        "steps[0].sleep", "a duration string";
    duration_without_unit:
        concat!(head!(), step!(), "start_to_close = \"30\"\n"),
        "steps[0].start_to_close", "got `30`";
    negative_default_heartbeat:
        concat!(head!(), "[defaults]\nheartbeat = \"-5s\"\n", step!()),
        "defaults.heartbeat", "negative durations are not allowed";
    bad_retry_interval:
        concat!(head!(), step!(), "retry = { initial_interval = \"soon\" }\n"),
        "steps[0].retry.initial_interval", "got `soon`";
    bad_wait_timeout:
        concat!(head!(), "[[steps]]\nname = \"w\"\nwait = \"s\"\ntimeout = \"x\"\n"),
        "steps[0].timeout", "got `x`";
    bad_catch_up_window:
        concat!(head!(), step!(), "[[schedules]]\nname = \"n\"\ncron = \"@daily\"\n",
                "catch_up_window = \"1 fortnight\"\n"),
        "schedules[0].catch_up_window", "expected a duration";
    duration_too_long:
        concat!(head!(), "[[steps]]\nname = \"z\"\nsleep = \"200y\"\n"),
        "steps[0].sleep", "too long";
    zero_sleep:
        concat!(head!(), "[[steps]]\nname = \"z\"\nsleep = \"0s\"\n"),
        "steps[0].sleep", "greater than zero";
    zero_step_start_to_close:
        concat!(head!(), step!(), "start_to_close = \"0s\"\n"),
        "steps[0].start_to_close", "greater than zero";
    zero_default_start_to_close:
        concat!(head!(), "[defaults]\nstart_to_close = \"0ms\"\n", step!()),
        "defaults.start_to_close", "greater than zero";
    zero_step_schedule_to_start:
        concat!(head!(), step!(), "schedule_to_start = \"0s\"\n"),
        "steps[0].schedule_to_start", "greater than zero";
    zero_default_schedule_to_close:
        concat!(head!(), "[defaults]\nschedule_to_close = \"0s\"\n", step!()),
        "defaults.schedule_to_close", "greater than zero";
    zero_step_heartbeat:
        concat!(head!(), step!(), "heartbeat = \"0s\"\n"),
        "steps[0].heartbeat", "greater than zero";
    zero_wait_timeout:
        concat!(head!(), "[[steps]]\nname = \"w\"\nwait = \"s\"\ntimeout = \"0s\"\n"),
        "steps[0].timeout", "greater than zero";
    zero_initial_interval:
        concat!(head!(), step!(), "retry = { initial_interval = \"0s\" }\n"),
        "steps[0].retry.initial_interval", "greater than zero";
    zero_default_max_interval:
        concat!(head!(), "[defaults]\nretry = { max_interval = \"0s\" }\n", step!()),
        "defaults.retry.max_interval", "greater than zero";
    zero_compensate_initial_interval:
        concat!(head!(), step!(), "compensate = \"undo\"\n",
                "compensate_retry = { initial_interval = \"0s\" }\n"),
        "steps[0].compensate_retry.initial_interval", "greater than zero";
}

// ----- retry policies --------------------------------------------------------------------

refuses! {
    zero_attempts_in_defaults:
        concat!(head!(), "[defaults]\nretry = { max_attempts = 0 }\n", step!()),
        "defaults.retry.max_attempts", "at least 1";
    zero_attempts_in_step:
        concat!(head!(), step!(), "[[steps]]\nname = \"b\"\nactivity = \"x\"\n",
                "retry = { max_attempts = 0 }\n"),
        "steps[1].retry.max_attempts", "at least 1";
    zero_attempts_in_default_compensate_retry:
        concat!(head!(), "[defaults]\ncompensate_retry = { max_attempts = 0 }\n", step!()),
        "defaults.compensate_retry.max_attempts", "at least 1";
    zero_attempts_in_step_compensate_retry:
        concat!(head!(), step!(), "compensate = \"undo\"\n",
                "compensate_retry = { max_attempts = 0 }\n"),
        "steps[0].compensate_retry.max_attempts", "at least 1";
    backoff_below_one:
        concat!(head!(), step!(), "retry = { backoff_coefficient = 0.5 }\n"),
        "steps[0].retry.backoff_coefficient", "at least 1.0";
    backoff_below_one_in_defaults:
        concat!(head!(), "[defaults]\nretry = { backoff_coefficient = 0.9 }\n", step!()),
        "defaults.retry.backoff_coefficient", "at least 1.0";
    backoff_nan:
        concat!(head!(), step!(), "retry = { backoff_coefficient = nan }\n"),
        "steps[0].retry.backoff_coefficient", "finite";
    backoff_infinite:
        concat!(head!(), step!(), "retry = { backoff_coefficient = inf }\n"),
        "steps[0].retry.backoff_coefficient", "finite";
    max_interval_below_initial_in_one_table:
        concat!(head!(), step!(), "retry = { initial_interval = \"10s\", max_interval = \"5s\" }\n"),
        "steps[0].retry.max_interval", "shorter than initial_interval (10s, set at steps[0].retry.initial_interval)";
    step_initial_above_default_max_blames_step:
        concat!(head!(), "[defaults]\nretry = { max_interval = \"5s\" }\n", step!(),
                "retry = { initial_interval = \"10s\" }\n"),
        "steps[0].retry.initial_interval", "longer than max_interval (5s, set at defaults.retry.max_interval)";
    default_max_below_builtin_initial_blames_defaults:
        concat!(head!(), "[defaults]\nretry = { max_interval = \"500ms\" }\n", step!()),
        "defaults.retry.max_interval", "(1s, built-in default)";
    step_initial_above_builtin_max:
        concat!(head!(), step!(), "retry = { initial_interval = \"5m\" }\n"),
        "steps[0].retry.initial_interval", "(1m 40s, built-in default)";
    empty_non_retryable_code:
        concat!(head!(), step!(), "retry = { non_retryable = [\"card_declined\", \"\"] }\n"),
        "steps[0].retry.non_retryable[1]", "must not be empty";
    blank_non_retryable_code_in_defaults:
        concat!(head!(), "[defaults]\ncompensate_retry = { non_retryable = [\" \"] }\n", step!()),
        "defaults.compensate_retry.non_retryable[0]", "must not be empty";
}

// ----- schedules -------------------------------------------------------------------------

macro_rules! sched {
    ($body:expr) => {
        concat!(head!(), step!(), "[[schedules]]\nname = \"n\"\n", $body)
    };
}

refuses! {
    cron_error_includes_cron_crate_message:
        sched!("cron = \"0 0 0 * * 0\"\n"),
        "schedules[0].cron", "Days of Week must be greater than or equal to 1";
    cron_5_field_error_includes_cron_crate_message:
        sched!("cron = \"61 * * * *\"\n"),
        "schedules[0].cron", "Minutes must be less than 59";
    cron_5_field_error_names_written_form:
        sched!("cron = \"61 * * * *\"\n"),
        "schedules[0].cron", "(normalised from `61 * * * *`)";
    cron_wrong_field_count:
        sched!("cron = \"every day\"\n"), "schedules[0].cron", "has 2 fields";
    cron_empty:
        sched!("cron = \"  \"\n"), "schedules[0].cron", "must not be empty";
    cron_crontab_weekday_out_of_range:
        sched!("cron = \"0 0 * * 9\"\n"), "schedules[0].cron", "out of range";
    cron_crontab_restricting_both_days:
        sched!("cron = \"0 0 1 * 1\"\n"), "schedules[0].cron", "restricts both";
    cron_never_fires:
        sched!("cron = \"0 0 0 31 2 *\"\n"), "schedules[0].cron", "never fires";
    cron_missing:
        sched!("overlap = \"skip\"\n"), "schedules[0].cron", "is required";
    schedule_name_missing:
        concat!(head!(), step!(), "[[schedules]]\ncron = \"@daily\"\n"),
        "schedules[0].name", "is required";
    unknown_timezone:
        sched!("cron = \"@daily\"\ntimezone = \"Mars/Olympus_Mons\"\n"),
        "schedules[0].timezone", "unknown time zone `Mars/Olympus_Mons`";
    duplicate_schedule_name:
        concat!(head!(), step!(), "[[schedules]]\nname = \"n\"\ncron = \"@daily\"\n",
                "[[schedules]]\nname = \"n\"\ncron = \"@hourly\"\n"),
        "schedules[1].name", "duplicate schedule name `n` (first used by schedules[0])";
    unknown_overlap:
        sched!("cron = \"@daily\"\noverlap = \"queue\"\n"),
        "schedules[0].overlap", "unknown variant `queue`";
    input_not_a_table:
        sched!("cron = \"@daily\"\ninput = 5\n"), "schedules[0].input", "must be a table";
    input_with_nan:
        sched!("cron = \"@daily\"\ninput = { nested = { x = nan } }\n"),
        "schedules[0].input.nested.x", "cannot be represented in JSON";
}

// ----- resolution and successful parses --------------------------------------------------

/// Verbatim from DESIGN.md, section "Definition format".
const DESIGN_EXAMPLE: &str = r#"name = "order_fulfillment"
version = 1

[defaults]
start_to_close = "30s"
retry = { initial_interval = "1s", backoff_coefficient = 2.0, max_interval = "5m", max_attempts = 5 }

[[steps]]
name = "reserve_inventory"
activity = "inventory.reserve"
compensate = "inventory.release"

[[steps]]
name = "charge_payment"
activity = "payments.charge"
compensate = "payments.refund"
retry = { max_attempts = 3, non_retryable = ["card_declined"] }
schedule_to_close = "10m"

[[steps]]
name = "cool_off"
sleep = "36h"

[[steps]]
name = "ship_order"
activity = "shipping.ship"
"#;

#[test]
fn design_example_resolves_policies() {
    let def = ok(DESIGN_EXAMPLE);
    assert_eq!(def.name, "order_fulfillment");
    assert_eq!(def.version, 1);
    let names: Vec<&str> = def.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "reserve_inventory",
            "charge_payment",
            "cool_off",
            "ship_order"
        ]
    );

    let charge = activity(&def, "charge_payment");
    assert_eq!(charge.activity, "payments.charge");
    assert_eq!(charge.compensate.as_deref(), Some("payments.refund"));
    assert_eq!(charge.retry.max_attempts, 3);
    assert_eq!(charge.retry.non_retryable, ["card_declined"]);
    assert_eq!(charge.retry.initial_interval, secs(1));
    assert_eq!(charge.retry.max_interval, secs(300));
    assert_eq!(charge.retry.backoff_coefficient, 2.0);
    assert_eq!(charge.timeouts.schedule_to_close, Some(secs(600)));
    assert_eq!(charge.timeouts.start_to_close, secs(30));
    assert_eq!(charge.timeouts.schedule_to_start, None);
    assert_eq!(charge.timeouts.heartbeat, None);
    // The compensation inherits defaults.retry, not the step's retry.
    assert_eq!(charge.compensate_retry.max_attempts, 5);
    assert!(charge.compensate_retry.non_retryable.is_empty());

    let reserve = activity(&def, "reserve_inventory");
    assert_eq!(reserve.retry.max_attempts, 5);
    assert_eq!(reserve.timeouts.schedule_to_close, None);
    assert_eq!(def.steps[2].kind, StepKind::Sleep(secs(36 * 3600)));
    assert_eq!(activity(&def, "ship_order").compensate, None);
    assert!(def.schedules.is_empty());
    assert_eq!(def.validate(FILE), Ok(()));
}

/// Every key of the format at once.
const FULL_EXAMPLE: &str = r#"
name = "order_fulfillment"
version = 3
description = "Reserve, charge, wait, ship"

[defaults]
start_to_close = "30s"
schedule_to_start = "1m"
schedule_to_close = "10m"
heartbeat = "10s"
retry = { initial_interval = "2s", backoff_coefficient = 1.5, max_interval = "5m", max_attempts = 5, non_retryable = ["x"] }
compensate_retry = { max_attempts = 20 }

[[steps]]
name = "reserve_inventory"
activity = "inventory.reserve"
compensate = "inventory.release"
retry = { max_attempts = 3, non_retryable = ["card_declined"] }
compensate_retry = { max_attempts = 10 }
start_to_close = "45s"
schedule_to_start = "2m"
schedule_to_close = "20m"
heartbeat = "5s"

[[steps]]
name = "cool_off"
sleep = "1h 30m"

[[steps]]
name = "approval"
wait = "approval.granted"
timeout = "2d"
on_timeout = "continue"

[[schedules]]
name = "nightly"
cron = "0 0 * * *"
timezone = "Europe/Berlin"
input = { region = "eu", limits = [1, 2.5], on = 2024-01-02T03:04:05Z, deep = { ok = true } }
overlap = "buffer_one"
catch_up_window = "1h"
"#;

#[test]
fn full_example_parses_every_key() {
    let def = ok(FULL_EXAMPLE);
    assert_eq!(def.version, 3);
    assert_eq!(
        def.description.as_deref(),
        Some("Reserve, charge, wait, ship")
    );
    let reserve = activity(&def, "reserve_inventory");
    assert_eq!(
        reserve.retry,
        RetryPolicy {
            initial_interval: secs(2),
            backoff_coefficient: 1.5,
            max_interval: secs(300),
            max_attempts: 3,
            non_retryable: vec!["card_declined".to_string()],
        }
    );
    assert_eq!(
        reserve.compensate_retry,
        RetryPolicy {
            initial_interval: secs(2),
            backoff_coefficient: 1.5,
            max_interval: secs(300),
            max_attempts: 10,
            non_retryable: vec!["x".to_string()],
        }
    );
    assert_eq!(
        reserve.timeouts,
        Timeouts {
            schedule_to_start: Some(secs(120)),
            start_to_close: secs(45),
            schedule_to_close: Some(secs(1200)),
            heartbeat: Some(secs(5)),
        }
    );
    assert_eq!(def.steps[1].kind, StepKind::Sleep(secs(5400)));
    assert_eq!(
        def.steps[2].kind,
        StepKind::Wait(WaitStep {
            signal: "approval.granted".to_string(),
            timeout: Some(secs(2 * 86400)),
            on_timeout: OnTimeout::Continue,
        })
    );
    let s = &def.schedules[0];
    assert_eq!(s.name, "nightly");
    assert_eq!(s.cron, "0 0 0 * * *");
    assert_eq!(s.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(
        s.input,
        serde_json::json!({
            "region": "eu",
            "limits": [1, 2.5],
            "on": "2024-01-02T03:04:05Z",
            "deep": {"ok": true}
        })
    );
    assert_eq!(s.overlap, OverlapPolicy::BufferOne);
    assert_eq!(s.catch_up_window, secs(3600));
}

#[test]
fn builtin_defaults_apply_without_defaults_table() {
    let def = ok(concat!(head!(), step!(), "compensate = \"undo\"\n"));
    let a = activity(&def, "a");
    assert_eq!(a.retry, RetryPolicy::default());
    assert_eq!(a.compensate_retry, RetryPolicy::default());
    assert_eq!(a.timeouts, Timeouts::default());
    assert_eq!(def.description, None);
}

#[test]
fn builtin_default_values_match_the_contract() {
    let r = RetryPolicy::default();
    assert_eq!(r.initial_interval, secs(1));
    assert_eq!(r.backoff_coefficient, 2.0);
    assert_eq!(r.max_interval, secs(100));
    assert_eq!(r.max_attempts, 5);
    assert!(r.non_retryable.is_empty());
    let t = Timeouts::default();
    assert_eq!(t.start_to_close, secs(60));
    assert_eq!(
        (t.schedule_to_start, t.schedule_to_close, t.heartbeat),
        (None, None, None)
    );
}

#[test]
fn retry_keys_override_defaults_one_by_one() {
    let def = ok(concat!(
        head!(),
        "[defaults]\nretry = { initial_interval = \"3s\", max_attempts = 7 }\n",
        step!(),
        "retry = { max_attempts = 2 }\n",
    ));
    let r = activity(&def, "a").retry;
    assert_eq!(r.max_attempts, 2, "step key wins");
    assert_eq!(r.initial_interval, secs(3), "defaults key fills in");
    assert_eq!(r.max_interval, secs(100), "built-in fills the rest");
    assert_eq!(r.backoff_coefficient, 2.0);
}

#[test]
fn compensate_retry_resolution_order() {
    // (defaults.retry, defaults.compensate_retry, step.compensate_retry) -> max_attempts
    let cases = [
        ("", "", "", 5),
        ("retry = { max_attempts = 7 }\n", "", "", 7),
        (
            "retry = { max_attempts = 7 }\n",
            "compensate_retry = { max_attempts = 8 }\n",
            "",
            8,
        ),
        (
            "retry = { max_attempts = 7 }\n",
            "compensate_retry = { max_attempts = 8 }\n",
            "compensate_retry = { max_attempts = 9 }\n",
            9,
        ),
        ("", "", "compensate_retry = { max_attempts = 9 }\n", 9),
    ];
    for (dr, dcr, scr, expected) in cases {
        let text = format!(
            "{}[defaults]\n{dr}{dcr}{}compensate = \"undo\"\nretry = {{ max_attempts = 1 }}\n{scr}",
            head!(),
            step!()
        );
        let a = activity(&ok(&text), "a");
        assert_eq!(a.compensate_retry.max_attempts, expected, "case {text}");
        assert_eq!(
            a.retry.max_attempts, 1,
            "step retry never leaks into compensation"
        );
    }
}

#[test]
fn timeouts_resolution_order() {
    let def = ok(concat!(
        head!(),
        "[defaults]\nstart_to_close = \"20s\"\nheartbeat = \"3s\"\n",
        step!(),
        "start_to_close = \"40s\"\n",
        "[[steps]]\nname = \"b\"\nactivity = \"x\"\n",
    ));
    let a = activity(&def, "a").timeouts;
    assert_eq!(a.start_to_close, secs(40), "step wins");
    assert_eq!(a.heartbeat, Some(secs(3)), "defaults fill in");
    assert_eq!(a.schedule_to_close, None, "built-in: none");
    let b = activity(&def, "b").timeouts;
    assert_eq!(b.start_to_close, secs(20));
}

#[test]
fn schedule_defaults() {
    let def = ok(sched!("cron = \"0 */5 * * * *\"\n"));
    let s = &def.schedules[0];
    assert_eq!(s.cron, "0 */5 * * * *");
    assert_eq!(s.timezone, chrono_tz::Tz::UTC);
    assert_eq!(s.input, serde_json::json!({}));
    assert_eq!(s.overlap, OverlapPolicy::Skip);
    assert_eq!(s.catch_up_window, secs(300));
}

#[test]
fn overlap_policies_parse() {
    let cases = [
        ("skip", OverlapPolicy::Skip),
        ("buffer_one", OverlapPolicy::BufferOne),
        ("allow_all", OverlapPolicy::AllowAll),
    ];
    for (text, expected) in cases {
        let def = ok(&format!(
            "{}overlap = \"{text}\"\n",
            sched!("cron = \"@daily\"\n")
        ));
        assert_eq!(def.schedules[0].overlap, expected);
        assert_eq!(expected.as_str(), text);
    }
}

#[test]
fn on_timeout_values_parse() {
    for (text, expected) in [("fail", OnTimeout::Fail), ("continue", OnTimeout::Continue)] {
        let def = ok(&format!(
            "{}[[steps]]\nname = \"w\"\nwait = \"s\"\ntimeout = \"1m\"\non_timeout = \"{text}\"\n",
            head!()
        ));
        match &def.steps[0].kind {
            StepKind::Wait(w) => assert_eq!(w.on_timeout, expected),
            other => panic!("not a wait step: {other:?}"),
        }
        assert_eq!(expected.as_str(), text);
    }
}

#[test]
fn wait_without_timeout_defaults_to_fail() {
    let def = ok(concat!(head!(), "[[steps]]\nname = \"w\"\nwait = \"s\"\n"));
    let expected = WaitStep {
        signal: "s".to_string(),
        timeout: None,
        on_timeout: OnTimeout::Fail,
    };
    assert_eq!(def.steps[0].kind, StepKind::Wait(expected));
}

#[test]
fn zero_catch_up_window_is_allowed() {
    let def = ok(sched!("cron = \"@daily\"\ncatch_up_window = \"0s\"\n"));
    assert_eq!(def.schedules[0].catch_up_window, Duration::ZERO);
}

#[test]
fn integer_backoff_coefficient_is_accepted() {
    let def = ok(concat!(
        head!(),
        step!(),
        "retry = { backoff_coefficient = 3 }\n"
    ));
    assert_eq!(activity(&def, "a").retry.backoff_coefficient, 3.0);
}

#[test]
fn equal_initial_and_max_interval_is_allowed() {
    let def = ok(concat!(
        head!(),
        step!(),
        "retry = { initial_interval = \"5s\", max_interval = \"5s\", backoff_coefficient = 1.0 }\n"
    ));
    assert_eq!(activity(&def, "a").retry.max_interval, secs(5));
}

#[test]
fn names_accept_their_full_charset() {
    let def = ok(concat!(
        "name = \"Order_Fulfil-2\"\nversion = 1\n",
        "[[steps]]\nname = \"Step_1-a\"\nactivity = \"Pay.charge_v2-eu\"\ncompensate = \"a.b.c\"\n",
        "[[steps]]\nname = \"w\"\nwait = \"sig.nal_1-x\"\n",
    ));
    assert_eq!(def.name, "Order_Fulfil-2");
    let long = "n".repeat(MAX_NAME_LEN);
    ok(&format!("name = \"{long}\"\nversion = 1\n{}", step!()));
}

// ----- error reporting behaviour ---------------------------------------------------------

#[test]
fn parse_all_reports_every_problem() {
    let errs = parse_all(
        FILE,
        concat!(
            "name = \"bad name\"\nversion = 0\n",
            "[[steps]]\nname = \"a\"\nsleep = \"0s\"\n",
            "[[steps]]\nname = \"a\"\nwait = \"s\"\non_timeout = \"continue\"\n",
        ),
    )
    .expect_err("invalid");
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    for expected in [
        "name",
        "version",
        "steps[0].sleep",
        "steps[1].name",
        "steps[1].on_timeout",
    ] {
        assert!(
            fields.contains(&expected),
            "{expected} missing from {fields:?}"
        );
    }
}

#[test]
fn inherited_bad_default_is_reported_once() {
    let errs = parse_all(
        FILE,
        concat!(
            head!(),
            "[defaults]\nretry = { max_attempts = 0 }\n",
            step!(),
            "compensate = \"u\"\n",
            "[[steps]]\nname = \"b\"\nactivity = \"x\"\n",
        ),
    )
    .expect_err("invalid");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field, "defaults.retry.max_attempts");
}

#[test]
fn missing_field_is_not_also_reported_as_empty() {
    let errs = parse_all(FILE, concat!("version = 1\n", step!())).expect_err("invalid");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].reason, "is required");
}

#[test]
fn error_display_is_file_field_reason() {
    let err = parse(FILE, concat!("name = \"s\"\nversion = 0\n", step!())).expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "sagas/test.toml: version: must be at least 1"
    );
}

#[test]
fn serde_errors_stop_at_the_first_one() {
    let errs =
        parse_all(FILE, concat!(head!(), "foo = 1\nbar = 2\n", step!())).expect_err("invalid");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "foo");
}

#[test]
fn line_column_counts_characters() {
    let text = "a = \"é\"\nbb = 1\n";
    assert_eq!(line_column(text, 0), Some((1, 1)));
    let offset = text.find("1").expect("present");
    assert_eq!(line_column(text, offset), Some((2, 6)));
    assert_eq!(line_column(text, 7), Some((1, 7)), "after the two-byte é");
    assert_eq!(line_column(text, 6), None, "inside a multi-byte character");
}

// ----- parse_duration and normalize_cron ------------------------------------------------

#[test]
fn parse_duration_accepts_humane_strings() {
    let cases = [
        ("250ms", Duration::from_millis(250)),
        ("30s", secs(30)),
        ("5m", secs(300)),
        ("36h", secs(36 * 3600)),
        ("7d", secs(7 * 86400)),
        ("1h 30m", secs(5400)),
        (" 5s ", secs(5)),
        ("0s", Duration::ZERO),
        ("100y", MAX_DURATION),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
}

#[test]
fn parse_duration_refusals_say_what_is_expected() {
    let cases = [
        ("", "got an empty string"),
        ("   ", "got an empty string"),
        (
            "abc",
            "expected a duration like 250ms, 30s, 5m, 36h or 7d, got `abc`",
        ),
        ("-1s", "negative durations are not allowed"),
        ("5", "got `5`"),
        ("101y", "too long"),
    ];
    for (text, reason) in cases {
        let err = parse_duration(text).expect_err(text);
        assert!(err.contains(reason), "{text}: {err}");
    }
}

#[test]
fn normalize_cron_accepts_and_normalises() {
    let cases = [
        ("0 0 * * *", "0 0 0 * * *"),
        ("  0   0 *  * * ", "0 0 0 * * *"),
        ("*/15 * * * * *", "*/15 * * * * *"),
        ("0 0 0 * * * 2099", "0 0 0 * * * 2099"),
        ("@daily", "@daily"),
        ("0 9 * * 1-5", "0 0 9 * * 2,3,4,5,6"),
        ("0 9 * * 0", "0 0 9 * * 1"),
        ("0 9 * * 7", "0 0 9 * * 1"),
        ("0 9 * * 5-7", "0 0 9 * * 1,6,7"),
        ("0 9 * * */2", "0 0 9 * * 1,3,5,7"),
        ("0 9 * * sun,3", "0 0 9 * * 1,4"),
        ("0 9 * * mon-3", "0 0 9 * * 2,3,4"),
        ("0 9 * * Monday,friday", "0 0 9 * * Monday,friday"),
        ("0 9 * * 1,Saturday", "0 0 9 * * 2,7"),
        ("0 9 * * 1/2", "0 0 9 * * 2,4,6"),
        ("0 9 * * MON-FRI", "0 0 9 * * MON-FRI"),
        ("0 9 1 * *", "0 0 9 1 * *"),
    ];
    for (input, expected) in cases {
        assert_eq!(normalize_cron(input).as_deref(), Ok(expected), "{input}");
    }
}

#[test]
fn normalize_cron_refusals() {
    let cases = [
        ("", "must not be empty"),
        ("* * *", "has 3 fields"),
        ("0 0 0 0 * * * *", "has 8 fields"),
        ("0 9 * * 8", "out of range"),
        ("0 9 * * 5-1", "runs backwards"),
        ("0 9 * * 1/0", "step must be at least 1"),
        ("0 9 * * 1/x", "is not a number"),
        ("0 9 * * 1-funday", "is not a day of the week"),
        ("0 9 * * 1,sunblah", "`sunblah` is not a day of the week"),
        ("0 9 * * sunblah", "not a valid day of the week"),
        ("0 9 * * 1,éé", "is not a day of the week"),
        ("0 9 1 * 1", "restricts both"),
        ("0 0 0 * * 8", "Days of Week must be less than 7"),
        ("@sometimes", "invalid cron expression `@sometimes`"),
    ];
    for (input, reason) in cases {
        let err = normalize_cron(input).expect_err(input);
        assert!(err.contains(reason), "{input}: {err}");
    }
}

#[test]
fn crontab_weekdays_keep_their_meaning() {
    use chrono::{Datelike, TimeZone, Weekday};
    let cron = normalize_cron("0 9 * * 1-5").expect("valid");
    let schedule = cron::Schedule::from_str(&cron).expect("parses");
    // 2024-06-01 is a Saturday: the next five ticks must be Monday to Friday.
    let start = chrono::Utc
        .with_ymd_and_hms(2024, 6, 1, 0, 0, 0)
        .single()
        .expect("valid");
    let days: Vec<Weekday> = schedule
        .after(&start)
        .take(5)
        .map(|t| t.weekday())
        .collect();
    assert_eq!(
        days,
        [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri
        ]
    );
}

// ----- definitions built in code -----------------------------------------------------------

fn sample() -> Definition {
    Definition {
        name: "sample".to_string(),
        version: 1,
        description: None,
        retention: None,
        steps: vec![
            Step {
                name: "reserve".to_string(),
                when: None,
                input: None,
                for_each: None,
                kind: StepKind::Activity(ActivityStep {
                    activity: "inventory.reserve".to_string(),
                    compensate: Some("inventory.release".to_string()),
                    retry: RetryPolicy::default(),
                    compensate_retry: RetryPolicy::default(),
                    timeouts: Timeouts::default(),
                }),
            },
            Step {
                name: "cool_off".to_string(),
                when: None,
                input: None,
                for_each: None,
                kind: StepKind::Sleep(secs(3600)),
            },
            Step {
                name: "approval".to_string(),
                when: None,
                input: None,
                for_each: None,
                kind: StepKind::Wait(WaitStep {
                    signal: "approval".to_string(),
                    timeout: Some(secs(86400)),
                    on_timeout: OnTimeout::Continue,
                }),
            },
        ],
        schedules: vec![ScheduleSpec {
            name: "nightly".to_string(),
            cron: "0 0 0 * * *".to_string(),
            timezone: chrono_tz::Tz::UTC,
            input: serde_json::json!({}),
            overlap: OverlapPolicy::Skip,
            catch_up_window: secs(300),
        }],
    }
}

fn act_mut(def: &mut Definition) -> &mut ActivityStep {
    match &mut def.steps[0].kind {
        StepKind::Activity(a) => a,
        other => panic!("steps[0] is not an activity: {other:?}"),
    }
}

fn wait_mut(def: &mut Definition) -> &mut WaitStep {
    match &mut def.steps[2].kind {
        StepKind::Wait(w) => w,
        other => panic!("steps[2] is not a wait: {other:?}"),
    }
}

#[test]
fn code_built_sample_is_valid() {
    assert_eq!(sample().validate("<code>"), Ok(()));
    assert!(sample().validation_errors("<code>").is_empty());
}

#[test]
fn code_built_definitions_follow_the_same_rules() {
    type Mutation = fn(&mut Definition);
    let cases: Vec<(Mutation, &str, &str)> = vec![
        (|d| d.name.clear(), "name", "must not be empty"),
        (|d| d.name = "a.b".into(), "name", "no dots"),
        (|d| d.version = 0, "version", "at least 1"),
        (|d| d.steps.clear(), "steps", "at least one"),
        (
            |d| d.steps[2].name = "reserve".into(),
            "steps[2].name",
            "first used by steps[0]",
        ),
        (
            |d| d.steps[1].name = "cool off".into(),
            "steps[1].name",
            "contains ' '",
        ),
        (
            |d| act_mut(d).activity.clear(),
            "steps[0].activity",
            "must not be empty",
        ),
        (
            |d| act_mut(d).compensate = Some("un do".into()),
            "steps[0].compensate",
            "contains ' '",
        ),
        (
            |d| act_mut(d).retry.max_attempts = 0,
            "steps[0].retry.max_attempts",
            "at least 1",
        ),
        (
            |d| act_mut(d).retry.backoff_coefficient = 0.5,
            "steps[0].retry.backoff_coefficient",
            "at least 1.0",
        ),
        (
            |d| act_mut(d).retry.backoff_coefficient = f64::NAN,
            "steps[0].retry.backoff_coefficient",
            "finite",
        ),
        (
            |d| act_mut(d).retry.initial_interval = Duration::ZERO,
            "steps[0].retry.initial_interval",
            "greater than zero",
        ),
        (
            |d| act_mut(d).retry.max_interval = Duration::ZERO,
            "steps[0].retry.max_interval",
            "greater than zero",
        ),
        (
            |d| act_mut(d).retry.max_interval = Duration::from_millis(10),
            "steps[0].retry.max_interval",
            "shorter than initial_interval",
        ),
        (
            |d| act_mut(d).retry.non_retryable = vec![String::new()],
            "steps[0].retry.non_retryable[0]",
            "must not be empty",
        ),
        (
            |d| act_mut(d).compensate_retry.max_attempts = 0,
            "steps[0].compensate_retry.max_attempts",
            "at least 1",
        ),
        (
            |d| act_mut(d).timeouts.start_to_close = Duration::ZERO,
            "steps[0].start_to_close",
            "greater than zero",
        ),
        (
            |d| act_mut(d).timeouts.schedule_to_start = Some(Duration::ZERO),
            "steps[0].schedule_to_start",
            "greater than zero",
        ),
        (
            |d| act_mut(d).timeouts.schedule_to_close = Some(Duration::ZERO),
            "steps[0].schedule_to_close",
            "greater than zero",
        ),
        (
            |d| act_mut(d).timeouts.heartbeat = Some(Duration::ZERO),
            "steps[0].heartbeat",
            "greater than zero",
        ),
        (
            |d| d.steps[1].kind = StepKind::Sleep(Duration::ZERO),
            "steps[1].sleep",
            "greater than zero",
        ),
        (
            |d| d.steps[1].kind = StepKind::Sleep(MAX_DURATION + Duration::from_secs(1)),
            "steps[1].sleep",
            "too long",
        ),
        (
            |d| wait_mut(d).signal = "a b".into(),
            "steps[2].wait",
            "contains ' '",
        ),
        (
            |d| wait_mut(d).timeout = Some(Duration::ZERO),
            "steps[2].timeout",
            "greater than zero",
        ),
        (
            |d| wait_mut(d).timeout = None,
            "steps[2].on_timeout",
            "needs `timeout`",
        ),
        (
            |d| d.schedules[0].name.clear(),
            "schedules[0].name",
            "must not be empty",
        ),
        (
            |d| {
                let copy = d.schedules[0].clone();
                d.schedules.push(copy);
            },
            "schedules[1].name",
            "first used by schedules[0]",
        ),
        (
            |d| d.schedules[0].cron = "nope".into(),
            "schedules[0].cron",
            "invalid cron expression",
        ),
        (
            |d| d.schedules[0].cron = "0 0 * * *".into(),
            "schedules[0].cron",
            "normalize_cron",
        ),
        (
            |d| d.schedules[0].cron = "0 0 0 30 2 *".into(),
            "schedules[0].cron",
            "never fires",
        ),
        (
            |d| d.schedules[0].input = serde_json::json!([1]),
            "schedules[0].input",
            "must be a table",
        ),
        (
            |d| d.schedules[0].catch_up_window = MAX_DURATION + Duration::from_secs(1),
            "schedules[0].catch_up_window",
            "too long",
        ),
    ];
    for (mutate, field, reason) in cases {
        let mut def = sample();
        mutate(&mut def);
        let err = def.validate("<code>").expect_err(field);
        assert_eq!(err.file, "<code>");
        assert_eq!(err.field, field, "{err}");
        assert!(err.reason.contains(reason), "{field}: {err}");
    }
}

#[test]
fn code_built_compensate_retry_is_ignored_without_compensate() {
    let mut def = sample();
    act_mut(&mut def).compensate = None;
    act_mut(&mut def).compensate_retry.max_attempts = 0;
    assert_eq!(def.validate("<code>"), Ok(()));
}

#[test]
fn code_built_wait_without_timeout_may_fail() {
    let mut def = sample();
    wait_mut(&mut def).timeout = None;
    wait_mut(&mut def).on_timeout = OnTimeout::Fail;
    assert_eq!(def.validate("<code>"), Ok(()));
}

#[test]
fn step_index_and_activities() {
    let def = ok(DESIGN_EXAMPLE);
    assert_eq!(def.step_index("reserve_inventory"), Some(0));
    assert_eq!(def.step_index("ship_order"), Some(3));
    assert_eq!(def.step_index("nope"), None);
    let expected: BTreeSet<String> = [
        "inventory.release",
        "inventory.reserve",
        "payments.charge",
        "payments.refund",
        "shipping.ship",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(def.activities(), expected);
}

// ----- catalog ---------------------------------------------------------------------------

fn def_named(name: &str, version: u32, activity: &str) -> Definition {
    let mut def = sample();
    def.name = name.to_string();
    def.version = version;
    act_mut(&mut def).activity = activity.to_string();
    act_mut(&mut def).compensate = None;
    def
}

#[test]
fn catalog_lookups() {
    let mut cat = Catalog::new();
    assert!(cat.is_empty());
    cat.insert(def_named("b", 1, "b.one"), "b1")
        .expect("insert");
    cat.insert(def_named("a", 2, "a.two"), "a2")
        .expect("insert");
    cat.insert(def_named("a", 10, "a.ten"), "a10")
        .expect("insert");
    cat.insert(def_named("a", 1, "a.one"), "a1")
        .expect("insert");
    assert!(!cat.is_empty());
    assert_eq!(cat.get("a", 2).map(|d| d.version), Some(2));
    assert_eq!(cat.get("a", 3), None);
    assert_eq!(cat.latest("a").map(|d| d.version), Some(10));
    assert_eq!(cat.latest("b").map(|d| d.version), Some(1));
    assert_eq!(cat.latest("c"), None);
    let order: Vec<(String, u32)> = cat.iter().map(|d| (d.name.clone(), d.version)).collect();
    let expected = [("a", 1), ("a", 2), ("a", 10), ("b", 1)].map(|(n, v)| (n.to_string(), v));
    assert_eq!(order, expected);
    let names: Vec<String> = cat.names().into_iter().collect();
    assert_eq!(names, ["a", "b"]);
    let acts: Vec<String> = cat.activities().into_iter().collect();
    assert_eq!(acts, ["a.one", "a.ten", "a.two", "b.one"]);
}

#[test]
fn catalog_refuses_duplicate_name_and_version() {
    let mut cat = Catalog::new();
    cat.insert(def_named("a", 1, "x"), "sagas/a.toml")
        .expect("first");
    let err = cat
        .insert(def_named("a", 1, "y"), "sagas/b.toml")
        .expect_err("duplicate");
    assert_eq!(err.file, "sagas/b.toml");
    assert_eq!(err.field, "version");
    assert!(
        err.reason.contains("already defined in sagas/a.toml"),
        "{err}"
    );
    assert_eq!(
        cat.get("a", 1).map(|d| activity(&d, "reserve").activity),
        Some("x".into())
    );
}

#[test]
fn catalog_refuses_invalid_definitions() {
    let mut cat = Catalog::new();
    let err = cat
        .insert(def_named("a", 0, "x"), "<code>")
        .expect_err("invalid");
    assert_eq!(
        (err.file.as_str(), err.field.as_str()),
        ("<code>", "version")
    );
    assert!(cat.is_empty());
}

/// A scratch directory removed on drop; unique per process and test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("sagaflow-definition-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn write(&self, name: &str, text: &str) {
        fs::write(self.0.join(name), text).expect("write");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn minimal(name: &str, version: u32) -> String {
    format!("name = \"{name}\"\nversion = {version}\n{}", step!())
}

#[test]
fn load_dir_loads_toml_files_only() {
    let dir = TempDir::new("load");
    dir.write("b.toml", &minimal("b", 1));
    dir.write("a.toml", &minimal("a", 1));
    dir.write("a_v2.toml", &minimal("a", 2));
    dir.write("notes.txt", "not toml at all");
    dir.write("a.toml.bak", "not toml at all");
    fs::create_dir_all(dir.0.join("nested.toml")).expect("mkdir");
    fs::create_dir_all(dir.0.join("sub")).expect("mkdir");
    dir.write("sub/c.toml", &minimal("c", 1));
    let cat = Catalog::load_dir(&dir.0).expect("loads");
    let names: Vec<String> = cat.names().into_iter().collect();
    assert_eq!(names, ["a", "b"], "not recursive, only *.toml files");
    assert_eq!(cat.latest("a").map(|d| d.version), Some(2));
}

#[test]
fn load_dir_reports_all_errors_across_files() {
    let dir = TempDir::new("errors");
    dir.write("1_ok.toml", &minimal("a", 1));
    dir.write("2_unknown.toml", &format!("{}bogus = 1\n", minimal("b", 1)));
    dir.write(
        "3_two_problems.toml",
        concat!("name = \"c.c\"\nversion = 0\n", step!()),
    );
    dir.write("4_dup.toml", &minimal("a", 1));
    let errs = Catalog::load_dir(&dir.0).expect_err("invalid");
    let got: Vec<(String, String)> = errs
        .iter()
        .map(|e| {
            let file = Path::new(&e.file)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned());
            (file.unwrap_or_default(), e.field.clone())
        })
        .collect();
    let expected = [
        ("2_unknown.toml", "steps[0].bogus"),
        ("3_two_problems.toml", "name"),
        ("3_two_problems.toml", "version"),
        ("4_dup.toml", "version"),
    ]
    .map(|(f, p)| (f.to_string(), p.to_string()));
    assert_eq!(got, expected);
    let dup = &errs[3];
    assert!(
        dup.reason.contains("1_ok.toml"),
        "names the first origin: {dup}"
    );
    assert!(
        errs[0].file.starts_with(&dir.0.display().to_string()),
        "file is the full path"
    );
}

#[test]
fn load_dir_reports_unreadable_files() {
    let dir = TempDir::new("binary");
    fs::write(dir.0.join("bad.toml"), [0xff, 0xfe, 0x00]).expect("write");
    let errs = Catalog::load_dir(&dir.0).expect_err("invalid utf-8");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "<io>");
    assert!(errs[0].file.ends_with("bad.toml"));
}

#[test]
fn load_dir_missing_directory() {
    let dir = TempDir::new("missing");
    let missing = dir.0.join("does-not-exist");
    let errs = Catalog::load_dir(&missing).expect_err("missing");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "<io>");
    assert_eq!(errs[0].file, missing.display().to_string());
}

#[test]
fn load_dir_empty_directory_is_an_empty_catalog() {
    let dir = TempDir::new("empty");
    let cat = Catalog::load_dir(&dir.0).expect("loads");
    assert!(cat.is_empty());
    assert_eq!(cat.iter().count(), 0);
}

const SLEEP_UNTIL: &str = r#"
name = "newsletter"
version = 1
[[steps]]
name = "render"
activity = "newsletter.render"
[[steps]]
name = "deferred"
sleep_until = "steps.render.send_at"
[[steps]]
name = "later"
sleep_until = "input.deadline"
"#;

#[test]
fn sleep_until_reads_input_or_an_earlier_step() {
    let def = ok(SLEEP_UNTIL);
    assert_eq!(
        def.steps[1].kind,
        StepKind::SleepUntil("steps.render.send_at".into())
    );
    assert_eq!(
        def.steps[2].kind,
        StepKind::SleepUntil("input.deadline".into())
    );
}

#[test]
fn sleep_until_refuses_unknown_or_later_step_references_and_bad_paths() {
    let later = SLEEP_UNTIL.replace("steps.render.send_at", "steps.later.at");
    assert_refused(
        &later,
        "steps[1].sleep_until",
        "unknown step reference `later`",
    );
    let unknown = SLEEP_UNTIL.replace("steps.render.send_at", "steps.nope.at");
    assert_refused(
        &unknown,
        "steps[1].sleep_until",
        "unknown step reference `nope`",
    );
    let bare = SLEEP_UNTIL.replace("steps.render.send_at", "send_at");
    assert_refused(&bare, "steps[1].sleep_until", "starting with `input.`");
    let empty_part = SLEEP_UNTIL.replace("steps.render.send_at", "input..x");
    assert_refused(&empty_part, "steps[1].sleep_until", "dotted path");
    let with_retry = SLEEP_UNTIL.replace(
        "sleep_until = \"input.deadline\"",
        "sleep_until = \"input.deadline\"\nretry = { max_attempts = 2 }",
    );
    assert_refused(
        &with_retry,
        "steps[2].retry",
        "only valid on activity steps",
    );
}

#[test]
fn catalog_refuses_attempts_that_outlive_the_consumer_timeout() {
    let text = |stc: &str| {
        format!(
            "name = \"long\"\nversion = 1\n[[steps]]\nname = \"crunch\"\nactivity = \"batch.crunch\"\nstart_to_close = \"{stc}\"\n"
        )
    };
    let mut cat = Catalog::new();
    cat.insert(parse("long.toml", &text("29m")).unwrap(), "long.toml")
        .unwrap();
    let limit = Duration::from_secs(30 * 60);
    assert!(cat.check_consumer_timeout(limit).is_empty());
    let mut cat = Catalog::new();
    cat.insert(parse("long.toml", &text("30m")).unwrap(), "long.toml")
        .unwrap();
    let errors = cat.check_consumer_timeout(limit);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, "long.toml");
    assert_eq!(errors[0].field, "steps[0].start_to_close");
    assert!(
        errors[0].reason.contains("consumer_timeout"),
        "{}",
        errors[0].reason
    );
}

#[test]
fn retention_is_a_duration_and_zero_keeps_for_ever() {
    let base = "name = \"r\"\nversion = 1\n[[steps]]\nname = \"a\"\nactivity = \"x.y\"\n";
    assert_eq!(ok(base).retention, None);
    let kept = ok(&format!("retention = \"90d\"\n{base}"));
    assert_eq!(kept.retention, Some(secs(90 * 86_400)));
    let forever = ok(&format!("retention = \"0\"\n{base}"));
    assert_eq!(forever.retention, Some(Duration::ZERO));
    assert_refused(
        &format!("retention = \"soon\"\n{base}"),
        "retention",
        "duration",
    );
}

#[path = "flow_tests.rs"]
mod flow;
