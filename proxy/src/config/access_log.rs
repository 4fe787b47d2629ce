//! Access-log configuration: file, stdout and stderr loggers with Envoy's format strings.

use super::error::{join, ConfigError, Result};
use crate::access_log::format::{Format, DEFAULT_FORMAT};
use prost::Message;
use std::path::PathBuf;
use xds_client::proto::envoy::config::accesslog::v3 as accesslog;
use xds_client::proto::envoy::config::core::v3 as core;
use xds_client::proto::envoy::extensions::access_loggers::{
    file::v3 as file, stream::v3 as stream,
};

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

fn substitution(f: &core::SubstitutionFormatString, path: &str) -> Result<Format> {
    use core::substitution_format_string::Format as F;
    if !f.formatters.is_empty() {
        return Err(ConfigError::at(
            join(path, "formatters"),
            "custom formatters are not supported",
        ));
    }
    match &f.format {
        Some(F::TextFormat(t)) => {
            Format::text(t).map_err(|e| ConfigError::at(join(path, "text_format"), e))
        }
        Some(F::TextFormatSource(ds)) => {
            let bytes = super::common::data_source(ds, &join(path, "text_format_source"))?;
            Format::text(&String::from_utf8_lossy(&bytes))
                .map_err(|e| ConfigError::at(join(path, "text_format_source"), e))
        }
        Some(F::JsonFormat(s)) => Format::json(s, f.omit_empty_values)
            .map_err(|e| ConfigError::at(join(path, "json_format"), e)),
        None => Format::text(DEFAULT_FORMAT).map_err(|e| ConfigError::at(path, e)),
    }
}

/// Translates one `AccessLog` entry.
pub fn translate(log: &accesslog::AccessLog, path: &str) -> Result<AccessLogConfig> {
    if log.filter.is_some() {
        return Err(ConfigError::at(
            join(path, "filter"),
            "access log filters are not supported",
        ));
    }
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
                Some(A::JsonFormat(s)) => Format::json(s, false)
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
            Ok(AccessLogConfig { sink, format })
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
            Ok(AccessLogConfig { sink, format })
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
