//! CPU time per process during a benchmark's timed window, from `/proc/<pid>/stat`:
//! on a 2-core machine the processes share the cores, so wall time alone does not say
//! which one a change made cheaper. The parsing is pure (a stat line in, numbers
//! out); reading `/proc` is the thin part around it.

use std::collections::HashMap;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: Linux reports them in
/// USER_HZ, which is 100 on every architecture sagaflow runs on (and reading it with
/// `sysconf` would take the library's only `unsafe`).
const TICKS_PER_S: f64 = 100.0;

/// The fields of one `/proc/<pid>/stat` line the benchmark needs; times in ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    /// utime + stime: the process's own threads.
    pub own: u64,
    /// cutime + cstime: its children that exited and were waited for. A Postgres
    /// backend that ends during the window shows up here, in the postmaster's.
    pub reaped: u64,
}

impl ProcStat {
    /// Its own time and that of the children it reaped.
    pub fn total(&self) -> u64 {
        self.own + self.reaped
    }
}

/// Parses a `/proc/<pid>/stat` line: `pid (comm) state ppid …`, where utime, stime,
/// cutime and cstime are fields 14-17. `comm` may hold spaces and parentheses, so it
/// ends at the *last* `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line.get(..open)?.trim().parse().ok()?;
    let comm = line.get(open + 1..close)?.to_string();
    // After the comm: state (field 3) is index 0, so field n is index n - 3.
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        own: field(14)? + field(15)?,
        reaped: field(16)? + field(17)?,
    })
}

/// Every process this one can see (those that vanish while being read are skipped).
pub fn processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|line| parse_stat(&line))
        .collect()
}

/// The processes a benchmark accounts for, by the name its output gives them.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Named single processes (the coordinator and worker children): their own time.
    pub pids: Vec<(String, u32)>,
    /// The postmaster of the database server the benchmark uses, when this machine
    /// can see it: that server's processes (it and its children) are "postgres".
    /// Without it, every process named `postgres` is (another server too).
    pub postmaster: Option<u32>,
}

/// Ticks per named target at one instant.
pub type Sample = HashMap<String, u64>;

/// What `procs` have used so far, per target: each named pid; `postgres` (the
/// server's processes, with the backends the postmaster reaped); `rabbitmq` (the
/// `beam.smp` processes).
pub fn sample(procs: &[ProcStat], targets: &Targets) -> Sample {
    let mut out = Sample::new();
    for (name, pid) in &targets.pids {
        let own = procs.iter().find(|p| p.pid == *pid).map_or(0, |p| p.own);
        out.insert(name.clone(), own);
    }
    let postgres = procs
        .iter()
        .filter(|p| p.comm == "postgres")
        .filter(|p| {
            targets
                .postmaster
                .is_none_or(|pm| p.pid == pm || p.ppid == pm)
        })
        .map(ProcStat::total)
        .sum();
    out.insert("postgres".into(), postgres);
    let rabbit = procs
        .iter()
        .filter(|p| p.comm == "beam.smp")
        .map(ProcStat::total)
        .sum();
    out.insert("rabbitmq".into(), rabbit);
    out
}

/// CPU seconds per target between two samples, rounded to the tick.
pub fn seconds_between(
    before: &Sample,
    after: &Sample,
) -> serde_json::Map<String, serde_json::Value> {
    let mut names: Vec<&String> = after.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let used = after[name].saturating_sub(before.get(name).copied().unwrap_or(0));
            let s = (used as f64 / TICKS_PER_S * 100.0).round() / 100.0;
            (name.clone(), serde_json::json!(s))
        })
        .collect()
}

/// The postmaster of the backend `backend_pid`, if this machine sees that process.
pub fn postmaster_of(procs: &[ProcStat], backend_pid: u32) -> Option<u32> {
    procs
        .iter()
        .find(|p| p.pid == backend_pid && p.comm == "postgres")
        .map(|p| p.ppid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line (`cat /proc/<pid>/stat` of a Postgres checkpointer here), cut
    /// after field 24.
    const CHECKPOINTER: &str = "2228 (postgres) S 2227 2228 2228 0 -1 4194368 599 0 2 0 \
                                8 26 0 0 20 0 1 0 4400 222830592 7724 18446744073709551615";

    #[test]
    fn parses_a_stat_line() {
        let s = parse_stat(CHECKPOINTER).unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 2228,
                comm: "postgres".into(),
                ppid: 2227,
                own: 34,
                reaped: 0,
            }
        );
    }

    #[test]
    fn a_comm_with_spaces_and_parentheses_ends_at_the_last_paren() {
        let line = "42 (my (odd) proc) name)) R 7 42 42 0 -1 0 0 0 0 0 300 45 6 4 20 0 8 0 1 2";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pid, 42);
        assert_eq!(s.comm, "my (odd) proc) name)");
        assert_eq!((s.ppid, s.own, s.reaped), (7, 345, 10));
    }

    #[test]
    fn a_truncated_or_garbled_line_is_none() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("x (y) S 1 1 1 0 -1 0 0 0 0 0 1 1 0 0"), None);
        assert_eq!(parse_stat("12 x S 1"), None);
        assert_eq!(
            parse_stat("12 (x) S 1 1 1 0 -1 0 0 0 0 0 one 1 0 0 20"),
            None
        );
    }

    fn proc(pid: u32, comm: &str, ppid: u32, own: u64, reaped: u64) -> ProcStat {
        ProcStat {
            pid,
            comm: comm.into(),
            ppid,
            own,
            reaped,
        }
    }

    #[test]
    fn samples_children_one_server_and_the_broker() {
        let procs = [
            proc(10, "sagaflow", 1, 50, 0),
            proc(11, "sagaflow", 1, 30, 0),
            proc(100, "postgres", 1, 5, 40),
            proc(101, "postgres", 100, 20, 0),
            // Another Postgres server on the machine: not ours.
            proc(200, "postgres", 1, 900, 900),
            proc(201, "postgres", 200, 900, 0),
            proc(300, "beam.smp", 1, 70, 3),
        ];
        let targets = Targets {
            pids: vec![("coordinator".into(), 10), ("worker".into(), 11)],
            postmaster: Some(100),
        };
        let s = sample(&procs, &targets);
        assert_eq!(s["coordinator"], 50);
        assert_eq!(s["worker"], 30);
        assert_eq!(s["postgres"], 65);
        assert_eq!(s["rabbitmq"], 73);
        let all = Targets {
            postmaster: None,
            ..targets
        };
        assert_eq!(sample(&procs, &all)["postgres"], 65 + 2700);
    }

    #[test]
    fn a_process_gone_from_the_sample_counts_zero() {
        let targets = Targets {
            pids: vec![("worker".into(), 9)],
            postmaster: None,
        };
        assert_eq!(sample(&[], &targets)["worker"], 0);
    }

    #[test]
    fn seconds_are_deltas_in_ticks_of_ten_ms() {
        let before = Sample::from([("coordinator".into(), 100), ("postgres".into(), 7)]);
        let after = Sample::from([
            ("coordinator".into(), 351),
            ("postgres".into(), 57),
            ("rabbitmq".into(), 2),
        ]);
        let s = seconds_between(&before, &after);
        assert_eq!(s["coordinator"], 2.51);
        assert_eq!(s["postgres"], 0.5);
        assert_eq!(s["rabbitmq"], 0.02);
    }

    #[test]
    fn the_postmaster_is_the_parent_of_our_backend() {
        let procs = [proc(5, "postgres", 1, 0, 0), proc(6, "postgres", 5, 0, 0)];
        assert_eq!(postmaster_of(&procs, 6), Some(5));
        assert_eq!(postmaster_of(&procs, 7), None);
    }
}
