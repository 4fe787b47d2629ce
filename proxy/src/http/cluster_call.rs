//! One request of meshproxy's own to a cluster (a mirror copy, a span batch for the
//! trace collector, an ext_authz Check), through the cluster's load balancer and pools and
//! counted in its stats like any request (circuit breakers included), with the whole
//! response read.

use crate::upstream::cluster::Cluster;
use crate::upstream::lb::LbContext;
use crate::upstream::pool::Protocol;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;

/// A response read to its end.
pub struct Answer {
    /// Status and headers.
    pub head: http::response::Parts,
    /// The body.
    pub body: Bytes,
    /// The trailers (empty when none).
    pub trailers: http::HeaderMap,
}

/// Sends `request` to a host of `cluster`; `None` when no host could be picked, the
/// cluster's request limit is reached, or the exchange failed.
pub(crate) async fn call(
    cluster: &Arc<Cluster>,
    request: http::Request<filters::http::Body>,
    protocol: Protocol,
    authority: String,
) -> Option<Answer> {
    let stats = cluster.stats();
    let Some(_slot) = cluster.resources.requests.try_acquire() else {
        stats.rq_active_overflow.inc();
        return None;
    };
    let context = LbContext {
        hash: None,
        original_dst: None,
    };
    let host = cluster.pick(&context)?;
    let _active = host.start_request();
    let outcome = super::router::send(
        cluster,
        &host,
        super::router::Target {
            protocol,
            alpn: None,
            source: None,
        },
        request,
        authority.into(),
    )
    .await;
    if let Some(result) = super::router::outlier_outcome(&outcome, false) {
        cluster.report(&host, result);
    }
    let (response, _lease, _) = outcome.ok()?;
    stats.record_status(response.status().as_u16());
    let (head, body) = response.into_parts();
    let collected = body.collect().await.ok()?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    Some(Answer {
        head,
        body: collected.to_bytes(),
        trailers,
    })
}
