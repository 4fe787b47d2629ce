//! Key material never leaves the process through the admin API. Envoy replaces every
//! string or bytes leaf under a field it marks `udpa.annotations.sensitive` with
//! `[redacted]`; the sensitive fields that can carry key material in what meshproxy
//! accepts are these names (TLS certificates, gRPC SSL credentials, the cryptomb
//! provider's key), so the JSON of a dump is redacted by name, in every section.

use serde_json::Value;

/// Field names whose whole subtree is secret.
const SENSITIVE: [&str; 3] = ["private_key", "password", "pkcs12"];

/// `[redacted]`, and its base64 form for bytes fields.
const REDACTED: &str = "[redacted]";
const REDACTED_BYTES: &str = "W3JlZGFjdGVkXQ==";

/// Redacts every sensitive field of a proto3 JSON document in place.
pub fn sensitive(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, child) in map.iter_mut() {
                if SENSITIVE.contains(&name.as_str()) {
                    leaves(child, name);
                } else {
                    sensitive(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sensitive),
        _ => {}
    }
}

/// Replaces every string leaf below a sensitive field (`field` names the leaf's own key).
fn leaves(value: &mut Value, field: &str) {
    match value {
        Value::String(s) => {
            *s = if field == "inline_bytes" {
                REDACTED_BYTES
            } else {
                REDACTED
            }
            .to_string();
        }
        Value::Object(map) => map.iter_mut().for_each(|(k, v)| leaves(v, k)),
        Value::Array(items) => items.iter_mut().for_each(|v| leaves(v, field)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sensitive_subtrees_are_redacted_and_nothing_else() {
        let mut dump = json!({"a": [{"tls_certificate": {
            "certificate_chain": {"filename": "/c.pem"},
            "private_key": {"inline_bytes": "S0VZ"},
            "private_key_provider": {"typed_config": {"private_key": {"inline_string": "KEY"}, "poll_delay": "0.02s"}},
        }}]});
        sensitive(&mut dump);
        let c = &dump["a"][0]["tls_certificate"];
        assert_eq!(c["certificate_chain"]["filename"], "/c.pem");
        assert_eq!(c["private_key"]["inline_bytes"], REDACTED_BYTES);
        let p = &c["private_key_provider"]["typed_config"];
        assert_eq!(p["private_key"]["inline_string"], REDACTED);
        assert_eq!(p["poll_delay"], "0.02s");
    }
}
