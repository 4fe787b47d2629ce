//! From the RBAC protos to [`Engine`]s and the two filters' configs.
//!
//! Metadata matchers (`metadata` permissions and principals) read the request's dynamic
//! metadata: what earlier RBAC filters wrote of their shadow rules. The JWT claims
//! Istio's `requestPrincipals` read (`istio_authn`'s `request.auth.*`) are never there,
//! as meshproxy does not validate JWTs, so those rules never match.

use super::{Action, Engine, Policy, Rule};
use crate::config::common::{cidrs, string_matcher, Cidr, StringMatch};
use crate::config::error::{join, ConfigError, Result};
use crate::http::metadata::metadata_matcher;
use prost::Message;
use std::sync::Arc;
use xds_client::proto::envoy::config::core::v3::CidrRange;
use xds_client::proto::envoy::config::rbac::v3 as pb;
use xds_client::proto::envoy::r#type::matcher::v3 as matcher;

/// `envoy.extensions.filters.http.rbac.v3.RBAC`.
pub const HTTP_TYPE_NAME: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";
/// `envoy.extensions.filters.http.rbac.v3.RBACPerRoute`.
pub const PER_ROUTE_TYPE_NAME: &str = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute";
/// `envoy.extensions.filters.network.rbac.v3.RBAC`.
pub const NETWORK_TYPE_NAME: &str = "envoy.extensions.filters.network.rbac.v3.RBAC";

/// The enforced and shadow rules of one RBAC filter, with their stat prefixes.
#[derive(Debug, Clone, Default)]
pub struct RbacRules {
    /// Enforced rules (`None`: everything is allowed and nothing counted).
    pub rules: Option<Engine>,
    /// Rules evaluated and counted only.
    pub shadow: Option<Engine>,
    /// Prepended to the enforced rules' stat names.
    pub rules_stat_prefix: String,
    /// Prepended to the shadow rules' stat names.
    pub shadow_stat_prefix: String,
}

/// The HTTP filter: its name in the connection manager (routes address it by name) and
/// its rules.
#[derive(Debug, Clone)]
pub struct HttpRbacConfig {
    /// The filter's name.
    pub name: String,
    /// The rules.
    pub rules: Arc<RbacRules>,
}

/// The network filter.
#[derive(Debug, Clone)]
pub struct NetworkRbacConfig {
    /// Stats go under `<stat_prefix>rbac.`.
    pub stat_prefix: String,
    /// The rules.
    pub rules: RbacRules,
}

/// Translates the HTTP filter's config.
pub fn http(name: &str, bytes: &[u8], path: &str) -> Result<HttpRbacConfig> {
    use xds_client::proto::envoy::extensions::filters::http::rbac::v3::Rbac;
    let c = Rbac::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    Ok(HttpRbacConfig {
        name: name.to_string(),
        rules: Arc::new(http_rules(&c, path)?),
    })
}

fn http_rules(
    c: &xds_client::proto::envoy::extensions::filters::http::rbac::v3::Rbac,
    path: &str,
) -> Result<RbacRules> {
    let (rules, shadow) = engines(c.rules.as_ref(), c.shadow_rules.as_ref(), path)?;
    Ok(RbacRules {
        rules,
        shadow,
        rules_stat_prefix: c.rules_stat_prefix.clone(),
        shadow_stat_prefix: c.shadow_rules_stat_prefix.clone(),
    })
}

/// The enforced and shadow engines of either filter.
fn engines(
    rules: Option<&pb::Rbac>,
    shadow: Option<&pb::Rbac>,
    path: &str,
) -> Result<(Option<Engine>, Option<Engine>)> {
    Ok((
        rules.map(|r| engine(r, &join(path, "rules"))).transpose()?,
        shadow
            .map(|r| engine(r, &join(path, "shadow_rules")))
            .transpose()?,
    ))
}

/// Translates a route's `RBACPerRoute`: its rules replace the filter's (`None`: the
/// filter is off for the route).
pub fn per_route(bytes: &[u8], path: &str) -> Result<Option<Arc<RbacRules>>> {
    use xds_client::proto::envoy::extensions::filters::http::rbac::v3::RbacPerRoute;
    let c = RbacPerRoute::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    c.rbac
        .map(|inner| http_rules(&inner, &join(path, "rbac")).map(Arc::new))
        .transpose()
}

/// Translates the network filter's config.
pub fn network(bytes: &[u8], path: &str) -> Result<NetworkRbacConfig> {
    use xds_client::proto::envoy::extensions::filters::network::rbac::v3::Rbac;
    let c = Rbac::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    if c.stat_prefix.is_empty() {
        return Err(ConfigError::at(
            join(path, "stat_prefix"),
            "stat_prefix is required",
        ));
    }
    // Both enforcement types decide once: a connection's attributes do not change, and
    // the metadata CONTINUOUS re-reads is never written (see the module doc).
    let (rules, shadow) = engines(c.rules.as_ref(), c.shadow_rules.as_ref(), path)?;
    Ok(NetworkRbacConfig {
        stat_prefix: c.stat_prefix,
        rules: RbacRules {
            rules,
            shadow,
            rules_stat_prefix: String::new(),
            shadow_stat_prefix: c.shadow_rules_stat_prefix,
        },
    })
}

/// Compiles an `RBAC` message.
pub fn engine(r: &pb::Rbac, path: &str) -> Result<Engine> {
    let action = match pb::rbac::Action::try_from(r.action) {
        Ok(pb::rbac::Action::Allow) => Action::Allow,
        Ok(pb::rbac::Action::Deny) => Action::Deny,
        Ok(pb::rbac::Action::Log) => Action::Log,
        Err(_) => {
            return Err(ConfigError::at(
                join(path, "action"),
                format!("unknown action {}", r.action),
            ))
        }
    };
    let mut names: Vec<&String> = r.policies.keys().collect();
    names.sort();
    let mut policies = Vec::with_capacity(names.len());
    for name in names {
        let p = format!("{}[{name}]", join(path, "policies"));
        let policy = &r.policies[name];
        let permissions = rules(&policy.permissions, &join(&p, "permissions"), permission)?;
        let principals = rules(&policy.principals, &join(&p, "principals"), principal)?;
        policies.push((
            name.clone(),
            Policy {
                permissions,
                principals,
            },
        ));
    }
    Ok(Engine { action, policies })
}

fn rules<T>(items: &[T], path: &str, one: fn(&T, &str) -> Result<Rule>) -> Result<Vec<Rule>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| one(item, &format!("{path}[{i}]")))
        .collect()
}

fn cidr(range: &CidrRange, path: &str) -> Result<Cidr> {
    Ok(cidrs(std::slice::from_ref(range), path)?.remove(0))
}

fn path_matcher(m: &matcher::PathMatcher, path: &str) -> Result<StringMatch> {
    match &m.rule {
        Some(matcher::path_matcher::Rule::Path(s)) => string_matcher(s, &join(path, "path")),
        None => Err(ConfigError::at(path, "a path matcher needs a path")),
    }
}

fn permission(p: &pb::Permission, path: &str) -> Result<Rule> {
    use pb::permission::Rule as R;
    let at = |field: &str| join(path, field);
    Ok(match &p.rule {
        Some(R::AndRules(s)) => Rule::And(rules(&s.rules, &at("and_rules.rules"), permission)?),
        Some(R::OrRules(s)) => Rule::Or(rules(&s.rules, &at("or_rules.rules"), permission)?),
        Some(R::NotRule(r)) => Rule::Not(Box::new(permission(r, &at("not_rule"))?)),
        Some(R::Any(b)) => Rule::Constant(*b),
        Some(R::Header(h)) => header(h, &at("header"))?,
        Some(R::UrlPath(m)) => Rule::UrlPath(path_matcher(m, &at("url_path"))?),
        Some(R::DestinationIp(c)) => Rule::DestinationIp(cidr(c, &at("destination_ip"))?),
        Some(R::DestinationPort(p)) => Rule::DestinationPort(u16::try_from(*p).map_err(|_| {
            ConfigError::at(at("destination_port"), format!("port {p} out of range"))
        })?),
        Some(R::DestinationPortRange(r)) => Rule::DestinationPortRange(r.start, r.end),
        Some(R::RequestedServerName(m)) => {
            Rule::RequestedServerName(string_matcher(m, &at("requested_server_name"))?)
        }
        #[allow(deprecated)]
        Some(R::Metadata(m)) => Rule::Metadata(metadata_matcher(m, &at("metadata"))?),
        Some(R::UriTemplate(t)) => uri_template(t, &at("uri_template"))?,
        Some(R::Matcher(_) | R::SourcedMetadata(_)) | None => return Err(unsupported(path)),
    })
}

/// A `uri_template` permission: Envoy's URI template path matcher extension.
fn uri_template(
    ext: &xds_client::proto::envoy::config::core::v3::TypedExtensionConfig,
    path: &str,
) -> Result<Rule> {
    use super::uri_template::{UriTemplate, TYPE_NAME};
    use xds_client::proto::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
    let c: UriTemplateMatchConfig = crate::config::common::typed_extension(ext, TYPE_NAME, path)?;
    let tp = join(path, "typed_config");
    Ok(Rule::UriTemplate(UriTemplate::parse(
        &c.path_template,
        &join(&tp, "path_template"),
    )?))
}

fn principal(p: &pb::Principal, path: &str) -> Result<Rule> {
    use pb::principal::Identifier as I;
    let at = |field: &str| join(path, field);
    Ok(match &p.identifier {
        Some(I::AndIds(s)) => Rule::And(rules(&s.ids, &at("and_ids.ids"), principal)?),
        Some(I::OrIds(s)) => Rule::Or(rules(&s.ids, &at("or_ids.ids"), principal)?),
        Some(I::NotId(r)) => Rule::Not(Box::new(principal(r, &at("not_id"))?)),
        Some(I::Any(b)) => Rule::Constant(*b),
        Some(I::Authenticated(a)) => Rule::Authenticated(
            a.principal_name
                .as_ref()
                .map(|m| string_matcher(m, &at("authenticated.principal_name")))
                .transpose()?,
        ),
        #[allow(deprecated)]
        Some(I::SourceIp(c)) => Rule::SourceIp(cidr(c, &at("source_ip"))?),
        Some(I::DirectRemoteIp(c)) => Rule::DirectRemoteIp(cidr(c, &at("direct_remote_ip"))?),
        Some(I::RemoteIp(c)) => Rule::RemoteIp(cidr(c, &at("remote_ip"))?),
        Some(I::Header(h)) => header(h, &at("header"))?,
        Some(I::UrlPath(m)) => Rule::UrlPath(path_matcher(m, &at("url_path"))?),
        #[allow(deprecated)]
        Some(I::Metadata(m)) => Rule::Metadata(metadata_matcher(m, &at("metadata"))?),
        Some(I::FilterState(f)) => {
            let p = at("filter_state");
            match &f.matcher {
                Some(matcher::filter_state_matcher::Matcher::StringMatch(m)) => {
                    Rule::FilterState(f.key.clone(), string_matcher(m, &join(&p, "string_match"))?)
                }
                _ => {
                    return Err(ConfigError::at(
                        p,
                        "only string_match filter-state matchers are supported",
                    ))
                }
            }
        }
        Some(I::SourcedMetadata(_) | I::Custom(_)) | None => return Err(unsupported(path)),
    })
}

/// A header rule: the route's header condition, pseudo-headers included.
fn header(
    h: &xds_client::proto::envoy::config::route::v3::HeaderMatcher,
    path: &str,
) -> Result<Rule> {
    let (name, condition) = crate::config::route::any_header_match(h, path)?;
    Ok(Rule::Header(name, condition))
}

fn unsupported(path: &str) -> ConfigError {
    ConfigError::at(
        path,
        "this RBAC rule kind is not supported (matcher, uri_template, sourced_metadata, custom) or the rule is empty",
    )
}
