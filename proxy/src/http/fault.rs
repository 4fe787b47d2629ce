//! `envoy.filters.http.fault` on the data path: decides per request whether to throttle
//! the response, delay and abort, following Envoy's order (targeting checks, the
//! active-fault limit, rate limit, delay, then abort), and keeps Envoy's `fault.*` stats.

use super::local_reply::LocalReply;
use super::route_match::header_matches;
use crate::access_log::record::{Record, ResponseFlags};
use crate::config::fault::{AbortSource, DelaySource, FaultConfig, RateSource, Sampled};
use crate::stats::{Counter, Gauge, Scope};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

/// `http.<stat_prefix>.fault.` stats, shared by every fault filter of one HCM.
pub struct FaultStats {
    delays_injected: Arc<Counter>,
    aborts_injected: Arc<Counter>,
    response_rl_injected: Arc<Counter>,
    faults_overflow: Arc<Counter>,
    active_faults: Arc<Gauge>,
}

impl FaultStats {
    /// Creates the stats under the HCM's scope.
    pub fn new(hcm: &Scope) -> Self {
        FaultStats {
            delays_injected: hcm.counter("fault.delays_injected"),
            aborts_injected: hcm.counter("fault.aborts_injected"),
            response_rl_injected: hcm.counter("fault.response_rl_injected"),
            faults_overflow: hcm.counter("fault.faults_overflow"),
            active_faults: hcm.gauge("fault.active_faults"),
        }
    }
}

/// Keeps a fault counted in `active_faults` while it is in progress (for a response rate
/// limit, until the response body is done).
pub struct ActiveFault(Arc<Gauge>);

impl ActiveFault {
    fn start(gauge: &Arc<Gauge>) -> Self {
        gauge.inc();
        ActiveFault(gauge.clone())
    }
}

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A response rate limit to apply to the response body.
pub struct Throttle {
    /// Bytes per second.
    pub bytes_per_second: u64,
    /// The fault's place in `active_faults`, held until the body is done.
    pub active: ActiveFault,
}

/// What one fault filter decided for a request.
#[derive(Default)]
pub struct Injected {
    /// An abort's reply (the request goes no further).
    pub reply: Option<LocalReply>,
    /// A rate limit for the response body.
    pub throttle: Option<Throttle>,
}

/// Applies one fault filter to a request routed to `cluster`: sets up an injected response
/// rate limit, sleeps for an injected delay, and returns the reply of an injected abort.
pub async fn apply(
    cfg: &FaultConfig,
    stats: &FaultStats,
    headers: &HeaderMap,
    cluster: Option<&str>,
    record: &mut Record,
) -> Injected {
    if !targeted(cfg, headers, cluster) {
        return Injected::default();
    }
    if cfg
        .max_active_faults
        .is_some_and(|max| stats.active_faults.value() >= i64::from(max))
    {
        stats.faults_overflow.inc();
        return Injected::default();
    }
    let delay = cfg.delay.and_then(|d| delay_for(&d, headers));
    let abort = cfg.abort.and_then(|a| abort_for(&a, headers));
    let rate = cfg.response_rate_limit.and_then(|r| rate_for(&r, headers));
    if delay.is_none() && abort.is_none() && rate.is_none() {
        return Injected::default();
    }
    let active = ActiveFault::start(&stats.active_faults);
    let throttle = rate.map(|kbps| {
        stats.response_rl_injected.inc();
        Throttle {
            bytes_per_second: kbps.saturating_mul(1024),
            active: ActiveFault::start(&stats.active_faults),
        }
    });
    if let Some(d) = delay {
        stats.delays_injected.inc();
        record.flags.insert(ResponseFlags::DELAY_INJECTED);
        tokio::time::sleep(d).await;
    }
    let reply = abort.map(|abort| {
        stats.aborts_injected.inc();
        abort_reply(abort, cfg.abort_body.clone())
    });
    drop(active);
    Injected { reply, throttle }
}

/// The rate limit a request gets, in KiB per second: the configured one, or a header
/// limit's `x-envoy-fault-throughput-response` (a positive number), when sampled.
fn rate_for(r: &Sampled<RateSource>, headers: &HeaderMap) -> Option<u64> {
    let kbps = match r.source {
        RateSource::Fixed(kbps) => kbps,
        RateSource::Header => {
            header_u64(headers, "x-envoy-fault-throughput-response").filter(|k| *k > 0)?
        }
    };
    let pct = header_u64(headers, "x-envoy-fault-throughput-response-percentage");
    sampled(r.percentage, pct).then_some(kbps)
}

/// `upstream_cluster`, `downstream_nodes` and `headers`: which requests may be faulted.
fn targeted(cfg: &FaultConfig, headers: &HeaderMap, cluster: Option<&str>) -> bool {
    if !cfg.upstream_cluster.is_empty() && cluster != Some(cfg.upstream_cluster.as_str()) {
        return false;
    }
    if !cfg.downstream_nodes.is_empty() {
        let node = headers
            .get("x-envoy-downstream-service-node")
            .and_then(|v| v.to_str().ok());
        if !node.is_some_and(|n| cfg.downstream_nodes.iter().any(|d| d == n)) {
            return false;
        }
    }
    cfg.headers.iter().all(|m| header_matches(m, headers))
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Draws against the configured fraction; with a header-controlled fault the request's
/// percentage header may lower (never raise) the numerator.
fn sampled(percentage: (u64, u64), header: Option<u64>) -> bool {
    let (configured, denominator) = percentage;
    let numerator = header.map_or(configured, |h| h.min(configured));
    numerator > 0 && rand::thread_rng().gen_range(0..denominator) < numerator
}

fn delay_for(d: &Sampled<DelaySource>, headers: &HeaderMap) -> Option<Duration> {
    let (length, pct_header) = match d.source {
        DelaySource::Fixed(len) => (len, None),
        DelaySource::Header => (
            Duration::from_millis(header_u64(headers, "x-envoy-fault-delay-request")?),
            header_u64(headers, "x-envoy-fault-delay-request-percentage"),
        ),
    };
    sampled(d.percentage, pct_header).then_some(length)
}

fn abort_for(a: &Sampled<AbortSource>, headers: &HeaderMap) -> Option<AbortSource> {
    let (source, pct_header) = match a.source {
        AbortSource::Header => {
            let http = header_u64(headers, "x-envoy-fault-abort-request")
                .filter(|s| (200..600).contains(s))
                .map(|s| AbortSource::Http(s as u16));
            let grpc = header_u64(headers, "x-envoy-fault-abort-grpc-request")
                .and_then(|s| u32::try_from(s).ok())
                .map(AbortSource::Grpc);
            (
                http.or(grpc)?,
                header_u64(headers, "x-envoy-fault-abort-request-percentage"),
            )
        }
        fixed => (fixed, None),
    };
    sampled(a.percentage, pct_header).then_some(source)
}

/// The abort's local reply (`FI`, with the configured body); a gRPC status answers a gRPC
/// request with that `grpc-status` and any other request with 200 (as Envoy 1.40 does).
fn abort_reply(abort: AbortSource, body: Bytes) -> LocalReply {
    let mut reply = LocalReply {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body,
        flag: ResponseFlags::FAULT_INJECTED,
        details: "fault_filter_abort".into(),
        grpc_status: None,
    };
    match abort {
        AbortSource::Http(s) => {
            reply.status = StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        }
        AbortSource::Grpc(code) => {
            reply.status = StatusCode::OK;
            reply.grpc_status = Some(code);
        }
        AbortSource::Header => {}
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_percentage_only_lowers_the_configured_one() {
        assert!(!sampled((0, 100), None));
        assert!(sampled((100, 100), None));
        assert!(sampled((100, 100), Some(500)));
        assert!(!sampled((100, 100), Some(0)));
        assert!(!sampled((0, 1_000_000), Some(1_000_000)));
    }

    #[test]
    fn header_abort_needs_a_valid_status() {
        let a = Sampled {
            source: AbortSource::Header,
            percentage: (100, 100),
        };
        let mut h = HeaderMap::new();
        assert_eq!(abort_for(&a, &h), None);
        h.insert("x-envoy-fault-abort-request", "600".parse().unwrap());
        assert_eq!(abort_for(&a, &h), None);
        h.insert("x-envoy-fault-abort-request", "418".parse().unwrap());
        assert_eq!(abort_for(&a, &h), Some(AbortSource::Http(418)));
    }
}
