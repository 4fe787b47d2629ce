//! Path normalisation (`normalize_path`: RFC 3986 dot-segment removal, counting `..;x`
//! as `..`, and unreserved percent-decoding, refusing `%00`; `merge_slashes`).

use std::borrow::Cow;

/// Normalises the path part of `path_and_query`; `None` when the path escapes the root or
/// is malformed (Envoy answers 400).
/// A path that needs no change comes back borrowed.
pub fn normalize(
    path_and_query: &str,
    normalize: bool,
    merge_slashes: bool,
) -> Option<Cow<'_, str>> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    if !path.starts_with('/') {
        return (path == "*").then_some(Cow::Borrowed(path_and_query));
    }
    if !may_change(path, normalize, merge_slashes) {
        return Some(Cow::Borrowed(path_and_query));
    }
    let mut p = path.to_string();
    if normalize {
        p = decode_unreserved(&p)?;
        p = p.replace('\\', "/");
        p = remove_dot_segments(&p)?;
    }
    if merge_slashes {
        let mut out = String::with_capacity(p.len());
        for c in p.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        p = out;
    }
    Some(Cow::Owned(match query {
        Some(q) => format!("{p}?{q}"),
        None => p,
    }))
}

/// Whether normalising could change `path` (which starts with `/`): only percent-escapes,
/// backslashes and dot segments can, and repeated slashes when merging. A cheap scan that
/// lets the usual clean path through without a copy.
fn may_change(path: &str, normalize: bool, merge_slashes: bool) -> bool {
    (normalize && (path.contains(['%', '\\']) || path.contains("/.")))
        || (merge_slashes && path.contains("//"))
}

/// Unescapes `%2F` and `%5C` (either case) in the path part of `path_and_query` (the query
/// is left alone); `None` when there was none.
pub fn unescape_slashes(path_and_query: &str) -> Option<String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    if !path.contains('%') {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    let mut found = false;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).map(str::to_ascii_uppercase);
        match code.as_deref() {
            Some("2F") => out.push('/'),
            Some("5C") => out.push('\\'),
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        found = true;
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    found.then(|| match query {
        Some(q) => format!("{out}?{q}"),
        None => out,
    })
}

fn decode_unreserved(p: &str) -> Option<String> {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            // Two hex digits and nothing else: `from_str_radix` would take "+1".
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            // An escaped NUL has no place in a path (Envoy answers 400).
            if v == 0 {
                return None;
            }
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                out.push(v);
            } else {
                out.extend_from_slice(&[
                    b'%',
                    hex[0].to_ascii_uppercase(),
                    hex[1].to_ascii_uppercase(),
                ]);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn remove_dot_segments(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = p.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        // A dot segment may carry path parameters (`..;x`): Envoy's canonicaliser reads it
        // as the dot segment and drops them, as Tomcat-style backends read `..;/`; a
        // proxy that kept the segment would route and authorise a path the backend does
        // not serve.
        match seg.split(';').next().unwrap_or_default() {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            _ => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    if trailing_slash {
        // A final `.` or `..` leaves an empty last segment: the path ends in `/`.
        out.push("");
    }
    let mut s = String::from("/");
    s.push_str(&out.join("/"));
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::{normalize, unescape_slashes};
    use std::borrow::Cow;

    #[test]
    fn clean_paths_are_borrowed_and_near_misses_keep_their_meaning() {
        for (path, norm, merge) in [
            ("/a/b?x=/./y", true, true),
            ("/a//b", true, false),
            ("/a/b", false, true),
        ] {
            assert!(matches!(normalize(path, norm, merge), Some(Cow::Borrowed(p)) if p == path));
        }
        // Scanned as possibly changing, yet unchanged: the same text either way.
        assert_eq!(
            normalize("/a/.well-known/b", true, false).as_deref(),
            Some("/a/.well-known/b")
        );
        assert_eq!(normalize("/a/%41", false, false).as_deref(), Some("/a/%41"));
        assert_eq!(normalize("/a/%41", true, false).as_deref(), Some("/a/A"));
    }

    #[test]
    fn escaped_slashes() {
        assert_eq!(
            unescape_slashes("/a%2fb%5Cc%2Fd?q=%2F").as_deref(),
            Some("/a/b\\c/d?q=%2F")
        );
        assert_eq!(unescape_slashes("/a%20b?q=%2F"), None);
        assert_eq!(unescape_slashes("/a%2").as_deref(), None);
    }

    #[test]
    fn rfc3986_and_merge() {
        assert_eq!(
            normalize("/a/./b/../c?x=1", true, false).as_deref(),
            Some("/a/c?x=1")
        );
        assert_eq!(
            normalize("/a/%7Eb/%2F", true, false).as_deref(),
            Some("/a/~b/%2F")
        );
        assert_eq!(normalize("/../../x", true, false).as_deref(), Some("/x"));
        assert_eq!(normalize("//a///b", false, true).as_deref(), Some("/a/b"));
        assert_eq!(normalize("/a/b/..", true, false).as_deref(), Some("/a/"));
        assert_eq!(normalize("/x////..", true, false).as_deref(), Some("/x///"));
        assert_eq!(normalize("a", true, false), None);
        assert_eq!(normalize("/%zz", true, false), None);
        assert_eq!(normalize("/%+1", true, false), None);
    }

    #[test]
    fn dot_segments_with_parameters_and_escaped_nul() {
        for (path, normalized) in [
            ("/x/..;/b", Some("/b")),
            ("/x/..;a/b", Some("/b")),
            ("/x/.;/b", Some("/x/b")),
            ("/x/a;b/./c", Some("/x/a;b/c")),
            ("/x/..;", Some("/")),
            ("/x/%00/b", None),
        ] {
            assert_eq!(
                normalize(path, true, false).as_deref(),
                normalized,
                "{path}"
            );
        }
        assert_eq!(normalize("/x/%00", false, false).as_deref(), Some("/x/%00"));
    }
}
