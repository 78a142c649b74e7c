//! How many loops "every core" means: one per CPU in the affinity mask, unless the
//! cgroup's CPU quota allows fewer.
//!
//! The affinity mask (`sched_getaffinity`) already reflects a cgroup's `cpuset`, but not
//! its CPU quota: a container limited to 2 CPUs on a 64-CPU host sees 64 CPUs in its
//! mask, and 64 pinned loops would share 2 CPUs of time, each throttled in turn. The
//! quota is the cgroup v2 `cpu.max` (`max 100000`: none; `200000 100000`: 2 CPUs) or the
//! cgroup v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us` (-1: none), of the process's
//! cgroup (from `/proc/self/cgroup`) or any cgroup above it, whichever is lowest; a
//! fraction rounds up (1.5 CPUs: 2 loops).

use super::builder::Cores;
use std::io;
use std::path::{Path, PathBuf};

/// Where the cgroup files are: the cgroup filesystem's mount and the file naming the
/// process's cgroups (the tests point both at a directory of their own).
#[derive(Clone, Debug)]
pub(crate) struct CgroupFs {
    pub(crate) root: PathBuf,
    pub(crate) self_cgroup: PathBuf,
}

impl Default for CgroupFs {
    fn default() -> Self {
        CgroupFs {
            root: "/sys/fs/cgroup".into(),
            self_cgroup: "/proc/self/cgroup".into(),
        }
    }
}

/// A CPU quota: `quota` microseconds of CPU time every `period`, as set in `file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CpuQuota {
    pub(crate) quota: u64,
    pub(crate) period: u64,
    pub(crate) file: PathBuf,
}

impl CpuQuota {
    /// The CPUs the quota is worth, rounded up (at least 1).
    pub(crate) fn cpus(&self) -> usize {
        usize::try_from(self.quota.div_ceil(self.period))
            .unwrap_or(usize::MAX)
            .max(1)
    }
}

/// How many loops a runtime runs, and why: logged when it starts and exported as the
/// gauge `coreloop_cores_chosen{reason="..."}` (see
/// [`Snapshot::cores_chosen`](crate::metrics::Snapshot::cores_chosen)).
///
/// ```
/// use coreloop::{Cores, Runtime};
/// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
/// let chosen = rt.stats().wait().unwrap().cores_chosen.unwrap();
/// assert_eq!((chosen.loops, chosen.reason), (2, "count"));
/// rt.shutdown().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoresChosen {
    /// Loops started.
    pub loops: usize,
    /// Why that many: `"affinity"` (`Cores::All`: one per CPU this process may run on),
    /// `"cpu_quota"` (`Cores::All`, but the cgroup's CPU quota allows fewer: one per CPU
    /// of quota, rounded up), `"unknown"` (`Cores::All` without a readable affinity
    /// mask: the standard library's `available_parallelism`), `"count"` or `"list"`
    /// (asked for with [`Cores::Count`] or [`Cores::List`]).
    pub reason: &'static str,
    /// The figures behind the choice, in words (the affinity mask, the quota and the
    /// file it came from).
    pub detail: String,
}

/// The core of each shard (`None`: not pinned) for `cores`, given the CPUs in the
/// affinity mask (`available`, empty if unknown), the cgroup's quota, and the standard
/// library's count where the mask is unknown.
pub(crate) fn choose(
    cores: &Cores,
    available: &[usize],
    quota: Option<&CpuQuota>,
    fallback: usize,
) -> io::Result<(Vec<Option<usize>>, CoresChosen)> {
    let quota_words = |q: &CpuQuota| {
        format!(
            "a cgroup CPU quota of {} CPUs ({} us every {} us, {})",
            q.quota as f64 / q.period as f64,
            q.quota,
            q.period,
            q.file.display()
        )
    };
    let mask = || format!("{} CPUs in the affinity mask", available.len());
    let (placement, reason, detail) = match cores {
        Cores::All if available.is_empty() => (
            vec![None; fallback.max(1)],
            "unknown",
            format!("the affinity mask could not be read: available_parallelism() is {fallback}"),
        ),
        Cores::All => match quota {
            Some(q) if q.cpus() < available.len() => (
                available[..q.cpus()].iter().map(|&c| Some(c)).collect(),
                "cpu_quota",
                format!("{}, rounded up, of {}", quota_words(q), mask()),
            ),
            _ => (
                available.iter().map(|&c| Some(c)).collect(),
                "affinity",
                match quota {
                    Some(q) => format!("{}, under {}", mask(), quota_words(q)),
                    None => format!("{}, no cgroup CPU quota", mask()),
                },
            ),
        },
        Cores::Count(n) => (
            (0..*n)
                .map(|i| (!available.is_empty()).then(|| available[i % available.len()]))
                .collect(),
            "count",
            format!("{n} asked for, {}", mask()),
        ),
        Cores::List(list) => {
            if let Some(bad) = list.iter().find(|c| !available.contains(c)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("core {bad} is not one this process may run on: {available:?}"),
                ));
            }
            (
                list.iter().map(|&c| Some(c)).collect(),
                "list",
                format!("cores {list:?} asked for"),
            )
        }
    };
    if placement.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a runtime needs at least one core",
        ));
    }
    if let (Cores::Count(_) | Cores::List(_), Some(q)) = (cores, quota) {
        if placement.len() > q.cpus() {
            log::warn!(
                "coreloop: {} loops asked for share {}",
                placement.len(),
                quota_words(q)
            );
        }
    }
    let chosen = CoresChosen {
        loops: placement.len(),
        reason,
        detail,
    };
    Ok((placement, chosen))
}

/// The lowest CPU quota over the process's cgroups and the cgroups above them, v2 and
/// v1; `None` if there is none (or no cgroup filesystem).
pub(crate) fn cpu_quota(fs: &CgroupFs) -> Option<CpuQuota> {
    let lines = std::fs::read_to_string(&fs.self_cgroup).ok()?;
    let mut lowest: Option<CpuQuota> = None;
    for line in lines.lines() {
        // hierarchy-ID:controller-list:cgroup-path
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let found = if id == "0" && controllers.is_empty() {
            // v2: mounted at the root, or beside the v1 hierarchies as `unified`.
            let mount = [fs.root.clone(), fs.root.join("unified")]
                .into_iter()
                .find(|m| m.join("cgroup.controllers").is_file());
            mount.and_then(|m| lowest_up(&m, path, v2_quota))
        } else if controllers.split(',').any(|c| c == "cpu") {
            // v1: the cpu controller's hierarchy, named by its controllers.
            let mount = [fs.root.join(controllers), fs.root.join("cpu")]
                .into_iter()
                .find(|m| m.is_dir());
            mount.and_then(|m| lowest_up(&m, path, v1_quota))
        } else {
            None
        };
        keep_lowest(&mut lowest, found);
    }
    lowest
}

/// Keeps in `lowest` whichever of it and `found` allows less CPU time.
fn keep_lowest(lowest: &mut Option<CpuQuota>, found: Option<CpuQuota>) {
    let Some(q) = found else { return };
    // quota/period below the other's, without a division.
    let below = |l: &CpuQuota| {
        u128::from(q.quota) * u128::from(l.period) < u128::from(l.quota) * u128::from(q.period)
    };
    if lowest.as_ref().is_none_or(below) {
        *lowest = Some(q);
    }
}

/// The lowest quota `read` finds in `path`'s directory under `mount` and each one above
/// it up to the mount. (Where the mount is the process's own cgroup, as in a container
/// without a cgroup namespace, the directories under it do not exist and the mount's
/// own files are read.)
fn lowest_up(mount: &Path, path: &str, read: fn(&Path) -> Option<CpuQuota>) -> Option<CpuQuota> {
    let mut dir = mount.join(path.trim_start_matches('/'));
    let mut lowest: Option<CpuQuota> = None;
    loop {
        keep_lowest(&mut lowest, read(&dir));
        if dir == mount || !dir.pop() || !dir.starts_with(mount) {
            return lowest;
        }
    }
}

/// cgroup v2: `cpu.max` is `$MAX $PERIOD`, `max` for no limit.
fn v2_quota(dir: &Path) -> Option<CpuQuota> {
    let file = dir.join("cpu.max");
    let text = std::fs::read_to_string(&file).ok()?;
    let (quota, period) = parse_cpu_max(&text)?;
    Some(CpuQuota {
        quota,
        period,
        file,
    })
}

/// cgroup v1: `cpu.cfs_quota_us` (-1 for no limit) over `cpu.cfs_period_us`.
fn v1_quota(dir: &Path) -> Option<CpuQuota> {
    let file = dir.join("cpu.cfs_quota_us");
    let quota = std::fs::read_to_string(&file).ok()?;
    let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
    let (quota, period) = parse_cfs(&quota, &period)?;
    Some(CpuQuota {
        quota,
        period,
        file,
    })
}

/// `cpu.max`'s two numbers; `None` for `max` (no limit) or anything unreadable.
pub(crate) fn parse_cpu_max(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split_whitespace();
    let quota = words.next()?.parse().ok()?; // "max" does not parse: no limit
    let period = match words.next() {
        Some(p) => p.parse().ok()?,
        None => 100_000, // the kernel's default period
    };
    (quota > 0 && period > 0).then_some((quota, period))
}

/// v1's quota and period; `None` for a quota of -1 (no limit) or anything unreadable.
pub(crate) fn parse_cfs(quota: &str, period: &str) -> Option<(u64, u64)> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then_some((quota as u64, period))
}

#[cfg(test)]
mod tests;
