//! Mesh access logging as istiod turns it on (`meshConfig.accessLogFile`), side by side
//! with Envoy 1.40: Istio's default text format and its JSON format on the connection
//! manager and the TCP proxy, and the listener-level log with the `NR` response-flag
//! filter, from `tests/fixtures/istio-access-logs.json` (written field for field as
//! istiod's generator writes them). The same bootstrap and traffic go to both proxies and
//! the lines must be equal, timestamps, durations and ephemeral ports aside. Also side by
//! side: the same listeners over ADS, network RBAC denials, listener logs without a
//! filter, further operators, nested JSON and `omit_empty_values`, the cluster's
//! observability name, and bad formats and filters (rejected by both).

use e2e::config::{bootstrap, cluster, merge};
use e2e::proxy::{Kind, Proxy};
use e2e::upstream::{TcpEcho, Upstream};
use e2e::{free_port, scratch};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;

/// istiod's access log objects.
fn fixture() -> Value {
    let path = e2e::workspace().join("tests/fixtures/istio-access-logs.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture JSON")
}

/// istiod's file access log in `encoding` ("text" or "json") writing to `path`; `older`
/// adds the formatter extensions istiod lists for proxies before 1.26; `listener` adds
/// the `NR` filter of the listener-level log.
fn istio_log(encoding: &str, path: &Path, older: bool, listener: bool) -> Value {
    let f = fixture();
    let mut log = f[encoding].clone();
    log["typed_config"]["path"] = json!(path.display().to_string());
    if older {
        merge(
            &mut log["typed_config"]["log_format"],
            f["proxies_before_1_26"].clone(),
        );
    }
    if listener {
        log["filter"] = f["listener_filter"].clone();
    }
    log
}

struct Ports {
    http: u16,
    tcp: u16,
    no_match: u16,
}

/// A sidecar-like bootstrap: an HTTP listener (a route to the app, one to a refused
/// port, no route for the rest), a TCP proxy listener, and a listener whose only chain
/// wants an SNI, each with istiod's logs.
fn istio_bootstrap(
    encoding: &str,
    older: bool,
    dir: &Path,
    ports: &Ports,
    up: (u16, u16, u16),
) -> String {
    let log = |name: &str| istio_log(encoding, &dir.join(name), older, false);
    let listener_log = |name: &str| istio_log(encoding, &dir.join(name), older, true);
    let routes = json!({"name": "8080", "virtual_hosts": [{"name": "app.default.svc.cluster.local:8080",
        "domains": ["*"], "routes": [
            {"name": "ok", "match": {"prefix": "/ok"}, "route": {"cluster": "outbound|8080||app.default.svc.cluster.local"}},
            {"name": "refused", "match": {"prefix": "/bad"}, "route": {"cluster": "outbound|9090||down.default.svc.cluster.local"}}]}]});
    let hcm = json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "outbound_0.0.0.0_8080", "route_config": routes,
        "http_filters": e2e::config::router(), "access_log": [log("http.log")]}});
    let tcp = |cluster: &str, file: &str| {
        json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": cluster, "cluster": cluster, "access_log": [log(file)]}})
    };
    let address =
        |port: u16| json!({"socket_address": {"address": "127.0.0.1", "port_value": port}});
    let listeners = vec![
        json!({"name": "http", "address": address(ports.http), "filter_chains": [{"filters": [hcm]}],
            "access_log": [listener_log("listener-http.log")]}),
        json!({"name": "tcp", "address": address(ports.tcp),
            "filter_chains": [{"filters": [tcp("outbound|3306||db.default.svc.cluster.local", "tcp.log")]}],
            "access_log": [listener_log("listener-tcp.log")]}),
        json!({"name": "sni", "address": address(ports.no_match),
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
            "filter_chains": [{"filter_chain_match": {"server_names": ["db.example.com"]},
                "filters": [tcp("outbound|3306||db.default.svc.cluster.local", "sni.log")]}],
            "access_log": [listener_log("listener-sni.log")]}),
    ];
    bootstrap(
        listeners,
        vec![
            cluster(
                "outbound|8080||app.default.svc.cluster.local",
                &[up.0],
                json!({}),
            ),
            cluster(
                "outbound|9090||down.default.svc.cluster.local",
                &[up.1],
                json!({}),
            ),
            cluster(
                "outbound|3306||db.default.svc.cluster.local",
                &[up.2],
                json!({}),
            ),
        ],
    )
}

/// Four requests on one downstream connection (so the second reuses the pooled upstream
/// connection): 200 from the app, again, 404 `NR`, 503 `UF` from the refused port.
fn http_traffic(port: u16) -> String {
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let mut args: Vec<String> = vec![];
    for (i, path) in ["/ok", "/ok", "/nope", "/bad"].iter().enumerate() {
        if i > 0 {
            args.push("--next".into());
        }
        args.extend(
            [
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} ",
                "-A",
                "istio-e2e/1",
                "-H",
            ]
            .map(String::from),
        );
        args.push(format!("x-request-id: r{i}"));
        args.push(url(path));
    }
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A connection to 127.0.0.1:`port` whose reads give up after 10 s.
fn connect(port: u16) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s
}

/// A TCP proxy connection: 4 bytes each way, then closed by the client.
fn tcp_traffic(port: u16) {
    let mut s = connect(port);
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = s.read_to_end(&mut vec![]);
}

/// A plaintext connection to the listener whose only chain wants an SNI: no chain
/// matches, the proxy closes it.
fn no_match_traffic(port: u16) {
    let mut s = connect(port);
    let _ = s.write_all(b"hello");
    let _ = s.read_to_end(&mut vec![]);
}

/// A log file's lines with what differs between runs masked: timestamps, durations, the
/// upstream service time, the listener ports (by name) and ephemeral ports (numbered by
/// first appearance, so a reused connection still shows as the same one).
fn masked(file: &Path, ports: &Ports, json: bool) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let addr = regex::Regex::new(r"127\.0\.0\.1:(\d+)").unwrap();
    let mut ephemeral: Vec<String> = vec![];
    text.lines()
        .map(|line| {
            let line = addr.replace_all(line, |c: &regex::Captures| {
                let port = &c[1];
                let known = [
                    (ports.http, "HTTP"),
                    (ports.tcp, "TCP"),
                    (ports.no_match, "SNI"),
                ];
                if let Some((_, name)) = known.iter().find(|(p, _)| p.to_string() == port) {
                    return format!("127.0.0.1:{{{name}}}");
                }
                let n = match ephemeral.iter().position(|e| e == port) {
                    Some(n) => n,
                    None => {
                        ephemeral.push(port.to_string());
                        ephemeral.len() - 1
                    }
                };
                format!("127.0.0.1:{{E{n}}}")
            });
            if json {
                let mut v: Value = serde_json::from_str(&line).expect("a JSON line");
                v["start_time"] = json!("T");
                v["duration"] = json!("D");
                if !v["upstream_service_time"].is_null() {
                    v["upstream_service_time"] = json!("S");
                }
                // Key order as written, then the masked object.
                let keys = regex::Regex::new(r#""([a-z_]+)":"#).unwrap();
                let order: Vec<_> = keys
                    .captures_iter(&line)
                    .map(|c| c[1].to_string())
                    .collect();
                format!("{} {v}", order.join(","))
            } else {
                let time = regex::Regex::new(r"^\[[^\]]+\]").unwrap();
                let durations = regex::Regex::new(r#"" (\d+) (\d+) \d+ (\d+|-) ""#).unwrap();
                let line = time.replace(&line, "[T]");
                durations
                    .replace(&line, |c: &regex::Captures| {
                        let service = if &c[3] == "-" { "-" } else { "S" };
                        format!("\" {} {} D {service} \"", &c[1], &c[2])
                    })
                    .into_owned()
            }
        })
        .collect()
}

/// Runs the traffic against `kind` and returns the masked lines of every log file.
fn scenario(
    kind: Kind,
    encoding: &str,
    older: bool,
    up: (u16, u16, u16),
) -> Vec<(String, Vec<String>)> {
    let dir = scratch("istio-alog");
    let ports = Ports {
        http: free_port(),
        tcp: free_port(),
        no_match: free_port(),
    };
    let _proxy = Proxy::start(
        kind,
        &istio_bootstrap(encoding, older, &dir, &ports, up),
        &["--file-flush-interval-msec", "50"],
    );
    assert_eq!(http_traffic(ports.http), "200 200 404 503");
    tcp_traffic(ports.tcp);
    no_match_traffic(ports.no_match);
    let lines = |f: &str| std::fs::read_to_string(dir.join(f)).map_or(0, |t| t.lines().count());
    e2e::wait_until(15, "access log lines", || {
        lines("http.log") >= 4 && lines("tcp.log") >= 1 && lines("listener-sni.log") >= 1
    });
    [
        "http.log",
        "tcp.log",
        "sni.log",
        "listener-http.log",
        "listener-tcp.log",
        "listener-sni.log",
    ]
    .iter()
    .map(|f| {
        (
            f.to_string(),
            masked(&dir.join(f), &ports, encoding == "json"),
        )
    })
    .collect()
}

fn agree_on(encoding: &str, older: bool) {
    let app = Upstream::http("app");
    let refused = free_port();
    let db = TcpEcho::start();
    let up = (app.port, refused, db.port);
    let Some(logs) = e2e::proxy::same_in_both(|kind| scenario(kind, encoding, older, up)) else {
        return;
    };
    // What both logged, as Envoy logs it.
    let get = |f: &str| {
        logs.iter()
            .find(|(n, _)| n == f)
            .map(|(_, l)| l.clone())
            .unwrap()
    };
    let http = get("http.log");
    assert_eq!(http.len(), 4, "{http:#?}");
    assert!(http[3].contains("upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}"), "{}", http[3]);
    assert!(http[2].contains("route_not_found"), "{}", http[2]);
    assert_eq!(get("tcp.log").len(), 1);
    assert_eq!(get("listener-sni.log").len(), 1);
    assert!(get("listener-sni.log")[0].contains("filter_chain_not_found"));
    assert!(get("listener-http.log").is_empty() && get("listener-tcp.log").is_empty());
    assert!(get("sni.log").is_empty());
}

#[test]
fn istio_text_access_logs_equal_envoys() {
    agree_on("text", true);
}

#[test]
fn istio_json_access_logs_equal_envoys() {
    agree_on("json", false);
}

/// `--mode validate` on a bootstrap with one HCM access log `log`: (exit code, stderr).
fn validate(kind: Kind, log: Value) -> (i32, String) {
    let dir = scratch("alog-bad");
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]);
    let config = bootstrap(
        vec![e2e::config::listener(
            "l",
            free_port(),
            e2e::config::hcm(vh, json!({"access_log": [log]})),
            json!({}),
        )],
        vec![],
    )
    .replace("{ADMIN}", "0");
    let path = dir.join("b.json");
    std::fs::write(&path, config).unwrap();
    let bin = match kind {
        Kind::Meshproxy => e2e::proxy::meshproxy_bin(),
        Kind::Envoy => e2e::proxy::envoy_bin().expect("envoy"),
    };
    let out = std::process::Command::new(bin)
        .args(["--mode", "validate", "-c", path.to_str().unwrap()])
        .args(["--disable-hot-restart", "-l", "error"])
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn bad_formats_and_filters_are_rejected_naming_the_field() {
    let text = |format: &str| {
        json!({"name": "f", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": "/dev/null", "log_format": {"text_format_source": {"inline_string": format}}}})
    };
    let filtered = |filter: Value| {
        let mut log = text("%RESPONSE_CODE%\n");
        log["filter"] = filter;
        log
    };
    let cases = [
        (text("%REQ(:PATH%\n"), "log_format.text_format_source"),
        (text("%NOT_AN_OPERATOR%\n"), "log_format.text_format_source"),
        // Only with the `envoy.formatter.req_without_query` extension listed.
        (
            text("%REQ_WITHOUT_QUERY(:PATH)%\n"),
            "log_format.text_format_source",
        ),
        (
            filtered(json!({"response_flag_filter": {"flags": ["NOPE"]}})),
            "filter.response_flag_filter.flags[0]",
        ),
        (
            filtered(json!({"and_filter": {"filters": [{"not_health_check_filter": {}}]}})),
            "filter.and_filter.filters",
        ),
        (
            filtered(json!({"grpc_status_filter": {"statuses": [17]}})),
            "filter.grpc_status_filter.statuses[0]",
        ),
    ];
    for (log, field) in cases {
        let (code, err) = validate(Kind::Meshproxy, log.clone());
        assert_eq!(code, 1, "must be rejected: {log}");
        assert!(err.contains(field), "{field} not named in: {err}");
        assert!(!err.contains("panicked"), "{err}");
        if e2e::proxy::envoy_bin().is_some() {
            let (code, err) = validate(Kind::Envoy, log.clone());
            assert_ne!(code, 0, "Envoy accepts {log}: {err}");
        }
    }
    // What istiod writes loads in both.
    for encoding in ["text", "json"] {
        let log = istio_log(encoding, Path::new("/dev/null"), true, true);
        assert_eq!(validate(Kind::Meshproxy, log.clone()).0, 0, "{log}");
        if e2e::proxy::envoy_bin().is_some() {
            assert_eq!(validate(Kind::Envoy, log.clone()).0, 0, "{log}");
        }
    }
}

#[test]
fn network_rbac_denial_shows_in_the_tcp_proxy_and_listener_logs() {
    // An AuthorizationPolicy DENY on a TCP service: istiod's network RBAC before the TCP
    // proxy. Envoy's proxy (and the listener-level log) record the connection with the
    // matched policy as its termination details.
    let db = TcpEcho::start();
    let dir = scratch("rbac-alog");
    let format = |file: &str| {
        json!({"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": dir.join(file).display().to_string(),
            "log_format": {"text_format_source": {"inline_string":
                "%RESPONSE_FLAGS% %CONNECTION_TERMINATION_DETAILS% %UPSTREAM_CLUSTER_RAW% %DOWNSTREAM_LOCAL_ADDRESS%\n"}}}})
    };
    let got = e2e::proxy::agree_with_envoy(
        |port| {
            let rbac = json!({"name": "envoy.filters.network.rbac", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                "stat_prefix": "tcp.", "rules": {"action": "DENY", "policies": {
                    "ns[default]-policy[deny-all]-rule[0]": {"permissions": [{"any": true}], "principals": [{"any": true}]}}}}});
            let tcp = json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "db", "cluster": "db", "access_log": [format(&format!("{port}-tcp.log"))]}});
            bootstrap(
                vec![
                    json!({"name": "db", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [{"filters": [rbac, tcp]}],
                    "access_log": [format(&format!("{port}-listener.log"))]}),
                ],
                vec![cluster("db", &[db.port], json!({}))],
            )
        },
        |_, port| {
            let mut s = connect(port);
            let _ = s.write_all(b"hi");
            let _ = s.read_to_end(&mut vec![]);
            let read = |f: &str| std::fs::read_to_string(dir.join(format!("{port}-{f}.log")));
            e2e::wait_until(10, "access logs", || {
                read("tcp").is_ok_and(|l| !l.is_empty())
                    && read("listener").is_ok_and(|l| !l.is_empty())
            });
            let mask = |l: String| l.replace(&port.to_string(), "{PORT}");
            (mask(read("tcp").unwrap()), mask(read("listener").unwrap()))
        },
    );
    if let Some((tcp, listener)) = got {
        let want = "- rbac_access_denied_matched_policy[ns[default]-policy[deny-all]-rule[0]] db 127.0.0.1:{PORT}\n";
        assert_eq!((tcp.as_str(), listener.as_str()), (want, want));
    }
}

#[test]
fn further_operators_equal_envoys() {
    // Operators Telemetry API formats use beyond istiod's defaults, on HTTP (a query, a
    // refused upstream, gRPC requests answered by the app and by no route) and TCP.
    let app = Upstream::http("app");
    let db = TcpEcho::start();
    let refused = free_port();
    let format = "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)% %METADATA(DYNAMIC:envoy.filters.http.rbac:shadow_engine_result)% %DYNAMIC_METADATA(istio.mixer)% %FILTER_STATE(upstream_peer:PLAIN)% %ENVIRONMENT(MESHPROXY_ALOG_TEST)% %ENVIRONMENT(MESHPROXY_ALOG_UNSET)% %UPSTREAM_REMOTE_ADDRESS% %UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_REMOTE_PORT% %DOWNSTREAM_REMOTE_PORT% %DOWNSTREAM_LOCAL_PORT% %GRPC_STATUS% %GRPC_STATUS(SNAKE_STRING)% %GRPC_STATUS_NUMBER% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %UNIQUE_ID% %UPSTREAM_CLUSTER_RAW% %CONNECTION_TERMINATION_DETAILS% %UPSTREAM_PROTOCOL%\n";
    let logs = e2e::proxy::same_in_both(|kind| {
        let dir = scratch("alog-ops");
        let (http, tcp) = (free_port(), free_port());
        let log = |file: &str| {
            json!({"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": dir.join(file).display().to_string(),
                "log_format": {"text_format_source": {"inline_string": format}, "formatters": [
                    {"name": "envoy.formatter.req_without_query", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"}}]}}})
        };
        let routes = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/ok"}, "route": {"cluster": "app"}},
            {"match": {"prefix": "/bad"}, "route": {"cluster": "refused"}}]}]);
        let tcp_proxy = json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "db", "cluster": "db", "access_log": [log("tcp.log")]});
        // Envoy's JSON formats nest objects and lists and keep constants as they are (no
        // fractions here: Envoy's YAML loading turns `2.5` into a string).
        let nested = json!({"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": dir.join("nested.json").display().to_string(),
            "log_format": {"json_format": {"a": "%RESPONSE_CODE%-code", "b": true, "lst": ["%REQ(:METHOD)%", 1],
                "nul": null, "num": 7, "z": {"code": "%RESPONSE_CODE%", "inner": {"m": "%REQ(:METHOD)%", "flags": "%RESPONSE_FLAGS%"}}}}}});
        // `omit_empty_values`: nothing for a missing value in text, no key in JSON.
        let omitting = |file: &str, format: Value| {
            let mut format = format;
            format["omit_empty_values"] = json!(true);
            json!({"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": dir.join(file).display().to_string(), "log_format": format}})
        };
        let omit_text = omitting(
            "omit.log",
            json!({"text_format_source": {"inline_string":
            "[%REQ(X-NOPE)%] [%RESPONSE_FLAGS%] [%REQ(X-EMPTY)%] [%BYTES_RECEIVED%] [%ROUTE_NAME%]\n"}}),
        );
        let omit_json = omitting(
            "omit.json",
            json!({"json_format": {"a": "%REQ(X-NOPE)%", "b": "%RESPONSE_FLAGS%",
            "c": "%REQ(X-EMPTY)%", "d": "x%REQ(X-NOPE)%", "e": "%BYTES_RECEIVED%", "f": {"g": "%REQ(X-NOPE)%"}}}),
        );
        let config = bootstrap(
            vec![
                e2e::config::listener(
                    "http",
                    http,
                    e2e::config::hcm(
                        routes,
                        json!({"access_log": [log("http.log"), nested, omit_text, omit_json]}),
                    ),
                    json!({}),
                ),
                e2e::config::listener("tcp", tcp, tcp_proxy, json!({})),
            ],
            vec![
                cluster("app", &[app.port], json!({})),
                cluster("refused", &[refused], json!({})),
                cluster("db", &[db.port], json!({})),
            ],
        );
        let _proxy = Proxy::start_with_env(
            kind,
            &config,
            &["--file-flush-interval-msec", "50"],
            &[("MESHPROXY_ALOG_TEST", "from-env")],
        );
        let grpc = ["-H", "content-type: application/grpc"];
        for (path, args) in [
            ("/ok?q=1", &["-H", "x-empty;"][..]),
            ("/bad", &[][..]),
            ("/ok", &grpc[..]),
            ("/nope", &grpc[..]),
        ] {
            e2e::curl::get(http, path, args);
        }
        tcp_traffic(tcp);
        let lines = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        e2e::wait_until(15, "access log lines", || {
            lines("http.log").lines().count() >= 4
                && lines("tcp.log").lines().count() >= 1
                && lines("nested.json").lines().count() >= 4
                && lines("omit.log").lines().count() >= 4
                && lines("omit.json").lines().count() >= 4
        });
        let ports = Ports {
            http,
            tcp,
            no_match: 0,
        };
        let uuid = regex::Regex::new(
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\b",
        )
        .unwrap();
        // Ephemeral ports also appear bare (`%..._PORT%`): masked by their addresses' names.
        [
            "http.log",
            "tcp.log",
            "nested.json",
            "omit.log",
            "omit.json",
        ]
        .iter()
        .flat_map(|f| masked(&dir.join(f), &ports, false))
        .map(|l| uuid.replace_all(&l, "UUID").into_owned())
        .map(|l| {
            let (http, tcp) = (http.to_string(), tcp.to_string());
            l.split(' ')
                .map(|w| match w {
                    w if w == http => "{HTTP}".to_string(),
                    w if w == tcp => "{TCP}".to_string(),
                    w if w.len() >= 4
                        && w.parse::<u16>()
                            .is_ok_and(|p| p > 1024 && p != app.port && p != db.port) =>
                    {
                        "{PORT}".to_string()
                    }
                    w => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
    });
    if let Some(lines) = logs {
        assert_eq!(lines.len(), 17, "{lines:#?}");
        assert_eq!(lines[9], "[] [-] [] [0] []");
        assert_eq!(lines[13], r#"{"b":"-","c":"","d":"x","e":0}"#);
        assert_eq!(
            lines[5],
            r#"{"a":"200-code","b":true,"lst":["GET",1],"nul":null,"num":7,"z":{"code":200,"inner":{"flags":"-","m":"GET"}}}"#
        );
        assert!(
            lines[0].starts_with("/ok - - - from-env - 127.0.0.1:"),
            "{}",
            lines[0]
        );
        // A gRPC request answered 200 without `grpc-status` is Unknown; a 404 maps to
        // Unimplemented.
        assert!(lines[2].contains(" Unknown UNKNOWN 2 1 "), "{}", lines[2]);
        assert!(
            lines[3].contains(" Unimplemented UNIMPLEMENTED 12 0 "),
            "{}",
            lines[3]
        );
    }
}

#[test]
fn listener_logs_without_a_filter_record_every_connection_as_envoy() {
    // A listener-level log with no filter writes a line per connection: an HTTP
    // connection's protocol and wire bytes, a TCP proxy connection's proxy record.
    let app = Upstream::http("app");
    let db = TcpEcho::start();
    let format = "%PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %ROUTE_NAME%|%BYTES_SENT%\n";
    let logs = e2e::proxy::same_in_both(|kind| {
        let dir = scratch("alog-listener");
        let (http, tcp) = (free_port(), free_port());
        let log = |file: &str| {
            json!([{"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": dir.join(file).display().to_string(),
                "log_format": {"text_format_source": {"inline_string": format}}}}])
        };
        let routes = json!([{"name": "v", "domains": ["*"], "routes": [
            {"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]);
        let tcp_proxy = json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "db", "cluster": "db"});
        let mut listeners = vec![
            e2e::config::listener("http", http, e2e::config::hcm(routes, json!({})), json!({})),
            e2e::config::listener("tcp", tcp, tcp_proxy, json!({})),
        ];
        listeners[0]["access_log"] = log("http.log");
        listeners[1]["access_log"] = log("tcp.log");
        let config = bootstrap(
            listeners,
            vec![
                cluster("app", &[app.port], json!({})),
                cluster("db", &[db.port], json!({})),
            ],
        );
        let _proxy = Proxy::start(kind, &config, &["--file-flush-interval-msec", "50"]);
        assert_eq!(e2e::curl::get(http, "/", &["-A", "e2e/1"]).status, 200);
        tcp_traffic(tcp);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        e2e::wait_until(15, "listener log lines", || {
            !read("http.log").is_empty() && !read("tcp.log").is_empty()
        });
        // The response's wire size depends on each proxy's own headers: only whether
        // bytes were sent is compared.
        [read("http.log"), read("tcp.log")]
            .iter()
            .flat_map(|t| t.lines())
            .map(|l| {
                let (head, sent) = l.split_once('|').unwrap_or((l, ""));
                format!("{head} sent:{}", sent != "0")
            })
            .collect::<Vec<_>>()
    });
    if let Some(lines) = logs {
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].starts_with("HTTP/1.1 0 - "), "{}", lines[0]);
        assert!(lines[1].starts_with("- 0 - 4 127.0.0.1:"), "{}", lines[1]);
    }
}

#[test]
fn upstream_cluster_logs_the_observability_name_and_nothing_for_a_missing_cluster() {
    // `%UPSTREAM_CLUSTER%` is the cluster's `alt_stat_name` (istiod sets it with
    // `outboundClusterStatName`), `%UPSTREAM_CLUSTER_RAW%` its name; a route to a
    // cluster that does not exist (`NC`) logs neither.
    let app = Upstream::http("app");
    let dir = scratch("alog-cluster");
    let got = e2e::proxy::agree_with_envoy(
        |port| {
            let log = json!({"name": "f", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": dir.join(format!("{port}.log")).display().to_string(),
                "log_format": {"text_format_source": {"inline_string":
                    "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %UPSTREAM_CLUSTER_RAW% %RESPONSE_CODE_DETAILS%\n"}}}});
            let routes = json!([{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/missing"}, "route": {"cluster_header": "x-cluster"}},
                {"match": {"prefix": "/"}, "route": {"cluster": "outbound|80||app.default.svc.cluster.local"}}]}]);
            let hcm = e2e::config::hcm(routes, json!({"access_log": [log]}));
            bootstrap(
                vec![e2e::config::listener("l", port, hcm, json!({}))],
                vec![cluster(
                    "outbound|80||app.default.svc.cluster.local",
                    &[app.port],
                    json!({"alt_stat_name": "app_80"}),
                )],
            )
        },
        |_, port| {
            let statuses = [
                e2e::curl::get(port, "/", &[]).status,
                e2e::curl::get(port, "/missing", &["-H", "x-cluster: missing"]).status,
            ];
            let log = dir.join(format!("{port}.log"));
            e2e::wait_until(10, "access log lines", || {
                std::fs::read_to_string(&log).is_ok_and(|l| l.lines().count() >= 2)
            });
            (statuses, std::fs::read_to_string(&log).unwrap())
        },
    );
    if let Some((statuses, log)) = got {
        assert_eq!(statuses, [200, 503]);
        assert_eq!(
            log,
            "200 - app_80 outbound|80||app.default.svc.cluster.local via_upstream\n503 NC - - cluster_not_found\n"
        );
    }
}

#[test]
fn loggers_of_one_file_share_one_writer() {
    // istiod puts the same file log on every connection manager, TCP proxy and listener
    // of a sidecar: one writer thread (and file) serves them all, as Envoy's access log
    // manager opens a path once.
    let app = Upstream::http("app");
    let dir = scratch("alog-shared");
    let log = istio_log("text", &dir.join("mesh.log"), false, false);
    let listener_log = istio_log("text", &dir.join("mesh.log"), false, true);
    let listeners: Vec<Value> = (0..4)
        .map(|i| {
            let vh = json!([{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]);
            let mut l = e2e::config::listener(
                &format!("l{i}"),
                free_port(),
                e2e::config::hcm(vh, json!({"access_log": [log.clone()]})),
                json!({}),
            );
            l["access_log"] = json!([listener_log.clone()]);
            l
        })
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| {
            l["address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap() as u16
        })
        .collect();
    let proxy = Proxy::start(
        Kind::Meshproxy,
        &bootstrap(listeners, vec![cluster("app", &[app.port], json!({}))]),
        &["--file-flush-interval-msec", "50"],
    );
    let writers = std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "access_log")
        })
        .count();
    assert_eq!(writers, 1);
    for port in &ports {
        assert_eq!(e2e::curl::get(*port, "/", &[]).status, 200);
    }
    let lines = || std::fs::read_to_string(dir.join("mesh.log")).map_or(0, |t| t.lines().count());
    e2e::wait_until(10, "a line per request", || lines() >= ports.len());
    assert_eq!(lines(), ports.len());
}

#[test]
fn istiod_access_logs_over_ads_get_envoys_verdicts() {
    // Listeners as istiod sends them with mesh access logging on, over Delta ADS: ACKed
    // by both; one with an unknown operator NACKed by both, meshproxy naming the field.
    use e2e::xds::{resources::ads_bootstrap, ControlPlane, LISTENER};
    let sidecar_listener = |name: &str, encoding: &str, older: bool| {
        let path = Path::new("/dev/stdout");
        let routes = json!({"name": "80", "virtual_hosts": [{"name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]});
        json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}},
            "traffic_direction": "OUTBOUND",
            "filter_chains": [
                {"filter_chain_match": {"transport_protocol": "raw_buffer", "application_protocols": ["http/1.1", "h2c"]},
                 "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "outbound_0.0.0.0_80", "route_config": routes,
                    "http_filters": e2e::config::router(),
                    "access_log": [istio_log(encoding, path, older, false)]}}]},
                {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "PassthroughCluster", "cluster": "PassthroughCluster",
                    "access_log": [istio_log(encoding, path, older, false)]}}]}],
            "listener_filters": [{"name": "envoy.filters.listener.http_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}}],
            "access_log": [istio_log(encoding, path, older, true)]})
    };
    let verdicts = e2e::proxy::same_in_both(|kind| {
        let cp = ControlPlane::tcp();
        let good = [
            ("text-1.26", "text", false),
            ("text-older", "text", true),
            ("json", "json", false),
        ];
        for (name, encoding, older) in good {
            cp.set_json(LISTENER, name, sidecar_listener(name, encoding, older));
        }
        let _proxy = Proxy::spawn(kind, &ads_bootstrap(&cp, true, vec![]), &[]);
        let mut verdicts: Vec<(String, bool)> = good
            .iter()
            .map(|(name, _, _)| {
                (
                    name.to_string(),
                    cp.wait_verdict(LISTENER, name, 0, 60).is_ack(),
                )
            })
            .collect();
        let mut bad = sidecar_listener("bad", "text", false);
        bad["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"] =
            json!("%START_TIME% %NOT_AN_OPERATOR%\n");
        let mark = cp.sent_count();
        cp.set_json(LISTENER, "bad", bad);
        cp.push(LISTENER);
        let answer = cp.wait_verdict(LISTENER, "bad", mark, 60);
        if kind == Kind::Meshproxy {
            let error = answer.error.clone().unwrap_or_default();
            assert!(
                error.contains("access_log[0]") && error.contains("NOT_AN_OPERATOR"),
                "{error}"
            );
        }
        verdicts.push(("bad".into(), answer.is_ack()));
        verdicts
    });
    if let Some(verdicts) = verdicts {
        let acked: Vec<bool> = verdicts.iter().map(|(_, ack)| *ack).collect();
        assert_eq!(acked, [true, true, true, false], "{verdicts:?}");
    }
}

/// A listening socket whose accept queue is full and never drained: connecting to it
/// hangs until the connecting side gives up (a connect timeout on loopback).
fn black_hole() -> (u16, Vec<socket2::Socket>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let port = addr.as_socket().unwrap().port();
    let mut held = vec![listener];
    for _ in 0..4 {
        let filler = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        filler.set_nonblocking(true).unwrap();
        let _ = filler.connect(&addr);
        held.push(filler);
    }
    (port, held)
}

#[test]
fn connect_timeouts_log_no_transport_failure_reason() {
    // Envoy's UF after `connect_timeout` names the timeout in the details and logs no
    // transport failure reason (HTTP and TCP proxy alike).
    let (hole, _held) = black_hole();
    let got = e2e::proxy::same_in_both(|kind| {
        let dir = scratch("alog-timeout");
        let (http, tcp) = (free_port(), free_port());
        let log = |file: &str, format: &str| {
            json!([{"name": "f", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": dir.join(file).display().to_string(),
                "log_format": {"text_format_source": {"inline_string": format}}}}])
        };
        let routes = json!([{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "hole"}}]}]);
        let hcm = e2e::config::hcm(
            routes,
            json!({"access_log": log("http.log",
                "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% [%UPSTREAM_TRANSPORT_FAILURE_REASON%]\n")}),
        );
        let tcp_proxy = json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "hole", "cluster": "hole",
            "access_log": log("tcp.log", "%RESPONSE_FLAGS% [%UPSTREAM_TRANSPORT_FAILURE_REASON%]\n")});
        let config = bootstrap(
            vec![
                e2e::config::listener("http", http, hcm, json!({})),
                e2e::config::listener("tcp", tcp, tcp_proxy, json!({})),
            ],
            vec![cluster("hole", &[hole], json!({"connect_timeout": "0.5s"}))],
        );
        let _proxy = Proxy::start(kind, &config, &["--file-flush-interval-msec", "50"]);
        let status = e2e::curl::get(http, "/", &[]).status;
        let mut s = connect(tcp);
        let _ = s.read_to_end(&mut vec![]);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        e2e::wait_until(15, "access logs", || {
            !read("http.log").is_empty() && !read("tcp.log").is_empty()
        });
        (status, read("http.log"), read("tcp.log"))
    });
    if let Some((status, http, tcp)) = got {
        assert_eq!(status, 503);
        assert_eq!(
            http,
            "503 UF upstream_reset_before_response_started{connection_timeout} [-]\n"
        );
        assert!(tcp.starts_with("UF"), "{tcp}");
    }
}
