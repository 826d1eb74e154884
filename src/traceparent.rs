//! W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>) as a plain
//! string: parsed, checked and created here without OpenTelemetry, so the pure core
//! (`saga::state` keeps a saga's traceparent) and the wire code stay free of it.
//! `crate::telemetry` turns a valid one into an OpenTelemetry parent context when
//! export is on.
//!
//! Format: `00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`, lowercase,
//! neither id all zeros. A later version (`01`…`fe`) is read by its first four
//! fields, as the specification asks; `ff` is invalid.

use std::fmt;

/// The AMQP and HTTP header that carries the context.
pub const HEADER: &str = "traceparent";

/// A valid trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

/// Why a header value is not a trace context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed traceparent: {0}")]
pub struct Malformed(&'static str);

impl TraceParent {
    /// Parses a header value (surrounding whitespace allowed).
    pub fn parse(s: &str) -> Result<Self, Malformed> {
        let s = s.trim();
        let mut parts = s.splitn(5, '-');
        let mut next = || parts.next().ok_or(Malformed("fewer than four fields"));
        let (version, trace, parent, flags) = (next()?, next()?, next()?, next()?);
        let rest = parts.next();
        if version.len() != 2 || !is_lower_hex(version) {
            return Err(Malformed("version is not two lowercase hex digits"));
        }
        if version == "ff" {
            return Err(Malformed("version ff is invalid"));
        }
        if version == "00" && rest.is_some() {
            return Err(Malformed("version 00 has exactly four fields"));
        }
        if trace.len() != 32 || !is_lower_hex(trace) {
            return Err(Malformed("trace-id is not 32 lowercase hex digits"));
        }
        if parent.len() != 16 || !is_lower_hex(parent) {
            return Err(Malformed("parent-id is not 16 lowercase hex digits"));
        }
        if flags.len() != 2 || !is_lower_hex(flags) {
            return Err(Malformed("trace-flags is not two lowercase hex digits"));
        }
        let hex = |h: &str| u128::from_str_radix(h, 16).map_err(|_| Malformed("not hex"));
        let trace_id = hex(trace)?;
        let parent_id = hex(parent)? as u64;
        if trace_id == 0 {
            return Err(Malformed("trace-id is all zeros"));
        }
        if parent_id == 0 {
            return Err(Malformed("parent-id is all zeros"));
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags: hex(flags)? as u8,
        })
    }

    /// A new trace: random ids, sampled (so a backend that keeps sampled traces
    /// keeps every saga's).
    pub fn fresh() -> Self {
        let trace_id = uuid::Uuid::new_v4().as_u128();
        let mut parent_id = uuid::Uuid::new_v4().as_u64_pair().0;
        if parent_id == 0 {
            parent_id = 1;
        }
        TraceParent {
            trace_id,
            parent_id,
            flags: 1,
        }
    }

    /// The same trace with another parent (a span of ours).
    pub fn with_parent(self, parent_id: u64) -> Self {
        TraceParent { parent_id, ..self }
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as the 32 hex digits the header and backends show.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The context a new saga keeps: the start's `traceparent` when it is valid (written
/// back in version 00 form), else a fresh one. A malformed header is logged and
/// replaced, never refused: tracing must not stop a saga from starting.
pub fn for_start(header: Option<&str>, saga_id: &str) -> String {
    match header.map(TraceParent::parse) {
        Some(Ok(tp)) => tp.to_string(),
        Some(Err(e)) => {
            tracing::warn!(saga_id, error = %e, "start carries a malformed traceparent; starting a new trace");
            TraceParent::fresh().to_string()
        }
        None => TraceParent::fresh().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_writes_back_the_specifications_example() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tp.parent_id, 0x00f067aa0ba902b7);
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), VALID);
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(TraceParent::parse(&format!("  {VALID} ")).unwrap(), tp);
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert_eq!(TraceParent::parse(later).unwrap().to_string(), VALID);
    }

    #[test]
    fn malformed_values_are_refused_with_why() {
        let bad = [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for b in bad {
            assert!(TraceParent::parse(b).is_err(), "{b:?} accepted");
        }
    }

    #[test]
    fn fresh_contexts_are_valid_sampled_and_distinct() {
        let (a, b) = (TraceParent::fresh(), TraceParent::fresh());
        assert_ne!(a.trace_id, b.trace_id);
        for tp in [a, b] {
            assert!(tp.sampled());
            assert_eq!(TraceParent::parse(&tp.to_string()).unwrap(), tp);
        }
    }

    #[test]
    fn a_start_keeps_a_valid_context_and_replaces_a_malformed_or_missing_one() {
        assert_eq!(for_start(Some(VALID), "s"), VALID);
        for header in [Some("00-nonsense"), Some(""), None] {
            let tp = for_start(header, "s");
            assert!(TraceParent::parse(&tp).is_ok(), "{header:?} gave {tp}");
            assert_ne!(tp, VALID);
        }
    }
}
