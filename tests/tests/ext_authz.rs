//! External authorization over gRPC, side by side with Envoy 1.40: a test authorization
//! service (the real `envoy.service.auth.v3.Authorization` protocol) allows with header
//! changes, denies with its own status, headers and body, fails, or answers too late; both
//! proxies must send it the same Check requests and answer the clients alike. Then Istio's
//! CUSTOM action: the filter runs only for requests an RBAC shadow policy named
//! `istio-ext-authz-*` matched.

use e2e::config::{bootstrap, cluster, hcm_with_filters, listener, merge};
use e2e::proxy::{agree_with_envoy, Proxy};
use e2e::upstream::Upstream;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use xds_client::proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use xds_client::proto::envoy::r#type::v3::HttpStatus;
use xds_client::proto::envoy::service::auth::v3::{
    authorization_server::{Authorization, AuthorizationServer},
    check_response::HttpResponse,
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use xds_client::proto::google::rpc::Status;

fn header(key: &str, value: &str, append: Option<bool>) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append: append.map(|value| xds_client::proto::google::protobuf::BoolValue { value }),
        ..Default::default()
    }
}

/// The test authorization service: what it decides depends on the request's headers.
#[derive(Clone, Default)]
struct Authz {
    seen: Arc<Mutex<Vec<CheckRequest>>>,
}

#[tonic::async_trait]
impl Authorization for Authz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let check = request.into_inner();
        self.seen.lock().unwrap().push(check.clone());
        let http = check.attributes.unwrap().request.unwrap().http.unwrap();
        let has = |h: &str| http.headers.contains_key(h);
        if has("x-fail") {
            return Err(tonic::Status::internal("scripted failure"));
        }
        if has("x-slow") {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let response = if has("x-deny") {
            CheckResponse {
                status: Some(Status {
                    code: 7,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 401 }),
                    headers: vec![header("x-reason", "scripted", None)],
                    body: "go away".into(),
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(Status::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![
                        header("x-authz", "ok", None),
                        header("x-replace", "new", Some(false)),
                        header("x-append", "second", Some(true)),
                    ],
                    headers_to_remove: vec!["x-remove-me".into()],
                    response_headers_to_add: vec![header("x-authz-response", "yes", None)],
                    ..Default::default()
                })),
                ..Default::default()
            }
        };
        Ok(tonic::Response::new(response))
    }
}

/// Serves the authorization service on a loopback port (h2c), on its own runtime.
fn serve(authz: Authz) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(l).unwrap();
            let service = AuthorizationServer::new(authz);
            loop {
                let Ok((io, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        use tonic::codegen::Service as _;
                        let mut s = service.clone();
                        async move { s.call(req).await }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                    .await;
                });
            }
        });
    });
    port
}

fn ext_authz(extra: Value) -> Value {
    let mut typed = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "grpc_service": {"envoy_grpc": {"cluster_name": "authz", "authority": "authz.local"}},
        "transport_api_version": "V3",
        "with_request_body": {"max_request_bytes": 16}});
    merge(&mut typed, extra);
    json!({"name": "envoy.filters.http.ext_authz", "typed_config": typed})
}

fn config(port: u16, app: u16, authz: u16, filters: Vec<Value>) -> String {
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/free"}, "route": {"cluster": "app"},
         "typed_per_filter_config": {"envoy.filters.http.ext_authz": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "disabled": true}}},
        {"match": {"prefix": "/ctx"}, "route": {"cluster": "app"},
         "typed_per_filter_config": {"envoy.filters.http.ext_authz": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"context_extensions": {"route": "ctx"}}}}},
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]);
    let mut authz_cluster = cluster("authz", &[authz], json!({}));
    merge(&mut authz_cluster, e2e::config::h2_upstream());
    bootstrap(
        vec![listener(
            "l",
            port,
            hcm_with_filters(vh, filters, json!({"stat_prefix": "in"})),
            json!({}),
        )],
        vec![cluster("app", &[app], json!({})), authz_cluster],
    )
}

/// A Check request without what differs run to run (times, ids, ports).
fn normalized(c: &CheckRequest, port: u16) -> String {
    let mut c = c.clone();
    let a = c.attributes.as_mut().unwrap();
    let r = a.request.as_mut().unwrap();
    r.time = None;
    let h = r.http.as_mut().unwrap();
    h.id = String::new();
    for k in ["x-request-id", "x-envoy-expected-rq-timeout-ms"] {
        h.headers.remove(k);
    }
    let mut headers: Vec<_> = h.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
    headers.sort();
    let mut ctx: Vec<_> = a.context_extensions.iter().collect();
    ctx.sort();
    format!(
        "{} {} {} {} size={} body={:?} raw={:?} proto={} headers={headers:?} ctx={ctx:?} src={:?} dst={:?}",
        h.method, h.path, h.host, h.scheme, h.size, h.body, h.raw_body, h.protocol,
        a.source.as_ref().and_then(|p| p.address.as_ref()).is_some(),
        a.destination.as_ref().map(|p| format!("{:?}", p.address).contains(&port.to_string())),
    )
    .replace(&port.to_string(), "PORT")
}

#[test]
fn grpc_authorization_allows_denies_and_fails_as_envoy() {
    let app = Upstream::http("app");
    let authz = Authz::default();
    let authz_port = serve(authz.clone());
    let filters = || {
        vec![ext_authz(
            json!({"failure_mode_allow": false, "status_on_error": {"code": 503}}),
        )]
    };
    let seen = agree_with_envoy(
        |port| config(port, app.port, authz_port, filters()),
        |p: &Proxy, port| {
            let before = authz.seen.lock().unwrap().len();
            let mut answers = Vec::new();
            for (path, args) in [
                (
                    "/ok",
                    vec![
                        "-H",
                        "x-remove-me: 1",
                        "-H",
                        "x-replace: old",
                        "-H",
                        "x-append: first",
                    ],
                ),
                ("/deny", vec!["-H", "x-deny: 1"]),
                ("/fail", vec!["-H", "x-fail: 1"]),
                ("/slow", vec!["-H", "x-slow: 1"]),
                ("/free", vec!["-H", "x-deny: 1"]),
                ("/ctx", vec![]),
                ("/body", vec!["--data-binary", "short body"]),
                (
                    "/big",
                    vec!["--data-binary", "a body longer than sixteen bytes"],
                ),
            ] {
                let before_app = app.count();
                let r = e2e::curl::get(port, path, &args);
                let upstream = (app.count() > before_app).then(|| app.last().unwrap());
                let up = upstream.map(|u| {
                    let mut hs: Vec<String> = u
                        .headers
                        .iter()
                        .filter(|(k, _)| {
                            k.starts_with("x-authz")
                                || (k.starts_with("x-re") && k != "x-request-id")
                                || k.starts_with("x-append")
                        })
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    hs.sort();
                    (hs, String::from_utf8_lossy(&u.body).into_owned())
                });
                answers.push(format!(
                    "{path}: {} {:?} reason={:?} authz-response={:?} upstream={up:?}",
                    r.status,
                    r.text(),
                    r.header("x-reason"),
                    r.header("x-authz-response")
                ));
            }
            let checks: Vec<String> = authz.seen.lock().unwrap()[before..]
                .iter()
                .map(|c| normalized(c, port))
                .collect();
            let stats: Vec<String> = ["ok", "denied", "error", "failure_mode_allowed"]
                .iter()
                .map(|s| format!("{s}={:?}", p.stat(&format!("http.in.ext_authz.{s}"))))
                .collect();
            (answers, checks, stats)
        },
    );
    let Some((answers, checks, _)) = seen else {
        return;
    };
    assert!(answers[0].starts_with("/ok: 200"), "{answers:#?}");
    assert!(
        answers[1].starts_with("/deny: 401 \"go away\""),
        "{answers:#?}"
    );
    assert!(answers[2].starts_with("/fail: 503"), "{answers:#?}");
    assert!(answers[4].starts_with("/free: 200"), "{answers:#?}");
    assert_eq!(checks.len(), 6, "{checks:#?}");
}

/// Istio's CUSTOM action as istiod writes it: an RBAC filter whose shadow policy names
/// the requests to check (`istio-ext-authz-…`, prefix `istio_ext_authz_`), then ext_authz
/// enabled by that shadow outcome in the dynamic metadata.
#[test]
fn istio_custom_action_checks_only_what_the_shadow_policy_selects() {
    let app = Upstream::http("app");
    let authz = Authz::default();
    let authz_port = serve(authz.clone());
    let filters = || {
        let selector = json!({"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "shadow_rules": {"policies": {"istio-ext-authz-ns[default]-policy[ext]-rule[0]": {
                "permissions": [{"url_path": {"path": {"prefix": "/guarded"}}}],
                "principals": [{"any": true}]}}},
            "shadow_rules_stat_prefix": "istio_ext_authz_"}});
        let authz_filter = ext_authz(json!({"filter_enabled_metadata": {
            "filter": "envoy.filters.http.rbac",
            "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
            "value": {"string_match": {"prefix": "istio-ext-authz"}}}}));
        vec![selector, authz_filter]
    };
    let seen = agree_with_envoy(
        |port| config(port, app.port, authz_port, filters()),
        |_, port| {
            let before = authz.seen.lock().unwrap().len();
            let statuses: Vec<u16> = ["/open", "/guarded"]
                .iter()
                .map(|p| e2e::curl::get(port, p, &["-H", "x-deny: 1"]).status)
                .collect();
            let checks: Vec<String> = authz.seen.lock().unwrap()[before..]
                .iter()
                .map(|c| {
                    c.attributes
                        .as_ref()
                        .unwrap()
                        .request
                        .as_ref()
                        .unwrap()
                        .http
                        .as_ref()
                        .unwrap()
                        .path
                        .clone()
                })
                .collect();
            (statuses, checks)
        },
    );
    if let Some((statuses, checks)) = seen {
        assert_eq!(statuses, [200, 401]);
        assert_eq!(checks, ["/guarded"]);
    }
}
