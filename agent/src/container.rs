//! What a container allows its host to be: the container id, and the CPU and
//! memory limits of the agent's cgroup (v1 or v2), which become the host's
//! capacity in its facts. A container started with `--cpus 1 --memory 256m` on
//! a 64-core machine is a 1-CPU, 256 MiB host to Drover.
//!
//! Everything is read below a root directory given as an argument
//! (`proc/self/cgroup`, `proc/self/mountinfo` and the cgroup files under the
//! mount points it names), so that tests build fake trees; the parsers are
//! plain functions over file contents.
//!
//! The agent's cgroup directory is found the way the kernel exposes it: the
//! controller's mount (from mountinfo) with its root, and the agent's cgroup
//! path relative to that root. Inside a container the mount root usually *is*
//! the container's cgroup, so the directory is the mount point itself. Limits
//! set higher up (a systemd slice, a Kubernetes pod) also count: every visible
//! ancestor up to the mount point is read and the lowest limit wins.

use std::fs;
use std::path::{Path, PathBuf};

/// A CPU bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    /// The limit in CPUs, e.g. 1.5.
    pub fn cpus(self) -> f64 {
        self.quota_us as f64 / self.period_us as f64
    }

    /// Whole CPUs the limit amounts to, rounded up (1.5 CPUs can keep two
    /// threads busy part of the time), at least 1.
    pub fn whole_cpus(self) -> u32 {
        let cpus = self.quota_us.div_ceil(self.period_us).max(1);
        u32::try_from(cpus).unwrap_or(u32::MAX)
    }
}

/// The limits of the agent's cgroup; `None` where there is no limit (or it
/// cannot be read).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    pub cpu_quota: Option<CpuQuota>,
    /// CPUs in the cgroup's cpuset (`--cpuset-cpus`).
    pub cpuset_cpus: Option<u32>,
    pub memory_bytes: Option<u64>,
    /// Which file each limit came from and what it held, e.g.
    /// `cgroup v2 cpu.max "100000 100000"`.
    pub evidence: Vec<String>,
}

/// The host's capacity as Drover reports it: the machine's, lowered by cgroup limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    /// What the kernel reports for the whole machine, kept as evidence.
    pub machine_cpu_cores: u32,
    pub machine_memory_bytes: u64,
    /// Where `cpu_cores` and `memory_bytes` come from, for people.
    pub evidence: String,
}

/// Applies `limits` to the machine's CPUs and memory. A limit counts only when
/// it is lower than the machine's value.
pub fn capacity(machine_cpu_cores: u32, machine_memory_bytes: u64, limits: &Limits) -> Capacity {
    let mut cpu_cores = machine_cpu_cores;
    let mut memory_bytes = machine_memory_bytes;
    let mut lowered = Vec::new();
    if let Some(q) = limits.cpu_quota
        && q.whole_cpus() < cpu_cores
    {
        cpu_cores = q.whole_cpus();
        lowered.push(format!("CPU quota {} CPUs", trim_float(q.cpus())));
    }
    if let Some(n) = limits.cpuset_cpus
        && n < cpu_cores
    {
        cpu_cores = n;
        lowered.push(format!("cpuset of {n} CPUs"));
    }
    if let Some(m) = limits.memory_bytes
        && m < memory_bytes
    {
        memory_bytes = m;
        lowered.push(format!("memory limit {m} bytes"));
    }
    let machine = format!("machine: {machine_cpu_cores} CPUs, {machine_memory_bytes} bytes");
    let evidence = if lowered.is_empty() {
        format!("no cgroup limit below the machine's ({machine})")
    } else {
        format!("{} ({machine}; {})", lowered.join(", "), limits.evidence.join("; "))
    };
    Capacity { cpu_cores, memory_bytes, machine_cpu_cores, machine_memory_bytes, evidence }
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

// ---- container id ----

/// The id of the container the agent runs in, as its runtime names it (64 hex
/// digits for Docker, Podman, containerd and CRI-O), read below `root`.
pub fn container_id(root: &Path) -> Option<String> {
    let read = |f: &str| fs::read_to_string(root.join(f)).unwrap_or_default();
    container_id_from(&read("proc/self/mountinfo"), &read("proc/self/cgroup"))
}

/// Finds the container id in mountinfo (the runtime's per-container directory
/// that `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` are bind-mounted
/// from; works with cgroup namespaces) or, failing that, in the cgroup paths
/// (`/docker/<id>`, `docker-<id>.scope`, `cri-containerd-<id>.scope`, ...).
pub fn container_id_from(mountinfo: &str, cgroup: &str) -> Option<String> {
    const BIND_MOUNTED: &[&str] = &["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];
    let from_mounts = parse_mountinfo(mountinfo).into_iter().find_map(|m| {
        if !BIND_MOUNTED.contains(&m.mount_point.as_str()) {
            return None;
        }
        // .../docker/containers/<id>/hostname, .../overlay-containers/<id>/userdata/hostname
        let segments: Vec<&str> = m.root.split('/').collect();
        segments
            .windows(2)
            .find_map(|w| (w[0].ends_with("containers") && is_container_id(w[1])).then(|| w[1].to_owned()))
    });
    from_mounts.or_else(|| {
        parse_proc_cgroup(cgroup).iter().find_map(|line| {
            line.path.rsplit('/').find_map(|segment| {
                let segment = segment.strip_suffix(".scope").unwrap_or(segment);
                let id = segment.rsplit_once('-').map_or(segment, |(_, id)| id);
                is_container_id(id).then(|| id.to_owned())
            })
        })
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---- cgroup limits ----

/// Reads the CPU and memory limits of the agent's cgroup below `root`.
pub fn read_limits(root: &Path) -> Limits {
    let read = |f: &str| fs::read_to_string(root.join(f)).unwrap_or_default();
    let mounts = parse_mountinfo(&read("proc/self/mountinfo"));
    let cgroups = parse_proc_cgroup(&read("proc/self/cgroup"));
    let mut limits = Limits::default();
    let file = |dir: &Path, name: &str| fs::read_to_string(root.join(dir.strip_prefix("/").unwrap_or(dir)).join(name));

    // CPU quota: v1 cpu controller, else v2.
    if let Some(dirs) = controller_dirs(&mounts, &cgroups, "cpu") {
        let found = dirs.iter().filter_map(|d| {
            let quota = file(d, "cpu.cfs_quota_us").ok()?;
            let period = file(d, "cpu.cfs_period_us").ok()?;
            let q = parse_v1_cpu_quota(&quota, &period)?;
            Some((q, format!("cgroup v1 {}/cpu.cfs_quota_us {} per {} us", d.display(), q.quota_us, q.period_us)))
        });
        note_min(&mut limits.cpu_quota, &mut limits.evidence, found, |q| q.cpus());
    } else if let Some(dirs) = unified_dirs(&mounts, &cgroups) {
        let found = dirs.iter().filter_map(|d| {
            let text = file(d, "cpu.max").ok()?;
            let q = parse_cpu_max(&text)?;
            Some((q, format!("cgroup v2 {}/cpu.max \"{}\"", d.display(), text.trim())))
        });
        note_min(&mut limits.cpu_quota, &mut limits.evidence, found, |q| q.cpus());
    }

    // cpuset: the leaf's effective set is already the intersection with its ancestors.
    let cpuset = controller_dirs(&mounts, &cgroups, "cpuset")
        .and_then(|dirs| dirs.first().cloned())
        .and_then(|d| Some((file(&d, "cpuset.effective_cpus").or_else(|_| file(&d, "cpuset.cpus")).ok()?, d)))
        .or_else(|| {
            let d = unified_dirs(&mounts, &cgroups)?.first().cloned()?;
            Some((file(&d, "cpuset.cpus.effective").ok()?, d))
        });
    if let Some((text, dir)) = cpuset
        && let Some(n) = parse_cpu_list(&text)
    {
        limits.cpuset_cpus = Some(n);
        limits.evidence.push(format!("cpuset {} \"{}\"", dir.display(), text.trim()));
    }

    // Memory: v1 memory controller, else v2.
    if let Some(dirs) = controller_dirs(&mounts, &cgroups, "memory") {
        let found = dirs.iter().filter_map(|d| {
            let m = parse_v1_memory_limit(&file(d, "memory.limit_in_bytes").ok()?)?;
            Some((m, format!("cgroup v1 {}/memory.limit_in_bytes {m}", d.display())))
        });
        note_min(&mut limits.memory_bytes, &mut limits.evidence, found, |m| m as f64);
    } else if let Some(dirs) = unified_dirs(&mounts, &cgroups) {
        let found = dirs.iter().filter_map(|d| {
            let m = parse_memory_max(&file(d, "memory.max").ok()?)?;
            Some((m, format!("cgroup v2 {}/memory.max {m}", d.display())))
        });
        note_min(&mut limits.memory_bytes, &mut limits.evidence, found, |m| m as f64);
    }
    limits
}

/// Keeps the lowest of `found` (by `key`) in `slot`, with its evidence.
fn note_min<T: Copy>(
    slot: &mut Option<T>,
    evidence: &mut Vec<String>,
    found: impl Iterator<Item = (T, String)>,
    key: impl Fn(T) -> f64,
) {
    if let Some((value, why)) = found.min_by(|a, b| key(a.0).total_cmp(&key(b.0))) {
        *slot = Some(value);
        evidence.push(why);
    }
}

/// `quota period` from a v2 `cpu.max`; `max` (no limit) gives `None`.
pub fn parse_cpu_max(text: &str) -> Option<CpuQuota> {
    let mut words = text.split_whitespace();
    let quota = words.next()?;
    let period = words.next().map_or(Some(100_000), |p| p.parse().ok())?;
    let quota = quota.parse().ok()?;
    valid_quota(quota, period)
}

/// A v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`; a quota of -1 means no limit.
pub fn parse_v1_cpu_quota(quota: &str, period: &str) -> Option<CpuQuota> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    valid_quota(u64::try_from(quota).ok()?, period)
}

fn valid_quota(quota_us: u64, period_us: u64) -> Option<CpuQuota> {
    (quota_us > 0 && period_us > 0).then_some(CpuQuota { quota_us, period_us })
}

/// A v2 `memory.max`: bytes, or `max` for no limit.
pub fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|m| *m > 0)
}

/// A v1 `memory.limit_in_bytes`. No limit reads as a huge number (the largest
/// page-aligned `i64`, 9223372036854771712 on 4 KiB pages); anything from 2^62
/// up is taken as no limit.
pub fn parse_v1_memory_limit(text: &str) -> Option<u64> {
    parse_memory_max(text).filter(|m| *m < 1 << 62)
}

/// The number of CPUs in a cpuset list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut n = 0u32;
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u32>().ok()?, hi.parse::<u32>().ok()?),
            None => {
                let cpu = part.parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        n = n.checked_add(hi.checked_sub(lo)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n)
}

/// One line of `/proc/self/cgroup`: `hierarchy:controllers:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine {
    pub hierarchy: String,
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.to_owned();
            let controllers = parts.next()?.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect();
            let path = parts.next()?.to_owned();
            Some(CgroupLine { hierarchy, controllers, path })
        })
        .collect()
}

/// The fields of a mountinfo line that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the filesystem that is mounted (field 4).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    pub super_options: Vec<String>,
}

/// Parses `/proc/self/mountinfo` (see proc(5)): `id parent major:minor root
/// mount-point options [optional...] - fstype source super-options`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split_whitespace().collect();
            let mut right = right.split_whitespace();
            let fs_type = right.next()?.to_owned();
            let _source = right.next();
            let super_options = right.next().unwrap_or("").split(',').map(str::to_owned).collect();
            Some(Mount {
                root: unescape_octal(left.get(3)?),
                mount_point: unescape_octal(left.get(4)?),
                fs_type,
                super_options,
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\040` etc.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The agent's cgroup directories of a v1 controller, leaf first, up to the
/// controller's mount point; `None` when the controller is not mounted as v1.
fn controller_dirs(mounts: &[Mount], cgroups: &[CgroupLine], controller: &str) -> Option<Vec<PathBuf>> {
    let line = cgroups.iter().find(|l| l.hierarchy != "0" && l.controllers.iter().any(|c| c == controller))?;
    let mount = mounts.iter().find(|m| m.fs_type == "cgroup" && m.super_options.iter().any(|o| o == controller))?;
    Some(dirs_up_to(mount, &line.path))
}

/// The same for the unified (v2) hierarchy.
fn unified_dirs(mounts: &[Mount], cgroups: &[CgroupLine]) -> Option<Vec<PathBuf>> {
    let line = cgroups.iter().find(|l| l.hierarchy == "0" && l.controllers.is_empty())?;
    let mount = mounts.iter().find(|m| m.fs_type == "cgroup2")?;
    Some(dirs_up_to(mount, &line.path))
}

/// `path` (a cgroup path as `/proc/self/cgroup` names it) below `mount`, and
/// its ancestors up to the mount point. A path outside the mount's root (a
/// container that sees its own cgroup as the root) is the mount point itself.
fn dirs_up_to(mount: &Mount, path: &str) -> Vec<PathBuf> {
    let relative = if mount.root == "/" {
        path
    } else {
        match path.strip_prefix(mount.root.as_str()) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => "",
        }
    };
    let top = PathBuf::from(&mount.mount_point);
    let mut dir = top.clone();
    let mut dirs = vec![top];
    for segment in relative.split('/').filter(|s| !s.is_empty() && *s != "." && *s != "..") {
        dir = dir.join(segment);
        dirs.push(dir.clone());
    }
    dirs.reverse();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "d698b8b64b2920ff33fe1dfe4e72bc1977492b62a5f301818cb98c059b9b79f7";

    #[test]
    fn cpu_max_table() {
        let q = |quota, period| Some(CpuQuota { quota_us: quota, period_us: period });
        for (text, want) in [
            ("max 100000\n", None),
            ("max", None),
            ("100000 100000\n", q(100_000, 100_000)),
            ("150000 100000", q(150_000, 100_000)),
            ("50000", q(50_000, 100_000)),
            ("0 100000", None),
            ("100000 0", None),
            ("", None),
            ("garbage 100000", None),
        ] {
            assert_eq!(parse_cpu_max(text), want, "{text:?}");
        }
    }

    #[test]
    fn v1_cpu_quota_table() {
        for (quota, period, want) in [
            ("-1\n", "100000\n", None),
            ("100000\n", "100000\n", Some(1.0)),
            ("250000", "100000", Some(2.5)),
            ("50000", "100000", Some(0.5)),
            ("100000", "", None),
            ("0", "100000", None),
        ] {
            assert_eq!(parse_v1_cpu_quota(quota, period).map(CpuQuota::cpus), want, "{quota:?} {period:?}");
        }
    }

    #[test]
    fn whole_cpus_round_up() {
        for (quota, want) in [(50_000, 1), (100_000, 1), (100_001, 2), (150_000, 2), (400_000, 4)] {
            assert_eq!(CpuQuota { quota_us: quota, period_us: 100_000 }.whole_cpus(), want, "{quota}");
        }
    }

    #[test]
    fn memory_limit_table() {
        for (text, v2, v1) in [
            ("max\n", None, None),
            ("268435456\n", Some(268_435_456), Some(268_435_456)),
            ("9223372036854771712\n", Some(9_223_372_036_854_771_712), None),
            ("0", None, None),
            ("", None, None),
        ] {
            assert_eq!(parse_memory_max(text), v2, "v2 {text:?}");
            assert_eq!(parse_v1_memory_limit(text), v1, "v1 {text:?}");
        }
    }

    #[test]
    fn cpu_lists() {
        for (text, want) in
            [("0-1\n", Some(2)), ("0", Some(1)), ("0-3,8,10-11", Some(7)), ("", None), ("3-1", None), ("x", None)]
        {
            assert_eq!(parse_cpu_list(text), want, "{text:?}");
        }
    }

    #[test]
    fn container_id_from_docker_mountinfo() {
        let mountinfo = format!(
            "71 50 0:40 / / rw,relatime - fuse.fuse-overlayfs fuse-overlayfs rw\n\
             88 71 254:0 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw\n\
             89 71 254:0 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n"
        );
        assert_eq!(container_id_from(&mountinfo, "0::/\n").as_deref(), Some(ID));
    }

    #[test]
    fn container_id_from_podman_mountinfo() {
        let mountinfo = format!(
            "612 580 0:52 /containers/storage/overlay-containers/{ID}/userdata/hostname /etc/hostname rw - tmpfs tmpfs rw\n"
        );
        assert_eq!(container_id_from(&mountinfo, "").as_deref(), Some(ID));
    }

    #[test]
    fn container_id_from_cgroup_paths() {
        for cgroup in [
            format!("12:memory:/docker/{ID}\n0::/docker/{ID}\n"),
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2.slice/cri-containerd-{ID}.scope\n"
            ),
            format!("11:cpu,cpuacct:/kubepods/besteffort/pod0c1f9a3e-7a7b-4b1c-9d1e-2b6a1c3d4e5f/{ID}\n"),
            format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            format!("0::/docker/{}/docker/{ID}\n", "a".repeat(64)),
        ] {
            assert_eq!(container_id_from("", &cgroup).as_deref(), Some(ID), "{cgroup}");
        }
    }

    #[test]
    fn no_container_id_outside_containers() {
        // A Docker host's own mountinfo names overlay directories (also 64 hex) and
        // container directories, but never as the source of /etc/hostname.
        let host_mountinfo = format!(
            "30 1 0:27 / /var/lib/docker/overlay2/{ID}/merged rw - overlay overlay rw\n\
             31 1 0:28 / /var/lib/docker/containers/{ID}/mounts/shm rw - tmpfs shm rw\n"
        );
        let cgroup = "0::/user.slice/user-1000.slice/session-2.scope\n1:name=systemd:/\n";
        assert_eq!(container_id_from(&host_mountinfo, cgroup), None);
        assert_eq!(container_id_from("", "0::/\n"), None);
        assert_eq!(container_id_from("", &format!("0::/docker/{}\n", &ID[..12])), None);
    }

    #[test]
    fn mountinfo_fields_and_escapes() {
        let m = parse_mountinfo(
            "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
        );
        assert_eq!(
            m,
            [Mount {
                root: "/mnt1".into(),
                mount_point: "/mnt/with space".into(),
                fs_type: "ext3".into(),
                super_options: vec!["rw".into(), "errors=continue".into()],
            }]
        );
    }

    /// Writes `files` below a temporary root.
    fn tree(files: &[(&str, String)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, content) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, content).expect("write");
        }
        dir
    }

    #[test]
    fn limits_of_a_docker_container_on_cgroup_v1() {
        // As seen inside `docker run --cpus 1 --memory 256m` with the cgroupfs driver.
        let root = format!("/docker/{ID}");
        let cgroup = format!(
            "9:name=systemd:{root}\n4:memory:{root}\n3:cpuset:{root}\n2:cpuacct:{root}\n1:cpu:{root}\n0::{root}\n"
        );
        let mountinfo = format!(
            "77 76 0:29 {root} /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu\n\
             79 76 0:31 {root} /sys/fs/cgroup/cpuset ro,nosuid - cgroup cgroup rw,cpuset\n\
             80 76 0:32 {root} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
        );
        let dir = tree(&[
            ("proc/self/cgroup", cgroup),
            ("proc/self/mountinfo", mountinfo),
            ("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "100000\n".into()),
            ("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n".into()),
            ("sys/fs/cgroup/cpuset/cpuset.cpus", "0-1\n".into()),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "268435456\n".into()),
        ]);
        let limits = read_limits(dir.path());
        assert_eq!(limits.cpu_quota, Some(CpuQuota { quota_us: 100_000, period_us: 100_000 }));
        assert_eq!(limits.cpuset_cpus, Some(2));
        assert_eq!(limits.memory_bytes, Some(268_435_456));
        let cap = capacity(2, 24 << 30, &limits);
        assert_eq!((cap.cpu_cores, cap.memory_bytes), (1, 268_435_456));
        assert_eq!((cap.machine_cpu_cores, cap.machine_memory_bytes), (2, 24 << 30));
        assert!(cap.evidence.contains("CPU quota 1 CPUs"), "{}", cap.evidence);
        assert!(cap.evidence.contains("memory.limit_in_bytes 268435456"), "{}", cap.evidence);
    }

    #[test]
    fn unlimited_v1_container_keeps_the_machine() {
        let cgroup = format!("4:memory:/docker/{ID}\n1:cpu:/docker/{ID}\n");
        let mountinfo = format!(
            "77 76 0:29 /docker/{ID} /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu\n\
             80 76 0:32 /docker/{ID} /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
        );
        let dir = tree(&[
            ("proc/self/cgroup", cgroup),
            ("proc/self/mountinfo", mountinfo),
            ("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n".into()),
            ("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n".into()),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n".into()),
        ]);
        let limits = read_limits(dir.path());
        assert_eq!(limits, Limits::default());
        let cap = capacity(8, 1 << 34, &limits);
        assert_eq!((cap.cpu_cores, cap.memory_bytes), (8, 1 << 34));
        assert!(cap.evidence.starts_with("no cgroup limit"), "{}", cap.evidence);
    }

    #[test]
    fn limits_on_cgroup_v2_with_a_private_namespace() {
        let dir = tree(&[
            ("proc/self/cgroup", "0::/\n".into()),
            ("proc/self/mountinfo", "30 25 0:26 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw,nsdelegate\n".into()),
            ("sys/fs/cgroup/cpu.max", "150000 100000\n".into()),
            ("sys/fs/cgroup/cpuset.cpus.effective", "0-7\n".into()),
            ("sys/fs/cgroup/memory.max", "max\n".into()),
        ]);
        let limits = read_limits(dir.path());
        assert_eq!(limits.cpu_quota.map(CpuQuota::cpus), Some(1.5));
        assert_eq!(limits.memory_bytes, None);
        let cap = capacity(16, 1 << 34, &limits);
        // 1.5 CPUs round up to 2; the cpuset (8) is not the lowest.
        assert_eq!((cap.cpu_cores, cap.memory_bytes), (2, 1 << 34));
        assert!(cap.evidence.contains("CPU quota 1.5 CPUs"), "{}", cap.evidence);
    }

    #[test]
    fn v2_limits_of_ancestors_count() {
        // A systemd service on a cgroup v2 host: the slice above it caps memory.
        let dir = tree(&[
            ("proc/self/cgroup", "0::/system.slice/drover-agent.service\n".into()),
            ("proc/self/mountinfo", "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n".into()),
            ("sys/fs/cgroup/system.slice/drover-agent.service/memory.max", "max\n".into()),
            ("sys/fs/cgroup/system.slice/drover-agent.service/cpu.max", "max 100000\n".into()),
            ("sys/fs/cgroup/system.slice/memory.max", "1073741824\n".into()),
            ("sys/fs/cgroup/system.slice/cpu.max", "max 100000\n".into()),
        ]);
        let limits = read_limits(dir.path());
        assert_eq!(limits.memory_bytes, Some(1 << 30));
        assert_eq!(limits.cpu_quota, None);
        assert!(limits.evidence[0].contains("/sys/fs/cgroup/system.slice/memory.max"), "{:?}", limits.evidence);
    }

    #[test]
    fn nothing_readable_means_no_limits() {
        let dir = tree(&[]);
        assert_eq!(read_limits(dir.path()), Limits::default());
        assert_eq!(container_id(dir.path()), None);
    }
}
