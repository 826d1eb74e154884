//! The finished elements of `for_each` steps (`saga_elements`): written with the
//! saga's state in the coordinator's transaction, read back when the step completes
//! (its output) and while it is undone (the next completed elements). Why rows and
//! not the state: see `saga::machine::fan_out`.

use super::{ctx, StoreError, Tx};
use crate::saga::machine::{CompletedElement, ElementWrite};

/// Writes element rows, each tagged with its saga id, in two set-based statements.
/// A completion written again (it cannot be, but a replayed batch would) is kept.
pub async fn write(tx: &mut Tx, rows: &[(String, ElementWrite)]) -> Result<(), StoreError> {
    let mut done = Completed::default();
    let mut undone = Undone::default();
    for (id, w) in rows {
        match w {
            ElementWrite::Completed {
                step,
                generation,
                index,
                output,
                seq,
            } => {
                done.ids.push(id.as_str());
                done.steps.push(*step as i32);
                done.generations.push(*generation as i32);
                done.indexes.push(*index as i32);
                done.seqs.push(*seq as i32);
                done.outputs.push(output);
            }
            ElementWrite::Compensated {
                step,
                generation,
                index,
            } => {
                undone.ids.push(id.as_str());
                undone.steps.push(*step as i32);
                undone.generations.push(*generation as i32);
                undone.indexes.push(*index as i32);
            }
        }
    }
    if !done.ids.is_empty() {
        sqlx::query!(
            "INSERT INTO saga_elements (saga_id, step, generation, idx, status, seq, output)
             SELECT u.saga_id, u.step, u.generation, u.idx, 'completed', u.seq, u.output
             FROM UNNEST($1::text[], $2::int4[], $3::int4[], $4::int4[], $5::int4[], $6::jsonb[])
                  AS u(saga_id, step, generation, idx, seq, output)
             ON CONFLICT (saga_id, step, generation, idx) DO NOTHING",
            &done.ids as &[&str],
            &done.steps,
            &done.generations,
            &done.indexes,
            &done.seqs,
            &done.outputs as &[&serde_json::Value]
        )
        .execute(tx.conn())
        .await
        .map_err(ctx("write completed elements"))?;
    }
    if !undone.ids.is_empty() {
        sqlx::query!(
            "UPDATE saga_elements e SET status = 'compensated'
             FROM UNNEST($1::text[], $2::int4[], $3::int4[], $4::int4[])
                  AS u(saga_id, step, generation, idx)
             WHERE (e.saga_id, e.step, e.generation, e.idx) = (u.saga_id, u.step, u.generation, u.idx)",
            &undone.ids as &[&str],
            &undone.steps,
            &undone.generations,
            &undone.indexes
        )
        .execute(tx.conn())
        .await
        .map_err(ctx("write compensated elements"))?;
    }
    Ok(())
}

#[derive(Default)]
struct Completed<'a> {
    ids: Vec<&'a str>,
    steps: Vec<i32>,
    generations: Vec<i32>,
    indexes: Vec<i32>,
    seqs: Vec<i32>,
    outputs: Vec<&'a serde_json::Value>,
}

#[derive(Default)]
struct Undone<'a> {
    ids: Vec<&'a str>,
    steps: Vec<i32>,
    generations: Vec<i32>,
    indexes: Vec<i32>,
}

/// Every stored element output of one `for_each` step, in element order.
pub async fn outputs(
    tx: &mut Tx,
    saga_id: &str,
    step: usize,
    generation: u32,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let rows = sqlx::query_scalar!(
        r#"SELECT output AS "output!" FROM saga_elements
           WHERE saga_id = $1 AND step = $2 AND generation = $3
           ORDER BY idx"#,
        saga_id,
        step as i32,
        generation as i32
    )
    .fetch_all(tx.conn())
    .await
    .map_err(ctx("read element outputs"))?;
    Ok(rows)
}

/// Up to `limit` completed elements of one step not yet undone, latest-completed
/// first, leaving out `exclude`.
pub async fn to_undo(
    tx: &mut Tx,
    saga_id: &str,
    step: usize,
    generation: u32,
    limit: u32,
    exclude: &[u32],
) -> Result<Vec<CompletedElement>, StoreError> {
    let exclude: Vec<i32> = exclude.iter().map(|i| *i as i32).collect();
    let rows = sqlx::query!(
        r#"SELECT idx, seq, output FROM saga_elements
           WHERE saga_id = $1 AND step = $2 AND generation = $3 AND status = 'completed'
             AND NOT (idx = ANY($4::int4[]))
           ORDER BY seq DESC LIMIT $5"#,
        saga_id,
        step as i32,
        generation as i32,
        &exclude,
        i64::from(limit)
    )
    .fetch_all(tx.conn())
    .await
    .map_err(ctx("read elements to undo"))?;
    Ok(rows
        .into_iter()
        .map(|r| CompletedElement {
            index: r.idx.max(0) as u32,
            output: r.output,
            seq: r.seq.max(0) as u32,
        })
        .collect())
}
