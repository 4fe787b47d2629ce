//! State-of-the-world streams: every response carries all resources of its type (for the
//! subscribed names); a request carries the full name list, the last accepted version and
//! the nonce it answers.

use super::driver::{self, Answer, Protocol};
use super::interest::{Interest, Subscriptions};
use super::{error_detail, Handler, StreamConfig, StreamEnd, Update};
use crate::proto::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::HashMap;
use tokio::sync::mpsc::UnboundedSender;

/// What survives a reconnect: the last accepted version of each type.
#[derive(Default)]
pub struct State {
    versions: HashMap<String, String>,
}

struct Stream<'a> {
    config: &'a StreamConfig,
    tx: UnboundedSender<DiscoveryRequest>,
    node_sent: bool,
    nonces: HashMap<String, String>,
    sent: HashMap<String, Interest>,
    state: &'a mut State,
}

impl Stream<'_> {
    fn request(
        &mut self,
        type_url: &str,
        error: Option<crate::proto::google::rpc::Status>,
    ) -> DiscoveryRequest {
        let names = match self.sent.get(type_url) {
            Some(Interest::Names(n)) => n.iter().cloned().collect(),
            _ => Vec::new(),
        };
        let node = (!self.node_sent || !self.config.node_on_first_message_only)
            .then(|| self.config.node.clone());
        self.node_sent = true;
        DiscoveryRequest {
            version_info: self
                .state
                .versions
                .get(type_url)
                .cloned()
                .unwrap_or_default(),
            node,
            resource_names: names,
            type_url: type_url.to_string(),
            response_nonce: self.nonces.get(type_url).cloned().unwrap_or_default(),
            error_detail: error,
            ..Default::default()
        }
    }

    /// Sends a request for every type whose interest changed since it was last sent.
    fn send_changes(&mut self, subs: &Subscriptions) {
        for (type_url, interest) in subs.snapshot() {
            if self.sent.get(&type_url) == Some(&interest) {
                continue;
            }
            let never_sent = !self.sent.contains_key(&type_url);
            let empty = interest == Interest::Names(Default::default());
            self.sent.insert(type_url.clone(), interest);
            // Nothing to ask for a type that was never requested and has no names yet.
            if !(never_sent && empty) {
                let request = self.request(&type_url, None);
                let _ = self.tx.send(request);
            }
        }
    }
}

impl Protocol for Stream<'_> {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const DELTA: bool = false;

    fn tx(&self) -> &UnboundedSender<DiscoveryRequest> {
        &self.tx
    }

    fn send_changes(&mut self, subs: &Subscriptions) {
        Stream::send_changes(self, subs);
    }

    fn type_of(response: &DiscoveryResponse) -> &str {
        &response.type_url
    }

    fn watches(&self, type_url: &str) -> bool {
        self.sent.contains_key(type_url)
    }

    fn apply(
        &mut self,
        response: DiscoveryResponse,
        handler: &dyn Handler,
    ) -> Answer<DiscoveryRequest> {
        let type_url = response.type_url.clone();
        let (nonce, version) = (response.nonce.clone(), response.version_info.clone());
        let verdict = handler.apply(Update::state_of_the_world(response));
        let rejected = verdict.rejected;
        self.nonces.insert(type_url.clone(), nonce);
        if rejected.is_empty() {
            self.state.versions.insert(type_url.clone(), version);
        } else {
            tracing::warn!(target: "config", "{}: rejected {type_url} version {version}: {}", self.config.name, rejected.iter().map(|r| format!("{}: {}", r.name, r.error)).collect::<Vec<_>>().join("; "));
        }
        let request = self.request(&type_url, error_detail(&rejected));
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
        nonces: HashMap::new(),
        sent: HashMap::new(),
        state,
    };
    driver::run(config, channel, handler, subs, &mut stream, rx).await
}
