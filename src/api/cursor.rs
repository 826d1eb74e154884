//! Opaque pagination cursors: the (created_at, id) of the last row of a page, hex
//! encoded so clients treat it as a token and never build one by hand.

use chrono::{DateTime, Utc};

/// Encodes a keyset position.
pub fn encode(created_at: DateTime<Utc>, id: &str) -> String {
    let raw = format!("{}|{id}", created_at.timestamp_micros());
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a cursor made by [`encode`]; `None` for anything else.
pub fn decode(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    if !cursor.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    let raw = String::from_utf8(bytes?).ok()?;
    let (micros, id) = raw.split_once('|')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, id.to_string()))
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
}
