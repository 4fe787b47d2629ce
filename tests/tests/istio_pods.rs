//! Two injected "pods" on a bridge, as in a Kubernetes node: each is a network namespace
//! whose traffic `iptables-init` redirects (REDIRECT mode, all inbound ports but the
//! excluded one, all outbound), with meshproxy running as uid 1337 on pilot-agent's own
//! bootstrap (`tracing_none_golden.json`), fed over Delta ADS and SDS by a test control
//! plane with the listeners istiod generated in the sidecar config dump
//! (`virtualOutbound`, `virtualInbound`, `0.0.0.0_<port>` HTTP and `<vip>_<port>` TCP
//! listeners, re-targeted at this mesh's service), and certificates with SPIFFE
//! identities from a test CA. A third namespace is a host outside the mesh.
//!
//! The dump's filters are kept as istiod wrote them (HCM `tracing` included: the golden
//! bootstrap has no tracer, so requests are only decided and marked in `x-request-id`),
//! except the RBAC and ext_authz filters of the dump's AuthorizationPolicies, which this
//! mesh does not have; the authorization test adds the RBAC filters istiod writes for
//! policies of this mesh's own.

use e2e::curl::{curl_in, Response};
use e2e::istio::{node_metadata, samples};
use e2e::netns::{Lan, Netns};
use e2e::upstream::{Behavior, TcpEcho, Upstream};
use e2e::xds::{ControlPlane, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};

/// The bridge's subnet: `10.88.0.0/24`.
const NET: u8 = 88;
/// The service's cluster IP.
const VIP: &str = "10.96.0.10";
const SERVICE: &str = "server.default.svc.cluster.local";
const HTTP_PORT: u16 = 8080;
const GRPC_PORT: u16 = 9090;
const TCP_PORT: u16 = 7070;
/// An inbound port excluded from capture (`-d`).
const EXCLUDED_PORT: u16 = 9999;
/// A server on the host outside the mesh.
const OUTSIDE_PORT: u16 = 7001;
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
/// Hosts on the bridge.
const CLIENT: usize = 0;
const SERVER: usize = 1;
const OUTSIDE: usize = 2;

/// How the server's inbound listener treats plaintext (PeerAuthentication mode).
#[derive(Clone, Copy, PartialEq)]
enum Mtls {
    Permissive,
    Strict,
}

/// How `iptables-init` sends inbound traffic to the sidecar
/// (`sidecar.istio.io/interceptionMode`).
#[derive(Clone, Copy, PartialEq)]
enum Interception {
    /// NAT REDIRECT: the sidecar (uid 1337) reaches the app from 127.0.0.6.
    Redirect,
    /// TPROXY: the sidecar (uid 0, gid 1337, as the injector runs it in this mode)
    /// reaches the app from the client's own address.
    Tproxy,
}

/// Where unknown destinations go (meshConfig `outboundTrafficPolicy`).
#[derive(Clone, Copy, PartialEq)]
enum Outbound {
    AllowAny,
    RegistryOnly,
}

/// The listeners of the sidecar config dump, by name.
fn dump_listeners() -> HashMap<String, Value> {
    let text = std::fs::read_to_string(
        e2e::fixtures().join("istio/config-dumps/sidecar-listeners.configdump.yaml"),
    )
    .unwrap();
    let dump = xds_client::json::parse_document(&text).unwrap();
    let mut out = HashMap::new();
    for config in dump["configs"].as_array().unwrap() {
        for l in config["dynamic_listeners"].as_array().into_iter().flatten() {
            let l = l["active_state"]["listener"].clone();
            out.insert(l["name"].as_str().unwrap().to_string(), l);
        }
    }
    out
}

/// Drops the filters this mesh has no source for (see the module doc) from a filter list.
fn without_policy_filters(filters: &mut Value) {
    let list = filters.as_array_mut().unwrap();
    list.retain(|f| {
        let name = f["name"].as_str().unwrap_or("");
        !name.ends_with(".rbac") && !name.ends_with(".ext_authz")
    });
    for f in list {
        let tc = &mut f["typed_config"];
        if tc.get("http_filters").is_some() {
            without_policy_filters(&mut tc["http_filters"]);
        }
    }
}

fn outbound_cluster(port: u16) -> String {
    format!("outbound|{port}||{SERVICE}")
}

fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

/// `virtualOutbound` as in the dump; under REGISTRY_ONLY its catch-all goes to the
/// BlackHoleCluster, as istiod generates it then.
fn virtual_outbound(dump: &HashMap<String, Value>, policy: Outbound) -> Value {
    let mut l = dump["virtualOutbound"].clone();
    if policy == Outbound::RegistryOnly {
        for chain in l["filter_chains"].as_array_mut().unwrap() {
            for f in chain["filters"].as_array_mut().unwrap() {
                if f["typed_config"]["cluster"] == "PassthroughCluster" {
                    f["typed_config"]["cluster"] = json!("BlackHoleCluster");
                    f["typed_config"]["stat_prefix"] = json!("BlackHoleCluster");
                }
            }
        }
    }
    l
}

/// The dump's `0.0.0.0_9080` HTTP listener re-targeted at `port` (its routes from RDS
/// under the port's name).
fn outbound_http_listener(dump: &HashMap<String, Value>, port: u16) -> Value {
    let name = format!("0.0.0.0_{port}");
    let mut l = dump["0.0.0.0_9080"].clone();
    l["name"] = json!(name);
    l["address"]["socket_address"]["port_value"] = json!(port);
    without_policy_filters(&mut l["filter_chains"][0]["filters"]);
    let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
    hcm["stat_prefix"] = json!(format!("outbound_{name}"));
    hcm["rds"]["route_config_name"] = json!(port.to_string());
    l
}

/// The dump's `10.96.0.1_443` TCP listener re-targeted at the service's TCP port.
fn outbound_tcp_listener(dump: &HashMap<String, Value>) -> Value {
    let mut l = dump["10.96.0.1_443"].clone();
    l["name"] = json!(format!("{VIP}_{TCP_PORT}"));
    l["address"]["socket_address"] = json!({"address": VIP, "port_value": TCP_PORT});
    let proxy = &mut l["filter_chains"][0]["filters"][1]["typed_config"];
    proxy["cluster"] = json!(outbound_cluster(TCP_PORT));
    proxy["stat_prefix"] = json!(outbound_cluster(TCP_PORT));
    l
}

/// The route configuration istiod sends for an HTTP port: the service's virtual host
/// by every name it answers to, and `allow_any` to the PassthroughCluster.
fn route_config(port: u16) -> Value {
    let mut domains = vec![];
    for host in [SERVICE, "server.default", "server", VIP] {
        domains.push(host.to_string());
        domains.push(format!("{host}:{port}"));
    }
    json!({"name": port.to_string(), "validate_clusters": false, "virtual_hosts": [
        {"name": format!("{SERVICE}:{port}"), "domains": domains, "routes": [{"name": "default",
            "match": {"prefix": "/"},
            "route": {"cluster": outbound_cluster(port), "timeout": "0s",
                "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"}},
            "decorator": {"operation": format!("{SERVICE}:{port}/*")}}]},
        {"name": "allow_any", "domains": ["*"], "routes": [{"name": "allow_any",
            "match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster", "timeout": "0s"}}]}]})
}

/// The SDS source of the dump's TLS contexts (pilot-agent's `sds-grpc`).
fn sds_source(dump: &HashMap<String, Value>) -> Value {
    let chain = dump["virtualInbound"]["filter_chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c.get("transport_socket").is_some())
        .unwrap();
    chain["transport_socket"]["typed_config"]["common_tls_context"]
        ["tls_certificate_sds_secret_configs"][0]["sds_config"]
        .clone()
}

/// An outbound cluster of the service as istiod builds it: EDS, the service in its
/// `istio` metadata, mutual TLS for endpoints labelled `tlsMode: istio` (SNI, exact SAN
/// of the server's identity, ALPN for the peer exchange), plaintext for the others.
fn outbound_service_cluster(dump: &HashMap<String, Value>, port: u16) -> Value {
    let name = outbound_cluster(port);
    let sds = sds_source(dump);
    let mut c = json!({
        "name": name, "type": "EDS", "connect_timeout": "10s", "lb_policy": "LEAST_REQUEST",
        "eds_cluster_config": {"eds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "service_name": name},
        "metadata": {"filter_metadata": {"istio": {"services": [
            {"host": SERVICE, "name": "server", "namespace": "default"}], "default_original_port": port}}},
        "transport_socket_matches": [
            {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": {
                "name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": format!("outbound_.{port}_._.{SERVICE}"),
                "common_tls_context": {
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
                    "alpn_protocols": ["istio-peer-exchange", "istio"],
                    "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": sds}],
                    "combined_validation_context": {
                        "default_validation_context": {"match_subject_alt_names": [{"exact": SERVER_ID}]},
                        "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": sds}}}}}},
            {"name": "tlsMode-disabled", "match": {}, "transport_socket": {"name": "envoy.transport_sockets.raw_buffer",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}}]
    });
    match port {
        GRPC_PORT => e2e::config::merge(&mut c, e2e::config::h2_upstream()),
        TCP_PORT => {
            c["filters"] = json!([{"name": "istio.metadata_exchange", "typed_config": {
                "@type": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
                "protocol": "istio-peer-exchange"}}])
        }
        _ => {}
    }
    c
}

/// The service's endpoints: the server pod, with its workload and `tlsMode` labels.
fn assignment(port: u16, server_ip: &str) -> Value {
    json!({"cluster_name": outbound_cluster(port), "endpoints": [{"lb_endpoints": [{
        "endpoint": {"address": {"socket_address": {"address": server_ip, "port_value": port}}},
        "metadata": {"filter_metadata": {
            "istio": {"workload": "ratings-v1;default;ratings;version-1;server-cluster"},
            "envoy.transport_socket_match": {"tlsMode": "istio"}}},
        "load_balancing_weight": 1}]}]})
}

/// An ORIGINAL_DST cluster sourcing from 127.0.0.6, as istiod builds the inbound and
/// inbound-passthrough clusters (the app sees 127.0.0.6, never its own address).
fn inbound_original_dst(name: &str, h2: bool) -> Value {
    let mut c = json!({"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "10s", "cleanup_interval": "60s",
        "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}},
        "metadata": {"filter_metadata": {"istio": {"services": [
            {"host": SERVICE, "name": "server", "namespace": "default"}]}}}});
    if h2 {
        e2e::config::merge(&mut c, e2e::config::h2_upstream());
    }
    c
}

/// `virtualInbound` as in the dump, its port-80 chains replaced by this pod's ports:
/// HTTP ports take the dump's port-80 chains (mutual TLS and plaintext), the TCP port the
/// catch-all TCP chains with its own cluster. STRICT drops every plaintext chain.
fn virtual_inbound(dump: &HashMap<String, Value>, ports: &[u16], mode: Mtls) -> Value {
    let mut l = dump["virtualInbound"].clone();
    let chains: Vec<Value> = l["filter_chains"].as_array().unwrap().clone();
    let is_port_80 = |c: &Value| c["filter_chain_match"]["destination_port"] == 80;
    let mut out: Vec<Value> = chains.iter().filter(|c| !is_port_80(c)).cloned().collect();
    for &port in ports {
        let cluster = inbound_cluster(port);
        let templates = chains.iter().filter(|c| {
            if port == TCP_PORT {
                c["name"] == "virtualInbound"
            } else {
                is_port_80(c)
            }
        });
        for t in templates {
            let mut c = t.clone();
            c["name"] = json!(format!("0.0.0.0_{port}"));
            let m = c["filter_chain_match"].as_object_mut().unwrap();
            m.remove("prefix_ranges");
            m.insert("destination_port".into(), json!(port));
            for f in c["filters"].as_array_mut().unwrap() {
                let tc = &mut f["typed_config"];
                if tc.get("cluster").is_some() {
                    tc["cluster"] = json!(cluster);
                    tc["stat_prefix"] = json!(cluster);
                }
                if let Some(rc) = tc.get_mut("route_config") {
                    rc["name"] = json!(cluster);
                    let route = &mut rc["virtual_hosts"][0]["routes"][0];
                    route["route"]["cluster"] = json!(cluster);
                    route["decorator"]["operation"] = json!(format!("{SERVICE}:{port}/*"));
                    tc["stat_prefix"] = json!(format!("inbound_0.0.0.0_{port}"));
                }
            }
            out.push(c);
        }
    }
    for c in &mut out {
        without_policy_filters(&mut c["filters"]);
    }
    if mode == Mtls::Strict {
        out.retain(|c| c["filter_chain_match"]["transport_protocol"] != "raw_buffer");
    }
    l["filter_chains"] = json!(out);
    // The HTTP inspector is not needed on ports whose protocol is declared.
    let mut rules: Vec<Value> = ports
        .iter()
        .map(|p| json!({"destination_port_range": {"start": p, "end": p + 1}}))
        .collect();
    rules.push(json!({"destination_port_range": {"start": 15006, "end": 15007}}));
    l["listener_filters"][2]["filter_disabled"] = json!({"or_match": {"rules": rules}});
    l
}

/// A capture listener as istiod writes it for a TPROXY-mode proxy: `transparent`, and
/// on `virtualInbound` the `original_src` listener filter with the TPROXY mark.
fn for_tproxy(mut listener: Value) -> Value {
    listener["transparent"] = json!(true);
    if listener["name"] == "virtualInbound" {
        listener["listener_filters"].as_array_mut().unwrap().push(json!({
            "name": "envoy.filters.listener.original_src",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_src.v3.OriginalSrc",
                "mark": 1337}}));
    }
    listener
}

/// The RBAC filters istiod adds for two AuthorizationPolicies on the server: HTTP port
/// `GET /allowed*` from the client's service account only; the TCP port has only HTTP
/// rules, so istiod denies all TCP there (an empty ALLOW policy set).
fn with_authorization(mut inbound: Value) -> Value {
    let http_rbac = json!({"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"policies": {"ns[default]-policy[server]-rule[0]": {
            "permissions": [{"and_rules": {"rules": [
                {"or_rules": {"rules": [{"header": {"name": ":method", "exact_match": "GET"}}]}},
                {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/allowed"}}}]}}]}}],
            "principals": [{"and_ids": {"ids": [{"or_ids": {"ids": [{"filter_state": {
                "key": "io.istio.peer_principal", "string_match": {"exact": CLIENT_ID}}}]}}]}}]}}},
        "shadow_rules_stat_prefix": "istio_dry_run_allow_"}});
    let tcp_rbac = json!({"name": "envoy.filters.network.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        "rules": {}, "stat_prefix": "tcp.", "shadow_rules_stat_prefix": "istio_dry_run_allow_"}});
    for chain in inbound["filter_chains"].as_array_mut().unwrap() {
        let port = chain["filter_chain_match"]["destination_port"].clone();
        let filters = chain["filters"].as_array_mut().unwrap();
        if port == HTTP_PORT {
            let hcm = &mut filters.last_mut().unwrap()["typed_config"]["http_filters"];
            hcm.as_array_mut().unwrap().insert(1, http_rbac.clone());
        } else if port == TCP_PORT {
            let at = filters.len() - 2;
            filters.insert(at, tcp_rbac.clone());
        }
    }
    inbound
}

/// The workload certificate (`default`) and the mesh root (`ROOTCA`) pilot-agent serves.
fn secrets(cp: &ControlPlane, identity: &str) {
    let certs = e2e::fixtures().join("istio-proxy/certs");
    let read = |f: &str| std::fs::read_to_string(certs.join(f)).unwrap();
    cp.set_json(
        SECRET,
        "default",
        json!({"name": "default", "tls_certificate": {
            "certificate_chain": {"inline_string": read(&format!("{identity}.cert"))},
            "private_key": {"inline_string": read(&format!("{identity}-key.cert"))}}}),
    );
    cp.set_json(
        SECRET,
        "ROOTCA",
        json!({"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_string": read("root.cert")}}}),
    );
}

/// Sets a listener under its own name.
fn set_listener(cp: &ControlPlane, listener: Value) {
    let name = listener["name"].as_str().unwrap().to_string();
    cp.set_json(LISTENER, &name, listener);
}

/// pilot-agent's bootstrap with this pod's node and both its gRPC clusters (`xds-grpc`,
/// `sds-grpc`) on the control plane's socket.
fn bootstrap(node_id: &str, metadata: Value, socket: &std::path::Path) -> String {
    let golden =
        std::fs::read_to_string(e2e::fixtures().join("istio/bootstrap/tracing_none_golden.json"))
            .unwrap();
    let mut b: Value = serde_json::from_str(&golden).unwrap();
    b["node"]["id"] = json!(node_id);
    b["node"]["metadata"] = metadata;
    for c in b["static_resources"]["clusters"].as_array_mut().unwrap() {
        if c["name"] == "xds-grpc" || c["name"] == "sds-grpc" {
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] =
                json!({"pipe": {"path": socket.display().to_string()}});
        }
    }
    b.to_string()
}

/// One injected pod's sidecar: its control plane and the directory of its files.
struct Sidecar {
    cp: ControlPlane,
    dir: std::path::PathBuf,
}

/// The apps: in the server pod (HTTP, gRPC, TCP echo, and one on the excluded port) and
/// on the outside host.
struct Apps {
    http: Upstream,
    grpc: Upstream,
    tcp: TcpEcho,
    excluded: Upstream,
    outside: Upstream,
}

/// The two pods, the outside host, their sidecars and apps.
struct Mesh {
    lan: Lan,
    sidecars: Vec<Sidecar>,
    apps: Apps,
    dump: HashMap<String, Value>,
}

/// A gRPC message frame of `n` bytes.
fn grpc_frame(n: usize) -> Vec<u8> {
    let mut m = vec![0u8];
    m.extend_from_slice(&(n as u32).to_be_bytes());
    m.extend(std::iter::repeat_n(b'x', n));
    m
}

impl Mesh {
    /// The mesh as a default install has it: PERMISSIVE, ALLOW_ANY; inbound traffic
    /// intercepted the `interception` way.
    fn start(interception: Interception) -> Option<Mesh> {
        let mut lan = Lan::create("mp-mesh", NET, 3)?;
        let server_ip = lan.ip(SERVER);
        let bin = e2e::proxy::iptables_init_bin();
        for pod in [CLIENT, SERVER] {
            let ns = &lan.hosts[pod];
            ns.sh("ip route add 10.96.0.0/16 dev eth0");
            let out = ns
                .cmd(
                    bin.to_str().unwrap(),
                    &[
                        "-p",
                        "15001",
                        "-z",
                        "15006",
                        "-u",
                        "1337",
                        "-g",
                        "1337",
                        "-m",
                        match interception {
                            Interception::Redirect => "REDIRECT",
                            Interception::Tproxy => "TPROXY",
                        },
                        "-i",
                        "*",
                        "-b",
                        "*",
                        "-d",
                        &format!("15090,15021,15020,{EXCLUDED_PORT}"),
                    ],
                )
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "iptables-init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let in_server = |addr: u16| lan.hosts[SERVER].bind(&format!("0.0.0.0:{addr}"));
        let apps = Apps {
            http: Upstream::http_on("server-app", in_server(HTTP_PORT)),
            grpc: Upstream::http_on("grpc-app", in_server(GRPC_PORT)),
            tcp: TcpEcho::start_on(in_server(TCP_PORT)),
            excluded: Upstream::http_on("excluded-app", in_server(EXCLUDED_PORT)),
            outside: Upstream::http_on(
                "outside",
                lan.hosts[OUTSIDE].bind(&format!("0.0.0.0:{OUTSIDE_PORT}")),
            ),
        };
        apps.grpc.set(Behavior {
            body: Some(
                String::from_utf8([grpc_frame(1), grpc_frame(2), grpc_frame(3)].concat()).unwrap(),
            ),
            headers: vec![("content-type".into(), "application/grpc".into())],
            trailers: vec![("grpc-status".into(), "0".into())],
            ..Default::default()
        });
        let dump = dump_listeners();
        let mut sidecars = Vec::new();
        for (pod, identity, ports) in [
            (CLIENT, "client", vec![]),
            (SERVER, "server", vec![HTTP_PORT, GRPC_PORT, TCP_PORT]),
        ] {
            let dir = e2e::scratch(identity);
            let socket = dir.join("XDS");
            let cp = ControlPlane::unix(socket.clone());
            // meshproxy runs as uid 1337: it must be able to connect.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
            secrets(&cp, identity);
            for l in [
                virtual_outbound(&dump, Outbound::AllowAny),
                outbound_http_listener(&dump, HTTP_PORT),
                outbound_http_listener(&dump, GRPC_PORT),
                outbound_tcp_listener(&dump),
                virtual_inbound(&dump, &ports, Mtls::Permissive),
            ] {
                let capture = l["name"] == "virtualOutbound" || l["name"] == "virtualInbound";
                set_listener(
                    &cp,
                    if capture && interception == Interception::Tproxy {
                        for_tproxy(l)
                    } else {
                        l
                    },
                );
            }
            for port in [HTTP_PORT, GRPC_PORT, TCP_PORT] {
                cp.set_json(
                    CLUSTER,
                    &outbound_cluster(port),
                    outbound_service_cluster(&dump, port),
                );
                cp.set_json(
                    ENDPOINT,
                    &outbound_cluster(port),
                    assignment(port, &server_ip),
                );
            }
            for &port in &ports {
                cp.set_json(
                    CLUSTER,
                    &inbound_cluster(port),
                    inbound_original_dst(&inbound_cluster(port), port == GRPC_PORT),
                );
            }
            for port in [HTTP_PORT, GRPC_PORT] {
                cp.set_json(ROUTE, &port.to_string(), route_config(port));
            }
            cp.set_json(
                CLUSTER,
                "InboundPassthroughClusterIpv4",
                inbound_original_dst("InboundPassthroughClusterIpv4", false),
            );
            cp.set_json(
                CLUSTER,
                "PassthroughCluster",
                json!({"name": "PassthroughCluster",
                "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "10s"}),
            );
            cp.set_json(
                CLUSTER,
                "BlackHoleCluster",
                json!({"name": "BlackHoleCluster",
                "type": "STATIC", "connect_timeout": "10s"}),
            );
            let metadata = node_metadata(&format!("{identity}_node_metadata.json.tmpl"));
            let node_id = format!(
                "sidecar~{}~{}.default~default.svc.cluster.local",
                lan.ip(pod),
                metadata["NAME"].as_str().unwrap()
            );
            let uid = match interception {
                Interception::Redirect => 1337,
                Interception::Tproxy => 0,
            };
            lan.hosts[pod].spawn_sidecar(&dir, &bootstrap(&node_id, metadata, &socket), uid);
            sidecars.push(Sidecar { cp, dir });
        }
        let mesh = Mesh {
            lan,
            sidecars,
            apps,
            dump,
        };
        for pod in [CLIENT, SERVER] {
            mesh.wait_ready(pod);
        }
        Some(mesh)
    }

    /// Waits until `pod`'s sidecar answers ready with every listener and secret applied.
    fn wait_ready(&self, pod: usize) {
        let sidecar = &self.sidecars[pod];
        let stderr = || std::fs::read_to_string(sidecar.dir.join("stderr")).unwrap_or_default();
        e2e::wait_until(60, "the sidecar is ready", || {
            let r = curl_in(&self.lan.hosts[pod], &[], "http://127.0.0.1:15000/ready");
            if r.status == 200 {
                return true;
            }
            assert!(!stderr().contains("panicked"), "{}", stderr());
            false
        });
        e2e::wait_until(30, "listeners acknowledged", || {
            sidecar.cp.requests_of(LISTENER).iter().any(|r| r.is_ack())
        });
        let nacks: Vec<_> = sidecar
            .cp
            .requests()
            .into_iter()
            .filter(|r| r.is_nack())
            .collect();
        assert!(nacks.is_empty(), "NACKs: {nacks:?}\n{}", stderr());
    }

    fn ns(&self, host: usize) -> &Netns {
        &self.lan.hosts[host]
    }

    /// `curl` from the app in `host` (extra args first).
    fn curl(&self, host: usize, args: &[&str], url: &str) -> Response {
        curl_in(self.ns(host), args, url)
    }

    /// The pod's metrics as Prometheus scrapes them (port 15090, outside capture).
    fn prometheus(&self, pod: usize) -> String {
        self.curl(pod, &[], "http://127.0.0.1:15090/stats/prometheus")
            .text()
    }

    /// The labels of every sample of `metric` at `pod` for which `pick` holds.
    fn labels(
        &self,
        pod: usize,
        metric: &str,
        pick: impl Fn(&HashMap<String, String>) -> bool,
    ) -> Vec<(HashMap<String, String>, f64)> {
        samples(&self.prometheus(pod), metric)
            .into_iter()
            .map(|(l, v)| (l.into_iter().collect::<HashMap<_, _>>(), v))
            .filter(|(l, _)| pick(l))
            .collect()
    }

    /// Replaces a listener of `pod` and waits until meshproxy acknowledges it.
    fn push_listener(&self, pod: usize, listener: Value) {
        let cp = &self.sidecars[pod].cp;
        let mark = cp.requests_of(LISTENER).len();
        set_listener(cp, listener);
        cp.push(LISTENER);
        e2e::wait_until(20, "the new listener acknowledged", || {
            cp.requests_of(LISTENER)[mark..].iter().any(|r| r.is_ack())
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// Sends `msg` over a TCP connection from the client app to the service's TCP port and
/// returns what came back.
fn tcp_round_trip(mesh: &Mesh, msg: &[u8]) -> Vec<u8> {
    let mut s = mesh
        .ns(CLIENT)
        .connect(&format!("{VIP}:{TCP_PORT}"))
        .expect("connect to the service");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    got
}

#[test]
fn mesh_traffic_is_intercepted_mutual_tls_and_reported_on_both_sides() {
    let Some(mesh) = Mesh::start(Interception::Redirect) else {
        return;
    };
    let url = |port: u16, path: &str| format!("http://{VIP}:{port}{path}");

    // HTTP/1.1 to the service's cluster IP.
    let r = mesh.curl(CLIENT, &[], &url(HTTP_PORT, "/h1"));
    assert_eq!((r.status, r.text().as_str()), (200, "server-app"));
    let seen = mesh.apps.http.last().unwrap();
    let xfcc = seen.header("x-forwarded-client-cert").unwrap_or("");
    assert!(
        xfcc.contains(&format!("By={SERVER_ID}")) && xfcc.contains(&format!("URI={CLIENT_ID}")),
        "the server sidecar saw the client's certificate over mutual TLS: {xfcc:?}"
    );
    assert_eq!(
        seen.peer.ip().to_string(),
        "127.0.0.6",
        "the inbound sidecar connects to the app from 127.0.0.6"
    );
    assert!(
        seen.headers
            .iter()
            .all(|(k, _)| !k.starts_with("x-envoy-peer-metadata")),
        "the exchange headers never reach the app: {:?}",
        seen.headers
    );
    assert_eq!(seen.version, "HTTP/1.1");

    // HTTP/2 from the app (h2c), HTTP/1.1 between the sidecars for this port.
    let r = mesh.curl(CLIENT, &["--http2-prior-knowledge"], &url(HTTP_PORT, "/h2"));
    assert_eq!((r.status, r.version.as_str()), (200, "2"));
    assert_eq!(mesh.apps.http.last().unwrap().path, "/h2");

    // gRPC: HTTP/2 end to end.
    let request = e2e::scratch("grpc").join("request.bin");
    std::fs::write(&request, [grpc_frame(4), grpc_frame(5)].concat()).unwrap();
    let data = format!("@{}", request.display());
    let r = mesh.curl(
        CLIENT,
        &[
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc",
            "--data-binary",
            &data,
        ],
        &url(GRPC_PORT, "/pkg.Svc/Call"),
    );
    assert_eq!(r.status, 200);
    let call = mesh.apps.grpc.last().unwrap();
    assert_eq!(
        (call.version.as_str(), call.path.as_str()),
        ("HTTP/2.0", "/pkg.Svc/Call")
    );
    assert!(call
        .header("x-forwarded-client-cert")
        .unwrap_or("")
        .contains(CLIENT_ID));

    // Raw TCP through the TCP metadata exchange.
    assert_eq!(
        tcp_round_trip(&mesh, b"ping over the mesh"),
        b"ping over the mesh"
    );
    assert!(mesh.apps.tcp.connections() >= 1);

    // What each side reports.
    e2e::wait_until(10, "the server reports the TCP connection closed", || {
        !mesh
            .labels(SERVER, "istio_tcp_connections_closed_total", |_| true)
            .is_empty()
    });
    let http = |pod: usize, protocol: &str| {
        let got = mesh.labels(pod, "istio_requests_total", |l| {
            l["request_protocol"] == protocol
        });
        assert_eq!(
            got.len(),
            1,
            "one {protocol} label set at pod {pod}: {got:?}"
        );
        got.into_iter().next().unwrap()
    };
    let (client_http, n) = http(CLIENT, "http");
    assert_eq!(n, 2.0, "HTTP/1.1 and HTTP/2 requests");
    let (server_http, n) = http(SERVER, "http");
    assert_eq!(n, 2.0);
    for (l, reporter, policy) in [
        (&client_http, "source", "unknown"),
        (&server_http, "destination", "mutual_tls"),
    ] {
        assert_eq!(l["reporter"], reporter);
        assert_eq!(l["source_workload"], "productpage-v1");
        assert_eq!(l["destination_workload"], "ratings-v1");
        assert_eq!(l["destination_service"], SERVICE);
        assert_eq!(l["source_principal"], CLIENT_ID);
        assert_eq!(l["destination_principal"], SERVER_ID);
        assert_eq!(l["response_code"], "200");
        assert_eq!(l["connection_security_policy"], policy);
    }
    for pod in [CLIENT, SERVER] {
        let (grpc, n) = http(pod, "grpc");
        assert_eq!((grpc["grpc_response_status"].as_str(), n), ("0", 1.0));
        let messages = mesh.labels(pod, "istio_response_messages_total", |_| true);
        assert_eq!(
            messages.iter().map(|(_, v)| v).sum::<f64>(),
            3.0,
            "at pod {pod}"
        );
        let tcp = mesh.labels(pod, "istio_tcp_connections_opened_total", |l| {
            l["destination_service"] == SERVICE
        });
        assert_eq!(tcp.len(), 1, "at pod {pod}: {tcp:?}");
        let (l, n) = &tcp[0];
        assert_eq!(*n, 1.0);
        assert_eq!(l["source_workload"], "productpage-v1");
        assert_eq!(l["destination_workload"], "ratings-v1");
        let policy = if pod == SERVER {
            "mutual_tls"
        } else {
            "unknown"
        };
        assert_eq!(l["connection_security_policy"], policy);
        let received = mesh.labels(pod, "istio_tcp_received_bytes_total", |l| {
            l["destination_service"] == SERVICE
        });
        assert_eq!(received[0].1, 18.0, "at pod {pod}");
    }

    // The excluded inbound port: the client's passthrough reaches the app directly.
    let r = mesh.curl(
        CLIENT,
        &[],
        &format!("http://{}:{EXCLUDED_PORT}/", mesh.lan.ip(SERVER)),
    );
    assert_eq!((r.status, r.text().as_str()), (200, "excluded-app"));
    assert!(
        r.headers
            .iter()
            .all(|(k, v)| !k.starts_with("x-envoy") && v != "istio-envoy"),
        "no sidecar answered: {:?}",
        r.headers
    );
    let seen = mesh.apps.excluded.last().unwrap();
    assert_eq!(
        seen.peer.ip().to_string(),
        mesh.lan.ip(CLIENT),
        "not intercepted in the server pod: the app sees the client pod"
    );
    assert!(seen.header("x-forwarded-client-cert").is_none());
}

#[test]
fn permissive_accepts_plaintext_strict_refuses_it() {
    let Some(mesh) = Mesh::start(Interception::Redirect) else {
        return;
    };
    let direct = format!("http://{}:{HTTP_PORT}/plain", mesh.lan.ip(SERVER));
    let r = mesh.curl(OUTSIDE, &[], &direct);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "server-app"),
        "PERMISSIVE"
    );
    let seen = mesh.apps.http.last().unwrap();
    assert_eq!(
        seen.peer.ip().to_string(),
        "127.0.0.6",
        "through the sidecar"
    );
    assert!(
        seen.header("x-forwarded-client-cert").is_none(),
        "no client certificate"
    );
    let got = mesh.labels(SERVER, "istio_requests_total", |_| true);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0["connection_security_policy"], "none");
    assert_eq!(got[0].0["source_workload"], "unknown");
    assert_eq!(got[0].0["destination_workload"], "ratings-v1");

    mesh.push_listener(
        SERVER,
        virtual_inbound(&mesh.dump, &[HTTP_PORT, GRPC_PORT, TCP_PORT], Mtls::Strict),
    );
    let before = mesh.apps.http.count();
    let r = mesh.curl(OUTSIDE, &[], &direct);
    assert_eq!(r.status, 0, "STRICT: plaintext gets no chain and is closed");
    assert_eq!(mesh.apps.http.count(), before);
    let r = mesh.curl(CLIENT, &[], &format!("http://{VIP}:{HTTP_PORT}/mtls"));
    assert_eq!(r.status, 200, "mesh traffic still flows under STRICT");
    assert_eq!(mesh.apps.http.count(), before + 1);
}

#[test]
fn authorization_policies_allow_by_peer_identity_and_deny_tcp() {
    let Some(mesh) = Mesh::start(Interception::Redirect) else {
        return;
    };
    let ports = [HTTP_PORT, GRPC_PORT, TCP_PORT];
    mesh.push_listener(
        SERVER,
        with_authorization(virtual_inbound(&mesh.dump, &ports, Mtls::Permissive)),
    );
    let url = |path: &str| format!("http://{VIP}:{HTTP_PORT}{path}");
    let r = mesh.curl(CLIENT, &[], &url("/allowed/page"));
    assert_eq!((r.status, r.text().as_str()), (200, "server-app"));
    let before = mesh.apps.http.count();
    let r = mesh.curl(CLIENT, &[], &url("/elsewhere"));
    assert_eq!((r.status, r.text().as_str()), (403, "RBAC: access denied"));
    let r = mesh.curl(CLIENT, &["-X", "POST"], &url("/allowed/page"));
    assert_eq!(r.status, 403, "the method is part of the rule");
    let direct = format!("http://{}:{HTTP_PORT}/allowed/page", mesh.lan.ip(SERVER));
    let r = mesh.curl(OUTSIDE, &[], &direct);
    assert_eq!(r.status, 403, "plaintext carries no peer identity");
    assert_eq!(
        mesh.apps.http.count(),
        before,
        "denied requests never reach the app"
    );
    let denied = mesh.labels(SERVER, "istio_requests_total", |l| {
        l["response_code"] == "403"
    });
    assert_eq!(
        denied.iter().map(|(_, n)| n).sum::<f64>(),
        3.0,
        "{denied:?}"
    );
    // TCP: the connection is closed before anything reaches the app.
    let accepted = mesh.apps.tcp.connections();
    let mut s = mesh
        .ns(CLIENT)
        .connect(&format!("{VIP}:{TCP_PORT}"))
        .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = s.write_all(b"ping");
    let mut buf = [0u8; 4];
    assert!(
        !matches!(s.read(&mut buf), Ok(n) if n > 0),
        "no echo through a denied connection"
    );
    assert_eq!(mesh.apps.tcp.connections(), accepted);
    let stats = mesh.curl(SERVER, &[], "http://127.0.0.1:15000/stats?filter=rbac");
    assert!(
        stats.text().contains("tcp.rbac.denied: 1"),
        "{}",
        stats.text()
    );
}

#[test]
fn allow_any_passes_unknown_destinations_registry_only_blackholes_them() {
    let Some(mesh) = Mesh::start(Interception::Redirect) else {
        return;
    };
    let unknown = format!("http://{}:{OUTSIDE_PORT}/", mesh.lan.ip(OUTSIDE));
    let r = mesh.curl(CLIENT, &[], &unknown);
    assert_eq!((r.status, r.text().as_str()), (200, "outside"), "ALLOW_ANY");
    assert_eq!(
        mesh.apps.outside.last().unwrap().peer.ip().to_string(),
        mesh.lan.ip(CLIENT)
    );
    let passthrough = mesh.labels(CLIENT, "istio_tcp_connections_opened_total", |l| {
        l["destination_service_name"] == "PassthroughCluster"
    });
    assert_eq!(passthrough.len(), 1, "{passthrough:?}");

    mesh.push_listener(CLIENT, virtual_outbound(&mesh.dump, Outbound::RegistryOnly));
    let before = mesh.apps.outside.count();
    let r = mesh.curl(CLIENT, &[], &unknown);
    assert_eq!(r.status, 0, "REGISTRY_ONLY: the BlackHoleCluster closes it");
    assert_eq!(mesh.apps.outside.count(), before);
    let blackholed = mesh.labels(CLIENT, "istio_tcp_connections_opened_total", |l| {
        l["destination_service_name"] == "BlackHoleCluster"
    });
    assert_eq!(blackholed.len(), 1, "{blackholed:?}");
    let r = mesh.curl(CLIENT, &[], &format!("http://{VIP}:{HTTP_PORT}/known"));
    assert_eq!(r.status, 200, "registered services still work");
}

#[test]
fn tproxy_mode_lets_the_app_see_the_client_pod_address() {
    let Some(mesh) = Mesh::start(Interception::Tproxy) else {
        return;
    };
    let client_ip = mesh.lan.ip(CLIENT);
    let url = |port: u16, path: &str| format!("http://{VIP}:{port}{path}");

    // HTTP/1.1: still mutual TLS between the sidecars, and the app sees the client pod.
    let r = mesh.curl(CLIENT, &[], &url(HTTP_PORT, "/tproxy"));
    assert_eq!((r.status, r.text().as_str()), (200, "server-app"));
    let seen = mesh.apps.http.last().unwrap();
    assert_eq!(
        seen.peer.ip().to_string(),
        client_ip,
        "original_src: the inbound sidecar connects from the client's address"
    );
    assert!(seen
        .header("x-forwarded-client-cert")
        .unwrap_or("")
        .contains(&format!("URI={CLIENT_ID}")));

    // HTTP/2 (pooled upstream connections are kept per client address).
    let r = mesh.curl(
        CLIENT,
        &[
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc",
        ],
        &url(GRPC_PORT, "/pkg.Svc/Call"),
    );
    assert_eq!(r.status, 200);
    let call = mesh.apps.grpc.last().unwrap();
    assert_eq!(
        (call.version.as_str(), call.peer.ip().to_string()),
        ("HTTP/2.0", client_ip.clone())
    );

    // Raw TCP.
    assert_eq!(tcp_round_trip(&mesh, b"tproxy"), b"tproxy");
    let peer = mesh.apps.tcp.peers().last().copied().unwrap();
    assert_eq!(peer.ip().to_string(), client_ip);

    // A client outside the mesh (PERMISSIVE plaintext) is seen with its own address too.
    let outside_ip = mesh.lan.ip(OUTSIDE);
    let direct = format!("http://{}:{HTTP_PORT}/outside", mesh.lan.ip(SERVER));
    assert_eq!(mesh.curl(OUTSIDE, &[], &direct).status, 200);
    let seen = mesh.apps.http.last().unwrap();
    assert_eq!(
        (seen.path.as_str(), seen.peer.ip().to_string()),
        ("/outside", outside_ip)
    );

    // The server sidecar reported both, as the destination.
    let got = mesh.labels(SERVER, "istio_requests_total", |l| {
        l["reporter"] == "destination" && l["request_protocol"] == "http"
    });
    let policies: std::collections::BTreeSet<_> = got
        .iter()
        .map(|(l, _)| l["connection_security_policy"].clone())
        .collect();
    assert_eq!(
        policies.into_iter().collect::<Vec<_>>(),
        ["mutual_tls", "none"],
        "{got:?}"
    );
}
