//! xDS under stress: a very large EDS response, a control plane killed in the middle of
//! a push and restarted, and clusters churning every second under load with no failed
//! request and flat memory. `XDS_CHURN_SECS` lengthens the churn (60 for the issue's
//! full minute; CI runs a few seconds).

use e2e::curl;
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::Upstream;
use e2e::xds::resources::*;
use e2e::xds::{ControlPlane, CLUSTER, ENDPOINT, ROUTE};
use serde_json::json;

fn serving(cp: &ControlPlane, upstream_port: u16) -> u16 {
    let port = e2e::free_port();
    seed_http_service(cp, port, upstream_port);
    port
}

#[test]
fn ten_thousand_endpoints_in_one_eds_response() {
    let upstream = Upstream::http("u");
    let cp = ControlPlane::tcp();
    let port = serving(&cp, upstream.port);
    let proxy = Proxy::start(Kind::Meshproxy, &ads_bootstrap(&cp, true, vec![]), &[]);
    cp.set_json(
        ENDPOINT,
        "backend",
        assignment("backend", &vec![upstream.port; 10_000]),
    );
    cp.push(ENDPOINT);
    let answers = cp.wait_answers(ENDPOINT, 2, 60);
    assert!(answers[1].is_ack(), "{:?}", answers[1]);
    assert_eq!(curl::get(port, "/", &[]).status, 200);
    assert_eq!(proxy.stat("cluster.backend.membership_total"), Some(10_000));
    assert!(proxy.stat("control_plane.largest_message_bytes").unwrap() > 100_000);
}

#[test]
fn control_plane_killed_mid_push_then_restarted() {
    let upstream = Upstream::http("u");
    let mut cp = ControlPlane::unix(e2e::scratch("chaos").join("XDS"));
    let port = serving(&cp, upstream.port);
    let proxy = Proxy::start(Kind::Meshproxy, &ads_bootstrap(&cp, false, vec![]), &[]);
    assert_eq!(curl::get(port, "/", &[]).header("x-route"), Some("v1"));
    // A push goes out and the control plane dies at once.
    cp.set_json(ROUTE, "routes", route_config("routes", "backend", "v2"));
    cp.push(ROUTE);
    cp.stop();
    e2e::wait_until(10, "the proxy to notice", || {
        proxy.stat("control_plane.connected_state") == Some(0)
    });
    // The last good config keeps serving (v1 or, if the push made it, v2).
    let r = curl::get(port, "/", &[]);
    assert_eq!(r.status, 200);
    // Back with newer config: the proxy reconnects and catches up.
    cp.set_json(ROUTE, "routes", route_config("routes", "backend", "v3"));
    cp.restart();
    e2e::wait_until(30, "v3 to serve after the restart", || {
        curl::get(port, "/", &[]).header("x-route") == Some("v3")
    });
    assert_eq!(proxy.stat("control_plane.connected_state"), Some(1));
    assert!(
        proxy
            .stat("cluster_manager.cds.update_failure")
            .unwrap_or(0)
            >= 1
    );
}

#[test]
fn thousand_clusters_churning_under_load_fail_no_request_and_keep_memory_flat() {
    let secs: u64 = std::env::var("XDS_CHURN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let upstream = Upstream::http("u");
    let cp = ControlPlane::tcp();
    let port = serving(&cp, upstream.port);
    let set_all = |generation: u32| {
        for i in 0..1000 {
            let name = format!("churn-{i}");
            let mut c = eds_cluster(&name);
            // A new connect timeout each generation: every cluster changes.
            c["connect_timeout"] = json!(format!("{}s", 1 + generation % 5));
            cp.set_json(CLUSTER, &name, c);
            cp.set_json(ENDPOINT, &name, assignment(&name, &[upstream.port]));
        }
    };
    set_all(0);
    let proxy = Proxy::start(Kind::Meshproxy, &ads_bootstrap(&cp, true, vec![]), &[]);
    assert_eq!(proxy.stat("cluster_manager.active_clusters"), Some(1002));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut failed = Vec::new();
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = curl::get(port, "/", &[]);
                sent += 1;
                if r.status != 200 {
                    failed.push(r.status);
                }
            }
            (sent, failed)
        })
    };
    let mut rss = Vec::new();
    for generation in 1..=secs as u32 {
        let started = std::time::Instant::now();
        set_all(generation);
        let before = cp.answers(CLUSTER).len();
        cp.push(CLUSTER);
        cp.push(ENDPOINT);
        cp.wait_answers(CLUSTER, before + 1, 30);
        rss.push(proxy.rss_kb());
        std::thread::sleep(std::time::Duration::from_secs(1).saturating_sub(started.elapsed()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = load.join().unwrap();
    assert!(sent > 10, "the load ran: {sent}");
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {failed:?}",
        failed.len()
    );
    assert!(cp.answers(CLUSTER).iter().all(|a| a.is_ack()));
    // Memory: after the first updates settle, it does not keep growing.
    let settled = rss[rss.len() / 2];
    let last = *rss.last().unwrap();
    assert!(
        last <= settled + settled / 5 + 4096,
        "RSS grew from {settled} kB to {last} kB over {secs} generations: {rss:?}"
    );
}
