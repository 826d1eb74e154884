//! Value paths into a saga's data: `input.<field>…` (the saga input) or
//! `steps.<step>.<field>…` (an earlier step's output). One syntax for every place a
//! definition points at data: `sleep_until`, `when`, a step's `input` map.
//!
//! A path is checked when the definition loads (it must name an earlier step, so it
//! can never point at data that does not exist yet) and resolved when the step is
//! reached. Resolution reads JSON objects by key and arrays by a decimal index
//! (`steps.send_each.0.id`).

use serde_json::Value;

/// Where a path starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    Input,
    Step(String),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValuePath {
    pub root: Root,
    /// The keys (or array indices) below the root, outermost first.
    pub fields: Vec<String>,
}

impl ValuePath {
    /// Parses `input.a.b` or `steps.s.a`; `steps.s` alone (a step's whole output) is
    /// allowed, `input` alone is the whole input.
    pub fn parse(text: &str) -> Result<ValuePath, String> {
        let parts: Vec<&str> = text.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "expected a dotted path like `input.send_at` or `steps.render.send_at`, got `{text}`"
            ));
        }
        let (root, rest) = match parts.as_slice() {
            ["input", rest @ ..] => (Root::Input, rest),
            ["steps", step, rest @ ..] => (Root::Step((*step).to_string()), rest),
            _ => {
                return Err(format!(
                    "expected a path starting with `input.` or `steps.<step>.`, got `{text}`"
                ))
            }
        };
        Ok(ValuePath {
            root,
            fields: rest.iter().map(|s| (*s).to_string()).collect(),
        })
    }

    /// Refuses a path to a step that is not in `earlier` (the steps that have ended
    /// before the one holding the path).
    pub fn check(&self, earlier: &[&str]) -> Result<(), String> {
        match &self.root {
            Root::Step(step) if !earlier.contains(&step.as_str()) => Err(format!(
                "unknown step reference `{step}`: it must name an earlier step"
            )),
            _ => Ok(()),
        }
    }

    /// The value at this path. `step_output` answers a step's output by name (`None`:
    /// the step has no output).
    pub fn resolve<'a>(
        &self,
        input: &'a Value,
        step_output: impl Fn(&str) -> Option<&'a Value>,
    ) -> Result<&'a Value, String> {
        let mut value = match &self.root {
            Root::Input => input,
            Root::Step(step) => {
                step_output(step).ok_or_else(|| format!("step `{step}` has no output"))?
            }
        };
        for field in &self.fields {
            let next = match value {
                Value::Array(items) => field.parse::<usize>().ok().and_then(|i| items.get(i)),
                other => other.get(field),
            };
            value = next.ok_or_else(|| format!("`{self}` is missing"))?;
        }
        Ok(value)
    }
}

impl std::fmt::Display for ValuePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.root {
            Root::Input => f.write_str("input")?,
            Root::Step(s) => write!(f, "steps.{s}")?,
        }
        for field in &self.fields {
            write!(f, ".{field}")?;
        }
        Ok(())
    }
}

/// A step's `when`: run only when the value at the path is truthy (`!`: falsy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub path: ValuePath,
    pub negate: bool,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, String> {
        let (negate, rest) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        Ok(Condition {
            path: ValuePath::parse(rest)?,
            negate,
        })
    }

    /// Whether the step runs. A missing value is falsy, so `when = "input.express"`
    /// skips when the input has no `express` field.
    pub fn holds<'a>(
        &self,
        input: &'a Value,
        step_output: impl Fn(&str) -> Option<&'a Value>,
    ) -> bool {
        let value = self
            .path
            .resolve(input, step_output)
            .unwrap_or(&Value::Null);
        truthy(value) != self.negate
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.negate {
            f.write_str("!")?;
        }
        write!(f, "{}", self.path)
    }
}

/// Falsy: `null`, `false`, `0`, `""`, `[]`, `{}`. Everything else is truthy.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_roots_and_fields() {
        let p = ValuePath::parse("steps.prepare.authorize.token").unwrap();
        assert_eq!(p.root, Root::Step("prepare".into()));
        assert_eq!(p.fields, vec!["authorize", "token"]);
        assert_eq!(p.to_string(), "steps.prepare.authorize.token");
        assert_eq!(ValuePath::parse("input").unwrap().fields.len(), 0);
        for bad in ["", "input.", "steps", "output.x", "input..a", ".input"] {
            assert!(ValuePath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn check_refuses_steps_that_are_not_earlier() {
        let p = ValuePath::parse("steps.ship.id").unwrap();
        assert!(p.check(&["reserve", "ship"]).is_ok());
        let err = p.check(&["reserve"]).unwrap_err();
        assert!(err.contains("earlier step"), "{err}");
        assert!(ValuePath::parse("input.a").unwrap().check(&[]).is_ok());
    }

    #[test]
    fn resolves_objects_and_array_indices() {
        let input = json!({"order": {"id": 7}, "items": [{"sku": "a"}, {"sku": "b"}]});
        let out = json!({"authorize": {"token": "t"}});
        let get = |s: &str| (s == "prepare").then_some(&out);
        let at = |t: &str| ValuePath::parse(t).unwrap().resolve(&input, get).cloned();
        assert_eq!(at("input.order.id"), Ok(json!(7)));
        assert_eq!(at("input.items.1.sku"), Ok(json!("b")));
        assert_eq!(at("steps.prepare.authorize.token"), Ok(json!("t")));
        assert!(at("input.items.9").unwrap_err().contains("missing"));
        assert!(at("steps.other.x").unwrap_err().contains("no output"));
    }

    #[test]
    fn conditions_follow_truthiness_and_negation() {
        let input = json!({"digital": true, "zero": 0, "empty": "", "list": [1], "none": null});
        let none = |_: &str| None;
        let holds = |t: &str| Condition::parse(t).unwrap().holds(&input, none);
        assert!(holds("input.digital"));
        assert!(!holds("!input.digital"));
        assert!(!holds("input.zero"));
        assert!(!holds("input.empty"));
        assert!(holds("input.list"));
        assert!(!holds("input.none"));
        assert!(!holds("input.missing"), "a missing value is falsy");
        assert!(holds("!input.missing"));
        assert_eq!(
            Condition::parse("!input.a").unwrap().to_string(),
            "!input.a"
        );
    }
}
