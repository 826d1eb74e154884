//! Benchmarks through the real stack: `throughput` (`sagaflow bench`: sagas of a
//! `workload`, offered as `drive` says, after an optional `preload`, with `cpu` time
//! per process and `tally`'s figures), `timers` (many sleeping sagas waking in the
//! same second) and `broker` (the broker's own ceiling for confirmed messages on this
//! machine). The first two run a coordinator (and a worker) as child processes in a
//! fresh namespace and database.

pub mod broker;
pub mod cpu;
pub mod drive;
pub mod fan_out;
pub mod hops;
pub mod preload;
pub mod tally;
pub mod throughput;
pub mod timers;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use crate::broker::{Connection, Names, Subscription};
use crate::config::Settings;
use crate::messages::SagaEvent;
use crate::tools::launch;

pub use drive::Mode;
pub use throughput::{run, BenchArgs};
pub use workload::Workload;

/// A throwaway deployment: namespace, database, definitions directory, children.
pub struct Sandbox {
    pub namespace: String,
    pub db_url: String,
    pub dir: PathBuf,
    /// Each child with what it runs (`coordinator`, `worker`).
    children: Vec<(String, tokio::process::Child)>,
}

impl Sandbox {
    /// Creates the database and writes `definitions` (file name, TOML) to a fresh directory.
    pub async fn new(
        settings: &Settings,
        kind: &str,
        definitions: &[(String, String)],
    ) -> anyhow::Result<Sandbox> {
        let tag = format!("{kind}{}", std::process::id());
        let namespace = format!("{}_{tag}", settings.namespace);
        let db_url = with_database(&settings.database.url, &format!("sagaflow_{tag}"))?;
        let dir = std::env::temp_dir().join(format!("sagaflow-{tag}"));
        std::fs::create_dir_all(&dir)?;
        for (file, text) in definitions {
            std::fs::write(dir.join(file), text)?;
        }
        crate::store::connect(&db_url, 2).await?.close().await;
        Ok(Sandbox {
            namespace,
            db_url,
            dir,
            children: vec![],
        })
    }

    /// Starts `sagaflow <args>` against this sandbox.
    pub fn spawn(&mut self, args: &[&str], extra_env: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut env: launch::Env = vec![
            ("SAGAFLOW__NAMESPACE".into(), self.namespace.clone()),
            ("SAGAFLOW__SAGAS_DIR".into(), self.dir.display().to_string()),
            ("SAGAFLOW__DATABASE__URL".into(), self.db_url.clone()),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let log = self
            .dir
            .join(format!("{}-{}.log", args[0], self.children.len()));
        let child = launch::spawn(args, &env, &log)?;
        self.children.push((args[0].to_string(), child));
        Ok(())
    }

    /// The pid of each running child, named by what it runs.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.id()?)))
            .collect()
    }

    /// Stops the children, drops the database, deletes the queues and the directory.
    pub async fn teardown(
        mut self,
        settings: &Settings,
        activities: &[String],
    ) -> anyhow::Result<()> {
        for (_, child) in self.children.iter_mut() {
            launch::stop(child, Duration::from_secs(10)).await;
        }
        let _ = crate::store::drop_database(&self.db_url).await;
        let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-bench-cleanup").await?;
        crate::broker::topology::delete_namespace(&conn, &Names::new(&self.namespace), activities)
            .await?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// A consumer of `saga.<saga>.*` events, declared before anything starts.
pub async fn subscribe(
    conn: &Connection,
    names: &Names,
    saga: &str,
) -> anyhow::Result<Subscription> {
    Ok(Subscription::saga_events(conn, names, saga).await?)
}

/// Receives events until `n` arrived or `timeout` passed; calls `seen` with each event.
pub async fn collect(
    events: &mut Subscription,
    n: usize,
    timeout: Duration,
    mut seen: impl FnMut(SagaEvent),
) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = 0;
    while got < n {
        let Some(body) = events.next_before(deadline).await else {
            break;
        };
        if let Ok(e) = serde_json::from_slice::<SagaEvent>(&body) {
            got += 1;
            seen(e);
        }
    }
    Ok(got)
}

/// The `p`-quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, _) = url.rsplit_once('/').ok_or_else(|| {
        anyhow::anyhow!(
            "database.url has no database name: {}",
            crate::redact::url(url)
        )
    })?;
    let query = url
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Ok(format!("{base}/{db}{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_keeping_the_query() {
        assert_eq!(
            with_database("postgres://u@h:5432/a?sslmode=disable", "b").unwrap(),
            "postgres://u@h:5432/b?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h/a", "b").unwrap(),
            "postgres://u@h/b"
        );
    }

    #[test]
    fn quantiles_of_sorted_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
