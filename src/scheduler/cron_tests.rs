use super::*;
use chrono::Timelike;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn cron(expr: &str, tz: &str) -> Cron {
    Cron::parse(expr, parse_timezone(tz).unwrap()).unwrap()
}

/// Every tick in `(from, to]`, by repeated `next_after`.
fn ticks(c: &Cron, from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let (mut t, to) = (at(from), at(to));
    let mut out = vec![];
    while let Some(n) = c.next_after(t).filter(|n| *n <= to) {
        out.push(n);
        t = n;
    }
    out
}

fn rfc(ts: &[DateTime<Utc>]) -> Vec<String> {
    ts.iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect()
}

const SECS: Duration = Duration::from_secs(1);

#[test]
fn every_second_next_and_first_at_or_after() {
    let c = cron("* * * * * *", "UTC");
    let t = at("2026-05-01T10:00:00Z");
    assert_eq!(c.next_after(t), Some(at("2026-05-01T10:00:01Z")));
    assert_eq!(c.first_at_or_after(t), Some(t));
    let frac = at("2026-05-01T10:00:00.250Z");
    assert_eq!(c.next_after(frac), Some(at("2026-05-01T10:00:01Z")));
    assert_eq!(c.first_at_or_after(frac), Some(at("2026-05-01T10:00:01Z")));
}

#[test]
fn nightly_five_field_expression_fires_at_midnight() {
    let c = cron("0 0 * * *", "UTC");
    let t = at("2026-11-30T13:00:00Z");
    assert_eq!(c.next_after(t), Some(at("2026-12-01T00:00:00Z")));
    assert_eq!(
        c.next_after(at("2026-12-01T00:00:00Z")),
        Some(at("2026-12-02T00:00:00Z"))
    );
}

#[test]
fn five_field_weekdays_use_crontab_numbering_in_the_zone() {
    // 2026-05-01 is a Friday; crontab 1-5 = Monday..Friday. 09:00 CEST = 07:00Z.
    let c = cron("0 9 * * 1-5", "Europe/Berlin");
    let got = ticks(&c, "2026-05-01T08:00:00Z", "2026-05-05T23:00:00Z");
    assert_eq!(
        rfc(&got),
        ["2026-05-04T07:00:00Z", "2026-05-05T07:00:00Z"],
        "Saturday and Sunday skipped, Friday's tick already past"
    );
}

#[test]
fn zone_offset_moves_the_utc_tick_between_summer_and_winter() {
    let c = cron("0 0 9 * * *", "Europe/Berlin");
    assert_eq!(
        c.next_after(at("2026-07-01T00:00:00Z")),
        Some(at("2026-07-01T07:00:00Z"))
    );
    assert_eq!(
        c.next_after(at("2026-12-01T00:00:00Z")),
        Some(at("2026-12-01T08:00:00Z"))
    );
    // The zone's rules keep applying long after the last listed transition.
    assert_eq!(
        c.next_after(at("2061-07-01T00:00:00Z")),
        Some(at("2061-07-01T07:00:00Z"))
    );
}

#[test]
fn spring_forward_skips_the_missing_wall_clock_time() {
    // Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00Z; 02:30 does not exist.
    let daily = cron("0 30 2 * * *", "Europe/Berlin");
    let got = ticks(&daily, "2026-03-27T12:00:00Z", "2026-03-31T12:00:00Z");
    assert_eq!(
        rfc(&got),
        [
            "2026-03-28T01:30:00Z",
            "2026-03-30T00:30:00Z",
            "2026-03-31T00:30:00Z"
        ]
    );
    let half_hourly = cron("0 */30 * * * *", "Europe/Berlin");
    let got = ticks(&half_hourly, "2026-03-28T23:45:00Z", "2026-03-29T01:30:00Z");
    assert_eq!(
        rfc(&got),
        [
            "2026-03-29T00:00:00Z", // 01:00 CET
            "2026-03-29T00:30:00Z", // 01:30 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-29T01:30:00Z", // 03:30 CEST
        ]
    );
}

#[test]
fn a_search_from_a_fractional_instant_crosses_an_offset_change() {
    // One day after the start of the search is 0.25 s past the spring-forward change
    // (01:00Z): the bisection must still converge on whole seconds.
    let sunday_noon = cron("0 0 12 * * Sun", "Europe/Berlin");
    assert_eq!(
        sunday_noon.next_after(at("2026-03-28T01:00:00.250Z")),
        Some(at("2026-03-29T10:00:00Z"))
    );
    let noon = cron("0 0 12 * * *", "Europe/Berlin");
    assert_eq!(
        noon.first_at_or_after(at("2026-10-24T22:59:59.999Z")),
        Some(at("2026-10-25T11:00:00Z"))
    );
}

#[test]
fn fall_back_fires_the_repeated_wall_clock_time_twice_in_order() {
    // Berlin 2026-10-25: 03:00 CEST goes back to 02:00 CET at 01:00Z.
    let daily = cron("0 30 2 * * *", "Europe/Berlin");
    let got = ticks(&daily, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z");
    assert_eq!(
        rfc(&got),
        [
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T01:30:00Z", // 02:30 CET
            "2026-10-26T01:30:00Z",
        ]
    );
    let half_hourly = cron("0 */30 * * * *", "Europe/Berlin");
    let got = ticks(&half_hourly, "2026-10-24T23:45:00Z", "2026-10-25T02:00:00Z");
    assert_eq!(
        rfc(&got),
        [
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T01:30:00Z", // 02:30 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
        ]
    );
}

#[test]
fn every_minute_stays_evenly_spaced_through_both_transitions() {
    let c = cron("0 * * * * *", "Europe/Berlin");
    for (from, to) in [
        ("2026-03-28T23:00:00Z", "2026-03-29T03:00:00Z"),
        ("2026-10-24T23:00:00Z", "2026-10-25T03:00:00Z"),
    ] {
        let got = ticks(&c, from, to);
        assert_eq!(got.len(), 240, "{from}");
        assert!(got
            .windows(2)
            .all(|w| w[1] - w[0] == chrono::Duration::minutes(1)));
    }
}

#[test]
fn a_year_of_ticks_is_strictly_increasing_and_matches_local_time() {
    let cases = [
        ("0 0 * * * *", "Europe/Berlin", 8760), // every UTC hour is a local :00
        ("0 30 2 * * *", "Europe/Berlin", 365), // one skipped in March, one doubled in October
        ("0 0 0 * * *", "America/New_York", 365),
        ("0 15 */6 * * *", "Australia/Lord_Howe", 1460), // DST shifts 30 min
    ];
    for (expr, zone, want) in cases {
        let c = cron(expr, zone);
        let tz = parse_timezone(zone).unwrap();
        let got = ticks(&c, "2025-12-31T23:59:59Z", "2026-12-31T23:59:59Z");
        let got: Vec<_> = got.into_iter().filter(|t| t.year_utc() == 2026).collect();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{expr} {zone}");
        let schedule = cron::Schedule::from_str(&normalize_cron(expr).unwrap()).unwrap();
        for t in &got {
            assert!(schedule.includes(t.with_timezone(&tz)), "{expr} {zone} {t}");
        }
        assert!(
            (got.len() as i64 - want as i64).abs() <= 1,
            "{expr} {zone}: {} ticks, expected about {want}",
            got.len()
        );
    }
    let daily = cron("0 30 2 * * *", "Europe/Berlin");
    assert_eq!(
        daily.count_between(at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z")),
        365
    );
    let hourly = cron("0 0 * * * *", "Europe/Berlin");
    assert_eq!(
        hourly.count_between(at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z")),
        8760
    );
}

trait YearUtc {
    fn year_utc(&self) -> i32;
}

impl YearUtc for DateTime<Utc> {
    fn year_utc(&self) -> i32 {
        chrono::Datelike::year(self)
    }
}

#[test]
fn not_yet_due_plans_nothing() {
    let c = cron("* * * * * *", "UTC");
    let due = at("2026-05-01T10:00:05Z");
    let p = c.plan(due, at("2026-05-01T10:00:04.900Z"), SECS, 100);
    assert_eq!(
        p,
        Plan {
            fire: vec![],
            missed: 0,
            next: Some(due)
        }
    );
}

#[test]
fn due_ticks_inside_the_window_fire_older_ones_are_missed() {
    let c = cron("* * * * * *", "UTC");
    let p = c.plan(
        at("2026-05-01T10:00:00Z"),
        at("2026-05-01T10:00:10.5Z"),
        Duration::from_secs(2),
        100,
    );
    // Window starts at 10:00:08.5: 10:00:09 and 10:00:10 fire; 10:00:00..=10:00:08 missed.
    assert_eq!(
        rfc(&p.fire),
        ["2026-05-01T10:00:09Z", "2026-05-01T10:00:10Z"]
    );
    assert_eq!(p.missed, 9);
    assert_eq!(p.next, Some(at("2026-05-01T10:00:11Z")));
}

#[test]
fn a_tick_exactly_at_the_window_edge_still_fires() {
    let c = cron("* * * * * *", "UTC");
    let p = c.plan(
        at("2026-05-01T10:00:00Z"),
        at("2026-05-01T10:00:05Z"),
        Duration::from_secs(2),
        100,
    );
    assert_eq!(p.fire.first(), Some(&at("2026-05-01T10:00:03Z")));
    assert_eq!(p.fire.len(), 3);
    assert_eq!(p.missed, 3);
}

#[test]
fn zero_window_fires_only_a_tick_at_now() {
    let c = cron("* * * * * *", "UTC");
    let p = c.plan(
        at("2026-05-01T10:00:00Z"),
        at("2026-05-01T10:00:03Z"),
        Duration::ZERO,
        100,
    );
    assert_eq!(rfc(&p.fire), ["2026-05-01T10:00:03Z"]);
    assert_eq!(p.missed, 3);
}

#[test]
fn the_limit_leaves_the_rest_due_for_the_next_pass() {
    let c = cron("* * * * * *", "UTC");
    let now = at("2026-05-01T10:01:00Z");
    let p = c.plan(
        at("2026-05-01T10:00:00Z"),
        now,
        Duration::from_secs(300),
        10,
    );
    assert_eq!(p.fire.len(), 10);
    assert_eq!(p.missed, 0);
    assert_eq!(p.next, Some(at("2026-05-01T10:00:10Z")));
    let rest = c.plan(p.next.unwrap(), now, Duration::from_secs(300), 100);
    assert_eq!(rest.fire.len(), 51);
    assert_eq!(rest.next, Some(at("2026-05-01T10:01:01Z")));
}

#[test]
fn years_of_downtime_are_counted_without_walking_every_tick() {
    let c = cron("* * * * * *", "UTC");
    let due = at("2016-05-01T10:00:00Z");
    let now = at("2026-05-01T10:00:00Z");
    let started = std::time::Instant::now();
    let p = c.plan(due, now, Duration::from_secs(300), 100);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let seconds = (now - due).num_seconds() as u64;
    assert_eq!(
        p.missed,
        seconds - 300,
        "evenly spaced: the estimate is exact"
    );
    assert_eq!(p.fire.len(), 100);
    assert_eq!(p.fire[0], now - chrono::Duration::seconds(300));
}

#[test]
fn uneven_schedules_estimate_missed_ticks_closely() {
    // Weekdays at 09:00, 09:00:30, ..., every 30 s of the working hours.
    let c = cron("*/30 * 9-17 * * Mon-Fri", "Europe/Berlin");
    let (from, to) = (at("2020-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
    let estimate = c.count_between(from, to);
    // 6 years * ~261 weekdays * 9 hours * 120 ticks per hour.
    let rough = 6 * 261 * 9 * 120;
    let error = (estimate as f64 - rough as f64).abs() / rough as f64;
    assert!(error < 0.05, "estimate {estimate}, rough {rough}");
}

#[test]
fn a_schedule_that_ends_has_no_next_tick() {
    let c = cron("0 0 0 1 1 * 2027", "UTC");
    assert_eq!(c.next_after(at("2027-01-01T00:00:00Z")), None);
    let p = c.plan(
        at("2027-01-01T00:00:00Z"),
        at("2027-01-01T00:00:00.1Z"),
        SECS,
        10,
    );
    assert_eq!(rfc(&p.fire), ["2027-01-01T00:00:00Z"]);
    assert_eq!(p.next, None);
    assert_eq!(
        c.count_between(at("2030-01-01T00:00:00Z"), at("2031-01-01T00:00:00Z")),
        0
    );
}

#[test]
fn ticks_are_whole_seconds() {
    let c = cron("*/7 * * * * *", "Asia/Kolkata");
    let got = ticks(&c, "2026-05-01T10:00:00.123Z", "2026-05-01T10:01:00Z");
    assert!(got.iter().all(|t| t.nanosecond() == 0));
    assert!(got.iter().all(|t| t.second() % 7 == 0));
}

#[test]
fn bad_expressions_and_zones_say_why() {
    let tz = parse_timezone("UTC").unwrap();
    assert!(Cron::parse("61 * * * *", tz).unwrap_err().contains("61"));
    assert!(Cron::parse("* * *", tz).unwrap_err().contains("fields"));
    let e = parse_timezone("Mars/Olympus").unwrap_err();
    assert!(e.contains("Mars/Olympus") && e.contains("IANA"), "{e}");
}
