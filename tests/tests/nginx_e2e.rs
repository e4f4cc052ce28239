//! End-to-end with the real binaries and a real nginx from the nginx parcel: a
//! manager and three agents on one machine (separate data dirs, everything on
//! 127.0.0.1, role-level ports). Service `web` (nginx, two roles serving a page
//! naming themselves) and service `lb` (nginx, `upstream_service = web`).
//! Requests through lb reach both web roles; a third web role shows up in lb's
//! nginx.conf on its host and answers through lb, and a removed one disappears,
//! while a client looping through lb sees no failed request: lb takes every
//! change by reload (SIGHUP), keeping its pid. A reference to a service that
//! does not exist is refused with no revision stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use drover_tests::parcels::{build_parcel, install_parcels};
use drover_tests::procs::{ManagerProc, RoleReaper, free_port, start_agent};
use drover_tests::rest::Rest;
use drover_tests::{eventually, init_logging};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const WAIT: Duration = Duration::from_secs(90);
const HOSTS: [&str; 3] = ["nginx-a", "nginx-b", "nginx-c"];

/// Runs a command on a service of cluster `prod` and waits until it succeeds.
async fn run_command(rest: &Rest, svc: &str, body: Value) {
    let cmd = rest.ok(Method::POST, &format!("/clusters/prod/services/{svc}/commands"), Some(body)).await;
    let id = cmd["id"].as_str().unwrap().to_owned();
    let done = eventually(WAIT, &format!("command {id} to finish"), || async {
        let c: Value = rest.get(&format!("/api/v1/commands/{id}")).await.ok()?;
        (c["state"] != "running").then_some(c)
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
}

async fn role(rest: &Rest, svc: &str, name: &str) -> Value {
    let v: Value = rest.get(&format!("/api/v1/clusters/prod/services/{svc}/roles/{name}")).await.unwrap();
    v
}

/// Waits until lb's role has reloaded at least `at_least` times; returns the count.
async fn reloads(rest: &Rest, at_least: u64) -> u64 {
    eventually(WAIT, &format!("lb to have reloaded {at_least} times"), || async {
        let n = role(rest, "lb", "lb-server-1").await["reload_count"].as_u64().unwrap_or(0);
        (n >= at_least).then_some(n)
    })
    .await
}

async fn patch(rest: &Rest, svc: &str, body: Value) -> (u16, Value) {
    rest.raw(Method::PATCH, &format!("/api/v1/clusters/prod/services/{svc}/config"), Some(body)).await.unwrap()
}

/// What a client looping through lb saw: responses by body, and failures.
#[derive(Default)]
struct Seen {
    ok: BTreeMap<String, u64>,
    failures: Vec<String>,
}

impl Seen {
    fn total(&self) -> u64 {
        self.ok.values().sum()
    }
}

/// `web-server-N` from a web page (`web-server-N on HOST (service prod/web)`).
fn backend(body: &str) -> String {
    body.split_whitespace().next().unwrap_or_default().to_owned()
}

/// GETs `url` in a loop, each on a new connection, until `stop`; records every
/// answer. A failure is anything but a 200 from a web role.
fn client_loop(url: String, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        while !stop.load(Ordering::Relaxed) {
            let outcome = match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => match r.text().await {
                    Ok(body) if body.starts_with("web-server-") => Ok(backend(&body)),
                    Ok(body) => Err(format!("unexpected body {body:?}")),
                    Err(e) => Err(format!("reading the body: {e}")),
                },
                Ok(r) => Err(format!("HTTP {}: {:?}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Err(format!("request: {e}")),
            };
            let mut s = seen.lock().await;
            match outcome {
                Ok(b) => *s.ok.entry(b).or_default() += 1,
                Err(e) => s.failures.push(e),
            }
        }
    })
}

/// Waits until the client has seen each of `want` (again), counting from now.
async fn wait_for_backends(seen: &Mutex<Seen>, want: &[&str]) {
    let base = seen.lock().await.ok.clone();
    eventually(WAIT, &format!("responses through lb from {want:?}"), || async {
        let s = seen.lock().await;
        want.iter().all(|w| s.ok.get(*w).copied().unwrap_or(0) > base.get(*w).copied().unwrap_or(0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_follows_web_roles_by_reload_without_failed_requests() {
    init_logging();
    let nginx_parcel = build_parcel("nginx", None);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let _reaper = RoleReaper(root.to_path_buf());
    let flags = ["--heartbeat-interval", "300ms", "--host-lost-after", "5s", "--flush-interval", "200ms"];
    let mut manager = ManagerProc::start(&root.join("manager"), free_port(), free_port(), &flags).unwrap();
    manager.wait_ready().await;
    let rest = manager.rest();
    let url = manager.grpc_url();
    let token = rest.enrollment_token(3, 600).await.unwrap();
    let agents: Vec<_> =
        HOSTS.iter().map(|h| start_agent(&root.join(h), &url, Some(&token), &["--hostname", h]).unwrap()).collect();
    let hosts = eventually(WAIT, "three healthy hosts", || async {
        let hosts = rest.hosts("status=healthy").await.ok()?;
        (hosts.len() == 3).then_some(hosts)
    })
    .await;
    let host_id = |name: &str| hosts.iter().find(|h| h["hostname"] == name).unwrap()["id"].as_str().unwrap().to_owned();

    rest.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    let ids: Vec<String> = HOSTS.iter().map(|h| host_id(h)).collect();
    install_parcels(&rest, "prod", &ids, &[nginx_parcel]).await;

    // web: every role on 127.0.0.1; the service-level port is the one a new
    // role gets (the third, later), the first two have their own.
    let (p1, p2, p3, lb_port) = (free_port(), free_port(), free_port(), free_port());
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "web", "type": "nginx"}))).await;
    let body = json!({"values": {"bind": "127.0.0.1", "port": p3}, "message": "loopback only"});
    rest.ok(Method::PATCH, "/clusters/prod/services/web/config", Some(body)).await;
    for (name, host, port) in [("web-server-1", "nginx-a", p1), ("web-server-2", "nginx-b", p2)] {
        let body = json!({"role_type": "server", "host_id": host_id(host), "name": name});
        rest.ok(Method::POST, "/clusters/prod/services/web/roles", Some(body)).await;
        let body = json!({"values": {"port": port}, "role": name, "message": format!("{name} on its own port")});
        rest.ok(Method::PATCH, "/clusters/prod/services/web/config", Some(body)).await;
    }
    run_command(&rest, "web", json!({"name": "start"})).await;
    let page = reqwest::get(format!("http://127.0.0.1:{p1}/")).await.unwrap().text().await.unwrap();
    assert_eq!(page, "web-server-1 on nginx-a (service prod/web)\n");

    // lb: a reference to a service that does not exist first (404, no
    // revision), then web.
    rest.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "lb", "type": "nginx"}))).await;
    let lb_created: Value = rest.get("/api/v1/clusters/prod/services/lb").await.unwrap();
    let (status, v) = patch(&rest, "lb", json!({"values": {"upstream_service": "nope"}, "message": "typo"})).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(
        v["error"]["message"],
        "parameter `upstream_service`: service nope not found in cluster prod (its other services: web)"
    );
    let values = json!({"bind": "127.0.0.1", "port": lb_port, "upstream_service": "web"});
    let (status, v) = patch(&rest, "lb", json!({"values": values, "message": "balance web"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["revision"], lb_created["revision"].as_u64().unwrap() + 1, "the typo stored nothing");
    let body = json!({"role_type": "server", "host_id": host_id("nginx-c"), "name": "lb-server-1"});
    let lb_role = rest.ok(Method::POST, "/clusters/prod/services/lb/roles", Some(body)).await;
    run_command(&rest, "lb", json!({"name": "start"})).await;
    let lb_conf = root.join("nginx-c/roles").join(lb_role["id"].as_str().unwrap()).join("nginx.conf");
    let lb = role(&rest, "lb", "lb-server-1").await;
    let (lb_pid, lb_revision) = (lb["pid"].as_u64().unwrap(), lb["running_revision"].as_u64().unwrap());

    // Requests through lb reach both web roles.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = client_loop(format!("http://127.0.0.1:{lb_port}/"), stop.clone(), seen.clone());
    wait_for_backends(&seen, &["web-server-1", "web-server-2"]).await;

    // A third web role: lb's file on its host lists it, lb reloads, and once
    // the role runs its answers arrive through lb.
    let body = json!({"role_type": "server", "host_id": host_id("nginx-c"), "name": "web-server-3"});
    rest.ok(Method::POST, "/clusters/prod/services/web/roles", Some(body)).await;
    let listed = format!("server 127.0.0.1:{p3}; # web-server-3 on nginx-c");
    eventually(WAIT, "lb's nginx.conf to list web-server-3", || async {
        std::fs::read_to_string(&lb_conf).ok().filter(|c| c.contains(&listed)).map(|_| ())
    })
    .await;
    let first = reloads(&rest, 1).await;
    run_command(&rest, "web", json!({"name": "start", "roles": ["web-server-3"]})).await;
    wait_for_backends(&seen, &["web-server-1", "web-server-2", "web-server-3"]).await;

    // Remove web-server-1: it leaves lb's file, and after lb's second reload
    // no answer comes from it any more.
    let (status, _) =
        rest.raw(Method::DELETE, "/api/v1/clusters/prod/services/web/roles/web-server-1", None).await.unwrap();
    assert_eq!(status, 204);
    eventually(WAIT, "web-server-1 to leave lb's nginx.conf", || async {
        std::fs::read_to_string(&lb_conf).ok().filter(|c| !c.contains("web-server-1")).map(|_| ())
    })
    .await;
    reloads(&rest, first + 1).await;
    let after_reload = seen.lock().await.ok.clone();
    wait_for_backends(&seen, &["web-server-2", "web-server-3"]).await;
    let later = seen.lock().await.ok.clone();
    assert_eq!(later.get("web-server-1"), after_reload.get("web-server-1"), "web-server-1 answered after its removal");

    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    let seen = seen.lock().await;
    eprintln!("requests through lb: {} ok ({:?}), {} failed", seen.total(), seen.ok, seen.failures.len());
    assert!(seen.failures.is_empty(), "failed requests through lb: {:?}", seen.failures);

    // lb never restarted: same pid, same revision; both reloads are on record.
    let lb = role(&rest, "lb", "lb-server-1").await;
    assert_eq!((lb["pid"].as_u64(), lb["running_revision"].as_u64()), (Some(lb_pid), Some(lb_revision)), "{lb}");
    assert_eq!((lb["stale"].as_bool(), lb["last_reload_at"].is_string()), (Some(false), true), "{lb}");
    let events: Value = rest.get("/api/v1/events?object_type=service&object_id=prod/lb").await.unwrap();
    let rerendered: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "config_rerendered")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(rerendered.len() >= 2, "{events}");
    assert!(
        rerendered.iter().all(|m| m.starts_with("re-rendered because prod/web changed: nginx.conf of lb-server-1"))
    );

    // Stop everything gracefully (SIGQUIT: nginx finishes what it serves).
    let started = Instant::now();
    run_command(&rest, "lb", json!({"name": "stop"})).await;
    run_command(&rest, "web", json!({"name": "stop"})).await;
    eprintln!("stopped lb and web in {:.1}s", started.elapsed().as_secs_f64());
    let errors = manager.proc.unexpected_errors(&[]);
    assert!(errors.is_empty(), "unexpected ERROR lines in the manager log:\n{}", errors.join("\n"));
    for agent in &agents {
        let errors = agent.unexpected_errors(&[]);
        assert!(errors.is_empty(), "unexpected ERROR lines in {}:\n{}", agent.log.display(), errors.join("\n"));
    }
}
