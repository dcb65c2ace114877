//! CPU time and peak memory from Linux's `/proc`, for the benches that print CPU per record.
//! `None` where `/proc` cannot be read (off Linux).

use std::time::Duration;

/// `n` ticks of `/proc`'s CPU counters: USER_HZ is 100 on every Linux architecture offport
/// builds for.
fn ticks(n: u64) -> Duration {
    Duration::from_millis(n.saturating_mul(10))
}

/// Busy CPU time so far of the whole machine, every process's (the broker's too): the user,
/// nice, system, irq, softirq and steal ticks of `/proc/stat`.
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    Some(ticks(
        [0, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|&i| fields.get(i))
            .sum(),
    ))
}

/// CPU time (user + system) so far of process `pid` (`"self"` for this one).
pub fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, may hold spaces): state, then 13 more fields
    // to utime and stime; a field may be negative (tpgid without a terminal).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(ticks(field(11)? + field(12)?))
}

/// Peak resident memory of process `pid` (`VmHWM` of `/proc/<pid>/status`), in bytes.
pub fn peak_rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_cpu_grows_with_work_and_the_machine_is_at_least_as_busy() {
        let (machine, own) = (machine_busy().unwrap(), process_cpu("self").unwrap());
        let started = std::time::Instant::now();
        let mut x = 0_u64;
        while started.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let spent = process_cpu("self").unwrap() - own;
        assert!(spent >= Duration::from_millis(50), "{spent:?}");
        assert!(machine_busy().unwrap() - machine >= spent - ticks(2));
        assert!(peak_rss("self").unwrap() > 1 << 20);
    }
}
