//! What the host is: hostname, addresses, OS, kernel, CPU, memory, filesystems and
//! whether it is a container, a VM or a physical machine. Collected once at start
//! and sent at enrollment and in every `Hello`.
//!
//! Host-kind detection, OS parsing and the FQDN lookup read files below a root
//! directory given as an argument, so that tests can build fake `/proc`, `/sys`
//! and `/etc` trees. In a container, [`crate::container`] adds the container id
//! and lowers `cpu_cores` and `memory_bytes` to the cgroup's limits.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};

use crate::container;

/// Everything the manager learns about a host when it enrolls or connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// `--hostname`, else the system's (kernel) host name.
    pub hostname: String,
    /// The fully qualified name of the kernel host name, when one is known
    /// (see [`fqdn`]); empty otherwise. Informational: Drover identifies hosts
    /// by id, never refuses one over its names, and does not need either to
    /// resolve.
    pub fqdn: String,
    /// Non-loopback, non-link-local addresses of interfaces that are up.
    pub addresses: Vec<IpAddr>,
    pub kind: HostKind,
    /// Why `kind` was chosen, e.g. "/.dockerenv present".
    pub kind_evidence: String,
    /// Operating system, e.g. "Debian GNU/Linux 12 (bookworm)".
    pub os: String,
    /// Kernel release, e.g. "6.1.0-18-amd64".
    pub kernel: String,
    /// CPU architecture as Rust names it, e.g. "x86_64", "aarch64".
    pub arch: String,
    /// Logical CPUs, or fewer when a cgroup limit (a container's `--cpus`,
    /// a cpuset) allows fewer; a fractional quota is rounded up.
    pub cpu_cores: u32,
    /// Memory, or the cgroup memory limit when lower.
    pub memory_bytes: u64,
    /// What the kernel reports for the whole machine, whatever the limits.
    pub machine_cpu_cores: u32,
    pub machine_memory_bytes: u64,
    /// Where `cpu_cores` and `memory_bytes` come from (the cgroup files and
    /// values that lowered them, or "no cgroup limit ...").
    pub capacity_evidence: String,
    /// The id of the container the agent runs in (64 hex digits for Docker),
    /// when `kind` is container and the runtime shows it; empty otherwise.
    pub container_id: String,
    /// Real filesystems (see [`is_real_filesystem`]), sorted by mount point.
    pub disks: Vec<Disk>,
}

/// One mounted filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
}

/// What kind of machine the agent runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostKind {
    Container,
    Vm,
    Physical,
}

impl HostKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Container => "container",
            HostKind::Vm => "vm",
            HostKind::Physical => "physical",
        }
    }
}

impl fmt::Display for HostKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Collects the facts of the machine the agent runs on. Never fails: a fact that
/// cannot be read is left empty or zero.
pub fn collect(hostname_override: Option<&str>) -> HostFacts {
    let root = Path::new("/");
    let sys = System::new_with_specifics(
        RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()).with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let kernel_hostname = System::host_name().unwrap_or_default();
    let hostname = hostname_override
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| kernel_hostname.clone());
    let fqdn = fqdn(root, &kernel_hostname, |name| resolves(name, FQDN_LOOKUP_TIMEOUT));
    let (kind, kind_evidence) = detect_host_kind(root);
    let os = os_release_name(root).or_else(System::long_os_version).unwrap_or_else(|| std::env::consts::OS.to_owned());
    let machine_cpu_cores = match sys.cpus().len() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let machine_cpu_cores = u32::try_from(machine_cpu_cores).unwrap_or(u32::MAX);
    // Limits apply wherever the agent runs (a systemd slice, too), not only in containers.
    let capacity = container::capacity(machine_cpu_cores, sys.total_memory(), &container::read_limits(root));
    let container_id = match kind {
        HostKind::Container => container::container_id(root).unwrap_or_default(),
        HostKind::Vm | HostKind::Physical => String::new(),
    };
    let disks = Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_storage());
    HostFacts {
        hostname,
        fqdn,
        addresses: addresses(),
        kind,
        kind_evidence,
        os,
        kernel: System::kernel_version().unwrap_or_default(),
        arch: std::env::consts::ARCH.to_owned(),
        cpu_cores: capacity.cpu_cores,
        memory_bytes: capacity.memory_bytes,
        machine_cpu_cores: capacity.machine_cpu_cores,
        machine_memory_bytes: capacity.machine_memory_bytes,
        capacity_evidence: capacity.evidence,
        container_id,
        disks: real_filesystems(&disks)
            .into_iter()
            .map(|d| Disk {
                mount_point: d.mount_point,
                device: d.device,
                fs_type: d.fs_type,
                total_bytes: d.total_bytes,
            })
            .collect(),
    }
}

// ---- names ----

/// How long the agent waits for the resolver when looking for its FQDN. A
/// container with a broken resolver must not delay the start for long.
const FQDN_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The fully qualified domain name of `hostname`, or empty when none is known,
/// much as `hostname -f` finds it: the name itself if it has a dot; else the
/// canonical (first) name of the `etc/hosts` line below `root` that lists it,
/// if that has a dot; else `hostname.DOMAIN` for the `domain` (or first
/// `search`) domain of `etc/resolv.conf`, if `resolves` says it resolves.
///
/// Never an error: Ambari's agents refused to register when a container's
/// hostname and FQDN disagreed or did not resolve. Drover reports both names
/// as they are and identifies the host by its id.
pub fn fqdn(root: &Path, hostname: &str, resolves: impl Fn(&str) -> bool) -> String {
    let hostname = hostname.trim().trim_end_matches('.');
    if hostname.is_empty() {
        return String::new();
    }
    if hostname.contains('.') {
        return hostname.to_owned();
    }
    let hosts = fs::read_to_string(root.join("etc/hosts")).unwrap_or_default();
    let canonical = hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let _address = words.next()?;
        let names: Vec<&str> = words.collect();
        names.iter().any(|n| n.eq_ignore_ascii_case(hostname)).then(|| names[0].trim_end_matches('.').to_owned())
    });
    if let Some(name) = canonical.filter(|n| n.contains('.')) {
        return name;
    }
    let resolv = fs::read_to_string(root.join("etc/resolv.conf")).unwrap_or_default();
    let domain = resolv.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match words.next()? {
            "domain" | "search" => words.next().map(|d| d.trim_end_matches('.').to_owned()),
            _ => None,
        }
    });
    match domain.filter(|d| !d.is_empty()) {
        Some(domain) => {
            let candidate = format!("{hostname}.{domain}");
            if resolves(&candidate) { candidate } else { String::new() }
        }
        None => String::new(),
    }
}

/// Whether the system resolver knows `name`, giving up after `timeout` (the
/// lookup thread is left to finish on its own).
pub fn resolves(name: &str, timeout: Duration) -> bool {
    use std::net::ToSocketAddrs;
    let (tx, rx) = std::sync::mpsc::channel();
    let name = name.to_owned();
    let spawned = std::thread::Builder::new().name("fqdn-lookup".into()).spawn(move || {
        let found = (name.as_str(), 0).to_socket_addrs().map(|mut a| a.next().is_some()).unwrap_or(false);
        let _ = tx.send(found);
    });
    spawned.is_ok() && rx.recv_timeout(timeout).unwrap_or(false)
}

// ---- host kind ----

/// Files whose presence marks a container, with the runtime that creates them.
const CONTAINER_MARKER_FILES: &[&str] = &[".dockerenv", "run/.containerenv"];
/// Words in `/proc/1/cgroup` that put PID 1 inside a container.
const CONTAINER_CGROUP_WORDS: &[&str] = &["docker", "kubepods", "containerd", "lxc", "libpod"];

/// Decides whether the system below `root` (normally `/`) is a container, a VM or
/// a physical machine, and says why. Containers win over VMs: a container on a VM
/// is managed as a container.
pub fn detect_host_kind(root: &Path) -> (HostKind, String) {
    if let Some(evidence) = container_evidence(root) {
        return (HostKind::Container, evidence);
    }
    if let Some(evidence) = vm_evidence(root) {
        return (HostKind::Vm, evidence);
    }
    (HostKind::Physical, "no container or hypervisor markers found".to_owned())
}

fn container_evidence(root: &Path) -> Option<String> {
    for marker in CONTAINER_MARKER_FILES {
        if root.join(marker).exists() {
            return Some(format!("/{marker} present"));
        }
    }
    if let Ok(cgroup) = fs::read_to_string(root.join("proc/1/cgroup")) {
        let lower = cgroup.to_ascii_lowercase();
        if let Some(word) = CONTAINER_CGROUP_WORDS.iter().find(|w| lower.contains(*w)) {
            return Some(format!("/proc/1/cgroup mentions {word}"));
        }
    }
    for (file, whose) in [("proc/1/environ", "PID 1's"), ("proc/self/environ", "the agent's")] {
        // PID 1's environment is readable only by root; a failure is no evidence.
        if let Ok(environ) = fs::read(root.join(file))
            && let Some(value) = environ_var(&environ, "container")
        {
            return Some(format!("container={value} in {whose} environment"));
        }
    }
    None
}

/// The value of `name` in a NUL-separated environment block, if set.
fn environ_var(environ: &[u8], name: &str) -> Option<String> {
    environ.split(|b| *b == 0).find_map(|entry| {
        let entry = String::from_utf8_lossy(entry);
        let (key, value) = entry.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

fn vm_evidence(root: &Path) -> Option<String> {
    let read = |f: &str| {
        fs::read_to_string(root.join("sys/class/dmi/id").join(f)).map(|s| s.trim().to_owned()).unwrap_or_default()
    };
    let (vendor, product) = (read("sys_vendor"), read("product_name"));
    if let Some(hypervisor) = hypervisor_from_dmi(&vendor, &product) {
        return Some(format!("DMI names {hypervisor} (sys_vendor {vendor:?}, product_name {product:?})"));
    }
    let cpuinfo = fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default();
    let hypervisor_flag =
        cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|w| w == "hypervisor"));
    hypervisor_flag.then(|| "/proc/cpuinfo flags include hypervisor".to_owned())
}

/// Recognises a hypervisor from the DMI system vendor and product name.
fn hypervisor_from_dmi(vendor: &str, product: &str) -> Option<&'static str> {
    let v = vendor.to_ascii_lowercase();
    let p = product.to_ascii_lowercase();
    let either = |needle: &str| v.contains(needle) || p.contains(needle);
    if either("qemu") {
        Some("QEMU")
    } else if either("kvm") {
        Some("KVM")
    } else if either("vmware") {
        Some("VMware")
    } else if either("virtualbox") || v.contains("innotek") {
        Some("VirtualBox")
    } else if either("xen") {
        Some("Xen")
    } else if v.contains("microsoft") && p.contains("virtual machine") {
        // Surface laptops also say Microsoft; only Hyper-V says "Virtual Machine".
        Some("Hyper-V")
    } else if v.contains("amazon ec2") && !p.ends_with(".metal") {
        // EC2 bare-metal instances (e.g. "m5.metal") are physical machines.
        Some("Amazon EC2")
    } else if p.contains("google compute engine") {
        // Chromebooks say "Google" too, but not "Compute Engine".
        Some("Google Compute Engine")
    } else if either("bhyve") {
        Some("bhyve")
    } else if either("parallels") {
        Some("Parallels")
    } else {
        None
    }
}

// ---- operating system ----

/// `PRETTY_NAME` from `etc/os-release` (or `usr/lib/os-release`) below `root`.
pub fn os_release_name(root: &Path) -> Option<String> {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .filter_map(|f| fs::read_to_string(root.join(f)).ok())
        .find_map(|text| parse_os_release(&text))
}

/// Extracts `PRETTY_NAME` (else `NAME`) from os-release text, unquoted.
fn parse_os_release(text: &str) -> Option<String> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let value = line.trim().strip_prefix(name)?.strip_prefix('=')?;
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            let unescaped = unquoted.replace("\\\"", "\"").replace("\\\\", "\\");
            (!unescaped.is_empty()).then_some(unescaped)
        })
    };
    field("PRETTY_NAME").or_else(|| field("NAME"))
}

// ---- addresses ----

/// Non-loopback IPv4 and IPv6 addresses of the interfaces that are up, without
/// IPv6 link-local addresses (useless without their interface), deduplicated.
fn addresses() -> Vec<IpAddr> {
    use nix::net::if_::InterfaceFlags;
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for ifa in ifaddrs {
        let up = ifa.flags.contains(InterfaceFlags::IFF_UP);
        let loopback = ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if usable_address(ip, up, loopback) && seen.insert(ip) {
            out.push(ip);
        }
    }
    out
}

fn usable_address(ip: IpAddr, up: bool, loopback_interface: bool) -> bool {
    if !up || loopback_interface || ip.is_loopback() || ip.is_unspecified() {
        return false;
    }
    match ip {
        IpAddr::V4(_) => true,
        // fe80::/10
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

// ---- filesystems ----

/// A filesystem worth reporting, as facts and metrics both see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Filesystem {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Filesystem types that hold no user data, beyond those sysinfo already skips.
const PSEUDO_FS: &[&str] = &[
    "overlay",
    "tmpfs",
    "devtmpfs",
    "ramfs",
    "squashfs",
    "nsfs",
    "autofs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "tracefs",
    "debugfs",
    "securityfs",
    "bpf",
    "binfmt_misc",
    "configfs",
    "fusectl",
    "efivarfs",
    "pstore",
    "hugetlbfs",
    "fuse.lxcfs",
    "fuse.snapfuse",
    "fuse.portal",
    "fuse.gvfsd-fuse",
];

/// Mount points below which there are only container-runtime and kernel mounts.
const NOISY_MOUNT_PREFIXES: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/snap",
    "/var/lib/docker",
    "/var/lib/containers",
    "/var/lib/kubelet",
    "/var/lib/containerd",
];

/// Whether a mounted filesystem is a real one worth reporting. The root `/` is
/// always kept, even when it is a container's overlay; other overlays, pseudo
/// filesystems, runtime-internal mounts, empty filesystems and files
/// bind-mounted over files (`/etc/hosts` in a container) are skipped.
pub fn is_real_filesystem(mount_point: &str, fs_type: &str, total_bytes: u64, is_dir: bool) -> bool {
    if mount_point == "/" {
        return true;
    }
    if total_bytes == 0 || !is_dir || PSEUDO_FS.contains(&fs_type) {
        return false;
    }
    !NOISY_MOUNT_PREFIXES
        .iter()
        .any(|p| mount_point == *p || mount_point.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

/// The real filesystems among `disks`, one per device (the shortest mount point
/// wins, so bind mounts of a directory of `/` do not count its space twice),
/// sorted by mount point.
pub(crate) fn real_filesystems(disks: &Disks) -> Vec<Filesystem> {
    let candidates = disks.list().iter().filter_map(|d| {
        let mount_point = d.mount_point().to_string_lossy().into_owned();
        let fs_type = d.file_system().to_string_lossy().into_owned();
        let is_dir = d.mount_point().is_dir();
        is_real_filesystem(&mount_point, &fs_type, d.total_space(), is_dir).then(|| Filesystem {
            mount_point,
            device: d.name().to_string_lossy().into_owned(),
            fs_type,
            total_bytes: d.total_space(),
            available_bytes: d.available_space(),
        })
    });
    one_per_device(candidates.collect())
}

fn one_per_device(mut filesystems: Vec<Filesystem>) -> Vec<Filesystem> {
    filesystems.sort_by(|a, b| (a.mount_point.len(), &a.mount_point).cmp(&(b.mount_point.len(), &b.mount_point)));
    let mut devices = BTreeSet::new();
    // The root is kept even when another mount shares its device.
    filesystems.retain(|f| {
        let first_of_device = devices.insert(f.device.clone());
        f.mount_point == "/" || first_of_device
    });
    filesystems.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    filesystems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fake root directory with the given files.
    fn tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, content) in files {
            let full: PathBuf = dir.path().join(path);
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent).expect("mkdir");
            }
            fs::write(&full, content).expect("write");
        }
        dir
    }

    const CPUINFO_BARE: &[u8] = b"processor\t: 0\nflags\t\t: fpu vme de pse tsc msr\n";
    const CPUINFO_VM: &[u8] = b"processor\t: 0\nflags\t\t: fpu vme hypervisor lahf_lm\n";
    const CGROUP_HOST: &[u8] = b"0::/init.scope\n";

    #[test]
    fn host_kind_table() {
        type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, HostKind, &'a str);
        let cases: Vec<Case> = vec![
            ("empty tree", vec![], HostKind::Physical, "no container"),
            (
                "bare metal",
                vec![
                    ("proc/cpuinfo", CPUINFO_BARE),
                    ("proc/1/cgroup", CGROUP_HOST),
                    ("sys/class/dmi/id/sys_vendor", b"Dell Inc.\n"),
                    ("sys/class/dmi/id/product_name", b"PowerEdge R640\n"),
                ],
                HostKind::Physical,
                "no container",
            ),
            ("docker", vec![(".dockerenv", b"")], HostKind::Container, "/.dockerenv present"),
            ("podman", vec![("run/.containerenv", b"")], HostKind::Container, "/run/.containerenv"),
            (
                "cgroup v1 docker",
                vec![("proc/1/cgroup", b"12:memory:/docker/3f2a\n11:cpu:/docker/3f2a\n")],
                HostKind::Container,
                "mentions docker",
            ),
            (
                "kubernetes",
                vec![("proc/1/cgroup", b"0::/kubepods/burstable/pod1/abc\n")],
                HostKind::Container,
                "mentions kubepods",
            ),
            ("lxc", vec![("proc/1/cgroup", b"0::/lxc.payload.c1\n")], HostKind::Container, "mentions lxc"),
            (
                "systemd-nspawn via PID 1 env",
                vec![("proc/1/environ", b"PATH=/bin\0container=systemd-nspawn\0")],
                HostKind::Container,
                "container=systemd-nspawn in PID 1's environment",
            ),
            (
                "podman via our env",
                vec![("proc/self/environ", b"HOME=/root\0container=podman\0")],
                HostKind::Container,
                "container=podman in the agent's environment",
            ),
            (
                "container on a VM is a container",
                vec![(".dockerenv", b""), ("proc/cpuinfo", CPUINFO_VM)],
                HostKind::Container,
                "/.dockerenv",
            ),
            (
                "not fooled by a variable named like container",
                vec![("proc/self/environ", b"mycontainer=1\0container_id=2\0"), ("proc/cpuinfo", CPUINFO_BARE)],
                HostKind::Physical,
                "no container",
            ),
            (
                "qemu",
                vec![
                    ("sys/class/dmi/id/sys_vendor", b"QEMU\n"),
                    ("sys/class/dmi/id/product_name", b"Standard PC (Q35 + ICH9, 2009)\n"),
                ],
                HostKind::Vm,
                "DMI names QEMU",
            ),
            ("kvm", vec![("sys/class/dmi/id/product_name", b"KVM\n")], HostKind::Vm, "KVM"),
            (
                "vmware",
                vec![
                    ("sys/class/dmi/id/sys_vendor", b"VMware, Inc.\n"),
                    ("sys/class/dmi/id/product_name", b"VMware Virtual Platform\n"),
                ],
                HostKind::Vm,
                "VMware",
            ),
            (
                "virtualbox",
                vec![
                    ("sys/class/dmi/id/sys_vendor", b"innotek GmbH\n"),
                    ("sys/class/dmi/id/product_name", b"VirtualBox\n"),
                ],
                HostKind::Vm,
                "VirtualBox",
            ),
            ("xen", vec![("sys/class/dmi/id/sys_vendor", b"Xen\n")], HostKind::Vm, "Xen"),
            (
                "hyper-v",
                vec![
                    ("sys/class/dmi/id/sys_vendor", b"Microsoft Corporation\n"),
                    ("sys/class/dmi/id/product_name", b"Virtual Machine\n"),
                ],
                HostKind::Vm,
                "Hyper-V",
            ),
            (
                "surface laptop is not hyper-v",
                vec![
                    ("sys/class/dmi/id/sys_vendor", b"Microsoft Corporation\n"),
                    ("sys/class/dmi/id/product_name", b"Surface Laptop 5\n"),
                ],
                HostKind::Physical,
                "no container",
            ),
            (
                "ec2",
                vec![
                    ("sys/class/dmi/id/sys_vendor", b"Amazon EC2\n"),
                    ("sys/class/dmi/id/product_name", b"t3.micro\n"),
                ],
                HostKind::Vm,
                "Amazon EC2",
            ),
            (
                "ec2 bare metal",
                vec![
                    ("sys/class/dmi/id/sys_vendor", b"Amazon EC2\n"),
                    ("sys/class/dmi/id/product_name", b"m5.metal\n"),
                ],
                HostKind::Physical,
                "no container",
            ),
            (
                "gce",
                vec![
                    ("sys/class/dmi/id/sys_vendor", b"Google\n"),
                    ("sys/class/dmi/id/product_name", b"Google Compute Engine\n"),
                ],
                HostKind::Vm,
                "Google Compute Engine",
            ),
            ("bhyve", vec![("sys/class/dmi/id/sys_vendor", b"BHYVE\n")], HostKind::Vm, "bhyve"),
            (
                "parallels",
                vec![
                    ("sys/class/dmi/id/sys_vendor", b"Parallels Software International Inc.\n"),
                    ("sys/class/dmi/id/product_name", b"Parallels Virtual Platform\n"),
                ],
                HostKind::Vm,
                "Parallels",
            ),
            (
                "cpuinfo hypervisor flag",
                vec![("proc/cpuinfo", CPUINFO_VM)],
                HostKind::Vm,
                "/proc/cpuinfo flags include hypervisor",
            ),
        ];
        for (name, files, want_kind, want_evidence) in cases {
            let root = tree(&files);
            let (kind, evidence) = detect_host_kind(root.path());
            assert_eq!(kind, want_kind, "{name}: evidence {evidence:?}");
            assert!(evidence.contains(want_evidence), "{name}: evidence {evidence:?}");
        }
    }

    #[test]
    fn os_release_parsing() {
        let cases = [
            (
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n",
                Some("Debian GNU/Linux 12 (bookworm)"),
            ),
            ("NAME=Alpine\nPRETTY_NAME='Alpine Linux v3.19'\n", Some("Alpine Linux v3.19")),
            ("NAME=\"Fedora Linux\"\n", Some("Fedora Linux")),
            ("PRETTY_NAME=\"\"\nNAME=Arch\n", Some("Arch")),
            ("ID=debian\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_os_release(text).as_deref(), want, "{text:?}");
        }
        let root = tree(&[("usr/lib/os-release", b"PRETTY_NAME=\"Ubuntu 24.04 LTS\"\n")]);
        assert_eq!(os_release_name(root.path()).as_deref(), Some("Ubuntu 24.04 LTS"));
    }

    #[test]
    fn address_filter() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let cases = [
            (ip("192.0.2.2"), true, false, true),
            (ip("192.0.2.2"), false, false, false),
            (ip("127.0.0.1"), true, true, false),
            (ip("10.1.1.1"), true, true, false),
            (ip("::1"), true, false, false),
            (ip("fe80::1"), true, false, false),
            (ip("fd00::2"), true, false, true),
            (ip("2001:db8::1"), true, false, true),
            (ip("0.0.0.0"), true, false, false),
        ];
        for (addr, up, lo, want) in cases {
            assert_eq!(usable_address(addr, up, lo), want, "{addr} up={up} lo={lo}");
        }
    }

    #[test]
    fn filesystem_filter() {
        let cases = [
            ("/", "ext4", 10, true, true),
            ("/", "overlay", 10, true, true),
            ("/data", "xfs", 10, true, true),
            ("/boot/efi", "vfat", 10, true, true),
            ("/data", "xfs", 0, true, false),
            ("/etc/hosts", "ext4", 10, false, false),
            ("/var/lib/docker/overlay2/abc/merged", "overlay", 10, true, false),
            ("/var/lib/docker", "ext4", 10, true, false),
            ("/var/lib/dockerish", "ext4", 10, true, true),
            ("/run/user/1000", "tmpfs", 10, true, false),
            ("/snap/core/1", "squashfs", 10, true, false),
            ("/proc/sys/fs/binfmt_misc", "binfmt_misc", 10, true, false),
            ("/dev/shm", "tmpfs", 10, true, false),
            ("/mnt/x", "nsfs", 10, true, false),
        ];
        for (mount, fs_type, total, is_dir, want) in cases {
            assert_eq!(is_real_filesystem(mount, fs_type, total, is_dir), want, "{mount} {fs_type}");
        }
    }

    #[test]
    fn one_filesystem_per_device() {
        let fs = |mount: &str, device: &str| Filesystem {
            mount_point: mount.into(),
            device: device.into(),
            fs_type: "ext4".into(),
            total_bytes: 1,
            available_bytes: 1,
        };
        let got = one_per_device(vec![
            fs("/srv/bind", "/dev/vda"),
            fs("/data", "/dev/vdb"),
            fs("/", "/dev/vda"),
            fs("/home", "/dev/vda"),
        ]);
        let mounts: Vec<_> = got.iter().map(|f| f.mount_point.as_str()).collect();
        assert_eq!(mounts, ["/", "/data"]);
        // In a container the root is an overlay and volumes come from the host device.
        let got = one_per_device(vec![fs("/", "overlay"), fs("/data", "/dev/vda"), fs("/logs", "/dev/vda")]);
        let mounts: Vec<_> = got.iter().map(|f| f.mount_point.as_str()).collect();
        assert_eq!(mounts, ["/", "/data"]);
    }

    #[test]
    fn facts_of_this_machine_are_plausible() {
        let facts = collect(None);
        assert!(!facts.hostname.is_empty(), "{facts:?}");
        assert!(!facts.os.is_empty(), "{facts:?}");
        assert!(!facts.kernel.is_empty(), "{facts:?}");
        assert_eq!(facts.arch, std::env::consts::ARCH);
        assert!(facts.cpu_cores >= 1, "{facts:?}");
        assert!(facts.memory_bytes > 64 * 1024 * 1024, "{facts:?}");
        assert!(facts.cpu_cores <= facts.machine_cpu_cores, "{facts:?}");
        assert!(facts.memory_bytes <= facts.machine_memory_bytes, "{facts:?}");
        assert!(!facts.capacity_evidence.is_empty(), "{facts:?}");
        assert!(!facts.kind_evidence.is_empty(), "{facts:?}");
        assert!(facts.disks.iter().any(|d| d.mount_point == "/"), "root filesystem missing: {facts:?}");
        assert!(facts.disks.iter().all(|d| d.total_bytes > 0), "{facts:?}");
        assert!(facts.addresses.iter().all(|a| !a.is_loopback()), "{facts:?}");
        let sorted = facts.disks.windows(2).all(|w| w[0].mount_point < w[1].mount_point);
        assert!(sorted, "{facts:?}");
    }

    #[test]
    fn fqdn_lookup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        let never = |_: &str| false;
        // No files at all: nothing known, and no error.
        assert_eq!(fqdn(root, "web1", never), "");
        assert_eq!(fqdn(root, "", never), "");
        assert_eq!(fqdn(root, "web1.example.com.", never), "web1.example.com");
        // Docker's /etc/hosts names the container by its short name only.
        std::fs::write(root.join("etc/hosts"), "127.0.0.1\tlocalhost\n172.18.0.2\td698b8b64b29\n").expect("write");
        assert_eq!(fqdn(root, "d698b8b64b29", never), "");
        // docker run --hostname web1 --domainname example.com
        std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n172.18.0.2 web1.example.com web1 # here\n")
            .expect("write");
        assert_eq!(fqdn(root, "web1", never), "web1.example.com");
        assert_eq!(fqdn(root, "WEB1", never), "web1.example.com");
        // Only DNS knows the name, through the search domain.
        std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").expect("write");
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.11\nsearch corp.example. other.example\n")
            .expect("write");
        assert_eq!(fqdn(root, "db1", |n| n == "db1.corp.example"), "db1.corp.example");
        assert_eq!(fqdn(root, "db2", |n| n == "db1.corp.example"), "");
    }

    #[test]
    fn resolving_gives_up_in_time() {
        assert!(resolves("localhost", Duration::from_secs(5)));
        assert!(!resolves("no-such-host.invalid", Duration::from_secs(5)));
    }

    #[test]
    fn hostname_override_wins() {
        assert_eq!(collect(Some("synthetic-1")).hostname, "synthetic-1");
        assert_ne!(collect(Some("  ")).hostname, "  ");
    }
}
