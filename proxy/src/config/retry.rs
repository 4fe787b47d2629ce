//! Route and virtual-host `retry_policy`: which failures are retried, how often, with what
//! per-try timeout and backoff, and on which hosts (Envoy's router retry semantics).

use super::common;
use super::error::{item, join, ConfigError, Result};
use super::route::HeaderMatch;
use std::time::Duration;
use xds_client::proto::envoy::config::route::v3 as route;

const PREVIOUS_HOSTS: &str = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";
const PREVIOUS_PRIORITIES: &str =
    "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig";

/// Conditions of `retry_on`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// Any 5xx, and no response at all (reset, connect failure, per-try timeout).
    pub five_xx: bool,
    /// 502, 503, 504, and no response at all.
    pub gateway_error: bool,
    /// No response at all: reset, disconnect, per-try timeout.
    pub reset: bool,
    /// Connecting failed.
    pub connect_failure: bool,
    /// The upstream refused the HTTP/2 stream.
    pub refused_stream: bool,
    /// 409.
    pub retriable_4xx: bool,
    /// Codes in `retriable_status_codes`.
    pub retriable_status_codes: bool,
    /// The response carries `x-envoy-ratelimited`.
    pub envoy_ratelimited: bool,
    /// A response header matches one of `retriable_headers`.
    pub retriable_headers: bool,
    /// gRPC statuses (read from `grpc-status` in the response headers, i.e. trailers-only
    /// responses, as Envoy does): cancelled (1), deadline-exceeded (4),
    /// resource-exhausted (8), internal (13), unavailable (14).
    pub grpc: GrpcRetryOn,
}

impl RetryOn {
    /// Turns on one `retry_on` condition; false when the name is not one meshproxy knows.
    fn add(&mut self, cond: &str) -> bool {
        match cond {
            "5xx" => self.five_xx = true,
            "gateway-error" => self.gateway_error = true,
            "reset" | "reset-before-request" => self.reset = true,
            "connect-failure" => self.connect_failure = true,
            "refused-stream" => self.refused_stream = true,
            "retriable-4xx" => self.retriable_4xx = true,
            "retriable-status-codes" => self.retriable_status_codes = true,
            "envoy-ratelimited" => self.envoy_ratelimited = true,
            "retriable-headers" => self.retriable_headers = true,
            "cancelled" => self.grpc.cancelled = true,
            "deadline-exceeded" => self.grpc.deadline_exceeded = true,
            "resource-exhausted" => self.grpc.resource_exhausted = true,
            "internal" => self.grpc.internal = true,
            "unavailable" => self.grpc.unavailable = true,
            _ => return false,
        }
        true
    }
}

/// The comma-separated condition names of a `retry_on` value or header.
fn conditions(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|c| !c.is_empty())
}

/// The gRPC conditions of `retry_on`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcRetryOn {
    /// `cancelled`: status 1.
    pub cancelled: bool,
    /// `deadline-exceeded`: status 4.
    pub deadline_exceeded: bool,
    /// `resource-exhausted`: status 8.
    pub resource_exhausted: bool,
    /// `internal`: status 13.
    pub internal: bool,
    /// `unavailable`: status 14.
    pub unavailable: bool,
}

impl GrpcRetryOn {
    /// Whether a `grpc-status` value is retriable.
    fn retriable(&self, status: u32) -> bool {
        match status {
            1 => self.cancelled,
            4 => self.deadline_exceeded,
            8 => self.resource_exhausted,
            13 => self.internal,
            14 => self.unavailable,
            _ => false,
        }
    }
}

/// A translated RetryPolicy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Conditions.
    pub on: RetryOn,
    /// Retries after the first attempt (default 1).
    pub num_retries: u32,
    /// Timeout of each attempt.
    pub per_try_timeout: Option<Duration>,
    /// `per_try_idle_timeout`: an attempt that goes this long without progress (no
    /// response head yet, or no body data once the response streams) is abandoned.
    pub per_try_idle_timeout: Option<Duration>,
    /// Status codes for `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// Backoff base (default 25 ms).
    pub base_interval: Duration,
    /// Backoff cap (default 10 × base).
    pub max_interval: Duration,
    /// Avoid hosts already tried (`previous_hosts` predicate).
    pub avoid_previous_hosts: bool,
    /// Host picks per attempt when avoiding previous hosts (default 1).
    pub host_selection_attempts: u32,
    /// Response headers that make a response retriable under `retriable-headers`.
    pub retriable_headers: Vec<HeaderMatch>,
    /// Request headers of which one must match for the request to be retried at all
    /// (empty: every request may be).
    pub retriable_request_headers: Vec<HeaderMatch>,
    /// `rate_limited_retry_back_off`: wait what the upstream's reset header says.
    pub rate_limited: Option<RateLimitedBackOff>,
    /// `retry_priority` previous_priorities: every this many attempts, the priority levels
    /// tried so far are excluded from the load split.
    pub previous_priorities: Option<u32>,
}

/// How a reset header's value reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetFormat {
    /// Seconds to wait (`Retry-After: 30`).
    Seconds,
    /// The Unix time to wait until (`X-RateLimit-Reset: 1700000000`).
    UnixTimestamp,
}

/// Envoy's `RateLimitedRetryBackOff`: the first reset header (in order) whose interval is
/// valid and within `max_interval` sets the wait, jittered up to half again.
#[derive(Debug, Clone)]
pub struct RateLimitedBackOff {
    /// The headers to read, in order.
    pub reset_headers: Vec<(http::HeaderName, ResetFormat)>,
    /// Longer intervals are discarded (default 300 s).
    pub max_interval: Duration,
}

impl RateLimitedBackOff {
    /// The interval the response asks for, if any header gives a usable one.
    fn interval(&self, headers: &http::HeaderMap) -> Option<Duration> {
        self.reset_headers.iter().find_map(|(name, format)| {
            let value: u64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
            let interval = match format {
                ResetFormat::Seconds => Duration::from_secs(value),
                ResetFormat::UnixTimestamp => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()?;
                    Duration::from_secs(value).checked_sub(now)?
                }
            };
            (!interval.is_zero() && interval <= self.max_interval).then_some(interval)
        })
    }
}

impl RetryPolicy {
    /// Whether an upstream response (its status and headers) is retriable under this policy.
    pub fn retriable_response(&self, status: u16, headers: &http::HeaderMap) -> bool {
        let on = &self.on;
        let grpc_status = || {
            headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
        };
        (on.five_xx && (500..600).contains(&status))
            || (on.gateway_error && matches!(status, 502..=504))
            || (on.retriable_4xx && status == 409)
            || (on.retriable_status_codes && self.retriable_status_codes.contains(&status))
            || (on.envoy_ratelimited && headers.contains_key("x-envoy-ratelimited"))
            || (on.retriable_headers && any_match(&self.retriable_headers, headers))
            || grpc_status().is_some_and(|g| on.grpc.retriable(g))
    }

    /// The back-off a retriable response asks for through a reset header, jittered over
    /// `[interval, 1.5 × interval)`; `None` when the policy has no rate-limited back-off or
    /// the response no usable header (the exponential back-off applies).
    pub fn rate_limited_backoff(&self, headers: &http::HeaderMap) -> Option<Duration> {
        let interval = self.rate_limited.as_ref()?.interval(headers)?;
        Some(interval + interval.mul_f64(rand::random::<f64>() / 2.0))
    }

    /// The priority levels attempt `attempt` (1-based) must avoid, given the levels the
    /// earlier attempts went to: those of the first `⌊(attempt-1)/f⌋·f` attempts for an
    /// update frequency `f`, none without `previous_priorities`.
    pub fn excluded_priorities<'a>(&self, attempt: u32, tried: &'a [u32]) -> &'a [u32] {
        match self.previous_priorities {
            Some(f) => {
                let counted = ((attempt.saturating_sub(1) / f) * f) as usize;
                &tried[..counted.min(tried.len())]
            }
            None => &[],
        }
    }

    /// Whether the request may be retried at all: it matches one of
    /// `retriable_request_headers`, or there are none.
    pub fn allows_request(&self, headers: &http::HeaderMap) -> bool {
        self.retriable_request_headers.is_empty()
            || any_match(&self.retriable_request_headers, headers)
    }

    /// Whether a failure without a response is retriable: a reset or timeout, a connect
    /// failure, or a refused HTTP/2 stream.
    pub fn retriable_failure(&self, connect_failure: bool, refused_stream: bool) -> bool {
        let on = &self.on;
        on.five_xx
            || on.gateway_error
            || on.reset
            || (connect_failure && on.connect_failure)
            || (refused_stream && on.refused_stream)
    }

    /// The backoff before retry `n` (1-based): full jitter over an exponential window.
    pub fn backoff(&self, n: u32) -> Duration {
        let window = self
            .base_interval
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(self.max_interval);
        window.mul_f64(rand::random::<f64>())
    }
}

/// Whether any of `matchers` accepts `headers`.
fn any_match(matchers: &[HeaderMatch], headers: &http::HeaderMap) -> bool {
    matchers
        .iter()
        .any(|m| crate::http::route_match::header_matches(m, headers))
}

/// Translates a list of HeaderMatchers at `path`.
fn translate_matchers(list: &[route::HeaderMatcher], path: &str) -> Result<Vec<HeaderMatch>> {
    list.iter()
        .enumerate()
        .map(|(i, h)| super::route::header_match(h, &format!("{path}[{i}]")))
        .collect()
}

/// The update frequency of a `retry_priority`, which must be previous_priorities.
fn previous_priorities(r: &route::retry_policy::RetryPriority, path: &str) -> Result<u32> {
    use route::retry_policy::retry_priority::ConfigType as C;
    let Some(C::TypedConfig(any)) = &r.config_type else {
        return Err(ConfigError::at(path, "typed_config is required"));
    };
    if xds_client::descriptors::type_name_of_url(&any.type_url) != PREVIOUS_PRIORITIES {
        return Err(ConfigError::at(
            join(path, "typed_config"),
            format!("unsupported retry priority {}", any.type_url),
        ));
    }
    use prost::Message;
    use xds_client::proto::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
    let config = PreviousPrioritiesConfig::decode(any.value.as_slice())
        .map_err(|e| ConfigError::at(join(path, "typed_config"), e.to_string()))?;
    u32::try_from(config.update_frequency)
        .ok()
        .filter(|f| *f > 0)
        .ok_or_else(|| {
            ConfigError::at(
                join(path, "typed_config.update_frequency"),
                "must be greater than 0",
            )
        })
}

/// Translates a `RateLimitedRetryBackOff`.
fn rate_limited(
    r: &route::retry_policy::RateLimitedRetryBackOff,
    path: &str,
) -> Result<RateLimitedBackOff> {
    use route::retry_policy::ResetHeaderFormat;
    if r.reset_headers.is_empty() {
        return Err(ConfigError::at(
            join(path, "reset_headers"),
            "at least one reset header is required",
        ));
    }
    let reset_headers = r
        .reset_headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let p = item(path, "reset_headers", i);
            let name = http::HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
                .map_err(|_| ConfigError::at(join(&p, "name"), "invalid header name"))?;
            let format = match ResetHeaderFormat::try_from(h.format) {
                Ok(ResetHeaderFormat::Seconds) => ResetFormat::Seconds,
                Ok(ResetHeaderFormat::UnixTimestamp) => ResetFormat::UnixTimestamp,
                Err(_) => return Err(ConfigError::at(join(&p, "format"), "unknown format")),
            };
            Ok((name, format))
        })
        .collect::<Result<_>>()?;
    let max_interval = r
        .max_interval
        .as_ref()
        .map(|d| common::duration(d, &join(path, "max_interval")))
        .transpose()?
        .unwrap_or(Duration::from_secs(300));
    Ok(RateLimitedBackOff {
        reset_headers,
        max_interval,
    })
}

/// Translates a `hedge_policy`: whether a per-try timeout sends another attempt while
/// the first keeps going (`hedge_on_per_try_timeout`). Envoy implements only that:
/// several initial requests and `additional_request_chance` are refused.
pub fn hedge(h: &route::HedgePolicy, path: &str) -> Result<bool> {
    if h.initial_requests.as_ref().is_some_and(|n| n.value != 1) {
        return Err(ConfigError::at(
            join(path, "initial_requests"),
            "only one initial request is supported",
        ));
    }
    if h.additional_request_chance
        .as_ref()
        .is_some_and(|c| c.numerator > 0)
    {
        return Err(ConfigError::at(
            join(path, "additional_request_chance"),
            "additional hedged requests are not supported",
        ));
    }
    Ok(h.hedge_on_per_try_timeout)
}

/// Translates a RetryPolicy.
pub fn translate(p: &route::RetryPolicy, path: &str) -> Result<RetryPolicy> {
    let mut on = RetryOn::default();
    for cond in conditions(&p.retry_on) {
        if !on.add(cond) {
            return Err(ConfigError::at(
                join(path, "retry_on"),
                format!("retry condition {cond:?} is not supported yet"),
            ));
        }
    }
    for (i, pred) in p.retry_host_predicate.iter().enumerate() {
        use route::retry_policy::retry_host_predicate::ConfigType as C;
        let type_url = match &pred.config_type {
            Some(C::TypedConfig(a)) => a.type_url.as_str(),
            None => "",
        };
        if xds_client::descriptors::type_name_of_url(type_url) != PREVIOUS_HOSTS {
            return Err(ConfigError::at(
                item(path, "retry_host_predicate", i),
                format!("unsupported retry host predicate {type_url}"),
            ));
        }
    }
    let (base, max) = match &p.retry_back_off {
        Some(b) => {
            let bp = join(path, "retry_back_off");
            let base = b
                .base_interval
                .as_ref()
                .map(|d| common::duration(d, &join(&bp, "base_interval")))
                .transpose()?
                .unwrap_or(Duration::from_millis(25));
            if base.is_zero() {
                return Err(ConfigError::at(
                    join(&bp, "base_interval"),
                    "must be greater than zero",
                ));
            }
            let max = b
                .max_interval
                .as_ref()
                .map(|d| common::duration(d, &join(&bp, "max_interval")))
                .transpose()?
                .unwrap_or(base * 10);
            if max < base {
                return Err(ConfigError::at(
                    join(&bp, "max_interval"),
                    "must not be less than base_interval",
                ));
            }
            (base, max)
        }
        None => (Duration::from_millis(25), Duration::from_millis(250)),
    };
    let codes = p
        .retriable_status_codes
        .iter()
        .map(|c| {
            u16::try_from(*c).map_err(|_| {
                ConfigError::at(
                    join(path, "retriable_status_codes"),
                    format!("invalid status {c}"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RetryPolicy {
        on,
        num_retries: p.num_retries.as_ref().map(|v| v.value).unwrap_or(1),
        per_try_idle_timeout: common::timeout(
            p.per_try_idle_timeout.as_ref(),
            None,
            &join(path, "per_try_idle_timeout"),
        )?,
        per_try_timeout: common::timeout(
            p.per_try_timeout.as_ref(),
            None,
            &join(path, "per_try_timeout"),
        )?,
        retriable_status_codes: codes,
        base_interval: base,
        max_interval: max,
        avoid_previous_hosts: !p.retry_host_predicate.is_empty(),
        host_selection_attempts: p.host_selection_retry_max_attempts.clamp(1, 100) as u32,
        retriable_headers: translate_matchers(
            &p.retriable_headers,
            &join(path, "retriable_headers"),
        )?,
        retriable_request_headers: translate_matchers(
            &p.retriable_request_headers,
            &join(path, "retriable_request_headers"),
        )?,
        previous_priorities: p
            .retry_priority
            .as_ref()
            .map(|r| previous_priorities(r, &join(path, "retry_priority")))
            .transpose()?,
        rate_limited: p
            .rate_limited_retry_back_off
            .as_ref()
            .map(|r| rate_limited(r, &join(path, "rate_limited_retry_back_off")))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> Result<RetryPolicy> {
        let p: route::RetryPolicy =
            xds_client::json::decode(json, "envoy.config.route.v3.RetryPolicy", false).unwrap();
        translate(&p, "retry_policy")
    }

    #[test]
    fn rate_limited_back_off_reads_the_reset_headers_in_order() {
        let p = policy(serde_json::json!({"retry_on": "retriable-status-codes",
            "rate_limited_retry_back_off": {"reset_headers": [
                {"name": "Retry-After", "format": "SECONDS"},
                {"name": "X-RateLimit-Reset", "format": "UNIX_TIMESTAMP"}], "max_interval": "60s"}}))
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut h = http::HeaderMap::new();
        h.insert("x-ratelimit-reset", (now + 20).to_string().parse().unwrap());
        let wait = p.rate_limited_backoff(&h).unwrap();
        assert!(
            wait >= Duration::from_secs(18) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        // Too long for max_interval: discarded, the next header decides.
        h.insert("retry-after", "120".parse().unwrap());
        assert!(p.rate_limited_backoff(&h).unwrap() <= Duration::from_secs(30));
        h.insert("retry-after", "2".parse().unwrap());
        assert!(p.rate_limited_backoff(&h).unwrap() <= Duration::from_secs(3));
        assert!(p.rate_limited_backoff(&http::HeaderMap::new()).is_none());
        let empty = policy(serde_json::json!({"rate_limited_retry_back_off": {}}));
        assert!(empty.unwrap_err().path.contains("reset_headers"));
    }

    #[test]
    fn istio_default_policy() {
        assert!(
            policy(serde_json::json!({"retry_on": "5xx,retriable-whatever"}))
                .unwrap_err()
                .message
                .contains("retriable-whatever")
        );
        let bad_matcher = policy(serde_json::json!({"retry_on": "retriable-headers",
            "retriable_headers": [{"name": "x", "safe_regex_match": {"regex": "("}}]}));
        assert!(bad_matcher
            .unwrap_err()
            .path
            .contains("retriable_headers[0]"));
        let p = policy(serde_json::json!({"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", "num_retries": 2,
            "retriable_status_codes": [503], "host_selection_retry_max_attempts": "5",
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]})).unwrap();
        assert_eq!(
            (
                p.num_retries,
                p.host_selection_attempts,
                p.avoid_previous_hosts
            ),
            (2, 5, true)
        );
        let none = http::HeaderMap::new();
        let grpc = |code: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-status", http::HeaderValue::from_static(code));
            h
        };
        assert!(p.retriable_response(503, &none) && !p.retriable_response(500, &none));
        assert!(p.retriable_response(200, &grpc("14")) && p.retriable_response(200, &grpc("1")));
        assert!(!p.retriable_response(200, &grpc("13")) && !p.retriable_response(200, &grpc("0")));
        assert!(
            p.retriable_failure(true, false)
                && p.retriable_failure(false, true)
                && !p.retriable_failure(false, false)
        );
    }

    #[test]
    fn conditions_defaults_and_backoff() {
        let p = policy(serde_json::json!({"retry_on": "5xx"})).unwrap();
        assert_eq!(p.num_retries, 1);
        let none = http::HeaderMap::new();
        assert!(p.retriable_response(500, &none) && p.retriable_failure(false, false));
        let g = policy(serde_json::json!({"retry_on": "gateway-error,retriable-4xx"})).unwrap();
        assert!(
            g.retriable_response(503, &none)
                && g.retriable_response(409, &none)
                && !g.retriable_response(500, &none)
        );
        for n in 1..6 {
            assert!(p.backoff(n) <= Duration::from_millis(250));
        }
        assert!(policy(
            serde_json::json!({"retry_on": "5xx", "retry_back_off": {"base_interval": "0s"}})
        )
        .is_err());
    }
}
