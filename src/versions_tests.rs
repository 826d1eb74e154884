use super::*;

fn stored(saga: &str, version: i64, counts: [i64; 4]) -> StoredVersion {
    let [scheduled, running, compensating, failed] = counts;
    StoredVersion {
        saga: saga.into(),
        version,
        scheduled,
        running,
        compensating,
        failed,
    }
}

fn loaded(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
}

/// (saga, version, loaded, latest, schedules, safe_to_unload) of each row.
type Row = (&'static str, i64, bool, bool, i64, bool);

fn rows(r: &Report) -> Vec<(&str, i64, bool, bool, i64, bool)> {
    r.versions
        .iter()
        .map(|v| {
            let saga = v.saga.as_str();
            (
                saga,
                v.version,
                v.loaded,
                v.latest,
                v.schedules,
                v.safe_to_unload,
            )
        })
        .collect()
}

#[test]
fn each_case_says_whether_a_version_is_safe_to_unload() {
    struct Case {
        what: &'static str,
        loaded: &'static [(&'static str, u32)],
        versions: Vec<StoredVersion>,
        schedules: &'static [(&'static str, i64)],
        expected: Vec<Row>,
    }
    let cases = vec![
        Case {
            what: "nothing stored: every loaded version is safe",
            loaded: &[("order", 1), ("order", 2)],
            versions: vec![],
            schedules: &[],
            expected: vec![
                ("order", 1, true, false, 0, true),
                ("order", 2, true, true, 0, true),
            ],
        },
        Case {
            what: "running sagas hold the old version; the new one is free",
            loaded: &[("order", 1), ("order", 2)],
            versions: vec![stored("order", 1, [0, 3, 0, 0])],
            schedules: &[],
            expected: vec![
                ("order", 1, true, false, 0, false),
                ("order", 2, true, true, 0, true),
            ],
        },
        Case {
            what: "compensating, scheduled and failed sagas each hold a version",
            loaded: &[("a", 1), ("b", 1), ("c", 1), ("c", 2)],
            versions: vec![
                stored("a", 1, [0, 0, 1, 0]),
                stored("b", 1, [2, 0, 0, 0]),
                stored("c", 1, [0, 0, 0, 4]),
            ],
            schedules: &[],
            expected: vec![
                ("a", 1, true, true, 0, false),
                ("b", 1, true, true, 0, false),
                ("c", 1, true, false, 0, false),
                ("c", 2, true, true, 0, true),
            ],
        },
        Case {
            what: "schedules hold the latest loaded version only",
            loaded: &[("nightly", 1), ("nightly", 3)],
            versions: vec![],
            schedules: &[("nightly", 2)],
            expected: vec![
                ("nightly", 1, true, false, 0, true),
                ("nightly", 3, true, true, 2, false),
            ],
        },
        Case {
            what: "a stored version that is not loaded is listed, not safe",
            loaded: &[("order", 2)],
            versions: vec![stored("order", 1, [0, 5, 1, 0])],
            schedules: &[],
            expected: vec![
                ("order", 1, false, false, 0, false),
                ("order", 2, true, true, 0, true),
            ],
        },
        Case {
            what: "a name not loaded at all: its sagas listed, its schedules apart",
            loaded: &[],
            versions: vec![stored("gone", 4, [0, 0, 0, 1])],
            schedules: &[("gone", 1)],
            expected: vec![("gone", 4, false, false, 0, false)],
        },
    ];
    for c in cases {
        let s = Stored {
            versions: c.versions,
            schedules: c
                .schedules
                .iter()
                .map(|(n, k)| (n.to_string(), *k))
                .collect(),
        };
        let r = report(&loaded(c.loaded), &s);
        assert_eq!(rows(&r), c.expected, "{}", c.what);
        for v in &r.versions {
            assert_eq!(
                v.reason.is_none(),
                v.safe_to_unload,
                "{}: {} v{} has a reason exactly when it is not safe",
                c.what,
                v.saga,
                v.version
            );
        }
    }
}

#[test]
fn the_counts_and_the_reason_name_what_holds_a_version() {
    let s = Stored {
        versions: vec![stored("order", 1, [1, 3, 2, 4])],
        schedules: vec![("order".into(), 1)],
    };
    let r = report(&loaded(&[("order", 1)]), &s);
    let v = &r.versions[0];
    assert_eq!(
        (
            v.scheduled,
            v.running,
            v.compensating,
            v.failed,
            v.schedules
        ),
        (1, 3, 2, 4, 1)
    );
    assert_eq!(
        v.reason.as_deref(),
        Some(
            "3 running, 2 compensating, 1 scheduled (delayed start), 4 failed (waiting for an \
             operator), 1 schedule starts it (the latest loaded version); unload it once they \
             have ended"
        )
    );

    let r = report(&loaded(&[]), &s);
    let v = &r.versions[0];
    assert!(!v.loaded && !v.safe_to_unload);
    assert!(
        v.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("not loaded here, yet 3 running")),
        "{:?}",
        v.reason
    );
    assert_eq!(
        r.unloaded_schedules,
        [UnloadedSchedules {
            saga: "order".into(),
            schedules: 1
        }]
    );
}

#[test]
fn unloaded_lists_open_sagas_of_versions_not_loaded() {
    let s = Stored {
        versions: vec![
            stored("order", 1, [1, 2, 3, 0]),
            stored("order", 2, [0, 9, 0, 0]),
            // Failed only: held for the operator, but nothing is stuck on it.
            stored("order", 3, [0, 0, 0, 7]),
            stored("payment", 1, [0, 1, 0, 0]),
        ],
        schedules: vec![],
    };
    let found = unloaded(&loaded(&[("order", 2)]), &s);
    assert_eq!(
        found,
        [
            Unloaded {
                saga: "order".into(),
                version: 1,
                open: 6
            },
            Unloaded {
                saga: "payment".into(),
                version: 1,
                open: 1
            },
        ]
    );
    let all = loaded(&[("order", 1), ("order", 2), ("payment", 1)]);
    assert_eq!(unloaded(&all, &s), []);
}
