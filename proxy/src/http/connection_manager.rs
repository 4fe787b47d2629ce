//! `envoy.filters.network.http_connection_manager`: serves a downstream connection with
//! the configured codec, and runs each request through header sanitation, request-id,
//! route selection, fault injection, the action (direct response, redirect, router), response headers,
//! compression, stats and access logs.

use super::fault::{self, FaultStats};
use super::head_deadline::{HeadDeadline, HeadLimit, HeadTimeout, HeadWatch};
use super::headers;
use super::local_reply::LocalReply;
use super::path;
use super::route_match::{self, RequestView};
use super::router::{self, RouteContext};
use super::stream_timeouts::StreamActivity;
use super::throttle::Throttled;
use crate::access_log::record::{Record, ResponseFlags};
use crate::access_log::writer::AccessLogger;
use crate::config::hcm::{
    Codec, EscapedSlashes, HttpConnectionManagerConfig, HttpFilterConfig, ServerHeader,
};
use crate::config::per_filter::{PerFilter, PerFilterConfigs};
use crate::config::route::{Action, Redirect, RequireTls};
use crate::io::{BoxIo, CountingIo};
use crate::istio::peer_metadata::PeerMetadata;
use crate::istio::stats::IstioStats;
use crate::lazy_timer::LazyTimer;
use crate::listener::ConnectionInfo;
use crate::on_wake::OnWake;
use crate::server::Server;
use crate::stats::{Counter, Gauge, Histogram, Scope};
use bytes::Bytes;
use filters::http::{Body, BoxError};
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Envoy's `http.<stat_prefix>.` stats.
struct HttpStats {
    cx_total: Arc<Counter>,
    cx_active: Arc<Gauge>,
    cx_http1_total: Arc<Counter>,
    cx_http2_total: Arc<Counter>,
    cx_destroy: Arc<Counter>,
    cx_rx_bytes: Arc<Counter>,
    cx_tx_bytes: Arc<Counter>,
    cx_idle_timeout: Arc<Counter>,
    rq_total: Arc<Counter>,
    rq_active: Arc<Gauge>,
    rq_http1_total: Arc<Counter>,
    rq_http2_total: Arc<Counter>,
    rq_completed: Arc<Counter>,
    rq_time: Arc<Histogram>,
    rq_class: [Arc<Counter>; 5],
    listener_rq_class: [Arc<Counter>; 5],
    no_route: Arc<Counter>,
    no_cluster: Arc<Counter>,
    rq_redirect: Arc<Counter>,
    rq_direct_response: Arc<Counter>,
    rq_max_duration_reached: Arc<Counter>,
    rq_header_timeout: Arc<Counter>,
    rq_idle_timeout: Arc<Counter>,
}

fn classes(scope: &Scope) -> [Arc<Counter>; 5] {
    ["1", "2", "3", "4", "5"].map(|d| {
        scope.counter_tagged(
            &format!("downstream_rq_{d}xx"),
            "downstream_rq_xx",
            ("envoy_response_code_class", d),
        )
    })
}

/// The node a listener serves, for the filters that announce or report it.
pub struct LocalNode<'a> {
    /// The bootstrap's node (id, metadata).
    pub node: &'a xds_client::proto::envoy::config::core::v3::Node,
    /// The listener's traffic direction is OUTBOUND.
    pub outbound: bool,
    /// The listener's traffic direction is INBOUND.
    pub inbound: bool,
}

/// Istio's filters of one HTTP connection manager, ready to serve.
#[derive(Default)]
struct IstioFilters {
    /// Metadata exchange, in filter order.
    exchange: Vec<PeerMetadata>,
    /// Standard metrics, in filter order.
    stats: Vec<IstioStats>,
}

impl IstioFilters {
    fn new(filters: &[HttpFilterConfig], local: &LocalNode, root: &Scope) -> Self {
        let metadata = local.node.metadata.clone().unwrap_or_default();
        let mut out = IstioFilters::default();
        for f in filters {
            match f {
                HttpFilterConfig::PeerMetadata(c) => out.exchange.push(PeerMetadata::new(
                    c.for_direction(local.inbound, local.outbound),
                    &local.node.id,
                    &metadata,
                )),
                HttpFilterConfig::IstioStats(c) => {
                    out.stats
                        .push(IstioStats::new(c.clone(), &metadata, local.outbound, root))
                }
                _ => {}
            }
        }
        out
    }
}

/// A connection manager instance (one per filter chain).
pub struct HttpConnectionManager {
    config: Arc<HttpConnectionManagerConfig>,
    stats: HttpStats,
    /// Istio's metadata exchange and metrics filters.
    istio: IstioFilters,
    /// The grpc_stats filter: the root scope its per-cluster stats live under, and
    /// whether it shares its message counts (`emit_filter_state`).
    grpc_stats: Option<(Scope, bool)>,
    /// The `istio.alpn` filter, if the chain has one (the router offers its ALPN).
    alpn: Option<Arc<crate::istio::alpn::AlpnConfig>>,
    /// `fault.*` stats, when a fault filter is configured.
    fault_stats: Option<FaultStats>,
    /// The tracer spans go to: the connection manager's own, else the bootstrap's.
    tracer: Option<Arc<crate::trace::zipkin::ZipkinConfig>>,
    /// The listener is OUTBOUND: spans are CLIENT spans, named by the route's decorator,
    /// which also goes upstream as `x-envoy-decorator-operation`.
    egress: bool,
    /// The RBAC filters, in order, with their `rbac.*` counters.
    rbac: Vec<(
        crate::rbac::translate::HttpRbacConfig,
        crate::rbac::RbacStats,
    )>,
    /// The ext_authz filters, in order (after the RBAC ones, as istiod orders them).
    ext_authz: Vec<super::ext_authz::ExtAuthz>,
    access_logs: Vec<AccessLogger>,
    /// Whether request headers must be kept for access logs or `%REQ()%` in header values.
    record_request_headers: bool,
    /// A discovered filter has no config yet: requests get 500 `NFCF`.
    missing_filter_config: bool,
    /// Draining this chain's connections (LDS changed or removed the chain).
    pub drain: Arc<crate::listener::drain::ChainDrain>,
    /// The same chain rebuilt by a later update that left it as it was (an ECDS config
    /// changed, or another part of the listener): the next streams of this manager's
    /// connections go to the newest, as Envoy's filter configs apply to new streams.
    successor: std::sync::OnceLock<Arc<HttpConnectionManager>>,
}

/// Per-connection state shared by its requests.
struct ConnState {
    /// The protocol of the connection's first request (`HTTP/1.1` or `HTTP/2`), for the
    /// listener-level access log.
    protocol: std::sync::OnceLock<&'static str>,
    requests: AtomicU32,
    active: AtomicU32,
    last_active: std::sync::Mutex<Instant>,
    shutdown: tokio::sync::Notify,
    /// An HTTP/1 upgrade (101, or a CONNECT answered 2xx) handed the connection to a
    /// tunnel: its bytes are no request heads any more.
    upgraded: std::sync::atomic::AtomicBool,
}

impl ConnState {
    fn stream_started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream ended at `now`: the connection's idle clock starts over.
    fn stream_ended(&self, now: Instant) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    /// How long the connection has had no active stream (zero while one is active).
    fn idle_for(&self) -> std::time::Duration {
        if self.active.load(Ordering::Relaxed) > 0 {
            return std::time::Duration::ZERO;
        }
        self.last_active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

impl HttpConnectionManager {
    /// Hands this chain's next streams to `newer`, the same chain of the listener that
    /// replaced this one (once; later updates chain on from `newer`).
    pub fn succeed(&self, newer: Arc<HttpConnectionManager>) {
        let _ = self.successor.set(newer);
    }

    /// The newest manager of this chain.
    fn newest(self: &Arc<Self>) -> Arc<Self> {
        let mut h = self.clone();
        while let Some(next) = h.successor.get() {
            h = next.clone();
        }
        h
    }

    /// Builds the manager with its stats and access-log writers.
    pub fn new(
        config: Arc<HttpConnectionManagerConfig>,
        root: &Scope,
        listener: &Scope,
        flush: std::time::Duration,
        local: &LocalNode,
    ) -> std::io::Result<Arc<Self>> {
        let s = root.tagged(
            "http",
            "envoy_http_conn_manager_prefix",
            &config.stat_prefix,
        );
        let ls = listener.tagged(
            "http",
            "envoy_http_conn_manager_prefix",
            &config.stat_prefix,
        );
        let istio = IstioFilters::new(&config.filters, local, root);
        let access_logs: Vec<AccessLogger> = config
            .access_logs
            .iter()
            .map(|l| AccessLogger::start(l, flush))
            .collect::<std::io::Result<_>>()?;
        Ok(Arc::new(HttpConnectionManager {
            stats: HttpStats {
                cx_total: s.counter("downstream_cx_total"),
                cx_active: s.gauge("downstream_cx_active"),
                cx_http1_total: s.counter("downstream_cx_http1_total"),
                cx_http2_total: s.counter("downstream_cx_http2_total"),
                cx_destroy: s.counter("downstream_cx_destroy"),
                cx_rx_bytes: s.counter("downstream_cx_rx_bytes_total"),
                cx_tx_bytes: s.counter("downstream_cx_tx_bytes_total"),
                cx_idle_timeout: s.counter("downstream_cx_idle_timeout"),
                rq_total: s.counter("downstream_rq_total"),
                rq_active: s.gauge("downstream_rq_active"),
                rq_http1_total: s.counter("downstream_rq_http1_total"),
                rq_http2_total: s.counter("downstream_rq_http2_total"),
                rq_completed: s.counter("downstream_rq_completed"),
                rq_time: s.histogram("downstream_rq_time"),
                rq_class: classes(&s),
                listener_rq_class: classes(&ls),
                no_route: s.counter("no_route"),
                no_cluster: s.counter("no_cluster"),
                rq_redirect: s.counter("rq_redirect"),
                rq_direct_response: s.counter("rq_direct_response"),
                rq_max_duration_reached: s.counter("downstream_rq_max_duration_reached"),
                rq_header_timeout: s.counter("downstream_rq_header_timeout"),
                rq_idle_timeout: s.counter("downstream_rq_idle_timeout"),
            },
            fault_stats: config
                .filters
                .iter()
                .any(|f| matches!(f, HttpFilterConfig::Fault(..)))
                .then(|| FaultStats::new(&s)),
            ext_authz: config
                .filters
                .iter()
                .filter_map(|f| match f {
                    HttpFilterConfig::ExtAuthz(c) => {
                        Some(super::ext_authz::ExtAuthz::new(c.clone(), &s))
                    }
                    _ => None,
                })
                .collect(),
            tracer: config
                .tracing
                .as_ref()
                .and_then(|t| t.provider.clone().or_else(crate::trace::bootstrap_tracer)),
            egress: local.outbound,
            rbac: config
                .filters
                .iter()
                .filter_map(|f| match f {
                    HttpFilterConfig::Rbac(c) => Some((
                        c.clone(),
                        crate::rbac::RbacStats::new(&s, "rbac.", &c.rules),
                    )),
                    _ => None,
                })
                .collect(),
            grpc_stats: config.filters.iter().find_map(|f| match f {
                HttpFilterConfig::GrpcStats(g) => Some((root.clone(), g.emit_filter_state)),
                _ => None,
            }),
            alpn: config.filters.iter().find_map(|f| match f {
                HttpFilterConfig::Alpn(a) => Some(a.clone()),
                _ => None,
            }),
            record_request_headers: !access_logs.is_empty()
                || !istio.stats.is_empty()
                || config.tracing.is_some()
                || config
                    .routes
                    .inline()
                    .is_none_or(|r| r.has_formatted_headers()),
            missing_filter_config: config
                .filters
                .iter()
                .any(|f| matches!(f, HttpFilterConfig::MissingConfig(_))),
            access_logs,
            istio,
            drain: Arc::default(),
            successor: std::sync::OnceLock::new(),
            config,
        }))
    }

    /// Serves one downstream connection until it closes; returns its protocol (`None`
    /// when no request came).
    pub async fn serve(
        self: Arc<Self>,
        server: Arc<Server>,
        io: BoxIo,
        info: ConnectionInfo,
    ) -> Option<&'static str> {
        let stats = &self.stats;
        stats.cx_total.inc();
        stats.cx_active.inc();
        let io = CountingIo::new(io, stats.cx_rx_bytes.clone(), stats.cx_tx_bytes.clone());
        let h2 = match self.config.codec {
            Codec::Http2 => Some(true),
            Codec::Http1 => Some(false),
            Codec::Auto if info.tls => Some(info.alpn.as_deref() == Some(b"h2")),
            Codec::Auto => None,
        };
        let info = Arc::new(info);
        let state = Arc::new(ConnState {
            protocol: std::sync::OnceLock::new(),
            requests: AtomicU32::new(0),
            active: AtomicU32::new(0),
            last_active: std::sync::Mutex::new(Instant::now()),
            shutdown: tokio::sync::Notify::new(),
            upgraded: std::sync::atomic::AtomicBool::new(false),
        });
        let head_limit = HeadLimit::new(
            self.config.request_headers_timeout,
            self.config.stream_idle_timeout,
        )
        .filter(|_| h2 != Some(true));
        let watch = HeadWatcher {
            hcm: self.clone(),
            conn: state.clone(),
            info: info.clone(),
        };
        let this = self.clone();
        let st = state.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            // Counted when the codec hands the head on, before the stream's first poll:
            // from here the head deadline is off.
            st.stream_started();
            let n = st.requests.fetch_add(1, Ordering::Relaxed) + 1;
            let this = this.clone();
            let server = server.clone();
            let info = info.clone();
            let st = st.clone();
            async move {
                st.protocol.get_or_init(|| match req.version() {
                    Version::HTTP_2 => "HTTP/2",
                    _ => "HTTP/1.1",
                });
                let newest = this.newest();
                Ok::<_, Infallible>(newest.handle(&server, &info, &st, n, req).await)
            }
        });
        let io = TokioIo::new(HeadDeadline::new(io, watch, head_limit));
        let c = &self.config;
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .max_buf_size(c.max_request_headers_bytes.max(8192));
        // No timer for HTTP/1: hyper would then time out every request's headers after
        // 30 s, a limit Envoy does not have (its `request_headers_timeout` is off unless
        // set), at a timer per request.
        {
            let mut h2b = builder.http2();
            h2b.max_header_list_size(c.max_request_headers_bytes as u32);
            if let Some(n) = c.http2_max_concurrent_streams {
                h2b.max_concurrent_streams(n);
            }
            if let Some(n) = c.http2_initial_stream_window {
                h2b.initial_stream_window_size(n);
            }
            if let Some(n) = c.http2_initial_connection_window {
                h2b.initial_connection_window_size(n);
            }
        }
        let builder = match h2 {
            Some(true) => {
                stats.cx_http2_total.inc();
                builder.http2_only()
            }
            Some(false) => {
                stats.cx_http1_total.inc();
                builder.http1_only()
            }
            None => builder,
        };
        let conn = builder.serve_connection_with_upgrades(io, svc);
        tokio::pin!(conn);
        let idle = self.config.idle_timeout;
        let mut shutting_down = false;
        loop {
            // The connection's rare events, polled only when one of them woke the task
            // (not on each of the connection's several wakes per request).
            let event = OnWake::new(async {
                let idle_sleep = async {
                    match idle {
                        Some(t) => {
                            tokio::time::sleep(
                                t.saturating_sub(state.idle_for())
                                    .max(std::time::Duration::from_millis(10)),
                            )
                            .await
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = state.shutdown.notified() => ConnEvent::Shutdown,
                    _ = self.drain.finished() => ConnEvent::Shutdown,
                    _ = idle_sleep => ConnEvent::IdleCheck,
                }
            });
            tokio::select! {
                biased;
                _ = conn.as_mut() => break,
                event = event, if !shutting_down => {
                    if event == ConnEvent::IdleCheck {
                        if idle.is_none_or(|t| state.idle_for() < t) {
                            continue;
                        }
                        stats.cx_idle_timeout.inc();
                    }
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        stats.cx_active.dec();
        stats.cx_destroy.inc();
        state.protocol.get().copied()
    }

    async fn handle(
        self: &Arc<Self>,
        server: &Arc<Server>,
        info: &Arc<ConnectionInfo>,
        state: &Arc<ConnState>,
        n: u32,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Body> {
        let started = Instant::now();
        let stats = &self.stats;
        stats.rq_total.inc();
        stats.rq_active.inc();
        let h2 = req.version() == Version::HTTP_2;
        if h2 {
            stats.rq_http2_total.inc()
        } else {
            stats.rq_http1_total.inc()
        }
        let last_request = self
            .config
            .max_requests_per_connection
            .is_some_and(|m| n >= m);
        if last_request {
            state.shutdown.notify_one();
        }
        let received = Arc::new(Counter::default());
        let rx = received.clone();
        let activity = Arc::new(StreamActivity::new(
            http_body::Body::is_end_stream(req.body()),
            tokio::time::Instant::from_std(started),
        ));
        activity.set_max_duration(self.config.max_stream_duration);
        let act = activity.clone();
        let req = req.map(move |b| {
            CountedBody {
                inner: b,
                counter: rx,
                activity: act,
            }
            .boxed()
        });
        // From here on the stream completes (stats, access log) exactly once, even when the
        // client goes away and this future is dropped before a response exists.
        let mut finish = Finish {
            hcm: self.clone(),
            conn: state.clone(),
            record: info.record(),
            started,
            received,
            sent: 0,
            ended: false,
            done: false,
        };
        let record = &mut finish.record;
        record.protocol = match req.version() {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        // What a compressor filter chooses its encoding from once the request has gone
        // upstream: only this header is kept, not a copy of them all.
        let accept_encoding: http::HeaderMap = req
            .headers()
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .map(|v| (header::ACCEPT_ENCODING, v.clone()))
            .collect();
        let grpc_request = headers::is_grpc(req.headers());
        let http10_keep_alive = super::http10::asks_keep_alive(&req);
        let c = &self.config;
        // Pinned in place and raced by reference: `select!` would otherwise take the
        // pipeline (kilobytes of state) by value and copy it on every request.
        let outcome = {
            let pipeline = self.process(server, info, req, grpc_request, record, &activity);
            tokio::pin!(pipeline);
            // The watchdog's timer is polled only when it woke, not on every wake of
            // the pipeline.
            let watchdog = OnWake::new(activity.watchdog(c.stream_idle_timeout, c.request_timeout));
            tokio::select! {
                biased;
                r = &mut pipeline => r,
                reply = watchdog => Err((reply, None)),
            }
        };
        let local_reply = outcome.is_err();
        let (mut resp, request_id) = match outcome {
            Ok(r) => r,
            Err((reply, id)) => {
                if reply.flag == ResponseFlags::DURATION_TIMEOUT {
                    self.stats.rq_max_duration_reached.inc();
                }
                if reply.flag == ResponseFlags::STREAM_IDLE_TIMEOUT {
                    self.stats.rq_idle_timeout.inc();
                }
                record.flags.insert(reply.flag);
                record.response_code_details = reply.details.clone();
                (reply.response(grpc_request), id)
            }
        };
        if record.response_code_details.is_empty() {
            record.response_code_details = "via_upstream".into();
        }
        self.finish_headers(&mut resp, request_id, &accept_encoding);
        // After a protocol error the connection closes, as Envoy's codec closes it.
        let last_request = last_request
            || record
                .flags
                .contains(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR)
            || {
                let drain = server.should_drain(info.inbound) || self.drain.should_close();
                if drain {
                    state.shutdown.notify_one();
                }
                drain
            };
        match http10_keep_alive {
            Some(asked) => super::http10::persist(&mut resp, asked && !last_request),
            None if last_request && !h2 => {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            None => {}
        }
        record.response_code = resp.status().as_u16();
        let tunnel = resp.status() == StatusCode::SWITCHING_PROTOCOLS
            || (resp.status().is_success() && record.method == Some(http::Method::CONNECT));
        if tunnel {
            state.upgraded.store(true, Ordering::Relaxed);
        }
        if !self.access_logs.is_empty() || !self.istio.stats.is_empty() || self.grpc_stats.is_some()
        {
            record.response_headers = resp.headers().clone();
        }
        let idle = activity.idle_timeout(self.config.stream_idle_timeout);
        // A local reply is complete already; only a proxied response is cut at the deadline.
        let max_duration = activity.max_duration_deadline().filter(|_| !local_reply);
        resp.map(|b| {
            LoggedBody {
                inner: b,
                finish,
                idle: idle.map(|d| (d, LazyTimer::at(tokio::time::Instant::now() + d))),
                max_duration: max_duration.map(LazyTimer::at),
            }
            .boxed()
        })
    }

    fn finish_headers(
        &self,
        resp: &mut Response<Body>,
        request_id: Option<HeaderValue>,
        request_headers: &http::HeaderMap,
    ) {
        let c = &self.config;
        let h = resp.headers_mut();
        match c.server_header {
            ServerHeader::Overwrite => {
                h.insert(header::SERVER, c.server_name.clone());
            }
            ServerHeader::AppendIfAbsent if !h.contains_key(header::SERVER) => {
                h.insert(header::SERVER, c.server_name.clone());
            }
            _ => {}
        }
        if !h.contains_key(header::DATE) {
            h.insert(header::DATE, httpdate());
        }
        if c.always_set_request_id_in_response {
            if let Some(id) = request_id {
                h.insert(headers::X_REQUEST_ID, id);
            }
        }
        if let Some(via) = &c.via {
            h.append(header::VIA, via.clone());
        }
        let compressors: Vec<_> = c
            .filters
            .iter()
            .filter_map(|f| match f {
                HttpFilterConfig::Compressor(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        if compressors.is_empty() {
            return;
        }
        let available: Vec<&str> = compressors.iter().map(|k| k.library.encoding()).collect();
        let chosen = filters::http::compressor::choose_encoding(request_headers, &available);
        if let Some(k) = chosen.and_then(|e| compressors.iter().find(|k| k.library.encoding() == e))
        {
            if k.response_qualifies(resp.status(), resp.headers()) {
                let body = std::mem::replace(
                    resp.body_mut(),
                    http_body_util::Empty::new().map_err(|e| match e {}).boxed(),
                );
                let compressed = k.compress(resp.headers_mut(), body);
                *resp.body_mut() = compressed;
            }
        } else if compressors
            .iter()
            .any(|k| k.response_qualifies(resp.status(), resp.headers()))
        {
            // Envoy adds `vary: accept-encoding` to compressible responses it did not compress.
            resp.headers_mut()
                .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
    }

    /// The request pipeline up to the response headers.
    async fn process(
        &self,
        server: &Arc<Server>,
        info: &ConnectionInfo,
        mut req: Request<Body>,
        grpc: bool,
        record: &mut Record,
        activity: &Arc<StreamActivity>,
    ) -> Result<(Response<Body>, Option<HeaderValue>), (LocalReply, Option<HeaderValue>)> {
        let c = &self.config;
        super::http10::admit(&mut req, &c.http10, record).map_err(|r| (r, None))?;
        if grpc && self.grpc_stats.is_some() {
            let counts = Arc::new(super::grpc_stats::MessageCounts::default());
            record.grpc_messages = Some(counts.clone());
            req = req.map(|b| super::grpc_stats::CountedMessages::new(b, counts, false).boxed());
        }
        for f in &c.filters {
            let HttpFilterConfig::Compressor(k) = f else {
                continue;
            };
            if k.remove_accept_encoding {
                req.headers_mut().remove(header::ACCEPT_ENCODING);
            }
        }
        // Authority and path.
        let authority: Arc<str> = {
            let raw = req
                .uri()
                .authority()
                .map(|a| a.as_str())
                .or_else(|| {
                    req.headers()
                        .get(header::HOST)
                        .and_then(|v| v.to_str().ok())
                })
                .unwrap_or_default();
            // One scan of the authority finds both what lowering needs and what Envoy's
            // codec refuses: HTTP/1.1 without `Host`, or bytes no authority may hold.
            let (mut upper, mut invalid) = (false, false);
            for b in raw.bytes() {
                upper |= b.is_ascii_uppercase();
                invalid |= !route_match::is_authority_byte(b);
            }
            if raw.is_empty() && req.version() == Version::HTTP_11 {
                return Err((LocalReply::invalid_authority("missing_host_header"), None));
            }
            if invalid {
                return Err((
                    LocalReply::invalid_authority("http.invalid_authority"),
                    None,
                ));
            }
            let lowered = match upper {
                true => std::borrow::Cow::Owned(raw.to_ascii_lowercase()),
                false => std::borrow::Cow::Borrowed(raw),
            };
            let strip = c.strip_any_host_port
                || (c.strip_matching_host_port
                    && info
                        .local
                        .is_some_and(|l| lowered.ends_with(&format!(":{}", l.port()))));
            match strip {
                true => route_match::strip_port(&lowered).into(),
                false => (*lowered).into(),
            }
        };
        let raw_path: Arc<str> = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .into();
        record.method = Some(req.method().clone());
        record.authority = Some(authority.clone());
        record.path = Some(raw_path.clone());
        record.scheme = Some(if info.tls { "https" } else { "http" });
        let unescaped = match c.escaped_slashes {
            EscapedSlashes::Keep => None,
            _ => path::unescape_slashes(&raw_path),
        };
        let redirect_unescaped = match (c.escaped_slashes, &unescaped) {
            (EscapedSlashes::Reject, Some(_)) => return Err((LocalReply::bad_path(), None)),
            (EscapedSlashes::Redirect, Some(_)) if grpc => {
                return Err((LocalReply::bad_path(), None))
            }
            (EscapedSlashes::Redirect, Some(_)) => true,
            _ => false,
        };
        let unescaped_path = unescaped.as_deref().unwrap_or(&raw_path);
        let path = match path::normalize(unescaped_path, c.normalize_path, c.merge_slashes) {
            Some(p) => p,
            None => return Err((LocalReply::bad_path(), None)),
        };
        if *path != *raw_path {
            *req.uri_mut() = path.parse().map_err(|_| (LocalReply::bad_path(), None))?;
            record.path = Some(path.as_ref().into());
        }
        if redirect_unescaped {
            record.response_code_details = "path_normalization_failed".into();
            let mut r = LocalReply::direct(307, Bytes::new()).response(false);
            if let Ok(location) = HeaderValue::from_str(&path) {
                r.headers_mut().insert(header::LOCATION, location);
            }
            return Ok((r, None));
        }
        // Client address, x-forwarded-*, request id.
        let peer_ip = info.remote.map(|a| a.ip());
        let remote = headers::downstream_address(
            req.headers(),
            peer_ip,
            c.use_remote_address,
            c.xff_num_trusted_hops,
        );
        record.downstream_remote = match (remote, info.remote) {
            (Some(ip), Some(peer)) if ip == peer.ip() => Some(peer),
            (Some(ip), _) => Some(std::net::SocketAddr::new(ip, 0)),
            (None, p) => p,
        };
        // Envoy 1.40 treats no address as internal unless `internal_address_config` lists
        // it (that field is not supported, so every client is external).
        let internal = false;
        if c.use_remote_address {
            if !c.skip_xff_append {
                // For a loopback peer Envoy appends the host's own address instead.
                let appended = match peer_ip {
                    Some(ip) if ip.is_loopback() => Some(server.local_address()),
                    other => other,
                };
                if let Some(ip) = appended {
                    headers::append_xff(req.headers_mut(), ip);
                }
            }
            if internal {
                req.headers_mut()
                    .insert("x-envoy-internal", HeaderValue::from_static("true"));
            } else {
                if let Some(ip) = remote.and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok())
                {
                    req.headers_mut()
                        .insert(headers::X_ENVOY_EXTERNAL_ADDRESS, ip);
                }
            }
            req.headers_mut().insert(
                headers::X_FORWARDED_PROTO,
                HeaderValue::from_static(if info.tls { "https" } else { "http" }),
            );
        } else if !req.headers().contains_key(&headers::X_FORWARDED_PROTO) {
            req.headers_mut().insert(
                headers::X_FORWARDED_PROTO,
                HeaderValue::from_static(if info.tls { "https" } else { "http" }),
            );
        }
        super::client_cert::apply(
            req.headers_mut(),
            c.forward_client_cert,
            c.client_cert_details,
            info.peer_certificate.as_deref(),
            info.local_uri_san.as_deref(),
        );
        if !internal {
            let edge = c.use_remote_address;
            headers::remove_where(req.headers_mut(), |name| {
                headers::removed_from_external(name, edge)
            });
        }
        let regenerate = c.use_remote_address && !internal && !c.preserve_external_request_id;
        if c.generate_request_id
            && (regenerate || !req.headers().contains_key(&headers::X_REQUEST_ID))
        {
            req.headers_mut()
                .insert(headers::X_REQUEST_ID, headers::uuid_v4());
        }
        let traced = c
            .tracing
            .as_ref()
            .map(|t| t.decide(req.headers_mut(), c.request_id));
        if let (Some(tracer), Some(traced)) = (&self.tracer, traced) {
            let context = tracer.start(req.headers(), !self.egress, traced);
            record.span = Some((context, String::new()));
        }
        let request_id = req.headers().get(&headers::X_REQUEST_ID).cloned();
        if self.record_request_headers {
            record.request_headers = req.headers().clone();
        }
        let fail = |r: LocalReply| (r, request_id.clone());
        if self.missing_filter_config {
            return Err(fail(LocalReply::missing_filter_config()));
        }

        // Route. No route matches a CONNECT (`connect_matcher` is not supported), but an
        // HTTP/2 extended CONNECT (a WebSocket, with `:protocol`) routes by its path.
        if req.method() == http::Method::CONNECT
            && req.extensions().get::<hyper::ext::Protocol>().is_none()
        {
            self.stats.no_route.inc();
            return Err(fail(LocalReply::no_route()));
        }
        let Some(routes) = c.routes.current() else {
            self.stats.no_route.inc();
            return Err(fail(LocalReply::no_route()));
        };
        let Some(vhost) = route_match::virtual_host(&routes, &authority) else {
            self.stats.no_route.inc();
            return Err(fail(LocalReply::no_route()));
        };
        let view = RequestView {
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
            headers: req.headers(),
            grpc,
        };
        let Some(route) = route_match::route(vhost, &view) else {
            self.stats.no_route.inc();
            return Err(fail(LocalReply::no_route()));
        };
        record.route_name = (!route.name.is_empty()).then(|| route.name.clone());
        if let Action::Forward(f) = &route.action {
            if let Some(idle) = f.idle_timeout {
                activity.override_idle(idle);
            }
            let from_header = f.grpc_timeout_header.filter(|_| grpc).and_then(|g| {
                let value = req.headers().get(&headers::GRPC_TIMEOUT)?.to_str().ok()?;
                Some(g.apply(crate::config::route::parse_grpc_timeout(value)?))
            });
            let hcm_limit = self.config.max_stream_duration;
            activity
                .set_max_duration(from_header.or_else(|| f.max_stream_duration.resolve(hcm_limit)));
        }
        let needs_tls = match vhost.require_tls {
            RequireTls::All => !info.tls,
            RequireTls::ExternalOnly => !info.tls && !internal,
            RequireTls::None => false,
        };
        let levels = [
            &route.response_headers,
            &vhost.response_headers,
            &routes.response_headers,
        ];
        let chosen = match &route.action {
            Action::Forward(f) => router::choose_cluster(f, req.headers()),
            _ => None,
        };
        let cluster_name = chosen.as_ref().map(|(n, _)| &**n);
        if let Some(name) =
            cluster_name.filter(|_| !self.istio.exchange.is_empty() || !self.istio.stats.is_empty())
        {
            record.istio.cluster = server
                .clusters
                .get(name)
                .and_then(|c| c.config.istio.clone());
        }
        let istio_cluster = cluster_name.map(|n| (n, record.istio.cluster.as_deref()));
        for x in &self.istio.exchange {
            x.on_request(req.headers_mut(), istio_cluster, &mut record.istio.peers);
        }
        if c.tracing.is_some() {
            self.start_span(&mut req, route, record);
        }
        let per_filter = [&route.per_filter, &vhost.per_filter, &routes.per_filter];
        if let Err(reply) = self.authorize(&req, info, remote, per_filter, record) {
            return Err(fail(reply));
        }
        let mut authz_response_headers = Vec::new();
        for f in &self.ext_authz {
            let settings = match per_filter.iter().find_map(|l| l.get(&f.config.name)) {
                Some(PerFilter::Disabled) => continue,
                Some(PerFilter::ExtAuthz(p)) if p.disabled => continue,
                Some(PerFilter::ExtAuthz(p)) => Some(p.as_ref()),
                _ => None,
            };
            if f.config
                .enabled_metadata
                .as_ref()
                .is_some_and(|m| !m.matches(Some(&record.metadata)))
            {
                continue;
            }
            let stream_id = record.connection_id.to_string();
            let (checked, decision) = f.check(server, req, info, settings, &stream_id).await;
            req = checked;
            match decision {
                super::ext_authz::Decision::Allow(headers) => {
                    authz_response_headers.extend(headers)
                }
                super::ext_authz::Decision::Deny(reply, headers) => {
                    record.flags.insert(reply.flag);
                    record.response_code_details = reply.details.clone();
                    let mut r = reply.response(grpc);
                    for (name, value, action) in headers {
                        action.apply(r.headers_mut(), name, value);
                    }
                    return Ok((r, request_id));
                }
            }
        }
        let injected = self
            .inject_faults(req.headers(), per_filter, cluster_name, record)
            .await;
        if let Some(reply) = injected.reply {
            return Err(fail(reply));
        }
        let mut resp = if needs_tls {
            self.stats.rq_redirect.inc();
            let r = Redirect {
                scheme: Some("https".into()),
                host: None,
                port: None,
                path: None,
                prefix: None,
                regex: None,
                status: 301,
                strip_query: false,
            };
            redirect(&r, &authority, &req, route)
        } else {
            match &route.action {
                Action::Direct { status, body } => {
                    self.stats.rq_direct_response.inc();
                    let reply = LocalReply::direct(*status, body.clone());
                    record.response_code_details = reply.details.clone();
                    reply.response(grpc)
                }
                Action::Redirect(r) => {
                    self.stats.rq_redirect.inc();
                    record.response_code_details = "redirect".into();
                    redirect(r, &authority, &req, route)
                }
                Action::Forward(f) => {
                    if let Some(reply) = upgrade_check(&mut req, &c.upgrades, &f.upgrades) {
                        return Err(fail(reply));
                    }
                    let ctx = RouteContext {
                        server,
                        route,
                        forward: f,
                        vhost,
                        routes: &routes,
                        conn: info,
                        suppress_envoy_headers: c.suppress_envoy_headers,
                        cluster: chosen,
                        alpn: self.alpn.as_deref(),
                        record_request_headers: self.record_request_headers,
                        activity,
                    };
                    let upgrade = req.headers().contains_key(header::UPGRADE)
                        && req.version() != Version::HTTP_2;
                    let mut req = req;
                    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
                    match router::forward(ctx, req, record).await {
                        Ok(mut r) => {
                            if r.status() == StatusCode::SWITCHING_PROTOCOLS {
                                if let Some(down) = downstream_upgrade {
                                    let up = hyper::upgrade::on(&mut r);
                                    tokio::spawn(splice_upgrade(down, up));
                                }
                            }
                            r
                        }
                        Err(reply) => {
                            if reply.flag == ResponseFlags::NO_CLUSTER_FOUND {
                                self.stats.no_cluster.inc();
                            }
                            record.flags.insert(reply.flag);
                            record.response_code_details = reply.details.clone();
                            let mut r = reply.response(grpc);
                            // A circuit breaker's 503 says so, as Envoy's router does.
                            if reply.flag == ResponseFlags::UPSTREAM_OVERFLOW
                                && !c.suppress_envoy_headers
                            {
                                r.headers_mut().insert(
                                    super::headers::X_ENVOY_OVERLOADED,
                                    HeaderValue::from_static("true"),
                                );
                            }
                            if vhost.include_attempt_count_in_response && record.attempt_count > 0 {
                                r.headers_mut().insert(
                                    super::headers::X_ENVOY_ATTEMPT_COUNT,
                                    HeaderValue::from(record.attempt_count),
                                );
                            }
                            r
                        }
                    }
                }
            }
        };
        router::apply_levels(
            resp.headers_mut(),
            &levels,
            routes.most_specific_wins,
            record,
        );
        for (name, value, action) in authz_response_headers {
            action.apply(resp.headers_mut(), name, value);
        }
        let istio_cluster = record
            .upstream_cluster
            .as_deref()
            .map(|n| (n, record.istio.cluster.as_deref()));
        let mut peers = std::mem::take(&mut record.istio.peers);
        for x in self.istio.exchange.iter().rev() {
            x.on_response(resp.headers_mut(), istio_cluster, &mut peers);
        }
        record.istio.peers = peers;
        if let Some(counts) = record.grpc_messages.clone() {
            resp = resp.map(|b| super::grpc_stats::CountedMessages::new(b, counts, true).boxed());
        }
        if let Some(t) = injected.throttle {
            resp = resp.map(|body| Throttled::new(body, t.bytes_per_second, t.active).boxed());
        }
        Ok((resp, request_id))
    }

    /// Names the request's span and sends its context upstream: an outbound span takes
    /// the route's decorator (which goes upstream as `x-envoy-decorator-operation`), an
    /// inbound one the caller's `x-envoy-decorator-operation`, else the decorator; with
    /// neither, the `host`.
    fn start_span(
        &self,
        req: &mut Request<Body>,
        route: &crate::config::route::Route,
        record: &mut Record,
    ) {
        const OPERATION: &str = "x-envoy-decorator-operation";
        let host = headers::authority(req).to_string();
        let from_caller = (!self.egress)
            .then(|| req.headers().get(OPERATION).and_then(|v| v.to_str().ok()))
            .flatten()
            .map(str::to_string);
        if self.egress {
            if let Some(op) = route
                .decorator
                .as_deref()
                .and_then(|d| HeaderValue::from_str(d).ok())
            {
                req.headers_mut().insert(OPERATION, op);
            }
        }
        let name = from_caller
            .or_else(|| route.decorator.clone())
            .unwrap_or(host);
        if let Some((context, span_name)) = &mut record.span {
            *span_name = name;
            context.inject(req.headers_mut());
        }
    }

    /// Runs the RBAC filters in order, each with the most specific `RBACPerRoute` of the
    /// route, virtual host or route configuration in place of its own rules; the first
    /// denial answers 403.
    fn authorize(
        &self,
        req: &Request<Body>,
        info: &ConnectionInfo,
        remote: Option<std::net::IpAddr>,
        levels: [&PerFilterConfigs; 3],
        record: &mut Record,
    ) -> Result<(), LocalReply> {
        if self.rbac.is_empty() {
            return Ok(());
        }
        let authority = headers::authority(req);
        for (filter, stats) in &self.rbac {
            let rules = match levels.iter().find_map(|l| l.get(&filter.name)) {
                Some(PerFilter::Disabled | PerFilter::Rbac(None)) => continue,
                Some(PerFilter::Rbac(Some(r))) => r,
                Some(PerFilter::Fault(_) | PerFilter::ExtAuthz(_)) | None => &filter.rules,
            };
            let subject = crate::rbac::Subject {
                conn: info,
                request: Some(crate::rbac::RequestFacts {
                    headers: req.headers(),
                    method: req.method().as_str(),
                    path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
                    authority,
                    scheme: if info.tls { "https" } else { "http" },
                    remote,
                }),
                metadata: Some(&record.metadata),
            };
            let verdict = crate::rbac::enforce(rules, stats, &subject);
            verdict.record_shadow(rules, &mut record.metadata);
            if let Some(policy) = verdict.denied {
                return Err(LocalReply::rbac_denied(&policy));
            }
        }
        Ok(())
    }

    /// Runs the configured fault filters in order, each with the most specific
    /// `typed_per_filter_config` of the route, virtual host or route configuration in place
    /// of its own; the first abort ends the request, the first rate limit paces the
    /// response.
    async fn inject_faults(
        &self,
        headers: &http::HeaderMap,
        levels: [&PerFilterConfigs; 3],
        cluster: Option<&str>,
        record: &mut Record,
    ) -> fault::Injected {
        let mut injected = fault::Injected::default();
        let Some(stats) = self.fault_stats.as_ref() else {
            return injected;
        };
        for f in &self.config.filters {
            if let HttpFilterConfig::Fault(name, own) = f {
                let cfg = match levels.iter().find_map(|l| l.get(name)) {
                    Some(PerFilter::Disabled) => continue,
                    Some(PerFilter::Fault(c)) => c,
                    // Another filter type's config: as Envoy, the filter keeps its own.
                    Some(PerFilter::Rbac(_) | PerFilter::ExtAuthz(_)) | None => own,
                };
                let this = fault::apply(cfg, stats, headers, cluster, record).await;
                injected.throttle = injected.throttle.or(this.throttle);
                if this.reply.is_some() {
                    injected.reply = this.reply;
                    return injected;
                }
            }
        }
        injected
    }

    fn complete(
        &self,
        record: &mut Record,
        duration: std::time::Duration,
        sent: u64,
        received: u64,
        ended: bool,
    ) {
        let stats = &self.stats;
        stats.rq_active.dec();
        stats.rq_completed.inc();
        let class = (record.response_code / 100).wrapping_sub(1) as usize;
        if let (Some(a), Some(b)) = (
            stats.rq_class.get(class),
            stats.listener_rq_class.get(class),
        ) {
            a.inc();
            b.inc();
        }
        record.duration = duration;
        stats.rq_time.record(record.duration.as_millis() as u64);
        record.bytes_sent = sent;
        record.bytes_received = received;
        if !ended {
            record
                .flags
                .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        }
        if let (Some((root, _)), Some(counts)) = (&self.grpc_stats, &record.grpc_messages) {
            super::grpc_stats::record(root, record, counts);
        }
        if !self.istio.stats.is_empty() {
            let grpc = headers::is_grpc(&record.request_headers);
            // Istio's `request.total_size` / `response.total_size`: Envoy's header
            // byte size plus the body.
            let bytes = (
                record.request_headers_bytes() + record.bytes_received,
                record.response_headers_bytes() + record.bytes_sent,
            );
            let shared = self.grpc_stats.as_ref().is_some_and(|(_, emit)| *emit);
            let messages = record.grpc_messages.as_deref().filter(|_| shared);
            for s in &self.istio.stats {
                s.record(record, grpc, bytes, messages);
            }
        }
        if let (Some(tracer), Some(config), Some((context, name))) =
            (&self.tracer, &self.config.tracing, &record.span)
        {
            if context.sampled {
                tracer.report(&crate::trace::zipkin::Span {
                    context: *context,
                    name,
                    server: !self.egress,
                    start: record.start_time,
                    duration: record.duration,
                    service: crate::istio::local_node_cluster(),
                    local_ip: crate::trace::zipkin::local_ip(),
                    tags: crate::trace::tags::of(record, config),
                });
            }
        }
        for l in &self.access_logs {
            l.log(record);
        }
    }
}

/// The answer to an upgrade neither the route nor the connection manager enables, else
/// `None`. An HTTP/1.1 client's offer to switch to HTTP/2 (`Upgrade: h2c`, which curl
/// `--http2` and Java's HttpClient send) is no upgrade to forward: as Envoy, the proxy
/// drops the offer (`upgrade` and `http2-settings` here, `connection` as hop-by-hop in
/// the router) and serves the request as HTTP/1.1.
fn upgrade_check(
    req: &mut Request<Body>,
    hcm: &[(String, bool)],
    route: &[(String, bool)],
) -> Option<LocalReply> {
    let kind = req
        .headers()
        .get(header::UPGRADE)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    if kind == "h2c" {
        req.headers_mut().remove(header::UPGRADE);
        req.headers_mut().remove("http2-settings");
        return None;
    }
    let enabled = route
        .iter()
        .find(|(t, _)| *t == kind)
        .map(|(_, e)| *e)
        .or_else(|| hcm.iter().find(|(t, _)| *t == kind).map(|(_, e)| *e))
        .unwrap_or(false);
    (!enabled).then(LocalReply::upgrade_failed)
}

async fn splice_upgrade(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (Ok(down), Ok(up)) = (down.await, up.await) else {
        return;
    };
    let mut down = TokioIo::new(down);
    let mut up = TokioIo::new(up);
    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
}

fn redirect(
    r: &Redirect,
    authority: &str,
    req: &Request<Body>,
    route: &crate::config::route::Route,
) -> Response<Body> {
    let scheme = r
        .scheme
        .clone()
        .unwrap_or_else(|| req.uri().scheme_str().unwrap_or("http").to_string());
    let bare = route_match::strip_port(authority);
    let port = authority[bare.len()..]
        .strip_prefix(':')
        .map(str::to_string);
    let mut host = bare.to_string();
    if let Some(h) = &r.host {
        host = h.clone();
    }
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p.to_string()),
        (None, Some(_)) => None,
        (None, None) => port,
    };
    let port =
        port.filter(|p| !((scheme == "http" && p == "80") || (scheme == "https" && p == "443")));
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let (path, query) = pq
        .split_once('?')
        .map(|(p, q)| (p, Some(q)))
        .unwrap_or((pq, None));
    let new_path = if let Some(p) = &r.path {
        p.clone()
    } else if let Some(prefix) = &r.prefix {
        let matched = match &route.matcher.path {
            crate::config::route::PathMatch::Prefix(p)
            | crate::config::route::PathMatch::SeparatedPrefix(p)
            | crate::config::route::PathMatch::Path(p) => p.len(),
            crate::config::route::PathMatch::Regex(_) => path.len(),
        };
        format!("{prefix}{}", &path[matched.min(path.len())..])
    } else if let Some((re, sub)) = &r.regex {
        re.replace_all(path, sub.as_str()).into_owned()
    } else {
        path.to_string()
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port {
        location.push(':');
        location.push_str(&p);
    }
    location.push_str(&new_path);
    let keep_query = !r.strip_query && r.path.as_ref().is_none_or(|p| !p.contains('?'));
    if let (Some(q), true) = (query, keep_query) {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

/// RFC 7231 IMF-fixdate for the `date` header.
/// RFC 7231 IMF-fixdate for the `date` header, formatted once per second per thread.
fn httpdate() -> HeaderValue {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, HeaderValue)> = const { std::cell::RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != second {
            let text = crate::access_log::time::format(now, "%a, %d %b %Y %H:%M:%S GMT");
            *c = (
                second,
                HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("")),
            );
        }
        c.1.clone()
    })
}

/// Counts request body bytes as they are read, and tells the stream's activity when the
/// body is complete or failed.
struct CountedBody {
    inner: hyper::body::Incoming,
    counter: Arc<Counter>,
    activity: Arc<StreamActivity>,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                self.activity.touch();
                if let Some(d) = f.data_ref() {
                    self.counter.add(d.len() as u64);
                }
                if self.inner.is_end_stream() {
                    self.activity.request_complete();
                }
            }
            Poll::Ready(None) => self.activity.request_complete(),
            Poll::Ready(Some(Err(e))) => self
                .activity
                .request_failed(super::stream_timeouts::BodyFailure::of(e)),
            Poll::Pending => {}
        }
        r.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The head deadline's view of a connection: heads are awaited while no stream is
/// active; a head that ran out of time is a stream of its own, counted and logged as
/// Envoy does, and answered 408.
struct HeadWatcher {
    hcm: Arc<HttpConnectionManager>,
    conn: Arc<ConnState>,
    info: Arc<ConnectionInfo>,
}

impl HeadWatch for HeadWatcher {
    fn awaiting_head(&self) -> bool {
        self.conn.active.load(Ordering::Relaxed) == 0 && !self.conn.upgraded.load(Ordering::Relaxed)
    }

    fn timed_out(&self, kind: HeadTimeout, waited: std::time::Duration) -> Vec<u8> {
        let stats = &self.hcm.stats;
        let reply = match kind {
            HeadTimeout::RequestHeaders => {
                stats.rq_header_timeout.inc();
                LocalReply::request_header_timeout()
            }
            HeadTimeout::StreamIdle => {
                stats.rq_idle_timeout.inc();
                LocalReply::stream_idle_timeout(false)
            }
        };
        stats.rq_total.inc();
        stats.rq_http1_total.inc();
        stats.rq_active.inc();
        let mut record = self.info.record();
        record.protocol = "HTTP/1.1";
        record.response_code = reply.status.as_u16();
        record.response_code_details = reply.details.clone();
        record.flags.insert(reply.flag);
        let sent = reply.body.len() as u64;
        self.hcm.complete(&mut record, waited, sent, 0, true);
        let c = &self.hcm.config;
        let server = (c.server_header != ServerHeader::PassThrough).then_some(&c.server_name);
        reply.http1_closing(server, &httpdate())
    }
}

/// Why a connection's serve loop woke for something other than the connection itself.
#[derive(PartialEq)]
enum ConnEvent {
    /// Close it gracefully: the connection was told to, or its chain's drain time is over.
    Shutdown,
    /// The idle timer ran: close it if nothing happened meanwhile.
    IdleCheck,
}

/// Completes a stream exactly once: stats, the connection's active-stream count, and the
/// access log. Dropping it before the response body ended records a downstream
/// disconnect (`DC`).
struct Finish {
    hcm: Arc<HttpConnectionManager>,
    conn: Arc<ConnState>,
    record: Record,
    started: Instant,
    received: Arc<Counter>,
    sent: u64,
    ended: bool,
    done: bool,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let now = Instant::now();
        self.conn.stream_ended(now);
        self.hcm.complete(
            &mut self.record,
            now - self.started,
            self.sent,
            self.received.value(),
            self.ended,
        );
    }
}

/// The response body as sent downstream: counts bytes and completes the stream when it
/// ends or is dropped (a client that went away).
struct LoggedBody {
    inner: Body,
    finish: Finish,
    /// The stream idle timeout and its timer, restarted by every frame.
    idle: Option<(std::time::Duration, LazyTimer)>,
    /// The route's `max_stream_duration` timer: the response is reset when it fires.
    max_duration: Option<LazyTimer>,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        let now = match &r {
            Poll::Pending => None,
            Poll::Ready(Some(Ok(_))) if self.idle.is_some() || self.max_duration.is_some() => {
                Some(tokio::time::Instant::now())
            }
            Poll::Ready(_) => return self.account(r),
        };
        if let Some(e) = self.timed_out(now, cx) {
            return Poll::Ready(Some(Err(e)));
        }
        self.account(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl LoggedBody {
    /// The error that ends the response when one of its timers ran out: `now` after a
    /// frame (the timers are then only compared with the clock, and the idle one
    /// restarted), or `None` when waiting (the timers are then armed to wake the task).
    fn timed_out(
        &mut self,
        now: Option<tokio::time::Instant>,
        cx: &mut Context<'_>,
    ) -> Option<BoxError> {
        if self
            .max_duration
            .as_mut()
            .is_some_and(|t| t.expired(now, cx))
        {
            self.finish.hcm.stats.rq_max_duration_reached.inc();
            self.finish
                .record
                .flags
                .insert(ResponseFlags::DURATION_TIMEOUT);
            return Some("max stream duration reached".into());
        }
        let (period, timer) = self.idle.as_mut()?;
        if !timer.idle_expired(*period, now, cx) {
            return None;
        }
        self.finish
            .record
            .flags
            .insert(ResponseFlags::STREAM_IDLE_TIMEOUT);
        Some("stream idle timeout".into())
    }

    /// Counts a frame's bytes and trailers into the stream's record, and notes its end.
    fn account(
        &mut self,
        r: Poll<Option<Result<Frame<Bytes>, BoxError>>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.finish.sent += d.len() as u64;
                }
                if let Some(t) = f.trailers_ref() {
                    self.finish.record.response_trailers = t.clone();
                }
            }
            Poll::Ready(None) => self.finish.ended = true,
            Poll::Ready(Some(Err(_))) => self
                .finish
                .record
                .flags
                .insert(ResponseFlags::UPSTREAM_REMOTE_RESET),
            Poll::Pending => {}
        }
        r
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // The codec may stop polling once content-length bytes are written.
        let exact = http_body::Body::size_hint(&self.inner).exact();
        if http_body::Body::is_end_stream(&self.inner)
            || exact.is_some_and(|n| self.finish.sent >= n)
        {
            self.finish.ended = true;
        }
    }
}
