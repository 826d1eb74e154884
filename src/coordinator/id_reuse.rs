//! A start for an id that already exists. Repeating the start that created the saga
//! (a redelivery, a client retrying) starts nothing; anything else is refused with the
//! reason, because accepting it silently would lose the caller's input, and would let
//! whoever can publish starts squat a business key (`order-124`) ahead of the real
//! start.

use serde_json::Value;

/// Why a start for an existing saga is refused, or `None` when it repeats the start
/// that created it (same saga name, same input): a redelivered or retried start is
/// absorbed, while a start that would silently lose its input, or a pre-created id
/// squatting a business key, is refused with the reason.
pub fn id_reuse(
    id: &str,
    stored_saga: &str,
    stored_input: &Value,
    saga: &str,
    input: &Value,
) -> Option<String> {
    if stored_saga != saga {
        Some(format!(
            "id `{id}` exists with a different saga name (`{stored_saga}`, this start names `{saga}`)"
        ))
    } else if stored_input != input {
        Some(format!("id `{id}` exists with a different input"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_repeated_start_is_absorbed_and_a_different_one_refused() {
        let input = json!({"order": 1});
        assert_eq!(id_reuse("o-1", "order", &input, "order", &input), None);
        assert_eq!(
            id_reuse("o-1", "order", &input, "order", &json!({"order": 2})).as_deref(),
            Some("id `o-1` exists with a different input")
        );
        let other = id_reuse("o-1", "order", &input, "refund", &input).unwrap();
        assert!(
            other.contains("different saga name (`order`, this start names `refund`)"),
            "{other}"
        );
    }

    #[test]
    fn inputs_compare_as_json_not_as_text() {
        let stored = json!({"a": 1, "b": [1, 2]});
        let same: Value = serde_json::from_str(r#"{ "b": [1,2], "a": 1 }"#).unwrap();
        assert_eq!(id_reuse("x", "s", &stored, "s", &same), None);
    }
}
