//! Path config sources: a file holding a `DiscoveryResponse` (JSON or YAML, resources as
//! `Any` with `@type`), read at start and again whenever it changes (checked every
//! second; a configmap-style symlink swap counts as a change). There is no server to
//! answer: rejections are logged and the last good resources keep serving.

use super::{Handler, Update};
use crate::proto::envoy::service::discovery::v3::DiscoveryResponse;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What identifies a version of the file: modification time, size and inode.
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Reads the file as a discovery response of `type_url`.
fn read(path: &std::path::Path, type_url: &str) -> Result<Update, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc = crate::json::parse_document(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let _pool = crate::descriptors::hold();
    let response: DiscoveryResponse =
        crate::json::decode(doc, "envoy.service.discovery.v3.DiscoveryResponse", false)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(other) = response.resources.iter().find(|r| r.type_url != type_url) {
        return Err(format!(
            "{}: a {} resource in a {type_url} file",
            path.display(),
            other.type_url
        ));
    }
    // A file need not say its type: the config source does.
    let mut update = Update::state_of_the_world(response);
    update.type_url = type_url.to_string();
    Ok(update)
}

/// Watches `path` for resources of `type_url` on the current tokio runtime, for the life
/// of the process.
pub fn watch(path: PathBuf, type_url: String, handler: Arc<dyn Handler>) {
    tokio::spawn(async move {
        let mut seen = None;
        loop {
            let now = stamp(&path);
            if now.is_some() && now != seen {
                seen = now;
                match read(&path, &type_url) {
                    Ok(update) => {
                        let rejected = handler.apply(update).rejected;
                        for r in rejected {
                            tracing::warn!(target: "config", "{}: rejected {}: {}", path.display(), r.name, r.error);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target: "config", "{e}");
                        handler.unreadable(&type_url);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
