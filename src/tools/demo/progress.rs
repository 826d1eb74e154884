//! What `sagaflow demo` shows while its sagas run: one [`Tally`] per saga group (the
//! sagas of one definition), drawn as `indicatif` bars on a terminal or as plain lines
//! elsewhere (stdout not a terminal, or `--plain`).
//!
//! The pure part — counts from status rows, the text of a line — is separate from the
//! drawing, so it is unit-tested without a terminal.

use std::collections::BTreeMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Statuses a saga never leaves, in the order they are shown.
const ENDED: &[&str] = &["completed", "compensated", "failed", "cancelled"];
/// Statuses of a saga still on its way, in the order they are shown; `pending` is a
/// saga whose start the coordinator has not stored yet.
const OPEN: &[&str] = &["scheduled", "running", "compensating", "pending"];

/// How many sagas of one group are in each status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    total: u64,
    counts: BTreeMap<String, u64>,
}

impl Tally {
    /// The tally of `total` sagas from `(status, count)` rows; sagas the rows do not
    /// count are `pending` (their start is not stored yet).
    pub fn of(total: u64, rows: &[(String, i64)]) -> Tally {
        let mut counts = BTreeMap::new();
        for (status, n) in rows {
            let n = u64::try_from(*n).unwrap_or(0);
            if n > 0 {
                *counts.entry(status.clone()).or_insert(0) += n;
            }
        }
        let seen: u64 = counts.values().sum();
        if seen < total {
            counts.insert("pending".into(), total - seen);
        }
        Tally { total, counts }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Sagas in a status they never leave.
    pub fn ended(&self) -> u64 {
        ENDED.iter().map(|s| self.count(s)).sum()
    }

    /// Every saga of the group has ended.
    pub fn done(&self) -> bool {
        self.ended() >= self.total
    }

    pub fn count(&self, status: &str) -> u64 {
        self.counts.get(status).copied().unwrap_or(0)
    }

    /// `completed 4, compensated 2, running 1`: every status with a saga in it, ended
    /// ones first (in [`ENDED`] order), then open ones, then any other by name.
    pub fn counts_text(&self) -> String {
        let known = ENDED.iter().chain(OPEN).map(|s| s.to_string());
        let others = self
            .counts
            .keys()
            .filter(|s| !ENDED.contains(&s.as_str()) && !OPEN.contains(&s.as_str()))
            .cloned();
        let parts: Vec<String> = known
            .chain(others)
            .filter(|s| self.count(s) > 0)
            .map(|s| format!("{s} {}", self.count(&s)))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The plain progress line: `progress: order_fulfillment 3/5 ended (completed 2,
/// compensated 1, running 2) | group_newsletter 0/2 ended (pending 2)`.
pub fn plain_line(groups: &[(String, Tally)]) -> String {
    let parts: Vec<String> = groups
        .iter()
        .map(|(name, t)| {
            format!(
                "{name} {}/{} ended ({})",
                t.ended(),
                t.total(),
                t.counts_text()
            )
        })
        .collect();
    format!("  progress: {}", parts.join(" | "))
}

/// Where progress goes: bars redrawn in place, or a plain line whenever it changes.
pub enum Display {
    Plain {
        last: String,
    },
    Bars {
        /// Owns the bars' shared draw target (stdout) for as long as they are shown.
        _multi: MultiProgress,
        bars: Vec<ProgressBar>,
    },
}

impl Display {
    /// Bars (one per group, on stdout) when `bars`, else plain lines.
    pub fn new(groups: &[(String, u64)], bars: bool) -> Display {
        if !bars {
            return Display::Plain {
                last: String::new(),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let width = groups.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let template =
            format!("{{spinner}} {{prefix:<{width}}} [{{bar:30}}] {{pos}}/{{len}} ended: {{msg}}");
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bars = groups
            .iter()
            .map(|(name, total)| {
                let bar = multi.add(ProgressBar::new(*total));
                bar.set_style(style.clone());
                bar.set_prefix(name.clone());
                bar
            })
            .collect();
        Display::Bars {
            _multi: multi,
            bars,
        }
    }

    /// Shows the latest tallies (in the order of the groups given to [`Display::new`]).
    pub fn update(&mut self, groups: &[(String, Tally)]) {
        match self {
            Display::Plain { last } => {
                let line = plain_line(groups);
                if *last != line {
                    println!("{line}");
                    *last = line;
                }
            }
            Display::Bars { bars, .. } => {
                // The message first: setting the position may redraw, and the
                // counts must not lag behind the bar.
                for (bar, (_, t)) in bars.iter().zip(groups) {
                    bar.set_message(t.counts_text());
                    bar.set_position(t.ended());
                    bar.tick();
                }
            }
        }
    }

    /// Stops redrawing; the bars stay on screen with their last counts.
    pub fn finish(&mut self) {
        if let Display::Bars { bars, .. } = self {
            for bar in bars.iter() {
                bar.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[(&str, i64)]) -> Vec<(String, i64)> {
        r.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    }

    #[test]
    fn sagas_not_stored_yet_are_pending() {
        let t = Tally::of(5, &rows(&[("running", 2)]));
        assert_eq!(t.count("pending"), 3);
        assert_eq!(t.ended(), 0);
        assert!(!t.done());
        assert_eq!(t.counts_text(), "running 2, pending 3");
    }

    #[test]
    fn ended_statuses_come_first_and_empty_ones_are_left_out() {
        let t = Tally::of(
            6,
            &rows(&[
                ("compensated", 1),
                ("completed", 2),
                ("failed", 0),
                ("running", 1),
                ("compensating", 1),
                ("scheduled", 1),
            ]),
        );
        assert_eq!(
            t.counts_text(),
            "completed 2, compensated 1, scheduled 1, running 1, compensating 1"
        );
        assert_eq!(t.ended(), 3);
    }

    #[test]
    fn a_group_is_done_when_every_saga_ended() {
        let t = Tally::of(
            5,
            &rows(&[("completed", 2), ("compensated", 2), ("failed", 1)]),
        );
        assert!(t.done());
        assert_eq!(t.count("pending"), 0);
        let cancelled = Tally::of(1, &rows(&[("cancelled", 1)]));
        assert!(cancelled.done());
    }

    #[test]
    fn an_unknown_status_is_shown_after_the_known_ones_and_is_not_ended() {
        let t = Tally::of(2, &rows(&[("zombie", 1), ("completed", 1)]));
        assert_eq!(t.counts_text(), "completed 1, zombie 1");
        assert!(!t.done());
    }

    #[test]
    fn negative_or_zero_rows_count_nothing() {
        let t = Tally::of(0, &rows(&[("running", -3)]));
        assert_eq!(t.counts_text(), "none");
        assert!(t.done());
    }

    #[test]
    fn the_plain_line_names_each_group_with_its_counts() {
        let groups = vec![
            (
                "order_fulfillment".to_string(),
                Tally::of(5, &rows(&[("completed", 2), ("running", 1)])),
            ),
            ("group_newsletter".to_string(), Tally::of(2, &[])),
        ];
        assert_eq!(
            plain_line(&groups),
            "  progress: order_fulfillment 2/5 ended (completed 2, running 1, pending 2) | group_newsletter 0/2 ended (pending 2)"
        );
    }
}
