//! Figures and their presentation: every figure is the median of repeated runs with min and
//! max, side by side for the direct path (the ceiling), Envoy and meshproxy, with the ratio
//! meshproxy/Envoy measured in the same run.

use serde_json::{json, Value};

/// Repeated measurements of one figure.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// (median, min, max); zeros when empty.
    pub fn summary(&self) -> (f64, f64, f64) {
        if self.0.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        (median, v[0], v[v.len() - 1])
    }
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// Scenario.
    pub scenario: String,
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: &'static str,
    /// Direct to upstream (None when not applicable).
    pub direct: Option<Samples>,
    /// Envoy.
    pub envoy: Samples,
    /// meshproxy.
    pub meshproxy: Samples,
}

impl Row {
    /// meshproxy / Envoy of the medians.
    pub fn ratio(&self) -> f64 {
        let (e, _, _) = self.envoy.summary();
        let (m, _, _) = self.meshproxy.summary();
        if e == 0.0 {
            0.0
        } else {
            m / e
        }
    }

    fn json(&self) -> Value {
        let s = |x: &Samples| {
            let (med, min, max) = x.summary();
            json!({"median": med, "min": min, "max": max, "runs": x.0})
        };
        json!({"scenario": self.scenario, "metric": self.metric, "unit": self.unit,
            "direct": self.direct.as_ref().map(s), "envoy": s(&self.envoy), "meshproxy": s(&self.meshproxy),
            "ratio_meshproxy_over_envoy": self.ratio()})
    }
}

fn fmt(x: &Samples) -> String {
    let (med, min, max) = x.summary();
    let p = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    format!("{} ({}–{})", p(med), p(min), p(max))
}

/// The Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from("| scenario | metric | direct (ceiling) | Envoy 1.40 | meshproxy | meshproxy/Envoy |\n|---|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} ({}) | {} | {} | {} | {:.2} |\n",
            r.scenario,
            r.metric,
            r.unit,
            r.direct.as_ref().map(fmt).unwrap_or_else(|| "–".into()),
            fmt(&r.envoy),
            fmt(&r.meshproxy),
            r.ratio()
        ));
    }
    out
}

/// The JSON document with every figure.
pub fn json(rows: &[Row], command: &str, machine: &str) -> Value {
    json!({"command": command, "machine": machine, "rows": rows.iter().map(Row::json).collect::<Vec<_>>()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_and_ratio() {
        assert_eq!(Samples(vec![3.0, 1.0, 2.0]).summary(), (2.0, 1.0, 3.0));
        assert_eq!(Samples(vec![4.0, 1.0, 2.0, 3.0]).summary(), (2.5, 1.0, 4.0));
        let r = Row {
            scenario: "s".into(),
            metric: "m".into(),
            unit: "u",
            direct: None,
            envoy: Samples(vec![2.0]),
            meshproxy: Samples(vec![4.0]),
        };
        assert_eq!(r.ratio(), 2.0);
        assert!(table(&[r]).contains("| 2.00 |"));
    }
}
