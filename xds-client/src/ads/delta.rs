//! Delta (incremental) streams: requests carry subscribe/unsubscribe changes, responses
//! carry only changed and removed resources, each with its own version; after a
//! reconnect the versions held are offered as `initial_resource_versions`.

use super::driver::{self, Answer, Protocol};
use super::interest::{Interest, Subscriptions};
use super::{error_detail, Handler, Rejected, Resource, StreamConfig, StreamEnd, Update};
use crate::proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio::sync::mpsc::UnboundedSender;

/// What survives a reconnect: the version of every resource held, per type.
#[derive(Default)]
pub struct State {
    versions: HashMap<String, BTreeMap<String, String>>,
}

struct Stream<'a> {
    config: &'a StreamConfig,
    tx: UnboundedSender<DeltaDiscoveryRequest>,
    node_sent: bool,
    sent: HashMap<String, Interest>,
    state: &'a mut State,
}

impl Stream<'_> {
    fn send(&mut self, request: DeltaDiscoveryRequest) {
        let request = self.with_node(request);
        let _ = self.tx.send(request);
    }

    /// Adds the node when this is the stream's first request (or every request).
    fn with_node(&mut self, mut request: DeltaDiscoveryRequest) -> DeltaDiscoveryRequest {
        if !self.node_sent || !self.config.node_on_first_message_only {
            request.node = Some(self.config.node.clone());
        }
        self.node_sent = true;
        request
    }

    /// Sends subscription changes for every type whose interest changed.
    fn send_changes(&mut self, subs: &Subscriptions) {
        for (type_url, interest) in subs.snapshot() {
            let previous = self.sent.get(&type_url).cloned();
            if previous.as_ref() == Some(&interest) {
                continue;
            }
            self.sent.insert(type_url.clone(), interest.clone());
            let held = self.state.versions.entry(type_url.clone()).or_default();
            let mut request = DeltaDiscoveryRequest {
                type_url: type_url.clone(),
                ..Default::default()
            };
            match (previous, interest) {
                // First request of the type on this stream: an empty subscribe list is
                // the (legacy) wildcard; versions held are offered to skip resends.
                (None, Interest::Wildcard) => {
                    request.initial_resource_versions = held.clone().into_iter().collect();
                }
                (None, Interest::Names(names)) => {
                    if names.is_empty() {
                        continue;
                    }
                    held.retain(|n, _| names.contains(n));
                    request.initial_resource_versions = held.clone().into_iter().collect();
                    request.resource_names_subscribe = names.into_iter().collect();
                }
                (Some(Interest::Names(old)), Interest::Names(new)) => {
                    request.resource_names_subscribe = new.difference(&old).cloned().collect();
                    request.resource_names_unsubscribe = old.difference(&new).cloned().collect();
                    held.retain(|n, _| new.contains(n));
                }
                (Some(Interest::Names(old)), Interest::Wildcard) => {
                    request.resource_names_subscribe = vec!["*".into()];
                    request.resource_names_unsubscribe = old.into_iter().collect();
                }
                (Some(Interest::Wildcard), Interest::Names(new)) => {
                    request.resource_names_unsubscribe = vec!["*".into()];
                    request.resource_names_subscribe = new.into_iter().collect();
                }
                (Some(Interest::Wildcard), Interest::Wildcard) => continue,
            }
            self.send(request);
        }
    }
}

/// Turns a response's resources into the handler's form; a resource without a body is
/// rejected at once.
fn resources(
    list: Vec<crate::proto::envoy::service::discovery::v3::Resource>,
) -> (Vec<Resource>, Vec<Rejected>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for r in list {
        match r.resource {
            Some(body) => good.push(Resource {
                name: r.name,
                version: r.version,
                body,
            }),
            None => bad.push(Rejected {
                name: r.name,
                error: "resource: a Delta resource without a body is not supported".into(),
            }),
        }
    }
    (good, bad)
}

impl Protocol for Stream<'_> {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const DELTA: bool = true;

    fn tx(&self) -> &UnboundedSender<DeltaDiscoveryRequest> {
        &self.tx
    }

    fn send_changes(&mut self, subs: &Subscriptions) {
        Stream::send_changes(self, subs);
    }

    fn type_of(response: &DeltaDiscoveryResponse) -> &str {
        &response.type_url
    }

    fn watches(&self, type_url: &str) -> bool {
        self.sent.contains_key(type_url)
    }

    fn apply(
        &mut self,
        response: DeltaDiscoveryResponse,
        handler: &dyn Handler,
    ) -> Answer<DeltaDiscoveryRequest> {
        let type_url = response.type_url.clone();
        let (good, mut rejected) = resources(response.resources);
        let offered: Vec<(String, String)> = good
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        let verdict = handler.apply(Update {
            type_url: type_url.clone(),
            version: response.system_version_info.clone(),
            resources: good,
            removed: response.removed_resources.clone(),
            state_of_the_world: false,
        });
        rejected.extend(verdict.rejected);
        let refused: BTreeSet<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
        let versions = self.state.versions.entry(type_url.clone()).or_default();
        for (name, version) in offered {
            if !refused.contains(name.as_str()) {
                versions.insert(name, version);
            }
        }
        for name in &response.removed_resources {
            versions.remove(name);
        }
        if !rejected.is_empty() {
            tracing::warn!(target: "config", "{}: rejected part of a {type_url} update: {}", self.config.name, rejected.iter().map(|r| format!("{}: {}", r.name, r.error)).collect::<Vec<_>>().join("; "));
        }
        let request = self.with_node(DeltaDiscoveryRequest {
            type_url: type_url.clone(),
            response_nonce: response.nonce,
            error_detail: error_detail(&rejected),
            ..Default::default()
        });
        Answer {
            type_url,
            request,
            hold_until: verdict.hold_until,
        }
    }
}

/// Runs one stream until it ends.
pub async fn run(
    config: &StreamConfig,
    channel: tonic::transport::Channel,
    handler: &dyn Handler,
    subs: &Subscriptions,
    state: &mut State,
) -> StreamEnd {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = Stream {
        config,
        tx,
        node_sent: false,
        sent: HashMap::new(),
        state,
    };
    driver::run(config, channel, handler, subs, &mut stream, rx).await
}
