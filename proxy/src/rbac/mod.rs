//! Role-based access control (`envoy.config.rbac.v3.RBAC`), shared by the HTTP filter
//! (`envoy.filters.http.rbac`) and the network filter (`envoy.filters.network.rbac`):
//! compiled policies and their evaluation against a connection and, for HTTP, a request.
//! Istio's AuthorizationPolicies arrive as these filters on every inbound chain.

pub mod translate;
pub mod uri_template;

use crate::config::common::{Cidr, StringMatch};
use crate::config::route::HeaderMatch;
use crate::listener::ConnectionInfo;
use std::net::IpAddr;

/// What a matching policy means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Only requests some policy matches are allowed.
    Allow,
    /// Requests some policy matches are denied.
    Deny,
    /// Everything is allowed (a match only marks the request for access logs, which
    /// meshproxy's loggers do not filter on; Envoy counts no more than `allowed`).
    Log,
}

/// A compiled `RBAC` message: the action and its named policies, in name order (the
/// first matching name is the one reported, as Envoy iterates its sorted map).
#[derive(Debug, Clone)]
pub struct Engine {
    /// The action.
    pub action: Action,
    /// `(name, policy)`, sorted by name.
    pub policies: Vec<(String, Policy)>,
}

/// A policy: some permission and some principal must match.
#[derive(Debug, Clone)]
pub struct Policy {
    /// What is being done.
    pub permissions: Vec<Rule>,
    /// Who does it.
    pub principals: Vec<Rule>,
}

/// One permission or principal rule (both share their leaves).
#[derive(Debug, Clone)]
pub enum Rule {
    /// Every member matches.
    And(Vec<Rule>),
    /// Some member matches.
    Or(Vec<Rule>),
    /// The inner rule does not match.
    Not(Box<Rule>),
    /// `any`.
    Constant(bool),
    /// The request's dynamic metadata (what earlier RBAC filters wrote; nothing on a
    /// connection).
    Metadata(crate::http::metadata::MetadataMatch),
    /// A request header by name, pseudo-headers included (the condition's own name is a
    /// placeholder for those); never matches on a connection.
    Header(String, HeaderMatch),
    /// The request path without its query (never matches on a connection).
    UrlPath(StringMatch),
    /// The request path (without its query) matches a URI template (never matches on a
    /// connection).
    UriTemplate(uri_template::UriTemplate),
    /// The (original) destination address.
    DestinationIp(Cidr),
    /// The (original) destination port.
    DestinationPort(u16),
    /// The destination port in `[start, end)`.
    DestinationPortRange(i32, i32),
    /// The TLS SNI (empty when none).
    RequestedServerName(StringMatch),
    /// A TLS connection whose peer certificate's URI SANs, DNS SANs or subject match
    /// (`None`: any TLS connection).
    Authenticated(Option<StringMatch>),
    /// The socket peer's address.
    DirectRemoteIp(Cidr),
    /// The connection's remote address (PROXY protocol source when present).
    SourceIp(Cidr),
    /// The client address after `x-forwarded-for` processing (HTTP), else as
    /// [`Rule::SourceIp`].
    RemoteIp(Cidr),
    /// A string the connection's filter state holds under the key (Istio's
    /// `io.istio.peer_principal` and `io.istio.local_principal`, from `istio_authn`).
    FilterState(String, StringMatch),
}

/// What a request (or a connection) offers to the rules.
pub struct Subject<'a> {
    /// The downstream connection.
    pub conn: &'a ConnectionInfo,
    /// The HTTP request, when there is one.
    pub request: Option<RequestFacts<'a>>,
    /// The request's dynamic metadata so far.
    pub metadata: Option<&'a crate::http::metadata::DynamicMetadata>,
}

/// The parts of an HTTP request rules can read.
pub struct RequestFacts<'a> {
    /// Headers.
    pub headers: &'a http::HeaderMap,
    /// `:method`.
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// `:authority` (or `host`).
    pub authority: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
    /// The client address after `x-forwarded-for` processing.
    pub remote: Option<IpAddr>,
}

impl RequestFacts<'_> {
    /// A header's value as Envoy's header map holds it: pseudo-headers by name, `host`
    /// as `:authority`, several values comma-joined.
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match name {
            ":method" => Some(Cow::Borrowed(self.method)),
            ":path" => Some(Cow::Borrowed(self.path)),
            ":authority" | "host" => Some(Cow::Borrowed(self.authority)),
            ":scheme" => Some(Cow::Borrowed(self.scheme)),
            _ => crate::http::route_match::joined_header(self.headers, name),
        }
    }
}

impl Rule {
    /// Whether the rule matches the subject.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        let conn = s.conn;
        let ip_in = |cidr: &Cidr, ip: Option<IpAddr>| ip.is_some_and(|ip| cidr.contains(ip));
        match self {
            Rule::And(rules) => rules.iter().all(|r| r.matches(s)),
            Rule::Or(rules) => rules.iter().any(|r| r.matches(s)),
            Rule::Not(r) => !r.matches(s),
            Rule::Constant(b) => *b,
            Rule::Metadata(m) => m.matches(s.metadata),
            Rule::Header(name, m) => s.request.as_ref().is_some_and(|r| {
                crate::http::route_match::header_value_matches(m, r.header(name).as_deref())
            }),
            Rule::UrlPath(m) => s.request.as_ref().is_some_and(|r| {
                let path = r.path.split(['?', '#']).next().unwrap_or_default();
                m.matches(path)
            }),
            Rule::UriTemplate(t) => s.request.as_ref().is_some_and(|r| t.matches(r.path)),
            Rule::DestinationIp(c) => ip_in(c, conn.local.map(|a| a.ip())),
            Rule::DestinationPort(p) => conn.local.is_some_and(|a| a.port() == *p),
            Rule::DestinationPortRange(start, end) => conn
                .local
                .is_some_and(|a| (*start..*end).contains(&i32::from(a.port()))),
            Rule::RequestedServerName(m) => m.matches(conn.server_name.as_deref().unwrap_or("")),
            Rule::Authenticated(name) => {
                if !conn.tls {
                    return false;
                }
                let Some(m) = name else { return true };
                let Some(cert) = &conn.peer_certificate else {
                    return m.matches("");
                };
                cert.uris.iter().any(|u| m.matches(u))
                    || cert.dns.iter().any(|d| m.matches(d))
                    || m.matches(&cert.subject)
            }
            Rule::DirectRemoteIp(c) => ip_in(c, conn.direct_remote.map(|a| a.ip())),
            Rule::SourceIp(c) => ip_in(c, conn.remote.map(|a| a.ip())),
            Rule::RemoteIp(c) => {
                let remote = match &s.request {
                    Some(r) => r.remote,
                    None => conn.remote.map(|a| a.ip()),
                };
                ip_in(c, remote)
            }
            Rule::FilterState(key, m) => {
                let principals = conn.istio_principals.as_deref();
                let value = match key.as_str() {
                    "io.istio.peer_principal" => principals.map(|p| p.0.as_str()),
                    "io.istio.local_principal" => principals.map(|p| p.1.as_str()),
                    _ => None,
                };
                value.is_some_and(|v| m.matches(v))
            }
        }
    }
}

impl Engine {
    /// The first policy (by name) that matches.
    pub fn matching_policy(&self, s: &Subject<'_>) -> Option<&str> {
        self.policies
            .iter()
            .find(|(_, p)| {
                p.permissions.iter().any(|r| r.matches(s))
                    && p.principals.iter().any(|r| r.matches(s))
            })
            .map(|(name, _)| name.as_str())
    }

    /// Whether the subject is allowed, and the policy that decided (the matching one).
    pub fn decide(&self, s: &Subject<'_>) -> (bool, Option<&str>) {
        let matched = self.matching_policy(s);
        let allowed = match self.action {
            Action::Allow => matched.is_some(),
            Action::Deny => matched.is_none(),
            Action::Log => true,
        };
        (allowed, matched)
    }
}

/// One RBAC filter's counters: `<base><rules_stat_prefix>allowed|denied`
/// and `<base><shadow_stat_prefix>shadow_allowed|shadow_denied` (a dot after a prefix
/// that does not end with one).
#[derive(Debug)]
pub struct RbacStats {
    allowed: std::sync::Arc<crate::stats::Counter>,
    denied: std::sync::Arc<crate::stats::Counter>,
    shadow_allowed: std::sync::Arc<crate::stats::Counter>,
    shadow_denied: std::sync::Arc<crate::stats::Counter>,
}

impl RbacStats {
    /// The counters under `scope` at `base` (`rbac.` in a connection manager's scope, or
    /// the network filter's `<stat_prefix>rbac.`).
    pub fn new(scope: &crate::stats::Scope, base: &str, rules: &translate::RbacRules) -> Self {
        // Envoy joins a prefix and a name with a dot unless the prefix ends with one:
        // `rbac.` + `istio_dry_run_allow_` gives `rbac.istio_dry_run_allow_.shadow_allowed`.
        let counter = |prefix: &str, name: &str| {
            scope.counter(&crate::stats::join_prefix(&format!("{base}{prefix}"), name))
        };
        let enforced = |name: &str| counter(&rules.rules_stat_prefix, name);
        let shadow = |name: &str| counter(&rules.shadow_stat_prefix, name);
        RbacStats {
            allowed: enforced("allowed"),
            denied: enforced("denied"),
            shadow_allowed: shadow("shadow_allowed"),
            shadow_denied: shadow("shadow_denied"),
        }
    }
}

/// The dynamic metadata namespace the HTTP filter writes its shadow outcome under.
pub const METADATA_NAMESPACE: &str = "envoy.filters.http.rbac";

/// What one filter decided: the enforced rules' denial (the policy named in the response
/// details, or `none`), and the shadow rules' outcome for the dynamic metadata
/// (`<prefix>shadow_effective_policy_id`, `<prefix>shadow_engine_result`).
pub struct Verdict {
    /// `Some(policy)` when the enforced rules deny.
    pub denied: Option<String>,
    /// `(matched policy, allowed)` of the shadow rules, when there are some.
    pub shadow: Option<(Option<String>, bool)>,
}

impl Verdict {
    /// Writes the shadow outcome into the request's metadata as Envoy's filter does.
    pub fn record_shadow(
        &self,
        rules: &translate::RbacRules,
        md: &mut crate::http::metadata::DynamicMetadata,
    ) {
        let Some((policy, allowed)) = &self.shadow else {
            return;
        };
        let prefix = &rules.shadow_stat_prefix;
        if let Some(p) = policy {
            md.set(
                METADATA_NAMESPACE,
                &format!("{prefix}shadow_effective_policy_id"),
                p.clone(),
            );
        }
        let result = if *allowed { "allowed" } else { "denied" };
        md.set(
            METADATA_NAMESPACE,
            &format!("{prefix}shadow_engine_result"),
            result.into(),
        );
    }
}

/// Runs one filter's rules on the subject and counts them.
pub fn enforce(rules: &translate::RbacRules, stats: &RbacStats, s: &Subject<'_>) -> Verdict {
    let shadow = rules.shadow.as_ref().map(|engine| {
        let (allowed, policy) = engine.decide(s);
        match allowed {
            true => stats.shadow_allowed.inc(),
            false => stats.shadow_denied.inc(),
        }
        (policy.map(str::to_string), allowed)
    });
    let denied = rules.rules.as_ref().and_then(|engine| {
        let (allowed, policy) = engine.decide(s);
        if allowed {
            stats.allowed.inc();
            None
        } else {
            stats.denied.inc();
            Some(policy.unwrap_or("none").to_string())
        }
    });
    Verdict { denied, shadow }
}
