//! Config parsers: the bootstrap's JSON/YAML text through the direct transcoder and the
//! reflective path, and an xDS resource's bytes through the decode, support check and
//! translation the xDS handlers use.

use meshproxy::config::secrets::Secrets;
use meshproxy::config::{cluster, listener, route};
use meshproxy::xds::extensions::{self, ExtensionState};
use meshproxy::xds::resource;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::Value;
use std::sync::OnceLock;
use xds_client::ads::{Resource, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use xds_client::proto::envoy::config::{cluster::v3 as cproto, endpoint::v3 as eproto};
use xds_client::proto::envoy::config::{listener::v3 as lproto, route::v3 as rproto};
use xds_client::proto::google::protobuf::Any;
use xds_client::{descriptors, json, transcode};

const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

/// The descriptor pool, held for the whole run (decoding it takes tens of milliseconds).
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<descriptors::Hold> = OnceLock::new();
    POOL.get_or_init(descriptors::hold)
}

/// A message's bytes as JSON (maps are sorted), so encodings that differ only in the
/// order of map entries compare equal.
fn canonical(bytes: &[u8], desc: &MessageDescriptor) -> Value {
    let message = DynamicMessage::decode(desc.clone(), bytes).expect("the encoding decodes");
    serde_json::to_value(&message).expect("a decoded message serializes")
}

/// Bootstrap text: what the transcoder encodes from the text, it encodes alike from the
/// parsed document, and the reflective path (the authority on what is accepted) accepts
/// it and encodes the same message.
pub fn bootstrap_transcode(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let desc = pool()
        .get_message_by_name(BOOTSTRAP)
        .expect("Bootstrap is known");
    let from_text = transcode::text_to_bytes(&text, &desc, false);
    let Ok(document) = json::parse_document(&text) else {
        assert!(
            from_text.is_err(),
            "transcoded a text that is no document: {text:?}"
        );
        return;
    };
    let from_tree = transcode::to_bytes(&document, &desc, false);
    if let (Ok(a), Ok(b)) = (&from_text, &from_tree) {
        assert_eq!(
            canonical(a, &desc),
            canonical(b, &desc),
            "text and tree: {text:?}"
        );
    }
    let Some(fast) = from_tree.as_ref().or(from_text.as_ref()).ok() else {
        return;
    };
    let reflective = json::decode_dynamic(document, BOOTSTRAP, false)
        .unwrap_or_else(|e| panic!("transcoded what the reflective path refuses ({e}): {text:?}"));
    assert_eq!(
        canonical(fast, &desc),
        canonical(&reflective.encode_to_vec(), &desc),
        "transcoder and reflective path: {text:?}"
    );
}

/// An xDS resource: the first byte picks its type (Cluster, Listener,
/// RouteConfiguration, ClusterLoadAssignment), the rest is its protobuf encoding. It is
/// accepted or rejected, never a panic.
pub fn xds_resource(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    // Held as the proxy holds it: else unwrapping TypedStructs decodes it every time.
    let _pool = pool();
    let types = [CLUSTER, LISTENER, ROUTE, ENDPOINT];
    let type_url = types[usize::from(kind) % types.len()];
    let r = Resource {
        name: String::new(),
        version: String::new(),
        body: Any {
            type_url: type_url.to_string(),
            value: body.to_vec(),
        },
    };
    let secrets = Secrets::default();
    let _ = match type_url {
        CLUSTER => resource::translate::<cproto::Cluster, _>(
            &r,
            CLUSTER,
            0,
            |c| &c.name,
            |c| cluster::translate(c, &secrets, "").map(drop),
        ),
        LISTENER => resource::translate::<lproto::Listener, _>(
            &r,
            LISTENER,
            0,
            |l| &l.name,
            |l| {
                extensions::dependencies(l)?;
                let resolved = extensions::resolve(l, &ExtensionState::default())?;
                listener::translate(&resolved, &secrets, "").map(drop)
            },
        ),
        ROUTE => resource::translate::<rproto::RouteConfiguration, _>(
            &r,
            ROUTE,
            0,
            |c| &c.name,
            |c| route::translate(c, "").map(drop),
        ),
        _ => resource::translate::<eproto::ClusterLoadAssignment, _>(
            &r,
            ENDPOINT,
            0,
            |c| &c.cluster_name,
            |la| cluster::load_assignment(la, "").map(drop),
        ),
    };
}
