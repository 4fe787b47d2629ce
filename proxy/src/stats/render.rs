//! Rendering of the stat store in Envoy's `/stats` text and JSON formats and in Prometheus
//! exposition format, with `usedonly` and `filter=<regex>` selection.

use super::store::{StatEntry, StatKind, Store};
use regex::Regex;
use std::fmt::Write;

/// Which stats to show.
#[derive(Debug, Default)]
pub struct Selection {
    /// Only stats that were written.
    pub used_only: bool,
    /// Only stats whose full name matches (search, not full match, as in Envoy).
    pub filter: Option<Regex>,
}

impl Selection {
    fn keep(&self, name: &str, e: &StatEntry) -> bool {
        (!self.used_only || e.used()) && self.filter.as_ref().is_none_or(|r| r.is_match(name))
    }
}

fn quantiles(bounds: &[f64], counts: &[u64], total: u64) -> String {
    const QS: [(f64, &str); 10] = [
        (0.0, "P0"),
        (0.25, "P25"),
        (0.5, "P50"),
        (0.75, "P75"),
        (0.9, "P90"),
        (0.95, "P95"),
        (0.99, "P99"),
        (0.995, "P99.5"),
        (0.999, "P99.9"),
        (1.0, "P100"),
    ];
    QS.iter()
        .map(|(q, name)| {
            let target = (q * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            let mut bound = f64::NAN;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= target {
                    bound = bounds.get(i).copied().unwrap_or(f64::INFINITY);
                    break;
                }
            }
            format!("{name}({bound},{bound})")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Envoy's text format: `name: value` per line, counters and gauges sorted, then histograms.
pub fn text(store: &Store, sel: &Selection) -> String {
    let mut out = String::new();
    let mut histograms = String::new();
    for (name, e) in store.snapshot() {
        if !sel.keep(&name, &e) {
            continue;
        }
        match &e.kind {
            StatKind::Counter(c) => writeln!(out, "{name}: {}", c.value()),
            StatKind::Gauge(g) => writeln!(out, "{name}: {}", g.shown()),
            StatKind::Histogram(h) => {
                let (counts, total, _) = h.snapshot();
                if total == 0 {
                    writeln!(histograms, "{name}: No recorded values")
                } else {
                    writeln!(
                        histograms,
                        "{name}: {}",
                        quantiles(h.bounds(), &counts, total)
                    )
                }
            }
        }
        .ok();
    }
    out + &histograms
}

/// Envoy's `/stats?format=json`: `{"stats": [{"name":..., "value":...}, ...]}`.
pub fn json(store: &Store, sel: &Selection) -> serde_json::Value {
    let mut stats = Vec::new();
    let mut histograms = Vec::new();
    for (name, e) in store.snapshot() {
        if !sel.keep(&name, &e) {
            continue;
        }
        match &e.kind {
            StatKind::Counter(c) => {
                stats.push(serde_json::json!({"name": name, "value": c.value()}))
            }
            StatKind::Gauge(g) => stats.push(serde_json::json!({"name": name, "value": g.shown()})),
            StatKind::Histogram(h) => {
                let (counts, total, sum) = h.snapshot();
                let buckets: Vec<_> = h
                    .bounds()
                    .iter()
                    .zip(counts.iter())
                    .map(|(b, c)| serde_json::json!({"upper_bound": b, "count": c}))
                    .collect();
                histograms.push(serde_json::json!({"name": name, "count": total, "sum": sum, "buckets": buckets}));
            }
        }
    }
    if !histograms.is_empty() {
        stats.push(serde_json::json!({"histograms": {"computed_quantiles": histograms}}));
    }
    serde_json::json!({ "stats": stats })
}

/// Stat namespaces registered by extensions: Prometheus names drop the namespace and
/// take no `envoy_` prefix (`istiocustom.istio_requests_total` -> `istio_requests_total`).
const CUSTOM_NAMESPACES: [&str; 1] = ["istiocustom."];

fn prometheus_name(extracted: &str) -> String {
    let custom = CUSTOM_NAMESPACES
        .iter()
        .find_map(|ns| extracted.strip_prefix(ns));
    let prefix = if custom.is_some() { "" } else { "envoy_" };
    format!("{prefix}{}", sanitize(custom.unwrap_or(extracted)))
}

/// A Prometheus name: every character but ASCII letters and digits becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(tags: &[(String, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape_label(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    format!("{{{}}}", parts.join(","))
}

/// Prometheus text exposition with Envoy's names (`envoy_` + tag-extracted name) and tags
/// as labels (`{}` when there are none, as Envoy writes it); one `# TYPE` line per metric
/// family; counters, then gauges, then histograms, each sorted by name, as Envoy orders
/// them.
pub fn prometheus(store: &Store, sel: &Selection) -> String {
    type Families = std::collections::BTreeMap<String, Vec<String>>;
    let (mut counters, mut gauges, mut histograms) =
        (Families::new(), Families::new(), Families::new());
    for (name, e) in store.snapshot() {
        if !sel.keep(&name, &e) {
            continue;
        }
        let (extracted, tags) = store.prometheus_tags(&name, &e);
        let metric = prometheus_name(&extracted);
        match &e.kind {
            StatKind::Counter(c) => counters.entry(metric.clone()).or_default().push(format!(
                "{metric}{} {}",
                labels(&tags, None),
                c.value()
            )),
            StatKind::Gauge(g) => gauges.entry(metric.clone()).or_default().push(format!(
                "{metric}{} {}",
                labels(&tags, None),
                g.shown()
            )),
            StatKind::Histogram(h) => {
                let (counts, total, sum) = h.snapshot();
                let lines = histograms.entry(metric.clone()).or_default();
                let mut cumulative = 0;
                for (b, c) in h.bounds().iter().zip(counts.iter()) {
                    cumulative += c;
                    lines.push(format!(
                        "{metric}_bucket{} {cumulative}",
                        labels(&tags, Some(("le", format!("{b}"))))
                    ));
                }
                lines.push(format!(
                    "{metric}_bucket{} {total}",
                    labels(&tags, Some(("le", "+Inf".into())))
                ));
                lines.push(format!("{metric}_sum{} {sum}", labels(&tags, None)));
                lines.push(format!("{metric}_count{} {total}", labels(&tags, None)));
            }
        }
    }
    let mut out = String::new();
    for (kind, families) in [
        ("counter", counters),
        ("gauge", gauges),
        ("histogram", histograms),
    ] {
        for (metric, lines) in families {
            writeln!(out, "# TYPE {metric} {kind}").ok();
            for l in lines {
                writeln!(out, "{l}").ok();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_json_and_prometheus() {
        let store = Store::new();
        let http = store
            .root()
            .tagged("http", "envoy_http_conn_manager_prefix", "ingress");
        http.counter_tagged(
            "downstream_rq_2xx",
            "downstream_rq_xx",
            ("envoy_response_code_class", "2"),
        )
        .add(3);
        http.counter("downstream_rq_total");
        store.root().child("server").gauge("live").set(1);
        let all = Selection::default();
        assert_eq!(text(&store, &all), "http.ingress.downstream_rq_2xx: 3\nhttp.ingress.downstream_rq_total: 0\nserver.live: 1\n");
        let used = Selection {
            used_only: true,
            filter: Some(Regex::new("rq").unwrap()),
        };
        assert_eq!(text(&store, &used), "http.ingress.downstream_rq_2xx: 3\n");
        let prom = prometheus(&store, &all);
        assert!(prom.contains("# TYPE envoy_http_downstream_rq_xx counter\nenvoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix=\"ingress\",envoy_response_code_class=\"2\"} 3\n"), "{prom}");
        assert!(prom.contains("envoy_server_live{} 1\n"), "{prom}");
        assert_eq!(json(&store, &used)["stats"][0]["value"], 3);
        store
            .root()
            .child("istiocustom")
            .counter_with_tags("istio_requests_total", &[("reporter", "source")])
            .inc();
        assert!(
            text(&store, &all).contains("istiocustom.istio_requests_total.reporter.source: 1\n")
        );
        let prom = prometheus(&store, &all);
        assert!(
            prom.contains("# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"source\"} 1\n"),
            "{prom}"
        );
    }

    #[test]
    fn histogram_rendering() {
        let store = Store::new();
        let h = store.root().histogram("rq_time");
        h.record(3);
        h.record(700);
        let prom = prometheus(&store, &Selection::default());
        assert!(
            prom.contains("envoy_rq_time_bucket{le=\"5\"} 1\n"),
            "{prom}"
        );
        assert!(
            prom.contains("envoy_rq_time_bucket{le=\"+Inf\"} 2\n"),
            "{prom}"
        );
        assert!(text(&store, &Selection::default()).starts_with("rq_time: P0(5,5)"));
    }
}
