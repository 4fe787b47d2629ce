//! Cluster `health_checks` translation: what an active health check sends (HTTP, TCP or
//! gRPC), what counts as a pass, how many in a row change a host's state, and how often
//! it runs in each state.

use super::common::{self, header_mutations, HeaderMutations};
use super::error::{item, join, ConfigError, Result};
use std::time::Duration;
use xds_client::proto::envoy::config::core::v3::health_check::{self, HealthChecker};
use xds_client::proto::envoy::config::core::v3::HealthCheck;

/// What one check does.
#[derive(Debug, Clone)]
pub enum Probe {
    /// An HTTP request whose status must be expected.
    Http(HttpProbe),
    /// A connection, optionally writing a payload and expecting bytes back.
    Tcp {
        /// Bytes written once connected.
        send: Vec<u8>,
        /// Byte strings that must all come back, in order.
        receive: Vec<Vec<u8>>,
    },
    /// `grpc.health.v1.Health/Check`; SERVING passes.
    Grpc {
        /// The service asked about (empty: the server as a whole).
        service: String,
        /// `:authority` (empty: the cluster name).
        authority: String,
    },
}

/// An HTTP health check request.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// `Host` (empty: the cluster name).
    pub host: String,
    /// Path requested.
    pub path: String,
    /// Method (GET unless configured).
    pub method: http::Method,
    /// Status ranges `[start, end)` that pass (default `[200, 201)`).
    pub expected: Vec<(u16, u16)>,
    /// Status ranges that fail without making the host unhealthy at once.
    pub retriable: Vec<(u16, u16)>,
    /// Speak HTTP/2 instead of HTTP/1.1.
    pub http2: bool,
    /// Request header additions and removals.
    pub headers: HeaderMutations,
}

/// A translated HealthCheck.
#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    /// What a check does.
    pub probe: Probe,
    /// A check unanswered this long fails (as a network failure).
    pub timeout: Duration,
    /// Time between checks of a healthy host.
    pub interval: Duration,
    /// Time between checks of an unhealthy host (default `interval`).
    pub unhealthy_interval: Duration,
    /// Time to the next check right after a host turned unhealthy (default
    /// `unhealthy_interval`).
    pub unhealthy_edge_interval: Duration,
    /// Time to the next check right after a host turned healthy (default `interval`).
    pub healthy_edge_interval: Duration,
    /// Time between checks while the cluster has never carried traffic (default 60 s).
    pub no_traffic_interval: Duration,
    /// The same for a healthy host (default `no_traffic_interval`).
    pub no_traffic_healthy_interval: Duration,
    /// Random delay before a host's first check, up to this.
    pub initial_jitter: Duration,
    /// Random extra time per interval, up to this.
    pub interval_jitter: Duration,
    /// Random extra time per interval, up to this percentage of it.
    pub interval_jitter_percent: u32,
    /// Failures in a row that make a healthy host unhealthy.
    pub unhealthy_threshold: u32,
    /// Passes in a row that make an unhealthy host healthy (its very first pass counts
    /// as enough).
    pub healthy_threshold: u32,
    /// Keep the connection between checks (default true).
    pub reuse_connection: bool,
}

/// Translates the cluster's `health_checks` (at most one is supported).
pub fn translate(checks: &[HealthCheck], path: &str) -> Result<Option<HealthCheckConfig>> {
    match checks {
        [] => Ok(None),
        [one] => translate_one(one, &format!("{path}[0]")).map(Some),
        _ => Err(ConfigError::at(
            path,
            "only one health check per cluster is supported",
        )),
    }
}

fn translate_one(h: &HealthCheck, path: &str) -> Result<HealthCheckConfig> {
    let required = |d: &Option<xds_client::proto::google::protobuf::Duration>, field: &str| {
        let p = join(path, field);
        match d {
            Some(d) => match common::duration(d, &p)? {
                Duration::ZERO => Err(ConfigError::at(p, "must be greater than zero")),
                v => Ok(v),
            },
            None => Err(ConfigError::at(p, "is required")),
        }
    };
    let optional = |d: &Option<xds_client::proto::google::protobuf::Duration>,
                    field: &str,
                    default: Duration| match d {
        Some(d) => {
            common::duration(d, &join(path, field)).map(|v| if v.is_zero() { default } else { v })
        }
        None => Ok(default),
    };
    let threshold = |v: &Option<xds_client::proto::google::protobuf::UInt32Value>, field: &str| {
        v.as_ref()
            .map(|v| v.value)
            .ok_or_else(|| ConfigError::at(join(path, field), "is required"))
    };
    let interval = required(&h.interval, "interval")?;
    let unhealthy_interval = optional(&h.unhealthy_interval, "unhealthy_interval", interval)?;
    let no_traffic_interval = optional(
        &h.no_traffic_interval,
        "no_traffic_interval",
        Duration::from_secs(60),
    )?;
    if h.alt_port.is_some() {
        return Err(ConfigError::at(
            join(path, "alt_port"),
            "alt_port is not supported",
        ));
    }
    Ok(HealthCheckConfig {
        probe: probe(h, path)?,
        timeout: required(&h.timeout, "timeout")?,
        interval,
        unhealthy_interval,
        unhealthy_edge_interval: optional(
            &h.unhealthy_edge_interval,
            "unhealthy_edge_interval",
            unhealthy_interval,
        )?,
        healthy_edge_interval: optional(
            &h.healthy_edge_interval,
            "healthy_edge_interval",
            interval,
        )?,
        no_traffic_interval,
        no_traffic_healthy_interval: optional(
            &h.no_traffic_healthy_interval,
            "no_traffic_healthy_interval",
            no_traffic_interval,
        )?,
        initial_jitter: optional(&h.initial_jitter, "initial_jitter", Duration::ZERO)?,
        interval_jitter: optional(&h.interval_jitter, "interval_jitter", Duration::ZERO)?,
        interval_jitter_percent: h.interval_jitter_percent,
        unhealthy_threshold: threshold(&h.unhealthy_threshold, "unhealthy_threshold")?.max(1),
        healthy_threshold: threshold(&h.healthy_threshold, "healthy_threshold")?.max(1),
        reuse_connection: h.reuse_connection.as_ref().is_none_or(|b| b.value),
    })
}

fn probe(h: &HealthCheck, path: &str) -> Result<Probe> {
    match &h.health_checker {
        Some(HealthChecker::HttpHealthCheck(c)) => http_probe(c, &join(path, "http_health_check")),
        Some(HealthChecker::TcpHealthCheck(t)) => {
            let p = join(path, "tcp_health_check");
            Ok(Probe::Tcp {
                send: match &t.send {
                    Some(s) => payload(s, &join(&p, "send"))?,
                    None => Vec::new(),
                },
                receive: t
                    .receive
                    .iter()
                    .enumerate()
                    .map(|(i, r)| payload(r, &item(&p, "receive", i)))
                    .collect::<Result<_>>()?,
            })
        }
        Some(HealthChecker::GrpcHealthCheck(g)) => Ok(Probe::Grpc {
            service: g.service_name.clone(),
            authority: g.authority.clone(),
        }),
        Some(_) => Err(ConfigError::at(
            path,
            "only http_health_check, tcp_health_check and grpc_health_check are supported",
        )),
        None => Err(ConfigError::at(path, "a health checker is required")),
    }
}

fn http_probe(c: &health_check::HttpHealthCheck, path: &str) -> Result<Probe> {
    if c.path.is_empty() {
        return Err(ConfigError::at(join(path, "path"), "is required"));
    }
    let ranges = |list: &[xds_client::proto::envoy::r#type::v3::Int64Range], field: &str| {
        list.iter()
            .enumerate()
            .map(|(i, r)| {
                if !(100..=600).contains(&r.start)
                    || !(100..=600).contains(&r.end)
                    || r.start >= r.end
                {
                    return Err(ConfigError::at(
                        item(path, field, i),
                        format!("[{}, {}) is not a range of HTTP statuses", r.start, r.end),
                    ));
                }
                Ok((r.start as u16, r.end as u16))
            })
            .collect::<Result<Vec<_>>>()
    };
    let mut expected = ranges(&c.expected_statuses, "expected_statuses")?;
    if expected.is_empty() {
        expected.push((200, 201));
    }
    let method = match c.method {
        0 | 1 => http::Method::GET,
        2 => http::Method::HEAD,
        3 => http::Method::POST,
        4 => http::Method::PUT,
        5 => http::Method::DELETE,
        7 => http::Method::OPTIONS,
        8 => http::Method::TRACE,
        9 => http::Method::PATCH,
        n => {
            return Err(ConfigError::at(
                join(path, "method"),
                format!("method {n} cannot be used for health checks"),
            ))
        }
    };
    let http2 = match c.codec_client_type {
        0 => false,
        1 => true,
        n => {
            return Err(ConfigError::at(
                join(path, "codec_client_type"),
                format!("codec {n} is not supported (HTTP1 or HTTP2)"),
            ))
        }
    };
    Ok(Probe::Http(HttpProbe {
        host: c.host.clone(),
        path: c.path.clone(),
        method,
        expected,
        retriable: ranges(&c.retriable_statuses, "retriable_statuses")?,
        http2,
        headers: header_mutations(
            &c.request_headers_to_add,
            &c.request_headers_to_remove,
            path,
            "request_headers_to_add",
            "request_headers_to_remove",
        )?,
    }))
}

/// A payload: hex text or raw bytes.
fn payload(p: &health_check::Payload, path: &str) -> Result<Vec<u8>> {
    use health_check::payload::Payload as P;
    match &p.payload {
        Some(P::Binary(b)) => Ok(b.clone()),
        Some(P::Text(t)) => {
            let bad = || ConfigError::at(join(path, "text"), "is not hex");
            if t.len() % 2 != 0 || !t.is_ascii() {
                return Err(bad());
            }
            (0..t.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&t[i..i + 2], 16).map_err(|_| bad()))
                .collect()
        }
        None => Err(ConfigError::at(path, "payload is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_payloads_decode() {
        use health_check::payload::Payload as P;
        let p = |t: &str| health_check::Payload {
            payload: Some(P::Text(t.into())),
        };
        assert_eq!(payload(&p("50494e47"), "p").unwrap(), b"PING");
        assert!(payload(&p("5"), "p").is_err());
        assert!(payload(&p("zz"), "p").is_err());
        assert!(
            payload(&p("é1"), "p").is_err(),
            "non-ASCII is refused, not sliced"
        );
    }
}
