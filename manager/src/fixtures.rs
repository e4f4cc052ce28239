//! Hosts enrolled without an agent, for tests and benchmarks that need an
//! inventory: a single-use token is stored and spent exactly as an agent's
//! enrollment would spend it, then the host is registered live. Nothing in
//! the manager itself calls these.

use crate::AppState;
use crate::auth::sha256_hex;
use crate::model::{Host, HostFacts, HostKind, Labels, now_millis};
use crate::store::{EnrollmentTokenRecord, NewHost};

/// Facts of a plain host: `hostname` at `address`, a container with 2 CPUs
/// and 1 GiB, Debian 12.
pub fn facts(hostname: &str, address: &str) -> HostFacts {
    HostFacts {
        hostname: hostname.into(),
        addresses: vec![address.into()],
        kind: HostKind::Container,
        kind_evidence: "fixture".into(),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.1.0".into(),
        arch: "x86_64".into(),
        cpu_cores: 2,
        memory_bytes: 1 << 30,
        disks: vec![],
        fqdn: String::new(),
        container_id: String::new(),
        machine_cpu_cores: 0,
        machine_memory_bytes: 0,
        capacity_evidence: String::new(),
    }
}

/// Enrolls host `id` with `facts` and `labels` through the store and
/// registers it live (healthy until `host_lost_after` passes without a
/// heartbeat).
pub async fn enroll(state: &AppState, id: &str, facts: HostFacts, labels: Labels) -> anyhow::Result<Host> {
    let now = now_millis();
    let token = format!("fixture-{id}");
    state
        .store
        .insert_enrollment_token(&EnrollmentTokenRecord {
            id: token.clone(),
            secret_hash: sha256_hex("fixture"),
            labels: Labels::new(),
            max_uses: 1,
            uses: 0,
            created_by: "admin".into(),
            created_at: now,
            expires_at: now + 3_600_000,
            revoked_at: None,
        })
        .await?;
    let host = NewHost { id: id.into(), facts, agent_version: "0".into(), labels, cert_serial: format!("s-{id}") };
    let host = state.store.enroll_host(&token, &sha256_hex("fixture"), now, &host).await?;
    state.registry.add_enrolled(&host);
    Ok(host)
}
