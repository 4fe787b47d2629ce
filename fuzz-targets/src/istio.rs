//! Istio's parsers: the TCP metadata-exchange frame a peer sends first on a mesh
//! connection, and the CEL of metric dimensions (config, but config a user writes).

use meshproxy::istio::{cel, tcp_exchange};
use serde_json::json;

/// The metadata-exchange header and payload: an announcement is no longer than the input
/// and declared by its header, and what was decided stands whatever follows it.
pub fn tcp_exchange(data: &[u8]) {
    let labels = ["app".to_string(), "version".to_string()];
    let first = tcp_exchange::front(data, &labels);
    let mut longer = data.to_vec();
    longer.extend_from_slice(&[0x3D, 0x23, 0x04, 0x67, 0, 0, 0, 1, 0]);
    let later = tcp_exchange::front(&longer, &labels);
    match &first {
        tcp_exchange::Front::Announcement(len, _) => {
            assert!(
                *len <= data.len() && *len >= 8,
                "announcement of {len} bytes"
            );
            let declared = u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize;
            assert_eq!(*len, 8 + declared);
            assert_eq!(later, first, "decision changed by later bytes");
        }
        tcp_exchange::Front::Other => assert_eq!(later, first, "decision changed by later bytes"),
        tcp_exchange::Front::Incomplete => {}
    }
}

/// A CEL expression: parsed, then evaluated against request-like attributes.
pub fn cel(data: &[u8]) {
    let Ok(expr) = cel::parse(&String::from_utf8_lossy(data)) else {
        return;
    };
    let attributes = json!({
        "request": {"headers": {"user-agent": "curl/8", ":path": "/a?b"}, "size": 12,
                    "method": "GET", "duration": 1.5},
        "response": {"code": 200, "grpc_status": 0},
        "xds": {"node": {"metadata": {"LABELS": {"app": "ratings"}, "NAMESPACE": "default"}}},
        "list": [1, 2.5, "x", true, null],
    });
    let _ = expr.label(&attributes);
    let _ = expr.constant();
}
