//! `envoy.filters.http.fault` configuration: the delays and aborts Istio's VirtualService
//! `fault` block turns into, translated once so the data path only samples and acts.

use super::common::{self, fraction};
use super::error::{join, ConfigError, Result};
use super::route::{self, HeaderMatch};
use prost::Message;
use std::time::Duration;
use xds_client::proto::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use xds_client::proto::envoy::extensions::filters::http::fault::v3 as proto;
use xds_client::proto::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;

/// The filter's protobuf type name.
pub const TYPE_NAME: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";

/// Where an injected delay's length comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelaySource {
    /// `fixed_delay`.
    Fixed(Duration),
    /// `header_delay`: the request's `x-envoy-fault-delay-request` (milliseconds).
    Header,
}

/// What an injected abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortSource {
    /// `http_status`.
    Http(u16),
    /// `grpc_status`: a trailers-only gRPC reply with this status.
    Grpc(u32),
    /// `header_abort`: `x-envoy-fault-abort-request` or `x-envoy-fault-abort-grpc-request`.
    Header,
}

/// Where an injected response rate limit comes from (KiB per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSource {
    /// `fixed_limit.limit_kbps`.
    Fixed(u64),
    /// `header_limit`: the request's `x-envoy-fault-throughput-response`.
    Header,
}

/// A fault kind with the fraction of requests it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampled<T> {
    /// What to inject.
    pub source: T,
    /// (numerator, denominator); an unset `percentage` is 0%, as in Envoy.
    pub percentage: (u64, u64),
}

/// A translated `HTTPFault`.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Delay to inject before anything else happens to the request.
    pub delay: Option<Sampled<DelaySource>>,
    /// Abort to answer instead of routing.
    pub abort: Option<Sampled<AbortSource>>,
    /// The abort's body (`response_body`; default `fault filter abort`).
    pub abort_body: bytes::Bytes,
    /// Only requests routed to this cluster are faulted (empty: all).
    pub upstream_cluster: String,
    /// Only requests matching every one of these headers are faulted.
    pub headers: Vec<HeaderMatch>,
    /// Only requests whose `x-envoy-downstream-service-node` is one of these (empty: all).
    pub downstream_nodes: Vec<String>,
    /// At most this many faults in progress at once (`None`: unlimited).
    pub max_active_faults: Option<u32>,
    /// Throttle the response body to this rate.
    pub response_rate_limit: Option<Sampled<RateSource>>,
}

/// Decodes and translates the filter's typed config; `path` names its position for errors.
pub fn translate(bytes: &[u8], path: &str) -> Result<FaultConfig> {
    let f = proto::HttpFault::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    let percentage = |p: &Option<xds_client::proto::envoy::r#type::v3::FractionalPercent>| {
        p.as_ref().map(fraction).unwrap_or((0, 100))
    };
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            let dp = join(path, "delay");
            let source = match &d.fault_delay_secifier {
                Some(FaultDelaySecifier::FixedDelay(fd)) => {
                    DelaySource::Fixed(common::duration(fd, &join(&dp, "fixed_delay"))?)
                }
                Some(FaultDelaySecifier::HeaderDelay(_)) => DelaySource::Header,
                None => {
                    return Err(ConfigError::at(
                        dp,
                        "one of fixed_delay or header_delay is required",
                    ))
                }
            };
            Some(Sampled {
                source,
                percentage: percentage(&d.percentage),
            })
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let ap = join(path, "abort");
            let source = match a.error_type {
                Some(ErrorType::HttpStatus(s)) if (200..600).contains(&s) => {
                    AbortSource::Http(s as u16)
                }
                Some(ErrorType::HttpStatus(s)) => {
                    return Err(ConfigError::at(
                        join(&ap, "http_status"),
                        format!("{s} is outside [200, 600)"),
                    ))
                }
                Some(ErrorType::GrpcStatus(s)) => AbortSource::Grpc(s),
                Some(ErrorType::HeaderAbort(_)) => AbortSource::Header,
                None => {
                    return Err(ConfigError::at(
                        ap,
                        "one of http_status, grpc_status or header_abort is required",
                    ))
                }
            };
            Some(Sampled {
                source,
                percentage: percentage(&a.percentage),
            })
        }
    };
    let response_rate_limit = match &f.response_rate_limit {
        None => None,
        Some(r) => {
            use xds_client::proto::envoy::extensions::filters::common::fault::v3::fault_rate_limit::LimitType;
            let rp = join(path, "response_rate_limit");
            let source = match &r.limit_type {
                Some(LimitType::FixedLimit(l)) if l.limit_kbps >= 1 => {
                    RateSource::Fixed(l.limit_kbps)
                }
                Some(LimitType::FixedLimit(_)) => {
                    return Err(ConfigError::at(
                        join(&rp, "fixed_limit.limit_kbps"),
                        "must be at least 1",
                    ))
                }
                Some(LimitType::HeaderLimit(_)) => RateSource::Header,
                None => {
                    return Err(ConfigError::at(
                        rp,
                        "one of fixed_limit or header_limit is required",
                    ))
                }
            };
            Some(Sampled {
                source,
                percentage: percentage(&r.percentage),
            })
        }
    };
    let abort_body = match f.abort.as_ref().map(|a| a.response_body.as_str()) {
        Some(b) if !b.is_empty() => bytes::Bytes::from(b.to_string()),
        _ => bytes::Bytes::from_static(b"fault filter abort"),
    };
    let headers = f
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| route::header_match(h, &format!("{path}.headers[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok(FaultConfig {
        delay,
        abort,
        abort_body,
        upstream_cluster: f.upstream_cluster,
        headers,
        downstream_nodes: f.downstream_nodes,
        max_active_faults: f.max_active_faults.map(|v| v.value),
        response_rate_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_client::proto::envoy::extensions::filters::common::fault::v3::FaultDelay;

    #[test]
    fn unset_percentage_means_never_and_status_range_is_checked() {
        let f = proto::HttpFault {
            delay: Some(FaultDelay {
                percentage: None,
                fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(
                    xds_client::proto::google::protobuf::Duration {
                        seconds: 1,
                        nanos: 0,
                    },
                )),
            }),
            ..Default::default()
        };
        let c = translate(&f.encode_to_vec(), "f").unwrap();
        assert_eq!(
            c.delay,
            Some(Sampled {
                source: DelaySource::Fixed(Duration::from_secs(1)),
                percentage: (0, 100)
            })
        );
        let bad = proto::HttpFault {
            abort: Some(proto::FaultAbort {
                error_type: Some(ErrorType::HttpStatus(600)),
                percentage: None,
                response_body: String::new(),
            }),
            ..Default::default()
        };
        let e = translate(&bad.encode_to_vec(), "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.abort.http_status"), "{e}");
    }
}
