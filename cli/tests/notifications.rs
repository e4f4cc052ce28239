//! `drover receivers`, `drover routes` and `drover notifications deliveries` run whole against
//! a real manager in this process (SQLite in a temporary directory).

mod common;

use common::{admin, drover, start_manager};
use drover_cli::cli::OutputFormat;

#[tokio::test]
async fn receivers_and_routes_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_manager(dir.path()).await;
    let ctx = admin(&handle, OutputFormat::Table);
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    assert_eq!(drover(&ctx, &["receivers", "list"]).await.unwrap(), "no receivers\n");
    std::fs::write(
        dir.path().join("ops.yaml"),
        "webhook_configs:\n  - url: http://127.0.0.1:9/hook\n    secret: cli-s3cret\n",
    )
    .unwrap();
    let set = drover(&ctx, &["receivers", "set", "ops", "-f", &path("ops.yaml")]).await.unwrap();
    assert_eq!(set, "set receiver ops: 1 webhook\n");
    let show = drover(&ctx, &["receivers", "show", "ops"]).await.unwrap();
    assert!(show.contains("<redacted>") && !show.contains("cli-s3cret"), "{show}");
    // What `show` prints goes back unchanged (the secret is kept).
    std::fs::write(dir.path().join("shown.yaml"), &show).unwrap();
    drover(&ctx, &["receivers", "set", "-f", &path("shown.yaml")]).await.unwrap();
    let list = drover(&ctx, &["receivers", "list"]).await.unwrap();
    assert!(list.starts_with("NAME") && list.contains("ops") && list.contains("1 webhook"), "{list}");

    std::fs::write(dir.path().join("routes.yaml"), "receiver: nobody\n").unwrap();
    let bad = drover(&ctx, &["routes", "set", "-f", &path("routes.yaml")]).await.unwrap_err().to_string();
    assert!(bad.contains("route.receiver") && bad.contains("nobody"), "{bad}");
    std::fs::write(dir.path().join("routes.yaml"), "receiver: ops\ngroup_wait: 10s\n").unwrap();
    let set = drover(&ctx, &["routes", "set", "-f", &path("routes.yaml")]).await.unwrap();
    assert!(set.contains("receiver: ops"), "{set}");
    let shown = drover(&ctx, &["routes", "show"]).await.unwrap();
    assert!(shown.contains("group_wait: 10s"), "{shown}");
    let used = drover(&ctx, &["receivers", "delete", "ops"]).await.unwrap_err().to_string();
    assert!(used.contains("used by route"), "{used}");
    let none = drover(&ctx, &["notifications", "deliveries"]).await.unwrap();
    assert_eq!(none, "no delivery attempts\n");
}
