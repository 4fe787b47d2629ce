//! The external authorization filter at work: a `Check` call to the authorization
//! service (gRPC, `envoy.service.auth.v3.Authorization`) with the request's attributes,
//! then the request goes on with the service's header changes, or is answered with its
//! denial, or — when the call fails — with `status_on_error` unless failure mode allows.

use crate::config::common::AppendAction;
use crate::config::ext_authz::{ExtAuthzConfig, ExtAuthzPerRoute};
use crate::http::local_reply::LocalReply;
use crate::listener::ConnectionInfo;
use crate::stats::{Counter, Scope};
use bytes::{Bytes, BytesMut};
use filters::http::Body;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::BodyExt;
use prost::Message;
use std::sync::Arc;
use xds_client::proto::envoy::config::core::v3 as core;
use xds_client::proto::envoy::service::auth::v3 as auth;

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// One ext_authz filter with its counters (`ext_authz.[<stat_prefix>.]ok|denied|error|
/// failure_mode_allowed` in the connection manager's scope).
pub struct ExtAuthz {
    /// The config.
    pub config: Arc<ExtAuthzConfig>,
    ok: Arc<Counter>,
    denied: Arc<Counter>,
    error: Arc<Counter>,
    failure_mode_allowed: Arc<Counter>,
}

/// What the filter decided.
pub enum Decision {
    /// Go on; these headers join the downstream response.
    Allow(Vec<(HeaderName, HeaderValue, HeaderChange)>),
    /// Answer with this reply and these headers.
    Deny(LocalReply, Vec<(HeaderName, HeaderValue, HeaderChange)>),
}

impl ExtAuthz {
    /// The filter with its counters under `scope` (the connection manager's).
    pub fn new(config: Arc<ExtAuthzConfig>, scope: &Scope) -> Self {
        let base = if config.stat_prefix.is_empty() {
            "ext_authz.".to_string()
        } else {
            format!("ext_authz.{}.", config.stat_prefix)
        };
        let counter = |n: &str| scope.counter(&format!("{base}{n}"));
        ExtAuthz {
            ok: counter("ok"),
            denied: counter("denied"),
            error: counter("error"),
            failure_mode_allowed: counter("failure_mode_allowed"),
            config,
        }
    }

    /// Checks the request with the authorization service; on `Allow` the request (its
    /// body buffered if the filter sends it) carries the service's header changes.
    pub async fn check(
        &self,
        server: &Arc<crate::server::Server>,
        req: Request<Body>,
        info: &ConnectionInfo,
        route: Option<&ExtAuthzPerRoute>,
        request_id: &str,
    ) -> (Request<Body>, Decision) {
        let c = &self.config;
        let (parts, body) = req.into_parts();
        let send_body = c.body.filter(|_| !route.is_some_and(|r| r.disable_body));
        let (body, sent_body) = match send_body {
            Some(settings) => match buffer(body, settings.max_bytes).await {
                Ok((whole, first))
                    if first.len() <= settings.max_bytes || settings.allow_partial =>
                {
                    let partial = first.len() > settings.max_bytes;
                    let sent = first.slice(..first.len().min(settings.max_bytes));
                    (whole, Some((sent, settings.as_bytes, partial)))
                }
                Ok((whole, _)) => {
                    let reply = LocalReply::direct(413, Bytes::from_static(b"Payload Too Large"));
                    let req = Request::from_parts(parts, whole);
                    return (req, Decision::Deny(reply, Vec::new()));
                }
                Err(whole) => (whole, None),
            },
            None => (body, None),
        };
        let mut req = Request::from_parts(parts, body);
        let check = check_request(&req, info, route, request_id, sent_body);
        let answer = match server.clusters.get(&c.cluster) {
            Some(cluster) => {
                let mut call_request = grpc_call(&c.authority, &check);
                for (name, value) in &c.initial_metadata {
                    call_request
                        .headers_mut()
                        .insert(name.clone(), value.clone());
                }
                let call = super::cluster_call::call(
                    &cluster,
                    call_request,
                    crate::upstream::pool::Protocol::Http2,
                    c.authority.clone(),
                );
                tokio::time::timeout(c.timeout, call).await.ok().flatten()
            }
            None => None,
        };
        let response = answer.and_then(|a| {
            if c.max_response_bytes
                .is_some_and(|max| a.body.len() > max + 5)
            {
                return None;
            }
            let status = a
                .trailers
                .get("grpc-status")
                .or_else(|| a.head.headers.get("grpc-status"))?;
            (status == "0").then_some(())?;
            auth::CheckResponse::decode(a.body.get(5..)?).ok()
        });
        let Some(response) = response else {
            let decision = self.failed(&mut req);
            return (req, decision);
        };
        use auth::check_response::HttpResponse as R;
        let code = response.status.as_ref().map_or(0, |s| s.code);
        match (code, response.http_response) {
            (0, ok) => {
                self.ok.inc();
                let mut add_to_response = Vec::new();
                if let Some(R::OkResponse(ok)) = ok {
                    let h = req.headers_mut();
                    for name in &ok.headers_to_remove {
                        if !name.starts_with(':') && !name.eq_ignore_ascii_case("host") {
                            h.remove(name.as_str());
                        }
                    }
                    let changes = header_options(
                        &ok.headers,
                        HeaderChange::Action(AppendAction::OverwriteIfExistsOrAdd),
                        HeaderChange::JoinExisting,
                    );
                    for (name, value, action) in changes {
                        action.apply(h, name, value);
                    }
                    add_to_response = header_options(
                        &ok.response_headers_to_add,
                        HeaderChange::Action(AppendAction::AppendIfExistsOrAdd),
                        HeaderChange::Action(AppendAction::AppendIfExistsOrAdd),
                    );
                }
                (req, Decision::Allow(add_to_response))
            }
            (_, Some(R::ErrorResponse(_))) => {
                let decision = self.failed(&mut req);
                (req, decision)
            }
            (_, denied) => {
                self.denied.inc();
                let (status, headers, body) = match denied {
                    Some(R::DeniedResponse(d)) => (
                        d.status.as_ref().map_or(0, |s| s.code),
                        header_options(
                            &d.headers,
                            HeaderChange::Action(AppendAction::OverwriteIfExistsOrAdd),
                            HeaderChange::Action(AppendAction::AppendIfExistsOrAdd),
                        ),
                        Bytes::from(d.body),
                    ),
                    _ => (0, Vec::new(), Bytes::new()),
                };
                let status = u16::try_from(status)
                    .ok()
                    .filter(|s| (200..600).contains(s));
                let mut reply = LocalReply::direct(status.unwrap_or(403), body);
                reply.flag =
                    crate::access_log::record::ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE;
                reply.details = "ext_authz_denied".into();
                (req, Decision::Deny(reply, headers))
            }
        }
    }

    /// A failed call: let the request through if failure mode allows it, else answer
    /// `status_on_error`.
    fn failed(&self, req: &mut Request<Body>) -> Decision {
        let c = &self.config;
        self.error.inc();
        if c.failure_mode_allow {
            self.failure_mode_allowed.inc();
            if c.failure_mode_allow_header_add {
                req.headers_mut().insert(
                    "x-envoy-auth-failure-mode-allowed",
                    HeaderValue::from_static("true"),
                );
            }
            return Decision::Allow(Vec::new());
        }
        let mut reply = LocalReply::direct(c.status_on_error, Bytes::new());
        reply.flag = crate::access_log::record::ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE;
        reply.details = "ext_authz_error".into();
        Decision::Deny(reply, Vec::new())
    }
}

/// Reads the body until more than `max` bytes or its end: the whole body to forward
/// (what was read, then the rest) and what was read. A body that fails while being read
/// yields what the client sent so far, not sent to the service.
async fn buffer(body: Body, max: usize) -> Result<(Body, Bytes), Body> {
    let mut body = body;
    let mut read = BytesMut::new();
    while read.len() <= max {
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => read.extend_from_slice(&d),
                Err(_) => break,
            },
            Some(Err(_)) => {
                let partial = http_body_util::Full::new(read.freeze())
                    .map_err(|e| match e {})
                    .boxed();
                return Err(partial);
            }
            None => {
                let read = read.freeze();
                let whole = http_body_util::Full::new(read.clone())
                    .map_err(|e| match e {})
                    .boxed();
                return Ok((whole, read));
            }
        }
    }
    let read = read.freeze();
    let whole = Prefixed {
        prefix: Some(read.clone()),
        rest: body,
    };
    Ok((whole.boxed(), read))
}

/// A body that yields bytes already read, then the rest of the original.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(prefix))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }
}

/// How a header of the service's answer joins what is there: one of Envoy's append
/// actions, or (`append: true` in an ok answer) a value joined to an existing header
/// with a comma, nothing when the header is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderChange {
    /// As a configured header addition would.
    Action(AppendAction),
    /// Joined to an existing value.
    JoinExisting,
}

impl HeaderChange {
    /// Applies the header to `headers`.
    pub fn apply(self, headers: &mut http::HeaderMap, name: HeaderName, value: HeaderValue) {
        match self {
            HeaderChange::Action(action) => super::headers::set(headers, &name, value, action),
            HeaderChange::JoinExisting => {
                let joined = headers.get(&name).map(|old| {
                    let mut v = old.as_bytes().to_vec();
                    v.push(b',');
                    v.extend_from_slice(value.as_bytes());
                    v
                });
                if let Some(v) = joined.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                    headers.insert(name, v);
                }
            }
        }
    }
}

/// `HeaderValueOption`s as (name, value, change): the deprecated `append` when set
/// (`true` meaning `append`), else `append_action`, whose default means `unset` here.
fn header_options(
    options: &[core::HeaderValueOption],
    unset: HeaderChange,
    append: HeaderChange,
) -> Vec<(HeaderName, HeaderValue, HeaderChange)> {
    options
        .iter()
        .filter_map(|o| {
            let h = o.header.as_ref()?;
            let name = HeaderName::from_bytes(h.key.to_ascii_lowercase().as_bytes()).ok()?;
            let value = if h.raw_value.is_empty() {
                HeaderValue::from_str(&h.value).ok()?
            } else {
                HeaderValue::from_bytes(&h.raw_value).ok()?
            };
            #[allow(deprecated)]
            let change = match (&o.append, o.append_action) {
                (Some(a), _) if a.value => append,
                (Some(_), _) => HeaderChange::Action(AppendAction::OverwriteIfExistsOrAdd),
                (None, 0) => unset,
                (None, code) => AppendAction::from_code(code).map_or(unset, HeaderChange::Action),
            };
            Some((name, value, change))
        })
        .collect()
}

fn socket_address(a: Option<std::net::SocketAddr>) -> Option<core::Address> {
    let a = a?;
    Some(core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: a.ip().to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                a.port(),
            ))),
            ..Default::default()
        })),
    })
}

/// The `CheckRequest` for a request: the peers (addresses, principals), the HTTP request
/// (headers with the pseudo-headers, path, host, scheme, size, protocol, body), and the
/// route's context extensions.
fn check_request(
    req: &Request<Body>,
    info: &ConnectionInfo,
    route: Option<&ExtAuthzPerRoute>,
    request_id: &str,
    body: Option<(Bytes, bool, bool)>,
) -> auth::CheckRequest {
    use auth::attribute_context::{HttpRequest, Peer, Request as AttrRequest};
    let host = super::headers::authority(req).to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let scheme = if info.tls { "https" } else { "http" };
    let mut headers = std::collections::HashMap::new();
    for (name, value) in req.headers() {
        if name == http::header::HOST {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v: &mut String| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    headers.insert(":authority".into(), host.clone());
    headers.insert(":method".into(), req.method().to_string());
    headers.insert(":path".into(), path.clone());
    headers.insert(":scheme".into(), scheme.into());
    let protocol = match req.version() {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    // As Envoy: said only of a request that has a body.
    if let Some((b, _, partial)) = &body {
        if !b.is_empty() {
            headers.insert("x-envoy-auth-partial-body".into(), partial.to_string());
        }
    }
    let (size, text, raw) = match body {
        Some((b, true, _)) => (b.len() as i64, String::new(), b.to_vec()),
        Some((b, false, _)) => (
            b.len() as i64,
            String::from_utf8_lossy(&b).into_owned(),
            Vec::new(),
        ),
        None => (-1, String::new(), Vec::new()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    auth::CheckRequest {
        attributes: Some(auth::AttributeContext {
            source: Some(Peer {
                address: socket_address(info.remote),
                principal: info.peer_uri_san().unwrap_or_default(),
                ..Default::default()
            }),
            destination: Some(Peer {
                address: socket_address(info.local),
                principal: info.local_uri_san.clone().unwrap_or_default(),
                ..Default::default()
            }),
            request: Some(AttrRequest {
                time: Some(xds_client::proto::google::protobuf::Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                }),
                http: Some(HttpRequest {
                    id: request_id.to_string(),
                    method: req.method().to_string(),
                    headers,
                    path,
                    host,
                    scheme: scheme.into(),
                    size,
                    protocol: protocol.into(),
                    body: text,
                    raw_body: raw,
                    ..Default::default()
                }),
            }),
            context_extensions: route
                .map(|r| r.context_extensions.clone().into_iter().collect())
                .unwrap_or_default(),
            metadata_context: Some(Default::default()),
            ..Default::default()
        }),
    }
}

/// The gRPC `Check` call carrying `check`.
fn grpc_call(authority: &str, check: &auth::CheckRequest) -> Request<Body> {
    let message = check.encode_to_vec();
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut request = Request::new(
        http_body_util::Full::new(Bytes::from(frame))
            .map_err(|e| match e {})
            .boxed(),
    );
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = format!("http://{authority}{CHECK_PATH}")
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static(CHECK_PATH));
    let h = request.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(http::header::TE, HeaderValue::from_static("trailers"));
    request
}
