//! The bootstrap's `stats_config` translated into the stat store's naming rules: the
//! tags Prometheus shows (`stats_tags` with `use_all_default_tags: false`), which stats
//! exist (`stats_matcher`) and histogram buckets (`histogram_bucket_settings`).

use super::common::{string_matcher, StringMatch};
use super::error::{item, join, ConfigError, Result};
use crate::stats::naming::{Naming, StatsMatcher, TagRule};
use xds_client::proto::envoy::config::metrics::v3 as metrics;
use xds_client::proto::envoy::r#type::matcher::v3::ListStringMatcher;

fn patterns(list: &ListStringMatcher, path: &str) -> Result<Vec<StringMatch>> {
    list.patterns
        .iter()
        .enumerate()
        .map(|(i, m)| string_matcher(m, &item(path, "patterns", i)))
        .collect()
}

fn tag(t: &metrics::TagSpecifier, path: &str) -> Result<TagRule> {
    use metrics::tag_specifier::TagValue;
    if t.tag_name.is_empty() {
        return Err(ConfigError::at(
            join(path, "tag_name"),
            "tag_name is required",
        ));
    }
    let name = t.tag_name.clone();
    match &t.tag_value {
        Some(TagValue::Regex(r)) => Ok(TagRule::Regex {
            name,
            regex: fancy_regex::Regex::new(r).map_err(|e| {
                ConfigError::at(join(path, "regex"), format!("invalid regex: {e}"))
            })?,
        }),
        Some(TagValue::FixedValue(v)) => Ok(TagRule::Fixed {
            name,
            value: v.clone(),
        }),
        None => Err(ConfigError::at(
            path,
            "a tag without regex or fixed_value names one of Envoy's built-in tags, which is not supported",
        )),
    }
}

/// Translates `stats_config` (absent: Envoy's defaults).
pub fn naming(c: Option<&metrics::StatsConfig>, path: &str) -> Result<Naming> {
    let Some(c) = c else {
        return Ok(Naming::default());
    };
    let defaults = c.use_all_default_tags.as_ref().is_none_or(|b| b.value);
    let custom_tags = if defaults {
        if !c.stats_tags.is_empty() {
            return Err(ConfigError::at(
                join(path, "stats_tags"),
                "custom tags are supported with use_all_default_tags: false (they then replace the built-in tags)",
            ));
        }
        None
    } else {
        Some(super::common::each(&c.stats_tags, path, "stats_tags", tag)?)
    };
    use metrics::stats_matcher::StatsMatcher as M;
    let m = join(path, "stats_matcher");
    let matcher = match c
        .stats_matcher
        .as_ref()
        .and_then(|s| s.stats_matcher.as_ref())
    {
        None => None,
        Some(M::RejectAll(false)) => None,
        Some(M::RejectAll(true)) => Some(StatsMatcher::RejectAll),
        Some(M::InclusionList(l)) => Some(StatsMatcher::Include(patterns(
            l,
            &join(&m, "inclusion_list"),
        )?)),
        Some(M::ExclusionList(l)) => Some(StatsMatcher::Exclude(patterns(
            l,
            &join(&m, "exclusion_list"),
        )?)),
    };
    let buckets = c
        .histogram_bucket_settings
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = item(path, "histogram_bucket_settings", i);
            let matcher = s
                .r#match
                .as_ref()
                .ok_or_else(|| ConfigError::at(join(&p, "match"), "match is required"))?;
            let bounds = &s.buckets;
            if bounds.is_empty() || bounds.windows(2).any(|w| w[0] >= w[1]) {
                return Err(ConfigError::at(
                    join(&p, "buckets"),
                    "buckets must be non-empty and strictly increasing",
                ));
            }
            Ok((
                string_matcher(matcher, &join(&p, "match"))?,
                std::sync::Arc::from(bounds.as_slice()),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Naming {
        custom_tags,
        matcher,
        buckets,
    })
}
