//! Envoy's URI template path matcher (`envoy.path.match.uri_template`), as RBAC's
//! `uri_template` permission uses it: istiod writes one for each AuthorizationPolicy path
//! with `{*}` or `{**}` (as `*` and `**`). `/` then `/`-separated segments, each a
//! literal, `*` (exactly one segment), `**` (any rest, slashes included, possibly empty)
//! or a variable `{name}`, `{name=*}`, `{name=**}` (the same globs, named). After a `**`
//! no glob may follow. The request path, without query and fragment, must match whole.

use crate::config::error::{ConfigError, Result};

/// The matcher's protobuf type name.
pub const TYPE_NAME: &str = "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig";

/// The characters of a path segment (RFC 3986 `pchar` without `*` and `/`), as a regex
/// class body.
const SEGMENT_CHARS: &str = r"a-zA-Z0-9\-._~%!$&'()+,;:@=";
/// Envoy's limit of variables per template.
const MAX_VARIABLES: usize = 5;

/// A compiled path template.
#[derive(Debug, Clone)]
pub struct UriTemplate(regex::Regex);

/// One parsed segment.
enum Segment<'a> {
    Literal(&'a str),
    /// `*`.
    One,
    /// `**`.
    Rest,
}

impl UriTemplate {
    /// Compiles `template`; an invalid one is an error at `path`.
    pub fn parse(template: &str, path: &str) -> Result<Self> {
        let bad = |why: String| ConfigError::at(path, format!("path template {template:?}: {why}"));
        let body = template
            .strip_prefix('/')
            .ok_or_else(|| bad("must start with /".into()))?;
        let mut names: Vec<&str> = Vec::new();
        let mut after_rest = false;
        let mut regex = String::from("^/");
        for (i, raw) in body.split('/').enumerate() {
            let segment = match raw {
                "*" => Segment::One,
                "**" => Segment::Rest,
                v if v.starts_with('{') => {
                    let inner = v
                        .strip_prefix('{')
                        .and_then(|v| v.strip_suffix('}'))
                        .ok_or_else(|| bad(format!("unclosed variable {v:?}")))?;
                    let (name, glob) = inner.split_once('=').unwrap_or((inner, "*"));
                    let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic())
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid_name || names.contains(&name) {
                        return Err(bad(format!("invalid or repeated variable name {name:?}")));
                    }
                    names.push(name);
                    if names.len() > MAX_VARIABLES {
                        return Err(bad(format!("more than {MAX_VARIABLES} variables")));
                    }
                    match glob {
                        "*" => Segment::One,
                        "**" => Segment::Rest,
                        _ => {
                            return Err(bad(format!(
                                "variable {name:?}: only the globs * and ** are supported"
                            )))
                        }
                    }
                }
                literal => {
                    let valid = !literal.is_empty()
                        && literal
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()+,;:@=".contains(c));
                    if !valid {
                        return Err(bad(format!("invalid segment {literal:?}")));
                    }
                    Segment::Literal(literal)
                }
            };
            if after_rest && !matches!(segment, Segment::Literal(_)) {
                return Err(bad("no glob may follow **".into()));
            }
            if i > 0 {
                regex.push('/');
            }
            match segment {
                Segment::Literal(l) => regex.push_str(&regex::escape(l)),
                Segment::One => regex.push_str(&format!("[{SEGMENT_CHARS}]+")),
                Segment::Rest => {
                    after_rest = true;
                    regex.push_str(&format!("[{SEGMENT_CHARS}/]*"));
                }
            }
        }
        regex.push('$');
        regex::Regex::new(&regex)
            .map(UriTemplate)
            .map_err(|e| bad(e.to_string()))
    }

    /// Whether a request path matches (its query and fragment are not part of it).
    pub fn matches(&self, request_path: &str) -> bool {
        self.0
            .is_match(request_path.split(['?', '#']).next().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(template: &str) -> UriTemplate {
        UriTemplate::parse(template, "p").unwrap()
    }

    #[test]
    fn globs_match_one_segment_or_the_rest() {
        let one = t("/path/template/*");
        assert!(one.matches("/path/template/x?q=1"));
        assert!(!one.matches("/path/template/"));
        assert!(!one.matches("/path/template/x/y"));
        let rest = t("/**/path/template");
        assert!(rest.matches("/a/b/path/template"));
        assert!(rest.matches("//path/template"));
        assert!(!rest.matches("/path/template/x"));
        let named = t("/api/{version}/{rest=**}");
        assert!(named.matches("/api/v1/") && named.matches("/api/v1/a/b"));
        assert!(!named.matches("/api"));
        assert!(t("/a.b(c)").matches("/a.b(c)") && !t("/a.b").matches("/aXb"));
    }

    #[test]
    fn invalid_templates_are_refused() {
        for bad in [
            "path",
            "/a/**/*",
            "/a//b",
            "/a*",
            "/{x}/{x}",
            "/{x=a/*}",
            "/{1x}",
            "/{unclosed",
        ] {
            let e = UriTemplate::parse(bad, "p.path_template").unwrap_err();
            assert!(e.to_string().contains("p.path_template"), "{bad}: {e}");
        }
    }
}
