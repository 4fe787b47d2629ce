//! Access-log configuration: file, stdout and stderr loggers with Envoy's format strings
//! and the filters that decide which streams they log.

use super::error::{join, ConfigError, Result};
use crate::access_log::filter::Filter;
use crate::access_log::format::{Extensions, Format, DEFAULT_FORMAT};
use prost::Message;
use std::path::PathBuf;
use xds_client::proto::envoy::config::accesslog::v3 as accesslog;
use xds_client::proto::envoy::config::core::v3 as core;
use xds_client::proto::envoy::extensions::access_loggers::{
    file::v3 as file, stream::v3 as stream,
};

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sink {
    /// Appended to a file.
    File(PathBuf),
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A translated access logger.
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    /// Destination.
    pub sink: Sink,
    /// Line format.
    pub format: Format,
    /// Which streams are logged (all when `None`).
    pub filter: Option<Filter>,
}

/// Formatter extensions that only enable operators: Envoy 1.40 has their operators built
/// in, and istiod before 1.26 lists them on every mesh access log. An operator we lack
/// is still rejected where the format uses it.
const OPERATOR_FORMATTERS: &[&str] = &[
    "envoy.extensions.formatter.metadata.v3.Metadata",
    "envoy.extensions.formatter.cel.v3.Cel",
    "envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery",
];

/// The operators the listed formatter extensions add.
fn formatters(list: &[core::TypedExtensionConfig], path: &str) -> Result<Extensions> {
    let mut extensions = Extensions::default();
    for (i, f) in list.iter().enumerate() {
        let type_url = f.typed_config.as_ref().map_or("", |a| a.type_url.as_str());
        let name = xds_client::descriptors::type_name_of_url(type_url);
        if !OPERATOR_FORMATTERS.contains(&name) {
            return Err(ConfigError::at(
                format!("{}[{i}].typed_config", join(path, "formatters")),
                format!("unsupported formatter extension {type_url:?}"),
            ));
        }
        extensions.req_without_query |=
            name == "envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery";
    }
    Ok(extensions)
}

fn substitution(f: &core::SubstitutionFormatString, path: &str) -> Result<Format> {
    use core::substitution_format_string::Format as F;
    let extensions = formatters(&f.formatters, path)?;
    // `content_type` only shapes local reply bodies; Envoy ignores it on access logs.
    // `json_format_options.sort_properties` is deprecated and without effect in Envoy
    // 1.40: JSON keys always come out sorted, as they do here.
    let format = match &f.format {
        Some(F::TextFormat(t)) => Format::text_with(t, extensions)
            .map_err(|e| ConfigError::at(join(path, "text_format"), e)),
        Some(F::TextFormatSource(ds)) => {
            let bytes = super::common::data_source(ds, &join(path, "text_format_source"))?;
            Format::text_with(&String::from_utf8_lossy(&bytes), extensions)
                .map_err(|e| ConfigError::at(join(path, "text_format_source"), e))
        }
        Some(F::JsonFormat(s)) => {
            Format::json(s, extensions).map_err(|e| ConfigError::at(join(path, "json_format"), e))
        }
        None => Format::text(DEFAULT_FORMAT).map_err(|e| ConfigError::at(path, e)),
    }?;
    Ok(format.omit_empty_values(f.omit_empty_values))
}

/// Translates one `AccessLog` entry.
pub fn translate(log: &accesslog::AccessLog, path: &str) -> Result<AccessLogConfig> {
    let filter = log
        .filter
        .as_ref()
        .map(|f| super::access_log_filter::translate(f, &join(path, "filter")))
        .transpose()?;
    let p = join(path, "typed_config");
    let any = match &log.config_type {
        Some(accesslog::access_log::ConfigType::TypedConfig(a)) => a,
        None => return Err(ConfigError::at(&p, "typed_config is required")),
    };
    let default = || Format::text(DEFAULT_FORMAT).map_err(|e| ConfigError::at(&p, e));
    match xds_client::descriptors::type_name_of_url(&any.type_url) {
        "envoy.extensions.access_loggers.file.v3.FileAccessLog" => {
            let f = file::FileAccessLog::decode(any.value.as_slice())
                .map_err(|e| ConfigError::at(&p, e.to_string()))?;
            use file::file_access_log::AccessLogFormat as A;
            let format = match &f.access_log_format {
                Some(A::Format(t)) => {
                    Format::text(t).map_err(|e| ConfigError::at(join(&p, "format"), e))?
                }
                Some(A::JsonFormat(s)) => Format::json(s, Extensions::default())
                    .map_err(|e| ConfigError::at(join(&p, "json_format"), e))?,
                Some(A::LogFormat(l)) => substitution(l, &join(&p, "log_format"))?,
                Some(A::TypedJsonFormat(_)) => {
                    return Err(ConfigError::at(
                        join(&p, "typed_json_format"),
                        "not supported",
                    ))
                }
                None => default()?,
            };
            if f.path.is_empty() {
                return Err(ConfigError::at(join(&p, "path"), "path is required"));
            }
            let sink = match f.path.as_str() {
                "/dev/stdout" => Sink::Stdout,
                "/dev/stderr" => Sink::Stderr,
                other => Sink::File(PathBuf::from(other)),
            };
            Ok(AccessLogConfig {
                sink,
                format,
                filter,
            })
        }
        name @ ("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
        | "envoy.extensions.access_loggers.stream.v3.StderrAccessLog") => {
            let (lf, sink) = if name.ends_with("StdoutAccessLog") {
                let s = stream::StdoutAccessLog::decode(any.value.as_slice())
                    .map_err(|e| ConfigError::at(&p, e.to_string()))?;
                (
                    s.access_log_format
                        .map(|stream::stdout_access_log::AccessLogFormat::LogFormat(l)| l),
                    Sink::Stdout,
                )
            } else {
                let s = stream::StderrAccessLog::decode(any.value.as_slice())
                    .map_err(|e| ConfigError::at(&p, e.to_string()))?;
                (
                    s.access_log_format
                        .map(|stream::stderr_access_log::AccessLogFormat::LogFormat(l)| l),
                    Sink::Stderr,
                )
            };
            let format = match lf {
                Some(l) => substitution(&l, &join(&p, "log_format"))?,
                None => default()?,
            };
            Ok(AccessLogConfig {
                sink,
                format,
                filter,
            })
        }
        _ => Err(ConfigError::at(
            &p,
            format!("unsupported access logger {}", any.type_url),
        )),
    }
}

/// Translates a list of access logs.
pub fn translate_all(logs: &[accesslog::AccessLog], path: &str) -> Result<Vec<AccessLogConfig>> {
    logs.iter()
        .enumerate()
        .map(|(i, l)| translate(l, &format!("{path}[{i}]")))
        .collect()
}
