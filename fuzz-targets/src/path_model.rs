//! A reference model of request-path normalisation, written from the texts rather than
//! from the proxy's code: RFC 3986 §6.2.2 (percent-encoding normalisation: unreserved
//! characters decoded, other triplets upper-cased, a `%` not followed by two hex digits
//! malformed), §5.2.4 (remove_dot_segments, step by step on an input and an output
//! buffer), and Envoy's HCM fields: `normalize_path` (the above, a backslash read as a
//! slash, a malformed path answered 400, and, as Envoy 1.40 answers: `%00` malformed too,
//! and a segment whose name before its `;` parameters is `.` or `..` taken as that dot
//! segment, so `/x/..;/b` is `/b` for the proxy as for a Tomcat-style backend),
//! `merge_slashes` (runs of `/` become one), and
//! `path_with_escaped_slashes_action: UNESCAPE_AND_*` (`%2F` `%2f` `%5C` `%5c` unescaped
//! in the path, never in the query).

/// Splits a request target into its path and its query (with the `?`).
fn split(path_and_query: &str) -> (&str, &str) {
    match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §6.2.2.1-2; `None` for a malformed triplet.
fn normalize_percent_encoding(path: &str) -> Option<String> {
    let mut out = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let (hi, lo) = (bytes.next()?, bytes.next()?);
        if !hi.is_ascii_hexdigit() || !lo.is_ascii_hexdigit() {
            return None;
        }
        let hex = |d: u8| (d as char).to_digit(16).expect("hex digit") as u8;
        let decoded = hex(hi) * 16 + hex(lo);
        if decoded == 0 {
            return None;
        }
        if is_unreserved(decoded) {
            out.push(decoded);
        } else {
            out.extend([b'%', hi.to_ascii_uppercase(), lo.to_ascii_uppercase()]);
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 3986 §5.2.4, its steps A to E as written.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path.to_string();
    let mut output = String::new();
    let drop_last_segment = |output: &mut String| {
        let cut = output.rfind('/').unwrap_or(0);
        output.truncate(cut);
    };
    while !input.is_empty() {
        if input.starts_with("../") {
            input.drain(..3);
        } else if input.starts_with("./") {
            input.drain(..2);
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".into();
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            drop_last_segment(&mut output);
        } else if input == "/.." {
            input = "/".into();
            drop_last_segment(&mut output);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let from = usize::from(input.starts_with('/'));
            let end = input[from..].find('/').map_or(input.len(), |i| i + from);
            output.extend(input.drain(..end));
        }
    }
    output
}

/// Each segment whose name before its first `;` is `.` or `..` becomes that dot segment
/// (its parameters dropped); other segments keep their parameters.
fn drop_dot_segment_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment.split(';').next() {
            Some(dots @ ("." | "..")) => dots,
            _ => segment,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c != '/' || !out.ends_with('/') {
            out.push(c);
        }
    }
    out
}

/// The path Envoy forwards for `path_and_query` with `normalize_path` and
/// `merge_slashes` as given; `None` where it answers 400.
pub fn normalize(path_and_query: &str, normalize: bool, merge: bool) -> Option<String> {
    let (path, query) = split(path_and_query);
    if !path.starts_with('/') {
        return (path == "*").then(|| path_and_query.to_string());
    }
    let mut path = path.to_string();
    if normalize {
        path = normalize_percent_encoding(&path)?.replace('\\', "/");
        path = remove_dot_segments(&drop_dot_segment_parameters(&path));
    }
    if merge {
        path = merge_slashes(&path);
    }
    Some(path + query)
}

/// The path with escaped slashes unescaped; `None` when it has none.
pub fn unescape_slashes(path_and_query: &str) -> Option<String> {
    let (path, query) = split(path_and_query);
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    let mut found = false;
    while !rest.is_empty() {
        let triplet = rest.get(..3).map(str::to_ascii_uppercase);
        let unescaped = match triplet.as_deref() {
            Some("%2F") => '/',
            Some("%5C") => '\\',
            _ => {
                let c = rest.chars().next().expect("not empty");
                out.push(c);
                rest = &rest[c.len_utf8()..];
                continue;
            }
        };
        out.push(unescaped);
        rest = &rest[3..];
        found = true;
    }
    found.then(|| out + query)
}
