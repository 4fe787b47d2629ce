//! What an access log line (and the stats of a finished stream) can say about a stream.

use http::HeaderMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Envoy's response flags, as a bit set; rendered in Envoy's canonical order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags(u32);

macro_rules! flags {
    ($($name:ident = $bit:expr, $short:literal;)*) => {
        impl ResponseFlags {
            $(
                #[doc = concat!("`", $short, "`")]
                pub const $name: ResponseFlags = ResponseFlags(1 << $bit);
            )*
            const TABLE: &'static [(ResponseFlags, &'static str)] = &[$((ResponseFlags::$name, $short)),*];
        }
    };
}

flags! {
    FAILED_LOCAL_HEALTH_CHECK = 0, "LH";
    NO_HEALTHY_UPSTREAM = 1, "UH";
    UPSTREAM_REQUEST_TIMEOUT = 2, "UT";
    LOCAL_RESET = 3, "LR";
    UPSTREAM_REMOTE_RESET = 4, "UR";
    UPSTREAM_CONNECTION_FAILURE = 5, "UF";
    UPSTREAM_CONNECTION_TERMINATION = 6, "UC";
    UPSTREAM_OVERFLOW = 7, "UO";
    NO_ROUTE_FOUND = 8, "NR";
    DELAY_INJECTED = 9, "DI";
    FAULT_INJECTED = 10, "FI";
    RATE_LIMITED = 11, "RL";
    UNAUTHORIZED_EXTERNAL_SERVICE = 12, "UAEX";
    RATELIMIT_SERVICE_ERROR = 13, "RLSE";
    DOWNSTREAM_CONNECTION_TERMINATION = 14, "DC";
    UPSTREAM_RETRY_LIMIT_EXCEEDED = 15, "URX";
    STREAM_IDLE_TIMEOUT = 16, "SI";
    INVALID_ENVOY_REQUEST_HEADERS = 17, "IH";
    DOWNSTREAM_PROTOCOL_ERROR = 18, "DPE";
    UPSTREAM_MAX_STREAM_DURATION_REACHED = 19, "UMSDR";
    RESPONSE_FROM_CACHE_FILTER = 20, "RFCF";
    NO_FILTER_CONFIG_FOUND = 21, "NFCF";
    DURATION_TIMEOUT = 22, "DT";
    UPSTREAM_PROTOCOL_ERROR = 23, "UPE";
    NO_CLUSTER_FOUND = 24, "NC";
    OVERLOAD_MANAGER = 25, "OM";
}

impl ResponseFlags {
    /// Adds flags.
    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    /// Whether all of `other` is set.
    pub fn contains(&self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Whether no flag is set.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Whether any of `other` is set.
    pub fn intersects(&self, other: ResponseFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// The flag Envoy names `short` (`NR`, `UF`, ...).
    pub fn from_short(short: &str) -> Option<ResponseFlags> {
        Self::TABLE
            .iter()
            .find(|(_, s)| *s == short)
            .map(|(f, _)| *f)
    }
}

impl std::fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, short) in Self::TABLE {
            if self.contains(*flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(short)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Everything known about a finished (or finishing) stream or TCP connection.
#[derive(Debug, Clone)]
pub struct Record {
    /// Wall-clock start.
    pub start_time: SystemTime,
    /// Total duration.
    pub duration: Duration,
    /// Time to the first upstream response byte.
    pub response_duration: Option<Duration>,
    /// Request headers as received (pseudo-headers are synthesised from these fields).
    pub request_headers: HeaderMap,
    /// Request method.
    pub method: Option<http::Method>,
    /// Request path (with query).
    pub path: Option<Arc<str>>,
    /// Authority.
    pub authority: Option<Arc<str>>,
    /// Scheme.
    pub scheme: Option<&'static str>,
    /// Response headers as sent.
    pub response_headers: HeaderMap,
    /// Response trailers.
    pub response_trailers: HeaderMap,
    /// Response status (0 when none was sent).
    pub response_code: u16,
    /// Why this status (Envoy's response code details).
    pub response_code_details: std::borrow::Cow<'static, str>,
    /// Response flags.
    pub flags: ResponseFlags,
    /// Why the connection was closed, when a filter closed it
    /// (`%CONNECTION_TERMINATION_DETAILS%`).
    pub connection_termination_details: Option<std::borrow::Cow<'static, str>>,
    /// Downstream body bytes received.
    pub bytes_received: u64,
    /// Downstream body bytes sent.
    pub bytes_sent: u64,
    /// `HTTP/1.1`, `HTTP/2`, or empty for TCP.
    pub protocol: &'static str,
    /// The protocol of the upstream exchange that answered (`HTTP/1.1`, `HTTP/2`), empty
    /// when none did.
    pub upstream_protocol: &'static str,
    /// Upstream host address.
    pub upstream_host: Option<Arc<str>>,
    /// Upstream cluster name.
    pub upstream_cluster: Option<Arc<str>>,
    /// Whether that cluster exists: Envoy logs no cluster when it does not (`NC`).
    pub upstream_cluster_found: bool,
    /// The cluster's `alt_stat_name`, which `%UPSTREAM_CLUSTER%` logs when set.
    pub upstream_cluster_alt: Option<Arc<str>>,
    /// Upstream local address.
    pub upstream_local: Option<SocketAddr>,
    /// Upstream transport failure reason.
    pub upstream_failure: Option<String>,
    /// Downstream remote address (after XFF/PROXY protocol).
    pub downstream_remote: Option<SocketAddr>,
    /// Downstream socket peer.
    pub downstream_direct_remote: Option<SocketAddr>,
    /// Downstream local address (original destination when restored).
    pub downstream_local: Option<SocketAddr>,
    /// SNI.
    pub requested_server_name: Option<String>,
    /// Matched route name.
    pub route_name: Option<Arc<str>>,
    /// Peer certificate URI SAN.
    pub peer_uri_san: Option<String>,
    /// Our own certificate's first URI SAN on the downstream TLS connection.
    pub local_uri_san: Option<String>,
    /// The upstream TLS peer certificate's first URI SAN.
    pub upstream_peer_uri_san: Option<String>,
    /// Our client certificate's first URI SAN on the upstream TLS connection.
    pub upstream_local_uri_san: Option<String>,
    /// The gRPC messages the stream carried, when a grpc_stats filter counts them.
    pub grpc_messages: Option<std::sync::Arc<crate::http::grpc_stats::MessageCounts>>,
    /// What Istio's filters learnt about the stream (peers, cluster and endpoint
    /// metadata).
    pub istio: crate::istio::StreamFacts,
    /// Connection id.
    pub connection_id: u64,
    /// Upstream attempts.
    pub attempt_count: u32,
    /// The request's span (context and operation name), when a tracer traces it.
    pub span: Option<(crate::trace::zipkin::Context, String)>,
    /// What the HTTP filters left for each other (RBAC shadow outcomes).
    pub metadata: crate::http::metadata::DynamicMetadata,
}

impl Record {
    /// The `grpc-status` that ended a gRPC stream: from the trailers, else from the
    /// headers of a trailers-only response (needs the response headers recorded).
    pub fn grpc_status(&self) -> Option<&str> {
        [&self.response_trailers, &self.response_headers]
            .iter()
            .find_map(|h| h.get("grpc-status").and_then(|v| v.to_str().ok()))
    }

    /// The upstream cluster was found: its observability name is known.
    pub fn cluster_found(&mut self, config: &crate::config::cluster::ClusterConfig) {
        self.upstream_cluster_found = true;
        self.upstream_cluster_alt = config.alt_stat_name.as_deref().map(Arc::from);
    }

    /// A request header as Envoy's header map holds it: pseudo-headers by name, `host`
    /// as `:authority`, several values comma-joined.
    pub fn request_header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match name {
            ":method" => self.method.as_ref().map(|m| Cow::Borrowed(m.as_str())),
            ":path" => self.path.as_deref().map(Cow::Borrowed),
            ":authority" | "host" => self.authority.as_deref().map(Cow::Borrowed),
            ":scheme" => self.scheme.map(Cow::Borrowed),
            _ => crate::http::route_match::joined_header(&self.request_headers, name),
        }
    }

    /// The gRPC status Envoy's `%GRPC_STATUS_NUMBER%` logs: only for a gRPC request, from
    /// `grpc-status`, else mapped from the HTTP status (as `Grpc::Utility::httpToGrpcStatus`).
    pub fn grpc_status_code(&self) -> Option<u32> {
        let grpc = self
            .request_headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            return None;
        }
        self.grpc_status_or_mapped()
    }

    /// The stream's gRPC status: `grpc-status` from the trailers or headers, else the
    /// HTTP status mapped as Envoy maps it; `None` when no response was sent.
    pub fn grpc_status_or_mapped(&self) -> Option<u32> {
        if let Some(s) = self.grpc_status().and_then(|s| s.parse::<u32>().ok()) {
            return Some(s);
        }
        Some(match self.response_code {
            0 => return None,
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502..=504 => 14,
            _ => 2,
        })
    }

    /// The request headers' size as Envoy counts it (`byteSize`: every name and value,
    /// pseudo-headers included, without separators); 0 for TCP.
    pub fn request_headers_bytes(&self) -> u64 {
        let Some(method) = &self.method else {
            return 0;
        };
        let pseudo = [
            (":method", Some(method.as_str())),
            (":path", self.path.as_deref()),
            (":authority", self.authority.as_deref()),
            (":scheme", self.scheme),
        ];
        let pseudo: usize = pseudo
            .iter()
            .filter_map(|(k, v)| v.map(|v| k.len() + v.len()))
            .sum();
        let regular: usize = self
            .request_headers
            .iter()
            .filter(|(k, _)| *k != http::header::HOST)
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        (pseudo + regular) as u64
    }

    /// The response headers' size as Envoy counts it (`:status` included); 0 when no
    /// response was sent.
    pub fn response_headers_bytes(&self) -> u64 {
        if self.response_code == 0 {
            return 0;
        }
        let regular: usize = self
            .response_headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        (":status".len() + 3 + regular) as u64
    }

    /// An empty record starting now.
    pub fn new(connection_id: u64) -> Self {
        Record {
            start_time: SystemTime::now(),
            duration: Duration::ZERO,
            response_duration: None,
            request_headers: HeaderMap::new(),
            method: None,
            path: None,
            authority: None,
            scheme: None,
            response_headers: HeaderMap::new(),
            response_trailers: HeaderMap::new(),
            response_code: 0,
            response_code_details: std::borrow::Cow::Borrowed(""),
            flags: ResponseFlags::default(),
            connection_termination_details: None,
            bytes_received: 0,
            bytes_sent: 0,
            protocol: "",
            upstream_protocol: "",
            upstream_host: None,
            upstream_cluster: None,
            upstream_cluster_found: false,
            upstream_cluster_alt: None,
            upstream_local: None,
            upstream_failure: None,
            downstream_remote: None,
            downstream_direct_remote: None,
            downstream_local: None,
            requested_server_name: None,
            route_name: None,
            peer_uri_san: None,
            local_uri_san: None,
            upstream_peer_uri_san: None,
            upstream_local_uri_san: None,
            grpc_messages: None,
            istio: Default::default(),
            connection_id,
            attempt_count: 0,
            span: None,
            metadata: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_render_in_envoy_order() {
        let mut f = ResponseFlags::default();
        assert_eq!(f.to_string(), "-");
        f.insert(ResponseFlags::UPSTREAM_OVERFLOW);
        f.insert(ResponseFlags::NO_HEALTHY_UPSTREAM);
        assert_eq!(f.to_string(), "UH,UO");
    }
}
