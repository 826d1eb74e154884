//! `sagaflow versions`: the version drain, the CLI mirror of `GET /api/versions`. Per
//! definition name and version: loaded from this process's `sagas_dir` or not, the
//! sagas and schedules that hold it, and whether it is safe to unload. Point it at the
//! same `sagas_dir` as the coordinators (docs/operations.md, Upgrading a definition).

use super::database::pool;
use super::definitions::load_catalog;
use crate::config::Settings;
use crate::versions::{self, Report};

/// Prints the report as a table or, with `json`, as `GET /api/versions` answers.
pub async fn show(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let catalog = load_catalog(settings)?;
    let pool = pool(settings).await?;
    let stored = crate::store::versions::stored(&pool).await?;
    let report = versions::report(&versions::loaded(&catalog), &stored);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// The report as a table, with one line per version and a line per saga whose
/// schedules start nothing.
fn table(r: &Report) -> String {
    let mut out = format!(
        "{:<32} {:>7} {:<8} {:>9} {:>7} {:>12} {:>6} {:>9}  safe to unload\n",
        "saga", "version", "loaded", "scheduled", "running", "compensating", "failed", "schedules"
    );
    for v in &r.versions {
        let loaded = match (v.loaded, v.latest) {
            (true, true) => "latest",
            (true, false) => "yes",
            (false, _) => "NO",
        };
        let safe = match &v.reason {
            None => "yes".to_string(),
            Some(why) => format!("no: {why}"),
        };
        out.push_str(&format!(
            "{:<32} {:>7} {:<8} {:>9} {:>7} {:>12} {:>6} {:>9}  {safe}\n",
            v.saga,
            v.version,
            loaded,
            v.scheduled,
            v.running,
            v.compensating,
            v.failed,
            v.schedules
        ));
    }
    for s in &r.unloaded_schedules {
        out.push_str(&format!(
            "{} schedule(s) of `{}` start nothing: no version of it is loaded\n",
            s.schedules, s.saga
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::{Stored, StoredVersion};

    #[test]
    fn the_table_shows_one_line_per_version_and_why_it_is_held() {
        let stored = Stored {
            versions: vec![StoredVersion {
                saga: "order".into(),
                version: 1,
                running: 2,
                ..Default::default()
            }],
            schedules: vec![("nightly".into(), 1)],
        };
        let r = versions::report(&[("order".into(), 1), ("order".into(), 2)], &stored);
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(
            lines[1].starts_with("order ") && lines[1].contains("no: 2 running"),
            "{t}"
        );
        assert!(
            lines[2].contains("latest") && lines[2].ends_with("  yes"),
            "{t}"
        );
        assert_eq!(
            lines[3],
            "1 schedule(s) of `nightly` start nothing: no version of it is loaded"
        );
    }
}
