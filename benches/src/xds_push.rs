//! The xDS push scenario: both proxies start on the same ADS bootstrap against the test
//! control plane (Delta over a unix socket), then one push brings N EDS clusters with two
//! endpoints each. Measured: the time from the push until every cluster is active
//! (`cluster_manager.active_clusters`, polled every 5 ms), and the RSS added by it.

use crate::proxies::{self, Binaries, Kind};
use crate::report::{Row, Samples};
use e2e::xds::resources::{ads_bootstrap, assignment, eds_cluster};
use e2e::xds::{ControlPlane, CLUSTER};
use std::time::{Duration, Instant};

/// One push of `clusters` clusters to `kind`: (seconds to apply, bytes of RSS added).
fn push_once(kind: Kind, bins: &Binaries, clusters: usize) -> Result<(f64, f64), String> {
    let dir = crate::bench_dir()?;
    let cp = ControlPlane::unix(dir.join(format!("xds-{}.sock", kind.name())));
    let admin = proxies::free_port();
    let path = dir.join(format!("{}-xds.json", kind.name()));
    let bootstrap = ads_bootstrap(&cp, true, vec![]).replace("{ADMIN}", &admin.to_string());
    std::fs::write(&path, bootstrap).map_err(|e| e.to_string())?;
    let running = proxies::start(kind, bins, &path, admin, 1, "0")?;
    let statics = proxies::stat(admin, "cluster_manager.active_clusters").unwrap_or(0);
    std::thread::sleep(Duration::from_millis(300));
    let before = running.rss();
    for i in 0..clusters {
        let name = format!("outbound|8080||svc-{i}.ns.svc.cluster.local");
        cp.set_json(CLUSTER, &name, eds_cluster(&name));
        let ports = [10_000 + (i % 50_000) as u16, 10_001 + (i % 50_000) as u16];
        cp.set_json(e2e::xds::ENDPOINT, &name, assignment(&name, &ports));
    }
    let started = Instant::now();
    cp.push(CLUSTER);
    let want = statics + clusters as i64;
    let deadline = started + Duration::from_secs(300);
    while proxies::stat(admin, "cluster_manager.active_clusters") != Some(want) {
        if Instant::now() > deadline {
            return Err(format!(
                "{}: {clusters} clusters not active in 300 s",
                kind.name()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let added = running.rss().saturating_sub(before) as f64;
    Ok((elapsed, added))
}

/// Runs the scenario for `clusters` clusters, `runs` times per proxy, in alternation.
pub fn run(bins: &Binaries, clusters: usize, runs: usize) -> Result<Vec<Row>, String> {
    let (mut time_e, mut time_m, mut mem_e, mut mem_m) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for _ in 0..runs {
        for kind in [Kind::Envoy, Kind::Meshproxy] {
            let (t, mem) = push_once(kind, bins, clusters)?;
            let (ts, ms) = match kind {
                Kind::Envoy => (&mut time_e, &mut mem_e),
                Kind::Meshproxy => (&mut time_m, &mut mem_m),
            };
            ts.0.push(t * 1000.0);
            ms.0.push(mem / 1e6);
        }
    }
    let scenario = format!(
        "xDS push, {clusters} EDS clusters, {} endpoints",
        clusters * 2
    );
    Ok(vec![
        crate::row(&scenario, "time to apply", "ms", (None, time_e, time_m)),
        crate::row(&scenario, "RSS added", "MB", (None, mem_e, mem_m)),
    ])
}
