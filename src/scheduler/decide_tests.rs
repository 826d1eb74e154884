use super::*;
use serde_json::json;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// An every-second schedule whose next tick is 10:00:00, with nothing pending.
fn row(overlap: &str) -> ScheduleRow {
    ScheduleRow {
        name: "reports.hourly".into(),
        saga: "reports".into(),
        cron: "* * * * * *".into(),
        timezone: "UTC".into(),
        input: json!({"kind": "daily"}),
        overlap: overlap.into(),
        catch_up_window_ms: 60_000,
        paused: false,
        source: "file".into(),
        next_fire_at: Some(at("2026-05-01T10:00:00Z")),
        last_fire_at: None,
        last_saga_id: None,
        missed_ticks: 0,
        skipped_ticks: 0,
        buffered_tick: None,
        trigger_requested_at: None,
        created_at: at("2026-05-01T09:00:00Z"),
        updated_at: at("2026-05-01T09:00:00Z"),
    }
}

const LAG: Duration = Duration::from_secs(1);

fn ids(d: &Decision) -> Vec<&str> {
    d.starts.iter().map(|s| s.id.as_str()).collect()
}

#[test]
fn ids_name_the_schedule_and_the_tick_in_utc_seconds() {
    let t = at("2026-12-01T01:00:00.900+01:00");
    assert_eq!(tick_id("nightly", t), "nightly@2026-12-01T00:00:00Z");
    assert_eq!(
        manual_id("nightly", t),
        "nightly@manual-2026-12-01T00:00:00Z"
    );
}

#[test]
fn a_due_tick_starts_one_saga_and_moves_the_row_on() {
    let d = decide(&row("skip"), false, at("2026-05-01T10:00:00.200Z"), LAG).unwrap();
    assert_eq!(ids(&d), ["reports.hourly@2026-05-01T10:00:00Z"]);
    assert_eq!(d.starts[0].saga, "reports");
    assert_eq!(
        d.starts[0].input,
        json!({"kind": "daily", "scheduled_at": "2026-05-01T10:00:00Z"})
    );
    let a = d.advance.unwrap();
    assert_eq!(a.next_fire_at, Some(at("2026-05-01T10:00:01Z")));
    assert_eq!(
        a.last_fire,
        Some((
            at("2026-05-01T10:00:00Z"),
            "reports.hourly@2026-05-01T10:00:00Z".to_string()
        ))
    );
    assert_eq!((a.missed, a.skipped, a.trigger_done), (0, 0, false));
}

#[test]
fn nothing_due_changes_nothing() {
    let d = decide(&row("skip"), true, at("2026-05-01T09:59:59Z"), LAG).unwrap();
    assert_eq!(d, Decision::default());
    let mut waiting = row("buffer_one");
    waiting.buffered_tick = Some(at("2026-05-01T09:59:00Z"));
    let d = decide(&waiting, true, at("2026-05-01T09:59:59Z"), LAG).unwrap();
    assert_eq!(d, Decision::default(), "the buffer waits for the open run");
}

#[test]
fn skip_drops_a_tick_while_the_last_run_is_open() {
    let d = decide(&row("skip"), true, at("2026-05-01T10:00:02.5Z"), LAG).unwrap();
    assert!(d.starts.is_empty());
    let a = d.advance.unwrap();
    assert_eq!((a.skipped, a.buffered_tick), (3, None));
    assert_eq!(a.next_fire_at, Some(at("2026-05-01T10:00:03Z")));
    assert_eq!(a.last_fire, None);
}

#[test]
fn buffer_one_keeps_a_tick_then_releases_it_when_the_run_ended() {
    let d = decide(&row("buffer_one"), true, at("2026-05-01T10:00:01.5Z"), LAG).unwrap();
    let a = d.advance.unwrap();
    assert_eq!(a.buffered_tick, Some(at("2026-05-01T10:00:00Z")));
    assert_eq!(a.skipped, 1);
    let mut later = row("buffer_one");
    later.buffered_tick = a.buffered_tick;
    later.next_fire_at = Some(at("2026-05-01T10:00:05Z"));
    let d = decide(&later, false, at("2026-05-01T10:00:03Z"), LAG).unwrap();
    assert_eq!(ids(&d), ["reports.hourly@2026-05-01T10:00:00Z"]);
    let a = d.advance.unwrap();
    assert_eq!(a.buffered_tick, None);
    assert_eq!(a.next_fire_at, Some(at("2026-05-01T10:00:05Z")));
}

#[test]
fn catch_up_counts_old_ticks_and_starts_those_in_the_window() {
    let mut r = row("allow_all");
    r.catch_up_window_ms = 2_000;
    let d = decide(&r, false, at("2026-05-01T11:00:00.5Z"), LAG).unwrap();
    assert_eq!(
        ids(&d),
        [
            "reports.hourly@2026-05-01T10:59:59Z",
            "reports.hourly@2026-05-01T11:00:00Z"
        ]
    );
    assert_eq!(d.advance.unwrap().missed, 3599);
}

#[test]
fn the_polling_lag_never_makes_a_tick_missed() {
    let mut r = row("skip");
    r.catch_up_window_ms = 0;
    let d = decide(&r, false, at("2026-05-01T10:00:00.6Z"), LAG).unwrap();
    assert_eq!(ids(&d), ["reports.hourly@2026-05-01T10:00:00Z"]);
    assert_eq!(d.advance.unwrap().missed, 0);
}

#[test]
fn a_manual_trigger_runs_even_when_paused_and_leaves_ticks_alone() {
    let mut r = row("skip");
    r.paused = true;
    r.trigger_requested_at = Some(at("2026-05-01T10:00:07Z"));
    let d = decide(&r, true, at("2026-05-01T10:00:08Z"), LAG).unwrap();
    assert_eq!(ids(&d), ["reports.hourly@manual-2026-05-01T10:00:07Z"]);
    assert_eq!(d.starts[0].input["scheduled_at"], "2026-05-01T10:00:07Z");
    let a = d.advance.unwrap();
    assert!(a.trigger_done);
    assert_eq!(a.next_fire_at, r.next_fire_at, "paused: ticks not planned");
    assert_eq!((a.missed, a.skipped), (0, 0));
}

#[test]
fn a_manual_run_counts_as_the_open_run_for_ticks_in_the_same_pass() {
    let mut r = row("skip");
    r.trigger_requested_at = Some(at("2026-05-01T10:00:00Z"));
    let d = decide(&r, false, at("2026-05-01T10:00:00.5Z"), LAG).unwrap();
    assert_eq!(ids(&d), ["reports.hourly@manual-2026-05-01T10:00:00Z"]);
    assert_eq!(d.advance.unwrap().skipped, 1);
}

#[test]
fn non_object_input_is_passed_unchanged() {
    let mut r = row("skip");
    r.input = json!([1, 2]);
    let d = decide(&r, false, at("2026-05-01T10:00:00Z"), LAG).unwrap();
    assert_eq!(d.starts[0].input, json!([1, 2]));
}

#[test]
fn an_unreadable_row_is_an_error_not_a_panic() {
    let mut r = row("sometimes");
    assert!(decide(&r, false, at("2026-05-01T10:00:00Z"), LAG)
        .unwrap_err()
        .contains("sometimes"));
    r.overlap = "skip".into();
    r.timezone = "Nowhere/Land".into();
    assert!(decide(&r, false, at("2026-05-01T10:00:00Z"), LAG)
        .unwrap_err()
        .contains("Nowhere/Land"));
}

#[test]
fn run_ids_are_recognised_and_business_keys_are_not() {
    let tick = DateTime::parse_from_rfc3339("2026-03-01T02:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    assert!(is_run_id(&tick_id("nightly", tick)));
    assert!(is_run_id(&manual_id("nightly", tick)));
    assert!(is_run_id("a@b@2026-03-01T02:00:00+01:00"));
    for id in [
        "order-124",
        "ann@example.com",
        "@2026-03-01T02:00:00Z",
        "nightly@manual-",
        "nightly@tomorrow",
    ] {
        assert!(!is_run_id(id), "{id}");
    }
}
