//! Istio fixtures for tests: a renderer for the Go templates of istio/proxy's test data
//! (`../shared/fixtures/istio-proxy`), the node metadata and expected metric label sets
//! they hold, and a parser for Prometheus samples to compare against them.

use serde_json::Value;
use std::collections::HashMap;

/// Renders the subset of Go templates istio/proxy's test data uses: `{{ .Vars.X }}`,
/// `{{ .N }}`, and line-level `if .Vars.X` / `if eq .Vars.X "v"` / `if ne .Vars.X "v"`
/// with `else if`, `else` and `end`. Unset variables are empty.
pub fn render(template: &str, vars: &HashMap<&str, &str>) -> String {
    let var = |name: &str| vars.get(name).copied().unwrap_or("");
    let condition = |words: &[&str]| -> bool {
        let value = |w: &str| {
            w.strip_prefix(".Vars.")
                .map(var)
                .unwrap_or(w.trim_matches('"'))
                .to_string()
        };
        match words {
            ["eq", a, b] => value(a) == value(b),
            ["ne", a, b] => value(a) != value(b),
            [a] => !value(a).is_empty(),
            _ => panic!("unsupported template condition {words:?}"),
        }
    };
    // Each open `if`: (this branch is taken, some branch was taken already).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let mut out = String::new();
    for line in template.lines() {
        let directive = line
            .trim()
            .strip_prefix("{{")
            .and_then(|l| l.strip_suffix("}}"))
            .map(|l| l.trim_matches(|c: char| c == '-' || c.is_whitespace()));
        let words: Vec<&str> = directive
            .map(|d| d.split_whitespace().collect())
            .unwrap_or_default();
        match words.as_slice() {
            ["if", rest @ ..] => {
                let taken = condition(rest);
                stack.push((taken, taken));
                continue;
            }
            ["else", "if", rest @ ..] => {
                let top = stack.last_mut().expect("else inside if");
                let taken = !top.1 && condition(rest);
                *top = (taken, top.1 || taken);
                continue;
            }
            ["else"] => {
                let top = stack.last_mut().expect("else inside if");
                *top = (!top.1, true);
                continue;
            }
            ["end"] => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        if stack.iter().all(|(taken, _)| *taken) {
            let mut l = line.to_string();
            while let Some(start) = l.find("{{") {
                let end = start + l[start..].find("}}").expect("closed action") + 2;
                let inner = l[start + 2..end - 2].trim();
                let value = match inner.strip_prefix(".Vars.") {
                    Some(name) => var(name.trim()),
                    None if inner == ".N" => "",
                    None => panic!("unsupported template action {inner}"),
                };
                l.replace_range(start..end, value);
            }
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// A sidecar's bootstrap: one listener on 127.0.0.1:`port` with Istio's
/// `traffic_direction` and `chain` (plus `listener_extra`, e.g. listener filters),
/// `clusters`, and the node (`id`, `metadata`) the Istio filters announce and report.
pub fn sidecar_bootstrap(
    (id, metadata): (&str, Value),
    (direction, port): (&str, u16),
    chain: Value,
    listener_extra: Value,
    clusters: Vec<Value>,
) -> String {
    let mut listener = serde_json::json!({
        "name": direction.to_lowercase(),
        "traffic_direction": direction,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [chain]
    });
    crate::config::merge(&mut listener, listener_extra);
    crate::config::bootstrap_with(
        vec![listener],
        clusters,
        serde_json::json!({"node": {"id": id, "cluster": "test-cluster", "metadata": metadata}}),
    )
}

/// A file of `../shared/fixtures/istio-proxy`.
pub fn fixture(path: &str) -> String {
    let p = crate::fixtures().join("istio-proxy").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A node metadata template (a JSON object body without its braces), rendered.
pub fn node_metadata(path: &str) -> Value {
    let body = render(&fixture(path), &HashMap::new());
    serde_json::from_str(&format!("{{{body}}}")).expect("node metadata is JSON")
}

/// A YAML (or JSON) fixture rendered with `vars`, as a value.
pub fn yaml(path: &str, vars: &HashMap<&str, &str>) -> Value {
    xds_client::json::parse_document(&render(&fixture(path), vars)).expect("fixture parses")
}

/// The metric name, labels in order, and value of the first sample of an expected
/// metric fixture (`name`, `type`, `metric[0].label`, `metric[0].counter.value`).
pub fn expected_metric(
    path: &str,
    vars: &HashMap<&str, &str>,
) -> (String, Vec<(String, String)>, f64) {
    let m = yaml(path, vars);
    let sample = &m["metric"][0];
    let labels = sample["label"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| {
            let v = match &l["value"] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (l["name"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let value = ["counter", "gauge"]
        .iter()
        .find_map(|k| sample[k]["value"].as_f64())
        .expect("a counter or gauge value");
    (m["name"].as_str().unwrap().to_string(), labels, value)
}

/// Every sample of `metric` in a Prometheus exposition: labels in order, and value.
pub fn samples(exposition: &str, metric: &str) -> Vec<(Vec<(String, String)>, f64)> {
    exposition
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let close = r.rfind('}')?;
                    (&r[..close], r[close + 1..].trim())
                }
                None if rest.starts_with(' ') => ("", rest.trim()),
                None => return None,
            };
            let mut parsed = Vec::new();
            let mut s = labels;
            while let Some(eq) = s.find("=\"") {
                let name = s[..eq].trim_start_matches(',').to_string();
                let after = &s[eq + 2..];
                let mut end = 0;
                let bytes = after.as_bytes();
                while end < bytes.len()
                    && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\'))
                {
                    end += 1;
                }
                parsed.push((
                    name,
                    after[..end].replace("\\\"", "\"").replace("\\\\", "\\"),
                ));
                s = &after[(end + 1).min(after.len())..];
            }
            Some((parsed, value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_branches_and_variables() {
        let t = "a: {{ .Vars.X }}\n{{- if .Vars.Y }}\nb: y\n{{- else if eq .Vars.Z \"1\" }}\nb: z\n{{- else }}\nb: none\n{{- end }}\n";
        let vars = HashMap::from([("X", "1"), ("Z", "1")]);
        assert_eq!(render(t, &vars), "a: 1\nb: z\n");
        assert_eq!(render(t, &HashMap::new()), "a: \nb: none\n");
    }

    #[test]
    fn parses_samples() {
        let text = "# TYPE m counter\nm{a=\"x\",b=\"q\\\"r\"} 3\nm_count{a=\"y\"} 1\nm 2\n";
        let s = samples(text, "m");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].0,
            vec![("a".into(), "x".into()), ("b".into(), "q\"r".into())]
        );
        assert_eq!((s[0].1, s[1].1), (3.0, 2.0));
    }
}
