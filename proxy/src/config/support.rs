//! The one registry of what meshproxy supports: for each Envoy message, the fields it
//! honours and the fields it accepts without effect (with the reason ignoring them cannot
//! change how traffic is handled). Any other field that is set, and any `Any` whose type is
//! not listed, is rejected by [`super::check`] with the field's path. `--mode validate`, the
//! (coming) xDS NACKs and the README conformance table all read this table.

/// How meshproxy treats a field of a supported message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Implemented with Envoy's documented semantics.
    Honoured,
    /// Accepted and parsed, with no effect yet; the text says why this cannot change traffic.
    NoEffect(&'static str),
}

/// A supported message and its fields.
#[derive(Debug)]
pub struct MessageSupport {
    /// Full protobuf name, e.g. `envoy.config.cluster.v3.Cluster`.
    pub name: &'static str,
    /// Fields honoured or accepted; every other field is rejected when set.
    pub fields: &'static [(&'static str, Support)],
}

use std::collections::HashMap;
use Support::{Honoured as H, NoEffect as N};

macro_rules! msg {
    ($name:literal, [$($field:literal $(= $why:expr)?),* $(,)?]) => {
        MessageSupport { name: $name, fields: &[$(($field, msg!(@s $($why)?))),*] }
    };
    (@s) => { H };
    (@s $why:expr) => { N($why) };
}

/// Messages whose every field is plain data consumed where they appear (well-known types).
pub const OPAQUE: &[&str] = &[
    "google.protobuf.Duration",
    "google.protobuf.Timestamp",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Empty",
    "google.protobuf.BoolValue",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.DoubleValue",
    "google.protobuf.StringValue",
    "envoy.type.v3.Percent",
    "envoy.type.v3.FractionalPercent",
    "envoy.config.core.v3.Locality",
    "envoy.config.core.v3.Metadata",
    "envoy.config.core.v3.RuntimeFeatureFlag",
];

const STATS_ONLY: &str = "only shapes stat names and tags, never traffic";
const DATADOG: &str = "the Datadog tracer is not implemented: a connection manager that would trace with it is refused";
const SDS_PENDING: &str = "used by the xDS client (issue 5); static parts serve meanwhile";

/// The table. Order is by config area; lookups go through [`find`].
pub const MESSAGES: &[MessageSupport] = &[
    // --- bootstrap ---------------------------------------------------------------------
    msg!("envoy.config.bootstrap.v3.Bootstrap", [
        "node", "static_resources", "admin", "dynamic_resources", "overload_manager",
        "application_log_config",
        "stats_config",
        "stats_flush_interval" = "no stats sinks flush yet; stat values are unaffected",
        "stats_sinks" = "stats sinks only export metrics, they never touch traffic",
        "tracing",
        "layered_runtime" = "runtime feature flags are not consulted; fields that would read runtime are rejected",
        "bootstrap_extensions" = "the extensions listed are inert until a listener uses them",
        "cluster_manager" = "cluster manager options accepted here only tune logging and laziness",
        "deferred_stat_options" = "meshproxy creates every stat lazily already",
        "stats_eviction_interval" = STATS_ONLY,
        "stats_server_version_override" = STATS_ONLY,
    ]),
    msg!("envoy.config.bootstrap.v3.Bootstrap.ApplicationLogConfig", ["log_format"]),
    msg!("envoy.config.bootstrap.v3.Bootstrap.ApplicationLogConfig.LogFormat", ["text_format"]),
    msg!("envoy.config.bootstrap.v3.Bootstrap.StaticResources", ["listeners", "clusters", "secrets"]),
    msg!("envoy.config.bootstrap.v3.Bootstrap.DynamicResources", ["lds_config", "cds_config", "ads_config"]),
    msg!("envoy.config.bootstrap.v3.Bootstrap.DeferredStatOptions", ["enable_deferred_creation_stats"]),
    msg!("envoy.config.bootstrap.v3.Admin", [
        "address",
        "access_log" = "admin access logs record admin requests only",
        "access_log_path" = "admin access logs record admin requests only",
        "profile_path" = "CPU profiling is not offered; no traffic effect",
    ]),
    msg!("envoy.config.bootstrap.v3.ClusterManager", [
        "outlier_detection" = "only names the ejection event log file; ejections show in stats and /clusters",
        "enable_deferred_cluster_creation" = "clusters are cheap and created eagerly",
        "load_stats_config" = "load reporting (LRS) only reports, never routes",
        "local_cluster_name",
    ]),
    msg!("envoy.config.bootstrap.v3.ClusterManager.OutlierDetection", ["event_log_path"]),
    msg!("envoy.config.bootstrap.v3.LayeredRuntime", ["layers"]),
    msg!("envoy.config.bootstrap.v3.RuntimeLayer", ["name", "static_layer", "admin_layer"]),
    msg!("envoy.config.bootstrap.v3.RuntimeLayer.AdminLayer", []),
    msg!("envoy.config.overload.v3.OverloadManager", ["resource_monitors", "refresh_interval"]),
    msg!("envoy.config.overload.v3.ResourceMonitor", ["name", "typed_config"]),
    msg!("envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig", [
        "max_active_downstream_connections",
    ]),
    msg!("envoy.extensions.bootstrap.internal_listener.v3.InternalListener", ["buffer_size_kb"]),
    msg!("envoy.config.metrics.v3.StatsConfig", [
        "stats_tags", "use_all_default_tags", "stats_matcher", "histogram_bucket_settings",
    ]),
    msg!("envoy.config.metrics.v3.TagSpecifier", ["tag_name", "regex", "fixed_value"]),
    msg!("envoy.config.metrics.v3.StatsMatcher", ["reject_all", "exclusion_list", "inclusion_list"]),
    msg!("envoy.config.metrics.v3.HistogramBucketSettings", ["match", "buckets",
        "bins" = "sizes the circllhist of thread-local histograms; buckets decide what is shown",
    ]),
    msg!("envoy.type.matcher.v3.ListStringMatcher", ["patterns"]),
    msg!("envoy.config.metrics.v3.StatsSink", ["name", "typed_config"]),
    msg!("envoy.config.metrics.v3.StatsdSink", ["address", "tcp_cluster_name", "prefix"]),
    msg!("envoy.config.metrics.v3.MetricsServiceConfig", [
        "grpc_service", "transport_api_version", "report_counters_as_deltas", "emit_tags_as_labels",
    ]),
    // --- core ----------------------------------------------------------------------------
    msg!("envoy.config.core.v3.Node", [
        "id", "cluster", "metadata", "locality",
        "user_agent_name" = "reported to the control plane only",
        "user_agent_version" = "reported to the control plane only",
    ]),
    msg!("envoy.config.core.v3.Address", ["socket_address", "pipe"]),
    msg!("envoy.config.core.v3.SocketAddress", ["protocol", "address", "port_value", "ipv4_compat"]),
    msg!("envoy.config.core.v3.Pipe", ["path", "mode"]),
    msg!("envoy.config.core.v3.DataSource", ["filename", "inline_bytes", "inline_string"]),
    msg!("envoy.config.core.v3.HeaderValueOption", ["header", "append", "append_action", "keep_empty_value"]),
    msg!("envoy.config.core.v3.HeaderValue", ["key", "value"]),
    msg!("envoy.config.core.v3.TransportSocket", ["name", "typed_config"]),
    msg!("envoy.config.core.v3.TypedExtensionConfig", ["name", "typed_config"]),
    msg!("envoy.config.core.v3.RuntimeFractionalPercent", ["default_value", "runtime_key"]),
    msg!("envoy.config.core.v3.ConfigSource", [
        "ads", "api_config_source", "path_config_source", "initial_fetch_timeout", "resource_api_version",
    ]),
    msg!("envoy.config.core.v3.AggregatedConfigSource", []),
    msg!("envoy.config.core.v3.PathConfigSource", ["path", "watched_directory"]),
    msg!("envoy.config.core.v3.WatchedDirectory", ["path"]),
    msg!("envoy.config.core.v3.ApiConfigSource", [
        "api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only",
        "cluster_names", "refresh_delay", "request_timeout",
    ]),
    msg!("envoy.config.core.v3.GrpcService", ["envoy_grpc", "google_grpc", "timeout", "initial_metadata"]),
    msg!("envoy.config.core.v3.GrpcService.GoogleGrpc", ["target_uri", "channel_credentials", "stat_prefix"]),
    msg!("envoy.config.core.v3.GrpcService.GoogleGrpc.ChannelCredentials", ["ssl_credentials", "local_credentials", "google_default"]),
    msg!("envoy.config.core.v3.GrpcService.GoogleGrpc.SslCredentials", ["root_certs", "private_key", "cert_chain"]),
    msg!("envoy.config.core.v3.GrpcService.GoogleGrpc.GoogleLocalCredentials", []),
    msg!("envoy.config.core.v3.GrpcService.EnvoyGrpc", ["cluster_name", "authority", "max_receive_message_length"]),
    msg!("envoy.config.core.v3.Http1ProtocolOptions", ["accept_http_10", "default_host_for_http_10"]),
    msg!("envoy.config.core.v3.Http2ProtocolOptions", [
        "max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size",
    ]),
    msg!("envoy.config.core.v3.HttpProtocolOptions", ["idle_timeout", "max_requests_per_connection", "max_stream_duration"]),
    msg!("envoy.config.core.v3.UpstreamHttpProtocolOptions", []),
    msg!("envoy.config.core.v3.TcpKeepalive", ["keepalive_probes", "keepalive_time", "keepalive_interval"]),
    msg!("envoy.config.core.v3.SubstitutionFormatString", [
        "text_format", "json_format", "text_format_source", "omit_empty_values", "content_type",
        "json_format_options", "formatters",
    ]),
    msg!("envoy.config.core.v3.JsonFormatOptions", [
        "sort_properties" = "deprecated in Envoy 1.40, where JSON keys always come out sorted, as here",
    ]),
    // --- listeners ---------------------------------------------------------------------
    msg!("envoy.config.listener.v3.Listener", [
        "name", "address", "filter_chains", "default_filter_chain", "listener_filters",
        "listener_filters_timeout", "continue_on_listener_filters_timeout", "use_original_dst",
        "bind_to_port", "per_connection_buffer_limit_bytes", "stat_prefix",
        "ignore_global_conn_limit", "bypass_overload_manager", "traffic_direction", "metadata",
        "transparent", "deprecated_v1", "additional_addresses", "access_log",
    ]),
    msg!("envoy.config.listener.v3.AdditionalAddress", ["address"]),
    msg!("envoy.config.listener.v3.Listener.DeprecatedV1", ["bind_to_port"]),
    msg!("envoy.config.listener.v3.FilterChain", [
        "filter_chain_match", "filters", "transport_socket", "name", "metadata",
        "transport_socket_connect_timeout",
    ]),
    msg!("envoy.config.listener.v3.FilterChainMatch", [
        "destination_port", "prefix_ranges", "direct_source_prefix_ranges", "source_type",
        "source_prefix_ranges", "source_ports", "server_names", "transport_protocol",
        "application_protocols",
    ]),
    msg!("envoy.config.core.v3.CidrRange", ["address_prefix", "prefix_len"]),
    msg!("envoy.config.listener.v3.Filter", ["name", "typed_config", "config_discovery"]),
    msg!("envoy.config.listener.v3.ListenerFilter", ["name", "typed_config", "filter_disabled", "config_discovery"]),
    msg!("envoy.config.listener.v3.ListenerFilterChainMatchPredicate", [
        "or_match", "and_match", "not_match", "any_match", "destination_port_range",
    ]),
    msg!("envoy.config.listener.v3.ListenerFilterChainMatchPredicate.MatchSet", ["rules"]),
    msg!("envoy.type.v3.Int32Range", ["start", "end"]),
    msg!("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector", []),
    msg!("envoy.extensions.filters.listener.http_inspector.v3.HttpInspector", []),
    msg!("envoy.extensions.filters.listener.original_dst.v3.OriginalDst", []),
    // `bind_port` is not implemented in Envoy either: rejected when set.
    msg!("envoy.extensions.filters.listener.original_src.v3.OriginalSrc", ["mark"]),
    msg!("envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol", ["allow_requests_without_proxy_protocol"]),
    // --- network filters -----------------------------------------------------------------
    msg!("envoy.extensions.filters.network.sni_cluster.v3.SniCluster", []),
    msg!("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", [
        "stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "max_connect_attempts",
        "access_log",
    ]),
    msg!("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster", ["clusters"]),
    msg!("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight", ["name", "weight"]),
    msg!("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", [
        "codec_type", "stat_prefix", "route_config", "http_filters", "server_name",
        "server_header_transformation", "use_remote_address", "xff_num_trusted_hops",
        "skip_xff_append", "generate_request_id", "preserve_external_request_id",
        "always_set_request_id_in_response", "max_request_headers_kb", "stream_idle_timeout",
        "request_timeout", "request_headers_timeout", "normalize_path", "merge_slashes",
        "path_with_escaped_slashes_action", "request_id_extension", "forward_client_cert_details", "set_current_client_cert_details",
        "upgrade_configs", "access_log", "common_http_protocol_options", "http_protocol_options",
        "http2_protocol_options", "via", "strip_matching_host_port", "strip_any_host_port",
        "rds", "tracing",
    ]),
    msg!("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing", [
        "client_sampling", "random_sampling", "overall_sampling", "max_path_tag_length",
        "custom_tags", "provider",
    ]),
    msg!("envoy.type.tracing.v3.CustomTag", ["tag", "literal", "environment", "request_header", "metadata"]),
    msg!("envoy.type.tracing.v3.CustomTag.Literal", ["value"]),
    msg!("envoy.type.tracing.v3.CustomTag.Environment", ["name", "default_value"]),
    msg!("envoy.type.tracing.v3.CustomTag.Header", ["name", "default_value"]),
    msg!("envoy.type.tracing.v3.CustomTag.Metadata", ["kind", "metadata_key", "default_value"]),
    msg!("envoy.type.metadata.v3.MetadataKind", ["request", "route", "cluster", "host"]),
    msg!("envoy.type.metadata.v3.MetadataKind.Request", []),
    msg!("envoy.type.metadata.v3.MetadataKind.Route", []),
    msg!("envoy.type.metadata.v3.MetadataKind.Cluster", []),
    msg!("envoy.type.metadata.v3.MetadataKind.Host", []),
    msg!("envoy.type.metadata.v3.MetadataKey", ["key", "path"]),
    msg!("envoy.type.metadata.v3.MetadataKey.PathSegment", ["key"]),
    msg!("envoy.config.trace.v3.Tracing", ["http"]),
    msg!("envoy.config.trace.v3.Tracing.Http", ["name", "typed_config"]),
    msg!("envoy.config.trace.v3.DatadogConfig", [
        "collector_cluster" = DATADOG, "service_name" = DATADOG, "collector_hostname" = DATADOG,
    ]),
    msg!("envoy.config.trace.v3.ZipkinConfig", [
        "collector_cluster", "collector_endpoint", "trace_id_128bit", "shared_span_context",
        "collector_endpoint_version", "collector_hostname",
    ]),
    msg!("envoy.extensions.filters.network.http_connection_manager.v3.Rds", ["config_source", "route_config_name"]),
    msg!("envoy.extensions.filters.network.http_connection_manager.v3.RequestIDExtension", ["typed_config"]),
    msg!("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.SetCurrentClientCertDetails", [
        "subject", "cert", "chain", "dns", "uri",
    ]),
    msg!("envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", [
        "pack_trace_reason", "use_request_id_for_trace_sampling",
    ]),
    msg!("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig", ["upgrade_type", "enabled"]),
    msg!("envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", ["name", "typed_config", "is_optional", "disabled", "config_discovery"]),
    msg!("envoy.config.core.v3.ExtensionConfigSource", [
        "config_source", "default_config", "apply_default_config_without_warming", "type_urls",
    ]),
    // --- http filters --------------------------------------------------------------------
    msg!("envoy.extensions.filters.http.router.v3.Router", ["suppress_envoy_headers", "dynamic_stats"]),
    msg!("envoy.extensions.filters.http.fault.v3.HTTPFault", [
        "delay", "abort", "upstream_cluster", "headers", "downstream_nodes", "max_active_faults",
        "response_rate_limit",
    ]),
    msg!("envoy.extensions.filters.common.fault.v3.FaultRateLimit", ["fixed_limit", "header_limit", "percentage"]),
    msg!("envoy.extensions.filters.common.fault.v3.FaultRateLimit.FixedLimit", ["limit_kbps"]),
    msg!("envoy.extensions.filters.common.fault.v3.FaultRateLimit.HeaderLimit", []),
    msg!("envoy.extensions.filters.common.fault.v3.FaultDelay", ["fixed_delay", "header_delay", "percentage"]),
    msg!("envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay", []),
    msg!("envoy.extensions.filters.http.fault.v3.FaultAbort", ["http_status", "grpc_status", "header_abort", "percentage", "response_body"]),
    msg!("envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort", []),
    msg!("envoy.extensions.filters.http.cors.v3.Cors", []),
    msg!("envoy.extensions.filters.http.grpc_stats.v3.FilterConfig", [
        "emit_filter_state", "stats_for_all_methods", "individual_method_stats_allowlist",
        "enable_upstream_stats",
        "replace_dots_in_grpc_service_name" = "only shapes per-method stat names, which are refused",
    ]),
    // --- ext_authz (gRPC; Istio's CUSTOM AuthorizationPolicies) ------------------------
    msg!("envoy.extensions.filters.http.ext_authz.v3.ExtAuthz", [
        "grpc_service", "transport_api_version", "failure_mode_allow",
        "failure_mode_allow_header_add", "with_request_body", "status_on_error",
        "filter_enabled_metadata", "stat_prefix",
    ]),
    msg!("envoy.extensions.filters.http.ext_authz.v3.BufferSettings", [
        "max_request_bytes", "allow_partial_message", "pack_as_bytes",
    ]),
    msg!("envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", ["disabled", "check_settings"]),
    msg!("envoy.extensions.filters.http.ext_authz.v3.CheckSettings", [
        "context_extensions", "disable_request_body_buffering",
    ]),
    msg!("envoy.type.v3.HttpStatus", ["code"]),
    // --- RBAC (HTTP and network filters, Istio's AuthorizationPolicies) --------------
    msg!("envoy.extensions.filters.http.rbac.v3.RBAC", [
        "rules", "shadow_rules", "rules_stat_prefix", "shadow_rules_stat_prefix",
    ]),
    msg!("envoy.extensions.filters.http.rbac.v3.RBACPerRoute", ["rbac"]),
    msg!("envoy.extensions.filters.network.rbac.v3.RBAC", [
        "rules", "shadow_rules", "shadow_rules_stat_prefix", "stat_prefix", "enforcement_type",
    ]),
    msg!("envoy.config.rbac.v3.RBAC", ["action", "policies"]),
    msg!("envoy.config.rbac.v3.Policy", ["permissions", "principals"]),
    msg!("envoy.config.rbac.v3.Permission", [
        "and_rules", "or_rules", "any", "header", "url_path", "destination_ip", "destination_port",
        "destination_port_range", "metadata", "not_rule", "requested_server_name", "uri_template",
    ]),
    msg!("envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig", ["path_template"]),
    msg!("envoy.config.rbac.v3.Permission.Set", ["rules"]),
    msg!("envoy.config.rbac.v3.Principal", [
        "and_ids", "or_ids", "any", "authenticated", "source_ip", "direct_remote_ip", "remote_ip",
        "header", "url_path", "metadata", "filter_state", "not_id",
    ]),
    msg!("envoy.config.rbac.v3.Principal.Set", ["ids"]),
    msg!("envoy.config.rbac.v3.Principal.Authenticated", ["principal_name"]),
    msg!("envoy.type.matcher.v3.PathMatcher", ["path"]),
    msg!("envoy.type.matcher.v3.FilterStateMatcher", ["key", "string_match"]),
    msg!("envoy.type.matcher.v3.MetadataMatcher", ["filter", "path", "value", "invert"]),
    msg!("envoy.type.matcher.v3.MetadataMatcher.PathSegment", ["key"]),
    msg!("envoy.type.matcher.v3.ValueMatcher", [
        "null_match", "double_match", "string_match", "bool_match", "present_match", "list_match",
        "or_match",
    ]),
    msg!("envoy.type.matcher.v3.ValueMatcher.NullMatch", []),
    msg!("envoy.type.matcher.v3.ListMatcher", ["one_of"]),
    msg!("envoy.type.matcher.v3.OrMatcher", ["value_matchers"]),
    msg!("envoy.type.matcher.v3.DoubleMatcher", ["range", "exact"]),
    msg!("envoy.type.v3.DoubleRange", ["start", "end"]),
    msg!("envoy.extensions.filters.http.compressor.v3.Compressor", [
        "compressor_library", "response_direction_config", "request_direction_config",
    ]),
    msg!("envoy.extensions.filters.http.compressor.v3.Compressor.ResponseDirectionConfig", [
        "common_config", "disable_on_etag_header", "remove_accept_encoding_header",
    ]),
    msg!("envoy.extensions.filters.http.compressor.v3.Compressor.RequestDirectionConfig", ["common_config"]),
    msg!("envoy.extensions.filters.http.compressor.v3.Compressor.CommonDirectionConfig", [
        "enabled", "min_content_length", "content_type",
    ]),
    msg!("envoy.extensions.compression.gzip.compressor.v3.Gzip", ["compression_level", "window_bits", "memory_level", "chunk_size"]),
    msg!("envoy.extensions.compression.brotli.compressor.v3.Brotli", ["quality", "window_bits", "chunk_size"]),
    msg!("envoy.extensions.compression.zstd.compressor.v3.Zstd", ["compression_level", "chunk_size"]),
    // --- Istio's HTTP filters ------------------------------------------------------------
    msg!("stats.PluginConfig", [
        "disable_host_header_fallback", "reporter", "metrics", "definitions",
        "tcp_reporting_duration",
        "rescoping_duration" = "scope rotation only bounds the memory of stale label sets; reported values are unchanged",
        "scope_grace_period_duration" = "scope rotation only bounds the memory of stale label sets; reported values are unchanged",
    ]),
    msg!("stats.MetricConfig", [
        "dimensions", "name", "tags_to_remove", "drop",
        "match" = "Istio's own filter does not implement it either",
    ]),
    msg!("stats.MetricDefinition", ["name", "value", "type"]),
    msg!("io.istio.http.peer_metadata.Config", [
        "downstream_discovery", "upstream_discovery", "downstream_propagation",
        "upstream_propagation", "additional_labels",
        "shared_with_upstream" = "only exposes the peer to upstream internal listeners, which are not supported",
    ]),
    msg!("io.istio.http.peer_metadata.Config.DiscoveryMethod", ["baggage", "workload_discovery", "istio_headers"]),
    msg!("io.istio.http.peer_metadata.Config.PropagationMethod", ["istio_headers"]),
    msg!("io.istio.http.peer_metadata.Config.IstioHeaders", ["skip_external_clusters"]),
    msg!("io.istio.http.peer_metadata.Config.WorkloadDiscovery", []),
    msg!("io.istio.http.peer_metadata.Config.Baggage", []),
    msg!("istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig", ["alpn_override"]),
    // Istio's null-VM plugins (envoy.wasm.metadata_exchange, envoy.wasm.stats) only;
    // any other runtime is refused at `vm_config.runtime`.
    msg!("envoy.extensions.filters.http.wasm.v3.Wasm", ["config"]),
    msg!("envoy.extensions.filters.network.wasm.v3.Wasm", ["config"]),
    msg!("envoy.extensions.wasm.v3.PluginConfig", [
        "vm_config", "configuration",
        "name" = "only names the plugin in logs and stats",
        "root_id" = "each null-VM plugin has one root context; the listener direction decides the rest",
        "fail_open" = "the built-in plugins cannot fail to load",
        "failure_policy" = "the built-in plugins cannot fail to load",
    ]),
    msg!("envoy.extensions.wasm.v3.VmConfig", [
        "runtime", "code",
        "vm_id" = "only groups plugins sharing a VM; the built-in plugins need none",
        "allow_precompiled" = "there is no module to precompile",
    ]),
    msg!("envoy.config.core.v3.AsyncDataSource", ["local"]),
    msg!("io.istio.network.authn.Config", []),
    msg!("envoy.tcp.metadataexchange.config.MetadataExchange", [
        "protocol", "additional_labels",
        "enable_discovery" = "it consults the istio.workload bootstrap extension, which is rejected, so it can find nothing",
    ]),
    msg!("istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig.AlpnOverride", ["upstream_protocol", "alpn_override"]),
    // --- routes --------------------------------------------------------------------------
    msg!("envoy.config.route.v3.RouteConfiguration", [
        "name", "virtual_hosts", "response_headers_to_add", "response_headers_to_remove",
        "request_headers_to_add", "request_headers_to_remove", "ignore_port_in_host_matching",
        "validate_clusters", "most_specific_header_mutations_wins", "typed_per_filter_config",
        "max_direct_response_body_size_bytes",
    ]),
    msg!("envoy.config.route.v3.FilterConfig", ["config", "is_optional", "disabled"]),
    msg!("envoy.config.route.v3.VirtualHost", [
        "name", "domains", "routes", "require_tls", "request_headers_to_add",
        "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove",
        "include_request_attempt_count", "include_attempt_count_in_response", "retry_policy",
        "typed_per_filter_config", "hedge_policy",
    ]),
    msg!("envoy.config.route.v3.Route", [
        "name", "match", "route", "redirect", "direct_response", "request_headers_to_add",
        "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove",
        "decorator", "metadata", "typed_per_filter_config",
    ]),
    msg!("envoy.config.route.v3.Decorator", ["operation", "propagate"]),
    msg!("envoy.config.route.v3.RouteMatch", [
        "prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive", "headers",
        "query_parameters", "runtime_fraction", "grpc",
    ]),
    msg!("envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions", []),
    msg!("envoy.config.route.v3.HeaderMatcher", [
        "name", "exact_match", "safe_regex_match", "range_match", "present_match", "prefix_match",
        "suffix_match", "contains_match", "string_match", "invert_match", "treat_missing_header_as_empty",
    ]),
    msg!("envoy.type.v3.Int64Range", ["start", "end"]),
    msg!("envoy.config.route.v3.QueryParameterMatcher", ["name", "string_match", "present_match"]),
    msg!("envoy.type.matcher.v3.StringMatcher", ["exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"]),
    msg!("envoy.type.matcher.v3.RegexMatcher", ["google_re2", "regex"]),
    msg!("envoy.type.matcher.v3.RegexMatcher.GoogleRE2", []),
    msg!("envoy.type.matcher.v3.RegexMatchAndSubstitute", ["pattern", "substitution"]),
    msg!("envoy.config.route.v3.RouteAction", [
        "cluster", "cluster_header", "weighted_clusters", "prefix_rewrite", "regex_rewrite",
        "host_rewrite_literal", "auto_host_rewrite", "timeout", "idle_timeout", "hash_policy",
        "upgrade_configs", "max_stream_duration", "retry_policy", "request_mirror_policies",
        "hedge_policy", "max_grpc_timeout", "grpc_timeout_offset", "cluster_not_found_response_code",
    ]),
    msg!("envoy.config.route.v3.HedgePolicy", ["initial_requests", "additional_request_chance", "hedge_on_per_try_timeout"]),
    msg!("envoy.config.route.v3.RouteAction.RequestMirrorPolicy", [
        "cluster", "cluster_header", "runtime_fraction", "disable_shadow_host_suffix_append",
        "host_rewrite_literal",
        "trace_sampled" = "meshproxy starts no span for a mirror copy (it carries the original request's B3 headers), so there is no decision of its own to set",
    ]),
    msg!("envoy.config.route.v3.RetryPolicy", [
        "retry_on", "num_retries", "per_try_timeout", "retry_host_predicate",
        "host_selection_retry_max_attempts", "retriable_status_codes", "retry_back_off",
        "retriable_headers", "retriable_request_headers", "rate_limited_retry_back_off", "retry_priority",
        "per_try_idle_timeout",
    ]),
    msg!("envoy.config.route.v3.RetryPolicy.RetryHostPredicate", ["name", "typed_config"]),
    msg!("envoy.config.route.v3.RetryPolicy.RetryBackOff", ["base_interval", "max_interval"]),
    msg!("envoy.config.route.v3.RetryPolicy.RateLimitedRetryBackOff", ["reset_headers", "max_interval"]),
    msg!("envoy.config.route.v3.RetryPolicy.ResetHeader", ["name", "format"]),
    msg!("envoy.config.route.v3.RetryPolicy.RetryPriority", ["name", "typed_config"]),
    msg!("envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig", ["update_frequency"]),
    msg!("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate", []),
    msg!("envoy.config.route.v3.RouteAction.UpgradeConfig", ["upgrade_type", "enabled"]),
    msg!("envoy.config.route.v3.RouteAction.MaxStreamDuration", ["max_stream_duration", "grpc_timeout_header_max", "grpc_timeout_header_offset"]),
    msg!("envoy.config.route.v3.RouteAction.HashPolicy", [
        "header", "cookie", "connection_properties", "query_parameter", "filter_state", "terminal",
    ]),
    msg!("envoy.config.route.v3.RouteAction.HashPolicy.Header", ["header_name"]),
    msg!("envoy.config.route.v3.RouteAction.HashPolicy.Cookie", ["name", "ttl", "path"]),
    msg!("envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties", ["source_ip"]),
    msg!("envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter", ["name"]),
    msg!("envoy.config.route.v3.WeightedCluster", ["clusters", "total_weight", "runtime_key_prefix"]),
    msg!("envoy.config.route.v3.WeightedCluster.ClusterWeight", [
        "name", "weight", "request_headers_to_add", "request_headers_to_remove",
        "response_headers_to_add", "response_headers_to_remove",
    ]),
    msg!("envoy.config.route.v3.RedirectAction", [
        "https_redirect", "scheme_redirect", "host_redirect", "port_redirect", "path_redirect",
        "prefix_rewrite", "regex_rewrite", "response_code", "strip_query",
    ]),
    msg!("envoy.config.route.v3.DirectResponseAction", ["status", "body"]),
    // --- clusters ------------------------------------------------------------------------
    msg!("envoy.config.cluster.v3.Cluster", [
        "name", "alt_stat_name", "type", "connect_timeout", "lb_policy", "load_assignment",
        "circuit_breakers", "dns_lookup_family", "dns_refresh_rate", "respect_dns_ttl",
        "transport_socket", "typed_extension_protocol_options", "upstream_connection_options",
        "max_requests_per_connection", "per_connection_buffer_limit_bytes", "ring_hash_lb_config",
        "maglev_lb_config", "least_request_lb_config", "round_robin_lb_config", "common_lb_config", "metadata",
        "cleanup_interval", "upstream_bind_config", "eds_cluster_config", "outlier_detection",
        "health_checks", "transport_socket_matches", "filters", "http2_protocol_options",
        "protocol_selection", "typed_dns_resolver_config",
    ]),
    msg!("envoy.config.cluster.v3.Filter", ["name", "typed_config"]),
    msg!("envoy.config.cluster.v3.Cluster.TransportSocketMatch", ["name", "match", "transport_socket"]),
    msg!("envoy.config.core.v3.HealthCheck", [
        "timeout", "interval", "initial_jitter", "interval_jitter", "interval_jitter_percent",
        "unhealthy_threshold", "healthy_threshold", "reuse_connection", "no_traffic_interval",
        "no_traffic_healthy_interval", "unhealthy_interval", "unhealthy_edge_interval",
        "healthy_edge_interval", "http_health_check", "tcp_health_check", "grpc_health_check",
        "always_log_health_check_failures" = "only affects the health event log, which is not written",
        "always_log_health_check_success" = "only affects the health event log, which is not written",
    ]),
    msg!("envoy.config.core.v3.HealthCheck.HttpHealthCheck", [
        "host", "path", "request_headers_to_add", "request_headers_to_remove", "expected_statuses",
        "retriable_statuses", "codec_client_type", "method",
    ]),
    msg!("envoy.config.core.v3.HealthCheck.TcpHealthCheck", ["send", "receive"]),
    msg!("envoy.config.core.v3.HealthCheck.GrpcHealthCheck", ["service_name", "authority"]),
    msg!("envoy.config.core.v3.HealthCheck.Payload", ["text", "binary"]),
    msg!("envoy.config.cluster.v3.OutlierDetection", [
        "consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent",
        "enforcing_consecutive_5xx", "enforcing_success_rate", "success_rate_minimum_hosts",
        "success_rate_request_volume", "success_rate_stdev_factor", "consecutive_gateway_failure",
        "enforcing_consecutive_gateway_failure", "split_external_local_origin_errors",
        "consecutive_local_origin_failure", "enforcing_consecutive_local_origin_failure",
        "enforcing_local_origin_success_rate", "failure_percentage_threshold",
        "enforcing_failure_percentage", "enforcing_failure_percentage_local_origin",
        "failure_percentage_minimum_hosts", "failure_percentage_request_volume",
        "max_ejection_time", "max_ejection_time_jitter", "always_eject_one_host",
        "successful_active_health_check_uneject_host",
    ]),
    msg!("envoy.config.cluster.v3.Cluster.EdsClusterConfig", ["eds_config", "service_name"]),
    msg!("envoy.config.cluster.v3.Cluster.RingHashLbConfig", ["minimum_ring_size", "maximum_ring_size", "hash_function"]),
    msg!("envoy.config.cluster.v3.Cluster.MaglevLbConfig", ["table_size"]),
    msg!("envoy.config.cluster.v3.Cluster.LeastRequestLbConfig", ["choice_count", "active_request_bias", "slow_start_config"]),
    msg!("envoy.config.cluster.v3.Cluster.RoundRobinLbConfig", ["slow_start_config"]),
    msg!("envoy.config.cluster.v3.Cluster.SlowStartConfig", ["slow_start_window", "aggression", "min_weight_percent"]),
    msg!("envoy.config.cluster.v3.Cluster.CommonLbConfig", [
        "healthy_panic_threshold", "update_merge_window", "locality_weighted_lb_config",
        "zone_aware_lb_config",
    ]),
    msg!("envoy.config.cluster.v3.Cluster.CommonLbConfig.ZoneAwareLbConfig", [
        "routing_enabled", "min_cluster_size", "fail_traffic_on_panic",
    ]),
    msg!("envoy.config.cluster.v3.Cluster.CommonLbConfig.LocalityWeightedLbConfig", []),
    msg!("envoy.config.core.v3.RuntimeDouble", ["default_value", "runtime_key"]),
    msg!("envoy.config.core.v3.BindConfig", ["source_address"]),
    msg!("envoy.config.cluster.v3.CircuitBreakers", ["thresholds"]),
    msg!("envoy.config.cluster.v3.CircuitBreakers.Thresholds", [
        "priority", "max_connections", "max_pending_requests", "max_requests", "max_retries",
        "retry_budget", "track_remaining",
    ]),
    msg!("envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget", ["budget_percent", "min_retry_concurrency"]),
    msg!("envoy.config.cluster.v3.UpstreamConnectionOptions", ["tcp_keepalive"]),
    msg!("envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig", [
        "num_resolver_threads" = "only sizes the resolver's thread pool; answers are the same",
    ]),
    msg!("envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig", []),
    msg!("envoy.config.endpoint.v3.ClusterLoadAssignment", ["cluster_name", "endpoints", "policy"]),
    msg!("envoy.config.endpoint.v3.ClusterLoadAssignment.Policy", ["overprovisioning_factor"]),
    msg!("envoy.config.endpoint.v3.LocalityLbEndpoints", ["locality", "lb_endpoints", "load_balancing_weight", "priority"]),
    msg!("envoy.config.endpoint.v3.LbEndpoint", ["endpoint", "load_balancing_weight", "metadata", "health_status"]),
    msg!("envoy.config.endpoint.v3.Endpoint", ["address", "hostname", "health_check_config"]),
    msg!("envoy.config.endpoint.v3.Endpoint.HealthCheckConfig", []),
    msg!("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", [
        "explicit_http_config", "use_downstream_protocol_config", "auto_config",
        "common_http_protocol_options",
    ]),
    msg!("envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig", ["http_protocol_options", "http2_protocol_options"]),
    msg!("envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig", ["http_protocol_options", "http2_protocol_options"]),
    msg!("envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig", ["http_protocol_options", "http2_protocol_options"]),
    // --- tls -----------------------------------------------------------------------------
    msg!("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", ["common_tls_context", "require_client_certificate"]),
    msg!("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", ["common_tls_context", "sni", "allow_renegotiation"]),
    msg!("envoy.extensions.transport_sockets.tls.v3.CommonTlsContext", [
        "tls_params", "tls_certificates", "tls_certificate_sds_secret_configs", "validation_context",
        "validation_context_sds_secret_config", "combined_validation_context", "alpn_protocols",
    ]),
    msg!("envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext", [
        "default_validation_context", "validation_context_sds_secret_config",
    ]),
    msg!("envoy.extensions.transport_sockets.tls.v3.TlsParameters", [
        "tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites", "ecdh_curves",
    ]),
    msg!("envoy.extensions.transport_sockets.tls.v3.TlsCertificate", ["certificate_chain", "private_key", "private_key_provider"]),
    msg!("envoy.extensions.transport_sockets.tls.v3.PrivateKeyProvider", ["provider_name", "typed_config", "fallback"]),
    msg!("envoy.extensions.private_key_providers.cryptomb.v3alpha.CryptoMbPrivateKeyMethodConfig", ["private_key", "poll_delay"]),
    msg!("envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext", [
        "trusted_ca", "match_typed_subject_alt_names", "match_subject_alt_names",
        "custom_validator_config",
    ]),
    msg!("envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig", ["trust_domains"]),
    msg!("envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig.TrustDomain", ["name", "trust_bundle"]),
    msg!("envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher", ["san_type", "matcher"]),
    msg!("envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig", [
        "name", "sds_config" = SDS_PENDING,
    ]),
    msg!("envoy.extensions.transport_sockets.tls.v3.Secret", ["name", "tls_certificate", "validation_context"]),
    msg!("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer", []),
    // --- access logs ---------------------------------------------------------------------
    msg!("envoy.config.accesslog.v3.AccessLog", ["name", "typed_config", "filter"]),
    msg!("envoy.config.accesslog.v3.AccessLogFilter", [
        "status_code_filter", "duration_filter", "not_health_check_filter", "traceable_filter",
        "runtime_filter", "and_filter", "or_filter", "header_filter", "response_flag_filter",
        "grpc_status_filter",
    ]),
    msg!("envoy.config.accesslog.v3.StatusCodeFilter", ["comparison"]),
    msg!("envoy.config.accesslog.v3.DurationFilter", ["comparison"]),
    msg!("envoy.config.accesslog.v3.ComparisonFilter", ["op", "value"]),
    msg!("envoy.config.core.v3.RuntimeUInt32", ["default_value", "runtime_key"]),
    msg!("envoy.config.accesslog.v3.NotHealthCheckFilter", []),
    msg!("envoy.config.accesslog.v3.TraceableFilter", []),
    msg!("envoy.config.accesslog.v3.RuntimeFilter", ["runtime_key", "percent_sampled", "use_independent_randomness"]),
    msg!("envoy.config.accesslog.v3.AndFilter", ["filters"]),
    msg!("envoy.config.accesslog.v3.OrFilter", ["filters"]),
    msg!("envoy.config.accesslog.v3.HeaderFilter", ["header"]),
    msg!("envoy.config.accesslog.v3.ResponseFlagFilter", ["flags"]),
    msg!("envoy.config.accesslog.v3.GrpcStatusFilter", ["statuses", "exclude"]),
    // Formatter extensions that only enable operators Envoy 1.40 has built in (istiod
    // before 1.26 lists them on every mesh access log).
    msg!("envoy.extensions.formatter.metadata.v3.Metadata", []),
    msg!("envoy.extensions.formatter.cel.v3.Cel", []),
    msg!("envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery", []),
    msg!("envoy.extensions.access_loggers.file.v3.FileAccessLog", ["path", "format", "json_format", "log_format"]),
    msg!("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", ["log_format"]),
    msg!("envoy.extensions.access_loggers.stream.v3.StderrAccessLog", ["log_format"]),
];

/// Finds the support entry of a message by its full name.
/// The table is indexed once: a large config looks up a message type per message.
/// Hashed with xxHash: SipHash's resistance to chosen keys buys nothing for a fixed table,
/// and this lookup runs once per message of every config.
pub fn find(name: &str) -> Option<&'static MessageSupport> {
    type Index = HashMap<&'static str, &'static MessageSupport, xxhash_rust::xxh64::Xxh64Builder>;
    static INDEX: std::sync::OnceLock<Index> = std::sync::OnceLock::new();
    INDEX
        .get_or_init(|| MESSAGES.iter().map(|m| (m.name, m)).collect())
        .get(name)
        .copied()
}

/// Renders the table as the README's conformance section, so the two cannot drift apart
/// (a test compares them).
#[cfg(test)]
pub fn conformance_markdown() -> String {
    let mut out = String::from(
        "| Envoy message | Honoured fields | Accepted, no effect yet |\n|---|---|---|\n",
    );
    for m in MESSAGES {
        let honoured: Vec<_> = m
            .fields
            .iter()
            .filter(|(_, s)| *s == Support::Honoured)
            .map(|(f, _)| format!("`{f}`"))
            .collect();
        let inert: Vec<_> = m
            .fields
            .iter()
            .filter_map(|(f, s)| match s {
                Support::NoEffect(why) => Some(format!("`{f}` ({why})")),
                Support::Honoured => None,
            })
            .collect();
        let fields = if honoured.is_empty() {
            "(no fields)".to_string()
        } else {
            honoured.join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            m.name,
            fields,
            inert.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_conformance_table_matches_the_registry() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let start = readme
            .find("<!-- conformance:start -->")
            .expect("start marker")
            + "<!-- conformance:start -->\n".len();
        let end = readme.find("<!-- conformance:end -->").expect("end marker");
        let want = conformance_markdown();
        if readme[start..end] != want {
            std::fs::write(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../target/conformance.md"),
                &want,
            )
            .ok();
            panic!(
                "README conformance table is stale; the expected table is in target/conformance.md"
            );
        }
    }

    #[test]
    fn every_listed_message_and_field_exists_in_envoys_protos() {
        for entry in MESSAGES {
            let desc = xds_client::descriptors::message(entry.name)
                .unwrap_or_else(|| panic!("unknown message {}", entry.name));
            for (field, _) in entry.fields {
                assert!(
                    desc.get_field_by_name(field).is_some(),
                    "{} has no field {field}",
                    entry.name
                );
            }
        }
        for name in OPAQUE {
            assert!(xds_client::descriptors::message(name).is_some(), "{name}");
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = MESSAGES.iter().map(|m| m.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
