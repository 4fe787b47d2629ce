//! Envoy's access-log filters (`AccessLogFilter`), compiled at config time and evaluated
//! on a finished [`Record`] before its line is formatted: a logger whose filter says no
//! writes nothing.

use super::record::{Record, ResponseFlags};
use crate::config::route::HeaderMatch;

/// How a `ComparisonFilter` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `EQ`.
    Eq,
    /// `GE`.
    Ge,
    /// `LE`.
    Le,
    /// `NE`.
    Ne,
}

impl Compare {
    fn holds(self, actual: u64, wanted: u64) -> bool {
        match self {
            Compare::Eq => actual == wanted,
            Compare::Ge => actual >= wanted,
            Compare::Le => actual <= wanted,
            Compare::Ne => actual != wanted,
        }
    }
}

/// A compiled access-log filter.
#[derive(Debug, Clone)]
pub enum Filter {
    /// `status_code_filter`: the response code (0 when none was sent) against a value.
    StatusCode(Compare, u64),
    /// `duration_filter`: the stream's duration in milliseconds against a value.
    Duration(Compare, u64),
    /// `not_health_check_filter`: no request is marked a health check here (Envoy marks
    /// them only in its `health_check` HTTP filter, which is not supported), so it holds.
    NotHealthCheck,
    /// `traceable_filter`: the request was traced (sampled or forced).
    Traceable,
    /// `runtime_filter`: a sample of `numerator`/`denominator`; there is no runtime layer,
    /// so the key always reads its default.
    Runtime {
        /// Sampled share, numerator.
        numerator: u64,
        /// Sampled share, denominator (100, 10^4 or 10^6).
        denominator: u64,
        /// Draw a fresh random number instead of deriving one from `x-request-id`.
        independent: bool,
    },
    /// `and_filter`.
    And(Vec<Filter>),
    /// `or_filter`.
    Or(Vec<Filter>),
    /// `header_filter`: one condition on a request header (pseudo-headers included).
    Header(String, HeaderMatch),
    /// `response_flag_filter`: any of these flags (an empty set: any flag at all).
    ResponseFlag(ResponseFlags),
    /// `grpc_status_filter`: the stream's gRPC status is (or, `exclude`, is not) listed.
    GrpcStatus {
        /// Bit `n` set: status `n` listed.
        statuses: u32,
        /// Invert the match.
        exclude: bool,
    },
}

impl Filter {
    /// Whether `record` is to be logged.
    pub fn allows(&self, record: &Record) -> bool {
        match self {
            Filter::StatusCode(op, v) => op.holds(u64::from(record.response_code), *v),
            Filter::Duration(op, v) => op.holds(record.duration.as_millis() as u64, *v),
            Filter::NotHealthCheck => true,
            Filter::Traceable => record.span.is_some(),
            Filter::Runtime {
                numerator,
                denominator,
                independent,
            } => {
                let draw = (!independent)
                    .then(|| request_id_draw(record))
                    .flatten()
                    .unwrap_or_else(rand::random::<u64>);
                draw % denominator < *numerator
            }
            Filter::And(all) => all.iter().all(|f| f.allows(record)),
            Filter::Or(any) => any.iter().any(|f| f.allows(record)),
            Filter::Header(name, m) => crate::http::route_match::header_value_matches(
                m,
                record.request_header(name).as_deref(),
            ),
            Filter::ResponseFlag(wanted) if wanted.is_empty() => !record.flags.is_empty(),
            Filter::ResponseFlag(wanted) => record.flags.intersects(*wanted),
            Filter::GrpcStatus { statuses, exclude } => {
                let listed = statuses & (1 << grpc_status(record)) != 0;
                listed != *exclude
            }
        }
    }
}

/// The number Envoy's UUID request-id extension derives from `x-request-id` for sampling:
/// the first 8 hex digits modulo 10,000 (`None` when the header is not such a UUID).
fn request_id_draw(record: &Record) -> Option<u64> {
    let id = record.request_headers.get("x-request-id")?.to_str().ok()?;
    let head = id.get(..8)?;
    if id.len() != 36 {
        return None;
    }
    u64::from_str_radix(head, 16).ok().map(|n| n % 10_000)
}

/// The stream's gRPC status as Envoy's filter reads it; `Unknown` (2) when there is none.
/// Statuses past the canonical 16 are user-defined and never listed.
fn grpc_status(record: &Record) -> u32 {
    record.grpc_status_or_mapped().unwrap_or(2).min(31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(code: u16, flags: ResponseFlags) -> Record {
        let mut r = Record::new(1);
        r.response_code = code;
        r.flags = flags;
        r.duration = Duration::from_millis(40);
        r
    }

    #[test]
    fn comparisons_flags_and_combinators() {
        let nr = record(404, ResponseFlags::NO_ROUTE_FOUND);
        let ok = record(200, ResponseFlags::default());
        let only_nr = Filter::ResponseFlag(ResponseFlags::NO_ROUTE_FOUND);
        assert!(only_nr.allows(&nr) && !only_nr.allows(&ok));
        let any_flag = Filter::ResponseFlag(ResponseFlags::default());
        assert!(any_flag.allows(&nr) && !any_flag.allows(&ok));
        let errors = Filter::StatusCode(Compare::Ge, 400);
        assert!(errors.allows(&nr) && !errors.allows(&ok));
        let slow = Filter::Duration(Compare::Ge, 41);
        assert!(!slow.allows(&ok));
        let both = Filter::And(vec![errors.clone(), slow.clone()]);
        let either = Filter::Or(vec![errors, slow]);
        assert!(!both.allows(&nr) && either.allows(&nr) && !either.allows(&ok));
    }

    #[test]
    fn header_filter_reads_pseudo_and_regular_headers() {
        use xds_client::proto::envoy::config::route::v3::{header_matcher, HeaderMatcher};
        use xds_client::proto::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
        let matcher = |name: &str, exact: &str| {
            let m = HeaderMatcher {
                name: name.into(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact(exact.into())),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            };
            let (name, m) = crate::config::route::any_header_match(&m, "h").unwrap();
            Filter::Header(name, m)
        };
        let mut r = record(200, ResponseFlags::default());
        r.path = Some("/health".into());
        r.request_headers.append("x-tag", "a".parse().unwrap());
        r.request_headers.append("x-tag", "b".parse().unwrap());
        assert!(matcher(":path", "/health").allows(&r));
        assert!(!matcher(":path", "/other").allows(&r));
        assert!(matcher("x-tag", "a,b").allows(&r));
        assert!(!matcher(":method", "GET").allows(&r));
    }

    #[test]
    fn grpc_status_from_headers_or_http_status() {
        let unavailable = 1 << 14;
        let f = Filter::GrpcStatus {
            statuses: unavailable,
            exclude: false,
        };
        assert!(f.allows(&record(503, ResponseFlags::default())));
        let mut ok = record(200, ResponseFlags::default());
        ok.response_trailers
            .insert("grpc-status", "14".parse().unwrap());
        assert!(f.allows(&ok));
        ok.response_trailers
            .insert("grpc-status", "0".parse().unwrap());
        assert!(!f.allows(&ok));
        let excluded = Filter::GrpcStatus {
            statuses: unavailable,
            exclude: true,
        };
        assert!(excluded.allows(&ok));
    }

    #[test]
    fn runtime_sample_follows_the_request_id() {
        let mut r = record(200, ResponseFlags::default());
        // 0x64 = 100, 100 % 100 = 0: inside a 1% sample; 0x63 = 99 is not.
        r.request_headers.insert(
            "x-request-id",
            "00000064-0000-4000-8000-000000000000".parse().unwrap(),
        );
        let one_percent = |independent| Filter::Runtime {
            numerator: 1,
            denominator: 100,
            independent,
        };
        assert!(one_percent(false).allows(&r));
        r.request_headers.insert(
            "x-request-id",
            "00000063-0000-4000-8000-000000000000".parse().unwrap(),
        );
        assert!(!one_percent(false).allows(&r));
        let none = Filter::Runtime {
            numerator: 0,
            denominator: 100,
            independent: true,
        };
        assert!(!none.allows(&r));
    }
}
