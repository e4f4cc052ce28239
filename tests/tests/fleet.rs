//! In-process fleet test: a real manager (real TLS, real gRPC, SQLite) and 60
//! agent sessions from the agent library in one process. Covers enrollment,
//! healthy hosts with metrics, dropped connections, a manager restart with
//! every agent reconnecting on its own, and decommissioning a live host.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drover_agent::session::{SessionConfig, SessionObserver};
use drover_agent::{enroll, error::AgentError};
use drover_manager::{Manager, ManagerConfig, ManagerHandle};
use drover_proto::tls::ManagerAddr;
use drover_proto::token::EnrollmentToken;
use drover_tests::rest::Rest;
use drover_tests::{eventually, spawn_synthetic_session, synthetic_facts};
use tokio::net::TcpListener;
use tokio::sync::watch;

const AGENTS: usize = 60;
const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "fleet-test-password";

#[derive(Default)]
struct Counts {
    connected: AtomicUsize,
    acked: AtomicUsize,
    disconnected: AtomicUsize,
}

impl SessionObserver for Counts {
    fn connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }
    fn heartbeat_acked(&self, _rtt: Duration) {
        self.acked.fetch_add(1, Ordering::Relaxed);
    }
    fn disconnected(&self, _reason: &str) {
        self.disconnected.fetch_add(1, Ordering::Relaxed);
    }
}

fn config(dir: &std::path::Path) -> ManagerConfig {
    let mut c = ManagerConfig::for_data_dir(dir);
    c.admin_password = Some(PASSWORD.into());
    c.heartbeat_interval = Duration::from_millis(200);
    c.host_lost_after = Duration::from_secs(2);
    c.flush_interval = Duration::from_millis(100);
    c
}

async fn start(dir: &std::path::Path, http: &str, grpc: &str) -> ManagerHandle {
    let http = TcpListener::bind(http).await.unwrap();
    let grpc = TcpListener::bind(grpc).await.unwrap();
    Manager::start(config(dir), http, grpc).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_agents_survive_drops_and_a_manager_restart() {
    drover_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let manager = start(dir.path(), "127.0.0.1:0", "127.0.0.1:0").await;
    let (http_addr, grpc_addr) = (manager.http_addr, manager.grpc_addr);
    let rest = Rest::new(http_addr, "admin", PASSWORD);
    let token: EnrollmentToken = rest.enrollment_token(AGENTS as u32, 600).await.unwrap().parse().unwrap();
    let addr: ManagerAddr = format!("https://127.0.0.1:{}", grpc_addr.port()).parse().unwrap();

    // Enroll concurrently, then run every session in this process.
    let enrolls = (0..AGENTS).map(|i| {
        let (addr, token) = (addr.clone(), token.clone());
        async move { enroll::enroll(&addr, &token, None, &synthetic_facts(i), &BTreeMap::new()).await }
    });
    let identities: Vec<_> = futures::future::join_all(enrolls).await.into_iter().map(Result::unwrap).collect();
    let counts = Arc::new(Counts::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sessions = Vec::new();
    let mut host_ids = Vec::new();
    for (i, identity) in identities.into_iter().enumerate() {
        host_ids.push(identity.host_id.clone());
        let config = SessionConfig::new(addr.clone(), identity, synthetic_facts(i));
        let observer: Arc<dyn SessionObserver> = counts.clone();
        sessions.push(spawn_synthetic_session(config, observer, stop_rx.clone()));
    }

    eventually(WAIT, "all hosts healthy with metrics", || async {
        let hosts = rest.hosts("status=healthy").await.ok()?;
        (hosts.len() == AGENTS && hosts.iter().all(|h| !h["metrics"].is_null())).then_some(())
    })
    .await;
    let first = rest.hosts("").await.unwrap();
    assert!(first.iter().all(|h| h["kind"] == "container" && h["cpu_cores"] == 4));
    assert_eq!(counts.connected.load(Ordering::Relaxed), AGENTS);

    // Restart the manager on the same ports: every agent reconnects by itself.
    let acked_before = counts.acked.load(Ordering::Relaxed);
    manager.shutdown().await;
    eventually(WAIT, "every agent to notice the manager is gone", || async {
        (counts.disconnected.load(Ordering::Relaxed) >= AGENTS).then_some(())
    })
    .await;
    let manager = start(dir.path(), &http_addr.to_string(), &grpc_addr.to_string()).await;
    eventually(WAIT, "every agent to reconnect after the restart", || async {
        (counts.connected.load(Ordering::Relaxed) >= 2 * AGENTS).then_some(())
    })
    .await;
    eventually(WAIT, "heartbeats to flow again", || async {
        (counts.acked.load(Ordering::Relaxed) >= acked_before + 2 * AGENTS).then_some(())
    })
    .await;
    assert_eq!(rest.count("healthy").await.unwrap(), AGENTS as u64);
    assert_eq!(rest.count("lost").await.unwrap(), 0);

    // Decommission one live host: its session ends with a fatal refusal.
    let victim = host_ids[7].clone();
    let (status, body) = rest.raw(reqwest::Method::DELETE, &format!("/api/v1/hosts/{victim}"), None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let result = tokio::time::timeout(WAIT, sessions.remove(7)).await.expect("session should end").unwrap();
    match result {
        Err(e @ AgentError::SessionRefused(_)) => assert!(e.to_string().contains("decommissioned"), "{e}"),
        other => panic!("expected a decommission refusal, got {other:?}"),
    }
    assert_eq!(rest.count("decommissioned").await.unwrap(), 1);
    assert_eq!(rest.count("healthy").await.unwrap(), AGENTS as u64 - 1);

    // Stop the rest cleanly: their hosts go lost once heartbeats stop.
    stop_tx.send(true).unwrap();
    for s in sessions {
        tokio::time::timeout(WAIT, s).await.expect("session stops").unwrap().unwrap();
    }
    eventually(WAIT, "stopped hosts to turn lost", || async {
        (rest.count("lost").await.ok()? == AGENTS as u64 - 1).then_some(())
    })
    .await;
    manager.shutdown().await;
}
