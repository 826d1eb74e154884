//! `[limits]`: how large and how deep a received document may be, and how long a saga
//! id. Checked where messages come in (the coordinator's input parser, the HTTP API,
//! the client), before anything is stored, so a poison message is refused with the
//! limit it broke instead of bloating a saga row or crashing a decoder later.
//!
//! Pure: no I/O, so every limit is a unit test.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// The deepest `json_depth` accepted. The engine wraps received documents inside its
/// own (a step output sits at `state.steps[i].output`, in a task at
/// `input.steps.<name>`, a buffered signal at `state.signals.<name>[i]`), a few levels
/// more, and serde_json refuses anything deeper than 128 levels: a saga whose state
/// Postgres hands back deeper than that could never be decoded again.
pub const MAX_JSON_DEPTH: usize = 100;

/// Limits on what sagaflow accepts (section `[limits]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest start input, signal payload, result output, heartbeat details or operator
    /// `skip` output, measured as compact JSON.
    pub payload_bytes: usize,
    /// Largest whole message body (AMQP body or HTTP request body) accepted.
    pub message_bytes: usize,
    /// Deepest nesting of objects and arrays in any received JSON document
    /// (`{}` is depth 1, `{"a": []}` depth 2).
    pub json_depth: usize,
    /// Longest saga id, in bytes.
    pub id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            payload_bytes: 1 << 20,
            message_bytes: 2 << 20,
            json_depth: 32,
            id_bytes: 200,
        }
    }
}

/// A document refused by a limit. The text names the limit, e.g.
/// `start input is 104857600 bytes; limits.payload_bytes is 1048576`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Too many bytes. `size` is `None` when the body was cut off while reading (an HTTP
    /// body without `Content-Length`), so only "over the limit" is known.
    #[error("{}", too_large(what, *size, limit, *max))]
    TooLarge {
        what: String,
        size: Option<usize>,
        limit: &'static str,
        max: usize,
    },
    /// Nested deeper than `limits.json_depth`.
    #[error("{what} is nested more than {max} levels deep; limits.json_depth is {max}")]
    TooDeep { what: String, max: usize },
    /// A saga id that is empty, too long or holds control characters.
    #[error("{0}")]
    BadId(String),
}

fn too_large(what: &str, size: Option<usize>, limit: &str, max: usize) -> String {
    match size {
        Some(n) => format!("{what} is {n} bytes; limits.{limit} is {max}"),
        None => format!("{what} is over {max} bytes; limits.{limit} is {max}"),
    }
}

impl Limits {
    /// A whole received body: its size (`message_bytes`), then its nesting
    /// (`json_depth`), both without parsing it.
    pub fn check_message(&self, what: &str, body: &[u8]) -> Result<(), LimitError> {
        if body.len() > self.message_bytes {
            return Err(LimitError::TooLarge {
                what: what.to_string(),
                size: Some(body.len()),
                limit: "message_bytes",
                max: self.message_bytes,
            });
        }
        self.check_depth(what, body)
    }

    /// The nesting of a JSON text (`json_depth`), by a scan that does not parse it.
    pub fn check_depth(&self, what: &str, json: &[u8]) -> Result<(), LimitError> {
        if exceeds_depth(json, self.json_depth) {
            return Err(LimitError::TooDeep {
                what: what.to_string(),
                max: self.json_depth,
            });
        }
        Ok(())
    }

    /// One payload inside a parsed message (`payload_bytes`), as compact JSON.
    pub fn check_payload(&self, what: &str, payload: &Value) -> Result<(), LimitError> {
        let size = json_size(payload);
        if size > self.payload_bytes {
            return Err(LimitError::TooLarge {
                what: what.to_string(),
                size: Some(size),
                limit: "payload_bytes",
                max: self.payload_bytes,
            });
        }
        Ok(())
    }

    /// A saga id: 1 to `id_bytes` bytes, no control characters.
    pub fn check_id(&self, field: &str, id: &str) -> Result<(), LimitError> {
        if id.is_empty() {
            return Err(LimitError::BadId(format!("`{field}` must not be empty")));
        }
        if id.len() > self.id_bytes {
            return Err(LimitError::BadId(format!(
                "`{field}` is {} bytes; limits.id_bytes is {}",
                id.len(),
                self.id_bytes
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(LimitError::BadId(format!(
                "`{field}` must not contain control characters"
            )));
        }
        Ok(())
    }

    /// Why these limits cannot work together, if they cannot: `(key, reason)`.
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        if self.payload_bytes == 0 {
            return Some(("limits.payload_bytes", "expected at least 1".into()));
        }
        if self.message_bytes < self.payload_bytes {
            return Some((
                "limits.message_bytes",
                format!(
                    "expected at least limits.payload_bytes ({}): a message carries its payload",
                    self.payload_bytes
                ),
            ));
        }
        if !(1..=MAX_JSON_DEPTH).contains(&self.json_depth) {
            return Some((
                "limits.json_depth",
                format!(
                    "expected 1 to {MAX_JSON_DEPTH}: the stored saga state wraps payloads a few \
                     levels deeper and must stay under serde_json's limit of 128"
                ),
            ));
        }
        if self.id_bytes == 0 {
            return Some(("limits.id_bytes", "expected at least 1".into()));
        }
        None
    }
}

/// Whether objects and arrays in `json` nest deeper than `max`. A byte scan that skips
/// string contents (brackets inside strings and escaped quotes do not count); it stops
/// at the first level past `max`, so a hostile body costs at most one pass. It does not
/// validate JSON: what it lets through is parsed (and refused if malformed) afterwards.
pub fn exceeds_depth(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The length of `v` as compact JSON, counted without building the text.
pub fn json_size(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a `Value` to an infallible writer cannot fail (its keys are strings).
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "payload_bytes={} message_bytes={} json_depth={} id_bytes={}",
            self.payload_bytes, self.message_bytes, self.json_depth, self.id_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_counts_objects_and_arrays() {
        assert!(!exceeds_depth(b"1", 0));
        assert!(!exceeds_depth(br#""text""#, 0));
        assert!(exceeds_depth(b"{}", 0));
        assert!(!exceeds_depth(b"{}", 1));
        assert!(!exceeds_depth(br#"{"a": [1, {"b": 2}], "c": {}}"#, 3));
        assert!(exceeds_depth(br#"{"a": [1, {"b": 2}], "c": {}}"#, 2));
        // Siblings do not add up: depth goes back down on every close.
        assert!(!exceeds_depth("[[],[],[],[]]".repeat(100).as_bytes(), 2));
    }

    #[test]
    fn depth_exactly_at_the_limit_passes_and_one_over_fails() {
        for max in [1, 2, 32, 100] {
            assert!(!exceeds_depth(nested(max).as_bytes(), max), "{max}");
            assert!(exceeds_depth(nested(max + 1).as_bytes(), max), "{max}");
        }
    }

    #[test]
    fn depth_ignores_brackets_inside_strings() {
        let deep_text = format!(r#"{{"s": "{}"}}"#, "[{".repeat(500));
        assert!(!exceeds_depth(deep_text.as_bytes(), 1));
        // An escaped quote does not end the string; an escaped backslash does not escape
        // the quote after it.
        assert!(!exceeds_depth(br#"{"s": "a\"[[[[{{{{"}"#, 1));
        assert!(exceeds_depth(br#"{"s": "a\\", "t": [[]]}"#, 2));
        assert!(!exceeds_depth(br#"{"s": "a\\", "t": [[]]}"#, 3));
        assert!(!exceeds_depth(br#"{"s": "\\\"[[[["}"#, 1));
        // A key holding brackets.
        assert!(!exceeds_depth(br#"{"[[[": {"}}}": 1}}"#, 2));
        // Multi-byte UTF-8 never looks like a quote or a bracket.
        assert!(!exceeds_depth("{\"é[\": \"ü{\"}".as_bytes(), 1));
    }

    #[test]
    fn depth_scan_agrees_with_serde_json_on_what_it_can_parse() {
        for depth in [1usize, 5, 31, 32, 33] {
            let text = nested(depth);
            let v: Value = serde_json::from_str(&text).unwrap();
            let again = serde_json::to_string(&v).unwrap();
            assert_eq!(exceeds_depth(again.as_bytes(), 32), depth > 32);
        }
    }

    #[test]
    fn a_body_over_message_bytes_is_refused_before_its_depth() {
        let l = Limits {
            message_bytes: 10,
            payload_bytes: 10,
            ..Limits::default()
        };
        let err = l.check_message("start body", &[b'['; 11]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "start body is 11 bytes; limits.message_bytes is 10"
        );
        assert!(l.check_message("start body", b"0123456789").is_ok());
        let deep = nested(33);
        let err = Limits::default()
            .check_message("signal body", deep.as_bytes())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "signal body is nested more than 32 levels deep; limits.json_depth is 32"
        );
        assert!(matches!(err, LimitError::TooDeep { max: 32, .. }));
    }

    #[test]
    fn payload_size_is_compact_json() {
        let l = Limits {
            payload_bytes: 7,
            ..Limits::default()
        };
        // {"a":1} is 7 bytes compact, whatever whitespace it arrived with.
        assert_eq!(json_size(&json!({"a": 1})), 7);
        assert!(l.check_payload("start input", &json!({"a": 1})).is_ok());
        let err = l
            .check_payload("start input", &json!({"a": 10}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "start input is 8 bytes; limits.payload_bytes is 7"
        );
        assert_eq!(json_size(&json!("é")), 4);
        assert_eq!(json_size(&Value::Null), 4);
    }

    #[test]
    fn the_default_payload_limit_is_one_mib() {
        let l = Limits::default();
        let ok = Value::String("x".repeat(l.payload_bytes - 2));
        assert!(l.check_payload("signal payload", &ok).is_ok());
        let over = Value::String("x".repeat(l.payload_bytes - 1));
        assert_eq!(
            l.check_payload("signal payload", &over)
                .unwrap_err()
                .to_string(),
            "signal payload is 1048577 bytes; limits.payload_bytes is 1048576"
        );
    }

    #[test]
    fn ids_are_bounded_in_bytes() {
        let l = Limits::default();
        assert!(l.check_id("id", &"x".repeat(200)).is_ok());
        assert_eq!(
            l.check_id("id", &"x".repeat(201)).unwrap_err().to_string(),
            "`id` is 201 bytes; limits.id_bytes is 200"
        );
        // 100 two-byte characters are 200 bytes; 101 are over.
        assert!(l.check_id("id", &"é".repeat(100)).is_ok());
        assert!(l.check_id("id", &"é".repeat(101)).is_err());
        assert!(l
            .check_id("saga_id", "")
            .unwrap_err()
            .to_string()
            .contains("`saga_id`"));
        assert!(l
            .check_id("id", "a\nb")
            .unwrap_err()
            .to_string()
            .contains("control"));
        let short = Limits {
            id_bytes: 3,
            ..Limits::default()
        };
        assert!(short.check_id("id", "abc").is_ok());
        assert!(short.check_id("id", "abcd").is_err());
    }

    #[test]
    fn a_body_cut_off_while_reading_says_over() {
        let e = LimitError::TooLarge {
            what: "request body".into(),
            size: None,
            limit: "message_bytes",
            max: 5,
        };
        assert_eq!(
            e.to_string(),
            "request body is over 5 bytes; limits.message_bytes is 5"
        );
    }

    #[test]
    fn inconsistent_limits_are_named() {
        let ok = Limits::default();
        assert_eq!(ok.invalid(), None);
        let cases = [
            (
                Limits {
                    message_bytes: 10,
                    payload_bytes: 11,
                    ..ok.clone()
                },
                "limits.message_bytes",
            ),
            (
                Limits {
                    json_depth: 0,
                    ..ok.clone()
                },
                "limits.json_depth",
            ),
            (
                Limits {
                    json_depth: MAX_JSON_DEPTH + 1,
                    ..ok.clone()
                },
                "limits.json_depth",
            ),
            (
                Limits {
                    id_bytes: 0,
                    ..ok.clone()
                },
                "limits.id_bytes",
            ),
            (
                Limits {
                    payload_bytes: 0,
                    ..ok.clone()
                },
                "limits.payload_bytes",
            ),
        ];
        for (l, key) in cases {
            assert_eq!(l.invalid().map(|(k, _)| k), Some(key), "{l}");
        }
    }

    #[test]
    fn the_deepest_allowed_payload_still_decodes_once_wrapped() {
        // A result output at the deepest depth a message allows, wrapped the way the
        // stored state wraps it (`{"steps": [{"output": …}]}`) and then some: serde_json
        // must still read it back.
        let payload = nested(MAX_JSON_DEPTH - 1);
        let wrapped = format!(r#"{{"a": {{"steps": [{{"output": {{"x": [{payload}]}}}}]}}}}"#);
        let v: Result<Value, _> = serde_json::from_str(&wrapped);
        assert!(v.is_ok(), "{v:?}");
    }
}
