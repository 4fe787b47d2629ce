//! The xDS gRPC client: one stream to a management server, aggregated (ADS, every type on
//! one stream) or for a single type, in state-of-the-world or Delta form.
//!
//! The client owns the protocol: subscriptions, versions, nonces, ACK and NACK, reconnect
//! with jittered exponential backoff. What a resource means is the [`Handler`]'s business:
//! it applies an update and reports what it rejected, and the client ACKs or NACKs after
//! the apply returned (never before the resource serves).

mod backoff;
mod delta;
mod driver;
pub mod file;
mod held;
mod interest;
mod service;
mod sotw;
pub mod transport;

pub use interest::Interest;
pub use service::Service;
pub use transport::{ClientTls, Target};

use crate::proto::envoy::config::core::v3::Node;
use std::sync::Arc;

/// `type.googleapis.com/envoy.config.cluster.v3.Cluster`
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `type.googleapis.com/envoy.config.listener.v3.Listener`
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `type.googleapis.com/envoy.config.route.v3.RouteConfiguration`
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment`
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// `type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret`
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// `type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig` (ECDS)
pub const EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// `type.googleapis.com/envoy.service.discovery.v3.Resource`: a SotW resource wrapped
/// with its name and version.
const WRAPPED: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// One resource of a response.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The name (Delta, or a wrapped SotW resource); empty when only the body names it.
    pub name: String,
    /// The resource version (Delta); empty in SotW.
    pub version: String,
    /// The resource itself.
    pub body: crate::proto::google::protobuf::Any,
}

/// A response, as the handler sees it.
#[derive(Debug)]
pub struct Update {
    /// The resource type.
    pub type_url: String,
    /// `version_info` (SotW) or `system_version_info` (Delta).
    pub version: String,
    /// Added or changed resources.
    pub resources: Vec<Resource>,
    /// Names removed (Delta `removed_resources`).
    pub removed: Vec<String>,
    /// State of the world: for wildcard types, what is absent is gone.
    pub state_of_the_world: bool,
}

impl Update {
    /// A state-of-the-world response (from a stream or a file) as an update.
    pub fn state_of_the_world(
        response: crate::proto::envoy::service::discovery::v3::DiscoveryResponse,
    ) -> Update {
        Update {
            type_url: response.type_url,
            version: response.version_info,
            resources: response
                .resources
                .into_iter()
                .map(unwrap_resource)
                .collect(),
            removed: Vec::new(),
            state_of_the_world: true,
        }
    }

    /// The version a resource came with: its own (Delta), else the response's.
    pub fn version_of<'a>(&'a self, resource: &'a Resource) -> &'a str {
        if resource.version.is_empty() {
            &self.version
        } else {
            &resource.version
        }
    }
}

/// A resource the handler refused, with why (this becomes the NACK's `error_detail`).
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The resource name (or its index when it had no readable name).
    pub name: String,
    /// The reason, naming the field.
    pub error: String,
}

/// The handler's answer to an update.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The resources it rejected (empty: ACK, else NACK).
    pub rejected: Vec<Rejected>,
    /// Hold the answer until this fires (or its sender is dropped): Envoy holds the CDS
    /// ACK while clusters are warming. Later answers of the type queue behind it.
    pub hold_until: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// What applies resources. Called on the stream's task: keep it short and non-blocking.
pub trait Handler: Send + Sync + 'static {
    /// Applies `update` and says what it rejected. The good resources of an update are
    /// applied even when others are rejected.
    fn apply(&self, update: Update) -> Verdict;
    /// The stream to the management server came up (true) or went down.
    fn connected(&self, up: bool);
    /// The stream failed while `type_url` was subscribed (`update_failure`).
    fn failed(&self, type_url: &str);
    /// The largest response seen so far, in bytes.
    fn message_size(&self, _bytes: usize) {}
    /// An update of `type_url` could not even be read (a broken config file).
    fn unreadable(&self, _type_url: &str) {}
}

/// How to reach the server and what to say in requests.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// The server address.
    pub target: Target,
    /// TLS, when the config source's cluster has a TLS transport socket.
    pub tls: Option<ClientTls>,
    /// Which gRPC service carries the stream.
    pub service: Service,
    /// Delta (`DELTA_GRPC`) or state-of-the-world (`GRPC`).
    pub delta: bool,
    /// The node identity sent to the server.
    pub node: Node,
    /// Send the node in the first request of a stream only.
    pub node_on_first_message_only: bool,
    /// Largest accepted response message.
    pub max_message_bytes: usize,
    /// Name used in logs (the config source's cluster).
    pub name: String,
}

/// A stream's subscriptions, and (once started) the stream serving them.
#[derive(Clone, Default)]
pub struct Client {
    interest: Arc<interest::Subscriptions>,
}

impl Client {
    /// A client with no subscriptions; [`Client::start`] opens the stream.
    pub fn new() -> Client {
        Client::default()
    }

    /// Starts the stream task on the current tokio runtime; it runs (reconnecting) for the
    /// life of the process.
    pub fn start(&self, config: StreamConfig, handler: Arc<dyn Handler>) {
        tokio::spawn(run(config, handler, self.interest.clone()));
    }

    /// Sets what to receive of `type_url`; requests follow at once when it changed.
    pub fn set_interest(&self, type_url: &str, interest: Interest) {
        self.interest.set(type_url, interest);
    }
}

async fn run(config: StreamConfig, handler: Arc<dyn Handler>, subs: Arc<interest::Subscriptions>) {
    let mut backoff = backoff::Backoff::new();
    // State carried across streams: SotW versions, Delta resource versions.
    let mut sotw_state = sotw::State::default();
    let mut delta_state = delta::State::default();
    loop {
        let progressed = match transport::connect(&config.target, config.tls.as_ref()).await {
            Err(e) => {
                tracing::warn!(target: "config", "{}: cannot connect to {}: {e}", config.name, config.target);
                false
            }
            Ok(channel) => {
                handler.connected(true);
                let outcome = if config.delta {
                    delta::run(&config, channel, &*handler, &subs, &mut delta_state).await
                } else {
                    sotw::run(&config, channel, &*handler, &subs, &mut sotw_state).await
                };
                handler.connected(false);
                for t in subs.subscribed_types() {
                    handler.failed(&t);
                }
                tracing::warn!(target: "config", "{}: xDS stream closed: {}", config.name, outcome.reason);
                outcome.received
            }
        };
        if progressed {
            backoff.reset();
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

/// How a stream ended.
struct StreamEnd {
    /// Whether any response arrived (a stream that worked reconnects at the base delay).
    received: bool,
    /// Why it ended, for the log.
    reason: String,
}

/// The NACK `error_detail`: gRPC INTERNAL with every rejection, as Envoy reports them.
fn error_detail(rejected: &[Rejected]) -> Option<crate::proto::google::rpc::Status> {
    if rejected.is_empty() {
        return None;
    }
    let message = rejected
        .iter()
        .map(|r| format!("{}: {}", r.name, r.error))
        .collect::<Vec<_>>()
        .join("\n");
    Some(crate::proto::google::rpc::Status {
        code: 13,
        message,
        details: Vec::new(),
    })
}

/// Unwraps a SotW resource sent as `envoy.service.discovery.v3.Resource`.
fn unwrap_resource(body: crate::proto::google::protobuf::Any) -> Resource {
    if body.type_url == WRAPPED {
        use prost::Message;
        if let Ok(r) =
            crate::proto::envoy::service::discovery::v3::Resource::decode(body.value.as_slice())
        {
            if let Some(inner) = r.resource {
                return Resource {
                    name: r.name,
                    version: r.version,
                    body: inner,
                };
            }
        }
    }
    Resource {
        name: String::new(),
        version: String::new(),
        body,
    }
}
