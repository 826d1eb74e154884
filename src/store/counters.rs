//! Monotonic metric counters (see migrations/0003_metric_counters.sql).

use sqlx::PgPool;

use super::Tx;

use super::{ctx, StoreError};

/// One counter increment.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub name: &'static str,
    pub labels: String,
    pub value: f64,
}

/// Prometheus label text (the `labels` column): `k="v",…` with `\`, `"` and newlines escaped.
/// Built in one pass: every history entry of a batch calls it.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let size = pairs.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = String::with_capacity(size);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// Shards per counter (see the migration).
const SHARDS: u32 = 16;

/// The shard a write adds to, from the clock's nanoseconds (see [`add`]).
pub(super) fn shard() -> i16 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % SHARDS)
        .unwrap_or(0) as i16
}

/// Adds `deltas` (sorted by key, so concurrent coordinators lock rows in one order) to
/// one shard picked from the clock's nanoseconds: no two concurrent writers need to
/// share a row, and nothing here needs a random number generator.
pub async fn add(tx: &mut Tx, deltas: &[Delta]) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = deltas.iter().map(|d| d.name).collect();
    let labels: Vec<&str> = deltas.iter().map(|d| d.labels.as_str()).collect();
    let values: Vec<f64> = deltas.iter().map(|d| d.value).collect();
    let shard = shard();
    sqlx::query!(
        "INSERT INTO metric_counters (name, labels, shard, value)
         SELECT n, l, $4, v FROM UNNEST($1::text[], $2::text[], $3::float8[]) AS u(n, l, v) ORDER BY 1, 2
         ON CONFLICT (name, labels, shard) DO UPDATE SET value = metric_counters.value + EXCLUDED.value",
        &names as &[&str],
        &labels as &[&str],
        &values,
        shard
    )
    .execute(tx.conn())
    .await
    .map_err(ctx("add counters"))?;
    Ok(())
}

/// Every counter: (name, rendered labels, value), ordered by name and labels.
pub async fn all(pool: &PgPool) -> Result<Vec<(String, String, f64)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT name, labels, sum(value) AS "value!" FROM metric_counters
           GROUP BY name, labels ORDER BY name, labels"#
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("read counters"))?;
    Ok(rows
        .into_iter()
        .map(|r| (r.name, r.labels, r.value))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_escape_backslashes_quotes_and_newlines() {
        let got = super::labels(&[("activity", "a\\b\"c\nd"), ("le", "+Inf")]);
        assert_eq!(got, r#"activity="a\\b\"c\nd",le="+Inf""#);
        assert_eq!(super::labels(&[]), "");
    }
}
