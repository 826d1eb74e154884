//! Running sagaflow processes as children (the demo and the benchmark run the
//! coordinator and worker exactly as a user would), and waiting for them to be ready.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Environment overrides handed to child processes.
pub type Env = Vec<(String, String)>;

/// Starts `sagaflow <args>` (this same executable) with `env`, logging to `log`.
pub fn spawn(args: &[&str], env: &Env, log: &Path) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let file = std::fs::File::create(log)?;
    let err = file.try_clone()?;
    Command::new(exe)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
}

/// Asks a child to stop (SIGTERM) and waits up to `grace` before killing it.
pub async fn stop(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Waits until `queue` exists and has at least one consumer, or `deadline` passes.
pub async fn wait_for_consumer(
    conn: &crate::broker::Connection,
    queue: &str,
    deadline: Duration,
) -> Result<(), String> {
    let until = tokio::time::Instant::now() + deadline;
    let queues = [queue.to_string()];
    loop {
        if let Ok(infos) = crate::broker::inspect::queue_infos(conn, &queues).await {
            if infos.iter().any(|q| q.consumers > 0) {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > until {
            return Err(format!("no consumer on {queue} after {deadline:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
