//! `drover template` run whole against a real manager in this process (SQLite in a
//! temporary directory, hosts enrolled through the store): upload of the shipped examples,
//! list, show, a refused template naming its problem, export of a cluster to a file that
//! uploads as it is, delete, and an instantiation refused before anything is created.

mod common;

use common::{admin, drover, start_manager};
use drover_cli::cli::OutputFormat;

#[tokio::test]
async fn templates_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_manager(dir.path()).await;
    let ctx = admin(&handle, OutputFormat::Table);
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");

    for name in ["redis-replicated", "zookeeper-ensemble", "nginx-web-tier", "stack"] {
        let file = examples.join(format!("{name}.yaml"));
        let out = drover(&ctx, &["template", "upload", file.to_str().unwrap()]).await.unwrap();
        assert!(out.starts_with(&format!("stored template {name} version 1 (")), "{out}");
    }
    let again = examples.join("stack.yaml");
    let out = drover(&ctx, &["template", "upload", again.to_str().unwrap()]).await.unwrap();
    assert!(out.starts_with("stored template stack version 2"), "{out}");
    let list = drover(&ctx, &["template", "list"]).await.unwrap();
    assert!(list.starts_with("NAME"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("stack ") && l.contains(" 2 ")), "{list}");
    let show = drover(&ctx, &["template", "show", "stack", "--version", "1"]).await.unwrap();
    assert!(show.starts_with("# stack version 1, by admin"), "{show}");
    assert!(show.contains("upstream_service: web"), "{show}");

    // A template the service types refuse: the path of each problem.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\nservices:\n  - {name: cache, type: redis, config: {maxmemry: 1gb}}\nhost_groups:\n  \
         - {name: a, cardinality: 1, roles: [{service: cache, role_type: primary}]}\n",
    )
    .unwrap();
    let err = drover(&ctx, &["template", "upload", bad.to_str().unwrap()]).await.unwrap_err();
    assert!(format!("{err:#}").contains("services[0].config.maxmemry: unknown parameter"), "{err:#}");

    // A cluster exported to a file, which uploads as it is.
    drover_manager::fixtures::enroll(
        &handle.state,
        "h1",
        drover_manager::fixtures::facts("node-1", "10.0.0.1"),
        Default::default(),
    )
    .await
    .unwrap();
    let state = &handle.state;
    let actor = drover_manager::domain::Actor::system("test");
    drover_manager::domain::clusters::create(state, &actor, "prod").await.unwrap();
    drover_manager::domain::services::create(state, &actor, "prod", "cache", "redis").await.unwrap();
    let role =
        drover_api::roles::NewRole { role_type: "primary".into(), host_id: Some("h1".into()), ..Default::default() };
    drover_manager::domain::roles::create(state, &actor, "prod", "cache", vec![role], true).await.unwrap();
    let out_file = dir.path().join("prod.yaml");
    let out = drover(&ctx, &["template", "export", "prod", "-o", out_file.to_str().unwrap()]).await.unwrap();
    assert_eq!(
        out,
        format!("wrote template prod (1 services, 1 host groups, 0 variables) to {}\n", out_file.display())
    );
    let out = drover(&ctx, &["template", "upload", out_file.to_str().unwrap()]).await.unwrap();
    assert!(out.starts_with("stored template prod version 1"), "{out}");

    // Refused before anything is created: the secret is missing.
    let err =
        drover(&ctx, &["template", "instantiate", "redis-replicated", "--cluster", "c2", "--group", "primary=h1"])
            .await
            .unwrap_err();
    assert!(format!("{err:#}").contains("variables.requirepass: is required"), "{err:#}");

    assert_eq!(
        drover(&ctx, &["template", "delete", "stack", "--version", "1"]).await.unwrap(),
        "deleted version 1 of template stack\n"
    );
    assert_eq!(drover(&ctx, &["template", "delete", "stack"]).await.unwrap(), "deleted template stack\n");
    let list = drover(&ctx, &["template", "list"]).await.unwrap();
    assert!(!list.contains("stack"), "{list}");
    handle.shutdown().await;
}
