//! Throwaway PostgreSQL and RabbitMQ servers for the fault tests (`tests/faults.rs`):
//! each test starts its own, crashes it by pid and starts it again, and never touches
//! the machine's own servers (127.0.0.1:5432 and :5672), which other tests use.
//!
//! A `Drop` guard stops every server this module started, by the pid it wrote, and
//! removes its directory, even when the test panics. A missing tool (initdb, pg_ctl,
//! rabbitmq-server, rabbitmqctl, runuser) fails the test with the reason: it never
//! passes silently.
//!
//! Also here: the Jepsen-style accounting of a run (`account`) and the steady start
//! load (`Load`). Waiting is `super::wait_until` / `super::eventually`, as everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sagaflow::broker::Names;
use sagaflow::client::{Client, StartOptions};
use sagaflow::config::Settings;
use sagaflow::saga::definition::Catalog;
use serde_json::Value;
use sqlx::{Connection, PgPool};

use super::{eventually, wait_until, TestEnv};

// ---------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------

/// The blocking twin of `super::wait_until`, for `Drop` and process start-up.
fn wait_blocking(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------
// Process plumbing
// ---------------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bind port 0, read it, let it go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Fails the test when `path` is not an executable file, naming what needs it.
pub fn require(path: &Path, why: &str) {
    use std::os::unix::fs::PermissionsExt;
    let ok = std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    assert!(
        ok,
        "fault tests need {} ({why}); it is missing: install it (Debian: apt-get install postgresql rabbitmq-server util-linux)",
        path.display()
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of a system user (the servers refuse to run as root and switch to it).
fn user_ids(user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == user {
            return (f[2].parse().unwrap(), f[3].parse().unwrap());
        }
    }
    panic!("fault tests need the system user `{user}` (it comes with its server package)");
}

/// Gives `path` (recursively) to `user` when we are root.
pub fn chown_to(path: &Path, user: &str) {
    if !is_root() {
        return;
    }
    let (uid, gid) = user_ids(user);
    fn walk(p: &Path, uid: u32, gid: u32) {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), uid, gid);
            }
        }
    }
    walk(path, uid, gid);
}

/// `program args` run as `user` (through `runuser` when we are root), as a Command.
fn as_user(user: &str, program: &Path) -> Command {
    if is_root() {
        let runuser = Path::new("/usr/sbin/runuser");
        let runuser = if runuser.exists() {
            runuser
        } else {
            Path::new("/sbin/runuser")
        };
        require(
            runuser,
            "to run the servers as their own users when tests run as root",
        );
        let mut c = Command::new(runuser);
        c.arg("-u").arg(user).arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs a command to its end; panics with its output when it fails.
pub fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}): {text}",
        out.status
    );
    text
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether process `pid`'s command line mentions `needle` (never signal a pid that
/// is not ours: a stale pid file could name someone else's process by now).
fn cmdline_has(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

/// Whether process `pid`'s environment mentions `needle` (the beam's command line
/// does not name the node; its environment holds our `RABBITMQ_MNESIA_BASE`).
fn environ_has(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we checked is one of our servers.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Sends `sig` to `pid`, waits up to `grace` for it to go, then SIGKILL and wait.
fn stop_pid(pid: i32, sig: i32, grace: Duration) {
    signal(pid, sig);
    if !wait_blocking(grace, || !alive(pid)) {
        signal(pid, libc::SIGKILL);
        wait_blocking(Duration::from_secs(10), || !alive(pid));
    }
}

fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

pub fn fresh_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sagaflow-{kind}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------

/// A PostgreSQL server of our own: its own data directory and port, trust auth for
/// `postgres` on 127.0.0.1.
pub struct ThrowawayPostgres {
    pub port: u16,
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
}

impl ThrowawayPostgres {
    /// The server's binaries: `/usr/lib/postgresql/<highest version>/bin`, or
    /// `SAGAFLOW_TEST_PG_BIN`.
    fn bin_dir() -> PathBuf {
        if let Ok(b) = std::env::var("SAGAFLOW_TEST_PG_BIN") {
            return PathBuf::from(b);
        }
        let root = Path::new("/usr/lib/postgresql");
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
            .unwrap_or_else(|e| {
                panic!("fault tests need PostgreSQL's server binaries in {}/<version>/bin: {e} (Debian: apt-get install postgresql)", root.display())
            })
            .filter_map(|e| {
                let e = e.ok()?;
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, p)| p.join("initdb").exists())
            .collect();
        versions.sort();
        versions
            .pop()
            .unwrap_or_else(|| panic!("fault tests need initdb: no {}/<version>/bin/initdb (Debian: apt-get install postgresql)", root.display()))
            .1
    }

    /// initdb in a fresh directory, then start on a free port.
    pub fn start() -> ThrowawayPostgres {
        let bin = Self::bin_dir();
        require(&bin.join("initdb"), "to create a throwaway cluster");
        require(
            &bin.join("pg_ctl"),
            "to start and crash the throwaway cluster",
        );
        let dir = fresh_dir("pg");
        let data = dir.join("data");
        chown_to(&dir, "postgres");
        let mut init = as_user("postgres", &bin.join("initdb"));
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(init, "initdb");
        let port = free_port();
        // A process crash keeps what reached the kernel, so fsync buys nothing here.
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 200\nlog_min_messages = warning\n",
            dir.display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let pg = ThrowawayPostgres {
            port,
            dir,
            data,
            bin,
        };
        pg.start_again();
        pg
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Server URL without a database (what `SAGAFLOW_TEST_DATABASE_BASE` holds).
    pub fn base(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    fn pg_ctl(&self) -> Command {
        let mut c = as_user("postgres", &self.bin.join("pg_ctl"));
        c.arg("-D").arg(&self.data);
        c
    }

    /// Immediate stop (`pg_ctl -m immediate stop`): every backend dies at once, no
    /// checkpoint; the next start runs crash recovery.
    pub fn crash(&self) {
        let mut c = self.pg_ctl();
        c.args(["-m", "immediate", "-w", "-t", "60", "stop"]);
        run(c, "pg_ctl -m immediate stop");
    }

    /// Starts the server again: same port, same data (crash recovery if needed).
    pub fn start_again(&self) {
        let mut c = self.pg_ctl();
        c.arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "120", "start"]);
        run(c, "pg_ctl start");
    }

    /// `pg_terminate_backend` of every other client backend; returns how many.
    pub async fn terminate_backends(&self) -> i64 {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the throwaway postgres");
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("pg_terminate_backend");
        let _ = conn.close().await;
        n
    }

    /// The server's log (for failure messages).
    pub fn log_tail(&self) -> String {
        tail(&self.dir.join("postgres.log"), 20)
    }

    fn postmaster_pid(&self) -> Option<i32> {
        read_pid(&self.data.join("postmaster.pid"))
            .filter(|pid| alive(*pid) && cmdline_has(*pid, &self.data.display().to_string()))
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            // SIGQUIT is the immediate shutdown; SIGKILL if it does not go.
            stop_pid(pid, libc::SIGQUIT, Duration::from_secs(10));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------
// RabbitMQ
// ---------------------------------------------------------------------------------

const RABBIT_SBIN: &str = "/usr/lib/rabbitmq/bin";

/// Whether an AMQP 0-9-1 server at `addr` answers the protocol header with a method
/// frame (`connection.start`).
fn amqp_answers(addr: &std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut frame = [0u8; 7];
    s.write_all(b"AMQP\x00\x00\x09\x01").is_ok()
        && s.read_exact(&mut frame).is_ok()
        && frame[0] == 1
}

/// A second RabbitMQ node of our own (`<unique>@localhost`): its own ports, data,
/// logs, pid file, no plugins. Runs as the `rabbitmq` user, so it shares the Erlang
/// cookie in `/var/lib/rabbitmq` with `rabbitmqctl`, and registers with the machine's
/// `epmd` (which is shared and never stopped here).
pub struct ThrowawayRabbit {
    pub node: String,
    pub port: u16,
    pub dist_port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
    starts: usize,
}

impl ThrowawayRabbit {
    /// Starts the node and waits until it accepts AMQP connections.
    pub fn start() -> ThrowawayRabbit {
        Self::start_with("")
    }

    /// `start`, with `extra` appended to the node's `rabbitmq.conf` (a TLS listener:
    /// `tests/common/tls.rs`). The plain listener on `port` stays: it is how start-up
    /// is awaited.
    pub fn start_with(extra: &str) -> ThrowawayRabbit {
        let sbin = Path::new(RABBIT_SBIN);
        require(&sbin.join("rabbitmq-server"), "to run a throwaway broker");
        require(
            Path::new("/usr/sbin/rabbitmqctl"),
            "to stop_app/start_app the throwaway broker",
        );
        let dir = fresh_dir("rmq");
        let tag = dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("sagaflow-rmq-", "");
        for d in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("loopback_users = none\ndisk_free_limit.absolute = 50MB\n{extra}"),
        )
        .unwrap();
        // Our own (empty) rabbitmq-env.conf, so the machine's NODENAME does not apply.
        std::fs::write(dir.join("rabbitmq-env.conf"), "").unwrap();
        chown_to(&dir, "rabbitmq");
        let mut r = ThrowawayRabbit {
            node: format!("sft{tag}@localhost"),
            port: free_port(),
            dist_port: free_port(),
            dir,
            child: None,
            starts: 0,
        };
        r.start_again();
        r
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("node.pid")
    }

    /// Starts the node (again, after `kill9`): same name, ports and data.
    pub fn start_again(&mut self) {
        self.reap();
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("startup-{}.log", self.starts))).unwrap();
        let d = |p: &str| self.dir.join(p).display().to_string();
        let mut c = as_user("rabbitmq", &Path::new(RABBIT_SBIN).join("rabbitmq-server"));
        c.current_dir("/tmp")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_PID_FILE", d("node.pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config"))
            .env("ERL_CRASH_DUMP", d("erl_crash.dump"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run rabbitmq-server: {e}"));
        self.child = Some(child);
        self.wait_amqp();
    }

    /// Waits until the node answers the AMQP protocol header with `connection.start`
    /// (its listener opens only once the broker has booted). Plain blocking I/O, so it
    /// needs no runtime.
    fn wait_amqp(&mut self) {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let mut exited = None;
        let child = &mut self.child;
        let up = wait_blocking(Duration::from_secs(120), || {
            exited = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            exited.is_some() || amqp_answers(&addr)
        });
        if let Some(status) = exited {
            panic!(
                "throwaway rabbitmq-server exited ({status}) before accepting connections:\n{}",
                self.log_tail()
            );
        }
        assert!(
            up,
            "throwaway RabbitMQ {} did not accept AMQP within 120 s:\n{}",
            self.node,
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let startup = self.dir.join(format!("startup-{}.log", self.starts));
        let node_log = self.dir.join("log").join(format!("{}.log", self.node));
        format!("{}\n{}", tail(&startup, 20), tail(&node_log, 20))
    }

    fn rabbitmqctl(&self, args: &[&str]) -> String {
        let mut c = Command::new("/usr/sbin/rabbitmqctl");
        c.current_dir("/tmp").arg("-n").arg(&self.node).args(args);
        run(
            c,
            &format!("rabbitmqctl -n {} {}", self.node, args.join(" ")),
        )
    }

    /// The node's quorum queues whose Ra server is not the leader (every queue of a
    /// single node leads itself once it has recovered), by Ra server name.
    fn quorum_queues_without_leader(&self) -> Vec<String> {
        let states = self.rabbitmqctl(&[
            "eval",
            "lists:foreach(fun(Q) -> {R, _} = amqqueue:get_pid(Q), \
             S = (catch element(1, sys:get_state(R, 2000))), io:format(\"~s ~p~n\", [R, S]) end, \
             [Q || Q <- rabbit_amqqueue:list(), amqqueue:get_type(Q) =:= rabbit_quorum_queue]).",
        ]);
        states
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(name, state)| name.starts_with("%2F_") && *state != "leader")
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Waits until every quorum queue of the node has a leader again after a
    /// `kill9` and `start_again`; returns the queues that needed an election.
    ///
    /// RabbitMQ 3.10's Ra (2.2) can bring a single-node quorum queue back from a
    /// SIGKILL as a follower with an empty log that never elects itself
    /// (rabbitmq/ra#179): every publish to it and every consumer of it then waits for
    /// ever, whatever the client does. The fault suite met it on `<ns>.coordinator`,
    /// declared seconds before the first kill (docs/faults.md). A queue that recovered
    /// elects itself
    /// within an election timeout (about a second); one still without a leader after
    /// 10 s gets the operator's remedy in docs/faults.md, `ra:trigger_election`, and
    /// the test's report names it.
    pub fn elect_leaderless_queues(&self) -> Vec<String> {
        let began = Instant::now();
        let mut elected: Vec<String> = vec![];
        let led = wait_blocking(Duration::from_secs(40), || {
            let stuck = self.quorum_queues_without_leader();
            if began.elapsed() > Duration::from_secs(10) {
                let fresh: Vec<&String> = stuck.iter().filter(|q| !elected.contains(q)).collect();
                for q in fresh {
                    self.rabbitmqctl(&[
                        "eval",
                        &format!("ra:trigger_election({{'{q}', node()}})."),
                    ]);
                    eprintln!(
                        "throwaway RabbitMQ {}: quorum queue {q} came back without a leader \
                         (rabbitmq/ra#179); triggered an election",
                        self.node
                    );
                    elected.push(q.clone());
                }
            }
            stuck.is_empty()
        });
        assert!(
            led,
            "quorum queues of {} still without a leader 40 s after the restart: {:?}",
            self.node,
            self.quorum_queues_without_leader()
        );
        elected
    }

    /// Stops the Ra server of quorum queue `queue`: the queue has no leader, as after
    /// rabbitmq/ra#179 or a lost majority, until [`Self::restart_queue`]. Publishes to
    /// it are neither confirmed nor refused meanwhile (the channel holds them and
    /// confirms them once the queue is back); its consumers stay registered.
    pub fn stop_queue(&self, queue: &str) {
        self.ra(&format!(
            "ra:stop_server(quorum_queues, {{'%2F_{queue}', node()}})."
        ));
    }

    /// Starts again the Ra server [`Self::stop_queue`] stopped.
    pub fn restart_queue(&self, queue: &str) {
        self.ra(&format!(
            "ra:restart_server(quorum_queues, {{'%2F_{queue}', node()}})."
        ));
    }

    fn ra(&self, call: &str) {
        let answer = self.rabbitmqctl(&["eval", call]);
        assert!(answer.trim() == "ok", "{call} on {}: {answer}", self.node);
    }

    /// `rabbitmqctl stop_app`: the Erlang node stays up, the broker application (and
    /// every connection) goes.
    pub fn stop_app(&self) {
        self.rabbitmqctl(&["stop_app"]);
    }

    /// `rabbitmqctl start_app`, then waits until AMQP is accepted.
    pub fn start_app(&mut self) {
        self.rabbitmqctl(&["start_app"]);
        self.wait_amqp();
    }

    /// (queue, ready, unacknowledged) of every queue of the node, from
    /// `rabbitmqctl list_queues`: it also sees what a live consumer holds unacked,
    /// which a passive declare does not. None when the node does not answer.
    pub fn queue_counts(&self) -> Option<Vec<(String, u32, u32)>> {
        let mut c = Command::new("/usr/sbin/rabbitmqctl");
        c.current_dir("/tmp")
            .arg("-n")
            .arg(&self.node)
            .args([
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "messages_ready",
                "messages_unacknowledged",
            ])
            .stdin(Stdio::null());
        let out = c.output().ok().filter(|o| o.status.success())?;
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    Some((
                        f.next()?.to_string(),
                        f.next()?.parse().ok()?,
                        f.next()?.parse().ok()?,
                    ))
                })
                .collect(),
        )
    }

    /// The beam's pid from the pid file, when it is alive and ours.
    pub fn pid(&self) -> Option<i32> {
        let mnesia = format!("RABBITMQ_MNESIA_BASE={}", self.dir.join("mnesia").display());
        read_pid(&self.pid_file())
            .filter(|pid| alive(*pid) && cmdline_has(*pid, "beam") && environ_has(*pid, &mnesia))
    }

    /// SIGKILL of the node (the beam process named in the pid file).
    pub fn kill9(&mut self) {
        let pid = self.pid().expect("the throwaway node's pid");
        signal(pid, libc::SIGKILL);
        assert!(
            wait_blocking(Duration::from_secs(30), || !alive(pid)),
            "rabbitmq node {pid} survived SIGKILL"
        );
        self.reap();
    }

    /// Waits for the wrapper processes of a node that is gone.
    fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            if !wait_blocking(Duration::from_secs(10), || {
                c.try_wait().ok().flatten().is_some()
            }) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for ThrowawayRabbit {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            stop_pid(pid, libc::SIGKILL, Duration::from_secs(10));
        }
        self.reap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------
// A deployment on throwaway servers
// ---------------------------------------------------------------------------------

impl TestEnv {
    /// Like `TestEnv::new`, on the given broker and Postgres server (URL without a
    /// database) instead of the machine's own.
    pub async fn on(sagas: &[(&str, &str)], amqp_url: &str, pg_base: &str) -> TestEnv {
        let tag = format!("sft_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in sagas {
            std::fs::write(dir.join(file), text).unwrap();
        }
        let mut settings = Settings::load(None).expect("settings");
        settings.namespace = tag.clone();
        settings.sagas_dir = dir.clone();
        settings.amqp.url = amqp_url.to_string();
        settings.database.url = format!("{pg_base}/{tag}");
        // The product's outbox lease (10 s), not the 1 s of `TestEnv::new`: under a
        // steady load a 1 s lease expires before the publisher deletes its rows, the
        // sweeper publishes them again, and the duplicates would be counted against
        // the faults.
        settings.coordinator.sweep_interval_ms = 200;
        settings.coordinator.timer_poll_ms = 50;
        let pool = sagaflow::store::connect(&settings.database.url, 10)
            .await
            .expect("database");
        sagaflow::tools::demo::prepare(&pool).await.unwrap();
        let catalog = Catalog::load_dir(&dir).expect("definitions");
        let names = Names::new(&tag);
        TestEnv {
            settings,
            pool,
            names,
            dir,
            catalog,
            tasks: vec![],
            broker: true,
            cleaned: false,
        }
    }

    /// Every queue of this namespace that can hold a message.
    pub fn all_queues(&self) -> Vec<String> {
        let mut queues = vec![self.names.coordinator_queue(), self.names.dlq_coordinator()];
        let mut activities: BTreeSet<String> = self.catalog.activities().into_iter().collect();
        activities.extend(
            sagaflow::tools::demo::ORDER_ACTIVITIES
                .iter()
                .map(|a| a.to_string()),
        );
        for a in &activities {
            queues.push(self.names.task_queue(a));
            queues.push(self.names.dlq(a));
        }
        for ms in sagaflow::broker::topology::DELAY_LEVELS_MS {
            queues.push(self.names.delay(*ms));
        }
        queues
    }
}

// ---------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------

/// A `sagaflow` child process (coordinator or worker) that can be SIGKILLed,
/// SIGSTOPped and restarted. Killed on drop.
pub struct Proc {
    pub name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: tokio::process::Child,
    runs: usize,
}

impl Proc {
    pub fn spawn(env: &TestEnv, name: &str, args: &[&str]) -> Proc {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child_env = env.child_env();
        let child = Self::launch(&env.dir, name, 0, &args, &child_env);
        Proc {
            name: name.to_string(),
            args,
            env: child_env,
            dir: env.dir.clone(),
            child,
            runs: 0,
        }
    }

    fn launch(
        dir: &Path,
        name: &str,
        run: usize,
        args: &[String],
        env: &[(String, String)],
    ) -> tokio::process::Child {
        let file = std::fs::File::create(dir.join(format!("{name}-{run}.log"))).unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
            .args(args)
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGKILL, then the same command again.
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.runs += 1;
        self.child = Self::launch(&self.dir, &self.name, self.runs, &self.args, &self.env);
    }

    pub fn sigstop(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    pub fn sigcont(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    /// Whether it exited by itself (it should not).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // A stopped process ignores nothing but SIGKILL and SIGCONT; SIGKILL works.
            signal(pid as i32, libc::SIGKILL);
        }
    }
}

// ---------------------------------------------------------------------------------
// Load and accounting
// ---------------------------------------------------------------------------------

/// One saga a test starts and what must become of it.
#[derive(Debug, Clone)]
pub struct Expect {
    pub id: String,
    pub input: Value,
    pub status: &'static str,
    /// Activities whose demo effect must exist, each exactly once.
    pub effects: Vec<&'static str>,
    /// Compensations that must have completed.
    pub compensations: i64,
}

/// The scenario mix of `tests/crash.rs`: completed, completed after two flaky
/// attempts, compensated at the charge (non-retryable code), compensated at the ship
/// (non-retryable flag, two compensations).
pub fn scenario(prefix: &str, i: usize) -> Expect {
    use serde_json::json;
    let id = format!("{prefix}-{i}");
    let (input, status, effects, compensations) = match i % 4 {
        0 => (
            json!({}),
            "completed",
            vec!["inventory.reserve", "payments.charge", "shipping.ship"],
            0,
        ),
        1 => (
            json!({"fail": {"payments.charge": {"code": "flaky", "times": 2}}}),
            "completed",
            vec!["inventory.reserve", "payments.charge", "shipping.ship"],
            0,
        ),
        2 => (
            json!({"fail": {"payments.charge": {"code": "card_declined"}}}),
            "compensated",
            vec!["inventory.release", "inventory.reserve"],
            1,
        ),
        _ => (
            json!({"fail": {"shipping.ship": {"code": "carrier_down", "retryable": false}}}),
            "compensated",
            vec![
                "inventory.release",
                "inventory.reserve",
                "payments.charge",
                "payments.refund",
            ],
            2,
        ),
    };
    Expect {
        id,
        input,
        status,
        effects,
        compensations,
    }
}

/// A steady stream of starts: `per_batch` sagas every `every`, published with
/// confirms; a failed publish reconnects and publishes the same batch again (ids make
/// it idempotent), so starts go on across broker outages.
pub struct Load {
    handle: tokio::task::JoinHandle<LoadStats>,
}

#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    pub published: usize,
    pub publish_errors: usize,
    pub took: Duration,
}

impl Load {
    pub fn start(
        amqp_url: String,
        namespace: String,
        sagas: Vec<Expect>,
        per_batch: usize,
        every: Duration,
    ) -> Load {
        let handle = tokio::spawn(async move {
            let began = tokio::time::Instant::now();
            let mut stats = LoadStats::default();
            let mut client: Option<Client> = None;
            let mut next = tokio::time::Instant::now();
            for batch in sagas.chunks(per_batch.max(1)) {
                tokio::time::sleep_until(next).await;
                next += every;
                let starts: Vec<(String, Value, StartOptions)> = batch
                    .iter()
                    .map(|e| {
                        (
                            "order_fulfillment".to_string(),
                            e.input.clone(),
                            StartOptions {
                                id: Some(e.id.clone()),
                                ..Default::default()
                            },
                        )
                    })
                    .collect();
                loop {
                    if client.as_ref().is_none_or(|c| !c.is_connected()) {
                        let connect = Client::connect(&amqp_url, &namespace);
                        match tokio::time::timeout(Duration::from_secs(10), connect).await {
                            Ok(Ok(c)) => client = Some(c),
                            _ => {
                                stats.publish_errors += 1;
                                tokio::time::sleep(Duration::from_millis(250)).await;
                                continue;
                            }
                        }
                    }
                    let publish = client.as_ref().unwrap().start_many(&starts);
                    match tokio::time::timeout(Duration::from_secs(15), publish).await {
                        Ok(Ok(())) => break,
                        _ => {
                            stats.publish_errors += 1;
                            client = None;
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                }
                stats.published += batch.len();
            }
            if let Some(c) = client {
                c.close().await;
            }
            stats.took = began.elapsed();
            stats
        });
        Load { handle }
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    pub async fn finish(self) -> LoadStats {
        self.handle.await.expect("load task")
    }
}

/// Sagas in a terminal status (None while the database does not answer).
pub async fn terminal_count(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM sagas WHERE status IN ('completed','compensated','failed','cancelled')",
    )
    .fetch_one(pool)
    .await
    .ok()
}

/// What a run left behind, Jepsen-style: every saga started is accounted for.
#[derive(Debug, Default)]
pub struct Tally {
    pub test: String,
    pub faults: String,
    pub sagas: usize,
    /// Started, but no row.
    pub lost: Vec<String>,
    /// Not terminal after the settle deadline: (id, status, last history event).
    pub stuck: Vec<(String, String, String)>,
    /// Terminal with another status than expected, or with an expected effect
    /// missing: (id, what).
    pub wrong: Vec<(String, String)>,
    /// Effects that should not be there (an activity the scenario must not apply,
    /// or a compensation count off): (id, what).
    pub dup: Vec<(String, String)>,
    /// Handler re-runs (`demo_effects.calls > 1`): the effect itself is idempotent by
    /// key, so a re-run is allowed (activities run at least once) within a bound.
    pub reruns: i64,
    /// Messages left in the namespace's queues after the settle deadline.
    pub left: Vec<(String, u32)>,
    /// Outbox rows left.
    pub outbox: i64,
    /// Dead letters found, with their reason: (queue, reason, saga).
    pub dead_letters: Vec<(String, String, String)>,
    /// How long the sagas took to settle after the last fault.
    pub settle: Duration,
    pub by_status: BTreeMap<String, usize>,
}

impl Tally {
    pub fn left_total(&self) -> u64 {
        self.left.iter().map(|(_, n)| *n as u64).sum::<u64>() + self.outbox.max(0) as u64
    }

    /// The one-line summary table row, plus the details of anything non-zero.
    pub fn print(&self) {
        println!(
            "FAULTS | {:<28} | faults: {:<40} | sagas {:>4} | lost {:>3} | stuck {:>3} | wrong {:>3} | dup {:>3} | reruns {:>3} | left {:>3} (outbox {}) | settle {:.1}s | {:?}",
            self.test,
            self.faults,
            self.sagas,
            self.lost.len(),
            self.stuck.len(),
            self.wrong.len(),
            self.dup.len(),
            self.reruns,
            self.left_total(),
            self.outbox,
            self.settle.as_secs_f64(),
            self.by_status,
        );
        let few = |v: &dyn std::fmt::Debug| format!("{v:?}");
        if !self.lost.is_empty() {
            println!(
                "  lost (first 10): {}",
                few(&self.lost.iter().take(10).collect::<Vec<_>>())
            );
        }
        if !self.stuck.is_empty() {
            let mut at: BTreeMap<String, usize> = BTreeMap::new();
            for (_, s, e) in &self.stuck {
                *at.entry(format!("{s} after {e}")).or_default() += 1;
            }
            println!("  stuck by status/last event: {at:?}");
            println!(
                "  stuck (first 10): {}",
                few(&self.stuck.iter().take(10).collect::<Vec<_>>())
            );
        }
        if !self.wrong.is_empty() {
            let mut what: BTreeMap<String, usize> = BTreeMap::new();
            for (_, w) in &self.wrong {
                *what.entry(w.clone()).or_default() += 1;
            }
            println!("  wrong: {what:?}");
        }
        if !self.dup.is_empty() {
            println!(
                "  dup (first 10): {}",
                few(&self.dup.iter().take(10).collect::<Vec<_>>())
            );
        }
        if !self.left.is_empty() || self.outbox > 0 {
            println!("  left: queues {:?}, outbox {}", self.left, self.outbox);
        }
        if !self.dead_letters.is_empty() {
            let mut why: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            for (q, r, saga) in &self.dead_letters {
                why.entry((q.clone(), r.clone()))
                    .or_default()
                    .push(saga.clone());
            }
            for ((q, r), sagas) in why {
                let first: Vec<&String> = sagas.iter().take(5).collect();
                println!(
                    "  dead letters: {} in {q}: {r} (sagas {first:?})",
                    sagas.len()
                );
            }
        }
    }

    /// Every count must be zero, and handler re-runs within `max_reruns`.
    pub fn assert_clean(&self, max_reruns: i64) {
        self.print();
        let clean = self.lost.is_empty()
            && self.stuck.is_empty()
            && self.wrong.is_empty()
            && self.dup.is_empty()
            && self.left_total() == 0
            && self.reruns <= max_reruns;
        assert!(
            clean,
            "{}: lost {}, stuck {}, wrong {}, dup {}, reruns {} (at most {max_reruns}), left {} (queues {:?}, outbox {})",
            self.test,
            self.lost.len(),
            self.stuck.len(),
            self.wrong.len(),
            self.dup.len(),
            self.reruns,
            self.left_total(),
            self.left,
            self.outbox
        );
    }
}

/// A query retried while the database does not answer (the test's own pool sees the
/// same outages the services do).
async fn query_retrying<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let what = format!("{what}: the database answers");
    eventually(&what, Duration::from_secs(60), || {
        let query = f();
        async move { query.await.map_err(|e| e.to_string()) }
    })
    .await
}

/// Consumers of `queue` (None when it does not exist or the broker does not answer).
pub async fn consumers(amqp_url: &str, queue: &str) -> Option<u32> {
    tokio::time::timeout(Duration::from_secs(5), consumers_now(amqp_url, queue))
        .await
        .ok()
        .flatten()
}

async fn consumers_now(amqp_url: &str, queue: &str) -> Option<u32> {
    let conn = sagaflow::broker::connect(amqp_url, "sagaflow-faults-consumers")
        .await
        .ok()?;
    let infos = sagaflow::broker::inspect::queue_infos(&conn, &[queue.to_string()]).await;
    conn.close("ok").await;
    infos.ok()?.first().map(|q| q.consumers)
}

/// Messages in `queue` (None when it does not exist).
async fn depth(conn: &sagaflow::broker::Connection, queue: &str) -> Option<u32> {
    tokio::time::timeout(Duration::from_secs(5), super::queue_depth(conn, queue))
        .await
        .ok()
        .flatten()
}

/// Accounts for every saga of `expected`: waits up to `settle` for all of them to be
/// terminal and for the queues and the outbox to drain, then counts what is lost,
/// stuck, wrong, duplicated and left behind.
pub async fn account(
    env: &TestEnv,
    rabbit: Option<&ThrowawayRabbit>,
    test: &str,
    faults: String,
    expected: &[Expect],
    settle: Duration,
) -> Tally {
    let ids: Vec<String> = expected.iter().map(|e| e.id.clone()).collect();
    let began = tokio::time::Instant::now();
    // Settled: every saga terminal. Given up: the deadline, or no saga history written
    // for `QUIET` (no retry or compensation of this scenario mix waits that long), so
    // a run that is stuck for good does not wait out the whole deadline.
    const QUIET: Duration = Duration::from_secs(30);
    let progress = std::sync::Mutex::new((-1i64, tokio::time::Instant::now()));
    let terminal = || async {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT count(*) FROM sagas WHERE id = ANY($1) AND status IN ('completed','compensated','failed','cancelled')",
        )
        .bind(&ids)
        .fetch_one(&env.pool)
        .await
        .ok();
        let last: Option<i64> = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM saga_history")
            .fetch_one(&env.pool)
            .await
            .ok();
        let mut p = progress.lock().unwrap();
        if let Some(last) = last.filter(|l| *l != p.0) {
            *p = (last, tokio::time::Instant::now());
        }
        let settled = n == Some(ids.len() as i64) || p.1.elapsed() > QUIET;
        settled.then_some(()).ok_or(n)
    };
    // Not settled by the deadline is a finding: the accounting below reports it.
    let _ = wait_until(settle, terminal).await;
    let settled = began.elapsed();
    // Queues and outbox: give them the rest of the deadline (at least 10 s) to drain.
    let conn = tokio::time::timeout(
        Duration::from_secs(30),
        sagaflow::broker::connect(&env.settings.amqp.url, "sagaflow-faults-accounting"),
    )
    .await
    .expect("the broker answers the accounting within 30 s")
    .expect("amqp for the accounting");
    let queues = env.all_queues();
    let drain = settle
        .saturating_sub(began.elapsed())
        .max(Duration::from_secs(10));
    let prefix = format!("{}.", env.names.namespace());
    // What is left when drained or at the deadline, whichever comes first.
    let (Ok((left, outbox)) | Err((left, outbox))) = wait_until(drain, || async {
        // On a throwaway node rabbitmqctl is the final word: every queue of the
        // namespace, ready and unacked (a duplicate still being answered is unacked,
        // and a passive declare does not see it).
        let mut left = vec![];
        match rabbit.and_then(|r| tokio::task::block_in_place(|| r.queue_counts())) {
            Some(counts) => {
                for (q, ready, unacked) in counts.into_iter().filter(|c| c.0.starts_with(&prefix)) {
                    if ready > 0 {
                        left.push((q.clone(), ready));
                    }
                    if unacked > 0 {
                        left.push((format!("{q} (unacked)"), unacked));
                    }
                }
            }
            None => {
                for q in &queues {
                    if let Some(n) = depth(&conn, q).await.filter(|n| *n > 0) {
                        left.push((q.clone(), n));
                    }
                }
            }
        }
        let outbox = sagaflow::store::outbox::backlog(&env.pool)
            .await
            .unwrap_or(-1);
        if left.is_empty() && outbox == 0 {
            Ok((left, outbox))
        } else {
            Err((left, outbox))
        }
    })
    .await;

    let mut t = Tally {
        test: test.to_string(),
        faults,
        sagas: expected.len(),
        settle: settled,
        outbox,
        ..Default::default()
    };
    t.left = left;
    for (q, _) in &t.left {
        if q.contains(".dlq.") && !q.ends_with("(unacked)") {
            // A fresh connection: on the one above, lapin can hand a new channel the
            // NOT_FOUND of an earlier passive declare (a delay queue never declared).
            let peek = async {
                let c = sagaflow::broker::connect(&env.settings.amqp.url, "sagaflow-faults-dlq")
                    .await
                    .map_err(|e| e.to_string())?;
                let l = sagaflow::dead_letters::peek(&c, q, 1000).await;
                c.close("ok").await;
                l.map_err(|e| e.to_string())
            };
            let letters = match tokio::time::timeout(Duration::from_secs(30), peek).await {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    t.dead_letters
                        .push((q.clone(), format!("(cannot read: {e})"), String::new()));
                    vec![]
                }
                Err(_) => {
                    t.dead_letters.push((
                        q.clone(),
                        "(cannot read: timeout)".into(),
                        String::new(),
                    ));
                    vec![]
                }
            };
            for d in letters {
                t.dead_letters.push((
                    q.clone(),
                    d.reason.chars().take(120).collect::<String>(),
                    d.about.saga_id.unwrap_or_default(),
                ));
            }
        }
    }
    conn.close("ok").await;

    let rows: Vec<(String, String)> = query_retrying("read sagas", || {
        sqlx::query_as("SELECT id, status FROM sagas WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&env.pool)
    })
    .await;
    let status: BTreeMap<String, String> = rows.into_iter().collect();
    let effects: Vec<(String, String, i32)> = query_retrying("read effects", || {
        sqlx::query_as("SELECT saga_id, activity, calls FROM demo_effects WHERE saga_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&env.pool)
    })
    .await;
    let mut by_saga: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (saga, activity, calls) in effects {
        t.reruns += i64::from(calls - 1);
        by_saga.entry(saga).or_default().insert(activity);
    }
    let comps: Vec<(String, i64)> = query_retrying("read compensations", || {
        sqlx::query_as(
            "SELECT saga_id, count(*) FROM saga_history WHERE event = 'compensation_completed' AND saga_id = ANY($1) GROUP BY saga_id",
        )
        .bind(&ids)
        .fetch_all(&env.pool)
    })
    .await;
    let comps: BTreeMap<String, i64> = comps.into_iter().collect();
    let last_events: Vec<(String, String)> = query_retrying("read last events", || {
        sqlx::query_as(
            "SELECT DISTINCT ON (saga_id) saga_id, event FROM saga_history WHERE saga_id = ANY($1) ORDER BY saga_id, id DESC",
        )
        .bind(&ids)
        .fetch_all(&env.pool)
    })
    .await;
    let last: BTreeMap<String, String> = last_events.into_iter().collect();

    for e in expected {
        let Some(s) = status.get(&e.id) else {
            t.lost.push(e.id.clone());
            continue;
        };
        *t.by_status.entry(s.clone()).or_default() += 1;
        let applied = by_saga.get(&e.id).cloned().unwrap_or_default();
        let want: BTreeSet<String> = e.effects.iter().map(|a| a.to_string()).collect();
        // Effects that must not be there count whatever the status.
        for extra in applied.difference(&want) {
            t.dup
                .push((e.id.clone(), format!("unexpected effect {extra}")));
        }
        let done = comps.get(&e.id).copied().unwrap_or(0);
        if done > e.compensations {
            t.dup.push((
                e.id.clone(),
                format!("{done} compensations, wanted {}", e.compensations),
            ));
        }
        if !matches!(
            s.as_str(),
            "completed" | "compensated" | "failed" | "cancelled"
        ) {
            let ev = last.get(&e.id).cloned().unwrap_or_default();
            t.stuck.push((e.id.clone(), s.clone(), ev));
            continue;
        }
        if s != e.status {
            t.wrong
                .push((e.id.clone(), format!("{s}, wanted {}", e.status)));
        } else if let Some(missing) = want.difference(&applied).next() {
            t.wrong
                .push((e.id.clone(), format!("{s} without the effect of {missing}")));
        } else if done != e.compensations {
            t.wrong.push((
                e.id.clone(),
                format!("{s} with {done} compensations, wanted {}", e.compensations),
            ));
        }
    }
    t
}
