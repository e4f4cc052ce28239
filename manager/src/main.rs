//! `drover-manager`: parses flags, binds the listeners and runs the manager
//! until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use drover_manager::config::ManagerCommand;
use drover_manager::{Manager, ManagerConfig};
use tokio::net::TcpListener;

/// jemalloc instead of glibc's malloc: with thousands of sessions allocating
/// from several threads, glibc's per-thread arenas fragment and keep freed
/// memory (RSS grew by hundreds of MiB over a 10,000-host config push), and
/// allocation was a tenth of the CPU profile. See docs/benchmarks.md.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's own statistics, refreshed (`epoch`) at each read; exported at
/// `/metrics` as `drover_heap_*`.
#[cfg(feature = "jemalloc")]
fn jemalloc_stats() -> Option<drover_manager::telemetry::HeapStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let read = |v: Result<usize, tikv_jemalloc_ctl::Error>| v.ok().map(|b| b as u64);
    Some(drover_manager::telemetry::HeapStats {
        allocated: read(stats::allocated::read())?,
        active: read(stats::active::read())?,
        resident: read(stats::resident::read())?,
        metadata: read(stats::metadata::read())?,
        retained: read(stats::retained::read())?,
    })
}

fn main() -> std::process::ExitCode {
    #[cfg(feature = "jemalloc")]
    drover_manager::telemetry::set_heap_stats(jemalloc_stats);
    let config = ManagerConfig::parse();
    init_tracing(&config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Each agent holds a connection open: allow as many as the hard limit does.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "could not raise the open-files limit");
    }
}

async fn run(config: ManagerConfig) -> anyhow::Result<()> {
    if let Some(ManagerCommand::RotateSecretsKey) = config.command {
        return rotate_secrets_key(&config).await;
    }
    drover_proto::tls::provider();
    raise_fd_limit();
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("listen on --http-addr {} (is another manager running?)", config.http_addr))?;
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("listen on --grpc-addr {} (is another manager running?)", config.grpc_addr))?;
    let data_dir = config.data_dir.clone();
    let mut handle = Manager::start(config, http, grpc).await?;
    let password_file = data_dir.join("initial-admin-password");
    eprintln!("Drover manager {} is running", env!("CARGO_PKG_VERSION"));
    let scheme = if handle.state.https { "https" } else { "http" };
    eprintln!("  console and REST API: {scheme}://{}/", handle.http_addr);
    eprintln!("  agents connect to:    https://{} (CA {})", handle.grpc_addr, handle.state.pki.ca_fingerprint());
    if password_file.exists() {
        eprintln!("  sign in as admin with the password in {}", password_file.display());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = handle.wait() => anyhow::bail!("a listener stopped unexpectedly; see the log above"),
    }
    handle.shutdown().await;
    Ok(())
}

/// `drover-manager rotate-secrets-key`: a new secrets key, every stored
/// secret re-encrypted with it in one transaction (docs/secrets.md).
async fn rotate_secrets_key(config: &ManagerConfig) -> anyhow::Result<()> {
    let url = config.database_url();
    let store = drover_manager::store::Store::open(&url).await.context("open the database")?;
    let user_types = config.data_dir.join("service-types");
    let extra = if user_types.is_dir() { vec![user_types] } else { Vec::new() };
    let catalog = drover_service_types::descriptor::Catalog::load(true, &extra).context("load service types")?;
    let (path, create) = config.secrets_key_path();
    let done = drover_manager::secrets::rotate(&store, &catalog, &path, create).await;
    store.close().await;
    let r = done?;
    println!("secrets key rotated: {} -> {} ({})", r.old_key_id, r.new_key_id, path.display());
    println!(
        "revisions: {} read, {} rewritten; secrets: {} re-encrypted, {} stored in clear now encrypted",
        r.revisions, r.rewritten, r.reencrypted, r.encrypted_plain
    );
    Ok(())
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    /// The test binary runs on jemalloc too (the global allocator above).
    #[test]
    fn the_allocators_statistics_count_a_live_allocation() {
        const BLOCK: u64 = 64 << 20;
        let before = super::jemalloc_stats().expect("jemalloc statistics");
        let block = std::hint::black_box(vec![1u8; BLOCK as usize]);
        let during = super::jemalloc_stats().unwrap();
        assert!(during.allocated >= before.allocated + BLOCK - (1 << 20), "{before:?} then {during:?}");
        assert!(during.resident >= during.active && during.active >= during.allocated, "{during:?}");
        assert!(during.metadata > 0, "{during:?}");
        drop(block);
        let after = super::jemalloc_stats().unwrap();
        assert!(after.allocated + BLOCK - (1 << 20) <= during.allocated, "{during:?} then {after:?}");
    }
}
