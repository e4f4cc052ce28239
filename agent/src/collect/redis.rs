//! Redis `INFO` over RESP, spoken by hand: `AUTH <password>` when the source
//! has one, then `INFO`, one connection per collection.

use std::collections::BTreeMap;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Sample;

/// The largest `INFO` answer read (a real one is 4-6 KiB).
const MAX_REPLY: usize = 1024 * 1024;

/// Connects to `host:port`, authenticates and returns the text of `INFO`.
pub async fn info(host: &str, port: u16, password: &str) -> Result<String, String> {
    let stream = TcpStream::connect((host, port)).await.map_err(|e| format!("connect: {e}"))?;
    let mut conn = BufReader::new(stream);
    if !password.is_empty() {
        conn.get_mut().write_all(&command(&["AUTH", password])).await.map_err(|e| format!("send AUTH: {e}"))?;
        match reply(&mut conn).await? {
            Reply::Simple(_) => {}
            Reply::Error(e) => return Err(format!("AUTH failed: {e}")),
            Reply::Bulk(_) => return Err("AUTH: unexpected answer".into()),
        }
    }
    conn.get_mut().write_all(&command(&["INFO"])).await.map_err(|e| format!("send INFO: {e}"))?;
    match reply(&mut conn).await? {
        Reply::Bulk(text) => Ok(text),
        Reply::Error(e) if e.starts_with("NOAUTH") => Err(format!("INFO refused: {e} (the source has no password)")),
        Reply::Error(e) => Err(format!("INFO refused: {e}")),
        Reply::Simple(s) => Err(format!("INFO: unexpected answer {s:?}")),
    }
}

/// A RESP array of bulk strings.
fn command(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Bulk(String),
}

async fn reply(conn: &mut BufReader<TcpStream>) -> Result<Reply, String> {
    let mut line = String::new();
    let n = (&mut *conn).take(4096).read_line(&mut line).await.map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        "$" => {
            let len: usize = rest.parse().map_err(|_| format!("not a RESP bulk length: {:?}", truncate(line, 40)))?;
            if len > MAX_REPLY {
                return Err(format!("answer of {len} bytes is larger than {MAX_REPLY}"));
            }
            let mut buf = vec![0u8; len + 2];
            conn.read_exact(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            buf.truncate(len);
            Ok(Reply::Bulk(String::from_utf8_lossy(&buf).into_owned()))
        }
        _ => Err(format!("not a Redis answer: {:?}", truncate(line, 40))),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// The `redis_*` samples of an `INFO` text (see docs/metrics.md).
pub fn samples(info: &str, at_unix_ms: i64) -> Result<Vec<Sample>, String> {
    let mut fields = BTreeMap::new();
    for line in info.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.insert(k, v);
        }
    }
    if !fields.contains_key("redis_version") {
        return Err("the INFO answer has no redis_version: not a Redis server?".into());
    }
    let num = |k: &str| fields.get(k).and_then(|v| v.trim().parse::<f64>().ok());
    let mut out = Vec::new();
    let mut push = |name: &str, value: f64, labels: BTreeMap<String, String>| {
        out.push(Sample { name: name.to_owned(), value, labels, at_unix_ms });
    };
    for (key, name) in [
        ("connected_clients", "redis_connected_clients"),
        ("used_memory", "redis_used_memory_bytes"),
        ("instantaneous_ops_per_sec", "redis_instantaneous_ops_per_sec"),
        ("total_commands_processed", "redis_commands_processed_total"),
        ("keyspace_hits", "redis_keyspace_hits_total"),
        ("keyspace_misses", "redis_keyspace_misses_total"),
        ("connected_slaves", "redis_connected_replicas"),
    ] {
        if let Some(v) = num(key) {
            push(name, v, BTreeMap::new());
        }
    }
    let maxmemory = num("maxmemory").unwrap_or(0.0);
    push("redis_maxmemory_bytes", maxmemory, BTreeMap::new());
    if let Some(used) = num("used_memory")
        && maxmemory > 0.0
    {
        push("redis_memory_used_ratio", used / maxmemory, BTreeMap::new());
    }
    for (key, value) in &fields {
        // db0:keys=1,expires=0,avg_ttl=0
        if let Some(n) = key.strip_prefix("db")
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && let Some(keys) = kv_field(value, "keys")
        {
            push("redis_keys", keys, [("db".to_owned(), (*key).to_owned())].into());
        }
    }
    let primary = fields.get("role").map(|r| r.trim() == "master");
    if let Some(primary) = primary {
        push("redis_is_primary", if primary { 1.0 } else { 0.0 }, BTreeMap::new());
    }
    let offset = num("master_repl_offset");
    match primary {
        Some(false) => {
            if let Some(link) = fields.get("master_link_status") {
                push("redis_master_link_up", if link.trim() == "up" { 1.0 } else { 0.0 }, BTreeMap::new());
            }
            if let (Some(master), Some(replica)) = (offset, num("slave_repl_offset")) {
                push("redis_replication_offset_lag_bytes", (master - replica).max(0.0), BTreeMap::new());
            }
        }
        Some(true) => {
            if let Some(master) = offset {
                // slave0:ip=10.0.0.2,port=6380,state=online,offset=1234,lag=0
                let lag = fields
                    .iter()
                    .filter(|(k, _)| k.strip_prefix("slave").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
                    .filter_map(|(_, v)| kv_field(v, "offset"))
                    .map(|o| (master - o).max(0.0))
                    .fold(0.0, f64::max);
                push("redis_replication_offset_lag_bytes", lag, BTreeMap::new());
            }
        }
        None => {}
    }
    Ok(out)
}

/// `key=value` from a comma-separated INFO value, as a number.
fn kv_field(value: &str, key: &str) -> Option<f64> {
    value.split(',').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key)).and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(samples: &[Sample], name: &str) -> Option<f64> {
        samples.iter().find(|s| s.name == name).map(|s| s.value)
    }

    /// Abridged `INFO` of a real redis-server 7.0.15 primary with one replica,
    /// `maxmemory 4mb` and some keys.
    const PRIMARY: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nos:Linux 6.1.0 x86_64\r\n\
tcp_port:6379\r\nuptime_in_seconds:38\r\n\r\n# Clients\r\nconnected_clients:3\r\ncluster_connections:0\r\n\
maxclients:10000\r\nblocked_clients:0\r\n\r\n# Memory\r\nused_memory:1185176\r\nused_memory_human:1.13M\r\n\
used_memory_rss:7737344\r\nused_memory_peak:1204464\r\nmaxmemory:4194304\r\nmaxmemory_human:4.00M\r\n\
maxmemory_policy:noeviction\r\n\r\n# Stats\r\ntotal_connections_received:9\r\ntotal_commands_processed:1021\r\n\
instantaneous_ops_per_sec:12\r\nkeyspace_hits:40\r\nkeyspace_misses:2\r\n\r\n# Replication\r\nrole:master\r\n\
connected_slaves:1\r\nslave0:ip=127.0.0.1,port=6380,state=online,offset=5000,lag=1\r\n\
master_failover_state:no-failover\r\nmaster_replid:2b5bbe47b4c7b0f1fc0a8a9d80beef5e2d0a7c1d\r\n\
master_repl_offset:5320\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\n\r\n# Keyspace\r\n\
db0:keys=100,expires=0,avg_ttl=0\r\ndb3:keys=2,expires=1,avg_ttl=5000\r\n";

    const REPLICA: &str = "# Server\r\nredis_version:7.0.15\r\n\r\n# Clients\r\nconnected_clients:2\r\n\r\n\
# Memory\r\nused_memory:1000000\r\nmaxmemory:0\r\n\r\n# Stats\r\ntotal_commands_processed:50\r\n\
instantaneous_ops_per_sec:0\r\nkeyspace_hits:0\r\nkeyspace_misses:0\r\n\r\n# Replication\r\nrole:slave\r\n\
master_host:127.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\n\
slave_repl_offset:4900\r\nslave_priority:100\r\nconnected_slaves:0\r\nmaster_repl_offset:5320\r\n\r\n# Keyspace\r\n";

    #[test]
    fn a_primary_with_a_replica_and_maxmemory() {
        let s = samples(PRIMARY, 7).expect("samples");
        assert_eq!(value(&s, "redis_connected_clients"), Some(3.0));
        assert_eq!(value(&s, "redis_used_memory_bytes"), Some(1185176.0));
        assert_eq!(value(&s, "redis_maxmemory_bytes"), Some(4194304.0));
        assert_eq!(value(&s, "redis_memory_used_ratio"), Some(1185176.0 / 4194304.0));
        assert_eq!(value(&s, "redis_instantaneous_ops_per_sec"), Some(12.0));
        assert_eq!(value(&s, "redis_commands_processed_total"), Some(1021.0));
        assert_eq!(value(&s, "redis_keyspace_hits_total"), Some(40.0));
        assert_eq!(value(&s, "redis_keyspace_misses_total"), Some(2.0));
        assert_eq!(value(&s, "redis_is_primary"), Some(1.0));
        assert_eq!(value(&s, "redis_connected_replicas"), Some(1.0));
        assert_eq!(value(&s, "redis_master_link_up"), None, "primaries have no link");
        assert_eq!(value(&s, "redis_replication_offset_lag_bytes"), Some(320.0));
        let keys: Vec<_> =
            s.iter().filter(|s| s.name == "redis_keys").map(|s| (s.labels["db"].as_str(), s.value)).collect();
        assert_eq!(keys, [("db0", 100.0), ("db3", 2.0)]);
        assert!(s.iter().all(|s| s.at_unix_ms == 7 && super::super::valid_metric_name(&s.name)));
    }

    #[test]
    fn the_whole_info_of_a_real_redis_server() {
        // redis-server 7.0.15 with `maxmemory 4mb`, `requirepass` and one key.
        let s = samples(include_str!("testdata/redis-info-7.0.15-primary.txt"), 0).expect("samples");
        assert_eq!(value(&s, "redis_maxmemory_bytes"), Some(4194304.0));
        assert_eq!(value(&s, "redis_used_memory_bytes"), Some(966472.0));
        assert_eq!(value(&s, "redis_memory_used_ratio"), Some(966472.0 / 4194304.0));
        assert_eq!(value(&s, "redis_connected_clients"), Some(1.0));
        assert_eq!(value(&s, "redis_commands_processed_total"), Some(3.0));
        assert_eq!(value(&s, "redis_is_primary"), Some(1.0));
        assert_eq!(value(&s, "redis_connected_replicas"), Some(0.0));
        assert_eq!(value(&s, "redis_replication_offset_lag_bytes"), Some(0.0));
        assert_eq!(value(&s, "redis_keys"), Some(1.0));
        assert_eq!(s.len(), 12, "{s:#?}");
    }

    #[test]
    fn a_replica_with_its_link_down_and_no_maxmemory() {
        let s = samples(REPLICA, 0).expect("samples");
        assert_eq!(value(&s, "redis_is_primary"), Some(0.0));
        assert_eq!(value(&s, "redis_master_link_up"), Some(0.0));
        assert_eq!(value(&s, "redis_replication_offset_lag_bytes"), Some(420.0));
        assert_eq!(value(&s, "redis_maxmemory_bytes"), Some(0.0));
        assert_eq!(value(&s, "redis_memory_used_ratio"), None, "no ratio without a limit");
        assert_eq!(value(&s, "redis_keys"), None);
    }

    #[test]
    fn something_else_is_refused() {
        assert!(samples("HTTP/1.1 400 Bad Request\r\n", 0).unwrap_err().contains("not a Redis server"));
    }

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(command(&["AUTH", "pw"]), b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n");
    }
}
