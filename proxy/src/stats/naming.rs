//! The bootstrap's `stats_config` as the store applies it: which stats exist
//! (`stats_matcher`: a rejected stat is invisible in every admin output, as Envoy never
//! instantiates it) and, when `use_all_default_tags` is false, how their Prometheus names
//! and labels are extracted from their full names (`stats_tags`, applied the way Envoy
//! applies them, instead of the built-in tags each stat carries from its creation).

use crate::config::common::StringMatch;

/// One `TagSpecifier`.
#[derive(Debug)]
pub enum TagRule {
    /// `regex`: its first capture group is cut from the name, its second (else first)
    /// is the tag's value. ECMAScript-style (lookaround allowed), as in Envoy.
    Regex {
        /// The tag (label) name.
        name: String,
        /// The compiled pattern.
        regex: fancy_regex::Regex,
    },
    /// `fixed_value`: the tag on every stat.
    Fixed {
        /// The tag (label) name.
        name: String,
        /// Its value.
        value: String,
    },
}

/// `stats_matcher`.
#[derive(Debug)]
pub enum StatsMatcher {
    /// `reject_all: true`.
    RejectAll,
    /// `inclusion_list`: only matching stats exist.
    Include(Vec<StringMatch>),
    /// `exclusion_list`: matching stats do not exist.
    Exclude(Vec<StringMatch>),
}

/// How the store names and admits stats.
#[derive(Debug, Default)]
pub struct Naming {
    /// Replaces the built-in tags (`use_all_default_tags: false`); `None` keeps them.
    pub custom_tags: Option<Vec<TagRule>>,
    /// Which stats exist; `None` admits all.
    pub matcher: Option<StatsMatcher>,
    /// `histogram_bucket_settings`: the buckets of the histograms each matcher selects
    /// (the first that matches wins).
    pub buckets: Vec<(StringMatch, std::sync::Arc<[f64]>)>,
}

impl Naming {
    /// Whether the stat named `name` exists.
    pub fn admits(&self, name: &str) -> bool {
        match &self.matcher {
            None => true,
            Some(StatsMatcher::RejectAll) => false,
            Some(StatsMatcher::Include(m)) => m.iter().any(|m| m.matches(name)),
            Some(StatsMatcher::Exclude(m)) => !m.iter().any(|m| m.matches(name)),
        }
    }

    /// The buckets configured for the histogram `name`, if any.
    pub fn buckets_for(&self, name: &str) -> Option<std::sync::Arc<[f64]>> {
        self.buckets
            .iter()
            .find(|(m, _)| m.matches(name))
            .map(|(_, b)| b.clone())
    }

    /// The tag-extracted name and tags of `name` under custom tags, `None` when the
    /// built-in tags apply. Every rule runs on the full name; the characters of every
    /// match's first group are cut (and a trailing dot they leave); a tag already found
    /// is not looked for again; tags come sorted by name, as Envoy lists them.
    pub fn extract(&self, name: &str) -> Option<(String, Vec<(String, String)>)> {
        let rules = self.custom_tags.as_ref()?;
        let mut cut = vec![false; name.len()];
        let mut tags: Vec<(String, String)> = Vec::new();
        for rule in rules {
            match rule {
                TagRule::Fixed { name: tag, value } => tags.push((tag.clone(), value.clone())),
                TagRule::Regex { name: tag, regex } => {
                    if tags.iter().any(|(t, _)| t == tag) {
                        continue;
                    }
                    let Ok(Some(c)) = regex.captures(name) else {
                        continue;
                    };
                    let Some(remove) = c.get(1) else {
                        continue;
                    };
                    let value = c.get(2).unwrap_or(remove);
                    cut[remove.start()..remove.end()].fill(true);
                    tags.push((tag.clone(), value.as_str().to_string()));
                }
            }
        }
        let extracted: String = name
            .char_indices()
            .filter(|(i, _)| !cut[*i])
            .map(|(_, c)| c)
            .collect();
        // Envoy drops a separator the cuts leave at the end, and lists tags by name.
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        Some((extracted.trim_end_matches('.').to_string(), tags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, re: &str) -> TagRule {
        TagRule::Regex {
            name: name.into(),
            regex: fancy_regex::Regex::new(re).unwrap(),
        }
    }

    #[test]
    fn extracts_tags_the_envoy_way() {
        let naming = Naming {
            custom_tags: Some(vec![
                rule("cluster_name", r"^cluster(\.(.+);)"),
                rule("authz_enforce_result", r"rbac(\.(allowed|denied))"),
                rule("authz_dry_run_action", r"(\.istio_dry_run_(allow|deny)_)"),
                rule("authz_dry_run_result", r"(\.shadow_(allowed|denied))"),
                rule(
                    "listener_prefix",
                    r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
                ),
                rule(
                    "address",
                    r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
                ),
            ]),
            matcher: Some(StatsMatcher::Include(vec![StringMatch::Prefix(
                "http".into(),
                false,
            )])),
            buckets: vec![],
        };
        let got = |n: &str| naming.extract(n).unwrap();
        assert_eq!(
            got("http.inbound_0.0.0.0_8080.rbac.istio_dry_run_allow_.shadow_denied"),
            (
                "http.inbound_0.0.0.0_8080.rbac".into(),
                vec![
                    ("authz_dry_run_action".into(), "allow".into()),
                    ("authz_dry_run_result".into(), "denied".into())
                ]
            )
        );
        assert_eq!(
            got("http.x.rbac.allowed").1,
            vec![("authz_enforce_result".to_string(), "allowed".to_string())]
        );
        assert_eq!(got("cluster.xds-grpc.upstream_cx_total").1, vec![]);
        assert_eq!(got("http.x.rbac.allowed").0, "http.x.rbac");
        assert_eq!(
            got("listener.0.0.0.0_15006.http.10.0.0.1_80.downstream_rq_2xx"),
            (
                "listener.http.downstream_rq_2xx".into(),
                vec![
                    ("address".into(), "0.0.0.0_15006".into()),
                    ("listener_prefix".into(), "10.0.0.1_80".into())
                ]
            )
        );
        assert!(naming.admits("http.x.rbac.allowed"));
        assert!(!naming.admits("cluster.x.upstream_rq_total"));
    }
}
