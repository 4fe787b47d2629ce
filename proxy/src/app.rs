//! The process: parse the command line, load the bootstrap (or the embedded default),
//! validate or serve, and exit with Envoy's conventions (1 on a bad config or bind error).

use crate::cli::{Mode, Options};
use crate::config::bootstrap::{self, NodeInfo, Source};
use crate::logging::{self, Level};
use crate::server::{Server, State};
use clap::Parser;

fn source(o: &Options) -> Result<(Source, String), String> {
    let mut s = Source {
        allow_unknown_fields: o.allow_unknown_static_fields,
        node_overrides: NodeInfo {
            id: o.service_node.clone().unwrap_or_default(),
            cluster: o.service_cluster.clone().unwrap_or_default(),
            zone: o.service_zone.clone().unwrap_or_default(),
        },
        ..Default::default()
    };
    if o.wants_embedded_default() {
        s.yaml = Some(crate::demo::DEFAULT_BOOTSTRAP.to_string());
        return Ok((s, "<embedded default>".into()));
    }
    let name = match &o.config_path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("unable to read file: {}: {e}", p.display()))?;
            s.file = Some((p.display().to_string(), text));
            p.display().to_string()
        }
        None => "<--config-yaml>".into(),
    };
    s.yaml = o.config_yaml.clone();
    Ok((s, name))
}

/// Runs meshproxy; returns the process exit code.
pub fn main() -> i32 {
    let options = match Options::try_parse() {
        Ok(o) => o,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    if options.version {
        println!("{}", crate::cli::version_line());
        return 0;
    }
    if options.restart_epoch > 0 && !options.disable_hot_restart {
        eprintln!("error: --restart-epoch {}: hot restart is not implemented yet; start with --restart-epoch 0 or --disable-hot-restart", options.restart_epoch);
        return 1;
    }
    let Some(level) = Level::parse(&options.log_level) else {
        eprintln!("error: invalid log level {:?}", options.log_level);
        return 1;
    };
    crate::memory::limit_arenas(crate::server::concurrency(&options));
    // The descriptor pool is needed while the bootstrap is decoded and translated only; its
    // decoding overlaps reading and parsing the bootstrap.
    let descriptors = xds_client::descriptors::hold_in_background();
    let (src, name) = match source(&options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error initializing configuration '{}': {e}",
                options
                    .config_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            return 1;
        }
    };
    let loaded = bootstrap::load(&src);
    let descriptors = descriptors.wait();
    // The bootstrap's text is no longer needed (`/config_dump` keeps its own compressed
    // copy): freed before serving, it is not part of the resident set for the process's
    // life (a 5000-cluster sidecar bootstrap is 4 MB of JSON).
    drop(src);
    let pattern = options
        .log_format
        .clone()
        .or_else(|| loaded.as_ref().ok().and_then(|b| b.log_format.clone()))
        .unwrap_or_else(|| logging::DEFAULT_PATTERN.to_string());
    if let Err(e) = logging::init(
        level,
        options.component_log_level.as_deref(),
        &pattern,
        options.log_path.as_deref(),
    ) {
        eprintln!("error: {e}");
        return 1;
    }
    let bootstrap = match loaded {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error initializing configuration '{name}': {e}");
            return 1;
        }
    };
    if options.mode == Mode::Validate {
        for n in &bootstrap.no_effect {
            println!("note: {} accepted without effect: {}", n.path, n.reason);
        }
        println!("configuration '{name}' OK");
        return 0;
    }
    drop(descriptors);
    crate::memory::release_free_memory();
    serve(options, bootstrap, name)
}

fn serve(options: Options, bootstrap: bootstrap::Bootstrap, name: String) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("main")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the main runtime: {e}");
            return 1;
        }
    };
    let embedded = options.wants_embedded_default();
    let mode = options.mode;
    runtime.block_on(async move {
        let server = match Server::new(options, bootstrap) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target: "main", "error initializing configuration '{name}': {e}");
                return 1;
            }
        };
        if embedded {
            if let Err(e) = crate::demo::spawn(crate::demo::DEMO_UPSTREAM.parse().expect("static address")).await {
                tracing::error!(target: "main", "cannot start the demo upstream on {}: {e}", crate::demo::DEMO_UPSTREAM);
                return 1;
            }
        }
        server.clusters.initialize().await;
        let bound = match server.bind_listeners() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(target: "main", "{e}");
                eprintln!("error: {e}");
                return 1;
            }
        };
        if let Some(addr) = server.bootstrap.admin.clone() {
            match crate::admin::bind(&addr) {
                Ok(sock) => {
                    tokio::spawn(crate::admin::serve(server.clone(), sock));
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            }
        }
        if server.bootstrap.dynamic.is_some() || crate::xds::secrets::bootstrap_uses_sds(&server) {
            server.set_state(State::Initializing);
            let xds = match crate::xds::XdsManager::start(&server) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(target: "main", "dynamic_resources: {e}");
                    eprintln!("error: dynamic_resources: {e}");
                    return 1;
                }
            };
            let _ = server.xds.set(xds.clone());
            tokio::select! {
                _ = xds.initialized() => {}
                _ = wait_for_exit(&server) => {
                    tracing::warn!(target: "main", "shutting down before the initial xDS fetch completed");
                    return 0;
                }
            }
        }
        if let Err(e) = server.start_workers(bound) {
            eprintln!("error: cannot start workers: {e}");
            return 1;
        }
        // The serving lines are written before /ready turns LIVE, so whoever waits for LIVE
        // finds them in the log.
        if mode != Mode::InitOnly {
            for l in server.listeners().iter() {
                tracing::info!(target: "main", "listener '{}' serving on {}", l.config.name, l.config.address);
            }
            if let Some(a) = &server.bootstrap.admin {
                tracing::info!(target: "admin", "admin address: {a}");
            }
        }
        server.set_state(State::Live);
        // Start-up's code (config decoding, listener and worker set-up) leaves the resident
        // set; serving maps back what it runs.
        crate::memory::release_free_memory();
        if mode == Mode::InitOnly {
            return 0;
        }
        if embedded {
            tracing::warn!(target: "main", "meshproxy is running its embedded demo: try `curl 127.0.0.1:10000/` (proxied to the built-in upstream on {}) and `curl 127.0.0.1:15000/stats`; run with `-c <bootstrap.yaml>` to serve your own Envoy v3 bootstrap", crate::demo::DEMO_UPSTREAM);
        }
        wait_for_exit(&server).await;
        tracing::warn!(target: "main", "shutting down");
        0
    })
}

async fn wait_for_exit(server: &Server) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            server.quit.notified().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = server.quit.notified() => {}
    }
}
