//! Envoy's command line, with Envoy's meanings and defaults. Unknown flags are errors that
//! print usage (clap's behaviour), as Envoy's TCLAP parser does.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Load the config and serve.
    Serve,
    /// Load and translate everything, report, and exit.
    Validate,
    /// Initialise everything (bind listeners), then exit.
    #[value(name = "init_only")]
    InitOnly,
}

/// `--drain-strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DrainStrategy {
    /// Close connections progressively over the drain time.
    Gradual,
    /// Ask every connection to close at once when draining starts.
    Immediate,
}

/// `--local-address-ip-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// meshproxy's command line (Envoy-compatible).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "meshproxy",
    disable_version_flag = true,
    about = "A drop-in data-plane proxy for Envoy v3 bootstraps.\nWith no arguments, runs an embedded demo: a listener on 127.0.0.1:10000 routed to a built-in upstream, admin on 127.0.0.1:15000."
)]
pub struct Options {
    /// Path to the v3 bootstrap (JSON or YAML).
    #[arg(short = 'c', long = "config-path")]
    pub config_path: Option<PathBuf>,
    /// Bootstrap YAML merged over the file (protobuf MergeFrom semantics).
    #[arg(long = "config-yaml")]
    pub config_yaml: Option<String>,
    /// serve, validate or init_only.
    #[arg(long, value_enum, default_value = "serve")]
    pub mode: Mode,
    /// Worker threads (default: available cores).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Default log level: trace, debug, info, warning, warn, error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
    /// Per-component levels, `component:level,component:level`.
    #[arg(long = "component-log-level")]
    pub component_log_level: Option<String>,
    /// Application log format (spdlog pattern flags).
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    /// Application log file (default stderr).
    #[arg(long = "log-path")]
    pub log_path: Option<PathBuf>,
    /// Seconds connections get to drain.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    pub drain_time_s: u64,
    /// Seconds before a hot-restart parent is shut down.
    #[arg(long = "parent-shutdown-time-s", default_value_t = 900)]
    pub parent_shutdown_time_s: u64,
    /// gradual or immediate.
    #[arg(long = "drain-strategy", value_enum, default_value = "gradual")]
    pub drain_strategy: DrainStrategy,
    /// Hot-restart epoch (0 for the first process).
    #[arg(long = "restart-epoch", default_value_t = 0)]
    pub restart_epoch: u32,
    /// Hot-restart shared-memory base id.
    #[arg(long = "base-id", default_value_t = 0)]
    pub base_id: u32,
    /// Disable hot restart.
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,
    /// IP version of the local address (v4 or v6).
    #[arg(long = "local-address-ip-version", value_enum, default_value = "v4")]
    pub local_address_ip_version: IpVersion,
    /// Access-log flush interval in milliseconds.
    #[arg(long = "file-flush-interval-msec", default_value_t = 10000)]
    pub file_flush_interval_msec: u64,
    /// Ignore unknown fields in the static bootstrap.
    #[arg(long = "allow-unknown-static-fields")]
    pub allow_unknown_static_fields: bool,
    /// Reject unknown fields in dynamic resources (the default already rejects them).
    #[arg(long = "reject-unknown-dynamic-fields")]
    pub reject_unknown_dynamic_fields: bool,
    /// Overrides node.cluster.
    #[arg(long = "service-cluster")]
    pub service_cluster: Option<String>,
    /// Overrides node.id.
    #[arg(long = "service-node")]
    pub service_node: Option<String>,
    /// Overrides node.locality.zone.
    #[arg(long = "service-zone")]
    pub service_zone: Option<String>,
    /// Print the version and exit.
    #[arg(long = "version")]
    pub version: bool,
}

impl Options {
    /// Whether no configuration was given at all (run the embedded demo).
    pub fn wants_embedded_default(&self) -> bool {
        self.config_path.is_none() && self.config_yaml.is_none()
    }
}

/// The Envoy API level this build follows, shown by `--version` and `/server_info`.
pub const ENVOY_COMPAT: &str = "1.40.0";

/// The `--version` line, shaped like Envoy's so tools that parse it keep working.
pub fn version_line() -> String {
    format!(
        "meshproxy  version: {}/{ENVOY_COMPAT}/Clean/RELEASE/rustls",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pilot_agent_command_line_parses() {
        let o = Options::try_parse_from([
            "meshproxy",
            "-c",
            "/etc/istio/proxy/envoy-rev.json",
            "--drain-time-s",
            "45",
            "--drain-strategy",
            "immediate",
            "--local-address-ip-version",
            "v4",
            "--file-flush-interval-msec",
            "1000",
            "--disable-hot-restart",
            "--allow-unknown-static-fields",
            "-l",
            "warning",
            "--component-log-level",
            "misc:error",
            "--concurrency",
            "2",
        ])
        .unwrap();
        assert_eq!(o.drain_time_s, 45);
        assert_eq!(o.drain_strategy, DrainStrategy::Immediate);
        assert_eq!(o.concurrency, Some(2));
        assert!(o.allow_unknown_static_fields && o.disable_hot_restart);
        assert_eq!(o.component_log_level.as_deref(), Some("misc:error"));
    }

    #[test]
    fn unknown_flag_is_an_error() {
        assert!(Options::try_parse_from(["meshproxy", "--no-such-flag"]).is_err());
        assert!(Options::try_parse_from(["meshproxy", "--mode", "bogus"]).is_err());
    }
}
