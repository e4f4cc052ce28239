//! `drover-loadgen parcels`: parcel distribution throughput. Builds a parcel of
//! incompressible data with the parcel library, uploads it over REST, then lets
//! N enrolled identities stream it with `FetchParcel` over their own mTLS
//! channels (as agents do), verifying size and sha256 of what arrived without
//! keeping it, while the manager's RSS and CPU are sampled from /proc.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drover_parcels::{ParcelMeta, Scripts, build_archive};
use drover_proto::tls::{self, ClientIdentity, ManagerAddr, ServerTrust};
use drover_proto::v1;
use hdrhistogram::Histogram;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{Cli, SavedIdentity, proc_sample};

const MIB: f64 = 1024.0 * 1024.0;

/// What `drover-loadgen parcels` was asked to do.
pub struct ParcelsOptions {
    pub size_mb: u64,
    pub concurrency: usize,
    pub manager_pid: Option<u32>,
    pub sample_interval: Duration,
}

/// A parcel built for the run, kept in a temporary directory.
struct BenchParcel {
    path: PathBuf,
    file_name: String,
    sha256: String,
    size: u64,
}

/// A download's outcome: bytes received, their sha256, how long it took.
struct Download {
    bytes: u64,
    sha256: String,
    elapsed: Duration,
}

pub async fn run(cli: &Cli, ids: &[SavedIdentity], opts: ParcelsOptions) -> anyhow::Result<()> {
    let password = cli.password.clone().context("--password (or DROVER_PASSWORD) is needed to upload the parcel")?;
    let addr: ManagerAddr = cli.manager.parse()?;
    let tmp = tempfile::tempdir().context("create a temporary directory")?;

    let t = Instant::now();
    let size_mb = opts.size_mb;
    let dir = tmp.path().to_owned();
    let parcel = tokio::task::spawn_blocking(move || build_parcel(&dir, size_mb)).await??;
    println!("parcels.file                {}", parcel.file_name);
    println!("parcels.size_mib            {:.1}", parcel.size as f64 / MIB);
    println!("parcels.build_seconds       {:.1}", t.elapsed().as_secs_f64());

    // Upload, with the manager sampled while it receives.
    let sampler = Sampler::start(opts.manager_pid, opts.sample_interval)?;
    let t = Instant::now();
    upload(cli, &password, &parcel).await?;
    let secs = t.elapsed().as_secs_f64();
    let upload_samples = sampler.stop().await?;
    println!("upload.seconds              {secs:.2}");
    println!("upload.mib_per_s            {:.1}", parcel.size as f64 / MIB / secs);
    upload_samples.print("upload.manager");

    // N downloads at once (bounded by --concurrency), one channel each.
    let channels = ids
        .iter()
        .map(|id| {
            let identity = ClientIdentity { cert_pem: id.cert_pem.clone(), key_pem: id.key_pem.clone() };
            let config = tls::client_config(&ServerTrust::CaPem(id.ca_pem.clone()), Some(&identity))?;
            Ok(tls::channel(&addr, config, Duration::from_secs(10))?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let received = Arc::new(AtomicU64::new(0));
    let sampler = Sampler::start(opts.manager_pid, opts.sample_interval)?;
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(channels.len());
    for channel in channels.iter().cloned() {
        let (sem, received, file_name) = (sem.clone(), received.clone(), parcel.file_name.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            fetch(channel, &file_name, 0, &received).await
        }));
    }
    let mut times = Histogram::<u64>::new(3)?;
    let mut failures = 0;
    for task in tasks {
        match task.await? {
            Ok(d) if d.bytes == parcel.size && d.sha256 == parcel.sha256 => {
                times.record(d.elapsed.as_micros() as u64)?;
            }
            Ok(d) => {
                failures += 1;
                eprintln!(
                    "download mismatch: {} bytes, sha256 {} (expected {} bytes, {})",
                    d.bytes, d.sha256, parcel.size, parcel.sha256
                );
            }
            Err(e) => {
                failures += 1;
                if failures <= 5 {
                    eprintln!("download failed: {e:#}");
                }
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let serving = sampler.stop().await?;
    let total = received.load(Ordering::Relaxed);
    println!("fetch.downloads             {}", ids.len());
    println!("fetch.verified              {}", times.len());
    println!("fetch.failures              {failures}");
    println!("fetch.concurrency           {}", opts.concurrency.min(ids.len()));
    println!("fetch.seconds               {secs:.2}");
    println!("fetch.total_mib             {:.0}", total as f64 / MIB);
    println!("fetch.aggregate_mib_per_s   {:.1}", total as f64 / MIB / secs);
    if !times.is_empty() {
        let s = |q: f64| times.value_at_quantile(q) as f64 / 1e6;
        println!("fetch.per_download_p50_s    {:.2}", s(0.5));
        println!("fetch.per_download_p99_s    {:.2}", s(0.99));
        println!("fetch.per_download_max_s    {:.2}", times.max() as f64 / 1e6);
        println!("fetch.per_download_mib_per_s_p50 {:.1}", parcel.size as f64 / MIB / s(0.5));
    }
    serving.print("fetch.manager");

    // One download resumed from the middle, checked against the file's second half.
    let offset = parcel.size / 2;
    let path = parcel.path.clone();
    let expected_tail = tokio::task::spawn_blocking(move || sha256_from(&path, offset)).await??;
    let d = fetch(channels[0].clone(), &parcel.file_name, offset, &AtomicU64::new(0)).await?;
    let ok = d.bytes == parcel.size - offset && d.sha256 == expected_tail;
    println!(
        "fetch.resumed               offset {offset}: {} bytes in {:.2} s, {}",
        d.bytes,
        d.elapsed.as_secs_f64(),
        if ok { "verified" } else { "MISMATCH" }
    );
    if failures > 0 || !ok {
        bail!("{failures} downloads failed verification{}", if ok { "" } else { "; the resumed download too" });
    }
    Ok(())
}

/// Builds `loadgen-<size>m.<time>-bench.parcel` holding `size_mb` MiB of random bytes.
fn build_parcel(dir: &Path, size_mb: u64) -> anyhow::Result<BenchParcel> {
    let staging = dir.join("staging");
    std::fs::create_dir_all(staging.join("meta"))?;
    std::fs::create_dir_all(staging.join("data"))?;
    std::fs::write(staging.join("meta/loadgen_env.sh"), "export LOADGEN_HOME=$PARCELS_ROOT/$PARCEL_DIRNAME\n")?;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(staging.join("data/random.bin"))?);
        let mut rng = rand::thread_rng();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..size_mb {
            rng.fill_bytes(&mut buf);
            f.write_all(&buf)?;
        }
        f.flush()?;
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let meta = ParcelMeta {
        schema_version: 1,
        name: "loadgen".into(),
        version: format!("{size_mb}m.{stamp}"),
        distro: "bench".into(),
        depends: vec![],
        conflicts: vec![],
        provides: vec![],
        components: vec![],
        scripts: Scripts { defines: "loadgen_env.sh".into() },
    };
    let built = build_archive(&staging, &meta, &dir.join("out")).context("build the parcel")?;
    std::fs::remove_dir_all(&staging)?;
    Ok(BenchParcel { file_name: built.id.file_name(), path: built.path, sha256: built.sha256, size: built.size })
}

/// `POST /api/v1/parcels`, the file streamed from disk.
async fn upload(cli: &Cli, password: &str, p: &BenchParcel) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(&p.path).await.with_context(|| format!("open {}", p.path.display()))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024));
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/parcels", cli.http))
        .basic_auth(&cli.user, Some(password))
        .query(&[("file_name", p.file_name.as_str()), ("sha256", p.sha256.as_str())])
        .header("content-type", "application/octet-stream")
        .header("content-length", p.size)
        .body(body)
        .send()
        .await
        .context("upload the parcel")?;
    let status = resp.status();
    if !status.is_success() {
        bail!("upload of {}: HTTP {status}: {}", p.file_name, resp.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Streams `file_name` from `offset` to its end, hashing and counting, never keeping it.
async fn fetch(
    channel: tonic::transport::Channel,
    file_name: &str,
    offset: u64,
    received: &AtomicU64,
) -> anyhow::Result<Download> {
    let t = Instant::now();
    let mut client = v1::agent_service_client::AgentServiceClient::new(channel);
    let request = v1::FetchParcelRequest { file_name: file_name.to_owned(), offset };
    let mut stream = client.fetch_parcel(request).await.context("FetchParcel")?.into_inner();
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    let mut total = None;
    while let Some(chunk) = stream.message().await.context("FetchParcel stream")? {
        if *total.get_or_insert(chunk.total_size) != chunk.total_size {
            bail!("total_size changed during the download of {file_name}");
        }
        hash.update(&chunk.data);
        bytes += chunk.data.len() as u64;
        received.fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
    }
    if let Some(total) = total
        && offset + bytes != total
    {
        bail!("{file_name}: received {bytes} bytes from offset {offset}, the manager says {total} in all");
    }
    Ok(Download { bytes, sha256: hex::encode(hash.finalize()), elapsed: t.elapsed() })
}

fn sha256_from(path: &Path, offset: u64) -> anyhow::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hash.finalize()));
        }
        hash.update(&buf[..n]);
    }
}

/// Samples the manager's /proc every interval while a phase runs.
pub(super) struct Sampler {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<Samples>>>,
}

/// What a [`Sampler`] saw.
#[derive(Default)]
pub(super) struct Samples {
    count: usize,
    rss_max: u64,
    rss_sum: u64,
    rss_first: u64,
    hwm_last: u64,
    cpu_seconds: f64,
    wall_seconds: f64,
}

impl Sampler {
    pub(super) fn start(pid: Option<u32>, interval: Duration) -> anyhow::Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let Some(pid) = pid else { return Ok(Sampler { stop, task: None }) };
        let first = proc_sample(pid).with_context(|| format!("read /proc/{pid}"))?;
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let t = Instant::now();
            let mut s = Samples { rss_first: first.1, ..Samples::default() };
            let mut tick = tokio::time::interval(interval);
            let mut last: (u64, u64, u64);
            loop {
                tick.tick().await;
                last = proc_sample(pid)?;
                s.count += 1;
                s.rss_max = s.rss_max.max(last.1);
                s.rss_sum += last.1;
                if flag.load(Ordering::Relaxed) {
                    break;
                }
            }
            // /proc reports CPU time in USER_HZ ticks, 100 per second on Linux.
            s.cpu_seconds = (last.0 - first.0) as f64 / 100.0;
            s.wall_seconds = t.elapsed().as_secs_f64();
            s.hwm_last = last.2;
            Ok(s)
        });
        Ok(Sampler { stop, task: Some(task) })
    }

    pub(super) async fn stop(self) -> anyhow::Result<Samples> {
        self.stop.store(true, Ordering::Relaxed);
        match self.task {
            Some(task) => task.await?,
            None => Ok(Samples::default()),
        }
    }
}

impl Samples {
    pub(super) fn print(&self, prefix: &str) {
        if self.count == 0 {
            return;
        }
        let mib = |b: u64| b as f64 / MIB;
        println!("{prefix}.rss_before_mib      {:.1}", mib(self.rss_first));
        println!("{prefix}.rss_mean_mib        {:.1}", mib(self.rss_sum / self.count as u64));
        println!("{prefix}.rss_max_mib         {:.1}  ({} samples)", mib(self.rss_max), self.count);
        println!("{prefix}.vm_hwm_mib          {:.1}", mib(self.hwm_last));
        println!("{prefix}.cpu_cores           {:.2}", self.cpu_seconds / self.wall_seconds.max(1e-3));
    }
}
