//! LDAP sign-in against a real OpenLDAP `slapd` (Debian's `slapd` package):
//! each test starts its own server in a temp dir on an ephemeral loopback
//! port, with a generated `slapd.conf` and users and groups loaded by
//! `slapadd`, and changes groups with `ldapmodify` (`ldap-utils`).
//!
//! Covered: directory users signing in over HTTP Basic and the console with
//! grants from their groups (admin, operator@prod and its 403 on a config
//! change), a user in no mapped group, wrong and empty passwords, filter and
//! DN injection in the name typed, group changes taking effect at the next
//! sign-in (search mode with a service account), the directory going down
//! (directory users refused, the local admin unaffected, a cached sign-in
//! still good), StartTLS and ldaps with `--ldap-ca-cert`, names recorded in
//! lower case, and the records on PostgreSQL (`DROVER_TEST_POSTGRES_URL`).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::T;
use drover_manager::ManagerConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SLAPD: &str = "/usr/sbin/slapd";
const BASE: &str = "dc=example,dc=org";
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "directory-root-password";
const SERVICE_DN: &str = "cn=drover,ou=services,dc=example,dc=org";
const SERVICE_PW: &str = "service-account-password";
const ROLE_MAP: &str = "drover-admins=admin,prod-ops=operator@prod";

/// Everyone's directory password is NAME-pw.
fn pw(user: &str) -> String {
    format!("{user}-pw")
}

/// A `slapd` of our own, killed on drop.
struct Slapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    url: String,
    ldaps_url: Option<String>,
}

/// TLS material for slapd: the CA certificate PEM (for the manager) and the
/// server's certificate and key files.
struct TlsFiles {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Slapd {
    /// A directory with users alice (drover-admins), bob (prod-ops), carol
    /// (staff, mapped to nothing) and dave (in no group).
    fn start(tls: Option<&TlsFiles>) -> Slapd {
        assert!(
            Path::new(SLAPD).exists(),
            "{SLAPD} is missing: the LDAP tests need OpenLDAP's server; install it with \
             `apt-get install slapd ldap-utils` (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let mut tls_conf = String::new();
        if let Some(tls) = tls {
            std::fs::write(dir.path().join("server.pem"), &tls.cert_pem).unwrap();
            std::fs::write(dir.path().join("server.key"), &tls.key_pem).unwrap();
            tls_conf = format!(
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                dir.path().join("server.pem").display(),
                dir.path().join("server.key").display()
            );
        }
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             {tls_conf}\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PW}\n\
             directory {db}\n\
             access to attrs=userPassword by anonymous auth by self write by * none\n\
             access to * by users read by * none\n",
            dir = dir.path().display(),
            db = db.display(),
        );
        let conf_path = dir.path().join("slapd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut ldif = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n\n\
             dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: drover\nuserPassword: {SERVICE_PW}\n\n"
        );
        for user in ["alice", "bob", "carol", "dave"] {
            ldif.push_str(&format!(
                "dn: uid={user},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {user}\ncn: {user}\nsn: {user}\nuserPassword: {}\n\n",
                pw(user)
            ));
        }
        // groupOfNames needs a member: a placeholder keeps a group whose
        // last user leaves.
        for (group, member) in [("drover-admins", "alice"), ("prod-ops", "bob"), ("staff", "carol")] {
            ldif.push_str(&format!(
                "dn: cn={group},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {group}\nmember: uid={member},ou=people,{BASE}\n\
                 member: cn=placeholder,{BASE}\n\n"
            ));
        }
        let ldif_path = dir.path().join("data.ldif");
        std::fs::write(&ldif_path, ldif).unwrap();
        let out =
            Command::new("/usr/sbin/slapadd").arg("-f").arg(&conf_path).arg("-l").arg(&ldif_path).output().unwrap();
        assert!(out.status.success(), "slapadd: {}", String::from_utf8_lossy(&out.stderr));

        let port = free_port();
        let url = format!("ldap://127.0.0.1:{port}/");
        let mut listen = url.clone();
        let ldaps_url = tls.map(|_| {
            let u = format!("ldaps://localhost:{}/", free_port());
            listen.push(' ');
            listen.push_str(&u.replace("localhost", "127.0.0.1"));
            u
        });
        // -d 0: stay in the foreground (our child) without debug output.
        let child = Command::new(SLAPD)
            .args(["-d", "0", "-h", &listen, "-f"])
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("slapd.log")).unwrap())
            .spawn()
            .unwrap();
        let mut s = Slapd { child: Some(child), dir, url, ldaps_url };
        s.wait_listening(port);
        s
    }

    fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("slapd exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "slapd did not listen on port {port}: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Applies an LDIF change as the directory's root with `ldapmodify`.
    fn modify(&self, ldif: &str) {
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H", &self.url, "-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify (apt-get install ldap-utils)");
        child.stdin.take().unwrap().write_all(ldif.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "ldapmodify: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Puts `user` into `group` or takes them out.
    fn membership(&self, group: &str, user: &str, add: bool) {
        let op = if add { "add" } else { "delete" };
        self.modify(&format!(
            "dn: cn={group},ou=groups,{BASE}\nchangetype: modify\n{op}: member\nmember: uid={user},ou=people,{BASE}\n"
        ));
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Direct bind with a DN template.
fn template_mode(slapd: &Slapd) -> impl FnOnce(&mut ManagerConfig) + '_ {
    move |c| {
        c.ldap_url = Some(slapd.url.clone());
        c.ldap_bind_dn_template = Some(format!("uid={{user}},ou=people,{BASE}"));
        c.ldap_group_base = Some(format!("ou=groups,{BASE}"));
        c.ldap_role_map = ROLE_MAP.split(',').map(str::to_owned).collect();
    }
}

/// Search mode with the service account, whose password file is in `dir`.
fn search_mode(url: String, dir: &Path) -> impl FnOnce(&mut ManagerConfig) {
    let file: PathBuf = dir.join("ldap-bind-password");
    std::fs::write(&file, format!("{SERVICE_PW}\n")).unwrap();
    move |c| {
        c.ldap_url = Some(url);
        c.ldap_bind_dn = Some(SERVICE_DN.into());
        c.ldap_bind_password_file = Some(file);
        c.ldap_user_base = Some(format!("ou=people,{BASE}"));
        c.ldap_group_base = Some(format!("ou=groups,{BASE}"));
        c.ldap_role_map = vec!["drover-admins=admin".into(), "prod-ops=operator@prod".into()];
    }
}

impl T {
    /// `GET /api/v1/users/me` with Basic credentials: the status and body.
    async fn me(&self, user: &str, password: &str) -> (StatusCode, Value) {
        let resp = self.client.get(self.url("/api/v1/users/me")).basic_auth(user, Some(password)).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The grants of `user` signed in with HTTP Basic, as `role[@cluster]`.
    async fn grants_of(&self, user: &str, password: &str) -> Vec<String> {
        let (status, me) = self.me(user, password).await;
        assert_eq!(status, StatusCode::OK, "{user}: {me}");
        assert_eq!(me["source"], "ldap", "{me}");
        grant_strings(&me["grants"])
    }

    /// Signs in to the console: the status and the session cookie or the page.
    async fn console_sign_in(&self, user: &str, password: &str) -> (StatusCode, Result<String, String>) {
        let (status, cookie) = self.sign_in(user, password).await;
        (StatusCode::from_u16(status).unwrap(), cookie)
    }

    /// The stored grants of `user` as the admin sees them.
    async fn stored_grants(&self, user: &str) -> Option<Vec<String>> {
        let users = self.ok(Method::GET, "/users", None).await;
        let items = users["items"].as_array().cloned().unwrap_or_default();
        items.iter().find(|u| u["username"] == user).map(|u| grant_strings(&u["grants"]))
    }
}

fn grant_strings(grants: &Value) -> Vec<String> {
    grants
        .as_array()
        .unwrap()
        .iter()
        .map(|g| match g["cluster"].as_str() {
            Some(c) => format!("{}@{c}", g["role"].as_str().unwrap()),
            None => g["role"].as_str().unwrap().to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn directory_users_get_the_roles_of_their_groups() {
    let slapd = Slapd::start(None);
    let t = T::start_configured(|_| {}, template_mode(&slapd)).await;
    t.ok(Method::POST, "/clusters", Some(json!({"name": "prod"}))).await;
    t.ok(Method::POST, "/clusters/prod/services", Some(json!({"name": "cache", "type": "redis"}))).await;

    // alice (drover-admins): admin over HTTP Basic, created on first sign-in.
    assert_eq!(t.stored_grants("alice").await, None);
    assert_eq!(t.grants_of("alice", &pw("alice")).await, ["admin"]);
    assert_eq!(t.stored_grants("alice").await, Some(vec!["admin".to_owned()]));
    let (_, me) = t.me("alice", &pw("alice")).await;
    assert!(me["permissions"].as_array().unwrap().iter().any(|p| p == "users.write"), "{me}");

    // The directory ignores case, and so the name is recorded in lower case:
    // `ALICE` is the same user.
    let (status, me) = t.me("ALICE", &pw("alice")).await;
    assert_eq!((status, me["username"].as_str()), (StatusCode::OK, Some("alice")), "{me}");
    let users = t.ok(Method::GET, "/users", None).await;
    let alices = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["username"].as_str().unwrap().eq_ignore_ascii_case("alice"))
        .count();
    assert_eq!(alices, 1);

    // ... and through the console, whose session then reads as admin.
    let (status, cookie) = t.console_sign_in("alice", &pw("alice")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{cookie:?}");
    let resp = t.client.get(t.url("/api/v1/users/me")).header("cookie", cookie.unwrap()).send().await.unwrap();
    let me: Value = resp.json().await.unwrap();
    assert_eq!((grant_strings(&me["grants"]), me["via"].as_str()), (vec!["admin".to_owned()], Some("console")));

    // bob (prod-ops): operator on prod, so no configuration changes.
    assert_eq!(t.grants_of("bob", &pw("bob")).await, ["operator@prod"]);
    let resp = t
        .client
        .patch(t.url("/api/v1/clusters/prod/services/cache/config"))
        .basic_auth("bob", Some(pw("bob")))
        .json(&json!({"values": {"maxmemory": "64mb"}, "message": "try"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["permission"], "config.write", "{body}");
    let (status, cookie) = t.console_sign_in("bob", &pw("bob")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{cookie:?}");

    // carol is in `staff`, which maps to nothing: refused, and told why
    // (only after the directory accepted her password).
    let (status, body) = t.me("carol", &pw("carol")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, page) = t.console_sign_in("carol", &pw("carol")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.unwrap_err().contains("in no group that has a role in Drover"));
    assert_eq!(t.stored_grants("carol").await, None, "a refused user is not created");

    // Wrong and empty passwords, unknown names.
    for (user, password) in [("alice", "wrong"), ("alice", ""), ("bob", "alice-pw"), ("nobody", "nobody-pw")] {
        let (status, body) = t.me(user, password).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{user}/{password:?}: {body}");
    }
    let (status, page) = t.console_sign_in("alice", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.unwrap_err().contains("Wrong user name or password."));

    // Names built to change the DN: refused.
    for name in ["*", "alice,ou=people", "alice)(uid=*", "*)(uid=*))(|(uid=*"] {
        let (status, body) = t.me(name, &pw("alice")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
    }

    // The local admin still signs in locally.
    t.ok(Method::GET, "/users/me", None).await;
}

#[tokio::test]
async fn search_mode_follows_group_changes_and_escapes_filters() {
    let slapd = Slapd::start(None);
    let dir = tempfile::tempdir().unwrap();
    let configure = search_mode(slapd.url.clone(), dir.path());
    // Asked every time, so a group change shows at the next sign-in.
    let t = T::start_configured(
        |_| {},
        |c| {
            configure(c);
            c.ldap_cache_ttl = Duration::ZERO;
        },
    )
    .await;

    assert_eq!(t.grants_of("alice", &pw("alice")).await, ["admin"]);
    assert_eq!(t.grants_of("bob", &pw("bob")).await, ["operator@prod"]);

    // Filter injection: each would match alice (or everyone) unescaped.
    for name in ["*", "al*", "*)(uid=*", "alice)(|(uid=*", "*)(|(objectClass=*"] {
        let (status, body) = t.me(name, &pw("alice")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
        let (status, _) = t.console_sign_in(name, &pw("alice")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
    }

    // bob moves from prod-ops to drover-admins: admin at his next sign-in.
    slapd.membership("prod-ops", "bob", false);
    slapd.membership("drover-admins", "bob", true);
    assert_eq!(t.grants_of("bob", &pw("bob")).await, ["admin"]);
    // In both groups: both grants.
    slapd.membership("prod-ops", "bob", true);
    let mut both = t.grants_of("bob", &pw("bob")).await;
    both.sort();
    assert_eq!(both, ["admin", "operator@prod"]);

    // dave, in no group, is refused; put into prod-ops he signs in.
    let (status, _) = t.me("dave", &pw("dave")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    slapd.membership("prod-ops", "dave", true);
    assert_eq!(t.grants_of("dave", &pw("dave")).await, ["operator@prod"]);

    // Out of every mapped group: refused, and the stored grants are gone.
    slapd.membership("prod-ops", "dave", false);
    let (status, _) = t.me("dave", &pw("dave")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(t.stored_grants("dave").await, Some(vec![]));

    // A wrong service account password stops every directory sign-in with
    // a clear reason, and nothing else.
    let bad = tempfile::tempdir().unwrap();
    let configure = search_mode(slapd.url.clone(), bad.path());
    std::fs::write(bad.path().join("ldap-bind-password"), "not-the-password\n").unwrap();
    let t2 = T::start_configured(|_| {}, configure).await;
    let (status, page) = t2.console_sign_in("alice", &pw("alice")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.unwrap_err().contains("directory service cannot be asked"));
    t2.ok(Method::GET, "/users/me", None).await;
}

#[tokio::test]
async fn directory_down_refuses_directory_users_only() {
    let mut slapd = Slapd::start(None);
    let t = T::start_configured(|_| {}, template_mode(&slapd)).await;
    assert_eq!(t.grants_of("alice", &pw("alice")).await, ["admin"]);

    slapd.stop();
    // bob never signed in: refused, with the reason on the console.
    let (status, body) = t.me("bob", &pw("bob")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, page) = t.console_sign_in("bob", &pw("bob")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.unwrap_err().contains("directory service cannot be asked"));
    // alice's Basic sign-in is remembered (--ldap-cache-ttl, 5m), as a
    // local user's is; a wrong password is not.
    assert_eq!(t.grants_of("alice", &pw("alice")).await, ["admin"]);
    let (status, _) = t.me("alice", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The local admin never depends on the directory.
    t.ok(Method::GET, "/users/me", None).await;
    let (status, _) = t.console_sign_in("admin", common::PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // A local user with a password is never asked of the directory, even
    // when a directory user of that name exists.
    t.ok(
        Method::POST,
        "/users",
        Some(json!({"username": "carol", "password": "night-shift-password-0123", "grants": [{"role": "viewer"}]})),
    )
    .await;
    let (status, me) = t.me("carol", "night-shift-password-0123").await;
    assert_eq!((status, me["source"].as_str()), (StatusCode::OK, Some("local")));
}

#[tokio::test]
async fn starttls_and_ldaps_check_the_directory_certificate() {
    let tls = tls_files();
    let slapd = Slapd::start(Some(&tls));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ldap-ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, tls_files().ca_pem).unwrap();

    // StartTLS on ldap://localhost, trusting the directory's CA.
    let starttls_url = slapd.url.replace("127.0.0.1", "localhost");
    let t = T::start_configured(
        |_| {},
        |c| {
            template_mode(&slapd)(c);
            c.ldap_url = Some(starttls_url.clone());
            c.ldap_starttls = true;
            c.ldap_ca_cert = Some(ca.clone());
        },
    )
    .await;
    assert_eq!(t.grants_of("alice", &pw("alice")).await, ["admin"]);

    // ldaps:// likewise.
    let ldaps = slapd.ldaps_url.clone().unwrap();
    let t = T::start_configured(
        |_| {},
        |c| {
            template_mode(&slapd)(c);
            c.ldap_url = Some(ldaps.clone());
            c.ldap_ca_cert = Some(ca.clone());
        },
    )
    .await;
    assert_eq!(t.grants_of("bob", &pw("bob")).await, ["operator@prod"]);

    // Another CA: the certificate does not verify, nobody signs in.
    for (url, starttls) in [(starttls_url.clone(), true), (ldaps.clone(), false)] {
        let t = T::start_configured(
            |_| {},
            |c| {
                template_mode(&slapd)(c);
                c.ldap_url = Some(url.clone());
                c.ldap_starttls = starttls;
                c.ldap_ca_cert = Some(other_ca.clone());
            },
        )
        .await;
        let (status, page) = t.console_sign_in("alice", &pw("alice")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{url}");
        assert!(page.unwrap_err().contains("directory service cannot be asked"), "{url}");
    }
}

/// The same records on PostgreSQL (the server of `DROVER_TEST_POSTGRES_URL`,
/// as in `tests/store.rs`): creation, grant changes, grants dropped.
#[tokio::test]
async fn directory_users_on_postgresql() {
    use sqlx::{Connection, Executor};
    let admin_url = match std::env::var("DROVER_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var("DROVER_TEST_SKIP_POSTGRES").as_deref() == Ok("1") => {
            eprintln!("skipped: DROVER_TEST_SKIP_POSTGRES=1");
            return;
        }
        _ => panic!(
            "DROVER_TEST_POSTGRES_URL is not set: run `eval \"$(scripts/postgres-test-db.sh)\"` as root first, \
             or set DROVER_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
        ),
    };
    let name = format!("drover_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("connect to DROVER_TEST_POSTGRES_URL");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    let url = with_database(&admin_url, &name);

    let slapd = Slapd::start(None);
    let t = T::start_configured(
        |_| {},
        |c| {
            template_mode(&slapd)(c);
            c.database_url = Some(url.clone());
            c.ldap_cache_ttl = Duration::ZERO;
        },
    )
    .await;
    assert_eq!(t.grants_of("alice", &pw("alice")).await, ["admin"]);
    assert_eq!(t.grants_of("bob", &pw("bob")).await, ["operator@prod"]);
    slapd.membership("prod-ops", "bob", false);
    slapd.membership("drover-admins", "bob", true);
    assert_eq!(t.grants_of("bob", &pw("bob")).await, ["admin"]);
    slapd.membership("drover-admins", "bob", false);
    let (status, _) = t.me("bob", &pw("bob")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(t.stored_grants("bob").await, Some(vec![]));

    t.handle.shutdown().await;
    admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.unwrap();
}

#[tokio::test]
async fn incomplete_configuration_stops_the_start() {
    type Configure = Box<dyn Fn(&mut ManagerConfig)>;
    let cases: Vec<(Configure, &str)> = vec![
        (Box::new(|c| c.ldap_group_base = Some(BASE.into())), "--ldap-group-base is set but --ldap-url is not"),
        (Box::new(|c| c.ldap_url = Some("http://x".into())), "must start with ldap:// or ldaps://"),
        (Box::new(|c| c.ldap_url = Some("ldap://x".into())), "needs --ldap-bind-dn-template"),
        (
            Box::new(|c| {
                c.ldap_url = Some("ldap://x".into());
                c.ldap_bind_dn_template = Some("uid=x".into());
            }),
            "must contain {user}",
        ),
        (
            Box::new(|c| {
                c.ldap_url = Some("ldap://x".into());
                c.ldap_bind_dn = Some(SERVICE_DN.into());
            }),
            "--ldap-bind-dn needs --ldap-bind-password-file",
        ),
        (
            Box::new(|c| {
                c.ldap_url = Some("ldap://x".into());
                c.ldap_bind_dn_template = Some("uid={user}".into());
                c.ldap_group_base = Some(BASE.into());
            }),
            "needs --ldap-role-map",
        ),
        (
            Box::new(|c| {
                c.ldap_url = Some("ldap://x".into());
                c.ldap_bind_dn_template = Some("uid={user}".into());
                c.ldap_group_base = Some(BASE.into());
                c.ldap_role_map = vec!["ops=chief".into()];
            }),
            "unknown role in \"chief\"",
        ),
    ];
    for (configure, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ManagerConfig::for_data_dir(dir.path());
        configure(&mut config);
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = drover_manager::Manager::start(config, http, grpc).await.expect_err("refused");
        assert!(format!("{err:#}").contains(want), "want {want:?} in: {err:#}");
    }
}

/// `url` (`postgres://USER:PW@HOST[:PORT][/DB][?QUERY]`) naming database `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let server = base[authority..].find('/').map_or(base, |slash| &base[..authority + slash]);
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// A CA and a server certificate for localhost and 127.0.0.1, made with rcgen.
fn tls_files() -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test directory CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    TlsFiles { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}
