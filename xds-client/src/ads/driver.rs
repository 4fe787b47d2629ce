//! The loop every stream runs, whatever its protocol: open the gRPC stream, send the
//! subscription changes, apply each response through the handler, answer it (at once or
//! when the handler releases it), and end with why the stream closed.

use super::held::Held;
use super::interest::Subscriptions;
use super::{service, Handler, StreamConfig, StreamEnd};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

/// The answer to one response: its type, the request that ACKs or NACKs it, and what
/// it waits for, if anything.
pub struct Answer<R> {
    /// The response's type.
    pub type_url: String,
    /// The ACK or NACK.
    pub request: R,
    /// Hold the answer until this fires.
    pub hold_until: Option<oneshot::Receiver<()>>,
}

/// What differs between state-of-the-world and Delta.
pub trait Protocol {
    /// The request message.
    type Request: prost::Message + Send + Sync + 'static;
    /// The response message.
    type Response: prost::Message + Default + Send + Sync + 'static;
    /// Whether this is the incremental protocol (it picks the gRPC method).
    const DELTA: bool;

    /// Where requests go.
    fn tx(&self) -> &UnboundedSender<Self::Request>;
    /// Sends a request for every subscription that changed since it was last sent.
    fn send_changes(&mut self, subs: &Subscriptions);
    /// The type of a response.
    fn type_of(response: &Self::Response) -> &str;
    /// Whether the stream asked for `type_url`.
    fn watches(&self, type_url: &str) -> bool;
    /// Applies a response of a watched type through `handler`.
    fn apply(&mut self, response: Self::Response, handler: &dyn Handler) -> Answer<Self::Request>;
}

/// Runs one stream until it ends; `rx` carries what `protocol` queues on its sender.
pub async fn run<P: Protocol>(
    config: &StreamConfig,
    channel: tonic::transport::Channel,
    handler: &dyn Handler,
    subs: &Subscriptions,
    protocol: &mut P,
    rx: UnboundedReceiver<P::Request>,
) -> StreamEnd {
    protocol.send_changes(subs);
    let path = config.service.path(P::DELTA);
    let opened = service::open::<_, P::Response>(channel, path, config.max_message_bytes, rx);
    let mut responses = match opened.await {
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
                protocol.send_changes(subs);
                continue;
            }
            answer = held.released() => {
                let _ = protocol.tx().send(answer);
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
        if !protocol.watches(P::type_of(&response)) {
            tracing::warn!(target: "config", "{}: ignoring a response for unwatched type {}", config.name, P::type_of(&response));
            continue;
        }
        let answer = protocol.apply(response, handler);
        let ready = match answer.hold_until {
            Some(release) => {
                held.hold(&answer.type_url, release, answer.request);
                None
            }
            None => held.queue(&answer.type_url, answer.request),
        };
        if let Some(request) = ready {
            let _ = protocol.tx().send(request);
        }
        // Subscriptions the update created (EDS after CDS, RDS after LDS) follow the answer.
        protocol.send_changes(subs);
    }
}
