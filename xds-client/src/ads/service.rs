//! The gRPC methods that carry xDS: the aggregated service, or one service per type.

/// The service a config source's stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `AggregatedDiscoveryService` (ADS): every type on one stream.
    Aggregated,
    /// `ClusterDiscoveryService`.
    Clusters,
    /// `ListenerDiscoveryService`.
    Listeners,
    /// `RouteDiscoveryService`.
    Routes,
    /// `EndpointDiscoveryService`.
    Endpoints,
    /// `SecretDiscoveryService` (SDS).
    Secrets,
}

impl Service {
    /// The non-aggregated service for a resource type.
    pub fn for_type(type_url: &str) -> Option<Service> {
        Some(match type_url {
            super::CLUSTER => Service::Clusters,
            super::LISTENER => Service::Listeners,
            super::ROUTE => Service::Routes,
            super::ENDPOINT => Service::Endpoints,
            super::SECRET => Service::Secrets,
            _ => return None,
        })
    }

    /// The method path of the stream (`delta` picks the incremental method).
    pub fn path(self, delta: bool) -> &'static str {
        match (self, delta) {
            (Service::Aggregated, false) => {
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
            }
            (Service::Aggregated, true) => {
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
            }
            (Service::Clusters, false) => {
                "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters"
            }
            (Service::Clusters, true) => {
                "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters"
            }
            (Service::Listeners, false) => {
                "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners"
            }
            (Service::Listeners, true) => {
                "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners"
            }
            (Service::Routes, false) => {
                "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes"
            }
            (Service::Routes, true) => "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes",
            (Service::Endpoints, false) => {
                "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints"
            }
            (Service::Endpoints, true) => {
                "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints"
            }
            (Service::Secrets, false) => {
                "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
            }
            (Service::Secrets, true) => {
                "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"
            }
        }
    }
}

/// Opens a bidirectional stream on `path`: `requests` are sent as they are queued, the
/// returned stream yields the responses (each at most `max_message_bytes`).
pub(super) async fn open<Req, Resp>(
    channel: tonic::transport::Channel,
    path: &'static str,
    max_message_bytes: usize,
    requests: tokio::sync::mpsc::UnboundedReceiver<Req>,
) -> Result<tonic::Streaming<Resp>, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_message_bytes);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let outgoing = futures_util::stream::unfold(requests, |mut rx| async move {
        rx.recv().await.map(|m| (m, rx))
    });
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.streaming(
        tonic::Request::new(outgoing),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(|r| r.into_inner())
}
