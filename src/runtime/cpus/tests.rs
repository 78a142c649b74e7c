//! The quota files parsed, found in fake cgroup trees (v2, v1, hybrid, a container's own
//! mount), the choice made from them, and a runtime that starts fewer loops for a quota.
use super::*;
use crate::{Cores, Runtime};
use std::fs;

/// A fake cgroup filesystem in a directory of its own, removed when dropped.
struct FakeCgroup {
    dir: PathBuf,
}

impl FakeCgroup {
    fn new(name: &str, self_cgroup: &str) -> FakeCgroup {
        let dir =
            std::env::temp_dir().join(format!("coreloop-cgroup-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("root")).unwrap();
        fs::write(dir.join("self_cgroup"), self_cgroup).unwrap();
        FakeCgroup { dir }
    }

    /// Writes `text` to `file` under the fake mount, making its directories.
    fn file(&self, file: &str, text: &str) -> &Self {
        let path = self.dir.join("root").join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    fn fs(&self) -> CgroupFs {
        CgroupFs {
            root: self.dir.join("root"),
            self_cgroup: self.dir.join("self_cgroup"),
        }
    }

    fn quota(&self) -> Option<(u64, u64, String)> {
        cpu_quota(&self.fs()).map(|q| {
            let file = q.file.strip_prefix(self.dir.join("root")).unwrap();
            (q.quota, q.period, file.display().to_string())
        })
    }
}

impl Drop for FakeCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn quota_files_parse_as_the_kernel_writes_them() {
    let v2: &[(&str, Option<(u64, u64)>)] = &[
        ("max 100000\n", None),
        ("200000 100000\n", Some((200_000, 100_000))),
        ("150000 100000", Some((150_000, 100_000))),
        ("50000 50000\n", Some((50_000, 50_000))),
        ("100000\n", Some((100_000, 100_000))),
        ("max\n", None),
        ("", None),
        ("0 100000\n", None),
        ("100000 0\n", None),
        ("-1 100000\n", None),
        ("lots 100000\n", None),
        ("100000 often\n", None),
    ];
    for (text, want) in v2 {
        assert_eq!(parse_cpu_max(text), *want, "{text:?}");
    }
    type Case = (&'static str, &'static str, Option<(u64, u64)>);
    let v1: &[Case] = &[
        ("-1\n", "100000\n", None),
        ("100000\n", "100000\n", Some((100_000, 100_000))),
        ("150000\n", "100000\n", Some((150_000, 100_000))),
        ("0\n", "100000\n", None),
        ("100000\n", "0\n", None),
        ("x\n", "100000\n", None),
        ("100000\n", "\n", None),
    ];
    for (quota, period, want) in v1 {
        assert_eq!(parse_cfs(quota, period), *want, "{quota:?} {period:?}");
    }
    let cpus = |quota, period| {
        CpuQuota {
            quota,
            period,
            file: PathBuf::new(),
        }
        .cpus()
    };
    assert_eq!(cpus(100_000, 100_000), 1);
    assert_eq!(cpus(150_000, 100_000), 2); // rounded up
    assert_eq!(cpus(200_000, 100_000), 2);
    assert_eq!(cpus(200_001, 100_000), 3);
    assert_eq!(cpus(10_000, 100_000), 1); // a tenth of a CPU still runs one loop
}

#[test]
fn v2_quota_is_the_lowest_of_the_cgroup_and_those_above_it() {
    let cg = FakeCgroup::new("v2", "0::/system.slice/app.service\n");
    cg.file("cgroup.controllers", "cpu memory\n")
        .file("system.slice/app.service/cpu.max", "max 100000\n");
    assert_eq!(cg.quota(), None, "no limit anywhere");
    cg.file("system.slice/cpu.max", "150000 100000\n");
    assert_eq!(
        cg.quota(),
        Some((150_000, 100_000, "system.slice/cpu.max".into())),
        "the parent's limit applies to its children"
    );
    cg.file("system.slice/app.service/cpu.max", "300000 100000\n");
    assert_eq!(cg.quota().unwrap().2, "system.slice/cpu.max");
    // Compared exactly, not by the CPUs they round up to: 1.2 is below 1.5.
    cg.file("system.slice/app.service/cpu.max", "120000 100000\n");
    assert_eq!(cg.quota().unwrap().0, 120_000);
    cg.file("system.slice/app.service/cpu.max", "100000 100000\n");
    assert_eq!(
        cg.quota(),
        Some((100_000, 100_000, "system.slice/app.service/cpu.max".into()))
    );
}

#[test]
fn a_container_sees_its_own_cgroup_at_the_root() {
    // With a cgroup namespace the process's cgroup is "/" and the mount is its own.
    let cg = FakeCgroup::new("ns", "0::/\n");
    cg.file("cgroup.controllers", "cpu\n")
        .file("cpu.max", "200000 100000\n");
    assert_eq!(cg.quota(), Some((200_000, 100_000, "cpu.max".into())));
}

#[test]
fn v1_quota_is_found_in_the_cpu_hierarchy_and_in_a_mount_of_the_cgroup_itself() {
    let cg = FakeCgroup::new(
        "v1",
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
    );
    cg.file("cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
        .file("cpu,cpuacct/cpu.cfs_period_us", "100000\n")
        .file("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n")
        .file("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
        .file("memory/docker/abc/cpu.cfs_quota_us", "1\n"); // not the cpu hierarchy
    assert_eq!(
        cg.quota(),
        Some((
            50_000,
            100_000,
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us".into()
        ))
    );
    // Docker without a cgroup namespace: /proc/self/cgroup names the host's path, but
    // the container's mount is that cgroup itself, so the path is not under it.
    let cg = FakeCgroup::new("v1-own-mount", "4:cpu,cpuacct:/docker/abc\n");
    cg.file("cpu/cpu.cfs_quota_us", "300000\n")
        .file("cpu/cpu.cfs_period_us", "100000\n");
    assert_eq!(
        cg.quota(),
        Some((300_000, 100_000, "cpu/cpu.cfs_quota_us".into()))
    );
}

#[test]
fn hybrid_hierarchies_take_the_quota_from_v1() {
    // As on this development VM: v1 controllers, and a v2 `unified` mount without cpu.
    let cg = FakeCgroup::new("hybrid", "1:cpu:/\n0::/\n");
    cg.file("unified/cgroup.controllers", "\n")
        .file("cpu/cpu.cfs_quota_us", "-1\n")
        .file("cpu/cpu.cfs_period_us", "100000\n");
    assert_eq!(cg.quota(), None);
    cg.file("cpu/cpu.cfs_quota_us", "250000\n");
    assert_eq!(cg.quota().map(|q| q.0), Some(250_000));
}

#[test]
fn no_cgroup_files_mean_no_quota() {
    let cg = FakeCgroup::new("none", "0::/a\n");
    assert_eq!(cg.quota(), None, "no v2 mount");
    let missing = CgroupFs {
        root: "/nonexistent/cgroup".into(),
        self_cgroup: "/nonexistent/self".into(),
    };
    assert_eq!(cpu_quota(&missing), None);
    let cg = FakeCgroup::new("garbage", "not a cgroup line\n::\n0::\n");
    cg.file("cgroup.controllers", "cpu\n")
        .file("cpu.max", "max 100000\n");
    assert_eq!(cg.quota(), None);
}

fn quota(quota: u64, period: u64) -> CpuQuota {
    CpuQuota {
        quota,
        period,
        file: "/sys/fs/cgroup/cpu.max".into(),
    }
}

#[test]
fn every_core_means_no_more_loops_than_the_quota_is_worth() {
    let host: Vec<usize> = (0..64).collect();
    let pick = |q: Option<&CpuQuota>| {
        let (placement, chosen) = choose(&Cores::All, &host, q, 64).unwrap();
        (placement, chosen.loops, chosen.reason)
    };
    let (placement, loops, reason) = pick(Some(&quota(200_000, 100_000)));
    assert_eq!(
        (placement, loops, reason),
        (vec![Some(0), Some(1)], 2, "cpu_quota")
    );
    assert_eq!(pick(Some(&quota(150_000, 100_000))).1, 2);
    assert_eq!(pick(Some(&quota(10_000, 100_000))).1, 1);
    assert_eq!(pick(Some(&quota(6_400_000, 100_000))).1, 64);
    assert_eq!(pick(Some(&quota(6_400_000, 100_000))).2, "affinity");
    assert_eq!(pick(Some(&quota(9_900_000, 100_000))).1, 64);
    let (placement, loops, reason) = pick(None);
    assert_eq!((loops, reason), (64, "affinity"));
    assert_eq!(placement[63], Some(63));
    // The quota's cores are the first of the mask, whatever their ids.
    let mask = [3, 5, 7, 9];
    let (placement, chosen) =
        choose(&Cores::All, &mask, Some(&quota(200_000, 100_000)), 4).unwrap();
    assert_eq!(placement, vec![Some(3), Some(5)]);
    assert!(
        chosen.detail.contains("2 CPUs") && chosen.detail.contains("4 CPUs in the affinity mask"),
        "{}",
        chosen.detail
    );
    // No mask: the standard library's count, unpinned.
    let (placement, chosen) = choose(&Cores::All, &[], None, 3).unwrap();
    assert_eq!((placement, chosen.reason), (vec![None; 3], "unknown"));
}

#[test]
fn an_explicit_choice_is_kept_whatever_the_quota() {
    let host: Vec<usize> = (0..4).collect();
    let q = quota(100_000, 100_000);
    let (placement, chosen) = choose(&Cores::Count(6), &host, Some(&q), 4).unwrap();
    assert_eq!(placement.len(), 6);
    assert_eq!((chosen.loops, chosen.reason), (6, "count"));
    assert_eq!(placement[4], Some(0)); // wrapped around
    let (placement, chosen) = choose(&Cores::List(vec![2, 3]), &host, Some(&q), 4).unwrap();
    assert_eq!((placement, chosen.reason), (vec![Some(2), Some(3)], "list"));
    let e = choose(&Cores::List(vec![9]), &host, None, 4).unwrap_err();
    assert!(e.to_string().contains("core 9"), "{e}");
    let e = choose(&Cores::Count(0), &host, None, 4).unwrap_err();
    assert!(e.to_string().contains("at least one core"), "{e}");
}

#[test]
fn a_quota_of_one_cpu_starts_one_loop_and_says_why_in_the_metrics() {
    let available = core_affinity::get_core_ids().map_or(0, |c| c.len());
    let cg = FakeCgroup::new("runtime", "0::/app\n");
    cg.file("cgroup.controllers", "cpu\n")
        .file("app/cpu.max", "100000 100000\n");
    let rt = Runtime::builder()
        .cores(Cores::All)
        .cgroup_fs(cg.dir.join("root"), cg.dir.join("self_cgroup"))
        .build()
        .unwrap();
    assert_eq!(rt.shards(), 1, "{available} CPUs in the mask, a quota of 1");
    let snap = rt.stats().wait().unwrap();
    let chosen = snap.cores_chosen.clone().unwrap();
    assert_eq!(chosen.loops, 1);
    let text = snap.to_prometheus(false);
    if available >= 2 {
        assert_eq!(chosen.reason, "cpu_quota", "{}", chosen.detail);
        assert!(chosen.detail.contains("app/cpu.max"), "{}", chosen.detail);
        assert!(
            text.contains("# TYPE coreloop_cores_chosen gauge\ncoreloop_cores_chosen{reason=\"cpu_quota\"} 1\n"),
            "{text}"
        );
    }
    rt.shutdown().unwrap();
    // Without the quota, every CPU of the mask runs a loop.
    cg.file("app/cpu.max", "max 100000\n");
    let rt = Runtime::builder()
        .cgroup_fs(cg.dir.join("root"), cg.dir.join("self_cgroup"))
        .build()
        .unwrap();
    assert_eq!(rt.shards(), available.max(1));
    let chosen = rt.stats().wait().unwrap().cores_chosen.unwrap();
    assert_eq!(
        chosen.reason,
        if available > 0 { "affinity" } else { "unknown" }
    );
    rt.shutdown().unwrap();
}
