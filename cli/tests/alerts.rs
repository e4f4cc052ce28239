//! `drover alert-rules`, `drover silence`, `drover maintenance` and `drover alerts` run whole
//! against a real manager in this process (SQLite in a temporary directory): rule files in
//! YAML, export and import round trip, refusals naming the problem, silences and maintenance.

mod common;

use common::{admin, drover, start_manager};
use drover_cli::cli::OutputFormat;

#[tokio::test]
async fn rules_silences_and_maintenance_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_manager(dir.path()).await;
    let ctx = admin(&handle, OutputFormat::Table);

    let list = drover(&ctx, &["alert-rules", "list"]).await.unwrap();
    assert!(list.starts_with("NAME"), "{list}");
    assert!(list.contains("disk_nearly_full") && list.contains("built-in"), "{list}");

    // A rule from a YAML file; then a built-in disabled from a file and reset.
    let file = dir.path().join("rule.yaml");
    std::fs::write(
        &file,
        "name: redis-memory\nexpr: redis_memory_used_ratio > 0.9\nfor: 5m\nseverity: warning\n\
         annotations:\n  summary: \"{{labels.host}} at {{value}}\"\n",
    )
    .unwrap();
    let set = drover(&ctx, &["alert-rules", "set", "-f", file.to_str().unwrap()]).await.unwrap();
    assert_eq!(set, "set rule redis-memory: redis_memory_used_ratio > 0.9\n");
    let show = drover(&ctx, &["alert-rules", "show", "redis-memory"]).await.unwrap();
    assert!(show.contains("redis_memory_used_ratio > 0.9") && show.contains("5m"), "{show}");
    std::fs::write(&file, "name: host_lost\nexpr: host_up == 0\nseverity: critical\nenabled: false\n").unwrap();
    let set = drover(&ctx, &["alert-rules", "set", "-f", file.to_str().unwrap()]).await.unwrap();
    assert!(set.starts_with("set built-in rule host_lost"), "{set}");
    assert!(drover(&ctx, &["alert-rules", "list"]).await.unwrap().contains("built-in, changed"));
    assert_eq!(drover(&ctx, &["alert-rules", "delete", "host_lost"]).await.unwrap(), "reset built-in rule host_lost\n");

    // A bad rule: the manager's message names the problem.
    std::fs::write(&file, "name: bad\nexpr: not_a_metric > 1\nseverity: info\n").unwrap();
    let err = drover(&ctx, &["alert-rules", "set", "-f", file.to_str().unwrap()]).await.unwrap_err();
    assert!(format!("{err:#}").contains("not_a_metric"), "{err:#}");
    std::fs::write(&file, "name: bad\nexpr: host_load1 > 1\nseverity: loud\n").unwrap();
    let err = drover(&ctx, &["alert-rules", "set", "-f", file.to_str().unwrap()]).await.unwrap_err();
    assert!(format!("{err:#}").contains("unknown variant `loud`"), "{err:#}");

    // Export, delete, import: back again.
    let yaml = drover(&ctx, &["alert-rules", "export"]).await.unwrap();
    assert!(yaml.contains("name: redis-memory"), "{yaml}");
    let export = dir.path().join("rules.yaml");
    std::fs::write(&export, &yaml).unwrap();
    assert_eq!(drover(&ctx, &["alert-rules", "delete", "redis-memory"]).await.unwrap(), "deleted rule redis-memory\n");
    let imported = drover(&ctx, &["alert-rules", "import", export.to_str().unwrap()]).await.unwrap();
    assert!(imported.starts_with("imported ") && imported.contains("redis-memory"), "{imported}");
    assert_eq!(drover(&ctx, &["alert-rules", "export"]).await.unwrap(), yaml);

    // Silences.
    let added = drover(
        &ctx,
        &[
            "silence",
            "add",
            "--match",
            "host=db1",
            "--match",
            "alertname=~host_.*",
            "--duration",
            "2h",
            "--comment",
            "swap",
        ],
    )
    .await
    .unwrap();
    assert!(added.contains("mutes {host=db1 alertname=~host_.*}"), "{added}");
    let id = added.split_whitespace().nth(1).unwrap().to_owned();
    let list = drover(&ctx, &["silence", "list"]).await.unwrap();
    assert!(list.contains(&id) && list.contains("active") && list.contains("swap"), "{list}");
    assert_eq!(drover(&ctx, &["silence", "expire", &id]).await.unwrap(), format!("expired silence {id}\n"));
    let err = drover(&ctx, &["silence", "add", "--match", "host", "--duration", "1h"]).await.unwrap_err();
    assert!(err.to_string().contains("is not a matcher"), "{err}");
    let err = drover(&ctx, &["silence", "add", "--match", "host=~(", "--duration", "1h"]).await.unwrap_err();
    assert!(format!("{err:#}").contains("invalid regular expression"), "{err:#}");

    // Maintenance of a cluster; a service needs CLUSTER/SERVICE.
    let body = serde_json::json!({"name": "prod"});
    ctx.client.send_json(reqwest::Method::POST, &["clusters"], Some(&body)).await.unwrap();
    let on = drover(&ctx, &["maintenance", "on", "cluster", "prod", "--comment", "upgrade"]).await.unwrap();
    assert_eq!(on, "cluster prod is in maintenance mode: its alerts are suppressed\n");
    assert!(drover(&ctx, &["maintenance", "list"]).await.unwrap().contains("upgrade"));
    let err = drover(&ctx, &["maintenance", "on", "service", "cache"]).await.unwrap_err();
    assert!(err.to_string().contains("CLUSTER/SERVICE"), "{err}");
    let err = drover(&ctx, &["maintenance", "on", "host", "nope.example"]).await.unwrap_err();
    assert!(format!("{err:#}").contains("host nope.example not found"), "{err:#}");
    assert_eq!(
        drover(&ctx, &["maintenance", "off", "cluster", "prod"]).await.unwrap(),
        "cluster prod is out of maintenance mode\n"
    );

    // Alerts and their history (none yet).
    let alerts = drover(&ctx, &["alerts", "--state", "firing"]).await.unwrap();
    assert_eq!(alerts, "no pending or firing alerts\n");
    assert_eq!(drover(&ctx, &["alerts", "history", "--rule", "host_lost"]).await.unwrap(), "no alert history\n");
    handle.shutdown().await;
}
