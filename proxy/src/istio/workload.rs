//! A workload's identity as Istio's telemetry sees it: name, namespace, cluster,
//! canonical service and revision, app and version. It is read from the node metadata
//! pilot-agent writes (`WORKLOAD_NAME`, `NAMESPACE`, `CLUSTER_ID`, `LABELS`, `OWNER`, ...),
//! carried between proxies in the `x-envoy-peer-metadata` header (base64 of a serialized
//! `google.protobuf.Struct`), and, as a last resort, read from an endpoint's
//! `istio.workload` metadata (`name;namespace;canonical name;revision;cluster`).

use base64::Engine;
use prost::Message;
use prost_types::value::Kind;
use prost_types::{Struct, Value};
use std::collections::BTreeMap;
use xds_client::proto::google::protobuf as pb;

const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
const OWNER_PREFIX: &str = "kubernetes://apis/apps/v1/namespaces/";
/// The controller kinds an `OWNER` names that Istio recognises.
const KINDS: [&str; 4] = ["deployment", "pod", "job", "cronjob"];

/// The node metadata as JSON (what metric expressions read as `xds.node.metadata`).
pub fn node_json(metadata: &pb::Struct) -> serde_json::Value {
    struct_json(&Struct::decode(metadata.encode_to_vec().as_slice()).unwrap_or_default())
}

fn struct_json(s: &Struct) -> serde_json::Value {
    fn value(v: &Value) -> serde_json::Value {
        match &v.kind {
            Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
            Some(Kind::NumberValue(n)) => serde_json::json!(n),
            Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
            Some(Kind::StructValue(s)) => struct_json(s),
            Some(Kind::ListValue(l)) => l.values.iter().map(value).collect(),
            Some(Kind::NullValue(_)) | None => serde_json::Value::Null,
        }
    }
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect()
}

/// A workload's telemetry identity; empty strings are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// Pod name (`NAME`).
    pub instance: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `WORKLOAD_NAME`.
    pub workload: String,
    /// `CLUSTER_ID`.
    pub cluster: String,
    /// Label `service.istio.io/canonical-name`.
    pub canonical_name: String,
    /// Label `service.istio.io/canonical-revision`.
    pub canonical_revision: String,
    /// Label `app`.
    pub app: String,
    /// Label `version`.
    pub version: String,
    /// The controller kind parsed from `OWNER` (`deployment`, ...).
    pub kind: Option<&'static str>,
    /// Further labels the peer metadata filter was asked to carry (`additional_labels`).
    pub labels: BTreeMap<String, String>,
}

/// A string field of a Struct (`""` when absent or not a string).
fn string<'a>(s: &'a Struct, key: &str) -> &'a str {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => v,
        _ => "",
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// The controller kind in `owner` for `workload` (`.../deployments/<workload>`).
fn parse_owner(owner: &str, workload: &str) -> Option<&'static str> {
    let rest = owner.strip_suffix(workload)?.strip_suffix("s/")?;
    let kind = rest.rsplit('/').next()?;
    KINDS.into_iter().find(|k| *k == kind)
}

impl Workload {
    /// The peer as metric expressions see it (`filter_state.upstream_peer.service`,
    /// `.labels['role']`, ...).
    pub fn attributes(&self) -> serde_json::Value {
        let mut labels: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        for (k, v) in [("app", &self.app), ("version", &self.version)] {
            if !v.is_empty() {
                labels.insert(k.into(), serde_json::Value::String(v.clone()));
            }
        }
        serde_json::json!({
            "name": self.instance, "namespace": self.namespace, "workload": self.workload,
            "cluster": self.cluster, "service": self.canonical_name,
            "revision": self.canonical_revision, "app": self.app, "version": self.version,
            "labels": labels,
        })
    }

    /// A workload from an announced Struct (the header or TCP exchange payload).
    pub fn from_struct(m: &Struct, additional_labels: &[String]) -> Self {
        let mut w = Workload {
            instance: string(m, "NAME").into(),
            namespace: string(m, "NAMESPACE").into(),
            workload: string(m, "WORKLOAD_NAME").into(),
            cluster: string(m, "CLUSTER_ID").into(),
            ..Default::default()
        };
        w.kind = parse_owner(string(m, "OWNER"), &w.workload);
        let Some(Kind::StructValue(labels)) = m.fields.get("LABELS").and_then(|v| v.kind.as_ref())
        else {
            return w;
        };
        for (k, v) in &labels.fields {
            let Some(Kind::StringValue(v)) = &v.kind else {
                continue;
            };
            match k.as_str() {
                CANONICAL_NAME => w.canonical_name = v.clone(),
                CANONICAL_REVISION => w.canonical_revision = v.clone(),
                "app" => w.app = v.clone(),
                "version" => w.version = v.clone(),
                _ if additional_labels.contains(k) => {
                    w.labels.insert(k.clone(), v.clone());
                }
                _ => {}
            }
        }
        w
    }

    /// The local workload, from the bootstrap's node metadata (envoy-types' Struct has
    /// the same wire form as prost-types', whose ordered map this module works with).
    pub fn from_node(metadata: &pb::Struct, additional_labels: &[String]) -> Self {
        let m = Struct::decode(metadata.encode_to_vec().as_slice()).unwrap_or_default();
        Self::from_struct(&m, additional_labels)
    }

    /// A peer's workload from the `x-envoy-peer-metadata` header value; `None` when it is
    /// not base64 of a serialized Struct.
    pub fn from_header(value: &[u8], additional_labels: &[String]) -> Option<Self> {
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let bytes = engine.decode(value).ok()?;
        let s = Struct::decode(bytes.as_slice()).ok()?;
        Some(Self::from_struct(&s, additional_labels))
    }

    /// A peer's workload from endpoint metadata `istio.workload`
    /// (`name;namespace;canonical name;canonical revision;cluster`).
    pub fn from_endpoint(encoded: &str) -> Option<Self> {
        let parts: Vec<&str> = encoded.split(';').collect();
        if parts.len() < 5 {
            return None;
        }
        Some(Workload {
            workload: parts[0].into(),
            namespace: parts[1].into(),
            canonical_name: parts[2].into(),
            canonical_revision: parts[3].into(),
            cluster: parts[4].into(),
            ..Default::default()
        })
    }

    /// The Struct this workload is announced as: the identity fields that are known,
    /// `LABELS` (always present) with the canonical service, app and version labels,
    /// and `OWNER` when the controller kind is known.
    pub fn to_struct(&self) -> Struct {
        let mut fields = BTreeMap::new();
        for (key, value) in [
            ("NAME", &self.instance),
            ("NAMESPACE", &self.namespace),
            ("WORKLOAD_NAME", &self.workload),
            ("CLUSTER_ID", &self.cluster),
        ] {
            if !value.is_empty() {
                fields.insert(key.to_string(), string_value(value));
            }
        }
        let mut labels = BTreeMap::new();
        for (key, value) in [
            (CANONICAL_NAME, &self.canonical_name),
            (CANONICAL_REVISION, &self.canonical_revision),
            ("app", &self.app),
            ("version", &self.version),
        ] {
            if !value.is_empty() {
                labels.insert(key.to_string(), string_value(value));
            }
        }
        for (k, v) in &self.labels {
            labels.insert(k.clone(), string_value(v));
        }
        fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
        if let Some(kind) = self.kind {
            let owner = format!("{OWNER_PREFIX}{}/{kind}s/{}", self.namespace, self.workload);
            fields.insert("OWNER".into(), string_value(&owner));
        }
        Struct { fields }
    }

    /// The `x-envoy-peer-metadata` value announcing this workload: base64 of the
    /// Struct's serialization (map keys in order, so the bytes are deterministic).
    pub fn header_value(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.to_struct().encode_to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> pb::Struct {
        let json = serde_json::json!({
            "NAME": "ratings-v1-abc", "NAMESPACE": "default", "WORKLOAD_NAME": "ratings-v1",
            "CLUSTER_ID": "server-cluster",
            "OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/ratings-v1",
            "LABELS": {"app": "ratings", "version": "v1", "role": "server",
                       "service.istio.io/canonical-name": "ratings",
                       "service.istio.io/canonical-revision": "version-1"},
            "ISTIO_VERSION": "1.5-dev"
        });
        xds_client::json::decode(json, "google.protobuf.Struct", false).unwrap()
    }

    #[test]
    fn node_metadata_round_trips_through_the_header() {
        let local = Workload::from_node(&node(), &[]);
        assert_eq!(local.workload, "ratings-v1");
        assert_eq!(local.canonical_revision, "version-1");
        assert_eq!(local.kind, Some("deployment"));
        assert!(local.labels.is_empty(), "role is not an additional label");
        let value = local.header_value();
        assert_eq!(
            Workload::from_header(value.as_bytes(), &[]),
            Some(local.clone())
        );
        let unpadded = value.trim_end_matches('=');
        assert_eq!(Workload::from_header(unpadded.as_bytes(), &[]), Some(local));
        assert_eq!(Workload::from_header(b"%%%", &[]), None);
    }

    #[test]
    fn additional_labels_are_carried() {
        let local = Workload::from_node(&node(), &["role".to_string()]);
        assert_eq!(local.labels.get("role").map(String::as_str), Some("server"));
        let back = Workload::from_header(local.header_value().as_bytes(), &["role".into()]);
        assert_eq!(back, Some(local));
    }

    #[test]
    fn endpoint_encoding() {
        let w =
            Workload::from_endpoint("ratings-v1;default;ratings;version-1;server-cluster").unwrap();
        assert_eq!(
            (
                w.workload.as_str(),
                w.namespace.as_str(),
                w.cluster.as_str()
            ),
            ("ratings-v1", "default", "server-cluster")
        );
        assert_eq!(Workload::from_endpoint("a;b"), None);
    }

    #[test]
    fn owner_kinds() {
        assert_eq!(
            parse_owner("kubernetes://apis/apps/v1/namespaces/x/jobs/w", "w"),
            Some("job")
        );
        assert_eq!(
            parse_owner("kubernetes://apis/apps/v1/namespaces/x/things/w", "w"),
            None
        );
        assert_eq!(parse_owner("", "w"), None);
    }
}
