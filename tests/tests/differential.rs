//! Differential tests: the same bootstrap runs in Envoy 1.40 and in meshproxy; for each
//! scenario a real client (curl) sends the same request to both, and we compare what the
//! client observed (status, body, the headers that matter) and what the upstream received
//! (method, path, body, protocol, the headers that matter).

use e2e::config::{self, cluster, hcm, listener};
use e2e::curl::{self, Response};
use e2e::free_port;
use e2e::proxy::{envoy_bin, Kind, Proxy};
use e2e::upstream::{Behavior, Recorded, Upstream};
use serde_json::{json, Value};

struct Scenario {
    name: &'static str,
    /// Virtual host (its domains are replaced by the scenario's own domain).
    vhost: Value,
    /// Path to request.
    path: &'static str,
    /// Extra curl arguments.
    args: Vec<&'static str>,
    /// Which listener: 0 = default HCM, 1 = use_remote_address + custom server name.
    listener: usize,
    /// Response headers compared by value.
    resp_headers: &'static [&'static str],
    /// Response headers compared by presence.
    resp_present: &'static [&'static str],
    /// Upstream request headers compared by value.
    up_headers: &'static [&'static str],
    /// Upstream request headers compared by presence.
    up_present: &'static [&'static str],
}

fn s(name: &'static str, vhost: Value, path: &'static str) -> Scenario {
    Scenario {
        name,
        vhost,
        path,
        args: vec![],
        listener: 0,
        resp_headers: &[],
        resp_present: &[],
        up_headers: &[],
        up_present: &[],
    }
}

fn route(m: Value, action: Value) -> Value {
    let mut r = json!({"match": m});
    config::merge(&mut r, action);
    r
}

fn vh(routes: Vec<Value>) -> Value {
    json!({"name": "vh", "domains": ["x"], "routes": routes})
}

fn to(cluster: &str) -> Value {
    json!({"route": {"cluster": cluster}})
}

fn scenarios() -> Vec<Scenario> {
    let mut v = vec![
        s(
            "prefix",
            vh(vec![
                route(json!({"prefix": "/a"}), to("c1")),
                route(json!({"prefix": "/"}), to("c2")),
            ]),
            "/abc",
        ),
        s(
            "exact_path",
            vh(vec![
                route(json!({"path": "/exact"}), to("c2")),
                route(json!({"prefix": "/"}), to("c1")),
            ]),
            "/exact",
        ),
        s(
            "exact_path_miss",
            vh(vec![
                route(json!({"path": "/exact"}), to("c2")),
                route(json!({"prefix": "/"}), to("c1")),
            ]),
            "/exact/more",
        ),
        s(
            "safe_regex",
            vh(vec![
                route(json!({"safe_regex": {"regex": "/item/[0-9]+"}}), to("c2")),
                route(json!({"prefix": "/"}), to("c1")),
            ]),
            "/item/42",
        ),
        s(
            "path_separated_prefix",
            vh(vec![
                route(json!({"path_separated_prefix": "/api"}), to("c2")),
                route(json!({"prefix": "/"}), to("c1")),
            ]),
            "/api/v1?q=1",
        ),
        s(
            "case_insensitive",
            vh(vec![
                route(
                    json!({"prefix": "/CaSe", "case_sensitive": false}),
                    to("c2"),
                ),
                route(json!({"prefix": "/"}), to("c1")),
            ]),
            "/case/x",
        ),
        s(
            "query_parameter",
            vh(vec![
                route(
                    json!({"prefix": "/", "query_parameters": [{"name": "v", "string_match": {"exact": "2"}}]}),
                    to("c2"),
                ),
                route(json!({"prefix": "/"}), to("c1")),
            ]),
            "/q?a=1&v=2",
        ),
        s(
            "no_route",
            vh(vec![route(json!({"prefix": "/only"}), to("c1"))]),
            "/other",
        ),
        s(
            "direct_response_body",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"direct_response": {"status": 200, "body": {"inline_string": "hello direct"}}}),
            )]),
            "/",
        ),
        s(
            "direct_response_503",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"direct_response": {"status": 503}}),
            )]),
            "/",
        ),
        s(
            "https_redirect",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"redirect": {"https_redirect": true}}),
            )]),
            "/p?q=1",
        ),
        s(
            "host_port_path_redirect",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"redirect": {"host_redirect": "new.example", "port_redirect": 8443, "path_redirect": "/moved", "response_code": "FOUND"}}),
            )]),
            "/old?k=v",
        ),
        s(
            "prefix_redirect_strip_query",
            vh(vec![route(
                json!({"prefix": "/old/"}),
                json!({"redirect": {"prefix_rewrite": "/new/", "strip_query": true, "response_code": "TEMPORARY_REDIRECT"}}),
            )]),
            "/old/x?drop=1",
        ),
        s(
            "regex_redirect",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"redirect": {"regex_rewrite": {"pattern": {"regex": "^/v([0-9])/(.*)$"}, "substitution": "/version\\1/\\2"}, "response_code": "PERMANENT_REDIRECT"}}),
            )]),
            "/v2/things",
        ),
        s(
            "prefix_rewrite",
            vh(vec![route(
                json!({"prefix": "/svc/"}),
                json!({"route": {"cluster": "c1", "prefix_rewrite": "/"}}),
            )]),
            "/svc/inner?x=1",
        ),
        s(
            "regex_rewrite",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"route": {"cluster": "c1", "regex_rewrite": {"pattern": {"regex": "/users/([0-9]+)/profile"}, "substitution": "/profile?id=\\1"}}}),
            )]),
            "/users/7/profile",
        ),
        s(
            "host_rewrite_literal",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"route": {"cluster": "c1", "host_rewrite_literal": "rewritten.internal"}}),
            )]),
            "/",
        ),
        s(
            "cluster_header",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"route": {"cluster_header": "x-target"}}),
            )]),
            "/",
        ),
        s(
            "weighted_all_to_one",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"route": {"weighted_clusters": {"clusters": [{"name": "c1", "weight": 0}, {"name": "c2", "weight": 100}]}}}),
            )]),
            "/w",
        ),
        s(
            "route_timeout",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"route": {"cluster": "slow", "timeout": "0.2s"}}),
            )]),
            "/",
        ),
        s(
            "timeout_disabled_header",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"route": {"cluster": "c1", "timeout": "0s"}}),
            )]),
            "/",
        ),
        s(
            "connect_failure",
            vh(vec![route(json!({"prefix": "/"}), to("dead"))]),
            "/",
        ),
        s(
            "no_healthy_upstream",
            vh(vec![route(json!({"prefix": "/"}), to("empty"))]),
            "/",
        ),
        s(
            "unknown_cluster_header",
            vh(vec![route(
                json!({"prefix": "/"}),
                json!({"route": {"cluster_header": "x-missing"}}),
            )]),
            "/",
        ),
        s(
            "upstream_status_passthrough",
            vh(vec![route(json!({"prefix": "/"}), to("err"))]),
            "/",
        ),
        s(
            "h2_upstream",
            vh(vec![route(json!({"prefix": "/"}), to("c1h2"))]),
            "/h2",
        ),
        s(
            "post_body",
            vh(vec![route(json!({"prefix": "/"}), to("c1"))]),
            "/post",
        ),
        s(
            "head_request",
            vh(vec![route(json!({"prefix": "/"}), to("c1"))]),
            "/head",
        ),
        s(
            "header_present_invert",
            vh(vec![
                route(
                    json!({"prefix": "/", "headers": [{"name": "x-skip", "present_match": true, "invert_match": true}]}),
                    to("c2"),
                ),
                route(json!({"prefix": "/"}), to("c1")),
            ]),
            "/",
        ),
        s(
            "header_string_match",
            vh(vec![
                route(
                    json!({"prefix": "/", "headers": [{"name": "x-canary", "string_match": {"prefix": "ye"}}]}),
                    to("c2"),
                ),
                route(json!({"prefix": "/"}), to("c1")),
            ]),
            "/",
        ),
        s(
            "h2c_downstream",
            vh(vec![route(json!({"prefix": "/"}), to("c1"))]),
            "/h2c",
        ),
        s(
            "remote_address_xff",
            vh(vec![route(json!({"prefix": "/"}), to("c1"))]),
            "/xff",
        ),
        s(
            "expect_100_continue",
            vh(vec![route(json!({"prefix": "/"}), to("c1"))]),
            "/continue",
        ),
    ];
    let headers_vh = json!({"name": "vh", "domains": ["x"],
        "request_headers_to_add": [{"header": {"key": "x-vh", "value": "vh"}}, {"header": {"key": "x-level", "value": "vh"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        "response_headers_to_add": [{"header": {"key": "x-resp-vh", "value": "1"}}],
        "response_headers_to_remove": ["x-upstream"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c1"},
            "request_headers_to_add": [{"header": {"key": "x-level", "value": "route"}}, {"header": {"key": "x-client", "value": "route"}, "append_action": "ADD_IF_ABSENT"},
                {"header": {"key": "x-dup", "value": "r"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}],
            "request_headers_to_remove": ["x-remove-me"],
            "response_headers_to_add": [{"header": {"key": "x-resp-route", "value": "2"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}]});
    v.push(s("header_mutations", headers_vh, "/h"));
    let wildcard = json!({"name": "wild", "domains": ["*.x"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c2"}}]});
    v.push(s("wildcard_domain", wildcard, "/"));
    for sc in &mut v {
        match sc.name {
            "cluster_header" => sc.args = vec!["-H", "x-target: c2"],
            "post_body" => {
                sc.args = vec![
                    "-X",
                    "POST",
                    "--data-binary",
                    "payload-123",
                    "-H",
                    "content-type: text/plain",
                ]
            }
            "head_request" => sc.args = vec!["-I"],
            "header_present_invert" => sc.args = vec!["-H", "x-other: 1"],
            "header_string_match" => sc.args = vec!["-H", "x-canary: yes"],
            "h2c_downstream" => sc.args = vec!["--http2-prior-knowledge"],
            "header_mutations" => {
                sc.args = vec![
                    "-H",
                    "x-remove-me: 1",
                    "-H",
                    "x-client: mine",
                    "-H",
                    "x-dup: c",
                    "-H",
                    "x-level: client",
                ]
            }
            "remote_address_xff" => {
                sc.args = vec!["-H", "x-forwarded-for: 203.0.113.7"];
                sc.listener = 1;
            }
            "expect_100_continue" => {
                sc.args = vec![
                    "-X",
                    "POST",
                    "-H",
                    "expect: 100-continue",
                    "--data-binary",
                    "continued-body",
                ]
            }
            _ => {}
        }
        sc.resp_headers = &[
            "location",
            "content-type",
            "content-length",
            "x-upstream",
            "x-resp-vh",
            "x-resp-route",
            "server",
        ];
        sc.resp_present = &["x-envoy-upstream-service-time", "date"];
        sc.up_headers = &[
            "host",
            "x-envoy-original-path",
            "x-envoy-expected-rq-timeout-ms",
            "x-forwarded-proto",
            "x-vh",
            "x-level",
            "x-client",
            "x-dup",
            "x-remove-me",
            "x-forwarded-for",
            "x-envoy-internal",
            "x-envoy-external-address",
            "content-length",
            "expect",
            "x-forwarded-host",
        ];
        sc.up_present = &["x-request-id"];
    }
    v
}

struct Setup {
    upstreams: Vec<Upstream>,
    cfg: String,
    ports: (u16, u16),
}

fn setup(listen: (u16, u16), scenarios: &[Scenario]) -> Setup {
    let u1 = Upstream::http("u1");
    let u2 = Upstream::http("u2");
    let slow = Upstream::http("slow");
    slow.set(Behavior {
        delay_ms: 1500,
        ..Default::default()
    });
    let err = Upstream::http("err");
    err.set(Behavior {
        status: 500,
        body: Some("boom".into()),
        headers: vec![("x-custom".into(), "e".into())],
        ..Default::default()
    });
    let dead = free_port();
    let hosts0: Vec<Value> = scenarios
        .iter()
        .enumerate()
        .filter(|(_, s)| s.listener == 0)
        .map(|(i, s)| with_domain(&s.vhost, i))
        .collect();
    let hosts1: Vec<Value> = scenarios
        .iter()
        .enumerate()
        .filter(|(_, s)| s.listener == 1)
        .map(|(i, s)| with_domain(&s.vhost, i))
        .collect();
    let l0 = listener(
        "l0",
        listen.0,
        hcm(Value::Array(hosts0), json!({})),
        json!({}),
    );
    let l1 = listener(
        "l1",
        listen.1,
        hcm(
            Value::Array(hosts1),
            json!({"use_remote_address": true, "server_name": "custom-server", "stat_prefix": "l1"}),
        ),
        json!({}),
    );
    let clusters = vec![
        cluster("c1", &[u1.port], json!({})),
        cluster("c2", &[u2.port], json!({})),
        cluster("slow", &[slow.port], json!({})),
        cluster("err", &[err.port], json!({})),
        cluster("dead", &[dead], json!({})),
        cluster("empty", &[], json!({})),
        cluster("c1h2", &[u1.port], config::h2_upstream()),
    ];
    Setup {
        cfg: config::bootstrap(vec![l0, l1], clusters),
        upstreams: vec![u1, u2, slow, err],
        ports: listen,
    }
}

fn with_domain(vhost: &Value, i: usize) -> Value {
    let mut v = vhost.clone();
    let domain = format!("s{i}.test");
    let domains: Vec<Value> = v["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| json!(d.as_str().unwrap().replace('x', &domain)))
        .collect();
    v["domains"] = json!(domains);
    v["name"] = json!(format!("{}-{i}", v["name"].as_str().unwrap()));
    v
}

fn run(sc: &Scenario, i: usize, port: u16, ups: &[Upstream]) -> (Response, Option<Recorded>) {
    let before: Vec<usize> = ups.iter().map(Upstream::count).collect();
    let host = if sc.name == "wildcard_domain" {
        format!("host: a.s{i}.test")
    } else {
        format!("host: s{i}.test")
    };
    let mut args: Vec<&str> = vec!["-H", &host];
    args.extend(sc.args.iter());
    let mut resp = curl::get(port, sc.path, &args);
    if sc.args.contains(&"-I") {
        // curl -I writes the header block (with its date) as the output: compare headers only.
        resp.body.clear();
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    let rec = ups
        .iter()
        .zip(before)
        .find_map(|(u, b)| (u.count() > b).then(|| u.requests()[b].clone()));
    (resp, rec)
}

fn normalize_upstream_header(name: &str, value: &str, port: u16) -> String {
    match name {
        // The downstream port differs between the two proxies.
        "host" | "x-forwarded-host" => value.replace(&port.to_string(), "PORT"),
        _ => value.to_string(),
    }
}

#[test]
fn envoy_and_meshproxy_agree() {
    if envoy_bin().is_none() {
        return;
    }
    let scenarios = scenarios();
    assert!(scenarios.len() >= 30, "at least 30 scenarios");
    let env_ports = (free_port(), free_port());
    let mesh_ports = (free_port(), free_port());
    let env_setup = setup(env_ports, &scenarios);
    let mesh_setup_cfg = setup(mesh_ports, &scenarios);
    // Both proxies share the same upstreams: point meshproxy's config at env_setup's.
    let mesh_cfg = retarget(&mesh_setup_cfg, &env_setup);
    let envoy = Proxy::start(Kind::Envoy, &env_setup.cfg, &[]);
    let mesh = Proxy::start(Kind::Meshproxy, &mesh_cfg, &[]);
    let mut failures = Vec::new();
    for (i, sc) in scenarios.iter().enumerate() {
        let pick = |p: (u16, u16)| if sc.listener == 0 { p.0 } else { p.1 };
        let (er, eu) = run(sc, i, pick(env_setup.ports), &env_setup.upstreams);
        let (mr, mu) = run(sc, i, pick(mesh_ports), &env_setup.upstreams);
        let mut diffs = Vec::new();
        if er.status != mr.status {
            diffs.push(format!(
                "status envoy={} meshproxy={}",
                er.status, mr.status
            ));
        }
        if er.body != mr.body {
            diffs.push(format!(
                "body envoy={:?} meshproxy={:?}",
                er.text(),
                mr.text()
            ));
        }
        for h in sc.resp_headers {
            if er.header(h) != mr.header(h) {
                diffs.push(format!(
                    "response {h}: envoy={:?} meshproxy={:?}",
                    er.header(h),
                    mr.header(h)
                ));
            }
        }
        for h in sc.resp_present {
            if er.header(h).is_some() != mr.header(h).is_some() {
                diffs.push(format!(
                    "response {h} presence: envoy={:?} meshproxy={:?}",
                    er.header(h),
                    mr.header(h)
                ));
            }
        }
        match (&eu, &mu) {
            (None, None) => {}
            (Some(e), Some(m)) => {
                for (what, a, b) in [
                    ("method", &e.method, &m.method),
                    ("path", &e.path, &m.path),
                    ("version", &e.version, &m.version),
                ] {
                    if a != b {
                        diffs.push(format!("upstream {what}: envoy={a} meshproxy={b}"));
                    }
                }
                if e.body != m.body {
                    diffs.push("upstream body differs".into());
                }
                for h in sc.up_headers {
                    let ev = e
                        .header(h)
                        .map(|v| normalize_upstream_header(h, v, pick(env_setup.ports)));
                    let mv = m
                        .header(h)
                        .map(|v| normalize_upstream_header(h, v, pick(mesh_ports)));
                    if ev != mv {
                        diffs.push(format!("upstream {h}: envoy={ev:?} meshproxy={mv:?}"));
                    }
                }
                for h in sc.up_present {
                    if e.header(h).is_some() != m.header(h).is_some() {
                        diffs.push(format!("upstream {h} presence differs"));
                    }
                }
            }
            (e, m) => diffs.push(format!(
                "upstream reached: envoy={} meshproxy={}",
                e.is_some(),
                m.is_some()
            )),
        }
        if !diffs.is_empty() {
            failures.push(format!("{}:\n    {}", sc.name, diffs.join("\n    ")));
        }
    }
    drop((envoy, mesh));
    assert!(
        failures.is_empty(),
        "{} of {} scenarios differ:\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n")
    );
}

/// meshproxy's config with the same upstream ports as Envoy's.
fn retarget(mesh: &Setup, env: &Setup) -> String {
    let mut cfg = mesh.cfg.clone();
    for (m, e) in mesh.upstreams.iter().zip(env.upstreams.iter()) {
        cfg = cfg.replace(
            &format!("\"port_value\":{}", m.port),
            &format!("\"port_value\":{}", e.port),
        );
    }
    // The dead port must be the same too (closed either way): keep meshproxy's own.
    cfg
}
