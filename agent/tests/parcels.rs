//! Parcels on the agent with real parcel files: a tiny parcel built with the
//! library's `build_archive`, served by an in-process gRPC server that
//! implements only `FetchParcel` (and can break off a download), fetched,
//! verified, installed, activated, switched and removed by the agent's parcel
//! driver; and a role that waits for its parcel and runs with its environment.
//! No sleeps as synchronisation: every wait polls with a deadline.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_agent::files;
use drover_agent::parcels::{ParcelPolicy, ParcelSpec, ParcelState, ParcelTarget, Parcels, ParcelsConfig, ParcelsView};
use drover_agent::reconcile::Policy;
use drover_agent::roles::{ConfigFile, ProcessSpec, RoleSpec, RoleState, RoleStatus, RunState};
use drover_agent::session::ManagerParcelFetcher;
use drover_agent::supervisor::{Supervisor, SupervisorConfig};
use drover_parcels::{BuiltParcel, ParcelMeta, Scripts, build_archive};
use drover_proto::v1;
use drover_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(30);
const CHUNK: usize = 16 * 1024;

/// A repository serving parcel files over `FetchParcel`, recording each
/// request; the first request of a file can be cut off after some bytes.
#[derive(Default)]
struct Repo {
    files: Mutex<HashMap<String, Vec<u8>>>,
    requests: Mutex<Vec<(String, u64)>>,
    break_first_after: Option<u64>,
}

impl Repo {
    fn add(&self, parcel: &BuiltParcel) {
        let bytes = std::fs::read(&parcel.path).expect("read parcel");
        self.files.lock().expect("lock").insert(parcel.id.file_name(), bytes);
    }

    fn requests(&self) -> Vec<(String, u64)> {
        self.requests.lock().expect("lock").clone()
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::ParcelChunk, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Repo {
    async fn enroll(&self, _: Request<v1::EnrollRequest>) -> Result<Response<v1::EnrollResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type SessionStream = Pin<Box<dyn Stream<Item = Result<v1::ManagerMessage, Status>> + Send>>;

    async fn session(&self, _: Request<Streaming<v1::AgentMessage>>) -> Result<Response<Self::SessionStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn reply(&self, _: Request<Streaming<v1::ReplyChunk>>) -> Result<Response<v1::ReplyAck>, Status> {
        Err(Status::unimplemented("this test's manager sends no requests"))
    }

    type FetchParcelStream = ChunkStream;

    async fn fetch_parcel(&self, request: Request<v1::FetchParcelRequest>) -> Result<Response<ChunkStream>, Status> {
        let req = request.into_inner();
        let first = {
            let mut requests = self.requests.lock().expect("lock");
            let first = !requests.iter().any(|(f, _)| *f == req.file_name);
            requests.push((req.file_name.clone(), req.offset));
            first
        };
        let bytes = self
            .files
            .lock()
            .expect("lock")
            .get(&req.file_name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no parcel file {}", req.file_name)))?;
        let total = bytes.len() as u64;
        let start = usize::try_from(req.offset).expect("offset").min(bytes.len());
        let end = match self.break_first_after {
            Some(n) if first => usize::try_from(n).expect("n").min(bytes.len()),
            _ => bytes.len(),
        };
        let chunks: Vec<Result<v1::ParcelChunk, Status>> = bytes[start..end]
            .chunks(CHUNK)
            .map(|c| Ok(v1::ParcelChunk { data: c.to_vec(), total_size: total }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

async fn serve(repo: Arc<Repo>) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(
        Server::builder()
            .add_service(AgentServiceServer::from_arc(repo))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect_lazy()
}

/// Bytes that do not compress, so the archive is big enough to cut in pieces.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// `hello-VERSION-bookworm.parcel` with `bin/hello`, some data and an env
/// script defining HELLO_HOME, PATH and WHO.
fn build_hello(work: &Path, version: &str) -> BuiltParcel {
    let staging = work.join(format!("staging-{version}"));
    std::fs::create_dir_all(staging.join("bin")).expect("mkdir");
    std::fs::create_dir_all(staging.join("meta")).expect("mkdir");
    std::fs::create_dir_all(staging.join("share")).expect("mkdir");
    let hello = staging.join("bin/hello");
    std::fs::write(
        &hello,
        format!(
            "#!/bin/sh\necho \"hello {version} HELLO_HOME=$HELLO_HOME WHO=$WHO PATH=$PATH\"\n\
             cat \"$ROLE_DIR/hello.conf\"\nexec sleep 600\n"
        ),
    )
    .expect("write");
    std::fs::set_permissions(&hello, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(staging.join("share/data.bin"), noise(200 * 1024, version.len() as u64)).expect("write");
    std::fs::write(
        staging.join("meta/hello_env.sh"),
        "export HELLO_HOME=$PARCELS_ROOT/$PARCEL_DIRNAME\nexport PATH=$HELLO_HOME/bin:$PATH\nexport WHO=parcel\n",
    )
    .expect("write");
    let meta = ParcelMeta {
        schema_version: 1,
        name: "hello".into(),
        version: version.into(),
        distro: "bookworm".into(),
        depends: Vec::new(),
        conflicts: Vec::new(),
        provides: Vec::new(),
        components: Vec::new(),
        scripts: Scripts { defines: "hello_env.sh".into() },
    };
    build_archive(&staging, &meta, &work.join("repo")).expect("build parcel")
}

fn spec(p: &BuiltParcel, target: ParcelTarget) -> ParcelSpec {
    ParcelSpec {
        name: p.id.name.clone(),
        version: p.id.version.clone(),
        file_name: p.id.file_name(),
        sha256: p.sha256.clone(),
        size: p.size,
        target,
    }
}

fn fast() -> ParcelPolicy {
    ParcelPolicy {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        op_retry: Duration::from_millis(200),
        progress_interval: Duration::from_millis(10),
        ..ParcelPolicy::default()
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    repo: Arc<Repo>,
    channel: Channel,
}

async fn setup(break_first_after: Option<u64>) -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().to_path_buf();
    let repo = Arc::new(Repo { break_first_after, ..Repo::default() });
    let channel = serve(repo.clone()).await;
    Setup { root: work.join("parcels"), work, repo, channel, _tmp: tmp }
}

impl Setup {
    fn start(&self, policy: ParcelPolicy) -> Parcels {
        let fetcher = Arc::new(ManagerParcelFetcher::new(self.channel.clone()));
        Parcels::start(ParcelsConfig { dir: self.root.clone(), policy, fetcher }).expect("start parcels")
    }
}

async fn wait_view(parcels: &Parcels, what: &str, pred: impl Fn(&ParcelsView) -> bool) -> Arc<ParcelsView> {
    let mut rx = parcels.view();
    let deadline = Instant::now() + WAIT;
    loop {
        let view = rx.borrow_and_update().clone();
        if pred(&view) {
            return view;
        }
        let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
        assert!(matches!(changed, Ok(Ok(()))), "timed out waiting until {what}; last view: {:#?}", rx.borrow());
    }
}

fn state_of(view: &ParcelsView, version: &str) -> Option<ParcelState> {
    view.statuses.iter().find(|s| s.name == "hello" && s.version == version).map(|s| s.state)
}

/// Names in `dir`, sorted.
fn ls(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn downloads_activates_switches_and_removes_versions() {
    let s = setup(None).await;
    let v1 = build_hello(&s.work, "1.0");
    let v2 = build_hello(&s.work, "2.0");
    s.repo.add(&v1);
    s.repo.add(&v2);
    let parcels = s.start(fast());

    parcels.set_desired(vec![spec(&v1, ParcelTarget::Active)]);
    let view = wait_view(&parcels, "1.0 is active", |v| state_of(v, "1.0") == Some(ParcelState::Active)).await;
    let st = &view.statuses[0];
    assert_eq!((st.downloaded_bytes, st.total_bytes, st.error.as_str()), (v1.size, v1.size, ""));
    assert_eq!(view.active.get("hello").map(String::as_str), Some("1.0"));
    assert_eq!(std::fs::read_link(s.root.join("hello")).expect("link"), PathBuf::from("hello-1.0"));
    assert!(s.root.join("hello/bin/hello").is_file());
    assert!(ls(&s.root.join(".downloads")).is_empty(), "the archive is deleted after the install");
    assert_eq!(s.repo.requests(), [(v1.id.file_name(), 0)]);

    // Upgrade: 2.0 becomes active, 1.0 stays on disk for a rollback.
    parcels.set_desired(vec![spec(&v1, ParcelTarget::Distributed), spec(&v2, ParcelTarget::Active)]);
    wait_view(&parcels, "2.0 active, 1.0 distributed", |v| {
        state_of(v, "2.0") == Some(ParcelState::Active) && state_of(v, "1.0") == Some(ParcelState::Distributed)
    })
    .await;
    assert_eq!(std::fs::read_link(s.root.join("hello")).expect("link"), PathBuf::from("hello-2.0"));
    assert!(s.root.join("hello-1.0/bin/hello").is_file());

    // Rollback is the same switch the other way, with nothing downloaded.
    parcels.set_desired(vec![spec(&v1, ParcelTarget::Active), spec(&v2, ParcelTarget::Distributed)]);
    wait_view(&parcels, "1.0 active again", |v| state_of(v, "1.0") == Some(ParcelState::Active)).await;
    assert_eq!(s.repo.requests().len(), 2);

    // An unlisted version that is not active is removed.
    parcels.set_desired(vec![spec(&v1, ParcelTarget::Active)]);
    wait_view(&parcels, "2.0 removed", |v| v.statuses.len() == 1).await;
    assert_eq!(ls(&s.root), [".downloads", "hello", "hello-1.0"]);

    // Nothing listed: deactivated, then removed.
    parcels.set_desired(Vec::new());
    wait_view(&parcels, "everything removed", |v| v.statuses.is_empty() && v.active.is_empty()).await;
    assert_eq!(ls(&s.root), [".downloads"]);
}

#[tokio::test]
async fn an_interrupted_download_resumes_from_where_it_stopped() {
    let cut = 4 * CHUNK as u64;
    let s = setup(Some(cut)).await;
    let v1 = build_hello(&s.work, "1.0");
    assert!(v1.size > cut, "the parcel must be bigger than the cut: {}", v1.size);
    s.repo.add(&v1);
    let parcels = s.start(fast());
    parcels.set_desired(vec![spec(&v1, ParcelTarget::Active)]);
    wait_view(&parcels, "1.0 is active", |v| state_of(v, "1.0") == Some(ParcelState::Active)).await;
    assert_eq!(s.repo.requests(), [(v1.id.file_name(), 0), (v1.id.file_name(), cut)]);
    assert!(ls(&s.root.join(".downloads")).is_empty());
}

#[tokio::test]
async fn a_partial_file_left_by_an_earlier_agent_is_resumed() {
    let s = setup(None).await;
    let v1 = build_hello(&s.work, "1.0");
    s.repo.add(&v1);
    let downloads = s.root.join(".downloads");
    std::fs::create_dir_all(&downloads).expect("mkdir");
    let bytes = std::fs::read(&v1.path).expect("read");
    std::fs::write(downloads.join(format!("{}.part", v1.id.file_name())), &bytes[..1000]).expect("write");
    // An interrupted install and an unrelated download are cleaned up.
    std::fs::create_dir_all(s.root.join(".partial-hello-1.0-x/bin")).expect("mkdir");
    std::fs::write(downloads.join("other-1-bookworm.parcel.part"), b"x").expect("write");
    let parcels = s.start(fast());
    assert!(!s.root.join(".partial-hello-1.0-x").exists(), "cleaned up at start");
    parcels.set_desired(vec![spec(&v1, ParcelTarget::Distributed)]);
    wait_view(&parcels, "1.0 distributed", |v| state_of(v, "1.0") == Some(ParcelState::Distributed)).await;
    assert_eq!(s.repo.requests(), [(v1.id.file_name(), 1000)]);
    assert!(ls(&downloads).is_empty(), "{:?}", ls(&downloads));
}

#[tokio::test]
async fn a_hash_mismatch_fails_clearly_and_leaves_nothing_behind() {
    let s = setup(None).await;
    let v1 = build_hello(&s.work, "1.0");
    s.repo.add(&v1);
    // No retry within the test, so the disk can be inspected.
    let parcels = s.start(ParcelPolicy { retry_initial: Duration::from_secs(3600), ..fast() });
    let mut wrong = spec(&v1, ParcelTarget::Active);
    wrong.sha256 = "ab".repeat(32);
    parcels.set_desired(vec![wrong]);
    let view = wait_view(&parcels, "1.0 failed", |v| state_of(v, "1.0") == Some(ParcelState::Failed)).await;
    let error = &view.statuses[0].error;
    assert!(error.starts_with("could not install parcel hello 1.0: "), "{error}");
    assert!(error.contains("sha256 mismatch") && error.contains(&"ab".repeat(32)), "{error}");
    assert!(view.active.is_empty());
    assert_eq!(ls(&s.root), [".downloads"], "nothing installed, no partial directory");
    assert!(ls(&s.root.join(".downloads")).is_empty(), "the bad download is deleted");
}

#[tokio::test]
async fn a_download_that_does_not_fit_is_refused_before_it_starts() {
    let s = setup(None).await;
    let v1 = build_hello(&s.work, "1.0");
    s.repo.add(&v1);
    let parcels =
        s.start(ParcelPolicy { reserve_bytes: u64::MAX / 4, retry_initial: Duration::from_secs(3600), ..fast() });
    parcels.set_desired(vec![spec(&v1, ParcelTarget::Active)]);
    let view = wait_view(&parcels, "1.0 failed", |v| state_of(v, "1.0") == Some(ParcelState::Failed)).await;
    let error = &view.statuses[0].error;
    assert!(error.starts_with("not enough free disk space for parcel hello 1.0 in "), "{error}");
    assert!(error.contains("bytes needed") && error.contains("bytes free"), "{error}");
    assert!(s.repo.requests().is_empty(), "nothing was fetched");
}

async fn wait_role(sup: &Supervisor, id: &str, what: &str, pred: impl Fn(&RoleStatus) -> bool) -> RoleStatus {
    let mut rx = sup.statuses();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = rx.borrow_and_update().iter().find(|s| s.role_id == id && pred(s)) {
            return s.clone();
        }
        let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
        assert!(matches!(changed, Ok(Ok(()))), "timed out waiting for {id}: {what}; last statuses: {:#?}", rx.borrow());
    }
}

#[tokio::test]
async fn a_role_waits_for_its_parcel_and_runs_with_its_environment() {
    let s = setup(None).await;
    let v1 = build_hello(&s.work, "1.0");
    s.repo.add(&v1);
    let parcels = s.start(fast());
    let root = parcels.root().to_path_buf();
    let data = s.work.join("data");
    let config = SupervisorConfig {
        policy: Policy { host: "web1".into(), ..Policy::default() },
        persist: false,
        parcels_root: Some(root.clone()),
        poll_interval: Duration::from_millis(100),
        ..SupervisorConfig::supervise(data.clone())
    };
    let sup = Supervisor::start_with_parcels(config, Some(parcels.view())).expect("supervisor");
    let conf = "conf root=${PARCELS_ROOT}\n";
    let role = RoleSpec {
        role_id: "hello-1".into(),
        config_revision: 1,
        files: vec![ConfigFile {
            path: "hello.conf".into(),
            content: conf.into(),
            sha256: files::sha256_hex(conf.as_bytes()),
            mode: 0,
        }],
        process: ProcessSpec {
            program: "${PARCELS_ROOT}/hello/bin/hello".into(),
            env: BTreeMap::from([("WHO".to_owned(), "role".to_owned())]),
            stop_grace: Duration::from_millis(500),
            ..ProcessSpec::default()
        },
        run_state: RunState::Running,
        parcels: vec!["hello".into()],
        ..RoleSpec::default()
    };
    sup.set_desired(1, vec![role]);
    let st = wait_role(&sup, "hello-1", "failed for want of its parcel", |s| s.state == RoleState::Failed).await;
    assert_eq!(st.last_error, "parcel hello is not active on host web1");
    assert_eq!(st.restart_count, 0);

    parcels.set_desired(vec![spec(&v1, ParcelTarget::Active)]);
    let st = wait_role(&sup, "hello-1", "running", |s| s.state == RoleState::Running).await;
    assert!(st.last_error.is_empty(), "{}", st.last_error);
    let log = data.join("roles/hello-1").join(files::LOG_FILE);
    let home = root.join("hello-1.0");
    let want_first = format!("hello 1.0 HELLO_HOME={} WHO=role PATH={}/bin:", home.display(), home.display());
    let want_conf = format!("conf root={}", root.display());
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 {
            let lines: Vec<&str> = text.lines().collect();
            assert!(lines[0].starts_with(&want_first), "{text}\nwanted {want_first}");
            assert_eq!(lines[1], want_conf);
            break;
        }
        assert!(Instant::now() < deadline, "timed out waiting for the role's log: {text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    sup.set_desired(2, Vec::new());
    let deadline = Instant::now() + WAIT;
    while !sup.statuses().borrow().is_empty() {
        assert!(Instant::now() < deadline, "timed out waiting for the role to be removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `NAME-1.0-bookworm.parcel`: an env script and the given `depends` and `conflicts`.
fn build_related(work: &Path, name: &str, depends: &[&str], conflicts: &[&str]) -> BuiltParcel {
    let staging = work.join(format!("staging-{name}"));
    std::fs::create_dir_all(staging.join("meta")).expect("mkdir");
    let script = format!("{name}_env.sh");
    std::fs::write(staging.join("meta").join(&script), format!("export {}_HOME=x\n", name.to_uppercase()))
        .expect("write");
    let meta = ParcelMeta {
        schema_version: 1,
        name: name.into(),
        version: "1.0".into(),
        distro: "bookworm".into(),
        depends: depends.iter().map(|d| (*d).to_owned()).collect(),
        conflicts: conflicts.iter().map(|c| (*c).to_owned()).collect(),
        provides: Vec::new(),
        components: Vec::new(),
        scripts: Scripts { defines: script },
    };
    build_archive(&staging, &meta, &work.join("repo")).expect("build parcel")
}

#[tokio::test]
async fn activation_is_refused_by_depends_and_conflicts_naming_both_parcels() {
    let s = setup(None).await;
    let app = build_related(&s.work, "app", &["base"], &[]);
    let base = build_related(&s.work, "base", &[], &[]);
    let other = build_related(&s.work, "other", &[], &["app"]);
    for p in [&app, &base, &other] {
        s.repo.add(p);
    }
    // A long operation retry: only the rule "retry after another activation" can settle `app`.
    let parcels = s.start(ParcelPolicy { op_retry: Duration::from_secs(3600), ..fast() });
    let status = |v: &ParcelsView, name: &str| v.statuses.iter().find(|s| s.name == name).cloned();

    // `app` alone: its dependency is not active.
    parcels.set_desired(vec![spec(&app, ParcelTarget::Active)]);
    let view =
        wait_view(&parcels, "app refused", |v| status(v, "app").is_some_and(|s| s.state == ParcelState::Failed)).await;
    let st = status(&view, "app").expect("app");
    assert_eq!(st.error, "activate app-1.0: depends on base, which is not active on this host");
    assert!(view.active.is_empty() && !s.root.join("app").exists(), "nothing activated");

    // With `base` listed too, `app` (first in name order) is refused once more, then activated
    // right after `base`.
    parcels.set_desired(vec![spec(&app, ParcelTarget::Active), spec(&base, ParcelTarget::Active)]);
    wait_view(&parcels, "app and base active", |v| v.active.len() == 2).await;

    // `other` conflicts with the active `app`.
    parcels.set_desired(vec![
        spec(&app, ParcelTarget::Active),
        spec(&base, ParcelTarget::Active),
        spec(&other, ParcelTarget::Active),
    ]);
    let view =
        wait_view(&parcels, "other refused", |v| status(v, "other").is_some_and(|s| s.state == ParcelState::Failed))
            .await;
    assert_eq!(
        status(&view, "other").expect("other").error,
        "activate other-1.0: conflicts with active parcel app-1.0 (declared by other-1.0)"
    );
    assert!(!view.active.contains_key("other") && !s.root.join("other").exists());
}
