//! Application logging with Envoy's conventions: levels per component (`-l`,
//! `--component-log-level`, and `/logging` at runtime), spdlog-style patterns (Envoy's
//! default `[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v` unless `--log-format` or the
//! bootstrap's `application_log_config` says otherwise), to stderr or `--log-path`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock, RwLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Envoy's default application log pattern.
pub const DEFAULT_PATTERN: &str = "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v";

/// Envoy's log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// trace
    Trace,
    /// debug
    Debug,
    /// info
    Info,
    /// warning
    Warning,
    /// error
    Error,
    /// critical
    Critical,
    /// off
    Off,
}

impl Level {
    /// Parses Envoy's level names (`warn` is accepted for `warning`).
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warning" | "warn" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            "off" => Level::Off,
            _ => return None,
        })
    }

    /// Envoy's name for the level.
    pub fn name(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
            Level::Off => "off",
        }
    }

    fn of(l: &tracing::Level) -> Level {
        match *l {
            tracing::Level::TRACE => Level::Trace,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warning,
            tracing::Level::ERROR => Level::Error,
        }
    }
}

/// Envoy's logger (component) names; `/logging` lists and sets these.
pub const COMPONENTS: &[&str] = &[
    "admin",
    "alternate_protocols_cache",
    "aws",
    "assert",
    "backtrace",
    "client",
    "config",
    "connection",
    "conn_handler",
    "dns",
    "dubbo",
    "envoy_bug",
    "ext_authz",
    "file",
    "filter",
    "forward_proxy",
    "grpc",
    "hc",
    "health_checker",
    "http",
    "http2",
    "hystrix",
    "init",
    "io",
    "jwt",
    "kafka",
    "lua",
    "main",
    "matcher",
    "misc",
    "mongo",
    "multi_connection",
    "oauth2",
    "quic",
    "quic_stream",
    "pool",
    "rbac",
    "redis",
    "router",
    "runtime",
    "stats",
    "secret",
    "tap",
    "testing",
    "thrift",
    "tracing",
    "upstream",
    "udp",
    "wasm",
    "websocket",
];

struct Levels {
    by_component: BTreeMap<&'static str, Level>,
}

fn levels() -> &'static RwLock<Levels> {
    static LEVELS: OnceLock<RwLock<Levels>> = OnceLock::new();
    LEVELS.get_or_init(|| {
        RwLock::new(Levels {
            by_component: COMPONENTS.iter().map(|c| (*c, Level::Info)).collect(),
        })
    })
}

/// Sets every component to `level` (`-l`, `POST /logging?level=`).
pub fn set_all(level: Level) {
    {
        let mut l = levels().write().unwrap_or_else(|e| e.into_inner());
        l.by_component.values_mut().for_each(|v| *v = level);
    }
    // After releasing the lock: rebuilding re-evaluates every callsite, which reads it.
    tracing::callsite::rebuild_interest_cache();
}

/// Sets one component; false when the component is unknown.
pub fn set_component(component: &str, level: Level) -> bool {
    let ok = {
        let mut l = levels().write().unwrap_or_else(|e| e.into_inner());
        match l.by_component.get_mut(component) {
            Some(v) => {
                *v = level;
                true
            }
            None => false,
        }
    };
    // After releasing the lock: rebuilding re-evaluates every callsite, which reads it.
    tracing::callsite::rebuild_interest_cache();
    ok
}

/// Applies `--component-log-level` (`a:level,b:level`).
pub fn apply_component_levels(spec: &str) -> Result<(), String> {
    for item in spec.split(',').filter(|s| !s.is_empty()) {
        let (c, l) = item
            .split_once(':')
            .ok_or_else(|| format!("invalid component log level {item:?}"))?;
        let level = Level::parse(l).ok_or_else(|| format!("invalid log level {l:?}"))?;
        if !set_component(c, level) {
            return Err(format!("unknown component {c:?}"));
        }
    }
    Ok(())
}

/// Every component and its level, sorted (the `/logging` listing).
pub fn snapshot() -> Vec<(&'static str, Level)> {
    let l = levels().read().unwrap_or_else(|e| e.into_inner());
    l.by_component.iter().map(|(c, v)| (*c, *v)).collect()
}

/// The component an event belongs to: an explicit Envoy component as target, otherwise the
/// meshproxy module it comes from.
fn component_of(target: &str) -> &'static str {
    if let Some(c) = COMPONENTS.iter().find(|c| **c == target) {
        return c;
    }
    const BY_MODULE: &[(&str, &str)] = &[
        ("meshproxy::admin", "admin"),
        ("meshproxy::config", "config"),
        ("meshproxy::listener", "conn_handler"),
        ("meshproxy::http", "http"),
        ("meshproxy::router", "router"),
        ("meshproxy::upstream", "upstream"),
        ("meshproxy::tcp_proxy", "filter"),
        ("meshproxy::tls", "connection"),
        ("meshproxy::access_log", "file"),
    ];
    BY_MODULE
        .iter()
        .find(|(m, _)| target.starts_with(m))
        .map(|(_, c)| *c)
        .unwrap_or(if target.starts_with("meshproxy") {
            "main"
        } else {
            "misc"
        })
}

fn enabled(meta: &Metadata<'_>) -> bool {
    let component = component_of(meta.target());
    let l = levels().read().unwrap_or_else(|e| e.into_inner());
    let want = l
        .by_component
        .get(component)
        .copied()
        .unwrap_or(Level::Info);
    want != Level::Off && Level::of(meta.level()) >= want
}

/// The tracing layer that filters by component level and writes formatted lines.
pub struct EnvoyLogLayer {
    pattern: String,
    out: Mutex<Box<dyn Write + Send>>,
}

impl EnvoyLogLayer {
    /// A layer writing `pattern`-formatted lines to `out`.
    pub fn new(pattern: String, out: Box<dyn Write + Send>) -> Self {
        EnvoyLogLayer {
            pattern,
            out: Mutex::new(out),
        }
    }
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

fn thread_id() -> i64 {
    nix::unistd::gettid().as_raw() as i64
}

/// Renders a spdlog pattern: `%Y %m %d %H %M %S %T %e %f %F %z %t %l %L %n %g %s %# %v %_ %%`.
pub fn render(
    pattern: &str,
    level: Level,
    component: &str,
    file: &str,
    line: u32,
    message: &str,
) -> String {
    let now = std::time::SystemTime::now();
    let mut out = String::with_capacity(pattern.len() + message.len() + 32);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('e') => out.push_str(&crate::access_log::time::format(now, "%3f")),
            Some('f') => out.push_str(&crate::access_log::time::format(now, "%6f")),
            Some('F') => out.push_str(&crate::access_log::time::format(now, "%9f")),
            Some(t @ ('Y' | 'm' | 'd' | 'H' | 'M' | 'S' | 'T' | 'z')) => {
                out.push_str(&crate::access_log::time::format(now, &format!("%{t}")))
            }
            Some('t') => out.push_str(&thread_id().to_string()),
            Some('l') => out.push_str(level.name()),
            Some('L') => out.push_str(&level.name()[..1].to_ascii_uppercase()),
            Some('n') => out.push_str(component),
            Some('g') => out.push_str(file),
            Some('s') => out.push_str(file.rsplit('/').next().unwrap_or(file)),
            Some('#') => out.push_str(&line.to_string()),
            Some('v') => out.push_str(message),
            Some('j') => out.push_str(
                serde_json::Value::from(message)
                    .to_string()
                    .trim_matches('"'),
            ),
            Some('_') => out.push_str(&message.replace('\n', "\\n")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

impl<S: Subscriber> Layer<S> for EnvoyLogLayer {
    // Decided once per callsite (and again when `/logging` changes levels, which rebuilds
    // the interest cache): disabled events cost a cached check, not a string comparison.
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if enabled(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        use tracing::level_filters::LevelFilter;
        let l = levels().read().unwrap_or_else(|e| e.into_inner());
        Some(
            match l
                .by_component
                .values()
                .min()
                .copied()
                .unwrap_or(Level::Info)
            {
                Level::Trace => LevelFilter::TRACE,
                Level::Debug => LevelFilter::DEBUG,
                Level::Info => LevelFilter::INFO,
                Level::Warning => LevelFilter::WARN,
                Level::Error | Level::Critical => LevelFilter::ERROR,
                Level::Off => LevelFilter::OFF,
            },
        )
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        enabled(meta)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let message = format!("{}{}", v.message, v.fields);
        let mut line = render(
            &self.pattern,
            Level::of(meta.level()),
            component_of(meta.target()),
            meta.file().unwrap_or(""),
            meta.line().unwrap_or(0),
            &message,
        );
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// Installs the global subscriber. Levels come from `-l` then `--component-log-level`.
pub fn init(
    default: Level,
    components: Option<&str>,
    pattern: &str,
    path: Option<&std::path::Path>,
) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    set_all(default);
    if let Some(spec) = components {
        apply_component_levels(spec)?;
    }
    let out: Box<dyn Write + Send> = match path {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("--log-path {}: {e}", p.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let subscriber =
        tracing_subscriber::registry().with(EnvoyLogLayer::new(pattern.to_string(), out));
    tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_envoy_default_shape() {
        let line = render(
            DEFAULT_PATTERN,
            Level::Warning,
            "upstream",
            "proxy/src/x.rs",
            7,
            "hello",
        );
        let re = regex::Regex::new(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\]\[\d+\]\[warning\]\[upstream\] \[proxy/src/x.rs:7\] hello$").unwrap();
        assert!(re.is_match(&line), "{line}");
        let istio = render(
            "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t",
            Level::Info,
            "main",
            "f.rs",
            1,
            "m",
        );
        assert!(
            regex::Regex::new(
                r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\tinfo\tenvoy main f.rs:1\tm\tthread=\d+$"
            )
            .unwrap()
            .is_match(&istio),
            "{istio}"
        );
    }

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn level_changes_take_effect_on_cached_callsites() {
        use tracing_subscriber::layer::SubscriberExt;
        let buf = Shared::default();
        let subscriber = tracing_subscriber::registry()
            .with(EnvoyLogLayer::new("%n:%v".into(), Box::new(buf.clone())));
        tracing::subscriber::with_default(subscriber, || {
            set_component("tap", Level::Info);
            let emit = || tracing::debug!(target: "tap", "probe");
            emit();
            assert!(!String::from_utf8_lossy(&buf.0.lock().unwrap()).contains("probe"));
            set_component("tap", Level::Debug);
            emit();
            assert!(String::from_utf8_lossy(&buf.0.lock().unwrap()).contains("tap:probe"));
            set_component("tap", Level::Info);
            buf.0.lock().unwrap().clear();
            emit();
            assert!(buf.0.lock().unwrap().is_empty());
        });
    }

    #[test]
    fn component_mapping_and_levels() {
        assert_eq!(component_of("upstream"), "upstream");
        assert_eq!(component_of("meshproxy::upstream::pool"), "upstream");
        assert_eq!(component_of("hyper::proto"), "misc");
        assert!(apply_component_levels("misc:error,upstream:debug").is_ok());
        assert!(apply_component_levels("nope:error").is_err());
        assert!(apply_component_levels("misc:loud").is_err());
    }
}
