//! Collectors against the real programs where they are installed
//! (redis-server, nginx, ZooKeeper from Debian's package): each test starts
//! its own on a free loopback port. Set DROVER_REQUIRE_SERVICES=1 to fail
//! instead of skipping when one is missing. HTTP endpoints and commands are
//! served by the test itself.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::*;

const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

fn installed(what: &str, candidates: &[&str]) -> Option<String> {
    let found = candidates.iter().find(|p| Path::new(p).exists()).map(|p| (*p).to_owned());
    if found.is_none() {
        assert!(
            std::env::var("DROVER_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{what} is not installed but DROVER_REQUIRE_SERVICES=1"
        );
        println!("skipped: {what} not installed");
    }
    found
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Running {
    Running(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"))
}

async fn wait_port(port: u16) {
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends RESP commands on one connection and returns the answers' text.
async fn redis_cli(port: u16, commands: &[&[&str]]) -> String {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let mut out = String::new();
    for cmd in commands {
        let mut req = format!("*{}\r\n", cmd.len());
        for part in *cmd {
            req.push_str(&format!("${}\r\n{part}\r\n", part.len()));
        }
        conn.write_all(req.as_bytes()).await.expect("send");
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).await.expect("read");
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out
}

fn value(samples: &[Sample], name: &str) -> Option<f64> {
    samples.iter().find(|s| s.name == name).map(|s| s.value)
}

async fn collect_ok(kind: &MetricSourceKind, state: &mut SourceState) -> Collected {
    collect(kind, Duration::from_secs(5), Path::new("/"), state).await.unwrap_or_else(|e| panic!("{kind:?}: {e}"))
}

fn redis_kind(port: u16, password: &str) -> MetricSourceKind {
    MetricSourceKind::Redis { host: String::new(), port, password: password.into() }
}

fn redis_server(program: &str, dir: &Path, port: u16, extra: &[&str]) -> Running {
    let mut cmd = Command::new(program);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra);
    spawn(&mut cmd)
}

#[tokio::test]
async fn redis_primary_and_replica_with_auth_and_maxmemory() {
    let Some(program) = installed("redis-server", &["/usr/bin/redis-server", "/usr/local/bin/redis-server"]) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (primary_port, replica_port) = (free_port(), free_port());
    let pw = "s3cret pass";
    let _primary = redis_server(&program, tmp.path(), primary_port, &["--requirepass", pw, "--maxmemory", "4mb"]);
    wait_port(primary_port).await;
    let set = redis_cli(primary_port, &[&["AUTH", pw], &["SET", "a", "1"], &["SET", "b", "2"], &["GET", "a"]]).await;
    assert!(set.starts_with("+OK"), "{set}");

    let primary = redis_kind(primary_port, pw);
    let s = collect_ok(&primary, &mut SourceState::default()).await.samples;
    assert_eq!(value(&s, "redis_maxmemory_bytes"), Some(4.0 * 1024.0 * 1024.0));
    let used = value(&s, "redis_used_memory_bytes").expect("used memory");
    assert_eq!(value(&s, "redis_memory_used_ratio"), Some(used / (4.0 * 1024.0 * 1024.0)));
    assert_eq!(value(&s, "redis_keys"), Some(2.0));
    assert_eq!(value(&s, "redis_is_primary"), Some(1.0));
    assert!(value(&s, "redis_connected_clients").is_some_and(|c| c >= 1.0), "{s:?}");
    assert!(value(&s, "redis_keyspace_hits_total").is_some_and(|c| c >= 1.0), "{s:?}");
    assert!(s.iter().all(|s| valid_metric_name(&s.name) && s.labels.keys().all(|l| valid_label_name(l))));

    // Wrong or missing passwords are clear errors.
    let wrong =
        collect(&redis_kind(primary_port, "nope"), Duration::from_secs(5), Path::new("/"), &mut SourceState::default())
            .await
            .expect_err("wrong password");
    assert!(wrong.starts_with("AUTH failed: WRONGPASS"), "{wrong}");
    let none =
        collect(&redis_kind(primary_port, ""), Duration::from_secs(5), Path::new("/"), &mut SourceState::default())
            .await
            .expect_err("no password");
    assert!(none.contains("NOAUTH") && none.contains("the source has no password"), "{none}");

    // A replica of it: link up, no lag once in sync; the primary counts it.
    let _replica = redis_server(
        &program,
        tmp.path(),
        replica_port,
        &["--replicaof", "127.0.0.1", &primary_port.to_string(), "--masterauth", pw, "--dbfilename", "replica.rdb"],
    );
    wait_port(replica_port).await;
    let deadline = Instant::now() + WAIT;
    let replica = loop {
        let s = collect_ok(&redis_kind(replica_port, ""), &mut SourceState::default()).await.samples;
        if value(&s, "redis_master_link_up") == Some(1.0) && value(&s, "redis_keys") == Some(2.0) {
            break s;
        }
        assert!(Instant::now() < deadline, "the replica never synced: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(value(&replica, "redis_is_primary"), Some(0.0));
    assert!(value(&replica, "redis_replication_offset_lag_bytes").is_some(), "{replica:?}");
    let s = collect_ok(&primary, &mut SourceState::default()).await.samples;
    assert_eq!(value(&s, "redis_connected_replicas"), Some(1.0));
    assert!(value(&s, "redis_replication_offset_lag_bytes").is_some(), "{s:?}");
}

#[tokio::test]
async fn a_source_that_is_down_or_silent_fails_within_its_timeout() {
    let port = free_port();
    let e = collect(&redis_kind(port, ""), Duration::from_secs(5), Path::new("/"), &mut SourceState::default())
        .await
        .expect_err("nothing listens");
    assert!(e.starts_with("connect: "), "{e}");
    // Accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let kind = MetricSourceKind::Zookeeper { host: "127.0.0.1".into(), port };
    let started = Instant::now();
    let e = collect(&kind, Duration::from_millis(300), Path::new("/"), &mut SourceState::default())
        .await
        .expect_err("silent");
    assert_eq!(e, "no answer within 300ms");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn nginx_stub_status_of_a_real_nginx_with_its_request_rate() {
    let Some(program) = installed("nginx", &["/usr/sbin/nginx"]) else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let dir = tmp.path().display();
    let conf = format!(
        "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{ worker_connections 64; }}\n\
http {{\n access_log off;\n client_body_temp_path {dir}/body;\n proxy_temp_path {dir}/proxy;\n\
 fastcgi_temp_path {dir}/fastcgi;\n uwsgi_temp_path {dir}/uwsgi;\n scgi_temp_path {dir}/scgi;\n\
 server {{ listen 127.0.0.1:{port}; location /status {{ stub_status; }} location / {{ return 404; }} }}\n}}\n"
    );
    std::fs::write(tmp.path().join("nginx.conf"), conf).expect("conf");
    let mut cmd = Command::new(program);
    cmd.arg("-p").arg(tmp.path()).arg("-c").arg(tmp.path().join("nginx.conf")).args(["-g", "daemon off;"]);
    let _nginx = spawn(&mut cmd);
    wait_port(port).await;

    let kind = MetricSourceKind::NginxStubStatus { url: format!("http://127.0.0.1:{port}/status") };
    let mut state = SourceState::default();
    let first = collect_ok(&kind, &mut state).await.samples;
    assert_eq!(value(&first, "nginx_active_connections"), Some(1.0), "this collection's own connection");
    assert_eq!(value(&first, "nginx_writing"), Some(1.0));
    assert_eq!(value(&first, "nginx_requests_per_second"), None, "no rate from one collection");
    let requests = value(&first, "nginx_requests_total").expect("requests");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = collect_ok(&kind, &mut state).await.samples;
    assert_eq!(value(&second, "nginx_requests_total"), Some(requests + 1.0));
    assert!(value(&second, "nginx_requests_per_second").is_some_and(|r| r > 0.0 && r < 10.0), "{second:?}");

    let wrong = MetricSourceKind::NginxStubStatus { url: format!("http://127.0.0.1:{port}/elsewhere") };
    let e = collect(&wrong, Duration::from_secs(5), Path::new("/"), &mut state).await.expect_err("404");
    assert_eq!(e, "answered 404 Not Found");
}

#[tokio::test]
async fn zookeeper_mntr_of_a_real_server() {
    let Some(jar) = installed("zookeeper", &["/usr/share/java/zookeeper.jar"]) else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = format!(
        "tickTime=2000\ndataDir={}\nclientPort={port}\nadmin.enableServer=false\n4lw.commands.whitelist=mntr,ruok\n",
        tmp.path().display()
    );
    let cfg_path = tmp.path().join("zoo.cfg");
    std::fs::write(&cfg_path, cfg).expect("zoo.cfg");
    let mut cmd = Command::new("java");
    cmd.arg("-Xmx64m")
        .arg("-cp")
        .arg(format!("{jar}:/usr/share/java/*"))
        .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        .arg(&cfg_path);
    let _zk = spawn(&mut cmd);
    wait_port(port).await;
    let kind = MetricSourceKind::Zookeeper { host: String::new(), port };
    let deadline = Instant::now() + WAIT;
    let s = loop {
        match collect(&kind, Duration::from_secs(5), Path::new("/"), &mut SourceState::default()).await {
            Ok(c) => break c.samples,
            Err(e) => assert!(Instant::now() < deadline, "no mntr: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(value(&s, "zookeeper_is_leader"), Some(0.0));
    let mode = s.iter().find(|s| s.name == "zookeeper_mode").expect("mode");
    assert_eq!(mode.labels.get("mode").map(String::as_str), Some("standalone"));
    assert!(value(&s, "zookeeper_znode_count").is_some_and(|n| n >= 1.0), "{s:?}");
    for name in ["zookeeper_avg_latency_ms", "zookeeper_max_latency_ms", "zookeeper_outstanding_requests"] {
        assert!(value(&s, name).is_some(), "{name} in {s:?}");
    }
}

/// Serves `body` with `status` to every request, over HTTP/1.0.
async fn http_server(status: &'static str, body: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn prometheus_endpoints_are_parsed_cut_and_checked() {
    let body = "# HELP app_up Whether the app is up.\n# TYPE app_up gauge\napp_up 1\n\
app_requests_total{path=\"/a\",code=\"200\"} 12 1700000000000\nbad line here\n"
        .to_owned();
    let port = http_server("200 OK", body).await;
    let kind = MetricSourceKind::Prometheus { url: format!("http://127.0.0.1:{port}/metrics") };
    let c = collect_ok(&kind, &mut SourceState::default()).await;
    assert_eq!(c.samples.len(), 2);
    assert_eq!(c.samples[1].labels["path"], "/a");
    assert_eq!(c.samples[1].at_unix_ms, 1700000000000);
    assert_eq!(c.warning.as_deref(), Some("1 unreadable lines skipped (line 5: bad: \"line\" is not a number)"));

    let many: String = (0..600).map(|i| format!("m_{i} {i}\n")).collect();
    let port = http_server("200 OK", many).await;
    let kind = MetricSourceKind::Prometheus { url: format!("http://127.0.0.1:{port}/") };
    let c = collect_ok(&kind, &mut SourceState::default()).await;
    assert_eq!(c.samples.len(), MAX_SAMPLES_PER_COLLECTION);
    assert_eq!(c.warning.as_deref(), Some("600 samples, cut to the first 500"));

    let port = http_server("503 Service Unavailable", String::new()).await;
    let kind = MetricSourceKind::Prometheus { url: format!("http://127.0.0.1:{port}/") };
    let e = collect(&kind, Duration::from_secs(5), Path::new("/"), &mut SourceState::default()).await.expect_err("503");
    assert_eq!(e, "answered 503 Service Unavailable");
    let kind = MetricSourceKind::Prometheus { url: "https://127.0.0.1/".into() };
    let e =
        collect(&kind, Duration::from_secs(5), Path::new("/"), &mut SourceState::default()).await.expect_err("https");
    assert!(e.contains("only http://"), "{e}");
}

#[tokio::test]
async fn commands_run_in_the_role_directory_with_placeholders() {
    let role_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(role_dir.path().join("metrics.prom"), "queue_depth{queue=\"in\"} 7\n").expect("write");
    let kind = with_placeholders(
        MetricSourceKind::Command {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "cat ${ROLE_DIR}/metrics.prom; echo \"from_env 1\"; test \"$ROLE_DIR\" = \"$PWD\"".into(),
            ],
        },
        role_dir.path(),
        None,
    );
    let c = collect(&kind, Duration::from_secs(5), role_dir.path(), &mut SourceState::default()).await.expect("run");
    assert_eq!(c.warning, None);
    assert_eq!(
        c.samples.iter().map(|s| (s.name.as_str(), s.value)).collect::<Vec<_>>(),
        [("queue_depth", 7.0), ("from_env", 1.0)]
    );
    assert_eq!(c.samples[0].labels["queue"], "in");

    let failing = MetricSourceKind::Command {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "echo partial 1; echo 'no such queue' >&2; exit 3".into()],
    };
    let e = collect(&failing, Duration::from_secs(5), role_dir.path(), &mut SourceState::default())
        .await
        .expect_err("exit 3");
    assert_eq!(e, "exit status: 3: no such queue");
    let missing = MetricSourceKind::Command { program: "/nonexistent/exporter".into(), args: vec![] };
    let e = collect(&missing, Duration::from_secs(5), role_dir.path(), &mut SourceState::default())
        .await
        .expect_err("missing");
    assert!(e.starts_with("run: "), "{e}");
    let slow = MetricSourceKind::Command { program: "/bin/sleep".into(), args: vec!["5".into()] };
    let started = Instant::now();
    let e = collect(&slow, Duration::from_millis(200), role_dir.path(), &mut SourceState::default())
        .await
        .expect_err("slow");
    assert_eq!(e, "no answer within 200ms");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        collect(&MetricSourceKind::Unknown, Duration::from_secs(1), role_dir.path(), &mut SourceState::default())
            .await
            .unwrap_err()
            .contains("upgrade the agent")
    );
}

fn sample(name: &str, value: f64) -> Sample {
    Sample { name: name.into(), value, labels: BTreeMap::new(), at_unix_ms: 1 }
}

#[test]
fn the_hub_buffers_boundedly_names_failing_sources_and_drains_per_heartbeat() {
    let status = |id: &str| RoleStatus { role_id: id.into(), ..RoleStatus::default() };
    let (tx, rx) = watch::channel(Arc::new(vec![status("r1"), status("r2")]));
    let hub = MetricsHub::new(rx);
    let redis = redis_kind(6379, "pw");
    let zk = MetricSourceKind::Zookeeper { host: String::new(), port: 2181 };
    hub.record("r1", 0, &redis, Ok(Collected { samples: vec![sample("a", 1.0), sample("b", 2.0)], warning: None }));
    hub.record("r1", 1, &zk, Err("connect: Connection refused (os error 111)".into()));
    let taken = hub.take();
    assert_eq!(taken.len(), 2);
    let r1 = &taken[0];
    assert_eq!((r1.role_id.as_str(), r1.process.as_ref()), ("r1", None), "no pid, no process");
    assert_eq!(r1.samples, vec![sample("a", 1.0), sample("b", 2.0)]);
    assert_eq!(r1.collect_error, "zookeeper 127.0.0.1:2181: connect: Connection refused (os error 111)");
    assert_eq!(taken[1], RoleMetrics { role_id: "r2".into(), ..RoleMetrics::default() });

    // Drained: the next heartbeat has no samples, but the error stays until the source answers.
    let again = hub.take();
    assert!(again[0].samples.is_empty());
    assert!(again[0].collect_error.starts_with("zookeeper"), "{again:?}");
    hub.record("r1", 1, &zk, Ok(Collected::default()));
    assert_eq!(hub.take()[0].collect_error, "");

    // Beyond the bound the oldest go, and the heartbeat says how many.
    let many: Vec<Sample> = (0..BUFFERED_SAMPLES_PER_ROLE + 10).map(|i| sample("m", i as f64)).collect();
    hub.record("r1", 0, &redis, Ok(Collected { samples: many, warning: Some("1 unreadable lines skipped".into()) }));
    let r1 = hub.take().remove(0);
    assert_eq!(r1.samples.len(), BUFFERED_SAMPLES_PER_ROLE);
    assert_eq!(r1.samples[0].value, 10.0, "the oldest were dropped");
    assert_eq!(
        r1.collect_error,
        "redis 127.0.0.1:6379: 1 unreadable lines skipped; 10 samples dropped: more than 1024 between heartbeats"
    );
    hub.sources_stopped("r1");
    assert_eq!(hub.take()[0].collect_error, "", "stopped sources have no errors");

    // Roles that are gone are forgotten.
    hub.record("r2", 0, &redis, Ok(Collected { samples: vec![sample("x", 1.0)], warning: None }));
    tx.send_replace(Arc::new(vec![status("r1")]));
    let taken = hub.take();
    assert_eq!(taken.len(), 1);
    assert!(!hub.lock().buffers.contains_key("r2"));
}

#[test]
fn names_are_checked_and_sources_described() {
    for good in ["a", "_x", "redis:used_memory", "a_1"] {
        assert!(valid_metric_name(good), "{good}");
    }
    for bad in ["", "1a", "a-b", "a b", "é"] {
        assert!(!valid_metric_name(bad), "{bad}");
    }
    assert!(valid_label_name("db") && !valid_label_name("a:b") && !valid_label_name("0"));
    assert_eq!(describe(&redis_kind(6380, "pw")), "redis 127.0.0.1:6380");
    assert_eq!(describe(&MetricSourceKind::Command { program: "/x".into(), args: vec!["y".into()] }), "command /x");
}
