//! The architecture rules of docs/ARCHITECTURE.md, checked on the source:
//! each test fails, naming the file and line, when a change breaks one.
//!
//! - only the manager's `store` uses sqlx, only its `http` uses axum;
//! - generated protocol types (`drover_proto::v1`, prost) stay at the gRPC
//!   edges: the manager's `grpc.rs` and the agent's wire module (with the two
//!   agent modules that own the tonic client: `enroll`, `session`);
//! - the domain layer knows nothing of HTTP, SQL or the wire;
//! - arrows point down: nothing below `http` imports it;
//! - in the agent, only `enroll`, `session` and `supervisor` call `wire`;
//! - SQLite and PostgreSQL migrations come in pairs, equal unless listed as
//!   backend-specific.

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

#[test]
fn only_the_store_uses_sqlx() {
    assert_none(
        "only manager/src/store uses sqlx",
        uses("manager/src", &["sqlx::", "use sqlx"], |f| !f.starts_with("manager/src/store/")),
    );
}

#[test]
fn only_http_uses_axum() {
    assert_none(
        "only manager/src/http uses axum",
        uses("manager/src", &["axum::", "use axum"], |f| !f.starts_with("manager/src/http/")),
    );
}

#[test]
fn generated_protocol_types_stay_at_the_grpc_edges() {
    let edges = ["manager/src/grpc.rs", "agent/src/wire.rs", "agent/src/enroll.rs", "agent/src/session.rs"];
    let needles = ["drover_proto::v1", "prost::", "use prost"];
    let mut found = uses("manager/src", &needles, |f| !edges.contains(&f));
    found.extend(uses("agent/src", &needles, |f| !edges.contains(&f)));
    assert_none("generated prost types only at the gRPC edges", found);
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
            !f.starts_with("manager/src/http/") && f != "manager/src/lib.rs" && !f.starts_with("manager/src/bin/")
        }),
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
fn only_enroll_session_and_supervisor_call_the_agent_wire_module() {
    let allowed = [
        "agent/src/wire.rs",
        "agent/src/enroll.rs",
        "agent/src/session.rs",
        "agent/src/supervisor.rs",
        "agent/src/lib.rs",
    ];
    assert_none(
        "only enroll, session and supervisor call agent/src/wire.rs",
        uses("agent/src", &["crate::wire", "wire::"], |f| !allowed.contains(&f)),
    );
}

/// Migrations that differ between SQLite and PostgreSQL on purpose.
const BACKEND_SPECIFIC: &[&str] = &["0001_foundation.sql"];

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
