//! ZooKeeper's `mntr` four-letter word over the client port: send `mntr`,
//! read to the end, parse `key<TAB>value` lines.

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Sample;

/// The largest `mntr` answer read (a real one is about 2 KiB).
const MAX_REPLY: u64 = 256 * 1024;

/// Connects to `host:port` and returns the answer to `mntr`.
pub async fn mntr(host: &str, port: u16) -> Result<String, String> {
    let mut stream = TcpStream::connect((host, port)).await.map_err(|e| format!("connect: {e}"))?;
    stream.write_all(b"mntr").await.map_err(|e| format!("send mntr: {e}"))?;
    let mut buf = Vec::new();
    (&mut stream).take(MAX_REPLY).read_to_end(&mut buf).await.map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The `zookeeper_*` samples of a `mntr` answer (see docs/metrics.md).
pub fn samples(text: &str, at_unix_ms: i64) -> Result<Vec<Sample>, String> {
    if text.contains("not in the whitelist") || text.contains("not executed") {
        return Err(format!(
            "the server refused mntr ({}); add mntr to 4lw.commands.whitelist in zoo.cfg",
            text.trim()
        ));
    }
    if text.trim().is_empty() {
        return Err("the server closed the connection without answering mntr".into());
    }
    let fields: BTreeMap<&str, &str> =
        text.lines().filter_map(|l| l.split_once('\t')).map(|(k, v)| (k.trim(), v.trim())).collect();
    let Some(mode) = fields.get("zk_server_state").copied() else {
        let first = text.lines().next().unwrap_or_default();
        return Err(format!(
            "not a mntr answer (no zk_server_state): {:?}",
            first.chars().take(80).collect::<String>()
        ));
    };
    let num = |k: &str| fields.get(k).and_then(|v| v.parse::<f64>().ok());
    let mut out = Vec::new();
    let mut push = |name: &str, value: f64, labels: BTreeMap<String, String>| {
        out.push(Sample { name: name.to_owned(), value, labels, at_unix_ms });
    };
    push("zookeeper_is_leader", if mode == "leader" { 1.0 } else { 0.0 }, BTreeMap::new());
    push("zookeeper_mode", 1.0, [("mode".to_owned(), mode.to_owned())].into());
    for (key, name) in [
        ("zk_avg_latency", "zookeeper_avg_latency_ms"),
        ("zk_max_latency", "zookeeper_max_latency_ms"),
        ("zk_outstanding_requests", "zookeeper_outstanding_requests"),
        ("zk_znode_count", "zookeeper_znode_count"),
        ("zk_num_alive_connections", "zookeeper_num_alive_connections"),
        ("zk_watch_count", "zookeeper_watch_count"),
    ] {
        if let Some(v) = num(key) {
            push(name, v, BTreeMap::new());
        }
    }
    if mode == "leader"
        && let Some(v) = num("zk_synced_followers")
    {
        push("zookeeper_synced_followers", v, BTreeMap::new());
    }
    if let Some(v) = num("zk_global_sessions").or_else(|| num("zk_num_alive_connections")) {
        push("zookeeper_open_sessions", v, BTreeMap::new());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(samples: &[Sample], name: &str) -> Option<f64> {
        samples.iter().find(|s| s.name == name).map(|s| s.value)
    }

    /// The start of `mntr` from a real ZooKeeper 3.8.0 leader of three.
    const LEADER: &str = "zk_version\t3.8.0-5a02a05eddb59aee6ac762f7ea82e92a68eb9c0f, built on 2022-02-25 08:49 UTC
zk_server_state\tleader
zk_ephemerals_count\t0
zk_min_latency\t0
zk_avg_latency\t0.4286
zk_watch_count\t2
zk_packets_sent\t25
zk_num_alive_connections\t3
zk_open_file_descriptor_count\t68
zk_max_latency\t6
zk_packets_received\t24
zk_outstanding_requests\t0
zk_znode_count\t5
zk_global_sessions\t2
zk_local_sessions\t0
zk_learners\t2
zk_synced_followers\t2
zk_synced_non_voting_followers\t0
zk_synced_observers\t0
zk_pending_syncs\t0
zk_last_proposal_size\t48
zk_max_proposal_size\t48
zk_min_proposal_size\t32
";

    const STANDALONE_OLD: &str = "zk_version\t3.4.13\nzk_avg_latency\t0\nzk_max_latency\t3\nzk_min_latency\t0\n\
zk_packets_received\t8\nzk_packets_sent\t7\nzk_num_alive_connections\t1\nzk_outstanding_requests\t0\n\
zk_server_state\tstandalone\nzk_znode_count\t4\nzk_watch_count\t0\nzk_ephemerals_count\t0\n";

    #[test]
    fn a_leader() {
        let s = samples(LEADER, 3).expect("samples");
        assert_eq!(value(&s, "zookeeper_is_leader"), Some(1.0));
        let mode = s.iter().find(|s| s.name == "zookeeper_mode").expect("mode");
        assert_eq!((mode.labels["mode"].as_str(), mode.value), ("leader", 1.0));
        assert_eq!(value(&s, "zookeeper_avg_latency_ms"), Some(0.4286));
        assert_eq!(value(&s, "zookeeper_max_latency_ms"), Some(6.0));
        assert_eq!(value(&s, "zookeeper_outstanding_requests"), Some(0.0));
        assert_eq!(value(&s, "zookeeper_znode_count"), Some(5.0));
        assert_eq!(value(&s, "zookeeper_synced_followers"), Some(2.0));
        assert_eq!(value(&s, "zookeeper_open_sessions"), Some(2.0));
        assert_eq!(value(&s, "zookeeper_num_alive_connections"), Some(3.0));
        assert_eq!(value(&s, "zookeeper_watch_count"), Some(2.0));
    }

    #[test]
    fn an_older_standalone_server_counts_connections_as_sessions() {
        let s = samples(STANDALONE_OLD, 0).expect("samples");
        assert_eq!(value(&s, "zookeeper_is_leader"), Some(0.0));
        assert_eq!(
            s.iter().find(|s| s.name == "zookeeper_mode").map(|m| m.labels["mode"].as_str()),
            Some("standalone")
        );
        assert_eq!(value(&s, "zookeeper_synced_followers"), None);
        assert_eq!(value(&s, "zookeeper_open_sessions"), Some(1.0));
    }

    #[test]
    fn a_real_ensemble_of_three() {
        // Whole mntr of the leader of a real 3-server ZooKeeper 3.8.0
        // ensemble, and the start of a follower's.
        let leader = samples(include_str!("testdata/zookeeper-mntr-3.8.0-leader.txt"), 0).expect("leader");
        assert_eq!(value(&leader, "zookeeper_is_leader"), Some(1.0));
        assert_eq!(value(&leader, "zookeeper_synced_followers"), Some(2.0));
        assert_eq!(value(&leader, "zookeeper_znode_count"), Some(5.0));
        assert_eq!(value(&leader, "zookeeper_open_sessions"), Some(0.0));
        assert_eq!(leader.len(), 10, "{leader:#?}");
        let follower = samples(include_str!("testdata/zookeeper-mntr-3.8.0-follower.txt"), 0).expect("follower");
        assert_eq!(value(&follower, "zookeeper_is_leader"), Some(0.0));
        let mode = follower.iter().find(|s| s.name == "zookeeper_mode").expect("mode");
        assert_eq!(mode.labels["mode"], "follower");
        assert_eq!(value(&follower, "zookeeper_synced_followers"), None, "leaders only");
    }

    #[test]
    fn a_real_standalone_server() {
        // The first lines of a real ZooKeeper 3.8.0's mntr (Debian's package).
        let s = samples(include_str!("testdata/zookeeper-mntr-3.8.0-standalone.txt"), 0).expect("samples");
        assert_eq!(value(&s, "zookeeper_is_leader"), Some(0.0));
        assert_eq!(value(&s, "zookeeper_avg_latency_ms"), Some(0.0));
        assert_eq!(value(&s, "zookeeper_znode_count"), Some(5.0));
        assert_eq!(value(&s, "zookeeper_open_sessions"), Some(0.0), "zk_global_sessions wins");
        assert_eq!(value(&s, "zookeeper_num_alive_connections"), Some(1.0));
        assert_eq!(value(&s, "zookeeper_max_latency_ms"), Some(0.0));
        assert_eq!(value(&s, "zookeeper_synced_followers"), None);
    }

    #[test]
    fn a_refusal_is_a_clear_error() {
        // What ZooKeeper 3.8.0 answers.
        let e = samples("mntr is not executed because it is not in the whitelist.\n", 0).unwrap_err();
        assert!(e.contains("4lw.commands.whitelist"), "{e}");
        assert!(samples("", 0).unwrap_err().contains("without answering"));
        assert!(samples("hello\n", 0).unwrap_err().contains("not a mntr answer"));
    }
}
