//! Translation helpers shared by every resource: durations, addresses, data sources,
//! string and header matchers, header mutations.

use super::error::{item, join, ConfigError, Result};
use regex::Regex;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use xds_client::proto::envoy::config::core::v3 as core;
use xds_client::proto::envoy::r#type::matcher::v3 as matcher;
use xds_client::proto::google::protobuf as pb;

/// Collects translated items into a vector with no spare capacity. Translated configs
/// live as long as the config, and collecting a fallible iterator starts at four slots:
/// a sidecar's single-route virtual host would carry three empty routes (about 1 kB).
pub fn collect_exact<T>(items: impl Iterator<Item = Result<T>>) -> Result<Vec<T>> {
    let mut collected = items.collect::<Result<Vec<T>>>()?;
    collected.shrink_to_fit();
    Ok(collected)
}

/// Translates each element of the list field `field` of the message at `path`, giving
/// each its own path (`path.field[i]`), into a vector collected exactly.
pub fn each<S, T>(
    items: &[S],
    path: &str,
    field: &str,
    mut translate: impl FnMut(&S, &str) -> Result<T>,
) -> Result<Vec<T>> {
    collect_exact(
        items
            .iter()
            .enumerate()
            .map(|(i, x)| translate(x, &item(path, field, i))),
    )
}

/// A protobuf Duration as a std Duration (negative durations are config errors).
pub fn duration(d: &pb::Duration, path: &str) -> Result<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(ConfigError::at(path, "negative duration"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional duration where Envoy's `0s` means "disabled": `None` when unset gives
/// `default`, and zero gives `None`.
pub fn timeout(
    d: Option<&pb::Duration>,
    default: Option<Duration>,
    path: &str,
) -> Result<Option<Duration>> {
    match d {
        None => Ok(default),
        Some(d) => {
            let d = duration(d, path)?;
            Ok((!d.is_zero()).then_some(d))
        }
    }
}

/// Where a listener accepts or an endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IP socket address.
    Socket(SocketAddr),
    /// A hostname to resolve (STRICT_DNS / LOGICAL_DNS endpoints) and its port.
    Named(String, u16),
    /// A unix-domain socket; a leading `@` means the abstract namespace.
    Pipe(PathBuf, u32),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Socket(a) => write!(f, "{a}"),
            Address::Named(h, p) => write!(f, "{h}:{p}"),
            Address::Pipe(p, _) => write!(f, "{}", p.display()),
        }
    }
}

/// Translates an Envoy Address. `allow_names` permits hostnames (DNS clusters).
pub fn address(a: &core::Address, path: &str, allow_names: bool) -> Result<Address> {
    use core::address::Address as A;
    match &a.address {
        Some(A::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(core::socket_address::PortSpecifier::PortValue(p)) if p <= 65535 => p as u16,
                Some(core::socket_address::PortSpecifier::PortValue(_)) => {
                    return Err(ConfigError::at(
                        join(path, "socket_address.port_value"),
                        "port out of range",
                    ))
                }
                Some(core::socket_address::PortSpecifier::NamedPort(_)) => {
                    return Err(ConfigError::at(
                        join(path, "socket_address.named_port"),
                        "named ports are not supported",
                    ))
                }
                None => 0,
            };
            if s.protocol != 0 {
                return Err(ConfigError::at(
                    join(path, "socket_address.protocol"),
                    "only TCP is supported",
                ));
            }
            match s.address.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(Address::Socket(SocketAddr::new(ip, port))),
                Err(_) if allow_names && !s.address.is_empty() => {
                    Ok(Address::Named(s.address.clone(), port))
                }
                Err(_) => Err(ConfigError::at(
                    join(path, "socket_address.address"),
                    format!("malformed IP address: {}", s.address),
                )),
            }
        }
        Some(A::Pipe(p)) => {
            if p.path.is_empty() {
                return Err(ConfigError::at(join(path, "pipe.path"), "empty pipe path"));
            }
            Ok(Address::Pipe(PathBuf::from(&p.path), p.mode))
        }
        Some(A::EnvoyInternalAddress(_)) => Err(ConfigError::at(
            join(path, "envoy_internal_address"),
            "internal listener addresses are not supported",
        )),
        None => Err(ConfigError::at(path, "address is required")),
    }
}

/// Decodes `any` as the message `want` (a full name), refusing another type with both
/// names; errors name `path`.
pub fn decode_any<M: prost::Message + Default>(
    any: &xds_client::proto::google::protobuf::Any,
    want: &str,
    path: &str,
) -> Result<M> {
    if xds_client::descriptors::type_name_of_url(&any.type_url) != want {
        return Err(ConfigError::at(
            path,
            format!("expected {want}, got {}", any.type_url),
        ));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| ConfigError::at(path, format!("malformed {want}: {e}")))
}

/// The `typed_config` of an extension, which must be there, decoded as `want`; errors
/// name `<path>.typed_config`.
pub fn typed_extension<M: prost::Message + Default>(
    ext: &core::TypedExtensionConfig,
    want: &str,
    path: &str,
) -> Result<M> {
    let typed_path = join(path, "typed_config");
    let any = ext
        .typed_config
        .as_ref()
        .ok_or_else(|| ConfigError::at(&typed_path, "typed_config is required"))?;
    decode_any(any, want, &typed_path)
}

/// Reads a DataSource (file, inline bytes or inline string).
pub fn data_source(d: &core::DataSource, path: &str) -> Result<Vec<u8>> {
    use core::data_source::Specifier as S;
    match &d.specifier {
        Some(S::Filename(f)) => std::fs::read(f)
            .map_err(|e| ConfigError::at(join(path, "filename"), format!("cannot read {f}: {e}"))),
        Some(S::InlineBytes(b)) => Ok(b.clone()),
        Some(S::InlineString(s)) => Ok(s.clone().into_bytes()),
        Some(S::EnvironmentVariable(_)) => Err(ConfigError::at(
            join(path, "environment_variable"),
            "environment variable data sources are not supported",
        )),
        None => Ok(Vec::new()),
    }
}

/// Compiles a regex the way Envoy's RE2 would accept it (full match is added by callers).
pub fn regex(m: &matcher::RegexMatcher, path: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{})$", m.regex))
        .map_err(|e| ConfigError::at(join(path, "regex"), format!("invalid regex: {e}")))
}

/// A compiled `envoy.type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// Equal (case-folded when `ignore_case`).
    Exact(String, bool),
    /// Starts with.
    Prefix(String, bool),
    /// Ends with.
    Suffix(String, bool),
    /// Contains.
    Contains(String, bool),
    /// Whole-string regex.
    Regex(Regex),
}

impl StringMatch {
    /// Whether `value` satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        fn fold(s: &str, ic: bool) -> std::borrow::Cow<'_, str> {
            if ic {
                s.to_ascii_lowercase().into()
            } else {
                s.into()
            }
        }
        match self {
            StringMatch::Exact(p, ic) => fold(value, *ic) == p.as_str(),
            StringMatch::Prefix(p, ic) => fold(value, *ic).starts_with(p.as_str()),
            StringMatch::Suffix(p, ic) => fold(value, *ic).ends_with(p.as_str()),
            StringMatch::Contains(p, ic) => fold(value, *ic).contains(p.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}

/// Translates a StringMatcher.
pub fn string_matcher(m: &matcher::StringMatcher, path: &str) -> Result<StringMatch> {
    use matcher::string_matcher::MatchPattern as P;
    let ic = m.ignore_case;
    let f = |s: &str| {
        if ic {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    match &m.match_pattern {
        Some(P::Exact(s)) => Ok(StringMatch::Exact(f(s), ic)),
        Some(P::Prefix(s)) => Ok(StringMatch::Prefix(f(s), ic)),
        Some(P::Suffix(s)) => Ok(StringMatch::Suffix(f(s), ic)),
        Some(P::Contains(s)) => Ok(StringMatch::Contains(f(s), ic)),
        Some(P::SafeRegex(r)) => Ok(StringMatch::Regex(regex(r, &join(path, "safe_regex"))?)),
        Some(P::Custom(_)) => Err(ConfigError::at(
            join(path, "custom"),
            "custom string matchers are not supported",
        )),
        None => Err(ConfigError::at(
            path,
            "string matcher needs a match pattern",
        )),
    }
}

/// How a header addition combines with an existing value (Envoy's `append_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// Add another value, or set it when absent.
    AppendIfExistsOrAdd,
    /// Set only when absent.
    AddIfAbsent,
    /// Replace any existing value.
    OverwriteIfExistsOrAdd,
    /// Replace only when present.
    OverwriteIfExists,
}

impl AppendAction {
    /// The action an `append_action` code names (`None`: an unknown code).
    pub fn from_code(code: i32) -> Option<AppendAction> {
        Some(match code {
            0 => AppendAction::AppendIfExistsOrAdd,
            1 => AppendAction::AddIfAbsent,
            2 => AppendAction::OverwriteIfExistsOrAdd,
            3 => AppendAction::OverwriteIfExists,
            _ => return None,
        })
    }
}

/// One header to add, with its (possibly formatted) value.
#[derive(Debug, Clone)]
pub struct HeaderAddition {
    /// Lower-case header name.
    pub name: http::HeaderName,
    /// The value; `%...%` command operators are expanded per request.
    pub value: HeaderTemplate,
    /// How to combine with an existing value.
    pub action: AppendAction,
    /// Keep the header when its expanded value is empty.
    pub keep_empty: bool,
}

/// A header value: literal, or a format with command operators (`%DOWNSTREAM_REMOTE_ADDRESS%`).
#[derive(Debug, Clone)]
pub enum HeaderTemplate {
    /// Used as is.
    Literal(String),
    /// Rendered per request.
    Formatted(std::sync::Arc<crate::access_log::format::Format>),
}

impl HeaderTemplate {
    fn parse(value: &str, path: &str) -> Result<Self> {
        // As Envoy's proto constraint on header values: a CR or LF would split the header
        // into two (or end the head) on the wire, a NUL ends it for many parsers.
        if value.contains(['\r', '\n', '\0']) {
            return Err(ConfigError::at(
                path,
                "a header value may not contain CR, LF or NUL",
            ));
        }
        if !value.contains('%') {
            return Ok(HeaderTemplate::Literal(value.to_string()));
        }
        crate::access_log::format::Format::text(value)
            .map(|f| HeaderTemplate::Formatted(std::sync::Arc::new(f)))
            .map_err(|e| ConfigError::at(path, e))
    }
}

/// Headers to add and remove at one level (route, virtual host, route configuration).
#[derive(Debug, Clone, Default)]
pub struct HeaderMutations {
    /// Additions in configuration order.
    pub add: Vec<HeaderAddition>,
    /// Names to remove (before additions).
    pub remove: Vec<http::HeaderName>,
}

impl HeaderMutations {
    /// Whether there is nothing to do (lets the hot path skip the level).
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

fn header_name(name: &str, path: &str) -> Result<http::HeaderName> {
    http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| ConfigError::at(path, format!("invalid header name {name:?}")))
}

/// Translates `*_headers_to_add` / `*_headers_to_remove` pairs.
pub fn header_mutations(
    add: &[core::HeaderValueOption],
    remove: &[String],
    path: &str,
    add_field: &str,
    remove_field: &str,
) -> Result<HeaderMutations> {
    let mut out = HeaderMutations::default();
    for (i, opt) in add.iter().enumerate() {
        let p = item(path, add_field, i);
        let h = opt
            .header
            .as_ref()
            .ok_or_else(|| ConfigError::at(&p, "header is required"))?;
        let action = if let Some(append) = &opt.append {
            if opt.append_action != 0 {
                return Err(ConfigError::at(
                    &p,
                    "append and append_action are mutually exclusive",
                ));
            }
            if append.value {
                AppendAction::AppendIfExistsOrAdd
            } else {
                AppendAction::OverwriteIfExistsOrAdd
            }
        } else {
            AppendAction::from_code(opt.append_action).ok_or_else(|| {
                ConfigError::at(
                    join(&p, "append_action"),
                    format!("unknown append_action {}", opt.append_action),
                )
            })?
        };
        out.add.push(HeaderAddition {
            name: header_name(&h.key, &join(&p, "header.key"))?,
            value: HeaderTemplate::parse(&h.value, &join(&p, "header.value"))?,
            action,
            keep_empty: opt.keep_empty_value,
        });
    }
    for (i, name) in remove.iter().enumerate() {
        out.remove
            .push(header_name(name, &item(path, remove_field, i))?);
    }
    Ok(out)
}

/// A CIDR range for filter-chain matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: std::net::IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range (IPv4 ranges also match IPv4-mapped IPv6).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map(V4).unwrap_or(V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (V4(net), V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            (V6(net), V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rem = bits % 8;
    rem == 0 || {
        let mask = 0xffu8 << (8 - rem);
        a[full] & mask == b[full] & mask
    }
}

/// Translates a list of CidrRange.
pub fn cidrs(ranges: &[core::CidrRange], path: &str) -> Result<Vec<Cidr>> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let p = format!("{path}[{i}]");
            let addr: std::net::IpAddr = r.address_prefix.parse().map_err(|_| {
                ConfigError::at(
                    join(&p, "address_prefix"),
                    format!("malformed IP address: {}", r.address_prefix),
                )
            })?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = r.prefix_len.as_ref().map(|v| v.value).unwrap_or(max);
            if len > max {
                return Err(ConfigError::at(
                    join(&p, "prefix_len"),
                    "prefix length too long",
                ));
            }
            Ok(Cidr {
                addr,
                len: len as u8,
            })
        })
        .collect()
}

/// A FractionalPercent as numerator over a denominator of 100, 10^4 or 10^6.
pub fn fraction(p: &xds_client::proto::envoy::r#type::v3::FractionalPercent) -> (u64, u64) {
    let denominator = match p.denominator {
        1 => 10_000,
        2 => 1_000_000,
        _ => 100,
    };
    (u64::from(p.numerator).min(denominator), denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c = Cidr {
            addr: "10.1.0.0".parse().unwrap(),
            len: 16,
        };
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
        let c = Cidr {
            addr: "10.1.0.0".parse().unwrap(),
            len: 13,
        };
        assert!(c.contains("10.7.0.0".parse().unwrap()));
        assert!(!c.contains("10.8.0.0".parse().unwrap()));
    }

    #[test]
    fn string_matchers() {
        let m = |p| {
            string_matcher(
                &matcher::StringMatcher {
                    ignore_case: true,
                    match_pattern: Some(p),
                },
                "",
            )
            .unwrap()
        };
        use matcher::string_matcher::MatchPattern as P;
        assert!(m(P::Exact("AbC".into())).matches("abc"));
        assert!(m(P::Prefix("/A".into())).matches("/abc"));
        assert!(!m(P::Suffix("x".into())).matches("abc"));
        assert!(m(P::Contains("B".into())).matches("abc"));
    }

    #[test]
    fn zero_timeout_means_none() {
        let zero = pb::Duration {
            seconds: 0,
            nanos: 0,
        };
        assert_eq!(
            timeout(Some(&zero), Some(Duration::from_secs(15)), "").unwrap(),
            None
        );
        assert_eq!(
            timeout(None, Some(Duration::from_secs(15)), "").unwrap(),
            Some(Duration::from_secs(15))
        );
    }
}
