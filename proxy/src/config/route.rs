//! Route configuration: virtual hosts, compiled route matchers and route actions.

use super::common::{
    self, fraction, header_mutations, string_matcher, HeaderMutations, StringMatch,
};
use super::error::{item, join, ConfigError, Result};
use super::per_filter::{self, PerFilterConfigs};
use super::retry::RetryPolicy;
use regex::Regex;
use std::sync::Arc;
use std::time::Duration;
use xds_client::proto::envoy::config::route::v3 as route;

/// Envoy's limit on a direct response's body when the route configuration's
/// `max_direct_response_body_size_bytes` is unset.
const DEFAULT_DIRECT_RESPONSE_BODY_LIMIT: usize = 4096;

/// Envoy's default route timeout when `timeout` is unset.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// A translated RouteConfiguration.
#[derive(Debug)]
pub struct RouteConfig {
    /// Name (for RDS and `/config_dump`).
    pub name: String,
    /// Virtual hosts in configuration order.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Strip the port from the host before matching domains.
    pub ignore_port_in_host_matching: bool,
    /// Route-configuration-level header mutations (request side).
    pub request_headers: HeaderMutations,
    /// Route-configuration-level header mutations (response side).
    pub response_headers: HeaderMutations,
    /// Apply the most specific level last (route wins) instead of the least specific.
    pub most_specific_wins: bool,
    /// Route-configuration-level `typed_per_filter_config`.
    pub per_filter: PerFilterConfigs,
}

/// How one entry of `domains` matches a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainMatch {
    /// `example.com` (lower case).
    Exact(String),
    /// `*.example.com` / `*-bar.example.com`: the suffix after `*`.
    Suffix(String),
    /// `example.*`: the prefix before `*`.
    Prefix(String),
    /// `*`.
    Any,
}

/// Whether a route requires TLS (`require_tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireTls {
    /// No requirement.
    None,
    /// Redirect every plaintext request to https.
    All,
    /// Redirect only requests with `x-forwarded-proto: http` arriving on an external address.
    ExternalOnly,
}

/// A translated VirtualHost.
#[derive(Debug)]
pub struct VirtualHost {
    /// Name (stats, logs).
    pub name: String,
    /// Domains.
    pub domains: Vec<DomainMatch>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    /// Virtual-host-level request header mutations.
    pub request_headers: HeaderMutations,
    /// Virtual-host-level response header mutations.
    pub response_headers: HeaderMutations,
    /// TLS requirement.
    pub require_tls: RequireTls,
    /// Send `x-envoy-attempt-count` upstream.
    pub include_request_attempt_count: bool,
    /// Send `x-envoy-attempt-count` downstream.
    pub include_attempt_count_in_response: bool,
    /// Retry policy for routes that have none of their own (boxed: most virtual hosts
    /// and routes have none, and one policy is about 200 bytes).
    pub retry: Option<Box<RetryPolicy>>,
    /// `hedge_policy.hedge_on_per_try_timeout` for routes without their own.
    pub hedge: Option<bool>,
    /// Virtual-host-level `typed_per_filter_config`.
    pub per_filter: PerFilterConfigs,
}

/// How the path is matched.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Starts with.
    Prefix(String),
    /// Equals.
    Path(String),
    /// Whole-path regex.
    Regex(Regex),
    /// Equals, or starts with followed by `/`, `?` or `#`.
    SeparatedPrefix(String),
}

/// A route's `max_stream_duration.max_stream_duration`, which overrides the connection
/// manager's `common_http_protocol_options.max_stream_duration` (Envoy's semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamDurationLimit {
    /// Unset: the connection manager's limit applies.
    FromHcm,
    /// Explicitly zero: no limit, not even the connection manager's.
    Unlimited,
    /// This limit.
    Limit(Duration),
}

impl StreamDurationLimit {
    /// The limit in force given the connection manager's.
    pub fn resolve(self, hcm: Option<Duration>) -> Option<Duration> {
        match self {
            StreamDurationLimit::FromHcm => hcm,
            StreamDurationLimit::Unlimited => None,
            StreamDurationLimit::Limit(d) => Some(d),
        }
    }
}

/// A header condition on a route.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Header name.
    pub name: http::HeaderName,
    /// The condition.
    pub kind: HeaderMatchKind,
    /// Negate the result.
    pub invert: bool,
    /// Match a missing header as the empty string.
    pub missing_as_empty: bool,
}

/// What a header must satisfy.
#[derive(Debug, Clone)]
pub enum HeaderMatchKind {
    /// A string matcher over the (comma-joined) value.
    String(StringMatch),
    /// Present (true) or absent (false).
    Present(bool),
    /// An integer in `[start, end)`.
    Range(i64, i64),
}

/// A query parameter condition.
#[derive(Debug, Clone)]
pub struct QueryMatch {
    /// Parameter name.
    pub name: String,
    /// `None` means "present".
    pub value: Option<StringMatch>,
    /// With `present_match: false`: must be absent.
    pub present: bool,
}

/// A compiled RouteMatch.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    /// The path condition.
    pub path: PathMatch,
    /// Case-sensitive path comparison (prefix and path only).
    pub case_sensitive: bool,
    /// Header conditions, all must hold.
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions, all must hold.
    pub query: Vec<QueryMatch>,
    /// Match only this fraction of requests (numerator, denominator).
    pub fraction: Option<(u64, u64)>,
    /// Match only gRPC requests.
    pub grpc: bool,
}

/// A cluster picked by a route.
#[derive(Debug, Clone)]
pub enum ClusterTarget {
    /// A named cluster.
    Named(Arc<str>),
    /// The cluster named by a request header.
    Header(http::HeaderName),
    /// A weighted choice.
    Weighted(Vec<WeightedTarget>, u64),
}

/// One entry of `weighted_clusters`.
#[derive(Debug, Clone)]
pub struct WeightedTarget {
    /// Cluster name.
    pub name: Arc<str>,
    /// Weight.
    pub weight: u64,
    /// Per-cluster request mutations.
    pub request_headers: HeaderMutations,
    /// Per-cluster response mutations.
    pub response_headers: HeaderMutations,
}

/// How the host header is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    /// Keep it.
    None,
    /// Replace with a literal.
    Literal(String),
    /// Replace with the upstream host's hostname (DNS clusters).
    Auto,
}

/// A hash policy entry (ring hash / maglev).
#[derive(Debug, Clone)]
pub struct HashPolicy {
    /// The input.
    pub kind: HashKind,
    /// Stop hashing when this one produced a value.
    pub terminal: bool,
}

/// Inputs of a hash policy.
#[derive(Debug, Clone)]
pub enum HashKind {
    /// A request header.
    Header(http::HeaderName),
    /// A cookie; with `ttl` a missing cookie is generated and set on the response.
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: String,
    },
    /// The downstream source IP.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

/// Forwarding to a cluster.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Which cluster.
    pub target: ClusterTarget,
    /// Replace the matched prefix.
    pub prefix_rewrite: Option<String>,
    /// Regex substitution on the path.
    pub regex_rewrite: Option<(Regex, String)>,
    /// Host rewrite.
    pub host_rewrite: HostRewrite,
    /// Whole-request timeout; `None` disables it (as does `max_stream_duration`).
    pub timeout: Option<Duration>,
    /// Stream idle timeout override.
    pub idle_timeout: Option<Option<Duration>>,
    /// Hash policies.
    pub hash_policies: Vec<HashPolicy>,
    /// Route-level upgrade overrides (type, enabled).
    pub upgrades: Vec<(String, bool)>,
    /// `max_stream_duration.max_stream_duration`.
    pub max_stream_duration: StreamDurationLimit,
    /// `max_stream_duration.grpc_timeout_header_max`/`_offset`: a gRPC request's
    /// `grpc-timeout` header sets its max stream duration.
    pub grpc_timeout_header: Option<GrpcTimeoutHeader>,
    /// `max_grpc_timeout`/`grpc_timeout_offset`: a gRPC request's `grpc-timeout` header
    /// sets its route timeout (`None` when unset, or when `max_stream_duration` is set,
    /// which makes Envoy ignore them).
    pub grpc_route_timeout: Option<GrpcRouteTimeout>,
    /// `cluster_not_found_response_code`: the status when the cluster does not exist.
    pub cluster_not_found: http::StatusCode,
    /// Retry policy (overrides the virtual host's; boxed like the virtual host's).
    pub retry: Option<Box<RetryPolicy>>,
    /// `hedge_policy.hedge_on_per_try_timeout` (overrides the virtual host's).
    pub hedge: Option<bool>,
    /// `request_mirror_policies`: clusters that get a copy of (a share of) the requests.
    pub mirrors: Vec<super::mirror::MirrorPolicy>,
}

/// How a gRPC request's `grpc-timeout` header becomes its max stream duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcTimeoutHeader {
    /// The cap (`None`: `grpc_timeout_header_max` is 0, the header is used as is).
    pub max: Option<Duration>,
    /// Subtracted from the header's value.
    pub offset: Duration,
}

impl GrpcTimeoutHeader {
    /// The max stream duration for a request whose `grpc-timeout` says `requested`.
    pub fn apply(&self, requested: Duration) -> Duration {
        let capped = self.max.map_or(requested, |m| requested.min(m));
        capped.saturating_sub(self.offset)
    }
}

/// The deprecated `max_grpc_timeout` and `grpc_timeout_offset` (every Istio route since
/// 1.20 sets `max_grpc_timeout: 0s`), in whole milliseconds as Envoy computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcRouteTimeout {
    /// The cap; 0: none.
    pub max_ms: u64,
    /// Subtracted from the header's value when smaller than it.
    pub offset_ms: u64,
}

impl GrpcRouteTimeout {
    /// The route timeout of a gRPC request whose `grpc-timeout` says `requested` (`None`:
    /// absent or malformed); `None` means no timeout. The request's value (0, "infinity",
    /// when absent) less the offset if that leaves time, capped by a non-zero max.
    pub fn timeout(&self, requested: Option<Duration>) -> Option<Duration> {
        let mut ms = requested.map_or(0, |d| d.as_millis() as u64);
        if self.offset_ms < ms {
            ms -= self.offset_ms;
        }
        if self.max_ms != 0 && (ms == 0 || ms > self.max_ms) {
            ms = self.max_ms;
        }
        (ms != 0).then(|| Duration::from_millis(ms))
    }
}

/// Writes a timeout as a `grpc-timeout` value: milliseconds, or the smallest coarser unit
/// that fits gRPC's 8 digits (hours clipped to 8 digits).
pub fn format_grpc_timeout(t: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let ms = t.as_millis();
    if ms <= MAX {
        return format!("{ms}m");
    }
    let mut value = ms / 1000;
    for (unit, next) in [("S", 60), ("M", 60)] {
        if value <= MAX {
            return format!("{value}{unit}");
        }
        value /= next;
    }
    format!("{}H", value.min(MAX))
}

fn grpc_route_timeout(ra: &route::RouteAction, path: &str) -> Result<Option<GrpcRouteTimeout>> {
    #[allow(deprecated)]
    let (max, offset) = (&ra.max_grpc_timeout, &ra.grpc_timeout_offset);
    let Some(max) = max else {
        if offset.is_some() {
            return Err(ConfigError::at(
                join(path, "grpc_timeout_offset"),
                "has no effect without max_grpc_timeout",
            ));
        }
        return Ok(None);
    };
    let ms = |d: &xds_client::proto::google::protobuf::Duration, field: &str| {
        common::duration(d, &join(path, field)).map(|d| d.as_millis() as u64)
    };
    let timeout = GrpcRouteTimeout {
        max_ms: ms(max, "max_grpc_timeout")?,
        offset_ms: offset
            .as_ref()
            .map(|o| ms(o, "grpc_timeout_offset"))
            .transpose()?
            .unwrap_or(0),
    };
    Ok(ra.max_stream_duration.is_none().then_some(timeout))
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn grpc_timeout_header(ra: &route::RouteAction, path: &str) -> Result<Option<GrpcTimeoutHeader>> {
    let Some(m) = &ra.max_stream_duration else {
        return Ok(None);
    };
    let p = join(path, "max_stream_duration");
    let Some(max) = &m.grpc_timeout_header_max else {
        if m.grpc_timeout_header_offset.is_some() {
            return Err(ConfigError::at(
                join(&p, "grpc_timeout_header_offset"),
                "has no effect without grpc_timeout_header_max",
            ));
        }
        return Ok(None);
    };
    Ok(Some(GrpcTimeoutHeader {
        max: common::timeout(Some(max), None, &join(&p, "grpc_timeout_header_max"))?,
        offset: match &m.grpc_timeout_header_offset {
            Some(o) => common::duration(o, &join(&p, "grpc_timeout_header_offset"))?,
            None => Duration::ZERO,
        },
    }))
}

/// A redirect.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// New scheme (`https_redirect` gives `https`).
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New path.
    pub path: Option<String>,
    /// New prefix for the matched prefix.
    pub prefix: Option<String>,
    /// Regex substitution on the path.
    pub regex: Option<(Regex, String)>,
    /// Status code.
    pub status: u16,
    /// Drop the query string.
    pub strip_query: bool,
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Proxy upstream.
    Forward(Box<Forward>),
    /// Answer with a redirect.
    Redirect(Box<Redirect>),
    /// Answer directly.
    Direct { status: u16, body: bytes::Bytes },
}

/// A translated Route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name (shared with every access-log record of a request it routes).
    pub name: Arc<str>,
    /// Condition.
    pub matcher: RouteMatcher,
    /// Action.
    pub action: Action,
    /// Route-level request header mutations.
    pub request_headers: HeaderMutations,
    /// Route-level response header mutations.
    pub response_headers: HeaderMutations,
    /// Decorator operation (`x-envoy-decorator-operation`).
    pub decorator: Option<String>,
    /// Route-level `typed_per_filter_config`.
    pub per_filter: PerFilterConfigs,
}

/// Translates a RouteConfiguration.
pub fn translate(rc: &route::RouteConfiguration, path: &str) -> Result<RouteConfig> {
    // `max_direct_response_body_size_bytes` (default 4 KiB) bounds every direct
    // response's body.
    let body_limit = rc
        .max_direct_response_body_size_bytes
        .as_ref()
        .map_or(DEFAULT_DIRECT_RESPONSE_BODY_LIMIT, |v| v.value as usize);
    let virtual_hosts = common::each(&rc.virtual_hosts, path, "virtual_hosts", |vh, p| {
        virtual_host(vh, body_limit, p)
    })?;
    let mut seen = std::collections::HashSet::new();
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        for d in &vh.domains {
            if !seen.insert(d.to_ascii_lowercase()) {
                return Err(ConfigError::at(
                    format!("{}[{i}].domains", join(path, "virtual_hosts")),
                    format!("only unique values for domains are permitted; duplicate entry of domain {d}"),
                ));
            }
        }
    }
    Ok(RouteConfig {
        per_filter: per_filter::translate(&rc.typed_per_filter_config, path)?,
        name: rc.name.clone(),
        virtual_hosts,
        ignore_port_in_host_matching: rc.ignore_port_in_host_matching,
        request_headers: header_mutations(
            &rc.request_headers_to_add,
            &rc.request_headers_to_remove,
            path,
            "request_headers_to_add",
            "request_headers_to_remove",
        )?,
        response_headers: header_mutations(
            &rc.response_headers_to_add,
            &rc.response_headers_to_remove,
            path,
            "response_headers_to_add",
            "response_headers_to_remove",
        )?,
        most_specific_wins: rc.most_specific_header_mutations_wins,
    })
}

fn domain(d: &str, path: &str) -> Result<DomainMatch> {
    let d = d.to_ascii_lowercase();
    if d == "*" {
        Ok(DomainMatch::Any)
    } else if let Some(s) = d.strip_prefix('*') {
        Ok(DomainMatch::Suffix(s.to_string()))
    } else if let Some(p) = d.strip_suffix('*') {
        Ok(DomainMatch::Prefix(p.to_string()))
    } else if d.contains('*') {
        Err(ConfigError::at(
            path,
            format!("invalid domain {d}: wildcards only at the start or end"),
        ))
    } else {
        Ok(DomainMatch::Exact(d))
    }
}

fn virtual_host(vh: &route::VirtualHost, body_limit: usize, path: &str) -> Result<VirtualHost> {
    let domains = common::each(&vh.domains, path, "domains", |d, p| domain(d, p))?;
    let routes = common::each(&vh.routes, path, "routes", |r, p| {
        translate_route(r, body_limit, p)
    })?;
    Ok(VirtualHost {
        per_filter: per_filter::translate(&vh.typed_per_filter_config, path)?,
        name: vh.name.clone(),
        domains,
        routes,
        request_headers: header_mutations(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            path,
            "request_headers_to_add",
            "request_headers_to_remove",
        )?,
        response_headers: header_mutations(
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
            path,
            "response_headers_to_add",
            "response_headers_to_remove",
        )?,
        require_tls: match vh.require_tls {
            1 => RequireTls::ExternalOnly,
            2 => RequireTls::All,
            _ => RequireTls::None,
        },
        include_request_attempt_count: vh.include_request_attempt_count,
        include_attempt_count_in_response: vh.include_attempt_count_in_response,
        retry: vh
            .retry_policy
            .as_ref()
            .map(|r| super::retry::translate(r, &join(path, "retry_policy")).map(Box::new))
            .transpose()?,
        hedge: vh
            .hedge_policy
            .as_ref()
            .map(|h| super::retry::hedge(h, &join(path, "hedge_policy")))
            .transpose()?,
    })
}

fn translate_route(r: &route::Route, body_limit: usize, path: &str) -> Result<Route> {
    let m = r
        .r#match
        .as_ref()
        .ok_or_else(|| ConfigError::at(join(path, "match"), "match is required"))?;
    let matcher = route_matcher(m, &join(path, "match"))?;
    use route::route::Action as A;
    let action = match &r.action {
        Some(A::Route(ra)) => Action::Forward(Box::new(forward(ra, &join(path, "route"))?)),
        Some(A::Redirect(rd)) => Action::Redirect(Box::new(redirect(rd, &join(path, "redirect"))?)),
        Some(A::DirectResponse(dr)) => {
            let p = join(path, "direct_response");
            if !(200..=599).contains(&dr.status) {
                return Err(ConfigError::at(
                    join(&p, "status"),
                    format!("status {} out of range [200, 600)", dr.status),
                ));
            }
            let body = match &dr.body {
                Some(b) => common::data_source(b, &join(&p, "body"))?,
                None => Vec::new(),
            };
            if body.len() > body_limit {
                return Err(ConfigError::at(
                    join(&p, "body"),
                    format!(
                        "response body size is {} bytes; maximum is {body_limit} (max_direct_response_body_size_bytes)",
                        body.len()
                    ),
                ));
            }
            Action::Direct {
                status: dr.status as u16,
                body: body.into(),
            }
        }
        Some(_) => {
            return Err(ConfigError::at(
                path,
                "route action not supported (filter_action / non_forwarding_action)",
            ))
        }
        None => {
            return Err(ConfigError::at(
                path,
                "route needs one of route, redirect, direct_response",
            ))
        }
    };
    Ok(Route {
        per_filter: per_filter::translate(&r.typed_per_filter_config, path)?,
        name: r.name.as_str().into(),
        matcher,
        action,
        request_headers: header_mutations(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            path,
            "request_headers_to_add",
            "request_headers_to_remove",
        )?,
        response_headers: header_mutations(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            path,
            "response_headers_to_add",
            "response_headers_to_remove",
        )?,
        decorator: r.decorator.as_ref().map(|d| d.operation.clone()),
    })
}

fn route_matcher(m: &route::RouteMatch, path: &str) -> Result<RouteMatcher> {
    use route::route_match::PathSpecifier as P;
    let case_sensitive = m.case_sensitive.as_ref().map(|b| b.value).unwrap_or(true);
    let fold = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_ascii_lowercase()
        }
    };
    let path_match = match &m.path_specifier {
        Some(P::Prefix(p)) => PathMatch::Prefix(fold(p)),
        Some(P::Path(p)) => PathMatch::Path(fold(p)),
        Some(P::SafeRegex(r)) => PathMatch::Regex(common::regex(r, &join(path, "safe_regex"))?),
        Some(P::PathSeparatedPrefix(p)) => {
            if p.ends_with('/') || p.contains(['?', '#']) {
                return Err(ConfigError::at(
                    join(path, "path_separated_prefix"),
                    "must not end with / or contain ? or #",
                ));
            }
            PathMatch::SeparatedPrefix(fold(p))
        }
        Some(_) => {
            return Err(ConfigError::at(
                path,
                "path specifier not supported (connect_matcher / path_match_policy)",
            ))
        }
        None => return Err(ConfigError::at(path, "a path specifier is required")),
    };
    let headers = common::each(&m.headers, path, "headers", header_match)?;
    let query = m
        .query_parameters
        .iter()
        .enumerate()
        .map(|(i, q)| {
            use route::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
            let p = item(path, "query_parameters", i);
            let (value, present) = match &q.query_parameter_match_specifier {
                Some(Q::StringMatch(s)) => {
                    (Some(string_matcher(s, &join(&p, "string_match"))?), true)
                }
                Some(Q::PresentMatch(b)) => (None, *b),
                None => (None, true),
            };
            Ok(QueryMatch {
                name: q.name.clone(),
                value,
                present,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let fraction = m
        .runtime_fraction
        .as_ref()
        .map(|rf| rf.default_value.as_ref().map(fraction).unwrap_or((0, 100)));
    Ok(RouteMatcher {
        path: path_match,
        case_sensitive,
        headers,
        query,
        fraction,
        grpc: m.grpc.is_some(),
    })
}

/// Translates a `HeaderMatcher` that may name a pseudo-header (RBAC, access-log
/// filters): the condition is compiled under a placeholder name (header maps cannot name
/// `:method`) and the header is read by the returned (lower-case) name.
pub(crate) fn any_header_match(
    h: &route::HeaderMatcher,
    path: &str,
) -> Result<(String, HeaderMatch)> {
    let name = h.name.to_ascii_lowercase();
    let condition = if name.starts_with(':') {
        let mut placeholder = h.clone();
        placeholder.name = "x-pseudo-header".into();
        header_match(&placeholder, path)?
    } else {
        header_match(h, path)?
    };
    Ok((name, condition))
}

/// Translates one `HeaderMatcher` (routes and the fault filter share Envoy's semantics).
pub(crate) fn header_match(h: &route::HeaderMatcher, path: &str) -> Result<HeaderMatch> {
    use route::header_matcher::HeaderMatchSpecifier as S;
    let exact = |s: &str| HeaderMatchKind::String(StringMatch::Exact(s.to_string(), false));
    let kind = match &h.header_match_specifier {
        Some(S::ExactMatch(s)) => exact(s),
        Some(S::SafeRegexMatch(r)) => HeaderMatchKind::String(StringMatch::Regex(common::regex(
            r,
            &join(path, "safe_regex_match"),
        )?)),
        Some(S::RangeMatch(r)) => HeaderMatchKind::Range(r.start, r.end),
        Some(S::PresentMatch(b)) => HeaderMatchKind::Present(*b),
        Some(S::PrefixMatch(s)) => HeaderMatchKind::String(StringMatch::Prefix(s.clone(), false)),
        Some(S::SuffixMatch(s)) => HeaderMatchKind::String(StringMatch::Suffix(s.clone(), false)),
        Some(S::ContainsMatch(s)) => {
            HeaderMatchKind::String(StringMatch::Contains(s.clone(), false))
        }
        Some(S::StringMatch(s)) => {
            HeaderMatchKind::String(string_matcher(s, &join(path, "string_match"))?)
        }
        None => HeaderMatchKind::Present(true),
    };
    let name =
        http::HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()).map_err(|_| {
            ConfigError::at(
                join(path, "name"),
                format!("invalid header name {:?}", h.name),
            )
        })?;
    Ok(HeaderMatch {
        name,
        kind,
        invert: h.invert_match,
        missing_as_empty: h.treat_missing_header_as_empty,
    })
}

fn regex_substitution(
    r: &xds_client::proto::envoy::r#type::matcher::v3::RegexMatchAndSubstitute,
    path: &str,
) -> Result<(Regex, String)> {
    let pattern = r
        .pattern
        .as_ref()
        .ok_or_else(|| ConfigError::at(join(path, "pattern"), "pattern is required"))?;
    let re = Regex::new(&pattern.regex)
        .map_err(|e| ConfigError::at(join(path, "pattern.regex"), format!("invalid regex: {e}")))?;
    // RE2 substitutions use \1; the regex crate uses ${1}.
    let sub = Regex::new(r"\\(\d)")
        .expect("static regex")
        .replace_all(&r.substitution, "$${$1}")
        .into_owned();
    Ok((re, sub))
}

fn upgrades(list: impl Iterator<Item = (String, Option<bool>)>) -> Vec<(String, bool)> {
    list.map(|(t, e)| (t.to_ascii_lowercase(), e.unwrap_or(true)))
        .collect()
}

fn forward(ra: &route::RouteAction, path: &str) -> Result<Forward> {
    use route::route_action::{ClusterSpecifier as C, HostRewriteSpecifier as H};
    let target = match &ra.cluster_specifier {
        Some(C::Cluster(c)) if !c.is_empty() => ClusterTarget::Named(c.as_str().into()),
        Some(C::ClusterHeader(h)) => ClusterTarget::Header(
            http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                ConfigError::at(join(path, "cluster_header"), "invalid header name")
            })?,
        ),
        Some(C::WeightedClusters(wc)) => weighted(wc, &join(path, "weighted_clusters"))?,
        Some(C::Cluster(_)) | None => {
            return Err(ConfigError::at(
                path,
                "route needs cluster, cluster_header or weighted_clusters",
            ))
        }
        Some(_) => {
            return Err(ConfigError::at(
                path,
                "cluster specifier plugins are not supported",
            ))
        }
    };
    let host_rewrite = match &ra.host_rewrite_specifier {
        Some(H::HostRewriteLiteral(h)) => HostRewrite::Literal(h.clone()),
        Some(H::AutoHostRewrite(b)) if b.value => HostRewrite::Auto,
        Some(H::AutoHostRewrite(_)) | None => HostRewrite::None,
        Some(_) => {
            return Err(ConfigError::at(
                path,
                "host rewrite from header / path regex is not supported",
            ))
        }
    };
    let hash_policies = common::each(&ra.hash_policy, path, "hash_policy", hash_policy)?;
    Ok(Forward {
        target,
        prefix_rewrite: (!ra.prefix_rewrite.is_empty()).then(|| ra.prefix_rewrite.clone()),
        regex_rewrite: ra
            .regex_rewrite
            .as_ref()
            .map(|r| regex_substitution(r, &join(path, "regex_rewrite")))
            .transpose()?,
        host_rewrite,
        // A route with `max_stream_duration` uses Envoy's "new" timeouts: its `timeout`
        // (and the 15 s default) no longer applies, the stream duration limits do.
        timeout: common::timeout(
            ra.timeout.as_ref(),
            Some(DEFAULT_ROUTE_TIMEOUT),
            &join(path, "timeout"),
        )?
        .filter(|_| ra.max_stream_duration.is_none()),
        idle_timeout: ra
            .idle_timeout
            .as_ref()
            .map(|d| common::timeout(Some(d), None, &join(path, "idle_timeout")))
            .transpose()?,
        hash_policies,
        upgrades: upgrades(
            ra.upgrade_configs
                .iter()
                .map(|u| (u.upgrade_type.clone(), u.enabled.as_ref().map(|b| b.value))),
        ),
        max_stream_duration: match ra
            .max_stream_duration
            .as_ref()
            .and_then(|m| m.max_stream_duration.as_ref())
        {
            Some(d) => match common::timeout(
                Some(d),
                None,
                &join(path, "max_stream_duration.max_stream_duration"),
            )? {
                Some(limit) => StreamDurationLimit::Limit(limit),
                None => StreamDurationLimit::Unlimited,
            },
            None => StreamDurationLimit::FromHcm,
        },
        grpc_timeout_header: grpc_timeout_header(ra, path)?,
        grpc_route_timeout: grpc_route_timeout(ra, path)?,
        cluster_not_found: match ra.cluster_not_found_response_code {
            0 => http::StatusCode::SERVICE_UNAVAILABLE,
            1 => http::StatusCode::NOT_FOUND,
            2 => http::StatusCode::INTERNAL_SERVER_ERROR,
            n => {
                return Err(ConfigError::at(
                    join(path, "cluster_not_found_response_code"),
                    format!("unknown response code {n}"),
                ))
            }
        },
        retry: ra
            .retry_policy
            .as_ref()
            .map(|r| super::retry::translate(r, &join(path, "retry_policy")).map(Box::new))
            .transpose()?,
        hedge: ra
            .hedge_policy
            .as_ref()
            .map(|h| super::retry::hedge(h, &join(path, "hedge_policy")))
            .transpose()?,
        mirrors: common::each(
            &ra.request_mirror_policies,
            path,
            "request_mirror_policies",
            super::mirror::translate,
        )?,
    })
}

fn weighted(wc: &route::WeightedCluster, path: &str) -> Result<ClusterTarget> {
    let mut targets = Vec::new();
    for (i, c) in wc.clusters.iter().enumerate() {
        let p = item(path, "clusters", i);
        if c.name.is_empty() {
            return Err(ConfigError::at(
                join(&p, "name"),
                "cluster name is required",
            ));
        }
        targets.push(WeightedTarget {
            name: c.name.as_str().into(),
            weight: c.weight.as_ref().map(|w| u64::from(w.value)).unwrap_or(0),
            request_headers: header_mutations(
                &c.request_headers_to_add,
                &c.request_headers_to_remove,
                &p,
                "request_headers_to_add",
                "request_headers_to_remove",
            )?,
            response_headers: header_mutations(
                &c.response_headers_to_add,
                &c.response_headers_to_remove,
                &p,
                "response_headers_to_add",
                "response_headers_to_remove",
            )?,
        });
    }
    let sum: u64 = targets.iter().map(|t| t.weight).sum();
    let total = match &wc.total_weight {
        Some(t) if u64::from(t.value) != sum => {
            return Err(ConfigError::at(
                join(path, "total_weight"),
                format!(
                    "sum of weights {sum} does not equal total_weight {}",
                    t.value
                ),
            ))
        }
        _ => sum,
    };
    if total == 0 {
        return Err(ConfigError::at(
            path,
            "sum of weights must be greater than 0",
        ));
    }
    Ok(ClusterTarget::Weighted(targets, total))
}

fn hash_policy(hp: &route::route_action::HashPolicy, path: &str) -> Result<HashPolicy> {
    use route::route_action::hash_policy::PolicySpecifier as P;
    let kind = match &hp.policy_specifier {
        Some(P::Header(h)) => HashKind::Header(
            http::HeaderName::from_bytes(h.header_name.to_ascii_lowercase().as_bytes()).map_err(
                |_| ConfigError::at(join(path, "header.header_name"), "invalid header name"),
            )?,
        ),
        Some(P::Cookie(c)) => HashKind::Cookie {
            name: c.name.as_str().into(),
            ttl: c
                .ttl
                .as_ref()
                .map(|d| common::duration(d, &join(path, "cookie.ttl")))
                .transpose()?,
            path: c.path.clone(),
        },
        Some(P::ConnectionProperties(cp)) if cp.source_ip => HashKind::SourceIp,
        Some(P::QueryParameter(q)) => HashKind::QueryParameter(q.name.clone()),
        _ => {
            return Err(ConfigError::at(
                path,
                "hash policy not supported (filter_state / empty connection_properties)",
            ))
        }
    };
    Ok(HashPolicy {
        kind,
        terminal: hp.terminal,
    })
}

fn redirect(rd: &route::RedirectAction, path: &str) -> Result<Redirect> {
    use route::redirect_action::{PathRewriteSpecifier as P, SchemeRewriteSpecifier as S};
    let scheme = match &rd.scheme_rewrite_specifier {
        Some(S::HttpsRedirect(true)) => Some("https".to_string()),
        Some(S::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
        _ => None,
    };
    let (path_redirect, prefix, regex) = match &rd.path_rewrite_specifier {
        Some(P::PathRedirect(p)) => (Some(p.clone()), None, None),
        Some(P::PrefixRewrite(p)) => (None, Some(p.clone()), None),
        Some(P::RegexRewrite(r)) => (
            None,
            None,
            Some(regex_substitution(r, &join(path, "regex_rewrite"))?),
        ),
        Some(P::PathRewrite(_)) => {
            return Err(ConfigError::at(
                join(path, "path_rewrite"),
                "path templates are not supported",
            ))
        }
        None => (None, None, None),
    };
    let status = match rd.response_code {
        0 => 301,
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        n => {
            return Err(ConfigError::at(
                join(path, "response_code"),
                format!("unknown response code {n}"),
            ))
        }
    };
    Ok(Redirect {
        scheme,
        host: (!rd.host_redirect.is_empty()).then(|| rd.host_redirect.clone()),
        port: match rd.port_redirect {
            0 => None,
            p if p <= 65535 => Some(p as u16),
            _ => {
                return Err(ConfigError::at(
                    join(path, "port_redirect"),
                    "port out of range",
                ))
            }
        },
        path: path_redirect,
        prefix,
        regex,
        status,
        strip_query: rd.strip_query,
    })
}

impl RouteConfig {
    /// Whether any header value at any level uses command operators (they may read the
    /// request's headers, which the connection manager then has to keep).
    pub fn has_formatted_headers(&self) -> bool {
        let formatted = |m: &HeaderMutations| {
            m.add
                .iter()
                .any(|a| matches!(a.value, common::HeaderTemplate::Formatted(_)))
        };
        formatted(&self.request_headers)
            || formatted(&self.response_headers)
            || self.virtual_hosts.iter().any(|vh| {
                formatted(&vh.request_headers)
                    || formatted(&vh.response_headers)
                    || vh.routes.iter().any(|r| {
                        formatted(&r.request_headers)
                            || formatted(&r.response_headers)
                            || matches!(&r.action, Action::Forward(f) if matches!(&f.target, ClusterTarget::Weighted(ts, _) if ts.iter().any(|t| formatted(&t.request_headers) || formatted(&t.response_headers))))
                    })
            })
    }
}

/// A cluster a route configuration names statically (for `validate_clusters`).
pub struct ClusterReference<'a> {
    /// The virtual host naming it.
    pub virtual_host: &'a str,
    /// The cluster.
    pub cluster: &'a str,
    /// Whether it is a mirror (`request_mirror_policies`) target.
    pub shadow: bool,
}

/// The clusters a route configuration names statically.
pub fn referenced_clusters(rc: &RouteConfig) -> impl Iterator<Item = ClusterReference<'_>> {
    rc.virtual_hosts.iter().flat_map(|vh| {
        vh.routes.iter().flat_map(move |r| {
            let mut names: Vec<(&str, bool)> = Vec::new();
            if let Action::Forward(f) = &r.action {
                match &f.target {
                    ClusterTarget::Named(n) => names.push((n, false)),
                    ClusterTarget::Weighted(ts, _) => {
                        names.extend(ts.iter().map(|t| (&*t.name, false)))
                    }
                    ClusterTarget::Header(_) => {}
                }
                names.extend(f.mirrors.iter().filter_map(|m| match &m.target {
                    super::mirror::MirrorTarget::Named(n) => Some((n.as_str(), true)),
                    super::mirror::MirrorTarget::Header(_) => None,
                }));
            }
            names
                .into_iter()
                .map(move |(cluster, shadow)| ClusterReference {
                    virtual_host: &vh.name,
                    cluster,
                    shadow,
                })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_route_timeouts_follow_envoys_arithmetic() {
        let ms = Duration::from_millis;
        let uncapped = GrpcRouteTimeout {
            max_ms: 0,
            offset_ms: 0,
        };
        assert_eq!(uncapped.timeout(None), None, "no header: no timeout");
        assert_eq!(uncapped.timeout(Some(ms(400))), Some(ms(400)));
        assert_eq!(
            uncapped.timeout(Some(Duration::from_micros(900))),
            None,
            "under a millisecond is 0: no timeout"
        );
        let capped = GrpcRouteTimeout {
            max_ms: 300,
            offset_ms: 100,
        };
        assert_eq!(capped.timeout(None), Some(ms(300)));
        assert_eq!(capped.timeout(Some(ms(250))), Some(ms(150)));
        assert_eq!(
            capped.timeout(Some(ms(80))),
            Some(ms(80)),
            "an offset never takes all the time"
        );
    }

    #[test]
    fn grpc_timeouts_are_written_in_eight_digits() {
        assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(
            format_grpc_timeout(Duration::from_millis(99_999_999)),
            "99999999m"
        );
        assert_eq!(format_grpc_timeout(Duration::from_secs(100_000)), "100000S");
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(100_000_000)),
            "1666666M"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(6_000_000_000)),
            "1666666H"
        );
        assert_eq!(format_grpc_timeout(Duration::MAX), "99999999H");
    }

    #[test]
    fn grpc_timeout_values_parse_with_every_unit() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S", "1\u{e9}"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn grpc_timeout_is_capped_then_offset() {
        let g = GrpcTimeoutHeader {
            max: Some(Duration::from_secs(5)),
            offset: Duration::from_secs(1),
        };
        assert_eq!(g.apply(Duration::from_secs(10)), Duration::from_secs(4));
        assert_eq!(g.apply(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(g.apply(Duration::from_millis(500)), Duration::ZERO);
        let uncapped = GrpcTimeoutHeader {
            max: None,
            offset: Duration::ZERO,
        };
        assert_eq!(
            uncapped.apply(Duration::from_secs(100)),
            Duration::from_secs(100)
        );
    }
}
