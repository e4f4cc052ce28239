//! Tables for the parcel reconciler: given the desired list and the disk, what is
//! downloaded, activated, deactivated and removed, and what is reported.

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn spec(name: &str, version: &str, target: ParcelTarget) -> ParcelSpec {
    ParcelSpec {
        name: name.into(),
        version: version.into(),
        file_name: format!("{name}-{version}-bookworm.parcel"),
        sha256: "00".repeat(32),
        size: 1000,
        target,
    }
}

fn active(name: &str, version: &str) -> ParcelSpec {
    spec(name, version, ParcelTarget::Active)
}

fn distributed(name: &str, version: &str) -> ParcelSpec {
    spec(name, version, ParcelTarget::Distributed)
}

/// `installed` as "name-version", with a trailing `*` for the active one.
fn local(installed: &[&str]) -> LocalParcels {
    let mut l = LocalParcels::default();
    for item in installed {
        let (nv, is_active) = match item.strip_suffix('*') {
            Some(nv) => (nv, true),
            None => (*item, false),
        };
        let (n, v) = nv.split_once('-').expect("name-version");
        l.installed.insert((n.into(), v.into()));
        if is_active {
            l.active.insert(n.into(), v.into());
        }
    }
    l
}

fn render(e: &Effect) -> Option<String> {
    Some(match e {
        Effect::Distribute(s) => format!("download {}-{}", s.name, s.version),
        Effect::Run(Op::Activate { name, version }) => format!("activate {name}-{version}"),
        Effect::Run(Op::Deactivate { name, version }) => format!("deactivate {name}-{version}"),
        Effect::Run(Op::Remove { name, version }) => format!("remove {name}-{version}"),
        Effect::PruneDownloads { .. } | Effect::Report(_) => return None,
    })
}

struct H {
    r: ParcelReconciler,
    t0: Instant,
}

impl H {
    fn new(disk: &[&str]) -> H {
        H { r: ParcelReconciler::new(ParcelPolicy::default(), local(disk)), t0: Instant::now() }
    }

    fn at(&mut self, at: Duration, event: Event) -> Vec<String> {
        self.r.handle(self.t0 + at, event).iter().filter_map(render).collect()
    }

    fn states(&self) -> Vec<String> {
        self.r
            .statuses()
            .iter()
            .map(|s| {
                let state = match s.state {
                    ParcelState::Downloading => "downloading",
                    ParcelState::Distributed => "distributed",
                    ParcelState::Active => "active",
                    ParcelState::Failed => "failed",
                };
                format!("{}-{} {state}", s.name, s.version)
            })
            .collect()
    }
}

fn distributed_ok(name: &str, version: &str, disk: &[&str]) -> Event {
    Event::Distributed { name: name.into(), version: version.into(), result: Ok(()), local: Some(local(disk)) }
}

fn op_ok(op: Op, disk: &[&str]) -> Event {
    Event::OpDone { op, result: Ok(()), local: Some(local(disk)) }
}

/// A row of the decision table: what it shows, the disk, the desired list, the first effects.
type Row = (&'static str, &'static [&'static str], Vec<ParcelSpec>, &'static [&'static str]);

#[test]
fn decisions_from_desired_and_disk() {
    let table: &[Row] = &[
        ("nothing wanted, nothing there", &[], vec![], &[]),
        (
            "download what is missing",
            &[],
            vec![active("redis", "7"), distributed("zk", "3")],
            &["download redis-7", "download zk-3"],
        ),
        (
            "at most two downloads at a time",
            &[],
            vec![distributed("a", "1"), distributed("b", "1"), distributed("c", "1")],
            &["download a-1", "download b-1"],
        ),
        ("activate an installed version", &["redis-7"], vec![active("redis", "7")], &["activate redis-7"]),
        ("an active version is left alone", &["redis-7*"], vec![active("redis", "7")], &[]),
        (
            "switch: the new version becomes active",
            &["redis-6*", "redis-7"],
            vec![distributed("redis", "6"), active("redis", "7")],
            &["activate redis-7"],
        ),
        ("distributed target deactivates", &["redis-7*"], vec![distributed("redis", "7")], &["deactivate redis-7"]),
        ("unlisted and inactive is removed", &["redis-6", "redis-7*"], vec![active("redis", "7")], &["remove redis-6"]),
        ("unlisted name is deactivated first", &["old-1*"], vec![], &["deactivate old-1"]),
        (
            "the active version stays while the new one downloads",
            &["redis-6*"],
            vec![active("redis", "7")],
            &["download redis-7"],
        ),
        (
            "the first listed active version wins",
            &["redis-6", "redis-7"],
            vec![active("redis", "7"), active("redis", "6")],
            &["activate redis-7"],
        ),
    ];
    for (what, disk, desired, want) in table {
        let mut h = H::new(disk);
        let got = h.at(Duration::ZERO, Event::Desired(desired.clone()));
        assert_eq!(got, *want, "{what}");
    }
}

#[test]
fn nothing_happens_before_the_first_desired_state() {
    let mut h = H::new(&["old-1*", "redis-6"]);
    assert!(h.at(Duration::ZERO, Event::Tick).is_empty());
    assert_eq!(h.states(), ["old-1 active", "redis-6 distributed"], "the disk is reported as it is");
}

#[test]
fn download_then_activate_then_remove_the_old_version() {
    let mut h = H::new(&["redis-6*"]);
    assert_eq!(h.at(Duration::ZERO, Event::Desired(vec![active("redis", "7")])), ["download redis-7"]);
    h.at(SEC, Event::Progress { name: "redis".into(), version: "7".into(), downloaded: 400 });
    let s = h.r.statuses().into_iter().find(|s| s.version == "7").expect("status");
    assert_eq!((s.state, s.downloaded_bytes, s.total_bytes), (ParcelState::Downloading, 400, 1000));
    assert_eq!(h.at(2 * SEC, distributed_ok("redis", "7", &["redis-6*", "redis-7"])), ["activate redis-7"]);
    let activate = Op::Activate { name: "redis".into(), version: "7".into() };
    assert_eq!(h.at(2 * SEC, op_ok(activate, &["redis-6", "redis-7*"])), ["remove redis-6"]);
    let remove = Op::Remove { name: "redis".into(), version: "6".into() };
    assert!(h.at(2 * SEC, op_ok(remove, &["redis-7*"])).is_empty());
    assert_eq!(h.states(), ["redis-7 active"]);
    let s = &h.r.statuses()[0];
    assert_eq!((s.downloaded_bytes, s.total_bytes), (1000, 1000));
}

#[test]
fn failed_downloads_are_retried_with_backoff_while_others_go_on() {
    let mut h = H::new(&[]);
    let desired = vec![distributed("a", "1"), distributed("b", "1"), distributed("c", "1")];
    assert_eq!(h.at(Duration::ZERO, Event::Desired(desired)), ["download a-1", "download b-1"]);
    let failed = Event::Distributed {
        name: "a".into(),
        version: "1".into(),
        result: Err("sha256 mismatch".into()),
        local: Some(local(&[])),
    };
    assert_eq!(h.at(SEC, failed.clone()), ["download c-1"], "the free slot goes to the next parcel");
    assert_eq!(h.states(), ["a-1 failed", "b-1 downloading", "c-1 downloading"]);
    assert_eq!(h.r.statuses()[0].error, "sha256 mismatch");
    assert_eq!(h.r.deadline(), Some(h.t0 + SEC + 5 * SEC));
    assert!(h.at(6 * SEC, Event::Tick).is_empty(), "both slots are busy");
    assert_eq!(h.at(6 * SEC, distributed_ok("b", "1", &["b-1"])), ["download a-1"]);
    // A second failure waits twice as long.
    let failed = Event::Distributed {
        name: "a".into(),
        version: "1".into(),
        result: Err("sha256 mismatch".into()),
        local: Some(local(&["b-1"])),
    };
    assert!(h.at(7 * SEC, failed).is_empty());
    assert_eq!(h.r.deadline(), Some(h.t0 + 7 * SEC + 10 * SEC));
    // A disk that could not be read leaves the last look in place.
    let unread = Event::Distributed { name: "c".into(), version: "1".into(), result: Err("x".into()), local: None };
    assert!(h.at(8 * SEC, unread).is_empty(), "b-1 is still known to be installed");
    assert_eq!(h.states(), ["a-1 failed", "b-1 distributed", "c-1 failed"]);
}

#[test]
fn a_failed_activation_is_reported_and_leaves_the_previous_version_active() {
    let mut h = H::new(&["redis-6*", "redis-7"]);
    let desired = vec![distributed("redis", "6"), active("redis", "7")];
    assert_eq!(h.at(Duration::ZERO, Event::Desired(desired.clone())), ["activate redis-7"]);
    let op = Op::Activate { name: "redis".into(), version: "7".into() };
    let failed = Event::OpDone {
        op: op.clone(),
        result: Err("could not activate".into()),
        local: Some(local(&["redis-6*", "redis-7"])),
    };
    assert!(h.at(SEC, failed).is_empty());
    assert_eq!(h.states(), ["redis-6 active", "redis-7 failed"]);
    assert_eq!(h.r.deadline(), Some(h.t0 + 31 * SEC));
    assert!(h.at(2 * SEC, Event::Tick).is_empty(), "not before the retry time");
    // The same desired state again changes nothing; a new one retries at once.
    assert!(h.at(3 * SEC, Event::Desired(desired)).is_empty());
    assert_eq!(h.at(31 * SEC, Event::Tick), ["activate redis-7"]);
    // When the manager gives up on 7, the failure is forgotten.
    h.at(32 * SEC, Event::OpDone { op, result: Err("again".into()), local: Some(local(&["redis-6*", "redis-7"])) });
    assert_eq!(h.at(33 * SEC, Event::Desired(vec![active("redis", "6")])), ["remove redis-7"]);
    assert_eq!(h.states(), ["redis-6 active", "redis-7 distributed"]);
}

#[test]
fn a_refused_activation_is_tried_again_once_another_one_succeeds() {
    let mut h = H::new(&["app-1", "base-1"]);
    // `app` depends on `base`; activations run in name order.
    assert_eq!(h.at(Duration::ZERO, Event::Desired(vec![active("app", "1"), active("base", "1")])), ["activate app-1"]);
    let refused = Event::OpDone {
        op: Op::Activate { name: "app".into(), version: "1".into() },
        result: Err("activate app-1: depends on base, which is not active on this host".into()),
        local: Some(local(&["app-1", "base-1"])),
    };
    assert_eq!(h.at(SEC, refused), ["activate base-1"]);
    assert_eq!(h.states(), ["app-1 failed", "base-1 distributed"]);
    let op = Op::Activate { name: "base".into(), version: "1".into() };
    assert_eq!(h.at(2 * SEC, op_ok(op, &["app-1", "base-1*"])), ["activate app-1"], "not after op_retry");
    let op = Op::Activate { name: "app".into(), version: "1".into() };
    assert!(h.at(2 * SEC, op_ok(op, &["app-1*", "base-1*"])).is_empty());
    assert_eq!(h.states(), ["app-1 active", "base-1 active"]);
}

#[test]
fn operations_run_one_at_a_time() {
    let mut h = H::new(&["a-1", "b-1", "c-1*"]);
    assert_eq!(h.at(Duration::ZERO, Event::Desired(vec![active("a", "1")])), ["activate a-1"]);
    assert!(h.at(Duration::ZERO, Event::Tick).is_empty());
    let op = Op::Activate { name: "a".into(), version: "1".into() };
    assert_eq!(h.at(SEC, op_ok(op, &["a-1*", "b-1", "c-1*"])), ["deactivate c-1"]);
    let op = Op::Deactivate { name: "c".into(), version: "1".into() };
    assert_eq!(h.at(SEC, op_ok(op, &["a-1*", "b-1", "c-1"])), ["remove b-1"]);
}

#[test]
fn a_download_no_longer_wanted_finishes_and_is_then_removed() {
    let mut h = H::new(&[]);
    assert_eq!(h.at(Duration::ZERO, Event::Desired(vec![distributed("a", "1")])), ["download a-1"]);
    assert!(h.at(SEC, Event::Desired(vec![])).is_empty());
    assert_eq!(h.states(), ["a-1 downloading"]);
    assert_eq!(h.at(2 * SEC, distributed_ok("a", "1", &["a-1"])), ["remove a-1"]);
}

#[test]
fn free_space_is_checked_against_twice_the_size() {
    let s = active("redis", "7");
    let root = Path::new("/var/lib/drover-agent/parcels");
    assert!(check_space(&s, 0, 2000, 0, root).is_ok());
    assert!(check_space(&s, 500, 1500, 0, root).is_ok(), "the partial download already counts");
    let err = check_space(&s, 0, 1999, 0, root).expect_err("too little");
    assert_eq!(
        err,
        "not enough free disk space for parcel redis 7 in /var/lib/drover-agent/parcels: 2000 bytes needed (the archive and about as much unpacked), 1999 bytes free"
    );
    assert!(check_space(&s, 0, 2000, 1, root).is_err(), "the reserve counts");
    assert!(free_bytes(Path::new("/")).is_ok());
}
