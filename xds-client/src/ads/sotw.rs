//! State-of-the-world streams: every response carries all resources of its type (for the
//! subscribed names); a request carries the full name list, the last accepted version and
//! the nonce it answers.

use super::held::Held;
use super::interest::{Interest, Subscriptions};
use super::{error_detail, service, unwrap_resource, Handler, StreamConfig, StreamEnd, Update};
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
}

impl Stream<'_> {
    fn send(
        &mut self,
        state: &State,
        type_url: &str,
        error: Option<crate::proto::google::rpc::Status>,
    ) {
        let request = self.request(state, type_url, error);
        let _ = self.tx.send(request);
    }

    fn request(
        &mut self,
        state: &State,
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
            version_info: state.versions.get(type_url).cloned().unwrap_or_default(),
            node,
            resource_names: names,
            type_url: type_url.to_string(),
            response_nonce: self.nonces.get(type_url).cloned().unwrap_or_default(),
            error_detail: error,
            ..Default::default()
        }
    }

    /// Sends a request for every type whose interest changed since it was last sent.
    fn send_changes(&mut self, state: &State, subs: &Subscriptions) {
        for (type_url, interest) in subs.snapshot() {
            if self.sent.get(&type_url) == Some(&interest) {
                continue;
            }
            let never_sent = !self.sent.contains_key(&type_url);
            let empty = interest == Interest::Names(Default::default());
            self.sent.insert(type_url.clone(), interest);
            // Nothing to ask for a type that was never requested and has no names yet.
            if !(never_sent && empty) {
                self.send(state, &type_url, None);
            }
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
    };
    stream.send_changes(state, subs);
    let path = config.service.path(false);
    let mut responses =
        match service::open::<_, DiscoveryResponse>(channel, path, config.max_message_bytes, rx)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return StreamEnd {
                    received: false,
                    reason: e.to_string(),
                }
            }
        };
    let mut received = false;
    let mut held = Held::default();
    loop {
        let message = tokio::select! {
            _ = subs.changed() => {
                stream.send_changes(state, subs);
                continue;
            }
            answer = held.released() => {
                let _ = stream.tx.send(answer);
                continue;
            }
            m = responses.message() => m,
        };
        let response = match message {
            Ok(Some(r)) => r,
            Ok(None) => {
                return StreamEnd {
                    received,
                    reason: "closed by the server".into(),
                }
            }
            Err(status) => {
                return StreamEnd {
                    received,
                    reason: status.to_string(),
                }
            }
        };
        received = true;
        handler.message_size(prost::Message::encoded_len(&response));
        let type_url = response.type_url.clone();
        if !stream.sent.contains_key(&type_url) {
            tracing::warn!(target: "config", "{}: ignoring a response for unwatched type {type_url}", config.name);
            continue;
        }
        let verdict = handler.apply(Update {
            type_url: type_url.clone(),
            version: response.version_info.clone(),
            resources: response
                .resources
                .into_iter()
                .map(unwrap_resource)
                .collect(),
            removed: Vec::new(),
            state_of_the_world: true,
        });
        let rejected = verdict.rejected;
        stream.nonces.insert(type_url.clone(), response.nonce);
        if rejected.is_empty() {
            state
                .versions
                .insert(type_url.clone(), response.version_info);
        } else {
            tracing::warn!(target: "config", "{}: rejected {type_url} version {}: {}", config.name, response.version_info, rejected.iter().map(|r| format!("{}: {}", r.name, r.error)).collect::<Vec<_>>().join("; "));
        }
        let answer = stream.request(state, &type_url, error_detail(&rejected));
        let answer = match verdict.hold_until {
            Some(release) => {
                held.hold(&type_url, release, answer);
                None
            }
            None => held.queue(&type_url, answer),
        };
        if let Some(answer) = answer {
            let _ = stream.tx.send(answer);
        }
        // Subscriptions the update created (EDS after CDS, RDS after LDS) follow the ACK.
        stream.send_changes(state, subs);
    }
}
