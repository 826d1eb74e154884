//! Opaque pagination cursors, hex encoded so clients treat them as tokens and never
//! build one by hand: the (created_at, id) of the last saga of a listing page, or
//! the row id and order of the last entry of a history page.

use chrono::{DateTime, Utc};

use crate::store::history::Order;

/// Encodes a keyset position of the saga listing.
pub fn encode(created_at: DateTime<Utc>, id: &str) -> String {
    hex(&format!("{}|{id}", created_at.timestamp_micros()))
}

/// Decodes a cursor made by [`encode`]; `None` for anything else.
pub fn decode(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = unhex(cursor)?;
    let (micros, id) = raw.split_once('|')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, id.to_string()))
}

/// Encodes a position in a saga's history: after row `id`, reading in `order`. The
/// order is part of it so a cursor cannot silently continue the other way.
pub fn encode_history(id: i64, order: Order) -> String {
    hex(&format!("h|{}|{id}", order.as_str()))
}

/// Decodes a cursor made by [`encode_history`]; `None` for anything else (a saga
/// listing cursor included).
pub fn decode_history(cursor: &str) -> Option<(i64, Order)> {
    let raw = unhex(cursor)?;
    let mut parts = raw.strip_prefix("h|")?.splitn(2, '|');
    let order = parts.next()?.parse().ok()?;
    let id: i64 = parts.next()?.parse().ok()?;
    (id >= 0).then_some((id, order))
}

fn hex(raw: &str) -> String {
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(cursor: &str) -> Option<String> {
    if !cursor.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_ids_with_any_characters() {
        let at = DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap();
        for id in ["o-1", "a|b", "ünï code", ""] {
            assert_eq!(decode(&encode(at, id)), Some((at, id.to_string())));
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "zz", "abc", "7c", "41424344"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn history_cursors_round_trip_and_are_not_listing_cursors() {
        for (id, order) in [(0, Order::Asc), (1, Order::Desc), (i64::MAX, Order::Asc)] {
            assert_eq!(
                decode_history(&encode_history(id, order)),
                Some((id, order))
            );
        }
        let at = DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap();
        assert_eq!(decode_history(&encode(at, "o-1")), None);
        assert_eq!(decode(&encode_history(7, Order::Asc)), None);
        for bad in [
            "",
            "zz",
            "h|asc|1",
            &hex("h|up|1"),
            &hex("h|asc|-1"),
            &hex("h|asc|x"),
        ] {
            assert_eq!(decode_history(bad), None, "{bad}");
        }
    }
}
