//! Prometheus text exposition format (version 0.0.4), rendered by hand: a dozen
//! gauges computed per scrape do not justify a metrics registry dependency.

use std::fmt::Write;

/// A page of metric families, rendered in the order they are added.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a gauge family with its help text.
    pub fn gauge(&mut self, name: &str, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} gauge");
        self
    }

    /// Starts a family of another type (`counter`, `histogram`) with its help text.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample whose labels are already rendered (`k="v",…`, escaped).
    pub fn rendered(&mut self, name: &str, labels: &str, value: f64) -> &mut Self {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {}", number(value));
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {}", number(value));
        }
        self
    }

    /// One sample of the family started last.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_labels_and_values() {
        let mut e = Exposition::default();
        e.gauge("sagaflow_sagas", "Sagas by name and status.")
            .sample(
                "sagaflow_sagas",
                &[("saga", "order"), ("status", "running")],
                3.0,
            )
            .gauge("sagaflow_outbox_backlog", "Unpublished outbox rows.")
            .sample("sagaflow_outbox_backlog", &[], 0.0)
            .gauge("sagaflow_timer_lag_seconds", "Lag.")
            .sample("sagaflow_timer_lag_seconds", &[], 1.5);
        assert_eq!(
            e.finish(),
            "# HELP sagaflow_sagas Sagas by name and status.\n\
             # TYPE sagaflow_sagas gauge\n\
             sagaflow_sagas{saga=\"order\",status=\"running\"} 3\n\
             # HELP sagaflow_outbox_backlog Unpublished outbox rows.\n\
             # TYPE sagaflow_outbox_backlog gauge\n\
             sagaflow_outbox_backlog 0\n\
             # HELP sagaflow_timer_lag_seconds Lag.\n\
             # TYPE sagaflow_timer_lag_seconds gauge\n\
             sagaflow_timer_lag_seconds 1.5\n"
        );
    }

    #[test]
    fn escapes_label_values_and_odd_numbers() {
        let mut e = Exposition::default();
        e.sample("m", &[("q", "a\"b\\c\nd")], f64::INFINITY);
        assert_eq!(e.finish(), "m{q=\"a\\\"b\\\\c\\nd\"} +Inf\n");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(-2.0), "-2");
    }
}
