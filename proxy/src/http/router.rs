//! `envoy.filters.http.router`: picks the cluster and host, enforces circuit breakers and
//! the route timeout, rewrites the request, sends it through the worker's pool and streams
//! the response back, keeping the connection lease and the counters alive until the
//! response body ends.

use super::headers;
use super::local_reply::LocalReply;
use super::mirror;
use super::stream_timeouts::StreamActivity;
use crate::access_log::record::Record;
use crate::config::cluster::UpstreamProtocol;
use crate::config::retry::RetryPolicy;
use crate::config::route::{
    ClusterTarget, Forward, HashKind, HostRewrite, Route, RouteConfig, VirtualHost, WeightedTarget,
};
use crate::lazy_timer::LazyTimer;
use crate::listener::ConnectionInfo;
use crate::server::Server;
use crate::upstream::cluster::Cluster;
use crate::upstream::hash;
use crate::upstream::lb::LbContext;
use crate::upstream::outlier::monitor::Outcome;
use crate::upstream::pool::{self, Checkout, Lease, PoolError, Protocol};
use bytes::Bytes;
use filters::http::{Body, BoxError};
use http::{HeaderValue, Request, Response, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use rand::Rng;
use smallvec::SmallVec;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// What the router needs beyond the request.
pub struct RouteContext<'a> {
    /// The server (clusters).
    pub server: &'a Arc<Server>,
    /// The matched route.
    pub route: &'a Route,
    /// Its forward action.
    pub forward: &'a Forward,
    /// Its virtual host.
    pub vhost: &'a VirtualHost,
    /// The route configuration.
    pub routes: &'a RouteConfig,
    /// The downstream connection.
    pub conn: &'a ConnectionInfo,
    /// Router `suppress_envoy_headers`.
    pub suppress_envoy_headers: bool,
    /// The cluster chosen for this request (see [`choose_cluster`]); `None` answers 503 `NC`.
    pub cluster: Option<ChosenCluster<'a>>,
    /// The `istio.alpn` filter of the chain, if any: the upstream ALPN to offer.
    pub alpn: Option<&'a crate::istio::alpn::AlpnConfig>,
    /// The record keeps the request headers (for logs and stats): it gets them again
    /// once the router changed them, as Envoy's router edits the downstream headers.
    pub record_request_headers: bool,
    /// The stream's activity: it tells when the downstream request has fully arrived (an
    /// HTTP/1.1 upstream connection goes back to its pool only then, and the route
    /// timeout starts then).
    pub activity: &'a Arc<StreamActivity>,
}

/// A forward action's cluster for one request, and the weighted entry it came from.
pub type ChosenCluster<'a> = (Arc<str>, Option<&'a WeightedTarget>);

/// Resolves a forward action's cluster once per request (drawing the weighted choice), so
/// the filters before the router (the fault filter's `upstream_cluster`) and the router
/// agree on it, as they do in Envoy. `None` when a `cluster_header` is missing.
pub fn choose_cluster<'a>(f: &'a Forward, headers: &http::HeaderMap) -> Option<ChosenCluster<'a>> {
    match &f.target {
        ClusterTarget::Named(n) => Some((n.clone(), None)),
        ClusterTarget::Header(h) => headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(|n| (n.into(), None)),
        ClusterTarget::Weighted(targets, total) => {
            let t = pick_weighted(targets, *total);
            Some((t.name.clone(), Some(t)))
        }
    }
}

fn pick_weighted(targets: &[WeightedTarget], total: u64) -> &WeightedTarget {
    let mut r = rand::thread_rng().gen_range(0..total);
    for t in targets {
        if r < t.weight {
            return t;
        }
        r -= t.weight;
    }
    &targets[targets.len() - 1]
}

fn request_hash(
    f: &Forward,
    req: &Request<Body>,
    conn: &ConnectionInfo,
) -> (Option<u64>, Option<String>) {
    let mut h = None;
    let mut set_cookie = None;
    for p in &f.hash_policies {
        let value = match &p.kind {
            HashKind::Header(name) => {
                let vals: Vec<&[u8]> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect();
                (!vals.is_empty()).then(|| hash::hash_key(&vals.concat()))
            }
            HashKind::SourceIp => conn
                .remote
                .map(|a| hash::hash_key(a.ip().to_string().as_bytes())),
            HashKind::QueryParameter(name) => req.uri().query().and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then(|| hash::hash_key(v.as_bytes()))
                })
            }),
            HashKind::Cookie { name, ttl, path } => {
                let found = req
                    .headers()
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .find_map(|c| {
                        c.trim()
                            .strip_prefix(name.as_str())
                            .and_then(|r| r.strip_prefix('='))
                            .map(|v| v.trim_matches('"').to_string())
                    });
                match (found, ttl) {
                    (Some(v), _) => Some(hash::hash_key(v.as_bytes())),
                    (None, Some(ttl)) => {
                        let seed = format!(
                            "{}{}",
                            conn.remote.map(|a| a.to_string()).unwrap_or_default(),
                            conn.id
                        );
                        let v = format!("{:016x}", hash::hash_key(seed.as_bytes()));
                        let mut c = format!("{name}=\"{v}\"; Max-Age={}", ttl.as_secs());
                        if !path.is_empty() {
                            c.push_str(&format!("; Path={path}"));
                        }
                        c.push_str("; HttpOnly");
                        set_cookie = Some(c);
                        Some(hash::hash_key(v.as_bytes()))
                    }
                    (None, None) => None,
                }
            }
        };
        if let Some(v) = value {
            h = Some(hash::combine(h, v));
            if p.terminal {
                break;
            }
        }
    }
    (h, set_cookie)
}

fn rewrite_path(f: &Forward, route: &Route, path_and_query: &str) -> Option<String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let new_path = if let Some(prefix) = &f.prefix_rewrite {
        use crate::config::route::PathMatch;
        let matched_len = match &route.matcher.path {
            PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) => p.len(),
            PathMatch::Path(p) => p.len(),
            PathMatch::Regex(_) => path.len(),
        };
        format!("{prefix}{}", &path[matched_len.min(path.len())..])
    } else if let Some((re, sub)) = &f.regex_rewrite {
        re.replace_all(path, sub.as_str()).into_owned()
    } else {
        return None;
    };
    Some(match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    })
}

/// The request's route timeout: the route's, or for a gRPC request on a route with
/// `max_grpc_timeout` the one its `grpc-timeout` header asks for, which then goes
/// upstream as what the proxy allows (Envoy rewrites the header the same way).
fn route_timeout(f: &Forward, headers: &mut http::HeaderMap) -> Option<Duration> {
    let Some(g) = f.grpc_route_timeout.filter(|_| headers::is_grpc(headers)) else {
        return f.timeout;
    };
    let requested = headers
        .get(&headers::GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::config::route::parse_grpc_timeout);
    let timeout = g.timeout(requested);
    if let Some(t) = timeout {
        let value = crate::config::route::format_grpc_timeout(t);
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(headers::GRPC_TIMEOUT, v);
        }
    }
    timeout
}

/// Forwards a request; always returns a response (upstream or local reply).
pub async fn forward(
    ctx: RouteContext<'_>,
    mut req: Request<Body>,
    record: &mut Record,
) -> Result<Response<Body>, LocalReply> {
    let f = ctx.forward;
    let no_cluster = || {
        let mut reply = LocalReply::no_cluster();
        reply.status = f.cluster_not_found;
        reply
    };
    let Some((cluster_name, weighted)) = ctx.cluster.clone() else {
        return Err(no_cluster());
    };
    record.upstream_cluster = Some(cluster_name.clone());
    let Some(cluster) = ctx.server.clusters.get(&cluster_name) else {
        return Err(no_cluster());
    };
    record.cluster_found(&cluster.config);
    let Some(request_slot) = cluster.resources.requests.try_acquire() else {
        cluster.stats().rq_active_overflow.inc();
        return Err(LocalReply::overflow());
    };
    let (hash, set_cookie) = request_hash(f, &req, ctx.conn);
    let lb = LbContext {
        hash,
        original_dst: ctx.conn.local,
    };

    // Rewrite the request (the same for every attempt).
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Some(new) = rewrite_path(f, ctx.route, path_and_query) {
        let original =
            HeaderValue::from_str(path_and_query).unwrap_or(HeaderValue::from_static("/"));
        req.headers_mut().insert("x-envoy-original-path", original);
        *req.uri_mut() = new.parse().unwrap_or_else(|_| req.uri().clone());
    }
    let original_authority = record.authority.clone().unwrap_or_else(|| "".into());
    let upgrade = req.headers().get(http::header::UPGRADE).is_some();
    headers::strip_hop_by_hop(req.headers_mut(), upgrade);
    req.headers_mut().remove(http::header::EXPECT);
    let route_timeout = route_timeout(f, req.headers_mut());
    if let Some(t) = route_timeout {
        if !ctx.suppress_envoy_headers {
            req.headers_mut().insert(
                headers::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS,
                headers::decimal_value(t.as_millis() as u64),
            );
        }
    }
    if let Some(w) = weighted {
        headers::apply(req.headers_mut(), &w.request_headers, record);
    }
    let levels = [
        &ctx.route.request_headers,
        &ctx.vhost.request_headers,
        &ctx.routes.request_headers,
    ];
    apply_levels(
        req.headers_mut(),
        &levels,
        ctx.routes.most_specific_wins,
        record,
    );
    if ctx.record_request_headers {
        record.request_headers = req.headers().clone();
    }
    let downstream_h2 = req.version() == Version::HTTP_2;
    let protocol = upstream_protocol(&cluster, downstream_h2);
    let alpn = ctx
        .alpn
        .and_then(|a| a.for_request(cluster.config.protocol, req.version()));

    // A request can be replayed only if its body is buffered (bounded by the cluster's
    // buffer limit); upgrades are never retried.
    let policy = f
        .retry
        .as_deref()
        .or(ctx.vhost.retry.as_deref())
        .filter(|p| p.num_retries > 0 && !upgrade && p.allows_request(req.headers()));
    let (parts, body) = req.into_parts();
    let mirrors = mirror::targets(&f.mirrors, &parts.headers);
    let mut attempt_body = AttemptBody::new(
        body,
        &parts.headers,
        policy.is_some() || !mirrors.is_empty(),
        cluster.config.buffer_limit,
    )
    .await;
    if let (false, AttemptBody::Buffered(body)) = (mirrors.is_empty(), &attempt_body) {
        let authority = match &f.host_rewrite {
            HostRewrite::Literal(h) => h.as_str(),
            HostRewrite::None | HostRewrite::Auto => &original_authority,
        };
        let original = mirror::Original {
            parts: &parts,
            body: body.clone(),
            authority,
            downstream_h2,
            timeout: route_timeout,
        };
        mirror::start(ctx.server, mirrors, original);
    }
    let max_attempts = if attempt_body.replayable() {
        1 + policy.map_or(0, |p| p.num_retries)
    } else {
        1
    };

    let grpc = headers::is_grpc(&parts.headers);
    let mut parts = Some(parts);
    let now = tokio::time::Instant::now();
    let started = now.into_std();
    let deadline = route_timeout.map(|t| now + t);
    // The route timeout's timer, armed at most once: it limits the wait for the response
    // head and then goes with the body.
    let mut route_timer = deadline.map(LazyTimer::at);
    let rq_active = RqActive::new(&cluster);
    let mut tried: SmallVec<[(Arc<crate::upstream::host::Host>, u32); 2]> = SmallVec::new();
    let mut attempt = 0u32;
    // A retry occupies its `max_retries` (or budget) slot until it completes, as in Envoy:
    // the slot taken for retry n is held through attempt n+1.
    let mut _retry_in_flight: Option<crate::upstream::resources::Slot> = None;
    // Hedging: an attempt whose per-try timeout fires keeps going while the retry races
    // it; the first response that is not retried wins and the others are reset.
    let hedging = f.hedge.or(ctx.vhost.hedge).unwrap_or(false)
        && policy.is_some_and(|p| p.per_try_timeout.is_some());
    // Created only when hedging (a JoinSet allocates).
    let mut racing: Option<tokio::task::JoinSet<Finished>> = None;
    let mut launch = true;
    let (resp, lease, local, host, active) = 'attempts: loop {
        let (host, active, outcome) = if launch {
            attempt += 1;
            record.attempt_count = attempt;
            let Some((host, level)) = pick_host(&cluster, &lb, policy, attempt, &tried) else {
                return Err(LocalReply::no_healthy_upstream());
            };
            record.upstream_host = Some(host.address_string.clone());
            record.istio.upstream_workload = host.istio_workload.clone();
            tried.push((host.clone(), level));
            let authority = match &f.host_rewrite {
                HostRewrite::Literal(h) => h.as_str().into(),
                HostRewrite::Auto if !host.hostname.is_empty() => host.hostname.as_str().into(),
                HostRewrite::None | HostRewrite::Auto => original_authority.clone(),
            };
            // The last possible attempt takes the request's head; earlier ones copy it,
            // since a retry needs it again.
            let head = match parts.take_if(|_| attempt >= max_attempts) {
                Some(head) => head,
                None => clone_parts(parts.as_ref().expect("only the last attempt takes it")),
            };
            let mut req = Request::from_parts(head, attempt_body.take());
            if ctx.vhost.include_request_attempt_count {
                req.headers_mut().insert(
                    super::headers::X_ENVOY_ATTEMPT_COUNT,
                    headers::decimal_value(attempt.into()),
                );
            }
            let active = host.start_request();
            // The clock is read only when a per-try timeout needs it.
            let now = tokio::time::Instant::now;
            let idle_deadline = policy
                .and_then(|p| p.per_try_idle_timeout)
                .map(|t| now() + t);
            let per_try = [
                policy.and_then(|p| p.per_try_timeout).map(|t| now() + t),
                idle_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            let try_deadline = deadline.into_iter().chain(per_try).min();
            let exchange = {
                let (cluster, host, alpn) = (cluster.clone(), host.clone(), alpn.clone());
                let source = ctx.conn.upstream_source;
                async move {
                    let target = Target {
                        protocol,
                        alpn: alpn.as_ref(),
                        source,
                    };
                    let outcome = send(&cluster, &host, target, req, authority).await;
                    (host, Some(active), outcome)
                }
            };
            let finished = if hedging {
                let racing = racing.get_or_insert_with(tokio::task::JoinSet::new);
                racing.spawn(exchange);
                next_finished(racing, try_deadline).await
            } else if let (Some(timeout), Some(route), false) = (
                f.timeout,
                route_timer.as_mut(),
                ctx.activity.is_request_complete(),
            ) {
                // The body is still arriving (so this is the only attempt): Envoy's route
                // timeout starts once the request is complete; per-try limits still count
                // from the attempt's start.
                let routed = after_request(exchange, route, timeout, ctx.activity);
                match per_try {
                    Some(d) => tokio::time::timeout_at(d, routed).await.ok().flatten(),
                    None => routed.await,
                }
            } else {
                match (try_deadline, route_timer.as_mut()) {
                    (Some(d), Some(route)) if Some(d) == deadline => route.limit(exchange).await,
                    (Some(d), _) => tokio::time::timeout_at(d, exchange).await.ok(),
                    (None, _) => Some(exchange.await),
                }
            };
            let finished =
                finished.unwrap_or_else(|| (host.clone(), None, Err(SendError::Timeout)));
            if matches!(finished.2, Err(SendError::Timeout)) && idle_deadline == try_deadline {
                cluster.stats().rq_per_try_idle_timeout.inc();
            }
            finished
        } else {
            // No attempt left to start: wait for the racing ones until the route timeout.
            let last = tried.last().map(|(h, _)| h.clone());
            let racing = racing.get_or_insert_with(tokio::task::JoinSet::new);
            match (next_finished(racing, deadline).await, last) {
                (Some(finished), _) => finished,
                (None, Some(host)) => (host, None, Err(SendError::Timeout)),
                (None, None) => return Err(LocalReply::upstream_timeout()),
            }
        };
        // A reset caused by the client's own body (malformed, or cut off) is no upstream
        // failure: it neither feeds outlier detection nor is retried.
        let outcome = match (outcome, ctx.activity.request_failure()) {
            (Err(SendError::Reset { .. }), Some(how)) => Err(SendError::ClientBody(how)),
            (other, _) => other,
        };
        launch = true;
        if cluster.outlier_detector().is_some() {
            if let Some(result) = outlier_outcome(&outcome, grpc) {
                cluster.report(&host, result);
            }
        }
        let in_time = deadline.is_none_or(|d| tokio::time::Instant::now() < d);
        // Decide whether this attempt is final; retries need a slot of `max_retries` (or of
        // the retry budget).
        let retriable = match (&outcome, policy) {
            (_, None) => false,
            (Ok((resp, _, _)), Some(p)) => {
                p.retriable_response(resp.status().as_u16(), resp.headers())
            }
            (Err(SendError::Pool(PoolError::Connect(_))), Some(p)) => {
                p.retriable_failure(true, false)
            }
            (Err(SendError::Reset { refused, .. }), Some(p)) => {
                p.retriable_failure(false, *refused)
            }
            (Err(SendError::Timeout), Some(p)) => in_time && p.retriable_failure(false, false),
            (Err(SendError::Pool(PoolError::Overflow) | SendError::ClientBody(_)), Some(_)) => {
                false
            }
        };
        let retry_slot = if retriable && attempt < max_attempts {
            match cluster.resources.try_acquire_retry() {
                Some(slot) => Some(slot),
                None => {
                    cluster.stats().rq_retry_overflow.inc();
                    None
                }
            }
        } else {
            None
        };
        // A failure (or a response that would be retried) is not final while hedged
        // attempts are still racing: wait for them.
        let keep_racing = racing.as_ref().is_some_and(|r| !r.is_empty())
            && in_time
            && (retriable || outcome.is_err());
        if retriable && retry_slot.is_none() && !keep_racing {
            record
                .flags
                .insert(crate::access_log::record::ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        }
        match (outcome, retry_slot) {
            (_, None) if keep_racing => launch = false,
            (Ok((resp, lease, local)), None) => break (resp, lease, local, host, active),
            (Err(e), None) => {
                let reply = match e {
                    SendError::Pool(PoolError::Overflow) => LocalReply::overflow(),
                    SendError::Pool(PoolError::Connect(c)) => {
                        // A connect timeout has no transport failure reason in Envoy.
                        match c {
                            crate::upstream::connect::ConnectError::Timeout => {
                                LocalReply::connect_failure(true)
                            }
                            _ => {
                                let reason = c.to_string();
                                let reply = LocalReply::connect_failure(false)
                                    .with_transport_failure(&reason);
                                record.upstream_failure = Some(reason);
                                reply
                            }
                        }
                    }
                    SendError::Reset { protocol, .. } => {
                        cluster.stats().rq_rx_reset.inc();
                        match protocol {
                            true => LocalReply::upstream_protocol_error(),
                            false => LocalReply::upstream_reset(),
                        }
                    }
                    SendError::Timeout => {
                        cluster.stats().rq_timeout.inc();
                        LocalReply::upstream_timeout()
                    }
                    SendError::ClientBody(how) => LocalReply::bad_request_body(how),
                };
                return Err(if attempt > 1 {
                    reply.after_retries()
                } else {
                    reply
                });
            }
            (outcome, Some(slot)) => {
                _retry_in_flight = Some(slot);
                let stats = cluster.stats();
                stats.rq_retry.inc();
                let asked = match (&outcome, policy) {
                    (Ok((resp, _, _)), Some(p)) => p.rate_limited_backoff(resp.headers()),
                    _ => None,
                };
                let pause = match asked {
                    Some(pause) => {
                        stats.rq_retry_backoff_ratelimited.inc();
                        pause
                    }
                    None => {
                        stats.rq_retry_backoff_exponential.inc();
                        policy.map_or(Duration::ZERO, |p| p.backoff(attempt))
                    }
                };
                if deadline.is_some_and(|d| tokio::time::Instant::now() + pause >= d) {
                    cluster.stats().rq_timeout.inc();
                    return Err(LocalReply::upstream_timeout());
                }
                // A racing attempt that answers for good during the back-off wins at once.
                let resume = tokio::time::Instant::now() + pause;
                while let Some((host, active, outcome)) = match racing.as_mut() {
                    Some(racing) => next_finished(racing, Some(resume)).await,
                    None => None,
                } {
                    if let Some(result) = outlier_outcome(&outcome, grpc) {
                        cluster.report(&host, result);
                    }
                    if let Ok((resp, lease, local)) = outcome {
                        let retried = policy.is_some_and(|p| {
                            p.retriable_response(resp.status().as_u16(), resp.headers())
                        });
                        if !retried {
                            break 'attempts (resp, lease, local, host, active);
                        }
                    }
                }
                tokio::time::sleep_until(resume).await;
            }
        }
    };
    if attempt > 1 {
        cluster.stats().rq_retry_success.inc();
    }
    record.upstream_host = Some(host.address_string.clone());
    cluster.record_upstream_identity(&host, record);
    record.upstream_local = local;
    record.upstream_protocol = match resp.version() {
        http::Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    };
    let elapsed = started.elapsed();
    record.response_duration = Some(elapsed);
    cluster.stats().rq_time.record(elapsed.as_millis() as u64);
    cluster.stats().record_status(resp.status().as_u16());
    let (mut parts, body) = resp.into_parts();
    let switching = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(&mut parts.headers, switching);
    if !ctx.suppress_envoy_headers {
        parts.headers.insert(
            "x-envoy-upstream-service-time",
            headers::decimal_value(elapsed.as_millis() as u64),
        );
    }
    if ctx.vhost.include_attempt_count_in_response {
        parts.headers.insert(
            super::headers::X_ENVOY_ATTEMPT_COUNT,
            headers::decimal_value(attempt.into()),
        );
    }
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        parts.headers.append(http::header::SET_COOKIE, c);
    }
    if let Some(w) = weighted {
        headers::apply(&mut parts.headers, &w.response_headers, record);
    }
    let idle = policy.and_then(|p| p.per_try_idle_timeout);
    let body = UpstreamBody {
        inner: body,
        lease,
        request: ctx.activity.clone(),
        deadline: route_timer,
        idle: idle.map(|t| (t, LazyTimer::at(tokio::time::Instant::now() + t))),
        idle_timeouts: cluster.stats().rq_per_try_idle_timeout.clone(),
        _guards: (request_slot, active, rq_active),
    };
    Ok(Response::from_parts(parts, body.boxed()))
}

/// The protocol to speak to the cluster's hosts for a request that came in over HTTP/2
/// (`downstream_h2`) or not.
pub(super) fn upstream_protocol(cluster: &Cluster, downstream_h2: bool) -> Protocol {
    match cluster.config.protocol {
        UpstreamProtocol::Http1 => Protocol::Http1,
        UpstreamProtocol::Http2 => Protocol::Http2,
        // Auto negotiates by ALPN over TLS; without TLS it is HTTP/1.1 (as in Envoy).
        UpstreamProtocol::Auto if cluster.config.tls.is_some() => Protocol::Auto,
        UpstreamProtocol::Auto => Protocol::Http1,
        UpstreamProtocol::UseDownstream if downstream_h2 => Protocol::Http2,
        UpstreamProtocol::UseDownstream => Protocol::Http1,
    }
}

/// The host for attempt `attempt`: avoiding hosts already tried (previous_hosts, up to
/// `host_selection_retry_max_attempts` picks) and the priority levels the retry priority
/// excludes. Returns the host and its priority level.
fn pick_host(
    cluster: &Cluster,
    lb: &LbContext,
    policy: Option<&RetryPolicy>,
    attempt: u32,
    tried: &[(Arc<crate::upstream::host::Host>, u32)],
) -> Option<(Arc<crate::upstream::host::Host>, u32)> {
    // Only a previous_priorities policy reads the levels tried (no allocation otherwise).
    let levels: Vec<u32> = match policy {
        Some(p) if p.previous_priorities.is_some() => tried.iter().map(|(_, l)| *l).collect(),
        _ => Vec::new(),
    };
    let excluded = policy.map_or(&[][..], |p| p.excluded_priorities(attempt, &levels));
    let avoid = policy.filter(|p| p.avoid_previous_hosts);
    let picks = avoid.map_or(1, |p| p.host_selection_attempts);
    let mut host = None;
    for _ in 0..picks {
        host = cluster.pick_excluding(lb, excluded);
        match &host {
            Some((h, _))
                if avoid.is_some() && tried.iter().any(|(t, _)| t.address == h.address) =>
            {
                continue
            }
            _ => break,
        }
    }
    host
}

/// A copy of the request head for one attempt (extensions are not carried: upgrades are
/// never retried, and nothing else is read from them upstream).
pub(super) fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = p.method.clone();
    parts.uri = p.uri.clone();
    parts.version = p.version;
    parts.headers = p.headers.clone();
    parts
}

/// The request body across attempts: streamed once when no retry is possible, or buffered
/// (up to the cluster's buffer limit, when its size is known) so it can be replayed.
enum AttemptBody {
    Stream(Option<Body>),
    Buffered(Bytes),
}

impl AttemptBody {
    async fn new(body: Body, headers: &http::HeaderMap, retries: bool, limit: usize) -> Self {
        use http_body::Body as _;
        let known = body.size_hint().exact().map(|n| n as usize).or_else(|| {
            headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        match known {
            Some(n) if retries && n <= limit => match body.collect().await {
                Ok(c) => AttemptBody::Buffered(c.to_bytes()),
                Err(_) => AttemptBody::Stream(None),
            },
            _ => AttemptBody::Stream(Some(body)),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, AttemptBody::Buffered(_))
    }

    fn take(&mut self) -> Body {
        match self {
            AttemptBody::Buffered(b) => http_body_util::Full::new(b.clone())
                .map_err(|e| match e {})
                .boxed(),
            AttemptBody::Stream(s) => s
                .take()
                .unwrap_or_else(|| http_body_util::Empty::new().map_err(|e| match e {}).boxed()),
        }
    }
}

/// Applies route, virtual host and route-configuration mutations in Envoy's order.
pub fn apply_levels(
    h: &mut http::HeaderMap,
    levels: &[&crate::config::common::HeaderMutations; 3],
    most_specific_wins: bool,
    record: &Record,
) {
    if most_specific_wins {
        levels
            .iter()
            .rev()
            .for_each(|m| headers::apply(h, m, record));
    } else {
        levels.iter().for_each(|m| headers::apply(h, m, record));
    }
}

/// What an attempt tells outlier detection: the response status (for gRPC requests, the
/// `grpc-status` of a trailers-only response mapped to HTTP as Envoy maps it), a failed
/// or reset connection, or a timeout; nothing when no host was involved (overflow) or the
/// client's body failed.
pub(super) fn outlier_outcome(
    outcome: &Result<Exchange, SendError>,
    grpc: bool,
) -> Option<Outcome> {
    match outcome {
        Ok((resp, _, _)) => {
            let grpc_status = resp
                .headers()
                .get("grpc-status")
                .filter(|_| grpc)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok());
            Some(Outcome::Status(match grpc_status {
                Some(code) => grpc_to_http(code),
                None => resp.status().as_u16(),
            }))
        }
        Err(SendError::Pool(PoolError::Connect(_)) | SendError::Reset { .. }) => {
            Some(Outcome::ConnectFailed)
        }
        Err(SendError::Timeout) => Some(Outcome::Timeout),
        Err(SendError::Pool(PoolError::Overflow) | SendError::ClientBody(_)) => None,
    }
}

/// The HTTP status for a gRPC status code (the table of the gRPC HTTP mapping Envoy
/// applies).
fn grpc_to_http(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

pub(super) enum SendError {
    Pool(PoolError),
    /// The upstream reset or closed before responding; `refused` for an HTTP/2
    /// REFUSED_STREAM (safe to retry), `protocol` when what it sent was no HTTP
    /// response (Envoy answers 502 then).
    Reset {
        refused: bool,
        protocol: bool,
    },
    /// The per-try or route timeout elapsed.
    Timeout,
    /// The client's request body failed (a malformed chunk or trailers, or the client
    /// went away) while it was being sent: the client's fault, not the upstream's.
    ClientBody(super::stream_timeouts::BodyFailure),
}

fn reset(e: hyper::Error) -> SendError {
    // hyper surfaces h2's REFUSED_STREAM reason in its message.
    SendError::Reset {
        refused: e.to_string().contains("refused"),
        protocol: e.is_parse(),
    }
}

/// An attempt's end: its host, its active-request mark (kept with a response) and what
/// came back.
type Finished = (
    Arc<crate::upstream::host::Host>,
    Option<crate::upstream::host::ActiveRequest>,
    Result<Exchange, SendError>,
);

/// `exchange`'s output within the route timeout, which starts once the downstream
/// request is complete (as Envoy's does): `None` when it ran out first. The route's timer
/// moves to the new deadline and goes on to bound the response body.
async fn after_request<T>(
    exchange: impl std::future::Future<Output = T>,
    timer: &mut LazyTimer,
    timeout: Duration,
    activity: &StreamActivity,
) -> Option<T> {
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        biased;
        out = &mut exchange => return Some(out),
        () = activity.request_completed() => {}
    }
    timer.restart(tokio::time::Instant::now() + timeout);
    timer.limit(exchange).await
}

/// The next racing attempt to finish, or `None` when `until` comes first (or none is
/// racing; then it waits for `until`).
async fn next_finished(
    racing: &mut tokio::task::JoinSet<Finished>,
    until: Option<tokio::time::Instant>,
) -> Option<Finished> {
    let timer = async {
        match until {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        Some(Ok(finished)) = racing.join_next(), if !racing.is_empty() => Some(finished),
        _ = timer => None,
    }
}

/// A response with the HTTP/1 connection lease it came on and the local address used.
pub(super) type Exchange = (
    Response<hyper::body::Incoming>,
    Option<Lease>,
    Option<std::net::SocketAddr>,
);

/// How a request reaches its host: the pool's protocol, the ALPN override
/// (`istio.alpn`) and the downstream's source address (`original_src`).
pub(super) struct Target<'a> {
    pub protocol: Protocol,
    pub alpn: Option<&'a crate::istio::alpn::Alpn>,
    pub source: Option<crate::upstream::source::UpstreamSource>,
}

pub(super) async fn send(
    cluster: &Arc<Cluster>,
    host: &Arc<crate::upstream::host::Host>,
    target: Target<'_>,
    mut req: Request<Body>,
    authority: Arc<str>,
) -> Result<Exchange, SendError> {
    let Target {
        protocol,
        alpn,
        source,
    } = target;
    let pool = pool::for_host(cluster, host, protocol, alpn, source).map_err(SendError::Pool)?;
    let (checkout, local) = pool.checkout().await.map_err(SendError::Pool)?;
    // Envoy counts an upstream request once it has a connection to go on (each attempt;
    // overflowed ones are not counted).
    cluster.stats().rq_total.inc();
    cluster.report(host, Outcome::Connected);
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    match checkout {
        Checkout::Http1(mut lease) => {
            *req.version_mut() = Version::HTTP_11;
            if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                *req.uri_mut() = http::Uri::from(path_and_query);
            }
            let host_header = req.headers().get(http::header::HOST);
            if host_header.is_none_or(|h| h.as_bytes() != authority.as_bytes()) {
                if let Ok(v) = HeaderValue::from_str(&authority) {
                    req.headers_mut().insert(http::header::HOST, v);
                }
            }
            lease.sender().ready().await.map_err(reset)?;
            let resp = lease.sender().send_request(req).await.map_err(reset)?;
            Ok((resp, Some(lease), local))
        }
        Checkout::Http2(mut sender) => {
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(http::header::HOST);
            let authority = if authority.is_empty() {
                &host.address_string
            } else {
                &authority
            };
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(if cluster.config.tls.is_some() {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            });
            uri.authority = Some(authority.parse().map_err(|_| SendError::Reset {
                refused: false,
                protocol: false,
            })?);
            uri.path_and_query = Some(path_and_query);
            *req.uri_mut() = http::Uri::from_parts(uri).map_err(|_| SendError::Reset {
                refused: false,
                protocol: false,
            })?;
            sender.ready().await.map_err(reset)?;
            let resp = sender.send_request(req).await.map_err(reset)?;
            Ok((resp, None, local))
        }
    }
}

/// Counts the exchange in `upstream_rq_active` from the moment it starts until it is over,
/// whichever way it ends (including the downstream going away mid-request).
struct RqActive(Arc<Cluster>);

impl RqActive {
    fn new(c: &Arc<Cluster>) -> Self {
        c.stats().rq_active.inc();
        RqActive(c.clone())
    }
}

impl Drop for RqActive {
    fn drop(&mut self) {
        self.0.stats().rq_active.dec();
    }
}

/// The upstream response body: returns the HTTP/1.1 connection to the pool only after a
/// complete body of a completely sent request (else the lease's drop closes it), enforces
/// what is left of the route timeout, and holds the request's circuit-breaker slot and
/// active-request marks until it ends.
struct UpstreamBody<G> {
    inner: hyper::body::Incoming,
    lease: Option<Lease>,
    /// Tells whether the request has fully arrived, hence fully gone upstream.
    request: Arc<StreamActivity>,
    deadline: Option<LazyTimer>,
    /// The final attempt's `per_try_idle_timeout` and its timer, restarted by every frame.
    idle: Option<(Duration, LazyTimer)>,
    /// Counts a body abandoned by the idle timer.
    idle_timeouts: Arc<crate::stats::Counter>,
    _guards: G,
}

impl<G> UpstreamBody<G> {
    /// The exchange is over: the connection goes back to the pool if the request is
    /// complete too; otherwise (the upstream answered before reading all of it) the
    /// lease's drop closes it, as Envoy does.
    fn exchange_done(&mut self) {
        if let Some(l) = self.lease.take() {
            if self.request.is_request_complete() {
                l.release();
            }
        }
    }

    /// The error that ends the body when one of its timers ran out: `now` after a frame
    /// (the timers are then only compared with the clock, and the idle one restarted),
    /// or `None` when waiting (the timers are then armed to wake the task).
    fn timed_out(
        &mut self,
        now: Option<tokio::time::Instant>,
        cx: &mut Context<'_>,
    ) -> Option<BoxError> {
        if self.deadline.as_mut().is_some_and(|d| d.expired(now, cx)) {
            self.lease = None;
            return Some("upstream response timeout".into());
        }
        let (period, timer) = self.idle.as_mut()?;
        if !timer.idle_expired(*period, now, cx) {
            return None;
        }
        self.lease = None;
        self.idle = None;
        self.idle_timeouts.inc();
        Some("upstream per-try idle timeout".into())
    }
}

impl<G: Unpin> http_body::Body for UpstreamBody<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let timed = this.deadline.is_some() || this.idle.is_some();
        match polled {
            Poll::Pending => match this.timed_out(None, cx) {
                Some(e) => Poll::Ready(Some(Err(e))),
                None => Poll::Pending,
            },
            Poll::Ready(Some(Ok(_))) if timed => {
                match this.timed_out(Some(tokio::time::Instant::now()), cx) {
                    Some(e) => Poll::Ready(Some(Err(e))),
                    None => polled.map(|o| o.map(|r| r.map_err(Into::into))),
                }
            }
            Poll::Ready(None) => {
                this.exchange_done();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.lease = None;
                Poll::Ready(Some(Err(e.into())))
            }
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        // While a lease is held, let the codec poll to the end so the connection returns
        // to the pool even for empty bodies.
        self.lease.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<G> Drop for UpstreamBody<G> {
    fn drop(&mut self) {
        // The codec may stop polling once it has written content-length bytes; the
        // exchange is still complete if the upstream body is.
        if http_body::Body::is_end_stream(&self.inner) {
            self.exchange_done();
        }
    }
}
