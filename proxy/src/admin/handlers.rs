//! The admin endpoints.

use super::{config_dump, reply, AdminResponse};
use crate::logging;
use crate::server::{Server, State};
use crate::stats::render::{self, Selection};
use http::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

/// Dispatches an admin request by path.
pub async fn handle(
    server: &Arc<Server>,
    path: &str,
    q: &HashMap<String, String>,
) -> AdminResponse {
    match path {
        "/" => reply(
            StatusCode::OK,
            TEXT,
            ENDPOINTS
                .iter()
                .map(|(p, d)| format!("  {p}: {d}\n"))
                .collect::<String>(),
        ),
        "/ready" => {
            let s = server.state();
            let status = if s == State::Live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, TEXT, format!("{}\n", s.name()))
        }
        "/server_info" => reply(StatusCode::OK, JSON, server_info(server).to_string()),
        "/stats" => stats(server, q, q.get("format").map(String::as_str)),
        "/stats/prometheus" => stats(server, q, Some("prometheus")),
        "/config_dump" => {
            match config_dump::render(server, q.contains_key("include_eds"))
                .inspect(|_| crate::memory::release_free_memory())
            {
                Ok(v) => reply(
                    StatusCode::OK,
                    JSON,
                    serde_json::to_string_pretty(&v).unwrap_or_default(),
                ),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, e),
            }
        }
        "/clusters" => clusters(server, q.get("format").map(String::as_str) == Some("json")),
        "/listeners" => listeners(server, q.get("format").map(String::as_str) == Some("json")),
        "/logging" => logging_endpoint(q),
        "/healthcheck/fail" => {
            server
                .healthcheck_failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            reply(StatusCode::OK, TEXT, "OK\n")
        }
        "/healthcheck/ok" => {
            server
                .healthcheck_failed
                .store(false, std::sync::atomic::Ordering::Relaxed);
            reply(StatusCode::OK, TEXT, "OK\n")
        }
        "/drain_listeners" => {
            server.drain_listeners(q.contains_key("inboundonly"), q.contains_key("graceful"));
            reply(StatusCode::OK, TEXT, "OK\n")
        }
        "/quitquitquit" => {
            server.quit.notify_one();
            reply(StatusCode::OK, TEXT, "OK\n")
        }
        "/memory" => reply(StatusCode::OK, JSON, memory().to_string()),
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            format!(
                "invalid path. admin commands are:\n{}",
                ENDPOINTS
                    .iter()
                    .map(|(p, d)| format!("  {p}: {d}\n"))
                    .collect::<String>()
            ),
        ),
    }
}

const ENDPOINTS: &[(&str, &str)] = &[
    ("/clusters", "upstream cluster status"),
    ("/config_dump", "dump current Envoy configs"),
    (
        "/drain_listeners",
        "drain listeners (POST; ?inboundonly, ?graceful)",
    ),
    (
        "/healthcheck/fail",
        "cause the server to fail health checks (POST)",
    ),
    (
        "/healthcheck/ok",
        "cause the server to pass health checks (POST)",
    ),
    ("/listeners", "print listener info"),
    ("/logging", "query/change logging levels"),
    ("/memory", "print current allocation/heap usage"),
    ("/quitquitquit", "exit the server (POST)"),
    (
        "/ready",
        "print server state, return 200 if LIVE, otherwise return 503",
    ),
    ("/server_info", "print server version/status information"),
    (
        "/stats",
        "print server stats (?usedonly, ?filter=<regex>, ?format=json|prometheus)",
    ),
    (
        "/stats/prometheus",
        "print server stats in prometheus format",
    ),
];

fn stats(server: &Server, q: &HashMap<String, String>, format: Option<&str>) -> AdminResponse {
    let filter = match q.get("filter").filter(|f| !f.is_empty()) {
        Some(f) => match regex::Regex::new(f) {
            Ok(r) => Some(r),
            Err(e) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("Invalid re2 regex: {e}\n"),
                )
            }
        },
        None => None,
    };
    let sel = Selection {
        used_only: q.contains_key("usedonly"),
        filter,
    };
    server.refresh_stats();
    match format {
        Some("json") => reply(
            StatusCode::OK,
            JSON,
            render::json(&server.stats, &sel).to_string(),
        ),
        Some("prometheus") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=UTF-8",
            render::prometheus(&server.stats, &sel),
        ),
        None | Some("text") => reply(StatusCode::OK, TEXT, render::text(&server.stats, &sel)),
        Some(other) => reply(
            StatusCode::BAD_REQUEST,
            TEXT,
            format!("usage: /stats?format=(html|active-html|json|prometheus|text) got {other}\n"),
        ),
    }
}

fn server_info(server: &Server) -> serde_json::Value {
    let o = &server.options;
    let node = &server.bootstrap.node;
    serde_json::json!({
        "version": format!("meshproxy/{}/{}/Clean/RELEASE/rustls", env!("CARGO_PKG_VERSION"), crate::cli::ENVOY_COMPAT),
        "state": server.state().name(),
        "hot_restart_version": "disabled",
        "command_line_options": {
            "base_id": o.base_id.to_string(),
            "concurrency": server.concurrency(),
            "config_path": o.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "config_yaml": o.config_yaml.clone().unwrap_or_default(),
            "allow_unknown_static_fields": o.allow_unknown_static_fields,
            "log_level": o.log_level,
            "component_log_level": o.component_log_level.clone().unwrap_or_default(),
            "log_format": o.log_format.clone().unwrap_or_default(),
            "log_path": o.log_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "service_cluster": node.cluster,
            "service_node": node.id,
            "service_zone": node.zone,
            "drain_time": format!("{}s", o.drain_time_s),
            "drain_strategy": format!("{:?}", o.drain_strategy),
            "parent_shutdown_time": format!("{}s", o.parent_shutdown_time_s),
            "mode": format!("{:?}", o.mode),
            "disable_hot_restart": o.disable_hot_restart,
            "restart_epoch": o.restart_epoch,
            "file_flush_interval": format!("{}s", o.file_flush_interval_msec as f64 / 1000.0),
        },
        "node": {"id": node.id, "cluster": node.cluster, "locality": {"zone": node.zone}},
        "uptime_current_epoch": format!("{}s", server.uptime()),
        "uptime_all_epochs": format!("{}s", server.uptime()),
    })
}

fn clusters(server: &Server, json: bool) -> AdminResponse {
    if json {
        let statuses: Vec<_> = server
            .clusters
            .all()
            .iter()
            .map(|c| {
                let hosts: Vec<_> = c
                    .members_ranked()
                    .iter()
                    .map(|r| {
                        let h = &r.host;
                        let mut health = serde_json::json!({
                            "eds_health_status": if r.healthy { "HEALTHY" } else { "UNHEALTHY" },
                        });
                        if h.is_ejected() {
                            health["failed_outlier_check"] = true.into();
                        }
                        if h.failed_health_check() {
                            health["failed_active_health_check"] = true.into();
                        }
                        serde_json::json!({
                            "address": match &h.address {
                                crate::upstream::host::HostAddress::Tcp(a) => serde_json::json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}),
                                crate::upstream::host::HostAddress::Unix(p) => serde_json::json!({"pipe": {"path": p.display().to_string()}}),
                            },
                            "hostname": h.hostname,
                            "weight": h.weight,
                            "priority": r.priority,
                            "health_status": health,
                        })
                    })
                    .collect();
                serde_json::json!({"name": c.config.name, "host_statuses": hosts})
            })
            .collect();
        return reply(
            StatusCode::OK,
            JSON,
            serde_json::json!({"cluster_statuses": statuses}).to_string(),
        );
    }
    let mut out = String::new();
    for c in server.clusters.all() {
        let n = &c.config.name;
        for (p, t) in [
            ("default_priority", c.config.thresholds),
            ("high_priority", c.config.high_thresholds()),
        ] {
            out.push_str(&format!(
                "{n}::{p}::max_connections::{}\n{n}::{p}::max_pending_requests::{}\n{n}::{p}::max_requests::{}\n{n}::{p}::max_retries::{}\n",
                t.max_connections, t.max_pending_requests, t.max_requests, t.max_retries
            ));
        }
        if let Some(d) = c.outlier_detector() {
            use crate::upstream::outlier::monitor::Origin;
            let (mean, threshold) = d.success_rate_figures(Origin::External);
            let (local_mean, local_threshold) = d.success_rate_figures(Origin::Local);
            out.push_str(&format!(
                "{n}::outlier::success_rate_average::{mean}\n{n}::outlier::success_rate_ejection_threshold::{threshold}\n{n}::outlier::local_origin_success_rate_average::{local_mean}\n{n}::outlier::local_origin_success_rate_ejection_threshold::{local_threshold}\n"
            ));
        }
        out.push_str(&format!("{n}::added_via_api::false\n"));
        for r in c.members_ranked() {
            let h = &r.host;
            let a = &h.address_string;
            out.push_str(&format!(
                "{n}::{a}::cx_active::{}\n{n}::{a}::rq_active::{}\n{n}::{a}::hostname::{}\n{n}::{a}::health_flags::{}\n{n}::{a}::weight::{}\n{n}::{a}::priority::{}\n",
                c.stats_if_created().map_or(0, |s| s.cx_active.value().max(0)),
                h.active_requests(),
                h.hostname,
                health_flags(h, r.healthy),
                h.weight,
                r.priority,
            ));
            let rate = |origin| h.outlier().map_or(-1.0, |m| m.shown_rate(origin));
            use crate::upstream::outlier::monitor::Origin;
            out.push_str(&format!(
                "{n}::{a}::success_rate::{}\n{n}::{a}::local_origin_success_rate::{}\n",
                rate(Origin::External),
                rate(Origin::Local),
            ));
        }
    }
    reply(StatusCode::OK, TEXT, out)
}

/// A host's `/clusters` health flags as Envoy prints them: `healthy`, or each failure
/// flag in Envoy's order.
fn health_flags(host: &crate::upstream::host::Host, eds_healthy: bool) -> String {
    let mut flags = String::new();
    if host.failed_health_check() {
        flags.push_str("/failed_active_hc");
    }
    if host.is_ejected() {
        flags.push_str("/failed_outlier_check");
    }
    if !eds_healthy {
        flags.push_str("/failed_eds_health");
    }
    if host.health_check_timed_out() {
        flags.push_str("/active_hc_timeout");
    }
    if flags.is_empty() {
        flags.push_str("healthy");
    }
    flags
}

fn listeners(server: &Server, json: bool) -> AdminResponse {
    if json {
        let list: Vec<_> = server
            .listeners()
            .iter()
            .map(|l| {
                let addr = match &l.config.address {
                    crate::config::common::Address::Socket(a) => serde_json::json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}),
                    other => serde_json::json!({"pipe": {"path": other.to_string()}}),
                };
                serde_json::json!({"name": l.config.name, "local_address": addr})
            })
            .collect();
        return reply(
            StatusCode::OK,
            JSON,
            serde_json::json!({"listener_statuses": list}).to_string(),
        );
    }
    reply(
        StatusCode::OK,
        TEXT,
        server
            .listeners()
            .iter()
            .map(|l| format!("{}::{}\n", l.config.name, l.config.address))
            .collect::<String>(),
    )
}

fn logging_endpoint(q: &HashMap<String, String>) -> AdminResponse {
    let mut errors = Vec::new();
    for (k, v) in q {
        if k == "level" {
            match logging::Level::parse(v) {
                Some(l) => logging::set_all(l),
                None => errors.push(format!("invalid level {v}")),
            }
        } else if k == "paths" {
            match logging::apply_component_levels(v) {
                Ok(()) => {}
                Err(e) => errors.push(e),
            }
        } else {
            match logging::Level::parse(v) {
                Some(l) if logging::set_component(k, l) => {}
                _ => errors.push(format!("error: unknown logger or level {k}={v}")),
            }
        }
    }
    let mut out = String::from("active loggers:\n");
    for (c, l) in logging::snapshot() {
        out.push_str(&format!("  {c}: {}\n", l.name()));
    }
    if errors.is_empty() {
        reply(StatusCode::OK, TEXT, out)
    } else {
        reply(StatusCode::NOT_FOUND, TEXT, format!("{}\nusage: /logging?<name>=<level> (change single level)\n/logging?level=<level> (change all levels)\n{out}", errors.join("\n")))
    }
}

fn memory() -> serde_json::Value {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let virt = statm
        .split_whitespace()
        .next()
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096;
    let m = crate::memory::usage();
    serde_json::json!({
        "allocated": m.allocated.to_string(),
        "heap_size": m.heap_size.to_string(),
        "pageheap_unmapped": "0",
        "pageheap_free": m.heap_size.saturating_sub(m.allocated).to_string(),
        "total_thread_cache": "0",
        "total_physical_bytes": m.physical.to_string(),
        "virtual_size": virt.to_string(),
    })
}
