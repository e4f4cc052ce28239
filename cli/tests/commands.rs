//! The commands run whole, as `drover` runs them, against a real manager in
//! this process (on SQLite in a temporary directory): what each prints, and
//! the errors people see.

use std::str::FromStr;

use clap::Parser;
use drover_cli::cli::{Cli, OutputFormat};
use drover_cli::commands::{Context, Prompt, run};
use drover_cli::manager_client::{ApiFailure, Credentials, ManagerClient, PasswordSource};
use drover_manager::auth::sha256_hex;
use drover_manager::model::{HostFacts, HostKind, HostMetrics, HostStatus, now_millis};
use drover_manager::store::{HeartbeatRow, NewEvent, NewHost};
use drover_manager::{Manager, ManagerConfig, ManagerHandle};
use drover_proto::token::EnrollmentToken;
use reqwest::{Method, Url};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Answers the confirmation prompt with a fixed reply.
struct ScriptedPrompt {
    interactive: bool,
    answer: bool,
    asked: Vec<String>,
}

impl Prompt for ScriptedPrompt {
    fn is_interactive(&self) -> bool {
        self.interactive
    }

    fn confirm(&mut self, question: &str) -> std::io::Result<bool> {
        self.asked.push(question.to_owned());
        Ok(self.answer)
    }
}

fn no_prompt() -> ScriptedPrompt {
    ScriptedPrompt { interactive: false, answer: false, asked: Vec::new() }
}

const PASSWORD: &str = "correct horse battery staple";

async fn start_manager(dir: &std::path::Path) -> ManagerHandle {
    drover_proto::tls::provider();
    let mut config = ManagerConfig::for_data_dir(dir);
    config.admin_password = Some(PASSWORD.into());
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Manager::start(config, http, grpc).await.unwrap()
}

fn context(handle: &ManagerHandle, output: OutputFormat, credentials: Credentials) -> Context {
    let url = Url::parse(&format!("http://{}", handle.http_addr)).unwrap();
    Context { client: ManagerClient::new(url, credentials).unwrap(), output }
}

fn admin(password: &str) -> Credentials {
    Credentials::Password { user: "admin".into(), password: password.into(), source: PasswordSource::Flag }
}

async fn drover(ctx: &Context, args: &[&str]) -> anyhow::Result<String> {
    drover_prompted(ctx, args, &mut no_prompt()).await
}

async fn drover_prompted(ctx: &Context, args: &[&str], prompt: &mut dyn Prompt) -> anyhow::Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("drover").chain(args.iter().copied()))?;
    run(ctx, cli.command, prompt).await
}

fn facts(hostname: &str) -> HostFacts {
    HostFacts {
        hostname: hostname.into(),
        addresses: vec!["10.0.0.5".into()],
        kind: HostKind::Container,
        kind_evidence: "/.dockerenv exists".into(),
        os: "Debian 12".into(),
        kernel: "6.1.0".into(),
        arch: "x86_64".into(),
        cpu_cores: 2,
        memory_bytes: 4 << 30,
        disks: vec![],
        fqdn: String::new(),
        container_id: String::new(),
        machine_cpu_cores: 0,
        machine_memory_bytes: 0,
        capacity_evidence: String::new(),
    }
}

/// Enrolls a host the way the gRPC service does, straight in the store.
async fn enroll(handle: &ManagerHandle, token: &EnrollmentToken, id: &str, hostname: &str) {
    let host = NewHost {
        id: id.into(),
        facts: facts(hostname),
        agent_version: "0.1.0".into(),
        labels: Default::default(),
        cert_serial: format!("serial-{id}"),
    };
    handle.state.store.enroll_host(&token.id, &sha256_hex(&token.secret), now_millis(), &host).await.unwrap();
}

#[tokio::test]
async fn commands_against_a_real_manager() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_manager(dir.path()).await;
    let table = context(&handle, OutputFormat::Table, admin(PASSWORD));
    let json = context(&handle, OutputFormat::Json, admin(PASSWORD));

    let out = drover(&table, &["whoami"]).await.unwrap();
    assert!(out.starts_with("User:            admin\nRoles:           admin\n"), "{out}");
    assert!(out.contains("Signed in with:  user admin, password from --password"), "{out}");

    // Enrollment tokens.
    let out = drover(&table, &["tokens", "create", "--ttl", "2h", "--label", "rack=r1"]).await.unwrap();
    assert!(out.contains("valid for 1 host until"), "{out}");
    assert!(out.contains("drover-agent --manager https://127.0.0.1:7182 --token drv1."), "{out}");
    let created: Value =
        serde_json::from_str(&drover(&json, &["tokens", "create", "--max-uses", "3"]).await.unwrap()).unwrap();
    let token = EnrollmentToken::from_str(created["token"].as_str().unwrap()).unwrap();
    assert_eq!(created["max_uses"], 3);
    let out = drover(&table, &["tokens", "list"]).await.unwrap();
    assert!(out.starts_with("ID "), "{out}");
    assert!(out.contains(&format!("{}  active  0/3", token.id)), "{out}");

    // Hosts: two share the prefix 0f3c.
    let web = "0f3c1111-0000-4000-8000-000000000001";
    let db = "0f3c2222-0000-4000-8000-000000000002";
    enroll(&handle, &token, web, "web-1").await;
    enroll(&handle, &token, db, "db-1").await;
    let metrics = HostMetrics {
        at: drover_manager::model::rfc3339(now_millis()),
        cpu_percent: 50.0,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        load1: 1.5,
        load5: 1.0,
        load15: 0.5,
        disks: vec![],
        network_rx_bytes: 0,
        network_tx_bytes: 0,
        uptime_seconds: 3600,
    };
    let heartbeat = HeartbeatRow {
        host_id: web.into(),
        status: Some(HostStatus::Healthy),
        last_heartbeat_at: now_millis(),
        metrics: Some(metrics),
    };
    let event = NewEvent {
        at: now_millis(),
        severity: "info",
        kind: "host_enrolled",
        object_type: "host",
        object_id: web.into(),
        message: "host web-1 enrolled".into(),
    };
    handle.state.store.flush(&[heartbeat], &[event]).await.unwrap();

    let out = drover(&table, &["hosts", "list"]).await.unwrap();
    assert!(out.starts_with("ID        HOSTNAME  STATUS "), "{out}");
    assert!(out.contains("0f3c1111  web-1 "), "{out}");
    assert!(out.contains("50.0  1.0 GiB/4.0 GiB  1.50  0s ago"), "{out}");
    assert!(out.ends_with("2 of 2 hosts\n"), "{out}");
    let out = drover(&table, &["hosts", "list", "--hostname", "web", "--limit", "1"]).await.unwrap();
    assert!(out.ends_with("1 of 1 hosts\n"), "{out}");
    let out = drover(&table, &["hosts", "list", "--limit", "1"]).await.unwrap();
    assert!(out.ends_with("1 of 2 hosts; next page: --offset 1\n"), "{out}");
    let listed: Value = serde_json::from_str(&drover(&json, &["hosts", "list"]).await.unwrap()).unwrap();
    assert_eq!(listed["total"], 2);

    let out = drover(&table, &["hosts", "show", "0f3c1"]).await.unwrap();
    assert!(out.contains("Hostname:            web-1\n"), "{out}");
    assert!(out.contains("\nMetrics (reported "), "{out}");
    let shown: Value = serde_json::from_str(&drover(&json, &["hosts", "show", db]).await.unwrap()).unwrap();
    assert_eq!(shown["hostname"], "db-1");
    let err = drover(&table, &["hosts", "show", "0f3c"]).await.unwrap_err().to_string();
    assert!(err.starts_with("ID prefix 0f3c matches 2 hosts"), "{err}");
    // A hostname names its host too.
    let by_name: Value = serde_json::from_str(&drover(&json, &["hosts", "show", "db-1"]).await.unwrap()).unwrap();
    assert_eq!(by_name["id"], shown["id"]);
    let err = drover(&table, &["hosts", "show", "0f3"]).await.unwrap_err().to_string();
    assert_eq!(err, "host 0f3 not found; an ID prefix needs at least 4 characters");
    let err = drover(&table, &["hosts", "show", "ffff"]).await.unwrap_err().to_string();
    assert!(err.starts_with("no host has the ID or ID prefix ffff"), "{err}");

    // Labels.
    let out = drover(&table, &["hosts", "label", "0f3c1", "tier=web", "rack=r2"]).await.unwrap();
    assert_eq!(out, "host web-1 (0f3c1111) labels: rack=r2,tier=web\n");
    let out = drover(&table, &["hosts", "label", web, "--remove", "rack"]).await.unwrap();
    assert_eq!(out, "host web-1 (0f3c1111) labels: tier=web\n");
    let out = drover(&table, &["hosts", "list", "--label", "tier=web"]).await.unwrap();
    assert!(out.ends_with("1 of 1 hosts\n"), "{out}");

    // Decommissioning asks first.
    let err = drover(&table, &["hosts", "decommission", "0f3c2"]).await.unwrap_err().to_string();
    assert!(err.starts_with("refusing to decommission host db-1"), "{err}");
    assert!(err.ends_with("pass --yes"), "{err}");
    let mut say_no = ScriptedPrompt { interactive: true, answer: false, asked: Vec::new() };
    let err = drover_prompted(&table, &["hosts", "decommission", "0f3c2"], &mut say_no).await.unwrap_err();
    assert_eq!(err.to_string(), format!("not confirmed; host db-1 ({db}) was not decommissioned"));
    assert!(say_no.asked[0].starts_with(&format!("Decommission host db-1 ({db})?")));
    let mut say_yes = ScriptedPrompt { interactive: true, answer: true, asked: Vec::new() };
    let out = drover_prompted(&table, &["hosts", "decommission", "0f3c2"], &mut say_yes).await.unwrap();
    assert_eq!(out, format!("decommissioned host db-1 ({db})\n"));
    let out = drover(&table, &["hosts", "decommission", db, "--yes"]).await.unwrap();
    assert_eq!(out, format!("host db-1 ({db}) is already decommissioned\n"));
    let err = drover(&table, &["hosts", "label", db, "a=b"]).await.unwrap_err().to_string();
    assert!(err.ends_with("its labels can no longer change (HTTP 409)"), "{err}");
    let out = drover(&table, &["hosts", "list", "--status", "decommissioned"]).await.unwrap();
    assert!(out.contains("db-1") && out.ends_with("1 of 1 hosts\n"), "{out}");

    // Events and audit.
    let out = drover(&table, &["events", "--host", "0f3c1"]).await.unwrap();
    assert!(out.contains("info      host_enrolled  host 0f3c1111  host web-1 enrolled"), "{out}");
    let out = drover(&table, &["audit", "--object-id", db]).await.unwrap();
    assert!(out.contains("host.decommission"), "{out}");
    let out = drover(&table, &["audit", "--user", "nobody"]).await.unwrap();
    assert_eq!(out, "no audit entries\n");

    // API tokens.
    let out = drover(&table, &["api-tokens", "create", "ci", "--ttl", "1d"]).await.unwrap();
    assert!(out.starts_with("Created API token \"ci\""), "{out}");
    let created: Value =
        serde_json::from_str(&drover(&json, &["api-tokens", "create", "ci-2"]).await.unwrap()).unwrap();
    let bearer =
        context(&handle, OutputFormat::Table, Credentials::ApiToken(created["token"].as_str().unwrap().into()));
    let out = drover(&bearer, &["whoami"]).await.unwrap();
    assert!(out.contains("Signed in with:  an API token"), "{out}");

    // Revoking.
    assert_eq!(
        drover(&table, &["tokens", "revoke", &token.id]).await.unwrap(),
        format!("revoked enrollment token {}\n", token.id)
    );
    assert_eq!(drover(&json, &["tokens", "revoke", &token.id]).await.unwrap(), "");
    let err = drover(&table, &["tokens", "revoke", "nope"]).await.unwrap_err().to_string();
    assert_eq!(err, "enrollment token nope not found (HTTP 404)");

    // Wrong credentials.
    let wrong = context(&handle, OutputFormat::Table, admin("wrong"));
    let err = drover(&wrong, &["whoami"]).await.unwrap_err();
    let failure = err.downcast_ref::<ApiFailure>().expect("an API failure");
    assert_eq!(failure.status, 401);
    assert!(err.to_string().starts_with("invalid credentials"), "{err}");
    assert!(failure.hint.as_deref().unwrap().contains("user admin, password from --password"));

    handle.shutdown().await;
}

/// A small valid parcel file, built with the parcel library.
fn build_parcel(dir: &std::path::Path, name: &str, version: &str) -> std::path::PathBuf {
    use drover_parcels::{ParcelMeta, Scripts, build_archive};
    let staging = dir.join(format!("staging-{name}-{version}"));
    std::fs::create_dir_all(staging.join("meta")).unwrap();
    std::fs::create_dir_all(staging.join("bin")).unwrap();
    std::fs::write(staging.join(format!("meta/{name}_env.sh")), "export X_HOME=$PARCELS_ROOT/$PARCEL_DIRNAME\n")
        .unwrap();
    std::fs::write(staging.join("bin/tool"), vec![7u8; 300_000]).unwrap();
    let meta = ParcelMeta {
        schema_version: 1,
        name: name.into(),
        version: version.into(),
        distro: "bookworm".into(),
        depends: vec![],
        conflicts: vec![],
        provides: vec![],
        components: vec![],
        scripts: Scripts { defines: format!("{name}_env.sh") },
    };
    build_archive(&staging, &meta, &dir.join("repo")).unwrap().path
}

#[tokio::test]
async fn parcel_upload_list_and_cluster_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_manager(&dir.path().join("manager")).await;
    let table = context(&handle, OutputFormat::Table, admin(PASSWORD));
    let json = context(&handle, OutputFormat::Json, admin(PASSWORD));

    assert_eq!(
        drover(&table, &["parcel", "list"]).await.unwrap(),
        "no parcels; upload one with `drover parcel upload FILE`\n"
    );
    let file = build_parcel(dir.path(), "redis", "7.0.15-1");
    let file = file.to_str().unwrap();
    let out = drover(&table, &["parcel", "upload", file]).await.unwrap();
    assert!(out.starts_with("uploaded redis-7.0.15-1-bookworm.parcel ("), "{out}");
    let err = drover(&table, &["parcel", "upload", &format!("{file}.missing")]).await.unwrap_err();
    assert!(format!("{err:#}").starts_with("read "), "{err:#}");
    // The manager checks the name against the parcel inside.
    let renamed = dir.path().join("repo/redis-9-bookworm.parcel");
    std::fs::copy(file, &renamed).unwrap();
    let err = drover(&table, &["parcel", "upload", renamed.to_str().unwrap()]).await.unwrap_err();
    assert!(format!("{err:#}").contains("(HTTP 4"), "{err:#}");

    let out = drover(&table, &["parcel", "list"]).await.unwrap();
    assert!(out.starts_with("PARCEL  VERSION   SOURCE"), "{out}");
    assert!(out.contains("redis   7.0.15-1  local "), "{out}");
    assert!(out.ends_with("  -        -       -\n1 parcels\n"), "{out}");

    // Cluster membership.
    ctx_post(&json, &["clusters"], json!({"name": "prod"})).await;
    let created: Value =
        serde_json::from_str(&drover(&json, &["tokens", "create", "--max-uses", "2"]).await.unwrap()).unwrap();
    let token = EnrollmentToken::from_str(created["token"].as_str().unwrap()).unwrap();
    let web = "0f3c1111-0000-4000-8000-000000000001";
    let db = "0f3c2222-0000-4000-8000-000000000002";
    enroll(&handle, &token, web, "web-1").await;
    enroll(&handle, &token, db, "db-1").await;
    assert_eq!(
        drover(&table, &["cluster", "hosts", "list", "prod"]).await.unwrap(),
        "cluster prod has no hosts; add some with `drover cluster hosts add prod HOST...`\n"
    );
    let out = drover(&table, &["cluster", "hosts", "add", "prod", "0f3c1", db]).await.unwrap();
    assert_eq!(out, "added web-1 (0f3c1111), db-1 (0f3c2222) to cluster prod; it has 2 hosts\n");
    let out = drover(&table, &["cluster", "hosts", "list", "prod"]).await.unwrap();
    assert!(out.starts_with("ID        HOSTNAME  STATUS\n"), "{out}");
    assert!(out.contains("0f3c1111  web-1 ") && out.contains("0f3c2222  db-1 "), "{out}");
    assert!(out.ends_with("2 hosts in cluster prod\n"), "{out}");
    let err = drover(&table, &["cluster", "hosts", "add", "prod", "ffff"]).await.unwrap_err().to_string();
    assert!(err.starts_with("no host has the ID or ID prefix ffff"), "{err}");
    let err = drover(&table, &["cluster", "hosts", "list", "nope"]).await.unwrap_err().to_string();
    assert_eq!(err, "cluster nope not found (HTTP 404)");

    // Lifecycle commands: refusals come back as errors, a started command as its ID.
    let err = drover(&table, &["parcel", "activate", "--cluster", "prod", "redis", "7.0.15-1"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not distributed to cluster prod") && err.ends_with("(HTTP 409)"), "{err}");
    let out =
        drover(&table, &["parcel", "distribute", "--cluster", "prod", "redis", "7.0.15-1", "--no-wait"]).await.unwrap();
    assert!(out.starts_with("started parcel-distribute command ") && out.contains(" with 2 steps;"), "{out}");
    let listed: Value = serde_json::from_str(&drover(&json, &["parcel", "list"]).await.unwrap()).unwrap();
    assert_eq!(listed["items"][0]["clusters"][0]["cluster"], "prod");
    let err = drover(&table, &["service", "upgrade", "--cluster", "prod", "redis", "2"]).await.unwrap_err();
    assert_eq!(err.to_string(), "service redis not found in cluster prod (HTTP 404)");

    handle.shutdown().await;
}

/// `drover diagnostics`: a bundle of a cluster whose host has no agent
/// connected is collected (partial, the host named), written where `-o`
/// says, listed, downloaded again and deleted; a bad window is refused.
#[tokio::test]
async fn diagnostics_collect_list_download_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_manager(&dir.path().join("manager")).await;
    let table = context(&handle, OutputFormat::Table, admin(PASSWORD));
    let json = context(&handle, OutputFormat::Json, admin(PASSWORD));
    let created: Value =
        serde_json::from_str(&drover(&json, &["tokens", "create", "--max-uses", "1"]).await.unwrap()).unwrap();
    let token = EnrollmentToken::from_str(created["token"].as_str().unwrap()).unwrap();
    let host = "5eed1111-0000-4000-8000-000000000001";
    enroll(&handle, &token, host, "cache-1").await;
    ctx_post(&json, &["clusters"], json!({"name": "prod"})).await;
    ctx_post(&json, &["clusters", "prod", "hosts"], json!({"host_ids": [host]})).await;
    ctx_post(&json, &["clusters", "prod", "services"], json!({"name": "cache", "type": "redis"})).await;
    ctx_post(
        &json,
        &["clusters", "prod", "services", "cache", "roles"],
        json!({"role_type": "primary", "host_id": host, "name": "cache-primary"}),
    )
    .await;

    let err = drover(&table, &["diagnostics", "collect", "--cluster", "prod", "--since", "yesterday-ish"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("yesterday-ish") && err.ends_with("(HTTP 400)"), "{err}");

    let file = dir.path().join("bundle.tar.gz");
    let args = ["diagnostics", "collect", "--cluster", "prod", "--since", "1h", "-o", file.to_str().unwrap()];
    let out = drover(&table, &args).await.unwrap();
    assert!(
        out.starts_with("bundle dg-")
            && out.contains(" partial (")
            && out.ends_with(&format!("written to {}\n", file.display())),
        "{out}"
    );
    let id = out.split_whitespace().nth(1).unwrap().to_owned();
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip file");

    let out = drover(&table, &["diagnostics", "list"]).await.unwrap();
    assert!(out.starts_with("ID "), "{out}");
    let row = out.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{id} not listed: {out}"));
    assert!(row.contains(" prod ") && row.contains(" partial ") && row.ends_with("cache-1"), "{row}");
    let listed: Value = serde_json::from_str(&drover(&json, &["diagnostics", "list"]).await.unwrap()).unwrap();
    assert_eq!(listed["items"][0]["size_bytes"].as_u64(), Some(bytes.len() as u64));

    let again = dir.path().join("again.tar.gz");
    let out = drover(&table, &["diagnostics", "download", &id, "-o", again.to_str().unwrap()]).await.unwrap();
    assert!(out.starts_with(&format!("wrote {} (", again.display())), "{out}");
    assert_eq!(std::fs::read(&again).unwrap(), bytes);

    assert_eq!(drover(&table, &["diagnostics", "delete", &id]).await.unwrap(), format!("deleted bundle {id}\n"));
    assert_eq!(drover(&table, &["diagnostics", "list"]).await.unwrap(), "no diagnostic bundles\n");
    let err = drover(&table, &["diagnostics", "download", &id]).await.unwrap_err().to_string();
    assert!(err.ends_with("(HTTP 404)"), "{err}");
    handle.shutdown().await;
}

async fn ctx_post(ctx: &Context, segments: &[&str], body: Value) -> Value {
    ctx.client.send_json(Method::POST, segments, Some(&body)).await.unwrap()
}

#[tokio::test]
async fn unreachable_manager() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let ctx = Context { client: ManagerClient::new(url, admin("x")).unwrap(), output: OutputFormat::Table };
    let err = drover(&ctx, &["whoami"]).await.unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot reach the manager at http://127.0.0.1:{port}: ")), "{err}");
    assert!(err.ends_with("; is drover-manager running?"), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
}
