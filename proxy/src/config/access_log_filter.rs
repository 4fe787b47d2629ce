//! Translation of `AccessLogFilter` into [`Filter`]: every filter Envoy evaluates on a
//! finished stream; metadata, log-type and extension (CEL) filters are rejected by name.

use super::error::{join, ConfigError, Result};
use crate::access_log::filter::{Compare, Filter};
use crate::access_log::record::ResponseFlags;
use xds_client::proto::envoy::config::accesslog::v3 as accesslog;

/// Translates one filter at `path`.
pub fn translate(f: &accesslog::AccessLogFilter, path: &str) -> Result<Filter> {
    use accesslog::access_log_filter::FilterSpecifier as F;
    Ok(match &f.filter_specifier {
        Some(F::StatusCodeFilter(s)) => {
            let p = join(path, "status_code_filter");
            let (op, v) = comparison(s.comparison.as_ref(), &join(&p, "comparison"))?;
            Filter::StatusCode(op, v)
        }
        Some(F::DurationFilter(d)) => {
            let p = join(path, "duration_filter");
            let (op, v) = comparison(d.comparison.as_ref(), &join(&p, "comparison"))?;
            Filter::Duration(op, v)
        }
        Some(F::NotHealthCheckFilter(_)) => Filter::NotHealthCheck,
        Some(F::TraceableFilter(_)) => Filter::Traceable,
        Some(F::RuntimeFilter(r)) => {
            let p = join(path, "runtime_filter");
            if r.runtime_key.is_empty() {
                return Err(ConfigError::at(
                    join(&p, "runtime_key"),
                    "runtime_key is required",
                ));
            }
            // Without `percent_sampled`, Envoy samples 0 of 100.
            let (numerator, denominator) = r
                .percent_sampled
                .as_ref()
                .map_or((0, 100), super::common::fraction);
            Filter::Runtime {
                numerator,
                denominator,
                independent: r.use_independent_randomness,
            }
        }
        Some(F::AndFilter(a)) => Filter::And(list(&a.filters, &join(path, "and_filter.filters"))?),
        Some(F::OrFilter(o)) => Filter::Or(list(&o.filters, &join(path, "or_filter.filters"))?),
        Some(F::HeaderFilter(h)) => {
            let p = join(path, "header_filter.header");
            let m = h
                .header
                .as_ref()
                .ok_or_else(|| ConfigError::at(&p, "header is required"))?;
            let (name, condition) = super::route::any_header_match(m, &p)?;
            Filter::Header(name, condition)
        }
        Some(F::ResponseFlagFilter(r)) => {
            let p = join(path, "response_flag_filter.flags");
            let mut flags = ResponseFlags::default();
            for (i, name) in r.flags.iter().enumerate() {
                let flag = ResponseFlags::from_short(name).ok_or_else(|| {
                    ConfigError::at(
                        format!("{p}[{i}]"),
                        format!("unknown response flag {name:?}"),
                    )
                })?;
                flags.insert(flag);
            }
            Filter::ResponseFlag(flags)
        }
        Some(F::GrpcStatusFilter(g)) => {
            let p = join(path, "grpc_status_filter.statuses");
            let mut statuses = 0u32;
            for (i, s) in g.statuses.iter().enumerate() {
                if !(0..=16).contains(s) {
                    return Err(ConfigError::at(
                        format!("{p}[{i}]"),
                        format!("unknown gRPC status {s}"),
                    ));
                }
                statuses |= 1 << s;
            }
            Filter::GrpcStatus {
                statuses,
                exclude: g.exclude,
            }
        }
        Some(F::MetadataFilter(_)) => {
            return Err(ConfigError::at(
                join(path, "metadata_filter"),
                "not supported",
            ))
        }
        Some(F::LogTypeFilter(_)) => {
            return Err(ConfigError::at(
                join(path, "log_type_filter"),
                "not supported",
            ))
        }
        Some(F::ExtensionFilter(e)) => {
            return Err(ConfigError::at(
                join(path, "extension_filter"),
                format!("unsupported access log filter extension {:?}", e.name),
            ))
        }
        None => {
            return Err(ConfigError::at(
                path,
                "an access log filter needs a filter_specifier",
            ))
        }
    })
}

/// The members of an `and_filter` / `or_filter` (Envoy requires at least two).
fn list(filters: &[accesslog::AccessLogFilter], path: &str) -> Result<Vec<Filter>> {
    if filters.len() < 2 {
        return Err(ConfigError::at(path, "needs at least 2 filters"));
    }
    filters
        .iter()
        .enumerate()
        .map(|(i, f)| translate(f, &format!("{path}[{i}]")))
        .collect()
}

/// A `ComparisonFilter`: the runtime key (if any) always reads its default here, as there
/// is no runtime layer.
fn comparison(c: Option<&accesslog::ComparisonFilter>, path: &str) -> Result<(Compare, u64)> {
    let c = c.ok_or_else(|| ConfigError::at(path, "comparison is required"))?;
    let op = match accesslog::comparison_filter::Op::try_from(c.op) {
        Ok(accesslog::comparison_filter::Op::Eq) => Compare::Eq,
        Ok(accesslog::comparison_filter::Op::Ge) => Compare::Ge,
        Ok(accesslog::comparison_filter::Op::Le) => Compare::Le,
        Ok(accesslog::comparison_filter::Op::Ne) => Compare::Ne,
        Err(_) => {
            return Err(ConfigError::at(
                join(path, "op"),
                format!("unknown op {}", c.op),
            ))
        }
    };
    let value = c
        .value
        .as_ref()
        .ok_or_else(|| ConfigError::at(join(path, "value"), "value is required"))?;
    Ok((op, u64::from(value.default_value)))
}
