//! Request mirroring (route `request_mirror_policies`): a copy of a sampled request goes
//! to the mirror cluster, fire and forget. The copy's response is read and dropped; its
//! failures, delays and overflows never touch the client's request. Copies need the
//! request body in hand: a body the router could not buffer (no length, or over the
//! cluster's buffer limit) is not mirrored.

use crate::config::mirror::{shadow_host, MirrorPolicy, MirrorTarget, ShadowHost};
use crate::server::Server;
use bytes::Bytes;
use http::request::Parts;
use http_body_util::BodyExt;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

/// The mirror clusters this request is copied to: each policy whose fraction samples it
/// and whose cluster is known (header-named clusters need the header).
pub fn targets(policies: &[MirrorPolicy], headers: &http::HeaderMap) -> Vec<(String, ShadowHost)> {
    policies
        .iter()
        .filter(|p| {
            let (numerator, denominator) = p.fraction;
            rand::thread_rng().gen_range(0..denominator) < numerator
        })
        .filter_map(|p| {
            let cluster = match &p.target {
                MirrorTarget::Named(n) => n.clone(),
                MirrorTarget::Header(h) => headers.get(h)?.to_str().ok()?.to_string(),
            };
            Some((cluster, p.host.clone()))
        })
        .collect()
}

/// A request as it goes upstream, to copy.
pub struct Original<'a> {
    /// Method, URI (path already rewritten) and headers (mutations applied).
    pub parts: &'a Parts,
    /// The buffered body.
    pub body: Bytes,
    /// The host the request goes upstream with.
    pub authority: &'a str,
    /// Whether the client spoke HTTP/2 (for clusters that follow the downstream).
    pub downstream_h2: bool,
    /// The route timeout, which bounds the copy too.
    pub timeout: Option<Duration>,
}

/// Sends a copy of `original` to each target cluster on its own task.
pub fn start(server: &Arc<Server>, targets: Vec<(String, ShadowHost)>, original: Original<'_>) {
    for (name, host) in targets {
        let Some(cluster) = server.clusters.get(&name) else {
            continue;
        };
        let authority = match host {
            ShadowHost::Suffixed => shadow_host(original.authority),
            ShadowHost::Unchanged => original.authority.to_string(),
            ShadowHost::Literal(h) => h,
        };
        let parts = super::router::clone_parts(original.parts);
        let body = http_body_util::Full::new(original.body.clone())
            .map_err(|e| match e {})
            .boxed();
        let request = http::Request::from_parts(parts, body);
        let protocol = super::router::upstream_protocol(&cluster, original.downstream_h2);
        let timeout = original.timeout;
        tokio::spawn(async move {
            let copy = super::cluster_call::call(&cluster, request, protocol, authority);
            match timeout {
                Some(t) => {
                    let _ = tokio::time::timeout(t, copy).await;
                }
                None => {
                    let _ = copy.await;
                }
            }
        });
    }
}
