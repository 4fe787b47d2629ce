//! Envoy's substitution format strings: parsed once at config time into tokens, rendered
//! per stream from a [`Record`]. Text and JSON formats; unknown operators are config errors.

use super::record::Record;
use super::time;
use std::collections::BTreeMap;

/// Envoy's default access log format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// Which header map a `%REQ%`-like operator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderSource {
    Request,
    Response,
    Trailer,
}

/// How `%GRPC_STATUS%` names a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrpcStyle {
    /// `Unimplemented` (the default).
    Camel,
    /// `UNIMPLEMENTED`.
    Snake,
    /// `12`.
    Number,
}

/// The formatter extensions listed with a format (`formatters`): the operators they add
/// are accepted only then, as in Envoy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extensions {
    /// `envoy.formatter.req_without_query`: `%REQ_WITHOUT_QUERY(...)%`.
    pub req_without_query: bool,
}

/// One operator.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    StartTime(Option<String>),
    Header {
        source: HeaderSource,
        main: String,
        alt: Option<String>,
    },
    ResponseCode,
    ResponseCodeDetails,
    ResponseFlags,
    Duration,
    ResponseDuration,
    BytesReceived,
    BytesSent,
    RequestHeadersBytes,
    ResponseHeadersBytes,
    Protocol,
    UpstreamHost,
    /// The cluster's `alt_stat_name` when it has one, unless `raw`.
    UpstreamCluster {
        raw: bool,
    },
    UpstreamLocalAddress,
    ConnectionTerminationDetails,
    GrpcStatus(GrpcStyle),
    /// `%ENVIRONMENT(NAME)%`, read when the format is compiled.
    Environment(Option<String>),
    /// `%REQ_WITHOUT_QUERY(...)%`: a request header with its query string cut off.
    RequestWithoutQuery {
        main: String,
        alt: Option<String>,
    },
    /// The upstream peer's address: only once connected.
    UpstreamRemote {
        port: bool,
    },
    UpstreamRemotePort,
    DownstreamRemotePort,
    DownstreamLocalPort,
    UniqueId,
    UpstreamProtocol,
    /// `%FILTER_STATE(key...)%`: no filter here publishes filter state objects, so every
    /// key reads as absent, as Envoy renders an unset key.
    FilterState,
    /// `%DYNAMIC_METADATA(namespace[:key...])%`.
    DynamicMetadata {
        namespace: String,
        path: Vec<String>,
    },
    LocalUriSan,
    UpstreamPeerUriSan,
    UpstreamLocalUriSan,
    UpstreamTransportFailureReason,
    DownstreamRemote {
        port: bool,
    },
    DownstreamDirectRemote {
        port: bool,
    },
    DownstreamLocal {
        port: bool,
    },
    RequestedServerName,
    RouteName,
    PeerUriSan,
    ConnectionId,
    AttemptCount,
    Hostname,
}

impl Op {
    fn is_numeric(&self) -> bool {
        matches!(
            self,
            Op::ResponseCode
                | Op::Duration
                | Op::ResponseDuration
                | Op::BytesReceived
                | Op::BytesSent
                | Op::RequestHeadersBytes
                | Op::ResponseHeadersBytes
                | Op::ConnectionId
                | Op::AttemptCount
                | Op::GrpcStatus(GrpcStyle::Number)
                | Op::UpstreamRemotePort
                | Op::DownstreamRemotePort
                | Op::DownstreamLocalPort
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Operator(Op, Option<usize>),
}

/// A compiled format.
#[derive(Debug, Clone)]
pub struct Format {
    kind: Kind,
    /// `omit_empty_values`: a missing value is written as nothing instead of `-`, and a
    /// JSON key whose value is missing (or an object left empty) is left out.
    omit_empty: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A text line.
    Text(Vec<Token>),
    /// A JSON object, one key per entry (sorted, as Envoy's Struct keys are).
    Json(Vec<(String, JsonTemplate)>),
}

/// One value of a JSON format: a format string, a nested object or list, or a constant
/// (number, bool, null) written as it is.
#[derive(Debug, Clone)]
enum JsonTemplate {
    Format(Vec<Token>),
    Object(Vec<(String, JsonTemplate)>),
    List(Vec<JsonTemplate>),
    Constant(serde_json::Value),
}

impl JsonTemplate {
    fn compile(
        v: &xds_client::proto::google::protobuf::Value,
        extensions: Extensions,
    ) -> Result<JsonTemplate, String> {
        use xds_client::proto::google::protobuf::value::Kind as V;
        Ok(match &v.kind {
            Some(V::StringValue(t)) => JsonTemplate::Format(parse_tokens(t, extensions)?),
            Some(V::StructValue(s)) => JsonTemplate::Object(Self::fields(s, extensions)?),
            Some(V::ListValue(l)) => JsonTemplate::List(
                l.values
                    .iter()
                    .map(|v| Self::compile(v, extensions))
                    .collect::<Result<_, _>>()?,
            ),
            Some(V::NumberValue(n)) => JsonTemplate::Constant(json_number(*n)),
            Some(V::BoolValue(b)) => JsonTemplate::Constant((*b).into()),
            Some(V::NullValue(_)) | None => JsonTemplate::Constant(serde_json::Value::Null),
        })
    }

    /// A Struct's entries in key order.
    fn fields(
        s: &xds_client::proto::google::protobuf::Struct,
        extensions: Extensions,
    ) -> Result<Vec<(String, JsonTemplate)>, String> {
        let sorted: BTreeMap<_, _> = s.fields.iter().collect();
        sorted
            .into_iter()
            .map(|(k, v)| Ok((k.clone(), Self::compile(v, extensions)?)))
            .collect()
    }

    fn render(&self, r: &Record, omit_empty: bool) -> serde_json::Value {
        use serde_json::Value;
        match self {
            JsonTemplate::Format(tokens) => match tokens.as_slice() {
                [Token::Operator(op, _)] if op.is_numeric() => render_token(&tokens[0], r)
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Value::from)
                    .unwrap_or(Value::Null),
                [single @ Token::Operator(..)] => render_token(single, r)
                    .map(Value::from)
                    .unwrap_or(Value::Null),
                _ => Value::from(render_tokens(tokens, r, omit_empty)),
            },
            JsonTemplate::Object(fields) => Value::Object(render_object(fields, r, omit_empty)),
            JsonTemplate::List(items) => {
                Value::Array(items.iter().map(|i| i.render(r, omit_empty)).collect())
            }
            JsonTemplate::Constant(v) => v.clone(),
        }
    }
}

/// Text of format tokens; a missing value reads `-`, or nothing with `omit_empty`.
fn render_tokens(tokens: &[Token], r: &Record, omit_empty: bool) -> String {
    let missing = if omit_empty { "" } else { "-" };
    tokens
        .iter()
        .map(|t| render_token(t, r).unwrap_or_else(|| missing.into()))
        .collect()
}

/// An object's rendered entries; with `omit_empty`, missing values and objects left
/// empty go (an empty string a request really carried stays, as in Envoy).
fn render_object(
    fields: &[(String, JsonTemplate)],
    r: &Record,
    omit_empty: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let mut obj = serde_json::Map::new();
    for (k, template) in fields {
        let value = template.render(r, omit_empty);
        let empty = value.is_null() || value.as_object().is_some_and(|o| o.is_empty());
        if omit_empty && empty {
            continue;
        }
        obj.insert(k.clone(), value);
    }
    obj
}

/// A protobuf number as Envoy writes it: whole numbers without a fraction.
fn json_number(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Value::from(n)
    }
}

fn parse_operator(body: &str, extensions: Extensions) -> Result<Op, String> {
    let (name, arg) = match body.find('(') {
        Some(i) => {
            let close = body
                .rfind(')')
                .ok_or_else(|| format!("unterminated ( in %{body}%"))?;
            (&body[..i], Some(&body[i + 1..close]))
        }
        None => (body, None),
    };
    // A header name with an optional `?`-separated fallback, lower-cased.
    let names = || -> Result<(String, Option<String>), String> {
        let arg = arg.ok_or_else(|| format!("{name} needs a header name"))?;
        Ok(match arg.split_once('?') {
            Some((m, a)) => (m.to_ascii_lowercase(), Some(a.to_ascii_lowercase())),
            None => (arg.to_ascii_lowercase(), None),
        })
    };
    let header = |source| -> Result<Op, String> {
        let (main, alt) = names()?;
        Ok(Op::Header { source, main, alt })
    };
    Ok(match name {
        "START_TIME" => Op::StartTime(arg.map(str::to_string).filter(|a| !a.is_empty())),
        "REQ" => header(HeaderSource::Request)?,
        "RESP" => header(HeaderSource::Response)?,
        "TRAILER" => header(HeaderSource::Trailer)?,
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "DURATION" => Op::Duration,
        "RESPONSE_DURATION" => Op::ResponseDuration,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "REQUEST_HEADERS_BYTES" => Op::RequestHeadersBytes,
        "RESPONSE_HEADERS_BYTES" => Op::ResponseHeadersBytes,
        "PROTOCOL" => Op::Protocol,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" => Op::UpstreamCluster { raw: false },
        "UPSTREAM_CLUSTER_RAW" => Op::UpstreamCluster { raw: true },
        "CONNECTION_TERMINATION_DETAILS" => Op::ConnectionTerminationDetails,
        "GRPC_STATUS_NUMBER" => Op::GrpcStatus(GrpcStyle::Number),
        "GRPC_STATUS" => Op::GrpcStatus(match arg.unwrap_or("") {
            "" | "CAMEL_STRING" => GrpcStyle::Camel,
            "SNAKE_STRING" => GrpcStyle::Snake,
            "NUMBER" => GrpcStyle::Number,
            other => {
                return Err(format!(
                    "GRPC_STATUS only supports CAMEL_STRING, SNAKE_STRING or NUMBER, not {other:?}"
                ))
            }
        }),
        "ENVIRONMENT" => {
            let var = arg.filter(|a| !a.is_empty());
            let var = var.ok_or_else(|| "ENVIRONMENT needs a variable name".to_string())?;
            Op::Environment(std::env::var(var).ok())
        }
        "REQ_WITHOUT_QUERY" if extensions.req_without_query => {
            let (main, alt) = names()?;
            Op::RequestWithoutQuery { main, alt }
        }
        "METADATA" => match arg.unwrap_or("").split_once(':') {
            Some(("DYNAMIC", rest)) => dynamic_metadata_op(Some(rest))?,
            _ => {
                return Err(format!(
                    "METADATA only supports DYNAMIC metadata here, not {body}"
                ))
            }
        },
        "UPSTREAM_REMOTE_ADDRESS" => Op::UpstreamRemote { port: true },
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::UpstreamRemote { port: false },
        "UPSTREAM_REMOTE_PORT" => Op::UpstreamRemotePort,
        "DOWNSTREAM_REMOTE_PORT" => Op::DownstreamRemotePort,
        "DOWNSTREAM_LOCAL_PORT" => Op::DownstreamLocalPort,
        "UNIQUE_ID" => Op::UniqueId,
        "UPSTREAM_PROTOCOL" => Op::UpstreamProtocol,
        "FILTER_STATE" => {
            let arg = arg.filter(|a| !a.is_empty());
            let arg = arg.ok_or_else(|| "FILTER_STATE needs a key".to_string())?;
            let mut parts = arg.split(':');
            parts.next();
            match (parts.next(), parts.next()) {
                (None | Some("PLAIN" | "TYPED"), None) | (Some("FIELD"), Some(_)) => {}
                _ => return Err(format!("Invalid filter state serialize type in {body}")),
            }
            Op::FilterState
        }
        "DYNAMIC_METADATA" => dynamic_metadata_op(arg)?,
        "DOWNSTREAM_LOCAL_URI_SAN" => Op::LocalUriSan,
        "UPSTREAM_PEER_URI_SAN" => Op::UpstreamPeerUriSan,
        "UPSTREAM_LOCAL_URI_SAN" => Op::UpstreamLocalUriSan,
        "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemote { port: true },
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemote { port: false },
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => Op::DownstreamDirectRemote { port: true },
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
            Op::DownstreamDirectRemote { port: false }
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocal { port: true },
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::DownstreamLocal { port: false },
        "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
        "ROUTE_NAME" => Op::RouteName,
        "DOWNSTREAM_PEER_URI_SAN" => Op::PeerUriSan,
        "CONNECTION_ID" => Op::ConnectionId,
        "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Op::AttemptCount,
        "HOSTNAME" => Op::Hostname,
        other => return Err(format!("Not supported field in StreamInfo: {other}")),
    })
}

/// `namespace[:key...]` of `%DYNAMIC_METADATA%` and `%METADATA(DYNAMIC:...)%`.
fn dynamic_metadata_op(arg: Option<&str>) -> Result<Op, String> {
    let arg = arg.filter(|a| !a.is_empty());
    let arg = arg.ok_or_else(|| "DYNAMIC_METADATA needs a namespace".to_string())?;
    let mut parts = arg.split(':').map(str::to_string);
    Ok(Op::DynamicMetadata {
        namespace: parts.next().unwrap_or_default(),
        path: parts.collect(),
    })
}

fn operator_regex() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"^([A-Z][A-Z0-9_]*)(\([^)]*\))?(?::(\d+))?%").expect("static regex")
    })
}

fn parse_tokens(s: &str, extensions: Extensions) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        literal.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('%') {
            literal.push('%');
            rest = stripped;
            continue;
        }
        let caps = operator_regex()
            .captures(after)
            .ok_or_else(|| format!("malformed operator at {:?}", &rest[i..]))?;
        let body = format!("{}{}", &caps[1], caps.get(2).map_or("", |m| m.as_str()));
        let max_len = caps
            .get(3)
            .map(|m| m.as_str().parse::<usize>())
            .transpose()
            .map_err(|e| e.to_string())?;
        if !literal.is_empty() {
            tokens.push(Token::Literal(std::mem::take(&mut literal)));
        }
        tokens.push(Token::Operator(parse_operator(&body, extensions)?, max_len));
        rest = &after[caps[0].len()..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    Ok(tokens)
}

impl Format {
    /// Compiles a text format of Envoy's built-in operators.
    pub fn text(s: &str) -> Result<Format, String> {
        Self::text_with(s, Extensions::default())
    }

    /// Compiles a text format that may use the operators of `extensions`.
    pub fn text_with(s: &str, extensions: Extensions) -> Result<Format, String> {
        parse_tokens(s, extensions).map(|t| Format {
            kind: Kind::Text(t),
            omit_empty: false,
        })
    }

    /// Compiles a JSON format from a protobuf Struct: string values are format strings,
    /// nested objects and lists are rendered in place, other values written as they are.
    pub fn json(
        s: &xds_client::proto::google::protobuf::Struct,
        extensions: Extensions,
    ) -> Result<Format, String> {
        Ok(Format {
            kind: Kind::Json(JsonTemplate::fields(s, extensions)?),
            omit_empty: false,
        })
    }

    /// The format with `omit_empty_values` set as given.
    pub fn omit_empty_values(self, omit_empty: bool) -> Format {
        Format { omit_empty, ..self }
    }

    /// Renders a line (text formats keep their own newline; JSON gets one).
    pub fn render(&self, r: &Record) -> String {
        match &self.kind {
            Kind::Text(tokens) => render_tokens(tokens, r, self.omit_empty),
            Kind::Json(fields) => {
                let obj = render_object(fields, r, self.omit_empty);
                let mut line = serde_json::Value::Object(obj).to_string();
                line.push('\n');
                line
            }
        }
    }
}

fn header_value(r: &Record, source: HeaderSource, name: &str) -> Option<String> {
    if source == HeaderSource::Request {
        match name {
            ":method" => return r.method.as_ref().map(|m| m.to_string()),
            ":path" => return r.path.as_deref().map(str::to_string),
            ":authority" => return r.authority.as_deref().map(str::to_string),
            ":scheme" => return r.scheme.map(str::to_string),
            _ => {}
        }
    }
    if source == HeaderSource::Response && name == ":status" {
        return (r.response_code != 0).then(|| r.response_code.to_string());
    }
    let map = match source {
        HeaderSource::Request => &r.request_headers,
        HeaderSource::Response => &r.response_headers,
        HeaderSource::Trailer => &r.response_trailers,
    };
    map.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn addr(a: Option<std::net::SocketAddr>, port: bool) -> Option<String> {
    a.map(|a| {
        if port {
            a.to_string()
        } else {
            a.ip().to_string()
        }
    })
}

/// The upstream peer's address, known only once a connection is up (Envoy logs `-` after
/// a connect failure, where `%UPSTREAM_HOST%` still names the host tried).
fn upstream_remote(r: &Record) -> Option<&str> {
    r.upstream_local?;
    r.upstream_host.as_deref()
}

/// Envoy's names of the gRPC statuses (`Grpc::Utility::grpcStatusToString`); a code it
/// does not name prints as its number.
fn grpc_status_name(code: u32, style: GrpcStyle) -> String {
    const CAMEL: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    let Some(camel) = CAMEL
        .get(code as usize)
        .filter(|_| style != GrpcStyle::Number)
    else {
        return code.to_string();
    };
    match style {
        GrpcStyle::Snake => {
            // `DeadlineExceeded` -> `DEADLINE_EXCEEDED`; `OK` stays.
            let mut out = String::new();
            let mut after_lower = false;
            for c in camel.chars() {
                if after_lower && c.is_ascii_uppercase() {
                    out.push('_');
                }
                after_lower = c.is_ascii_lowercase();
                out.push(c.to_ascii_uppercase());
            }
            out
        }
        _ => camel.to_string(),
    }
}

/// `%DYNAMIC_METADATA%`: a namespace renders as a JSON object of its keys, a key as its
/// value; the values here are strings, so a deeper path reads as absent.
fn dynamic_metadata(r: &Record, namespace: &str, path: &[String]) -> Option<String> {
    match path {
        [] => {
            let fields: serde_json::Map<_, _> = r
                .metadata
                .namespace(namespace)
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
                .collect();
            (!fields.is_empty()).then(|| serde_json::Value::Object(fields).to_string())
        }
        [key] => r.metadata.get(namespace, key).map(str::to_string),
        _ => None,
    }
}

fn render_token(t: &Token, r: &Record) -> Option<String> {
    let (op, max) = match t {
        Token::Literal(s) => return Some(s.clone()),
        Token::Operator(op, max) => (op, max),
    };
    let value = match op {
        Op::StartTime(None) => Some(time::iso8601_millis(r.start_time)),
        Op::StartTime(Some(f)) => Some(time::format(r.start_time, f)),
        Op::Header { source, main, alt } => header_value(r, *source, main)
            .or_else(|| alt.as_deref().and_then(|a| header_value(r, *source, a))),
        Op::ResponseCode => Some(r.response_code.to_string()),
        Op::ResponseCodeDetails => {
            (!r.response_code_details.is_empty()).then(|| r.response_code_details.to_string())
        }
        Op::ResponseFlags => Some(r.flags.to_string()),
        Op::Duration => Some(r.duration.as_millis().to_string()),
        Op::ResponseDuration => r.response_duration.map(|d| d.as_millis().to_string()),
        Op::BytesReceived => Some(r.bytes_received.to_string()),
        Op::BytesSent => Some(r.bytes_sent.to_string()),
        Op::RequestHeadersBytes => Some(r.request_headers_bytes().to_string()),
        Op::ResponseHeadersBytes => Some(r.response_headers_bytes().to_string()),
        Op::Protocol => (!r.protocol.is_empty()).then(|| r.protocol.to_string()),
        Op::UpstreamProtocol => {
            (!r.upstream_protocol.is_empty()).then(|| r.upstream_protocol.to_string())
        }
        Op::UpstreamHost => r.upstream_host.as_deref().map(str::to_string),
        Op::UpstreamCluster { raw } => match (&r.upstream_cluster_alt, raw) {
            _ if !r.upstream_cluster_found => None,
            (Some(alt), false) => Some(alt.to_string()),
            _ => r.upstream_cluster.as_deref().map(str::to_string),
        },
        Op::UpstreamLocalAddress => r.upstream_local.map(|a| a.to_string()),
        // Envoy logs the reason with its spaces replaced: one token per field.
        Op::UpstreamTransportFailureReason => {
            r.upstream_failure.as_ref().map(|f| f.replace(' ', "_"))
        }
        Op::ConnectionTerminationDetails => r
            .connection_termination_details
            .as_deref()
            .map(str::to_string),
        Op::GrpcStatus(style) => r.grpc_status_code().map(|c| grpc_status_name(c, *style)),
        Op::Environment(value) => value.clone(),
        Op::RequestWithoutQuery { main, alt } => header_value(r, HeaderSource::Request, main)
            .or_else(|| {
                alt.as_deref()
                    .and_then(|a| header_value(r, HeaderSource::Request, a))
            })
            .map(|v| match v.split_once('?') {
                Some((path, _)) => path.to_string(),
                None => v,
            }),
        Op::UpstreamRemote { port } => upstream_remote(r).map(|a| match port {
            true => a.to_string(),
            false => a.split_once(':').map_or(a, |(ip, _)| ip).to_string(),
        }),
        Op::UpstreamRemotePort => upstream_remote(r)
            .and_then(|a| a.rsplit_once(':'))
            .map(|(_, port)| port.to_string()),
        Op::DownstreamRemotePort => r.downstream_remote.map(|a| a.port().to_string()),
        Op::DownstreamLocalPort => r.downstream_local.map(|a| a.port().to_string()),
        Op::UniqueId => {
            Some(String::from_utf8_lossy(crate::http::headers::uuid_v4().as_bytes()).into_owned())
        }
        Op::FilterState => None,
        Op::DynamicMetadata { namespace, path } => dynamic_metadata(r, namespace, path),
        Op::LocalUriSan => r.local_uri_san.clone(),
        Op::UpstreamPeerUriSan => r.upstream_peer_uri_san.clone(),
        Op::UpstreamLocalUriSan => r.upstream_local_uri_san.clone(),
        Op::DownstreamRemote { port } => addr(r.downstream_remote, *port),
        Op::DownstreamDirectRemote { port } => addr(r.downstream_direct_remote, *port),
        Op::DownstreamLocal { port } => addr(r.downstream_local, *port),
        Op::RequestedServerName => r.requested_server_name.clone(),
        Op::RouteName => r.route_name.as_deref().map(str::to_string),
        Op::PeerUriSan => r.peer_uri_san.clone(),
        Op::ConnectionId => Some(r.connection_id.to_string()),
        Op::AttemptCount => Some(r.attempt_count.to_string()),
        Op::Hostname => nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned()),
    };
    match (value, max) {
        (Some(v), Some(n)) => Some(v.chars().take(*n).collect()),
        (v, _) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record() -> Record {
        let mut r = Record::new(7);
        r.start_time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        r.method = Some(http::Method::GET);
        r.path = Some("/a?b".into());
        r.authority = Some("example.com".into());
        r.protocol = "HTTP/1.1";
        r.response_code = 200;
        r.bytes_sent = 5;
        r.duration = Duration::from_millis(12);
        r.request_headers
            .insert("user-agent", "curl/8".parse().unwrap());
        r.upstream_host = Some("127.0.0.1:9000".into());
        r
    }

    #[test]
    fn default_format_line() {
        let line = Format::text(DEFAULT_FORMAT).unwrap().render(&record());
        assert_eq!(
            line,
            "[2023-11-14T22:13:20.123Z] \"GET /a?b HTTP/1.1\" 200 - 0 5 12 - \"-\" \"curl/8\" \"-\" \"example.com\" \"127.0.0.1:9000\"\n"
        );
    }

    #[test]
    fn alternatives_lengths_and_escapes() {
        let f = Format::text("%REQ(X-MISSING?USER-AGENT):4% 100%% %START_TIME(%s)%").unwrap();
        assert_eq!(f.render(&record()), "curl 100% 1700000000");
        assert!(Format::text("%NOPE%").unwrap_err().contains("NOPE"));
        assert!(Format::text("%REQ(x").is_err());
    }

    /// A protobuf Value of a JSON value (a test's format written as JSON).
    fn proto_value(v: serde_json::Value) -> xds_client::proto::google::protobuf::Value {
        use xds_client::proto::google::protobuf::{value::Kind, ListValue, Struct, Value};
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => Kind::ListValue(ListValue {
                values: a.into_iter().map(proto_value).collect(),
            }),
            serde_json::Value::Object(o) => Kind::StructValue(Struct {
                fields: o.into_iter().map(|(k, v)| (k, proto_value(v))).collect(),
            }),
        };
        Value { kind: Some(kind) }
    }

    #[test]
    fn json_format_nests_and_keeps_constants() {
        use xds_client::proto::google::protobuf::value::Kind;
        let format = serde_json::json!({"l": ["%REQ(:METHOD)%", 2.5, true, null, {"k": 2.5}, 1],
            "s": {"k": 2.5, "code": "%RESPONSE_CODE%"}, "t1": 0.1, "t3": 123456789012_u64});
        let Some(Kind::StructValue(s)) = proto_value(format).kind else {
            unreachable!()
        };
        // Envoy 1.40 wrote this line for the same format.
        assert_eq!(
            Format::json(&s, Extensions::default())
                .unwrap()
                .render(&record()),
            "{\"l\":[\"GET\",2.5,true,null,{\"k\":2.5},1],\"s\":{\"code\":200,\"k\":2.5},\"t1\":0.1,\"t3\":123456789012}\n"
        );
    }

    #[test]
    fn grpc_status_names() {
        assert_eq!(grpc_status_name(4, GrpcStyle::Snake), "DEADLINE_EXCEEDED");
        assert_eq!(grpc_status_name(4, GrpcStyle::Camel), "DeadlineExceeded");
        assert_eq!(grpc_status_name(0, GrpcStyle::Snake), "OK");
        assert_eq!(grpc_status_name(16, GrpcStyle::Number), "16");
        assert_eq!(grpc_status_name(20, GrpcStyle::Camel), "20");
    }

    #[test]
    fn json_format_types_values() {
        use xds_client::proto::google::protobuf::{value::Kind, Struct, Value};
        let mut s = Struct::default();
        for (k, v) in [
            ("code", "%RESPONSE_CODE%"),
            ("host", "%UPSTREAM_CLUSTER%"),
            ("m", "%REQ(:METHOD)% x"),
        ] {
            s.fields.insert(
                k.into(),
                Value {
                    kind: Some(Kind::StringValue(v.into())),
                },
            );
        }
        let line = Format::json(&s, Extensions::default())
            .unwrap()
            .render(&record());
        assert_eq!(line, "{\"code\":200,\"host\":null,\"m\":\"GET x\"}\n");
    }
}
