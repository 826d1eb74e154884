//! The per-hop breakdown of a benchmark: the coordinator and the worker children serve
//! their own `/metrics` (`sagaflow_hop_seconds`, see `crate::hops`) on a loopback
//! port; the benchmark reads them before and after the timed window and reports the
//! mean time of each hop in between.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (sum of seconds, count) per `role/hop`, from Prometheus text.
pub type HopTotals = BTreeMap<String, (f64, u64)>;

/// A free loopback address for a child's `health_listen`.
pub fn free_listen() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// Reads the hop totals of the processes at `addrs` (a process that does not answer
/// contributes nothing: the breakdown is then partial, never an error).
pub async fn read(addrs: &[String]) -> HopTotals {
    let mut out = HopTotals::new();
    for addr in addrs {
        if let Ok(text) = get_metrics(addr).await {
            out.extend(parse(&text));
        }
    }
    out
}

/// Mean milliseconds per hop between two readings, with how often each hop ran.
pub fn breakdown(before: &HopTotals, after: &HopTotals) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (hop, (sum, count)) in after {
        let (sum0, count0) = before.get(hop).copied().unwrap_or((0.0, 0));
        let n = count.saturating_sub(count0);
        if n == 0 {
            continue;
        }
        let mean_ms = (sum - sum0) * 1000.0 / n as f64;
        out.insert(
            hop.clone(),
            serde_json::json!({"mean_ms": (mean_ms * 1000.0).round() / 1000.0, "count": n}),
        );
    }
    serde_json::Value::Object(out)
}

/// `sagaflow_hop_seconds_sum` and `_count` lines, keyed `role/hop`.
pub fn parse(text: &str) -> HopTotals {
    let mut out = HopTotals::new();
    for line in text.lines() {
        let (is_sum, rest) = if let Some(r) = line.strip_prefix("sagaflow_hop_seconds_sum{") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("sagaflow_hop_seconds_count{") {
            (false, r)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let (Some(role), Some(hop)) = (label(labels, "role"), label(labels, "hop")) else {
            continue;
        };
        let entry = out.entry(format!("{role}/{hop}")).or_insert((0.0, 0));
        if is_sum {
            entry.0 = value.trim().parse().unwrap_or(0.0);
        } else {
            entry.1 = value.trim().parse().unwrap_or(0);
        }
    }
    out
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// `GET /metrics` over plain HTTP/1.0 (the body, whatever the status).
async fn get_metrics(addr: &str) -> anyhow::Result<String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), io).await??;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE sagaflow_hop_seconds histogram\n\
        sagaflow_hop_seconds_bucket{role=\"worker\",hop=\"handler\",le=\"0.001\"} 3\n\
        sagaflow_hop_seconds_sum{role=\"worker\",hop=\"handler\"} 0.006\n\
        sagaflow_hop_seconds_count{role=\"worker\",hop=\"handler\"} 3\n\
        sagaflow_hop_seconds_sum{role=\"worker\",hop=\"ledger_write\"} 0.002\n\
        sagaflow_hop_seconds_count{role=\"worker\",hop=\"ledger_write\"} 1\n\
        sagaflow_reconnects_total{role=\"worker\"} 0\n";

    #[test]
    fn sums_and_counts_are_read_per_role_and_hop() {
        let t = parse(TEXT);
        assert_eq!(t.len(), 2);
        assert_eq!(t["worker/handler"], (0.006, 3));
        assert_eq!(t["worker/ledger_write"], (0.002, 1));
    }

    #[test]
    fn the_breakdown_is_the_mean_of_the_window() {
        let before = parse(TEXT);
        let mut after = before.clone();
        after.insert("worker/handler".into(), (0.016, 8));
        let b = breakdown(&before, &after);
        assert_eq!(b["worker/handler"]["mean_ms"], 2.0);
        assert_eq!(b["worker/handler"]["count"], 5);
        assert!(
            b.get("worker/ledger_write").is_none(),
            "no runs in the window"
        );
    }
}
