//! The architecture rules of docs/ARCHITECTURE.md, checked on the source:
//! each test fails, naming the file and line, when a change breaks one.
//!
//! - only the manager's `store` uses sqlx, only its `http` uses axum;
//! - generated protocol types (`drover_proto::v1`, prost) stay at the gRPC
//!   edges: the manager's `grpc` module and the agent's wire module (with the two
//!   agent modules that own the tonic client: `enroll`, `session`);
//! - the domain layer knows nothing of HTTP, SQL or the wire;
//! - arrows point down: nothing below `http` imports it;
//! - in the agent, only `enroll`, `session` and `supervisor` call `wire`;
//! - SQLite and PostgreSQL migrations come in pairs, equal unless listed as
//!   backend-specific;
//! - the `drover` CLI is a client: neither its source nor its dependency
//!   tree (`cargo tree`) holds anything of the server, the database, gRPC or
//!   templating; nor does the agent's hold service types or the builder.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Every `.rs` file under `dir`, relative to the workspace root, with its text.
fn sources(dir: &str) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = root();
    let mut files = Vec::new();
    walk(&root.join(dir), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p.strip_prefix(&root).expect("under root").to_string_lossy().into_owned(), text)
        })
        .collect()
}

/// `file:line: text` of every code line (comments left out) of the files
/// for which `applies` holds that contains one of `needles`.
fn uses(dir: &str, needles: &[&str], applies: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (file, text) in sources(dir) {
        if !applies(&file) {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if needles.iter().any(|n| code.contains(n)) {
                out.push(format!("{file}:{}: {}", i + 1, code));
            }
        }
    }
    out
}

fn assert_none(rule: &str, found: Vec<String>) {
    assert!(found.is_empty(), "architecture rule broken: {rule}\n{}", found.join("\n"));
}

/// The crates on the client side: the CLI and the API types and label rules
/// it links. No server framework, database or gRPC in their source.
const CLIENT_SIDE: &[&str] = &["cli/src", "api/src", "labels/src"];

/// [`uses`] over every file of the client-side crates.
fn client_side_uses(needles: &[&str]) -> Vec<String> {
    CLIENT_SIDE.iter().flat_map(|dir| uses(dir, needles, |_| true)).collect()
}

/// The crates in the normal (not dev, not build) dependency tree of
/// `package`, as `name vX.Y.Z`, from `cargo tree` on the lock file.
fn normal_dependencies(package: &str) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", package, "-e", "normal", "--prefix", "none"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("run cargo tree -p {package}: {e}"));
    assert!(out.status.success(), "cargo tree -p {package} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let mut crates: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some(format!("{} {}", words.next()?, words.next()?))
        })
        .collect();
    crates.sort();
    crates.dedup();
    crates
}

/// The crates of `package`'s normal dependency tree named `forbidden`, or
/// one of their parts (`sqlx-core` for `sqlx`).
fn forbidden_dependencies(package: &str, forbidden: &[&str]) -> Vec<String> {
    normal_dependencies(package)
        .into_iter()
        .filter(|c| {
            let name = c.split(' ').next().unwrap_or_default();
            forbidden.iter().any(|f| name == *f || name.strip_prefix(f).is_some_and(|rest| rest.starts_with('-')))
        })
        .map(|c| {
            format!(
                "{package} depends on {c} (see `cargo tree -p {package} -e normal -i {}`)",
                c.split(' ').next().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn only_the_store_uses_sqlx() {
    let needles = ["sqlx::", "use sqlx"];
    let mut found = uses("manager/src", &needles, |f| !f.starts_with("manager/src/store/"));
    found.extend(client_side_uses(&needles));
    assert_none("only manager/src/store uses sqlx", found);
}

#[test]
fn only_http_uses_axum() {
    let needles = ["axum::", "use axum"];
    let mut found = uses("manager/src", &needles, |f| !f.starts_with("manager/src/http/"));
    found.extend(client_side_uses(&needles));
    assert_none("only manager/src/http uses axum", found);
}

#[test]
fn generated_protocol_types_stay_at_the_grpc_edges() {
    let edges = [
        "manager/src/grpc/mod.rs",
        "manager/src/grpc/requests.rs",
        "agent/src/wire.rs",
        "agent/src/enroll.rs",
        "agent/src/session.rs",
    ];
    let needles = ["drover_proto::v1", "prost::", "use prost"];
    let mut found = uses("manager/src", &needles, |f| !edges.contains(&f));
    found.extend(uses("agent/src", &needles, |f| !edges.contains(&f)));
    found.extend(client_side_uses(&["drover_proto", "prost::", "use prost", "tonic::", "use tonic"]));
    assert_none("generated prost types only at the gRPC edges, and no gRPC on the client side", found);
}

#[test]
fn the_domain_layer_knows_no_http_sql_or_wire() {
    assert_none(
        "manager/src/domain imports no axum, sqlx, prost or drover_proto::v1",
        uses(
            "manager/src/domain",
            &["axum::", "use axum", "sqlx::", "use sqlx", "prost::", "drover_proto::v1", "crate::http", "crate::grpc"],
            |_| true,
        ),
    );
}

#[test]
fn nothing_below_http_imports_it() {
    // lib.rs assembles everything and may name http; every other module
    // outside http is below it.
    assert_none(
        "only manager/src/lib.rs and http itself refer to crate::http",
        uses("manager/src", &["crate::http", "super::http"], |f| {
            !f.starts_with("manager/src/http/") && f != "manager/src/lib.rs"
        }),
    );
}

#[test]
fn the_cli_names_nothing_of_the_manager() {
    // Its tests against a real manager are in cli/tests, which may.
    assert_none("nothing in cli/src names drover_manager", uses("cli/src", &["drover_manager"], |_| true));
}

#[test]
fn the_cli_links_nothing_of_the_server() {
    assert_none(
        "the drover CLI links no server, database, gRPC or templating crate",
        forbidden_dependencies(
            "drover-cli",
            &["drover-manager", "drover-proto", "sqlx", "axum", "tonic", "handlebars"],
        ),
    );
}

#[test]
fn the_agent_links_no_service_types_or_builder() {
    assert_none(
        "the agent links neither service types, the parcel builder nor handlebars",
        forbidden_dependencies("drover-agent", &["drover-service-types", "drover-parcel-builder", "handlebars"]),
    );
}

#[test]
fn the_store_is_the_bottom_layer() {
    assert_none(
        "manager/src/store imports no domain, desired state, registry or http",
        uses(
            "manager/src/store",
            &["crate::domain", "crate::desired", "crate::registry", "crate::http", "crate::grpc"],
            |_| true,
        ),
    );
}

#[test]
fn only_enroll_session_supervisor_and_requests_call_the_agent_wire_module() {
    let allowed = [
        "agent/src/wire.rs",
        "agent/src/enroll.rs",
        "agent/src/session.rs",
        "agent/src/supervisor.rs",
        "agent/src/requests.rs",
        "agent/src/lib.rs",
    ];
    assert_none(
        "only enroll, session, supervisor and requests call agent/src/wire.rs",
        uses("agent/src", &["crate::wire", "wire::"], |f| !allowed.contains(&f)),
    );
}

/// Migrations that differ between SQLite and PostgreSQL on purpose.
/// Migrations whose column types differ by backend: auto-increment ids, and SQLite's
/// `WITHOUT ROWID` point tables (0009) with `INTEGER`/`REAL` where PostgreSQL has
/// `BIGINT`/`DOUBLE PRECISION`.
const BACKEND_SPECIFIC: &[&str] =
    &["0001_foundation.sql", "0009_metrics.sql", "0010_alerts.sql", "0011_notifications.sql"];

#[test]
fn sqlite_and_postgres_migrations_match() {
    let list = |backend: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root().join("schema").join(backend))
            .expect("schema dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let (sqlite, postgres) = (list("sqlite"), list("postgres"));
    assert_eq!(sqlite, postgres, "every migration needs a SQLite and a PostgreSQL version of the same name");
    for name in &sqlite {
        if BACKEND_SPECIFIC.contains(&name.as_str()) {
            continue;
        }
        let read =
            |backend: &str| std::fs::read_to_string(root().join("schema").join(backend).join(name)).expect("read");
        assert_eq!(
            read("sqlite"),
            read("postgres"),
            "schema/{{sqlite,postgres}}/{name} differ; make them equal or list the file in BACKEND_SPECIFIC"
        );
    }
}
