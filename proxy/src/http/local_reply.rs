//! Responses meshproxy generates itself (no route, no healthy upstream, timeouts, ...)
//! with Envoy's status codes, bodies, response flags and response code details.

use crate::access_log::record::ResponseFlags;
use bytes::Bytes;
use filters::http::Body;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

/// A locally generated reply and what the access log should say about it.
#[derive(Debug, Clone)]
pub struct LocalReply {
    /// Status.
    pub status: StatusCode,
    /// Body (text/plain when not empty).
    pub body: Bytes,
    /// Response flag to record.
    pub flag: ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`.
    pub details: std::borrow::Cow<'static, str>,
    /// The `grpc-status` for a gRPC request (`None`: mapped from `status`).
    pub grpc_status: Option<u32>,
}

const RESET_PREFIX: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: ";

/// The reset body's prefix once the request was retried.
const RETRIED_PREFIX: &str =
    "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: ";

impl LocalReply {
    /// 404, no route matched (`NR`).
    pub fn no_route() -> Self {
        LocalReply {
            status: StatusCode::NOT_FOUND,
            body: Bytes::new(),
            flag: ResponseFlags::NO_ROUTE_FOUND,
            details: "route_not_found".into(),
            grpc_status: None,
        }
    }

    /// 500, a filter's discovered config never arrived and it has no default (`NFCF`),
    /// as Envoy's missing-config filter answers.
    pub fn missing_filter_config() -> Self {
        LocalReply {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: Bytes::new(),
            flag: ResponseFlags::NO_FILTER_CONFIG_FOUND,
            details: "".into(),
            grpc_status: None,
        }
    }

    /// 503, the route's cluster does not exist (`NC`).
    pub fn no_cluster() -> Self {
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::new(),
            flag: ResponseFlags::NO_CLUSTER_FOUND,
            details: "cluster_not_found".into(),
            grpc_status: None,
        }
    }

    /// 503, no host to send to (`UH`).
    pub fn no_healthy_upstream() -> Self {
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::from_static(b"no healthy upstream"),
            flag: ResponseFlags::NO_HEALTHY_UPSTREAM,
            details: "no_healthy_upstream".into(),
            grpc_status: None,
        }
    }

    /// 503, connecting failed (`UF`), or did not finish within `connect_timeout`
    /// (`timed_out`); the transport failure reason goes to the access log
    /// (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`), not the body.
    pub fn connect_failure(timed_out: bool) -> Self {
        let (reason, details) = if timed_out {
            (
                "connection timeout",
                "upstream_reset_before_response_started{connection_timeout}",
            )
        } else {
            (
                "remote connection failure",
                "upstream_reset_before_response_started{remote_connection_failure}",
            )
        };
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::from(format!("{RESET_PREFIX}{reason}")),
            flag: ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            details: details.into(),
            grpc_status: None,
        }
    }

    /// The reply with the transport failure reason appended to its details, as Envoy
    /// logs them (`...{remote_connection_failure|delayed_connect_error:_Connection_refused}`).
    pub fn with_transport_failure(mut self, reason: &str) -> Self {
        if let Some(open) = self.details.strip_suffix('}') {
            self.details = format!("{open}|{}}}", reason.replace(' ', "_")).into();
        }
        self
    }

    /// The same reset reply after retries: Envoy's body then says the reason is the
    /// latest one ("... retried and the latest reset reason: ...").
    pub fn after_retries(mut self) -> Self {
        if let Some(reason) = self
            .body
            .strip_prefix(RESET_PREFIX.as_bytes())
            .map(|r| String::from_utf8_lossy(r).into_owned())
        {
            self.body = Bytes::from(format!("{RETRIED_PREFIX}{reason}"));
        }
        self
    }

    /// 503, a circuit breaker overflowed (`UO`).
    pub fn overflow() -> Self {
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::from(format!("{RESET_PREFIX}overflow")),
            flag: ResponseFlags::UPSTREAM_OVERFLOW,
            details: "upstream_reset_before_response_started{overflow}".into(),
            grpc_status: None,
        }
    }

    /// 503, the upstream closed or reset before responding (`UC`).
    pub fn upstream_reset() -> Self {
        LocalReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::from(format!("{RESET_PREFIX}connection termination")),
            flag: ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            details: "upstream_reset_before_response_started{connection_termination}".into(),
            grpc_status: None,
        }
    }

    /// 502, the upstream answered with bytes that are no HTTP response (`UPE`).
    pub fn upstream_protocol_error() -> Self {
        LocalReply {
            status: StatusCode::BAD_GATEWAY,
            body: Bytes::from(format!("{RESET_PREFIX}protocol error")),
            flag: ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            details: "upstream_reset_before_response_started{protocol_error}".into(),
            grpc_status: None,
        }
    }

    /// 400 for a request whose authority is missing (HTTP/1.1 without `Host`) or holds
    /// characters no authority may (`DPE`), as Envoy's codec answers.
    pub fn invalid_authority(details: &'static str) -> Self {
        LocalReply {
            status: StatusCode::BAD_REQUEST,
            body: Bytes::from_static(b"Bad Request"),
            flag: ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            details: details.into(),
            grpc_status: None,
        }
    }

    /// 504, the route timeout elapsed (`UT`).
    pub fn upstream_timeout() -> Self {
        LocalReply {
            status: StatusCode::GATEWAY_TIMEOUT,
            body: Bytes::from_static(b"upstream request timeout"),
            flag: ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            details: "upstream_response_timeout".into(),
            grpc_status: None,
        }
    }

    /// No activity on the stream for `stream_idle_timeout` (`SI`): 408 while the request
    /// is still arriving, 504 once it was complete (Envoy was waiting on the upstream).
    pub fn stream_idle_timeout(request_complete: bool) -> Self {
        let status = if request_complete {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::REQUEST_TIMEOUT
        };
        LocalReply {
            status,
            body: Bytes::from_static(b"stream timeout"),
            flag: ResponseFlags::STREAM_IDLE_TIMEOUT,
            details: "stream_idle_timeout".into(),
            grpc_status: None,
        }
    }

    /// 504, the route's `max_stream_duration` elapsed before the response started (`DT`);
    /// a gRPC request gets DEADLINE_EXCEEDED (4), as from Envoy, not the 504 mapping.
    pub fn max_duration_timeout() -> Self {
        LocalReply {
            status: StatusCode::GATEWAY_TIMEOUT,
            body: Bytes::from_static(b"downstream duration timeout"),
            flag: ResponseFlags::DURATION_TIMEOUT,
            details: "max_duration_timeout".into(),
            grpc_status: Some(4),
        }
    }

    /// 408, a request head did not arrive within `request_headers_timeout` of its first
    /// byte.
    pub fn request_header_timeout() -> Self {
        LocalReply {
            status: StatusCode::REQUEST_TIMEOUT,
            body: Bytes::from_static(b"request header timeout"),
            flag: ResponseFlags::default(),
            details: "request_header_timeout".into(),
            grpc_status: None,
        }
    }

    /// The reply as raw HTTP/1.1 bytes that close the connection, for a connection
    /// whose codec has no request to answer (a head that never completed).
    pub fn http1_closing(&self, server: Option<&HeaderValue>, date: &HeaderValue) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.body.len()
        )
        .into_bytes();
        for (name, value) in [("date", Some(date)), ("server", server)] {
            if let Some(v) = value {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// 408, the whole request did not arrive within `request_timeout`.
    pub fn request_timeout() -> Self {
        LocalReply {
            status: StatusCode::REQUEST_TIMEOUT,
            body: Bytes::from_static(b"request timeout"),
            flag: ResponseFlags::default(),
            details: "request_overall_timeout".into(),
            grpc_status: None,
        }
    }

    /// 400 for a path the normaliser rejects.
    pub fn bad_path() -> Self {
        LocalReply {
            status: StatusCode::BAD_REQUEST,
            body: Bytes::from_static(b"Bad Request"),
            flag: ResponseFlags::INVALID_ENVOY_REQUEST_HEADERS,
            details: "path_normalization_failed".into(),
            grpc_status: None,
        }
    }

    /// 426 for an HTTP/1.0 request the connection manager does not accept (`DPE`); the
    /// connection closes after it, as after every protocol error.
    pub fn http10_refused() -> Self {
        LocalReply {
            status: StatusCode::UPGRADE_REQUIRED,
            body: Bytes::from_static(b"Upgrade Required"),
            flag: ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            details: "low_version".into(),
            grpc_status: None,
        }
    }

    /// 400 for a request without a host.
    pub fn missing_host() -> Self {
        LocalReply {
            status: StatusCode::BAD_REQUEST,
            body: Bytes::new(),
            flag: ResponseFlags::default(),
            details: "missing_host_header".into(),
            grpc_status: None,
        }
    }

    /// Envoy's codec error (`DPE`, blaming no upstream) for a request body the HTTP/1
    /// codec could not read: 400 for a malformed one, 431 for trailers over the limits.
    pub fn bad_request_body(how: super::stream_timeouts::BodyFailure) -> Self {
        let (status, details) = match how {
            super::stream_timeouts::BodyFailure::Malformed => {
                (StatusCode::BAD_REQUEST, "http1.codec_error")
            }
            super::stream_timeouts::BodyFailure::TrailersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "http1.headers_too_large",
            ),
        };
        LocalReply {
            status,
            body: Bytes::from_static(status.canonical_reason().unwrap_or("").as_bytes()),
            flag: ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            details: details.into(),
            grpc_status: None,
        }
    }

    /// 403 for an upgrade the route or HCM does not allow.
    pub fn upgrade_failed() -> Self {
        LocalReply {
            status: StatusCode::FORBIDDEN,
            body: Bytes::from_static(b"upgrade failed"),
            flag: ResponseFlags::default(),
            details: "upgrade_failed".into(),
            grpc_status: None,
        }
    }

    /// A configured direct response.
    pub fn direct(status: u16, body: Bytes) -> Self {
        LocalReply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body,
            flag: ResponseFlags::default(),
            details: "direct_response".into(),
            grpc_status: None,
        }
    }

    /// 403 from the RBAC filter; the details name the policy that decided (`none` when
    /// an ALLOW filter matched nothing).
    pub fn rbac_denied(policy: &str) -> Self {
        LocalReply {
            status: StatusCode::FORBIDDEN,
            body: Bytes::from_static(b"RBAC: access denied"),
            flag: ResponseFlags::default(),
            details: format!("rbac_access_denied_matched_policy[{policy}]").into(),
            grpc_status: None,
        }
    }

    /// The `grpc-status` a gRPC request gets: the reply's own, or the HTTP status mapped as
    /// the gRPC spec and Envoy map it.
    fn grpc_code(&self) -> u32 {
        self.grpc_status.unwrap_or(match self.status.as_u16() {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502 | 503 | 504 => 14,
            _ => 2,
        })
    }

    /// The response: for a gRPC request a trailers-only gRPC response (HTTP 200) carrying
    /// the body as `grpc-message`, as Envoy answers every local reply to gRPC; otherwise
    /// plain HTTP (content-type text/plain when there is a body).
    pub fn response(&self, grpc_request: bool) -> Response<Body> {
        if grpc_request {
            let code = self.grpc_code();
            let mut r = Response::new(Empty::new().map_err(|e| match e {}).boxed());
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(code));
            if let Ok(m) = HeaderValue::from_bytes(&self.body) {
                if !self.body.is_empty() {
                    h.insert("grpc-message", m);
                }
            }
            return r;
        }
        let mut r = Response::new(Full::new(self.body.clone()).map_err(|e| match e {}).boxed());
        *r.status_mut() = self.status;
        // As Envoy's header map has them: no content headers without a body (the codec
        // still writes `content-length: 0` on HTTP/1.1).
        if !self.body.is_empty() {
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        }
        r
    }
}
