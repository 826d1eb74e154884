//! The demo's dashboard: `sagaflow serve` as a child process (as the demo runs the
//! coordinator and the worker), on 127.0.0.1 with the port of `api.listen` when it is
//! free and any free port otherwise, started before the sagas so its URL can be
//! printed while they run.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

use crate::config::Settings;
use crate::tools::launch;

/// How long `sagaflow serve` has to answer `/healthz`.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How often a port that was free is tried again when the server still lost it
/// (another process bound it between the look and the server's bind).
const TRIES: usize = 3;

/// A running `sagaflow serve`.
pub struct Dashboard {
    /// `http://127.0.0.1:<port>/`.
    pub url: String,
    child: Child,
}

impl Dashboard {
    /// Starts `sagaflow serve` (logging to `log`) and waits until it answers.
    pub async fn start(settings: &Settings, log: &Path) -> anyhow::Result<Dashboard> {
        let configured = port_of(&settings.api.listen);
        let mut last = String::new();
        for attempt in 0..TRIES {
            let port = if attempt == 0 { configured } else { 0 };
            let addr = free_address(port)?;
            let env: launch::Env = vec![("SAGAFLOW__API__LISTEN".into(), addr.to_string())];
            let mut child = launch::spawn(&["serve"], &env, log)?;
            match ready(addr, &mut child).await {
                Ok(()) => {
                    return Ok(Dashboard {
                        url: format!("http://{addr}/"),
                        child,
                    })
                }
                Err(why) => {
                    launch::stop(&mut child, Duration::from_secs(5)).await;
                    last = why;
                }
            }
        }
        anyhow::bail!(
            "the dashboard (sagaflow serve) did not start: {last}; see {}",
            log.display()
        )
    }

    /// Stops the server (SIGTERM, then a kill after `grace`).
    pub async fn stop(mut self, grace: Duration) {
        launch::stop(&mut self.child, grace).await;
    }
}

/// The port of `listen` (`host:port`); 8080, the default, when it does not parse.
fn port_of(listen: &str) -> u16 {
    listen
        .parse::<SocketAddr>()
        .map(|a| a.port())
        .unwrap_or(8080)
}

/// 127.0.0.1 with `port` when it can be bound now, else with a port the system says
/// is free (also for `port` 0).
fn free_address(port: u16) -> std::io::Result<SocketAddr> {
    let wanted = SocketAddr::from(([127, 0, 0, 1], port));
    match std::net::TcpListener::bind(wanted) {
        Ok(l) => l.local_addr(),
        Err(_) => std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr(),
    }
}

/// Waits until `GET /healthz` on `addr` answers 200; `Err` when the child exits first
/// or [`READY_WITHIN`] passes.
async fn ready(addr: SocketAddr, child: &mut Child) -> Result<(), String> {
    let until = tokio::time::Instant::now() + READY_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status}) on {addr}"));
        }
        if answers_ok(addr, "/healthz").await {
            return Ok(());
        }
        if tokio::time::Instant::now() > until {
            return Err(format!("no answer on {addr} within {READY_WITHIN:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One HTTP/1.1 GET of `path`: did it answer 200? (No HTTP client in the binary for
/// one probe.)
async fn answers_ok(addr: SocketAddr, path: &str) -> bool {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), get).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_comes_from_api_listen() {
        assert_eq!(port_of("127.0.0.1:9000"), 9000);
        assert_eq!(port_of("0.0.0.0:8081"), 8081);
        assert_eq!(port_of("nonsense"), 8080);
    }

    #[test]
    fn a_taken_port_gives_another_free_one() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let got = free_address(port).unwrap();
        assert_ne!(got.port(), port);
        assert!(got.ip().is_loopback());
        assert!(std::net::TcpListener::bind(got).is_ok());
    }

    #[tokio::test]
    async fn answers_ok_reads_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for reply in [
                "HTTP/1.1 200 OK\r\n\r\n",
                "HTTP/1.1 503 Service Unavailable\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        assert!(answers_ok(addr, "/healthz").await);
        assert!(!answers_ok(addr, "/healthz").await);
        server.await.unwrap();
    }
}
