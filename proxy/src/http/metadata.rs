//! A request's dynamic metadata (what one HTTP filter leaves for the next, by filter
//! namespace and key) and `envoy.type.matcher.v3.MetadataMatcher` over it. The RBAC
//! filter writes its shadow rules' outcome here; ext_authz's `filter_enabled_metadata`,
//! RBAC's `metadata` rules and tracing's metadata tags read it, which is how Istio ties
//! a CUSTOM AuthorizationPolicy and its dry-run tags together.

use crate::config::common::{string_matcher, StringMatch};
use crate::config::error::{item, join, ConfigError, Result};
use xds_client::proto::envoy::r#type::matcher::v3 as matcher;

/// String values by (filter namespace, key).
#[derive(Debug, Clone, Default)]
pub struct DynamicMetadata(Vec<(String, String, String)>);

impl DynamicMetadata {
    /// Sets `key` in `filter`'s namespace.
    pub fn set(&mut self, filter: &str, key: &str, value: String) {
        match self.0.iter_mut().find(|(f, k, _)| f == filter && k == key) {
            Some(entry) => entry.2 = value,
            None => self.0.push((filter.into(), key.into(), value)),
        }
    }

    /// The keys and values of `filter`'s namespace, in the order they were set.
    pub fn namespace<'a>(&'a self, filter: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0
            .iter()
            .filter(move |(f, _, _)| f == filter)
            .map(|(_, k, v)| (k.as_str(), v.as_str()))
    }

    /// The value at `filter` / `key`.
    pub fn get(&self, filter: &str, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, k, _)| f == filter && k == key)
            .map(|(_, _, v)| v.as_str())
    }
}

/// A compiled `MetadataMatcher`.
#[derive(Debug, Clone)]
pub struct MetadataMatch {
    filter: String,
    /// The path's keys; only one-key paths can hold a value here (the values are
    /// strings), so a longer path reads as absent.
    path: Vec<String>,
    value: ValueMatch,
    invert: bool,
}

#[derive(Debug, Clone)]
enum ValueMatch {
    String(StringMatch),
    /// `present_match`: matches a present value when true, never when false (Envoy's).
    Present(bool),
    Or(Vec<ValueMatch>),
    /// Null, number, bool and list matchers: a string value never matches them.
    Never,
}

impl ValueMatch {
    fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (ValueMatch::String(m), Some(v)) => m.matches(v),
            (ValueMatch::Present(p), Some(_)) => *p,
            (ValueMatch::Or(list), v) => list.iter().any(|m| m.matches(v)),
            _ => false,
        }
    }
}

impl MetadataMatch {
    /// Whether the metadata satisfies the matcher (`invert` applied).
    pub fn matches(&self, md: Option<&DynamicMetadata>) -> bool {
        let value = match (md, self.path.as_slice()) {
            (Some(md), [key]) => md.get(&self.filter, key),
            _ => None,
        };
        self.value.matches(value) != self.invert
    }
}

/// Translates a `MetadataMatcher` at `path`.
pub fn metadata_matcher(m: &matcher::MetadataMatcher, path: &str) -> Result<MetadataMatch> {
    use matcher::metadata_matcher::path_segment::Segment;
    let value = m
        .value
        .as_ref()
        .ok_or_else(|| ConfigError::at(join(path, "value"), "value is required"))?;
    Ok(MetadataMatch {
        filter: m.filter.clone(),
        path: m
            .path
            .iter()
            .filter_map(|s| s.segment.as_ref().map(|Segment::Key(k)| k.clone()))
            .collect(),
        value: value_matcher(value, &join(path, "value"))?,
        invert: m.invert,
    })
}

fn value_matcher(v: &matcher::ValueMatcher, path: &str) -> Result<ValueMatch> {
    use matcher::value_matcher::MatchPattern as P;
    Ok(match &v.match_pattern {
        Some(P::StringMatch(s)) => {
            ValueMatch::String(string_matcher(s, &join(path, "string_match"))?)
        }
        Some(P::PresentMatch(p)) => ValueMatch::Present(*p),
        Some(P::OrMatch(o)) => ValueMatch::Or(
            o.value_matchers
                .iter()
                .enumerate()
                .map(|(i, m)| value_matcher(m, &item(path, "or_match.value_matchers", i)))
                .collect::<Result<_>>()?,
        ),
        Some(P::ListMatch(l)) => {
            match &l.match_pattern {
                Some(matcher::list_matcher::MatchPattern::OneOf(inner)) => {
                    value_matcher(inner, &join(path, "list_match.one_of"))?;
                }
                None => {
                    return Err(ConfigError::at(
                        join(path, "list_match"),
                        "one_of is required",
                    ))
                }
            }
            ValueMatch::Never
        }
        Some(P::NullMatch(_) | P::DoubleMatch(_) | P::BoolMatch(_)) => ValueMatch::Never,
        None => return Err(ConfigError::at(path, "a value matcher needs a pattern")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher_of(json: serde_json::Value) -> MetadataMatch {
        let m: matcher::MetadataMatcher =
            xds_client::json::decode(json, "envoy.type.matcher.v3.MetadataMatcher", false).unwrap();
        metadata_matcher(&m, "m").unwrap()
    }

    #[test]
    fn matches_strings_by_namespace_and_key_as_envoy() {
        let mut md = DynamicMetadata::default();
        md.set("envoy.filters.http.rbac", "id", "istio-ext-authz-x".into());
        let prefix = matcher_of(serde_json::json!({"filter": "envoy.filters.http.rbac",
            "path": [{"key": "id"}], "value": {"string_match": {"prefix": "istio-ext-authz"}}}));
        assert!(prefix.matches(Some(&md)));
        assert!(!prefix.matches(None));
        let absent = matcher_of(serde_json::json!({"filter": "other",
            "path": [{"key": "id"}], "value": {"present_match": false}}));
        assert!(
            !absent.matches(Some(&md)),
            "present_match: false never matches"
        );
        let inverted = matcher_of(serde_json::json!({"filter": "other", "invert": true,
            "path": [{"key": "id"}], "value": {"present_match": true}}));
        assert!(inverted.matches(Some(&md)));
    }
}
