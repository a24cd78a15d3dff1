//! Server CPU time from `/proc`: what a target's server spent (user + system) during a measured
//! run, sampled before and after it and divided by the operations answered, so that the report
//! can say how many microseconds of server CPU one order costs.
//!
//! What "the server" is depends on the target ([`CpuSource`]): a process and everything it
//! started (orderd, the bare handler, redis-server, PostgreSQL's postmaster with all its
//! backends), or the engine threads of the bench's own process (`inproc`, everything but the
//! client's runtime threads). A process tree counts each live process's own time and the time of
//! the children it has already reaped (`cutime`/`cstime`), so a backend that exits during the
//! run is still counted. Linux only; elsewhere (or when the process is not on this machine) the
//! figure is unknown and the report leaves the cell empty.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The name the bench's client runtime gives its threads (see `main.rs`); `inproc` counts
/// every other thread of the process as the server's.
pub const CLIENT_THREAD_NAME: &str = "bench-client";

/// Whose CPU time is a target's server CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// Not measurable here (a server on another machine, a target that does not say).
    Unknown,
    /// This process and every process it started, by pid.
    Tree { pid: u32 },
    /// The bench's own process, minus its client threads (named [`CLIENT_THREAD_NAME`]) and its
    /// main thread: the engine of the `inproc` target.
    ThisProcessEngine,
}

/// Clock ticks per second of `/proc`'s times (`getconf CLK_TCK`, nearly always 100).
pub fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf(3) with a valid name has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// The fields of `/proc/<pid>/stat` the bench uses, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
}

impl Stat {
    /// Own time plus that of reaped children.
    fn with_reaped(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }
}

/// Parses one `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so the fields are counted from its last `)`.
pub fn parse_stat(line: &str) -> Result<(String, Stat)> {
    let open = line.find('(').context("no ( in a /proc stat line")?;
    let close = line.rfind(')').context("no ) in a /proc stat line")?;
    if close < open {
        bail!("malformed /proc stat line");
    }
    let comm = line[open + 1..close].to_string();
    // Field 3 (state) is index 0 here; ppid is field 4, utime..cstime are fields 14..17.
    let fields: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("/proc stat line has no field {n}"))?
            .parse::<u64>()
            .with_context(|| format!("field {n} of a /proc stat line"))
    };
    Ok((
        comm,
        Stat {
            ppid: u32::try_from(field(4)?).context("ppid")?,
            utime: field(14)?,
            stime: field(15)?,
            cutime: field(16)?,
            cstime: field(17)?,
        },
    ))
}

fn read_stat(path: &str) -> Result<(String, Stat)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    parse_stat(text.trim_end())
}

/// The command name of process `pid` (`/proc/<pid>/comm`), to check that a pid a peer reported
/// is that peer's on this machine.
pub fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|name| name.trim_end().to_string())
}

/// The parent of process `pid`.
pub fn parent_pid(pid: u32) -> Option<u32> {
    read_stat(&format!("/proc/{pid}/stat"))
        .ok()
        .map(|(_, stat)| stat.ppid)
}

/// Clock ticks of `root` and every live descendant, each with its reaped children's.
fn tree_ticks(root: u32) -> Result<u64> {
    let (_, root_stat) = read_stat(&format!("/proc/{root}/stat"))?;
    let mut children: HashMap<u32, Vec<(u32, Stat)>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").context("list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read: it is simply not counted live
        // (its time moves to its parent's cutime once reaped).
        if let Ok((_, stat)) = read_stat(&format!("/proc/{pid}/stat")) {
            children.entry(stat.ppid).or_default().push((pid, stat));
        }
    }
    let mut total = root_stat.with_reaped();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for (child, stat) in children.get(&pid).into_iter().flatten() {
            total += stat.with_reaped();
            stack.push(*child);
        }
    }
    Ok(total)
}

/// Clock ticks of this process's threads other than the client's (and the main thread).
fn engine_ticks() -> Result<u64> {
    let (_, process) = read_stat("/proc/self/stat")?;
    // The process's own times include every thread, those already ended too.
    let mut total = process.utime + process.stime;
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc/self/task").context("list /proc/self/task")? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok((comm, stat)) = read_stat(&format!("/proc/self/task/{tid}/stat")) {
            if tid == me || comm.starts_with(CLIENT_THREAD_NAME) {
                total = total.saturating_sub(stat.utime + stat.stime);
            }
        }
    }
    Ok(total)
}

impl CpuSource {
    /// The server CPU time used so far, or `None` when it cannot be read.
    pub fn sample(&self) -> Option<Duration> {
        let ticks = match self {
            CpuSource::Unknown => return None,
            CpuSource::Tree { pid } => tree_ticks(*pid),
            CpuSource::ThisProcessEngine => engine_ticks(),
        };
        match ticks {
            Ok(ticks) => Some(Duration::from_secs_f64(
                ticks as f64 / clock_ticks_per_s() as f64,
            )),
            Err(_) => None,
        }
    }
}

/// The server CPU time between two samples, when both were read.
pub fn used(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    match (before, after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line =
            "4242 (tokio (x) y) S 17 4242 4242 0 -1 4194560 1 0 0 0 250 75 9 3 20 0 8 0 1 2 3";
        let (comm, stat) = parse_stat(line).unwrap();
        assert_eq!(comm, "tokio (x) y");
        assert_eq!(
            stat,
            Stat {
                ppid: 17,
                utime: 250,
                stime: 75,
                cutime: 9,
                cstime: 3
            }
        );
        assert!(parse_stat("4242 tokio S 1").is_err());
        assert!(parse_stat("4242 (x) S 1 2 3").is_err());
    }

    #[test]
    fn this_process_and_its_engine_threads_can_be_sampled() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let me = CpuSource::Tree {
            pid: std::process::id(),
        };
        // Burn CPU until the time read moves (ticks are usually 10 ms).
        let before = me.sample().unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after == before && started.elapsed() < Duration::from_secs(5) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            after = me.sample().unwrap();
        }
        std::hint::black_box(x);
        assert!(used(Some(before), Some(after)).unwrap() > Duration::ZERO);
        assert!(CpuSource::ThisProcessEngine.sample().is_some());
        assert_eq!(CpuSource::Unknown.sample(), None);
        assert_eq!(used(None, Some(after)), None);
        assert!(clock_ticks_per_s() > 0);
        assert_eq!(
            parent_pid(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        assert!(process_name(std::process::id()).is_some());
    }
}
