//! The store's contract, written once and run against both backends: every
//! `case_*` below becomes `sqlite::<name>` (a fresh database file in a temp
//! dir) and `postgres::<name>` (a fresh database on the server named by
//! `DROVER_TEST_POSTGRES_URL`, created for the test and dropped after it).
//!
//! Run `eval "$(scripts/postgres-test-db.sh)"` first; without the variable the
//! PostgreSQL half fails, unless `DROVER_TEST_SKIP_POSTGRES=1`.
//!
//! Every timestamp is explicit (a fixed `T0`), so assertions are exact.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use drover_manager::auth::sha256_hex;
use drover_manager::model::{
    AuditEntry, Disk, DiskUsage, EnrollmentTokenInfo, EnrollmentTokenState, Event, Host, HostFacts, HostKind,
    HostMetrics, HostStatus, Labels, MetricPoint, rfc3339,
};
use drover_manager::store::{AlertHistoryFilter, AlertHistoryRec, AlertRuleRec, MaintenanceRec, SilenceRec};
use drover_manager::store::{
    ApiTokenRecord, AppliedRec, AppliedRevision, AuditFilter, Backend, ClusterRec, CommandRec, EnrollError,
    EnrollmentTokenRecord, EventFilter, HeartbeatRow, HostFilter, NewAudit, NewEvent, NewHost, RevisionRec, RoleRec,
    RoleStatusRec, ServiceRec, ServiceRoles, StepRec, Store, StoreError, UserRecord,
};
use drover_manager::store::{CommandFilter, PointRec, PointTable, SeriesRec, UserChange};
use drover_manager::users::{Grant, Role};
use futures::FutureExt;

/// 2023-11-14T22:00:00Z, on a whole hour.
const T0: i64 = 1_699_999_200_000;
const SECOND: i64 = 1_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// A database made for one test, removed when the test ends.
enum TestDb {
    Sqlite { url: String, _dir: tempfile::TempDir },
    Postgres { url: String, admin_url: String, name: String },
}

impl TestDb {
    /// A fresh, empty database, or None when the PostgreSQL tests are skipped.
    async fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("create temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("drover.db").display());
                Some(TestDb::Sqlite { url, _dir: dir })
            }
            Backend::Postgres => {
                let admin_url = match std::env::var("DROVER_TEST_POSTGRES_URL") {
                    Ok(url) if !url.is_empty() => url,
                    _ if std::env::var("DROVER_TEST_SKIP_POSTGRES").as_deref() == Ok("1") => {
                        eprintln!("skipped: DROVER_TEST_SKIP_POSTGRES=1");
                        return None;
                    }
                    _ => panic!(
                        "DROVER_TEST_POSTGRES_URL is not set: run `eval \"$(scripts/postgres-test-db.sh)\"` as root \
                         first, or set DROVER_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
                    ),
                };
                let name = format!("drover_test_{}", uuid::Uuid::new_v4().simple());
                admin_sql(&admin_url, &format!("CREATE DATABASE {name}")).await;
                let url = with_database(&admin_url, &name);
                Some(TestDb::Postgres { url, admin_url, name })
            }
        }
    }

    fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// Best effort: a database left behind is harmless, only untidy.
    async fn remove(self) {
        if let TestDb::Postgres { admin_url, name, .. } = self {
            use sqlx::{Connection, Executor};
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = conn.execute(sql.as_str()).await {
                    eprintln!("could not drop test database {name}: {e}");
                }
                let _ = conn.close().await;
            }
        }
    }
}

async fn admin_sql(admin_url: &str, sql: &str) {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("connect to DROVER_TEST_POSTGRES_URL: {e}; is scripts/postgres-test-db.sh run?"));
    conn.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

/// The admin URL with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Runs a case on a freshly opened store and removes the database afterwards,
/// also when the case panics.
async fn with_store<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let outcome = AssertUnwindSafe(async {
        let store = Store::open(db.url()).await.expect("open store");
        assert_eq!(store.backend(), backend);
        case(store.clone()).await;
        store.close().await;
    })
    .catch_unwind()
    .await;
    db.remove().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Like [`with_store`] for cases that open the store themselves.
async fn with_url<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let outcome = AssertUnwindSafe(case(db.url().to_owned())).catch_unwind().await;
    db.remove().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// `name => runner(case);` becomes `sqlite::name` and `postgres::name`.
macro_rules! backend_tests {
    ($backend:ident; $($test:ident => $runner:ident($case:ident);)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$runner(drover_manager::store::Backend::$backend, super::$case).await;
            }
        )*
    };
}

macro_rules! store_suite {
    ($($body:tt)*) => {
        mod sqlite {
            backend_tests!(Sqlite; $($body)*);
        }
        mod postgres {
            backend_tests!(Postgres; $($body)*);
        }
    };
}

store_suite! {
    migrations_apply_once_and_reopen => with_url(case_migrations_apply_once_and_reopen);
    users_insert_lookup_and_conflict => with_store(case_users_insert_lookup_and_conflict);
    api_tokens_expire => with_store(case_api_tokens_expire);
    user_grants_and_the_last_admin => with_store(case_user_grants_and_last_admin);
    disabled_users_and_scoped_tokens => with_store(case_disabled_users_and_scoped_tokens);
    hosts_and_commands_filtered_by_cluster => with_store(case_hosts_and_commands_filtered_by_cluster);
    web_sessions_expire_and_delete => with_store(case_web_sessions_expire_and_delete);
    enrollment_tokens_insert_list_revoke => with_store(case_enrollment_tokens_insert_list_revoke);
    enrollment_tokens_page_splits_active_from_the_rest => with_store(case_enrollment_tokens_page);
    enroll_host_merges_token_labels_under_agent_labels => with_store(case_enroll_host_merges_labels);
    enroll_host_refusals_change_nothing => with_store(case_enroll_host_refusals_change_nothing);
    enroll_host_race_for_last_uses => with_store(case_enroll_host_race_for_last_uses);
    enroll_host_duplicate_id_rolls_back_the_use => with_store(case_enroll_host_duplicate_id_rolls_back);
    list_hosts_filters => with_store(case_list_hosts_filters);
    list_hosts_hostname_is_a_literal_substring => with_store(case_list_hosts_hostname_literal);
    list_hosts_pagination_and_total => with_store(case_list_hosts_pagination);
    set_host_labels_replaces => with_store(case_set_host_labels);
    update_host_facts => with_store(case_update_host_facts);
    decommission_host => with_store(case_decommission_host);
    flush_writes_heartbeats_and_events => with_store(case_flush);
    flush_never_resurrects_a_decommissioned_host => with_store(case_flush_never_resurrects);
    flush_batch_writes_each_host_once => with_store(case_flush_batch_per_host);
    host_live_migration_keeps_each_hosts_live_state => with_url(case_host_live_migration);
    host_metrics_from_the_series_rollups => with_store(case_host_metrics_range);
    events_filters_and_order => with_store(case_events);
    audit_filters_and_order => with_store(case_audit);
    services_roles_revisions_and_status => with_store(case_services);
    service_roles_are_kept_until_a_write_changes_them => with_store(case_service_roles_cache);
    commands_and_steps => with_store(case_commands);
    cluster_hosts_and_parcels => with_store(case_cluster_parcels);
    metric_series_are_created_once_and_refreshed => with_store(case_metric_series);
    metric_points_roll_up_to_minutes_and_hours => with_store(case_metric_rollups);
    metric_points_pruned_by_resolution_and_age => with_store(case_metric_prune);
    metric_steps_and_group_steps_are_computed_by_the_database => with_store(case_metric_steps);
    alert_rules_silences_maintenance_and_history => with_store(case_alerts);
    templates_are_stored_in_versions => with_store(case_templates);
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn facts(hostname: &str) -> HostFacts {
    HostFacts {
        hostname: hostname.to_owned(),
        addresses: vec!["10.0.0.7".into(), "fe80::7".into()],
        kind: HostKind::Container,
        kind_evidence: "/.dockerenv exists".into(),
        os: "Debian GNU/Linux 12".into(),
        kernel: "6.1.0-18-amd64".into(),
        arch: "x86_64".into(),
        cpu_cores: 4,
        memory_bytes: 8 << 30,
        fqdn: String::new(),
        container_id: String::new(),
        machine_cpu_cores: 4,
        machine_memory_bytes: 8 << 30,
        capacity_evidence: "no cgroup limit below the machine's".into(),
        disks: vec![Disk {
            mount_point: "/".into(),
            device: "/dev/sda1".into(),
            fs_type: "ext4".into(),
            total_bytes: 100 << 30,
        }],
    }
}

fn user(id: &str, username: &str) -> UserRecord {
    UserRecord {
        id: id.to_owned(),
        username: username.to_owned(),
        password_hash: format!("$argon2id$fake${username}"),
        grants: vec![Grant::global(Role::Admin)],
        disabled: false,
        source: "local".into(),
        last_sign_in_at: None,
        created_at: T0,
    }
}

fn secret_hash(token_id: &str) -> String {
    sha256_hex(&format!("secret-of-{token_id}"))
}

fn token(id: &str, max_uses: u32, expires_at: i64, token_labels: Labels) -> EnrollmentTokenRecord {
    EnrollmentTokenRecord {
        id: id.to_owned(),
        secret_hash: secret_hash(id),
        labels: token_labels,
        max_uses,
        uses: 0,
        created_by: "admin".into(),
        created_at: T0,
        expires_at,
        revoked_at: None,
    }
}

fn new_host(id: &str, hostname: &str, agent_labels: Labels) -> NewHost {
    NewHost {
        id: id.to_owned(),
        facts: facts(hostname),
        agent_version: "0.1.0".into(),
        labels: agent_labels,
        cert_serial: format!("serial-{id}"),
    }
}

/// A host as it looks right after enrolling at `T0`.
fn enrolled(id: &str, hostname: &str, host_labels: Labels) -> Host {
    let f = facts(hostname);
    Host {
        id: id.to_owned(),
        hostname: f.hostname,
        addresses: f.addresses,
        kind: f.kind,
        kind_evidence: f.kind_evidence,
        os: f.os,
        kernel: f.kernel,
        arch: f.arch,
        cpu_cores: f.cpu_cores,
        memory_bytes: f.memory_bytes,
        disks: f.disks,
        fqdn: f.fqdn,
        container_id: f.container_id,
        machine_cpu_cores: f.machine_cpu_cores,
        machine_memory_bytes: f.machine_memory_bytes,
        capacity_evidence: f.capacity_evidence,
        agent_version: "0.1.0".into(),
        labels: host_labels,
        status: HostStatus::Healthy,
        enrolled_at: rfc3339(T0),
        last_heartbeat_at: None,
        decommissioned_at: None,
        applied_generation: 0,
        metrics: None,
        cert_serial: format!("serial-{id}"),
    }
}

/// Enrolls a host through its own single-use token.
async fn add_host(store: &Store, id: &str, hostname: &str, host_labels: Labels) -> Host {
    let token_id = format!("tok-{id}");
    store.insert_enrollment_token(&token(&token_id, 1, T0 + HOUR, Labels::new())).await.expect("insert token");
    store
        .enroll_host(&token_id, &secret_hash(&token_id), T0, &new_host(id, hostname, host_labels))
        .await
        .expect("enroll host")
}

fn host_metrics(cpu_percent: f64) -> HostMetrics {
    HostMetrics {
        at: rfc3339(T0 + 10 * SECOND),
        cpu_percent,
        memory_used_bytes: 3 << 30,
        memory_total_bytes: 8 << 30,
        load1: 0.5,
        load5: 0.25,
        load15: 0.125,
        disks: vec![DiskUsage { mount_point: "/".into(), used_bytes: 40 << 30, total_bytes: 100 << 30 }],
        network_rx_bytes: 123_456,
        network_tx_bytes: 654_321,
        uptime_seconds: 86_400,
    }
}

fn event(at: i64, object_id: &str, message: &str) -> NewEvent {
    NewEvent {
        at,
        severity: "info",
        kind: "host_enrolled",
        object_type: "host",
        object_id: object_id.to_owned(),
        message: message.to_owned(),
    }
}

fn audit(at: i64, username: &str, object_type: &str, object_id: &str) -> NewAudit {
    NewAudit {
        at,
        username: username.to_owned(),
        source: "192.0.2.1".into(),
        action: format!("{object_type}.update"),
        object_type: object_type.to_owned(),
        object_id: object_id.to_owned(),
        summary: format!("{username} changed {object_id}"),
        via: "token".into(),
        permission: "hosts.write".into(),
    }
}

fn all(filter: HostFilter) -> HostFilter {
    HostFilter { limit: 1000, ..filter }
}

async fn hostnames(store: &Store, filter: HostFilter) -> (Vec<String>, u64) {
    let page = store.list_hosts(&filter).await.expect("list hosts");
    (page.items.into_iter().map(|h| h.hostname).collect(), page.total)
}

async fn uses_of(store: &Store, token_id: &str) -> u32 {
    store.enrollment_token(token_id).await.expect("read token").expect("token exists").uses
}

async fn host_count(store: &Store) -> u64 {
    store.list_hosts(&all(HostFilter::default())).await.expect("list hosts").total
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

async fn case_migrations_apply_once_and_reopen(url: String) {
    let store = Store::open(&url).await.expect("first open applies migrations");
    assert_eq!(store.count_users().await.unwrap(), 0);
    store.insert_user(&user("u1", "alice")).await.unwrap();
    store.close().await;

    // A second (and third) open finds every migration applied and keeps data.
    for _ in 0..2 {
        let store = Store::open(&url).await.expect("reopen with migrations already applied");
        store.ping().await.unwrap();
        assert_eq!(store.count_users().await.unwrap(), 1);
        assert_eq!(store.user_by_name("alice").await.unwrap().map(|u| u.id), Some("u1".to_owned()));
        store.close().await;
    }
}

async fn case_users_insert_lookup_and_conflict(store: Store) {
    assert_eq!(store.count_users().await.unwrap(), 0);
    assert!(store.user_by_name("alice").await.unwrap().is_none());

    store.insert_user(&user("u1", "alice")).await.unwrap();
    store.insert_user(&user("u2", "bob")).await.unwrap();
    let alice = store.user_by_name("alice").await.unwrap().expect("alice exists");
    assert_eq!(
        (
            alice.id.as_str(),
            alice.username.as_str(),
            alice.password_hash.as_str(),
            alice.grants.clone(),
            alice.created_at
        ),
        ("u1", "alice", "$argon2id$fake$alice", vec![Grant::global(Role::Admin)], T0)
    );
    // Lookups are exact, not prefix or case-folded.
    assert!(store.user_by_name("ali").await.unwrap().is_none());
    assert!(store.user_by_name("ALICE").await.unwrap().is_none());

    let err = store.insert_user(&user("u3", "alice")).await.expect_err("duplicate username");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(err.to_string(), "user \"alice\" already exists");
    assert_eq!(store.count_users().await.unwrap(), 2);
    assert_eq!(store.user_by_name("alice").await.unwrap().map(|u| u.id), Some("u1".to_owned()));
}

async fn case_api_tokens_expire(store: Store) {
    store.insert_user(&user("u1", "alice")).await.unwrap();
    let expiring = ApiTokenRecord {
        id: "at1".into(),
        user_id: "u1".into(),
        name: "ci".into(),
        token_hash: sha256_hex("drvt_expiring"),
        created_at: T0,
        expires_at: Some(T0 + HOUR),
        grants: None,
    };
    let forever = ApiTokenRecord {
        id: "at2".into(),
        name: "backup".into(),
        token_hash: sha256_hex("drvt_forever"),
        expires_at: None,
        ..expiring.clone()
    };
    store.insert_api_token(&expiring).await.unwrap();
    store.insert_api_token(&forever).await.unwrap();

    let owner = |u: Option<(UserRecord, Option<Vec<Grant>>)>| u.map(|(u, _)| u.username);
    let hash = sha256_hex("drvt_expiring");
    assert_eq!(owner(store.user_by_api_token(&hash, T0).await.unwrap()), Some("alice".into()));
    assert_eq!(owner(store.user_by_api_token(&hash, T0 + HOUR - 1).await.unwrap()), Some("alice".into()));
    assert_eq!(owner(store.user_by_api_token(&hash, T0 + HOUR).await.unwrap()), None, "expires at expires_at");
    let hash = sha256_hex("drvt_forever");
    assert_eq!(owner(store.user_by_api_token(&hash, T0 + 1000 * 24 * HOUR).await.unwrap()), Some("alice".into()));
    assert_eq!(owner(store.user_by_api_token(&sha256_hex("drvt_unknown"), T0).await.unwrap()), None);
}

async fn case_user_grants_and_last_admin(store: Store) {
    store.insert_user(&user("u1", "alice")).await.unwrap();
    let bob = UserRecord {
        grants: vec![Grant::on(Role::Operator, "prod"), Grant::global(Role::Viewer), Grant::on(Role::Operator, "prod")],
        ..user("u2", "bob")
    };
    store.insert_user(&bob).await.unwrap();
    let read = store.user_by_name("bob").await.unwrap().unwrap();
    assert_eq!(read.grants, vec![Grant::global(Role::Viewer), Grant::on(Role::Operator, "prod")], "deduplicated");
    let listed: Vec<(String, usize)> =
        store.list_users(100).await.unwrap().into_iter().map(|u| (u.username, u.grants.len())).collect();
    assert_eq!(listed, [("alice".to_owned(), 1), ("bob".to_owned(), 2)]);

    // Alice is the only enabled admin: she can be neither demoted, disabled nor deleted.
    let viewer = [Grant::global(Role::Viewer)];
    assert_eq!(store.update_user("u1", Some(&viewer), None).await.unwrap(), UserChange::LastAdmin);
    assert_eq!(store.update_user("u1", None, Some(true)).await.unwrap(), UserChange::LastAdmin);
    assert_eq!(store.delete_user("u1").await.unwrap(), UserChange::LastAdmin);
    let alice = store.user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(
        (alice.grants.clone(), alice.disabled),
        (vec![Grant::global(Role::Admin)], false),
        "nothing half-applied"
    );
    // An admin on one cluster does not count (and cannot be granted there by the domain).
    assert_eq!(store.update_user("u9", None, Some(true)).await.unwrap(), UserChange::NotFound);

    // With bob an enabled admin too, alice can go.
    let admin = [Grant::global(Role::Admin)];
    assert_eq!(store.update_user("u2", Some(&admin), None).await.unwrap(), UserChange::Done);
    assert_eq!(store.update_user("u1", None, Some(true)).await.unwrap(), UserChange::Done);
    // ...but now bob is the last enabled one.
    assert_eq!(store.delete_user("u2").await.unwrap(), UserChange::LastAdmin);
    assert_eq!(store.update_user("u1", None, Some(false)).await.unwrap(), UserChange::Done);
    assert_eq!(store.delete_user("u2").await.unwrap(), UserChange::Done);
    assert!(store.user_by_name("bob").await.unwrap().is_none());
    assert_eq!(store.delete_user("u2").await.unwrap(), UserChange::NotFound);

    // Deleting a cluster's grants leaves the others.
    let carol = UserRecord {
        grants: vec![Grant::on(Role::Viewer, "prod"), Grant::on(Role::Viewer, "dev")],
        ..user("u3", "carol")
    };
    store.insert_user(&carol).await.unwrap();
    assert_eq!(store.delete_cluster_grants("prod").await.unwrap(), 1);
    assert_eq!(store.user_by_name("carol").await.unwrap().unwrap().grants, vec![Grant::on(Role::Viewer, "dev")]);
}

async fn case_disabled_users_and_scoped_tokens(store: Store) {
    store.insert_user(&user("u1", "alice")).await.unwrap();
    store.insert_user(&user("u2", "bob")).await.unwrap();
    let scoped = vec![Grant::on(Role::Viewer, "prod")];
    let token = ApiTokenRecord {
        id: "at1".into(),
        user_id: "u2".into(),
        name: "ci".into(),
        token_hash: sha256_hex("drvt_bob"),
        created_at: T0,
        expires_at: Some(T0 + HOUR),
        grants: Some(scoped.clone()),
    };
    store.insert_api_token(&token).await.unwrap();
    store.insert_web_session("sid-b", "u2", T0, T0 + HOUR).await.unwrap();
    let (owner, grants) = store.user_by_api_token(&token.token_hash, T0 + 1).await.unwrap().unwrap();
    assert_eq!((owner.username.as_str(), grants), ("bob", Some(scoped.clone())));
    let listed = store.list_api_tokens("u2").await.unwrap();
    assert_eq!(listed[0].grants, Some(scoped));
    assert_eq!(listed[0].last_used_at, Some(rfc3339(T0 + 1)), "the use is noted");

    // Disabling ends the sessions and refuses the tokens; enabling restores tokens only.
    assert_eq!(store.update_user("u2", None, Some(true)).await.unwrap(), UserChange::Done);
    assert!(store.user_by_api_token(&token.token_hash, T0 + 2).await.unwrap().is_none());
    assert!(store.user_by_web_session("sid-b", T0 + 2).await.unwrap().is_none());
    assert!(store.user_by_name("bob").await.unwrap().unwrap().disabled);
    assert_eq!(store.update_user("u2", None, Some(false)).await.unwrap(), UserChange::Done);
    assert!(store.user_by_api_token(&token.token_hash, T0 + 3).await.unwrap().is_some());
    assert!(store.user_by_web_session("sid-b", T0 + 3).await.unwrap().is_none(), "the session stays ended");
    // Deleting the user takes the token with it.
    assert_eq!(store.delete_user("u2").await.unwrap(), UserChange::Done);
    assert!(store.user_by_api_token(&token.token_hash, T0 + 4).await.unwrap().is_none());
    assert!(store.list_api_tokens("u2").await.unwrap().is_empty());
}

async fn case_hosts_and_commands_filtered_by_cluster(store: Store) {
    for (id, name) in [("h1", "a-1"), ("h2", "b-1"), ("h3", "c-1")] {
        add_host(&store, id, name, Labels::new()).await;
    }
    for c in ["prod", "dev"] {
        store.create_cluster(&ClusterRec { name: c.into(), created_at: T0, created_by: "alice".into() }).await.unwrap();
    }
    store.add_cluster_hosts("prod", &["h1".into()], T0).await.unwrap();
    store.add_cluster_hosts("dev", &["h1".into(), "h2".into()], T0).await.unwrap();
    let member_of = |c: &[&str]| {
        all(HostFilter { member_of: Some(c.iter().map(|s| (*s).to_owned()).collect()), ..Default::default() })
    };
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(hostnames(&store, member_of(&["prod"])).await, (names(&["a-1"]), 1));
    assert_eq!(hostnames(&store, member_of(&["prod", "dev"])).await, (names(&["a-1", "b-1"]), 2));
    assert_eq!(hostnames(&store, member_of(&[])).await, (names(&[]), 0), "no cluster: no host");
    assert_eq!(store.clusters_of_host("h1").await.unwrap(), ["dev", "prod"]);
    assert!(store.clusters_of_host("h3").await.unwrap().is_empty());

    for (id, cluster) in [("c1", "prod"), ("c2", "dev"), ("c3", "prod")] {
        let cmd = CommandRec {
            id: id.into(),
            cluster: cluster.into(),
            service: "zk".into(),
            name: "restart".into(),
            params: serde_json::json!({}),
            state: "running".into(),
            message: String::new(),
            created_by: "alice".into(),
            created_at: T0,
            finished_at: None,
        };
        store.insert_command(&cmd, &[]).await.unwrap();
    }
    let ids = |clusters: Option<&[&str]>| {
        let f = CommandFilter {
            clusters: clusters.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            limit: 100,
            ..Default::default()
        };
        let store = store.clone();
        async move {
            let mut ids: Vec<String> = store.search_commands(&f).await.unwrap().into_iter().map(|c| c.id).collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(ids(None).await, ["c1", "c2", "c3"]);
    assert_eq!(ids(Some(&["prod"])).await, ["c1", "c3"]);
    assert_eq!(ids(Some(&[])).await, Vec::<String>::new());
}

async fn case_web_sessions_expire_and_delete(store: Store) {
    store.insert_user(&user("u1", "alice")).await.unwrap();
    store.insert_user(&user("u2", "bob")).await.unwrap();
    store.insert_web_session("sid-a", "u1", T0, T0 + HOUR).await.unwrap();
    store.insert_web_session("sid-b", "u2", T0, T0 + HOUR).await.unwrap();

    let owner = |u: Option<UserRecord>| u.map(|u| u.username);
    assert_eq!(owner(store.user_by_web_session("sid-a", T0).await.unwrap()), Some("alice".into()));
    assert_eq!(owner(store.user_by_web_session("sid-a", T0 + HOUR - 1).await.unwrap()), Some("alice".into()));
    assert_eq!(owner(store.user_by_web_session("sid-a", T0 + HOUR).await.unwrap()), None);
    assert_eq!(owner(store.user_by_web_session("sid-x", T0).await.unwrap()), None);

    store.delete_web_session("sid-a").await.unwrap();
    assert_eq!(owner(store.user_by_web_session("sid-a", T0).await.unwrap()), None);
    // Only that session ended; deleting it again is not an error.
    assert_eq!(owner(store.user_by_web_session("sid-b", T0).await.unwrap()), Some("bob".into()));
    store.delete_web_session("sid-a").await.unwrap();
}

async fn case_enrollment_tokens_page(store: Store) {
    // Created one second apart: a0..a4 active, x0 expired, r0 revoked, u0 used up.
    let mut n = 0;
    let mut add = |id: &str, expires_at: i64| {
        n += 1;
        EnrollmentTokenRecord { created_at: T0 + n * SECOND, ..token(id, 1, expires_at, Labels::new()) }
    };
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(add(&format!("a{i:07}"), T0 + HOUR));
    }
    all.push(add("x0000000", T0 + SECOND));
    all.push(add("r0000000", T0 + HOUR));
    all.push(add("u0000000", T0 + HOUR));
    for t in &all {
        store.insert_enrollment_token(t).await.unwrap();
    }
    assert!(store.revoke_enrollment_token("r0000000", T0 + 9 * SECOND).await.unwrap());
    store
        .enroll_host("u0000000", &secret_hash("u0000000"), T0 + 9 * SECOND, &new_host("h1", "web-1", Labels::new()))
        .await
        .unwrap();
    let now = T0 + 10 * SECOND;
    let ids = |v: &[EnrollmentTokenRecord]| v.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    let (active, rest, total) = store.enrollment_tokens_page(now, 3, 2).await.unwrap();
    assert_eq!(ids(&active), ["a0000004", "a0000003", "a0000002"], "active, newest first, at most 3");
    assert_eq!(ids(&rest), ["u0000000", "r0000000"], "the others, newest first, at most 2");
    assert_eq!(total, 8);
    let (active, rest, _) = store.enrollment_tokens_page(now, 10, 10).await.unwrap();
    assert_eq!((active.len(), ids(&rest)), (5, vec!["u0000000".into(), "r0000000".into(), "x0000000".into()]));
}

async fn case_enrollment_tokens_insert_list_revoke(store: Store) {
    assert!(store.list_enrollment_tokens().await.unwrap().is_empty());
    let older = token("aaaa0001", 3, T0 + HOUR, labels(&[("env", "prod")]));
    let newer = EnrollmentTokenRecord { created_at: T0 + SECOND, ..token("aaaa0002", 1, T0 + 2 * HOUR, Labels::new()) };
    store.insert_enrollment_token(&older).await.unwrap();
    store.insert_enrollment_token(&newer).await.unwrap();

    let info =
        |id: &str, max_uses, created_at, expires_at, l: Labels, revoked_at: Option<i64>, state| EnrollmentTokenInfo {
            id: id.to_owned(),
            labels: l,
            max_uses,
            uses: 0,
            created_by: "admin".into(),
            created_at: rfc3339(created_at),
            expires_at: rfc3339(expires_at),
            revoked_at: revoked_at.map(rfc3339),
            state,
        };
    let listed: Vec<_> = store.list_enrollment_tokens().await.unwrap().iter().map(|t| t.to_api(T0)).collect();
    assert_eq!(
        listed,
        vec![
            info("aaaa0002", 1, T0 + SECOND, T0 + 2 * HOUR, Labels::new(), None, EnrollmentTokenState::Active),
            info("aaaa0001", 3, T0, T0 + HOUR, labels(&[("env", "prod")]), None, EnrollmentTokenState::Active),
        ],
        "newest first"
    );
    let stored = store.enrollment_token("aaaa0001").await.unwrap().expect("token exists");
    assert_eq!(stored.secret_hash, secret_hash("aaaa0001"));
    assert_eq!(stored.to_api(T0 + HOUR).state, EnrollmentTokenState::Expired);
    assert!(store.enrollment_token("zzzz9999").await.unwrap().is_none());

    let err = store.insert_enrollment_token(&older).await.expect_err("duplicate id");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(err.to_string(), "enrollment token aaaa0001 already exists");

    assert!(store.revoke_enrollment_token("aaaa0001", T0 + MINUTE).await.unwrap());
    assert!(store.revoke_enrollment_token("aaaa0001", T0 + 2 * MINUTE).await.unwrap(), "revoking twice succeeds");
    assert!(!store.revoke_enrollment_token("zzzz9999", T0).await.unwrap());
    let revoked = store.enrollment_token("aaaa0001").await.unwrap().expect("token exists");
    assert_eq!(
        revoked.to_api(T0 + 3 * MINUTE),
        info(
            "aaaa0001",
            3,
            T0,
            T0 + HOUR,
            labels(&[("env", "prod")]),
            Some(T0 + MINUTE),
            EnrollmentTokenState::Revoked
        ),
        "the first revocation time is kept"
    );
    assert_eq!(store.enrollment_token("aaaa0002").await.unwrap().map(|t| t.revoked_at), Some(None));
}

async fn case_enroll_host_merges_labels(store: Store) {
    let tok = token("tok00001", 2, T0 + HOUR, labels(&[("env", "prod"), ("rack", "r1")]));
    store.insert_enrollment_token(&tok).await.unwrap();
    let host = store
        .enroll_host(
            "tok00001",
            &secret_hash("tok00001"),
            T0,
            &new_host("h1", "web-1", labels(&[("rack", "r2"), ("role", "db")])),
        )
        .await
        .expect("enroll");
    let expected = enrolled("h1", "web-1", labels(&[("env", "prod"), ("rack", "r2"), ("role", "db")]));
    assert_eq!(host, expected);
    assert_eq!(store.host("h1").await.unwrap(), Some(expected.clone()));
    assert_eq!(store.all_hosts().await.unwrap(), vec![expected]);
    assert_eq!(uses_of(&store, "tok00001").await, 1);
    assert_eq!(
        store.enrollment_token("tok00001").await.unwrap().unwrap().to_api(T0).state,
        EnrollmentTokenState::Active
    );

    store
        .enroll_host("tok00001", &secret_hash("tok00001"), T0, &new_host("h2", "web-2", Labels::new()))
        .await
        .expect("second use");
    assert_eq!(uses_of(&store, "tok00001").await, 2);
    assert_eq!(store.host("h2").await.unwrap().unwrap().labels, labels(&[("env", "prod"), ("rack", "r1")]));
    assert_eq!(
        store.enrollment_token("tok00001").await.unwrap().unwrap().to_api(T0).state,
        EnrollmentTokenState::UsedUp
    );
}

async fn case_enroll_host_refusals_change_nothing(store: Store) {
    let now = T0 + MINUTE;
    store.insert_enrollment_token(&token("revoked1", 5, T0 + HOUR, Labels::new())).await.unwrap();
    store.revoke_enrollment_token("revoked1", T0 + SECOND).await.unwrap();
    store.insert_enrollment_token(&token("expired1", 5, now, Labels::new())).await.unwrap();
    store.insert_enrollment_token(&token("usedup01", 1, T0 + HOUR, Labels::new())).await.unwrap();
    store.insert_enrollment_token(&token("good0001", 5, T0 + HOUR, Labels::new())).await.unwrap();
    // Revoked and expired: revocation is the reason given.
    store.insert_enrollment_token(&token("both0001", 5, T0, Labels::new())).await.unwrap();
    store.revoke_enrollment_token("both0001", T0 - SECOND).await.unwrap();
    store
        .enroll_host("usedup01", &secret_hash("usedup01"), now, &new_host("h0", "first", Labels::new()))
        .await
        .expect("first use");

    let cases: Vec<(&str, String, &str)> = vec![
        ("nosuch01", secret_hash("nosuch01"), "unknown enrollment token nosuch01"),
        ("good0001", secret_hash("wrong"), "unknown enrollment token good0001"),
        ("revoked1", secret_hash("revoked1"), "enrollment token revoked1 was revoked at 2023-11-14T22:00:01.000Z"),
        ("expired1", secret_hash("expired1"), "enrollment token expired1 expired at 2023-11-14T22:01:00.000Z"),
        ("usedup01", secret_hash("usedup01"), "enrollment token usedup01 is used up (1 of 1 uses)"),
        ("both0001", secret_hash("both0001"), "enrollment token both0001 was revoked at 2023-11-14T21:59:59.000Z"),
    ];
    for (i, (token_id, hash, message)) in cases.into_iter().enumerate() {
        let uses_before = store.enrollment_token(token_id).await.unwrap().map(|t| t.uses);
        let host_id = format!("refused-{i}");
        let err = store
            .enroll_host(token_id, &hash, now, &new_host(&host_id, "refused", Labels::new()))
            .await
            .expect_err("refused");
        assert_eq!(err.to_string(), message, "token {token_id}");
        match (token_id, &err) {
            ("nosuch01" | "good0001", EnrollError::Unknown(id)) => assert_eq!(id, token_id),
            ("revoked1" | "both0001", EnrollError::Revoked { id, .. }) => assert_eq!(id, token_id),
            ("expired1", EnrollError::Expired { id, .. }) => assert_eq!(id, token_id),
            ("usedup01", EnrollError::UsedUp { id, uses: 1, max_uses: 1 }) => assert_eq!(id, token_id),
            _ => panic!("token {token_id}: unexpected refusal {err:?}"),
        }
        assert_eq!(store.host(&host_id).await.unwrap(), None, "no host created for {token_id}");
        let uses_after = store.enrollment_token(token_id).await.unwrap().map(|t| t.uses);
        assert_eq!(uses_after, uses_before, "uses of {token_id} unchanged");
    }
    assert_eq!(host_count(&store).await, 1);
    assert_eq!(uses_of(&store, "good0001").await, 0);

    // One millisecond before expiry the token still works.
    store
        .enroll_host("expired1", &secret_hash("expired1"), now - 1, &new_host("h1", "in-time", Labels::new()))
        .await
        .expect("enroll before expiry");
    assert_eq!(uses_of(&store, "expired1").await, 1);
}

async fn case_enroll_host_race_for_last_uses(store: Store) {
    store.insert_enrollment_token(&token("race0001", 5, T0 + HOUR, Labels::new())).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .enroll_host(
                        "race0001",
                        &secret_hash("race0001"),
                        T0,
                        &new_host(&format!("h{i:02}"), &format!("racer-{i:02}"), Labels::new()),
                    )
                    .await
            })
        })
        .collect();
    let mut enrolled = 0;
    let mut used_up = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => enrolled += 1,
            Err(EnrollError::UsedUp { uses: 5, max_uses: 5, .. }) => used_up += 1,
            Err(e) => panic!("unexpected enrollment failure: {e:?}"),
        }
    }
    assert_eq!((enrolled, used_up), (5, 15));
    assert_eq!(host_count(&store).await, 5);
    assert_eq!(uses_of(&store, "race0001").await, 5);
}

async fn case_enroll_host_duplicate_id_rolls_back(store: Store) {
    add_host(&store, "h1", "web-1", Labels::new()).await;
    store.insert_enrollment_token(&token("dup00001", 2, T0 + HOUR, Labels::new())).await.unwrap();
    let err = store
        .enroll_host("dup00001", &secret_hash("dup00001"), T0, &new_host("h1", "impostor", Labels::new()))
        .await
        .expect_err("host id taken");
    assert!(matches!(err, EnrollError::Store(_)), "{err:?}");
    assert_eq!(uses_of(&store, "dup00001").await, 0, "the use is given back");
    assert_eq!(store.host("h1").await.unwrap().map(|h| h.hostname), Some("web-1".into()));
}

async fn case_list_hosts_filters(store: Store) {
    add_host(&store, "h1", "web-1", labels(&[("env", "prod"), ("role", "web")])).await;
    add_host(&store, "h2", "web-2", labels(&[("env", "staging"), ("role", "web")])).await;
    add_host(&store, "h3", "db-1", labels(&[("env", "prod"), ("role", "db")])).await;
    add_host(&store, "h4", "cache-1", labels(&[("env", "prod")])).await;
    store
        .flush(
            &[HeartbeatRow {
                host_id: "h2".into(),
                status: Some(HostStatus::Lost),
                last_heartbeat_at: T0,
                metrics: None,
            }],
            &[],
        )
        .await
        .unwrap();
    store.decommission_host("h4", "admin", T0 + MINUTE).await.unwrap();

    let f = |status: Option<HostStatus>, l: &[(&str, &str)], hostname: Option<&str>| {
        all(HostFilter {
            status,
            labels: l.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            hostname: hostname.map(str::to_owned),
            ..Default::default()
        })
    };
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    assert_eq!(hostnames(&store, f(None, &[], None)).await, (names(&["cache-1", "db-1", "web-1", "web-2"]), 4));
    assert_eq!(hostnames(&store, f(Some(HostStatus::Healthy), &[], None)).await, (names(&["db-1", "web-1"]), 2));
    assert_eq!(hostnames(&store, f(Some(HostStatus::Lost), &[], None)).await, (names(&["web-2"]), 1));
    assert_eq!(hostnames(&store, f(Some(HostStatus::Decommissioned), &[], None)).await, (names(&["cache-1"]), 1));
    assert_eq!(hostnames(&store, f(None, &[("env", "prod")], None)).await, (names(&["cache-1", "db-1", "web-1"]), 3));
    // Labels are AND-ed.
    assert_eq!(hostnames(&store, f(None, &[("env", "prod"), ("role", "web")], None)).await, (names(&["web-1"]), 1));
    assert_eq!(hostnames(&store, f(None, &[("env", "staging"), ("role", "db")], None)).await, (names(&[]), 0));
    assert_eq!(hostnames(&store, f(None, &[("role", "nope")], None)).await, (names(&[]), 0));
    // A key's value must match, not just the key.
    assert_eq!(hostnames(&store, f(None, &[("env", "")], None)).await, (names(&[]), 0));
    assert_eq!(hostnames(&store, f(None, &[], Some("web"))).await, (names(&["web-1", "web-2"]), 2));
    assert_eq!(hostnames(&store, f(None, &[], Some("-1"))).await, (names(&["cache-1", "db-1", "web-1"]), 3));
    // Hostnames are case-insensitive, on both backends.
    assert_eq!(hostnames(&store, f(None, &[], Some("WEB-1"))).await, (names(&["web-1"]), 1));
    // All filters together.
    assert_eq!(
        hostnames(&store, f(Some(HostStatus::Healthy), &[("env", "prod")], Some("web"))).await,
        (names(&["web-1"]), 1)
    );
    assert_eq!(hostnames(&store, f(Some(HostStatus::Lost), &[("env", "prod")], None)).await, (names(&[]), 0));
}

async fn case_list_hosts_hostname_literal(store: Store) {
    for (i, name) in ["a%b", "a_b", "axb", "ab", "a\\b", "a\\%b"].iter().enumerate() {
        add_host(&store, &format!("h{i}"), name, Labels::new()).await;
    }
    let search = |s: &str| all(HostFilter { hostname: Some(s.to_owned()), ..Default::default() });
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(hostnames(&store, search("%")).await, (names(&["a%b", "a\\%b"]), 2));
    assert_eq!(hostnames(&store, search("a%b")).await, (names(&["a%b"]), 1));
    assert_eq!(hostnames(&store, search("_")).await, (names(&["a_b"]), 1));
    assert_eq!(hostnames(&store, search("a_b")).await, (names(&["a_b"]), 1));
    assert_eq!(hostnames(&store, search("\\")).await, (names(&["a\\%b", "a\\b"]), 2));
    assert_eq!(hostnames(&store, search("\\%")).await, (names(&["a\\%b"]), 1));
    assert_eq!(hostnames(&store, search("xb")).await, (names(&["axb"]), 1));
    assert_eq!(hostnames(&store, search("")).await.1, 6, "an empty substring matches every host");
}

async fn case_list_hosts_pagination(store: Store) {
    // Inserted out of order; pages are ordered by hostname.
    for i in [3, 1, 5, 2, 4] {
        add_host(&store, &format!("h{i}"), &format!("node-{i:02}"), labels(&[("group", "page")])).await;
    }
    add_host(&store, "other", "node-00", labels(&[("group", "other")])).await;
    let page = |limit, offset| HostFilter {
        labels: vec![("group".into(), "page".into())],
        limit,
        offset,
        ..Default::default()
    };
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(hostnames(&store, page(2, 0)).await, (names(&["node-01", "node-02"]), 5));
    assert_eq!(hostnames(&store, page(2, 2)).await, (names(&["node-03", "node-04"]), 5));
    assert_eq!(hostnames(&store, page(2, 4)).await, (names(&["node-05"]), 5));
    assert_eq!(hostnames(&store, page(2, 5)).await, (names(&[]), 5));
    assert_eq!(hostnames(&store, page(100, 0)).await.0.len(), 5);
    // A zero limit is raised to one.
    assert_eq!(hostnames(&store, page(0, 0)).await, (names(&["node-01"]), 5));

    let items = store.list_hosts(&page(1, 2)).await.unwrap().items;
    assert_eq!(items, vec![enrolled("h3", "node-03", labels(&[("group", "page")]))]);
}

async fn case_set_host_labels(store: Store) {
    add_host(&store, "h1", "web-1", labels(&[("env", "prod"), ("rack", "r1")])).await;
    add_host(&store, "h2", "web-2", labels(&[("env", "prod")])).await;

    assert!(store.set_host_labels("h1", &labels(&[("env", "staging"), ("tier", "gold")])).await.unwrap());
    assert_eq!(store.host("h1").await.unwrap().unwrap().labels, labels(&[("env", "staging"), ("tier", "gold")]));
    assert_eq!(store.host("h2").await.unwrap().unwrap().labels, labels(&[("env", "prod")]), "other hosts untouched");

    assert!(store.set_host_labels("h1", &Labels::new()).await.unwrap());
    assert_eq!(store.host("h1").await.unwrap().unwrap().labels, Labels::new());

    assert!(!store.set_host_labels("nope", &labels(&[("env", "prod")])).await.unwrap());
    let prod = all(HostFilter { labels: vec![("env".into(), "prod".into())], ..Default::default() });
    assert_eq!(hostnames(&store, prod).await, (vec!["web-2".to_owned()], 1));
}

async fn case_update_host_facts(store: Store) {
    add_host(&store, "h1", "web-1", labels(&[("env", "prod")])).await;
    let new_facts = HostFacts {
        hostname: "web-1.example.com".into(),
        addresses: vec!["10.0.0.8".into()],
        kind: HostKind::Vm,
        kind_evidence: "DMI product name is KVM".into(),
        os: "Ubuntu 24.04".into(),
        kernel: "6.8.0".into(),
        arch: "aarch64".into(),
        cpu_cores: 16,
        memory_bytes: u64::MAX,
        disks: vec![],
        fqdn: "web-1.example.com".into(),
        container_id: "0123456789abcdef".repeat(4),
        machine_cpu_cores: 64,
        machine_memory_bytes: 1 << 40,
        capacity_evidence: "CPU quota 16 CPUs".into(),
    };
    store.update_host_facts("h1", &new_facts, "0.2.0").await.unwrap();
    let host = store.host("h1").await.unwrap().unwrap();
    let expected = Host {
        hostname: new_facts.hostname.clone(),
        addresses: new_facts.addresses.clone(),
        kind: HostKind::Vm,
        kind_evidence: new_facts.kind_evidence.clone(),
        os: new_facts.os.clone(),
        kernel: new_facts.kernel.clone(),
        arch: new_facts.arch.clone(),
        cpu_cores: 16,
        // Saturated at i64::MAX rather than wrapping.
        memory_bytes: i64::MAX as u64,
        disks: vec![],
        fqdn: new_facts.fqdn.clone(),
        container_id: new_facts.container_id.clone(),
        machine_cpu_cores: 64,
        machine_memory_bytes: 1 << 40,
        capacity_evidence: new_facts.capacity_evidence.clone(),
        agent_version: "0.2.0".into(),
        ..enrolled("h1", "web-1", labels(&[("env", "prod")]))
    };
    assert_eq!(host, expected);
    // An unknown host is not an error and creates nothing.
    store.update_host_facts("nope", &new_facts, "0.2.0").await.unwrap();
    assert_eq!(host_count(&store).await, 1);

    store.set_applied_generation("h1", 7).await.unwrap();
    assert_eq!(store.host("h1").await.unwrap().unwrap().applied_generation, 7);
}

async fn case_decommission_host(store: Store) {
    add_host(&store, "h1", "web-1", Labels::new()).await;
    let before = store.decommission_host("h1", "alice", T0 + MINUTE).await.unwrap();
    assert_eq!(before, Some(enrolled("h1", "web-1", Labels::new())), "returns the host as it was");
    let after = store.host("h1").await.unwrap().unwrap();
    assert_eq!(
        after,
        Host {
            status: HostStatus::Decommissioned,
            decommissioned_at: Some(rfc3339(T0 + MINUTE)),
            ..enrolled("h1", "web-1", Labels::new())
        }
    );

    // Again: the first time is kept, and `before` shows it decommissioned.
    let again = store.decommission_host("h1", "bob", T0 + HOUR).await.unwrap();
    assert_eq!(again, Some(after.clone()));
    assert_eq!(store.host("h1").await.unwrap(), Some(after));
    assert_eq!(store.decommission_host("nope", "alice", T0).await.unwrap(), None);
}

async fn case_flush(store: Store) {
    add_host(&store, "h1", "web-1", Labels::new()).await;
    add_host(&store, "h2", "web-2", Labels::new()).await;
    store.flush(&[], &[]).await.expect("empty flush");

    let m = host_metrics(12.5);
    store
        .flush(
            &[
                HeartbeatRow {
                    host_id: "h1".into(),
                    status: Some(HostStatus::Healthy),
                    last_heartbeat_at: T0 + 10 * SECOND,
                    metrics: Some(m.clone()),
                },
                HeartbeatRow {
                    host_id: "h2".into(),
                    status: Some(HostStatus::Lost),
                    last_heartbeat_at: T0 + 5 * SECOND,
                    metrics: None,
                },
                // Rows for hosts that do not exist are ignored.
                HeartbeatRow {
                    host_id: "ghost".into(),
                    status: Some(HostStatus::Healthy),
                    last_heartbeat_at: T0,
                    metrics: None,
                },
            ],
            &[event(T0 + SECOND, "h2", "host lost"), event(T0 + 2 * SECOND, "h1", "host enrolled")],
        )
        .await
        .expect("flush");

    let h1 = store.host("h1").await.unwrap().unwrap();
    assert_eq!(
        h1,
        Host {
            last_heartbeat_at: Some(rfc3339(T0 + 10 * SECOND)),
            metrics: Some(m.clone()),
            ..enrolled("h1", "web-1", Labels::new())
        }
    );
    let h2 = store.host("h2").await.unwrap().unwrap();
    assert_eq!(
        h2,
        Host {
            status: HostStatus::Lost,
            last_heartbeat_at: Some(rfc3339(T0 + 5 * SECOND)),
            ..enrolled("h2", "web-2", Labels::new())
        }
    );
    assert_eq!(store.host("ghost").await.unwrap(), None);

    // A row without metrics keeps the latest ones.
    store
        .flush(
            &[HeartbeatRow {
                host_id: "h1".into(),
                status: Some(HostStatus::Lost),
                last_heartbeat_at: T0 + MINUTE,
                metrics: None,
            }],
            &[],
        )
        .await
        .unwrap();
    let h1 = store.host("h1").await.unwrap().unwrap();
    assert_eq!((h1.status, h1.last_heartbeat_at, h1.metrics), (HostStatus::Lost, Some(rfc3339(T0 + MINUTE)), Some(m)));

    let events = store.list_events(&EventFilter { limit: 10, ..Default::default() }).await.unwrap();
    let summary: Vec<_> = events.iter().map(|e| (e.at.as_str(), e.object_id.as_str(), e.message.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (rfc3339(T0 + 2 * SECOND).as_str(), "h1", "host enrolled"),
            (rfc3339(T0 + SECOND).as_str(), "h2", "host lost"),
        ]
    );
}

async fn case_flush_never_resurrects(store: Store) {
    add_host(&store, "h1", "web-1", Labels::new()).await;
    store.decommission_host("h1", "alice", T0 + MINUTE).await.unwrap();
    store
        .flush(
            &[HeartbeatRow {
                host_id: "h1".into(),
                status: Some(HostStatus::Healthy),
                last_heartbeat_at: T0 + 2 * MINUTE,
                metrics: Some(host_metrics(50.0)),
            }],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        store.host("h1").await.unwrap().unwrap(),
        Host {
            status: HostStatus::Decommissioned,
            decommissioned_at: Some(rfc3339(T0 + MINUTE)),
            ..enrolled("h1", "web-1", Labels::new())
        }
    );
}

/// One batch touching hosts in different ways: each row gets exactly what
/// was given for it, and a live-state row without status or metrics keeps the
/// stored ones.
async fn case_flush_batch_per_host(store: Store) {
    for (id, name) in [("h1", "web-1"), ("h2", "web-2"), ("h3", "web-3"), ("h4", "web-4")] {
        add_host(&store, id, name, Labels::new()).await;
    }
    let m = host_metrics(20.0);
    let live = |id: &str, status: Option<HostStatus>, at: i64, metrics: Option<HostMetrics>| HeartbeatRow {
        host_id: id.into(),
        status,
        last_heartbeat_at: at,
        metrics,
    };
    store
        .flush(&[live("h1", Some(HostStatus::Lost), T0, Some(m.clone())), live("h4", None, T0, None)], &[])
        .await
        .unwrap();
    store.decommission_host("h4", "alice", T0 + MINUTE).await.unwrap();

    let heartbeats = [
        // Status and metrics as stored: neither is sent again.
        live("h1", None, T0 + 2 * MINUTE, None),
        live("h2", Some(HostStatus::Lost), T0 + 3 * MINUTE, None),
        live("h4", Some(HostStatus::Healthy), T0 + 2 * MINUTE, Some(m.clone())),
    ];
    let desired = [("h1".to_owned(), 5), ("h3".to_owned(), 6), ("h4".to_owned(), 8)];
    let applied = [("h1".to_owned(), 4), ("h2".to_owned(), 2), ("ghost".to_owned(), 9)];
    let batch = drover_manager::store::FlushBatch {
        heartbeats: &heartbeats,
        desired_generations: &desired,
        applied_generations: &applied,
        ..Default::default()
    };
    store.flush_batch(batch).await.unwrap();

    let host = |h: Host| (h.status, h.last_heartbeat_at, h.metrics, h.applied_generation);
    assert_eq!(
        host(store.host("h1").await.unwrap().unwrap()),
        (HostStatus::Lost, Some(rfc3339(T0 + 2 * MINUTE)), Some(m.clone()), 4)
    );
    assert_eq!(
        host(store.host("h2").await.unwrap().unwrap()),
        (HostStatus::Lost, Some(rfc3339(T0 + 3 * MINUTE)), None, 2)
    );
    assert_eq!(host(store.host("h3").await.unwrap().unwrap()), (HostStatus::Healthy, None, None, 0));
    // Decommissioned while queued: its live state is dropped, its generation kept.
    assert_eq!(
        host(store.host("h4").await.unwrap().unwrap()),
        (HostStatus::Decommissioned, Some(rfc3339(T0)), None, 0)
    );
    let generations = store.desired_generations().await.unwrap();
    let wanted = [("h1", 5), ("h2", 1), ("h3", 6), ("h4", 8)];
    assert_eq!(wanted.map(|(h, _)| generations.get(h).copied()), wanted.map(|(_, g)| Some(g)));
    assert_eq!(store.host("ghost").await.unwrap(), None);
}

/// A database an earlier release made keeps every host's live state (last
/// heartbeat, desired and applied generation) when migration 0016 moves it
/// out of `hosts` into `host_live`; hosts enrolled after it get their row.
async fn case_host_live_migration(url: String) {
    use sqlx::{Connection, Executor};
    let schema = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema").join(schema);
    let mut before = sqlx::migrate::Migrator::new(dir).await.expect("read the migrations");
    before.migrations = before.migrations.iter().filter(|m| m.version < 16).cloned().collect();
    assert_eq!(before.migrations.len(), 15);
    let old_hosts = "INSERT INTO hosts (id, hostname, kind, status, cert_serial, enrolled_at, last_heartbeat_at, \
        desired_generation, applied_generation) VALUES \
        ('h1', 'web-1', 'vm', 'healthy', 'c1', 1699999200000, 1699999260000, 7, 6), \
        ('h2', 'web-2', 'vm', 'lost', 'c2', 1699999200000, NULL, 1, 0)";
    if schema == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("connect");
        before.run(&mut conn).await.expect("migrations 1 to 15");
        conn.execute(old_hosts).await.expect("hosts as 0015 stores them");
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        before.run(&mut conn).await.expect("migrations 1 to 15");
        conn.execute(old_hosts).await.expect("hosts as 0015 stores them");
        conn.close().await.unwrap();
    }

    let store = Store::open(&url).await.expect("open applies 0016");
    let host = |h: Host| (h.hostname, h.status, h.last_heartbeat_at, h.applied_generation);
    assert_eq!(
        host(store.host("h1").await.unwrap().unwrap()),
        ("web-1".to_owned(), HostStatus::Healthy, Some(rfc3339(T0 + MINUTE)), 6)
    );
    assert_eq!(host(store.host("h2").await.unwrap().unwrap()), ("web-2".to_owned(), HostStatus::Lost, None, 0));
    let generations = store.desired_generations().await.unwrap();
    assert_eq!((generations.get("h1"), generations.get("h2")), (Some(&7), Some(&1)));

    add_host(&store, "h3", "web-3", Labels::new()).await;
    store.set_desired_generation("h3", 3).await.unwrap();
    store.set_applied_generation("h3", 2).await.unwrap();
    assert_eq!(store.desired_generations().await.unwrap().get("h3"), Some(&3));
    assert_eq!(store.host("h3").await.unwrap().unwrap().applied_generation, 2);
    store.close().await;
}

fn mount(mount_point: &str, used_bytes: u64, total_bytes: u64) -> drover_manager::model::MountUsage {
    drover_manager::model::MountUsage { mount_point: mount_point.into(), used_bytes, total_bytes }
}

/// A rollup point of `values` (in the order they came).
fn rollup(series_id: i64, t: i64, values: &[f64]) -> PointRec {
    PointRec {
        series_id,
        t,
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        sum: values.iter().sum(),
        count: values.len() as i64,
        last: values[values.len() - 1],
    }
}

async fn case_host_metrics_range(store: Store) {
    // h1's host series; h2's CPU and a role series with h1 as its entity id must not show.
    let named = [
        ("host_cpu_percent", "{}"),
        ("host_load1", "{}"),
        ("host_memory_used_bytes", "{}"),
        ("host_network_rx_bytes_total", "{}"),
        ("host_network_tx_bytes_total", "{}"),
        ("host_disk_used_bytes", r#"{"mount":"/data"}"#),
        ("host_disk_total_bytes", r#"{"mount":"/data"}"#),
        ("host_disk_used_bytes", r#"{"mount":"/"}"#),
        ("host_disk_total_bytes", r#"{"mount":"/"}"#),
        ("host_uptime_seconds", "{}"),
    ];
    let mut recs: Vec<SeriesRec> = named.iter().map(|(n, l)| series_rec(n, "host", "h1", l)).collect();
    recs.push(series_rec("host_cpu_percent", "host", "h2", "{}"));
    recs.push(series_rec("host_cpu_percent", "role", "h1", "{}"));
    let ids = store.ensure_series(&recs).await.unwrap();
    let [cpu, load, mem, rx, tx, data_used, data_total, root_used, root_total, uptime, h2_cpu, role_cpu] = ids[..]
    else {
        panic!("{ids:?}")
    };
    let (m0, m1, m2) = (T0S, T0S + 60, T0S + 120);
    let mut minutes = Vec::new();
    for (t, k) in [(m0, 1.0), (m1, 2.0)] {
        minutes.extend([
            rollup(load, t, &[0.5 * k, 1.5 * k]),
            rollup(mem, t, &[900.0, 1000.0 * k]),
            rollup(rx, t, &[10.0, 20.0 * k]),
            rollup(tx, t, &[30.0, 40.0 * k]),
            rollup(data_used, t, &[50.0, 100.0 * k]),
            rollup(data_total, t, &[50_000.0]),
            rollup(root_used, t, &[1_000.0 * k]),
            rollup(root_total, t, &[10_000.0]),
            rollup(uptime, t, &[86_400.0]),
        ]);
    }
    minutes.extend([
        rollup(cpu, m0, &[10.0, 20.0]),
        rollup(cpu, m1, &[30.0]),
        // A minute with only CPU: the rest reads 0.
        rollup(cpu, m2, &[4.0, 5.0, 6.0]),
        rollup(h2_cpu, m1, &[99.0]),
        rollup(role_cpu, m1, &[77.0]),
    ]);
    store.insert_rollup_points(PointTable::Minute, &minutes).await.unwrap();
    store
        .insert_rollup_points(
            PointTable::Hour,
            &[rollup(cpu, T0S, &[10.0, 20.0, 30.0, 5.0]), rollup(mem, T0S, &[900.0, 1000.0, 900.0, 2000.0])],
        )
        .await
        .unwrap();

    let minute = |at: i64, samples: u32, cpu: f64, k: f64| MetricPoint {
        at: rfc3339(at),
        resolution_s: 60,
        samples,
        cpu_percent: cpu,
        // Averages of the minute.
        load1: k,
        // The last value of the minute.
        memory_used_bytes: 1000 * k as u64,
        network_rx_bytes: 20 * k as u64,
        network_tx_bytes: 40 * k as u64,
        disk_used_bytes: 1100 * k as u64,
        disks: vec![mount("/", 1000 * k as u64, 10_000), mount("/data", 100 * k as u64, 50_000)],
    };
    let p0 = minute(T0, 2, 15.0, 1.0);
    let p1 = minute(T0 + MINUTE, 1, 30.0, 2.0);
    let p2 = MetricPoint {
        at: rfc3339(T0 + 2 * MINUTE),
        resolution_s: 60,
        samples: 3,
        cpu_percent: 5.0,
        memory_used_bytes: 0,
        load1: 0.0,
        disk_used_bytes: 0,
        network_rx_bytes: 0,
        network_tx_bytes: 0,
        disks: vec![],
    };
    let range = |from, to| store.host_metrics("h1", 60, from, to);
    assert_eq!(range(T0, T0 + 3 * MINUTE).await.unwrap(), vec![p0.clone(), p1.clone(), p2.clone()]);
    // [from, to): the start is included, the end is not.
    assert_eq!(range(T0 + MINUTE, T0 + 2 * MINUTE).await.unwrap(), vec![p1.clone()]);
    assert_eq!(range(T0 + 1, T0 + 2 * MINUTE + 1).await.unwrap(), vec![p1, p2]);
    assert_eq!(range(T0 + 3 * MINUTE, T0 + HOUR).await.unwrap(), vec![]);
    // Hours: CPU averaged over the hour's heartbeats, memory the hour's average.
    let hour = store.host_metrics("h1", 3600, T0, T0 + HOUR).await.unwrap();
    assert_eq!(
        hour.iter()
            .map(|p| (p.at.as_str(), p.resolution_s, p.samples, p.cpu_percent, p.memory_used_bytes))
            .collect::<Vec<_>>(),
        vec![(rfc3339(T0).as_str(), 3600, 4, 16.25, 1200)]
    );
    let h2 = store.host_metrics("h2", 60, T0, T0 + HOUR).await.unwrap();
    assert_eq!(
        h2.iter().map(|p| (p.at.as_str(), p.samples, p.cpu_percent)).collect::<Vec<_>>(),
        vec![(rfc3339(T0 + MINUTE).as_str(), 1, 99.0)]
    );
    assert_eq!(store.host_metrics("nope", 60, T0, T0 + HOUR).await.unwrap(), vec![]);
}

async fn case_events(store: Store) {
    // Inserted out of time order: listing is newest-inserted first.
    store.insert_event(&event(T0 + 2 * SECOND, "h1", "first")).await.unwrap();
    store.insert_event(&event(T0, "h2", "second")).await.unwrap();
    store
        .insert_event(&NewEvent { object_type: "enrollment_token", ..event(T0 + 3 * SECOND, "h1", "third") })
        .await
        .unwrap();
    store.insert_event(&event(T0 + 4 * SECOND, "h1", "fourth")).await.unwrap();

    let messages = |events: Vec<Event>| events.into_iter().map(|e| e.message).collect::<Vec<_>>();
    let list = |f: EventFilter| {
        let store = store.clone();
        async move { messages(store.list_events(&f).await.unwrap()) }
    };
    let f = |object_type: Option<&str>, object_id: Option<&str>, since: Option<i64>, limit: u32| EventFilter {
        object_type: object_type.map(str::to_owned),
        object_id: object_id.map(str::to_owned),
        since,
        limit,
    };
    assert_eq!(list(f(None, None, None, 100)).await, ["fourth", "third", "second", "first"]);
    assert_eq!(list(f(None, None, None, 2)).await, ["fourth", "third"]);
    assert_eq!(list(f(Some("host"), None, None, 100)).await, ["fourth", "second", "first"]);
    assert_eq!(list(f(Some("host"), Some("h1"), None, 100)).await, ["fourth", "first"]);
    assert_eq!(list(f(None, Some("h1"), None, 100)).await, ["fourth", "third", "first"]);
    assert_eq!(
        list(f(None, None, Some(T0 + 2 * SECOND), 100)).await,
        ["fourth", "third", "first"],
        "since is inclusive"
    );
    assert_eq!(list(f(Some("user"), None, None, 100)).await, Vec::<String>::new());

    let newest = store.list_events(&f(None, None, None, 1)).await.unwrap();
    assert_eq!(newest.len(), 1);
    let e = &newest[0];
    assert_eq!(
        (e.at.as_str(), e.severity.as_str(), e.kind.as_str(), e.object_type.as_str(), e.object_id.as_str()),
        (rfc3339(T0 + 4 * SECOND).as_str(), "info", "host_enrolled", "host", "h1")
    );
    let all = store.list_events(&f(None, None, None, 100)).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "ids descend: {all:?}");
}

async fn case_audit(store: Store) {
    store.insert_audit(&audit(T0, "alice", "host", "h1")).await.unwrap();
    store.insert_audit(&audit(T0 + SECOND, "bob", "host", "h2")).await.unwrap();
    store.insert_audit(&audit(T0 + 2 * SECOND, "alice", "enrollment_token", "t1")).await.unwrap();
    store.insert_audit(&audit(T0 + 3 * SECOND, "alice", "host", "h2")).await.unwrap();

    let f =
        |username: Option<&str>, object_type: Option<&str>, object_id: Option<&str>, since, until, limit| AuditFilter {
            username: username.map(str::to_owned),
            object_type: object_type.map(str::to_owned),
            object_id: object_id.map(str::to_owned),
            since,
            until,
            limit,
        };
    let list = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .list_audit(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|a| format!("{}:{}", a.username, a.object_id))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(f(None, None, None, None, None, 100)).await, ["alice:h2", "alice:t1", "bob:h2", "alice:h1"]);
    assert_eq!(list(f(None, None, None, None, None, 3)).await, ["alice:h2", "alice:t1", "bob:h2"]);
    assert_eq!(list(f(Some("alice"), None, None, None, None, 100)).await, ["alice:h2", "alice:t1", "alice:h1"]);
    assert_eq!(list(f(Some("alice"), Some("host"), None, None, None, 100)).await, ["alice:h2", "alice:h1"]);
    assert_eq!(list(f(None, Some("host"), Some("h2"), None, None, 100)).await, ["alice:h2", "bob:h2"]);
    // since is inclusive, until exclusive.
    assert_eq!(list(f(None, None, None, Some(T0 + SECOND), Some(T0 + 3 * SECOND), 100)).await, ["alice:t1", "bob:h2"]);
    assert_eq!(list(f(Some("carol"), None, None, None, None, 100)).await, Vec::<String>::new());

    let newest = store.list_audit(&f(None, None, None, None, None, 1)).await.unwrap();
    let expected = audit(T0 + 3 * SECOND, "alice", "host", "h2");
    assert_eq!(
        newest,
        vec![AuditEntry {
            id: newest[0].id,
            at: rfc3339(expected.at),
            username: expected.username,
            source: expected.source,
            action: expected.action,
            object_type: expected.object_type,
            object_id: expected.object_id,
            summary: expected.summary,
            via: expected.via,
            permission: expected.permission,
        }]
    );
}

// ---------------------------------------------------------------------------
// Services, roles, revisions, role status, commands
// ---------------------------------------------------------------------------

fn revision(n: u64, message: &str) -> RevisionRec {
    RevisionRec {
        cluster: "prod".into(),
        service: "cache".into(),
        revision: n,
        config: serde_json::json!({"service": {"maxmemory": n * 1024}}),
        changed_keys: vec!["maxmemory".into()],
        author: "alice".into(),
        source: "10.0.0.1".into(),
        message: message.into(),
        created_at: T0 + n as i64,
    }
}

/// Hosts h1 (web-1) and h2 (web-2), and cluster `prod` created by alice.
async fn two_hosts_in_prod(store: &Store) {
    add_host(store, "h1", "web-1", Labels::new()).await;
    add_host(store, "h2", "web-2", Labels::new()).await;
    store
        .create_cluster(&ClusterRec { name: "prod".into(), created_at: T0, created_by: "alice".into() })
        .await
        .unwrap();
}

/// Service `prod/cache` (Redis) at revision 1, created by alice.
fn cache_service() -> ServiceRec {
    ServiceRec {
        cluster: "prod".into(),
        name: "cache".into(),
        service_type: "redis".into(),
        revision: 1,
        created_at: T0,
        created_by: "alice".into(),
    }
}

fn role_rec(id: &str, role_type: &str, host: &str) -> RoleRec {
    RoleRec {
        id: id.into(),
        cluster: "prod".into(),
        service: "cache".into(),
        name: format!("cache-{id}"),
        role_type: role_type.into(),
        group: "default".into(),
        host_id: host.into(),
        index: 99,
        run_state: "stopped".into(),
        restart_nonce: 0,
        created_at: T0,
    }
}

/// `service_roles` (what rendering reads) is kept between reads and read
/// again after every write that changes a service's roles or their hosts.
async fn case_service_roles_cache(store: Store) {
    two_hosts_in_prod(&store).await;
    let svc = cache_service();
    store.create_service(&svc, &revision(1, "created")).await.unwrap();
    store.insert_role(&role_rec("a", "replica", "h1")).await.unwrap();
    let read = || async { store.service_roles("prod", "cache").await.unwrap() };
    let ids = |s: &ServiceRoles| s.roles.iter().map(|r| r.id.clone()).collect::<Vec<_>>();

    let first = read().await;
    assert_eq!(ids(&first), ["a"]);
    assert_eq!(first.hosts["h1"].0, "web-1");
    assert!(std::sync::Arc::ptr_eq(&first, &read().await), "kept while nothing is written");
    // Writes elsewhere (a revision, heartbeats) keep it.
    assert!(store.insert_revision(&revision(2, "cap"), 1, None).await.unwrap());
    assert!(std::sync::Arc::ptr_eq(&first, &read().await), "a revision does not change roles");

    // A host's new name and addresses.
    let mut moved = facts("web-1b");
    moved.addresses = vec!["10.9.9.9".into()];
    store.update_host_facts("h1", &moved, "1.0").await.unwrap();
    assert_eq!(read().await.hosts["h1"], ("web-1b".to_owned(), vec!["10.9.9.9".to_owned()]));
    // A role added, its run state and restart nonce, a role removed.
    store.insert_role(&role_rec("b", "replica", "h2")).await.unwrap();
    assert_eq!(ids(&*read().await), ["a", "b"]);
    assert_eq!(read().await.hosts["h2"].0, "web-2");
    store.set_run_state(&["a".into()], "stopped").await.unwrap();
    assert_eq!(read().await.roles[0].run_state, "stopped");
    store.bump_restart_nonce(&["a".into()]).await.unwrap();
    assert_eq!((read().await.roles[0].run_state.as_str(), read().await.roles[0].restart_nonce), ("running", 1));
    assert!(store.delete_role("b").await.unwrap());
    assert_eq!(ids(&*read().await), ["a"]);
    // The service gone, its roles with it.
    assert!(store.delete_service("prod", "cache").await.unwrap());
    assert!(read().await.roles.is_empty());
}

async fn case_services(store: Store) {
    two_hosts_in_prod(&store).await;
    assert!(matches!(
        store.create_cluster(&ClusterRec { name: "prod".into(), created_at: T0, created_by: "bob".into() }).await,
        Err(StoreError::Conflict(_))
    ));
    let svc = cache_service();
    store.create_service(&svc, &revision(1, "created")).await.unwrap();
    assert_eq!(store.service("prod", "cache").await.unwrap(), Some(svc.clone()));

    // Indexes are assigned per role type in creation order.
    let a = store.insert_role(&role_rec("a", "replica", "h1")).await.unwrap();
    let b = store.insert_role(&role_rec("b", "replica", "h2")).await.unwrap();
    let p = store.insert_role(&role_rec("p", "primary", "h1")).await.unwrap();
    assert_eq!((a.index, b.index, p.index), (0, 1, 0));
    assert_eq!(store.roles_on_host("h1").await.unwrap().len(), 2);

    // Optimistic concurrency on revisions.
    assert!(store.insert_revision(&revision(2, "cap"), 1, None).await.unwrap());
    assert!(
        !store.insert_revision(&revision(3, "stale writer"), 1, None).await.unwrap(),
        "expected revision 1 is gone"
    );
    assert_eq!(store.service("prod", "cache").await.unwrap().unwrap().revision, 2);
    let revs = store.revisions("prod", "cache").await.unwrap();
    assert_eq!(revs.iter().map(|r| r.revision).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(revs[0], revision(2, "cap"));

    // Run state and restart nonces.
    store.set_run_state(&["a".into(), "b".into()], "running").await.unwrap();
    let nonces = store.bump_restart_nonce(&["a".into(), "p".into()]).await.unwrap();
    assert_eq!((nonces["a"], nonces["p"]), (1, 1));
    let p = store.role("p").await.unwrap().unwrap();
    assert_eq!((p.run_state.as_str(), p.restart_nonce), ("running", 1));

    // Role status upserts and first-applied records (a second report keeps the first time).
    let status = RoleStatusRec {
        role_id: "a".into(),
        state: "running".into(),
        health: "good".into(),
        pid: 4242,
        applied_revision: 2,
        running_revision: 1,
        file_hashes: [("redis.conf".to_owned(), "ab".to_owned())].into(),
        last_log_lines: vec!["ready".into()],
        started_at: Some(T0),
        updated_at: T0 + 5,
        ..Default::default()
    };
    let applied = |at: i64| AppliedRevision {
        cluster: "prod".into(),
        service: "cache".into(),
        revision: 2,
        applied: AppliedRec { role_id: "a".into(), host_id: "h1".into(), applied_at: at },
    };
    store.flush_roles(std::slice::from_ref(&status), &[applied(T0 + 5)]).await.unwrap();
    let moved = RoleStatusRec { pid: 4343, updated_at: T0 + 9, ..status.clone() };
    store.flush_roles(std::slice::from_ref(&moved), &[applied(T0 + 9)]).await.unwrap();
    let all = store.role_statuses("prod", "cache").await.unwrap();
    assert_eq!(all.get("a"), Some(&moved));
    // A report for a role deleted meanwhile is skipped, not an error.
    let ghost = RoleStatusRec { role_id: "deleted-role".into(), ..status.clone() };
    store.flush_roles(std::slice::from_ref(&ghost), &[]).await.expect("unknown roles are skipped");
    assert_eq!(store.role_statuses("prod", "cache").await.unwrap().len(), 1);
    let rec = store.applied_for_revision("prod", "cache", 2).await.unwrap();
    assert_eq!(rec, vec![AppliedRec { role_id: "a".into(), host_id: "h1".into(), applied_at: T0 + 5 }]);

    // Desired generations persist per host.
    store.set_desired_generation("h2", 7).await.unwrap();
    assert_eq!(store.desired_generations().await.unwrap().get("h2"), Some(&7));

    // Deleting the service takes roles, revisions and statuses with it.
    assert!(store.delete_service("prod", "cache").await.unwrap());
    assert!(store.role("a").await.unwrap().is_none());
    assert!(store.revisions("prod", "cache").await.unwrap().is_empty());
    assert!(store.roles_on_host("h1").await.unwrap().is_empty());
    assert!(store.delete_cluster("prod").await.unwrap());
}

async fn case_commands(store: Store) {
    let cmd = CommandRec {
        id: "c1".into(),
        cluster: "prod".into(),
        service: "cache".into(),
        name: "rolling-restart".into(),
        params: serde_json::json!({"stale_only": true}),
        state: "running".into(),
        message: String::new(),
        created_by: "alice".into(),
        created_at: T0,
        finished_at: None,
    };
    let step = |seq: u32| StepRec {
        seq,
        description: format!("restart batch {seq}"),
        roles: vec![format!("r{seq}")],
        state: "pending".into(),
        message: String::new(),
        started_at: None,
        finished_at: None,
    };
    store.insert_command(&cmd, &[step(1), step(2)]).await.unwrap();
    store.update_step("c1", 1, "running", "", Some(T0 + 1), None).await.unwrap();
    store.update_step("c1", 1, "succeeded", "restarted r1", None, Some(T0 + 2)).await.unwrap();
    assert_eq!(store.commands_in_state("running").await.unwrap().len(), 1);
    store.finish_command("c1", "failed", "step 2 failed", T0 + 3).await.unwrap();
    let (c, steps) = store.command("c1").await.unwrap().unwrap();
    assert_eq!((c.state.as_str(), c.finished_at), ("failed", Some(T0 + 3)));
    assert_eq!(
        steps[0],
        StepRec {
            state: "succeeded".into(),
            message: "restarted r1".into(),
            started_at: Some(T0 + 1),
            finished_at: Some(T0 + 2),
            ..step(1)
        }
    );
    assert_eq!(steps[1], step(2));
    assert!(store.commands_in_state("running").await.unwrap().is_empty());
    assert_eq!(store.list_commands("prod", "cache").await.unwrap().len(), 1);
    assert!(store.command("nope").await.unwrap().is_none());
}

async fn case_cluster_parcels(store: Store) {
    use drover_manager::store::ClusterParcelRec;
    store
        .create_cluster(&ClusterRec { name: "prod".into(), created_at: T0, created_by: "alice".into() })
        .await
        .unwrap();
    add_host(&store, "h1", "one", Labels::new()).await;
    add_host(&store, "h2", "two", Labels::new()).await;
    // Adding twice keeps one membership.
    store.add_cluster_hosts("prod", &["h2".into(), "h1".into()], T0).await.unwrap();
    store.add_cluster_hosts("prod", &["h1".into()], T0 + 1).await.unwrap();
    assert_eq!(store.cluster_hosts("prod").await.unwrap(), vec!["h1".to_string(), "h2".to_string()]);
    assert!(store.remove_cluster_host("prod", "h2").await.unwrap());
    assert!(!store.remove_cluster_host("prod", "h2").await.unwrap());
    assert_eq!(store.all_cluster_hosts().await.unwrap(), vec![("prod".to_string(), "h1".to_string())]);

    let want = |version: &str| ClusterParcelRec {
        cluster: "prod".into(),
        name: "redis".into(),
        version: version.into(),
        file_name: format!("redis-{version}-bookworm.parcel"),
        sha256: "ab".repeat(32),
        size: 1234,
        target: "distributed".into(),
        activated_at: 0,
        updated_at: T0,
    };
    store.want_parcel(&want("1")).await.unwrap();
    store.want_parcel(&want("2")).await.unwrap();
    // Wanting again changes nothing.
    store.want_parcel(&want("1")).await.unwrap();
    assert!(!store.set_active_parcel("prod", "redis", "9", T0 + 5).await.unwrap(), "not wanted");
    assert!(store.set_active_parcel("prod", "redis", "1", T0 + 10).await.unwrap());
    assert!(store.set_active_parcel("prod", "redis", "2", T0 + 20).await.unwrap());
    let got = store.cluster_parcels(Some("prod")).await.unwrap();
    let target = |v: &str| got.iter().find(|p| p.version == v).map(|p| (p.target.clone(), p.activated_at)).unwrap();
    assert_eq!(target("1"), ("distributed".to_string(), T0 + 10));
    assert_eq!(target("2"), ("active".to_string(), T0 + 20));
    assert_eq!(got[0].size, 1234);
    store.deactivate_parcel("prod", "redis", T0 + 30).await.unwrap();
    assert!(store.cluster_parcels(None).await.unwrap().iter().all(|p| p.target == "distributed"));
    assert!(store.unwant_parcel("prod", "redis", "1").await.unwrap());
    assert!(!store.unwant_parcel("prod", "redis", "1").await.unwrap());
    assert_eq!(store.cluster_parcels(Some("prod")).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// Metric series and points (issue 13)
// ---------------------------------------------------------------------------

fn series_rec(name: &str, kind: &str, entity: &str, labels: &str) -> SeriesRec {
    SeriesRec {
        id: 0,
        name: name.into(),
        entity_kind: kind.into(),
        entity_id: entity.into(),
        host_id: "h1".into(),
        cluster: if kind == "role" { "prod".into() } else { String::new() },
        service: if kind == "role" { "cache".into() } else { String::new() },
        role: if kind == "role" { "cache-1".into() } else { String::new() },
        role_type: if kind == "role" { "primary".into() } else { String::new() },
        host: "h1.example".into(),
        labels: labels.into(),
        created_at: T0,
    }
}

/// T0 in Unix seconds.
const T0S: i64 = T0 / 1000;

async fn case_metric_series(store: Store) {
    let a = series_rec("host_cpu_percent", "host", "h1", "{}");
    let b = series_rec("redis_keyspace_keys", "role", "r1", r#"{"db":"db0"}"#);
    let ids = store.ensure_series(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    // Again: the same ids; attributes refreshed.
    let moved = SeriesRec { host: "h1.renamed".into(), ..b.clone() };
    assert_eq!(store.ensure_series(&[moved, a.clone()]).await.unwrap(), vec![ids[1], ids[0]]);
    let all = store.all_series().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], SeriesRec { id: ids[0], ..a });
    assert_eq!(all[1], SeriesRec { id: ids[1], host: "h1.renamed".into(), ..b });
    // Other labels, another series.
    let c = series_rec("redis_keyspace_keys", "role", "r1", r#"{"db":"db1"}"#);
    let more = store.ensure_series(&[c.clone(), c]).await.unwrap();
    assert!(!ids.contains(&more[0]));
    assert_eq!(more[0], more[1], "the same series twice in one batch");
    // Many at once (more than one statement's rows).
    let many: Vec<SeriesRec> = (0..1200).map(|i| series_rec("m", "host", &format!("h{i}"), "{}")).collect();
    let got = store.ensure_series(&many).await.unwrap();
    assert_eq!(got.len(), 1200);
    assert_eq!(got.iter().collect::<std::collections::BTreeSet<_>>().len(), 1200);
    assert_eq!(store.ensure_series(&many[1100..]).await.unwrap(), got[1100..]);
}

async fn case_metric_rollups(store: Store) {
    let ids =
        store.ensure_series(&[series_rec("m", "host", "h1", "{}"), series_rec("m", "host", "h2", "{}")]).await.unwrap();
    let (a, b) = (ids[0], ids[1]);
    // Series a: every 10 s for two hours, value = minute index + seconds / 100;
    // series b: one point per minute. The same second twice: the last wins.
    let mut points = Vec::new();
    for s in (0..7200).step_by(10) {
        points.push((a, T0S + s, (s / 60) as f64 + (s % 60) as f64 / 100.0));
    }
    for m in 0..120 {
        points.push((b, T0S + m * 60 + 30, -1.0));
        points.push((b, T0S + m * 60 + 30, m as f64));
    }
    assert_eq!(store.insert_points(&points).await.unwrap(), 720 + 120);
    assert_eq!(store.point_count(PointTable::Raw).await.unwrap(), 840);
    let raw = store.points(PointTable::Raw, &[b], T0S, T0S + 120).await.unwrap();
    assert_eq!(raw.len(), 2);
    assert_eq!((raw[0].t, raw[0].last, raw[0].count), (T0S + 30, 0.0, 1));

    for _ in 0..2 {
        // Twice: recomputed, not added up.
        store.rollup_minutes(T0S, T0S + 7200).await.unwrap();
    }
    let minutes = store.points(PointTable::Minute, &[a, b], T0S, T0S + 7200).await.unwrap();
    assert_eq!(minutes.len(), 240);
    let m5 = minutes.iter().find(|p| p.series_id == a && p.t == T0S + 300).unwrap();
    // Minute 5: 5.00, 5.10, ... 5.50.
    assert_eq!((m5.min, m5.max, m5.count, m5.last), (5.0, 5.5, 6, 5.5));
    assert!((m5.sum - (6.0 * 5.0 + 1.5)).abs() < 1e-9, "{m5:?}");
    let b7 = minutes.iter().find(|p| p.series_id == b && p.t == T0S + 420).unwrap();
    assert_eq!((b7.min, b7.max, b7.sum, b7.count, b7.last), (7.0, 7.0, 7.0, 1, 7.0));

    store.rollup_hours(T0S, T0S + 7200).await.unwrap();
    store.rollup_hours(T0S, T0S + 7200).await.unwrap();
    let hours = store.points(PointTable::Hour, &[a, b], T0S, T0S + 7200).await.unwrap();
    assert_eq!(hours.len(), 4);
    let h1 = hours.iter().find(|p| p.series_id == a && p.t == T0S + 3600).unwrap();
    assert_eq!((h1.min, h1.max, h1.count, h1.last), (60.0, 119.5, 360, 119.5));
    // Sum over minutes 60..119 of (6 m + 1.5).
    let want: f64 = (60..120).map(|m| 6.0 * m as f64 + 1.5).sum();
    assert!((h1.sum - want).abs() < 1e-6, "{} vs {want}", h1.sum);
    let hb = hours.iter().find(|p| p.series_id == b && p.t == T0S).unwrap();
    assert_eq!((hb.min, hb.max, hb.count, hb.last), (0.0, 59.0, 60, 59.0));
    assert_eq!(hb.sum, (0..60).sum::<i64>() as f64);

    // A late point changes its minute and hour when they are rolled up again.
    store.insert_points(&[(b, T0S + 59, 1000.0)]).await.unwrap();
    store.rollup_minutes(T0S, T0S + 60).await.unwrap();
    store.rollup_hours(T0S, T0S + 3600).await.unwrap();
    let m0 = store.points(PointTable::Minute, &[b], T0S, T0S + 60).await.unwrap();
    assert_eq!((m0[0].max, m0[0].count, m0[0].last), (1000.0, 2, 1000.0));
    let h0 = store.points(PointTable::Hour, &[b], T0S, T0S + 3600).await.unwrap();
    assert_eq!((h0[0].max, h0[0].count, h0[0].last), (1000.0, 61, 59.0));
}

/// Per-step values of series and across groups of series, from raw points
/// and from minute rollups, over more series than one statement takes.
async fn case_metric_steps(store: Store) {
    use drover_manager::domain::metrics::Stat;
    let recs: Vec<SeriesRec> = (0..501).map(|i| series_rec("m", "host", &format!("h{i}"), "{}")).collect();
    let ids = store.ensure_series(&recs).await.unwrap();
    // Series i: a point every 10 s for two minutes, i + 0, i + 1, ... i + 11.
    let mut points = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for s in (0..120).step_by(10) {
            points.push((*id, T0S + s, (i as i64 + s / 10) as f64));
        }
    }
    store.insert_points(&points).await.unwrap();
    let a = ids[0];
    for (stat, want) in
        [(Stat::Avg, [2.5, 8.5]), (Stat::Min, [0.0, 6.0]), (Stat::Max, [5.0, 11.0]), (Stat::Last, [5.0, 11.0])]
    {
        let got = store.series_steps(PointTable::Raw, &[a], T0S, T0S + 120, 60, stat).await.unwrap();
        assert_eq!(got, vec![(a, T0S, want[0]), (a, T0S + 60, want[1])], "{stat:?}");
    }
    // Points outside [from, to) are left out; 30 s steps.
    let got = store.series_steps(PointTable::Raw, &[a, ids[1]], T0S + 30, T0S + 60, 30, Stat::Max).await.unwrap();
    assert_eq!(got, vec![(a, T0S + 30, 5.0), (ids[1], T0S + 30, 6.0)]);

    // Group 0: series 0..=250, group 1: 251..=500 (the last one in a second statement).
    let pairs: Vec<(i64, u32)> = ids.iter().enumerate().map(|(i, id)| (*id, u32::from(i > 250))).collect();
    let rows = store.group_steps(PointTable::Raw, &pairs, T0S, T0S + 120, 60, Stat::Max).await.unwrap();
    let total = |group: u32, t: i64| {
        rows.iter().filter(|r| r.group == group && r.t == t).fold((0.0, f64::INFINITY, f64::NEG_INFINITY, 0), |a, r| {
            (a.0 + r.sum, a.1.min(r.min), a.2.max(r.max), a.3 + r.n)
        })
    };
    let sum0: i64 = (0..=250).map(|i| i + 5).sum();
    let sum1: i64 = (251..=500).map(|i| i + 11).sum();
    assert_eq!(total(0, T0S), (sum0 as f64, 5.0, 255.0, 251));
    assert_eq!(total(1, T0S + 60), (sum1 as f64, 262.0, 511.0, 250));
    assert_eq!(rows.iter().map(|r| r.n).sum::<i64>(), 2 * 501);

    // From minute rollups: a two-minute step holds both minutes.
    store.rollup_minutes(T0S, T0S + 120).await.unwrap();
    for (stat, want) in [(Stat::Avg, 5.5), (Stat::Min, 0.0), (Stat::Max, 11.0), (Stat::Last, 11.0)] {
        let got = store.series_steps(PointTable::Minute, &[a], T0S, T0S + 120, 120, stat).await.unwrap();
        assert_eq!(got, vec![(a, T0S, want)], "{stat:?}");
    }
    // Steps of one minute: a row each, read as it is.
    for (stat, want) in
        [(Stat::Avg, [2.5, 8.5]), (Stat::Min, [0.0, 6.0]), (Stat::Max, [5.0, 11.0]), (Stat::Last, [5.0, 11.0])]
    {
        let got = store.series_steps(PointTable::Minute, &[a], T0S, T0S + 120, 60, stat).await.unwrap();
        assert_eq!(got, vec![(a, T0S, want[0]), (a, T0S + 60, want[1])], "{stat:?}");
    }
    let rows = store.group_steps(PointTable::Minute, &pairs[..2], T0S, T0S + 60, 60, Stat::Last).await.unwrap();
    assert_eq!((rows.len(), rows[0].sum, rows[0].max, rows[0].n), (1, 5.0 + 6.0, 6.0, 2));
    let rows = store.group_steps(PointTable::Minute, &pairs[..2], T0S, T0S + 120, 120, Stat::Avg).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].sum, rows[0].n), (5.5 + 6.5, 2));

    let bytes = store.metric_table_bytes().await.unwrap();
    let raw = bytes.iter().find(|(t, _)| t == "metric_points_raw").unwrap().1;
    assert!(raw > 0, "the raw points take room: {bytes:?}");
}

async fn case_metric_prune(store: Store) {
    let ids = store.ensure_series(&[series_rec("m", "host", "h1", "{}")]).await.unwrap();
    let id = ids[0];
    let raw: Vec<(i64, i64, f64)> = (0..100).map(|i| (id, T0S + i * 60, i as f64)).collect();
    store.insert_points(&raw).await.unwrap();
    let rollup = |t: i64| PointRec { series_id: id, t, min: 1.0, max: 2.0, sum: 3.0, count: 2, last: 2.0 };
    let minutes: Vec<PointRec> = (0..100).map(|i| rollup(T0S + i * 60)).collect();
    let hours: Vec<PointRec> = (0..10).map(|i| rollup(T0S + i * 3600)).collect();
    store.insert_rollup_points(PointTable::Minute, &minutes).await.unwrap();
    store.insert_rollup_points(PointTable::Hour, &hours).await.unwrap();
    assert_eq!(store.points(PointTable::Hour, &[id], T0S, T0S + 3600).await.unwrap(), vec![rollup(T0S)]);

    store.prune_points(PointTable::Raw, T0S + 50 * 60).await.unwrap();
    assert_eq!(store.point_count(PointTable::Raw).await.unwrap(), 50);
    assert_eq!(store.point_count(PointTable::Minute).await.unwrap(), 100, "only the raw points went");
    store.prune_points(PointTable::Minute, T0S + 90 * 60).await.unwrap();
    assert_eq!(store.point_count(PointTable::Minute).await.unwrap(), 10);
    store.prune_points(PointTable::Hour, T0S + 3 * 3600).await.unwrap();
    let left = store.points(PointTable::Hour, &[id], 0, i64::MAX / 2).await.unwrap();
    assert_eq!(left.iter().map(|p| p.t).collect::<Vec<_>>(), (3..10).map(|i| T0S + i * 3600).collect::<Vec<_>>());
}

async fn case_alerts(store: Store) {
    use drover_api::alerts::{AlertRuleSpec, AlertState, LabelMatcher, Severity};
    // Rules: put replaces by name, in one transaction; delete says whether there was one.
    let spec = |name: &str, expr: &str| AlertRuleSpec {
        name: name.into(),
        description: String::new(),
        expr: expr.into(),
        for_: Some("5m".into()),
        keep_firing_for: None,
        severity: Severity::Warning,
        labels: [("team".to_owned(), "db".to_owned())].into(),
        annotations: [("summary".to_owned(), "{{labels.host}}".to_owned())].into(),
        enabled: true,
    };
    let rec = |name: &str, expr: &str, builtin| AlertRuleRec {
        spec: spec(name, expr),
        builtin,
        updated_at: T0,
        updated_by: "admin".into(),
    };
    assert!(store.alert_rules().await.unwrap().is_empty());
    store
        .put_alert_rules(&[rec("b-rule", "host_load1 > 1", false), rec("host_lost", "host_up == 0", true)])
        .await
        .unwrap();
    let mut changed = rec("b-rule", "host_load1 > 2", false);
    changed.spec.enabled = false;
    changed.updated_at = T0 + SECOND;
    store.put_alert_rules(std::slice::from_ref(&changed)).await.unwrap();
    let all = store.alert_rules().await.unwrap();
    assert_eq!(all, vec![changed.clone(), rec("host_lost", "host_up == 0", true)]);
    assert_eq!(store.alert_rule("b-rule").await.unwrap(), Some(changed));
    assert!(store.delete_alert_rule("host_lost").await.unwrap());
    assert!(!store.delete_alert_rule("host_lost").await.unwrap());
    assert_eq!(store.alert_rules().await.unwrap().len(), 1);

    // Silences: active between starts and ends; expiring ends one now.
    let silence = |id: &str, starts_at, ends_at| SilenceRec {
        id: id.into(),
        matchers: vec![LabelMatcher { name: "host".into(), op: "=~".into(), value: "db.*".into() }],
        starts_at,
        ends_at,
        created_by: "admin".into(),
        comment: "swap".into(),
    };
    store.insert_silence(&silence("s1", T0, T0 + HOUR)).await.unwrap();
    store.insert_silence(&silence("s2", T0, T0 + 2 * HOUR)).await.unwrap();
    store.insert_silence(&silence("old", T0 - 2 * HOUR, T0 - HOUR)).await.unwrap();
    let ids = |v: Vec<SilenceRec>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(store.active_silences(T0 + MINUTE).await.unwrap()), ["s1", "s2"]);
    assert_eq!(ids(store.active_silences(T0 + HOUR).await.unwrap()), ["s2"]);
    assert_eq!(store.silence("s1").await.unwrap(), Some(silence("s1", T0, T0 + HOUR)));
    assert_eq!(ids(store.silences(T0 - 3 * HOUR).await.unwrap()).len(), 3);
    assert!(store.expire_silence("s2", T0 + MINUTE).await.unwrap());
    assert!(!store.expire_silence("s2", T0 + 2 * MINUTE).await.unwrap(), "already over");
    assert!(!store.expire_silence("nope", T0).await.unwrap());
    assert_eq!(ids(store.active_silences(T0 + 2 * MINUTE).await.unwrap()), ["s1"]);

    // Maintenance: set replaces, clear says whether it was set.
    let m = |kind: &str, target: &str, comment: &str| MaintenanceRec {
        kind: kind.into(),
        target: target.into(),
        since: T0,
        by: "admin".into(),
        comment: comment.into(),
    };
    store.set_maintenance(&m("host", "db1", "disk")).await.unwrap();
    store.set_maintenance(&m("service", "prod/cache", "")).await.unwrap();
    store.set_maintenance(&m("host", "db1", "new disk")).await.unwrap();
    assert_eq!(
        store.maintenance_list().await.unwrap(),
        vec![m("host", "db1", "new disk"), m("service", "prod/cache", "")]
    );
    assert!(store.clear_maintenance("host", "db1").await.unwrap());
    assert!(!store.clear_maintenance("host", "db1").await.unwrap());
    assert_eq!(store.maintenance_list().await.unwrap().len(), 1);

    // History: batches, newest first, filters, pruning (with ended silences).
    let entry = |i: i64, rule: &str, state| AlertHistoryRec {
        id: 0,
        at: T0 + i * SECOND,
        rule: rule.into(),
        fingerprint: format!("fp{i}"),
        state,
        severity: Severity::Critical,
        labels: [("host".to_owned(), format!("h{i}"))].into(),
        value: i as f64 + 0.5,
        summary: format!("s{i}"),
        suppressed: i % 2 == 0,
    };
    let many: Vec<AlertHistoryRec> = (0..1200)
        .map(|i| {
            entry(
                i,
                if i % 3 == 0 { "a" } else { "b" },
                if i % 2 == 0 { AlertState::Firing } else { AlertState::Resolved },
            )
        })
        .collect();
    store.insert_alert_history(&many).await.unwrap();
    store.insert_alert_history(&[]).await.unwrap();
    let f = |rule: Option<&str>, state, since, limit| AlertHistoryFilter {
        rule: rule.map(Into::into),
        state,
        since,
        limit,
    };
    let newest = store.alert_history(&f(None, None, None, 2)).await.unwrap();
    assert_eq!(newest.iter().map(|e| e.fingerprint.as_str()).collect::<Vec<_>>(), ["fp1199", "fp1198"]);
    assert_eq!(newest[1], AlertHistoryRec { id: newest[1].id, ..entry(1198, "b", AlertState::Firing) });
    let a_firing = store.alert_history(&f(Some("a"), Some(AlertState::Firing), None, 1000)).await.unwrap();
    assert_eq!(a_firing.len(), 200, "multiples of 6 below 1200");
    let recent = store.alert_history(&f(None, None, Some(T0 + 1190 * SECOND), 1000)).await.unwrap();
    assert_eq!(recent.len(), 10);
    assert_eq!(store.prune_alert_history(T0 + 1000 * SECOND).await.unwrap(), 1000);
    assert_eq!(store.alert_history(&f(None, None, None, 1000)).await.unwrap().len(), 200);
    assert_eq!(store.silence("old").await.unwrap(), None, "ended silences go with the history");
    assert!(store.silence("s1").await.unwrap().is_some());
}

// ---------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------

async fn case_templates(store: Store) {
    use drover_manager::store::TemplateRec;
    let rec = |name: &str, doc: &str, at: i64| TemplateRec {
        name: name.into(),
        version: 0,
        description: format!("{name} at {at}"),
        document: doc.into(),
        created_at: at,
        created_by: "admin".into(),
    };
    assert_eq!(store.insert_template(&rec("web", r#"{"name":"web"}"#, 1)).await.unwrap(), 1);
    assert_eq!(store.insert_template(&rec("web", r#"{"name":"web","description":"v2"}"#, 2)).await.unwrap(), 2);
    assert_eq!(store.insert_template(&rec("cache", r#"{"name":"cache"}"#, 3)).await.unwrap(), 1);
    let all: Vec<(String, u64, String)> =
        store.template_versions().await.unwrap().into_iter().map(|t| (t.name, t.version, t.document)).collect();
    assert_eq!(
        all,
        vec![("cache".into(), 1, String::new()), ("web".into(), 2, String::new()), ("web".into(), 1, String::new())]
    );
    let latest = store.template("web", None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.document.as_str()), (2, r#"{"name":"web","description":"v2"}"#));
    assert_eq!((latest.created_at, latest.description.as_str()), (2, "web at 2"));
    let first = store.template("web", Some(1)).await.unwrap().unwrap();
    assert_eq!(first.document, r#"{"name":"web"}"#);
    assert!(store.template("web", Some(3)).await.unwrap().is_none());
    assert!(store.template("nope", None).await.unwrap().is_none());
    // Deleting one version leaves the others; the next upload goes on from the newest.
    assert_eq!(store.delete_template("web", Some(1)).await.unwrap(), 1);
    assert_eq!(store.delete_template("web", Some(1)).await.unwrap(), 0);
    assert_eq!(store.insert_template(&rec("web", "{}", 4)).await.unwrap(), 3);
    assert_eq!(store.delete_template("web", None).await.unwrap(), 2);
    assert!(store.template("web", None).await.unwrap().is_none());
    assert_eq!(store.template_versions().await.unwrap().len(), 1);
}
