//! Listener filters' `filter_disabled` (Istio's virtualInbound turns its inspectors off on
//! some ports) in Envoy 1.40 and meshproxy: an HTTP inspector disabled for the
//! listener's destination port leaves plaintext HTTP unrecognised, so the chain matching
//! `application_protocols` is skipped; `not_match`, `or_match` and `and_match` combine as
//! in Envoy.

use e2e::config::{bootstrap, hcm};
use e2e::proxy::agree_with_envoy;
use serde_json::{json, Value};

fn chain(alpn: Option<&[&str]>, body: &str) -> Value {
    let vh = json!([{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]);
    let mut c = json!({"filters": [{"name": "http", "typed_config": hcm(vh, json!({}))}]});
    if let Some(a) = alpn {
        c["filter_chain_match"] = json!({"application_protocols": a});
    }
    c
}

fn listener(port: u16, disabled: Value) -> Value {
    let mut inspector = json!({"name": "http", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}});
    if !disabled.is_null() {
        inspector["filter_disabled"] = disabled;
    }
    json!({
        "name": format!("l{port}"),
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "listener_filters": [inspector],
        "filter_chains": [chain(Some(&["http/1.1", "h2c"]), "http-chain"), chain(None, "other-chain")]
    })
}

#[test]
fn disabled_inspectors_match_envoy() {
    let base = loop {
        let p = e2e::free_port();
        if (1..5).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            break p;
        }
    };
    let own = |p: u16| json!({"destination_port_range": {"start": p, "end": p + 1}});
    let cfg = |_: u16| {
        bootstrap(
            vec![
                listener(base, Value::Null),
                listener(base + 1, own(base + 1)),
                listener(base + 2, json!({"not_match": own(base + 2)})),
                listener(
                    base + 3,
                    json!({"or_match": {"rules": [own(1), own(base + 3)]}}),
                ),
                listener(
                    base + 4,
                    json!({"and_match": {"rules": [own(base + 4), {"any_match": true}, {"not_match": own(base + 4)}]}}),
                ),
            ],
            vec![],
        )
    };
    let got = agree_with_envoy(cfg, |_, _| {
        (0..5)
            .map(|i| e2e::curl::get(base + i, "/", &[]).text())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        got,
        Some(vec![
            "http-chain".to_string(),
            "other-chain".into(),
            "http-chain".into(),
            "other-chain".into(),
            "http-chain".into(),
        ]),
        "Envoy 1.40 is required"
    );
}
