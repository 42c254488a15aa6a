//! CPU time of processes (Linux): of a server and every process below it, and of this one.
//!
//! A process's own time is its utime + stime, read from the kernel's per-process CPU clock
//! (`clock_getcpuclockid`, nanoseconds; it covers every thread, exited ones included) and, where
//! that clock cannot be read, from `/proc/<pid>/stat` in clock ticks. Children a process has
//! already waited for are counted through its cutime + cstime (`/proc/<pid>/stat`, clock ticks),
//! so a PostgreSQL backend that exits during a measurement is still counted, with tick resolution.

use std::collections::HashMap;

use anyhow::Context;

/// Clock ticks per second of the times in `/proc/<pid>/stat`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        // USER_HZ, which the kernel reports these times in, is 100 on every Linux architecture.
        100.0
    }
}

/// The fields of `/proc/<pid>/stat` used here.
struct Stat {
    ppid: u32,
    /// utime + stime, in clock ticks.
    own_ticks: u64,
    /// cutime + cstime: the children this process has waited for, in clock ticks.
    reaped_ticks: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state): field n of proc(5) is `fields[n - 3]`.
    let field = |n: usize| -> Option<u64> {
        let v: i64 = fields.get(n - 3)?.parse().ok()?;
        Some(v.max(0) as u64)
    };
    Some(Stat {
        ppid: field(4)? as u32,
        own_ticks: field(14)? + field(15)?,
        reaped_ticks: field(16)? + field(17)?,
    })
}

/// The process CPU clock of `pid` in seconds, if the kernel gives it.
fn process_clock(pid: u32) -> Option<f64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the clock id.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } != 0 {
        return None;
    }
    clock_seconds(clock)
}

fn clock_seconds(clock: libc::clockid_t) -> Option<f64> {
    // SAFETY: an all-zero timespec is valid, and `ts` is a valid place for the answer.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// CPU seconds of `root` and of every process below it, with the children they have waited for.
pub fn tree_seconds(root: u32) -> anyhow::Result<f64> {
    let ticks = ticks_per_second();
    let mut stats: HashMap<u32, Stat> = HashMap::new();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(s) = stat(pid) {
            children.entry(s.ppid).or_default().push(pid);
            stats.insert(pid, s);
        }
    }
    anyhow::ensure!(
        stats.contains_key(&root),
        "no process {root} in /proc (its CPU time can be read only on the same machine)"
    );
    let mut tree = vec![root];
    let mut seconds = 0.0;
    while let Some(pid) = tree.pop() {
        let Some(s) = stats.get(&pid) else { continue };
        let own = process_clock(pid).unwrap_or(s.own_ticks as f64 / ticks);
        seconds += own + s.reaped_ticks as f64 / ticks;
        tree.extend(children.get(&pid).into_iter().flatten());
    }
    Ok(seconds)
}

/// Waits until `pid` (with its children) uses less than 5 % of one core over half a second, at
/// most `limit`: background work an ingest left (sealing, compaction) is then done, so queries
/// measured afterwards do not share the machine with it. Returns the time waited.
pub fn wait_idle(pid: u32, limit: std::time::Duration) -> anyhow::Result<std::time::Duration> {
    let started = std::time::Instant::now();
    let window = std::time::Duration::from_millis(500);
    loop {
        let before = tree_seconds(pid)?;
        std::thread::sleep(window);
        let busy = (tree_seconds(pid)? - before) / window.as_secs_f64();
        if busy < 0.05 || started.elapsed() >= limit {
            return Ok(started.elapsed());
        }
    }
}

/// CPU seconds of this process, every thread.
pub fn own_seconds() -> f64 {
    clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
        .or_else(|| stat(std::process::id()).map(|s| s.own_ticks as f64 / ticks_per_second()))
        .unwrap_or(0.0)
}

/// CPU seconds of a server (when its process is known) and of this process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    server: Option<f64>,
    own: f64,
}

impl Reading {
    /// The reading that opens a measurement: this process's clock last, so that walking `/proc`
    /// is not counted as the load generator's work.
    pub fn before(server: Option<u32>) -> anyhow::Result<Reading> {
        let server = server.map(tree_seconds).transpose()?;
        Ok(Reading {
            server,
            own: own_seconds(),
        })
    }

    /// The reading that closes a measurement: this process's clock first.
    pub fn after(server: Option<u32>) -> anyhow::Result<Reading> {
        let own = own_seconds();
        let server = server.map(tree_seconds).transpose()?;
        Ok(Reading { server, own })
    }

    /// CPU seconds of the server (if known) and of this process from `earlier` to `self`.
    pub fn since(&self, earlier: &Reading) -> (Option<f64>, f64) {
        let server = self.server.zip(earlier.server).map(|(a, b)| a - b);
        (server, self.own - earlier.own)
    }
}
