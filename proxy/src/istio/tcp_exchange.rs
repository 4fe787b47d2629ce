//! Istio's TCP metadata exchange (`envoy.tcp.metadataexchange.config.MetadataExchange`),
//! as a downstream network filter and as an upstream cluster filter. When a connection
//! negotiated the configured ALPN (`istio-peer-exchange`), each side sends, before any
//! application byte, an 8-byte header (magic `0x3D230467` and the payload length, both
//! big-endian) and a serialized `google.protobuf.Any` holding a `Struct` with its
//! workload (`x-envoy-peer-metadata`) and node id (`x-envoy-peer-metadata-id`), and
//! strips the peer's from the front of what it reads.
//!
//! meshproxy sends its announcement as soon as the connection is up and then reads the
//! peer's. An Envoy peer sends its own on the first byte it receives, which is ours, so
//! neither side waits on application data.

use super::workload::Workload;
use crate::config::error::{ConfigError, Result};
use crate::io::BoxIo;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use xds_client::istio as proto;

/// The filter's protobuf type name.
pub const TYPE_NAME: &str = proto::TCP_EXCHANGE_CONFIG;
/// The header's magic number.
pub const MAGIC: u32 = 0x3D23_0467;
/// The largest announcement accepted from a peer; a larger length is not an exchange.
const MAX_PAYLOAD: usize = 64 * 1024;
const STRUCT_URL: &str = "type.googleapis.com/google.protobuf.Struct";
const METADATA_KEY: &str = "x-envoy-peer-metadata";
const ID_KEY: &str = "x-envoy-peer-metadata-id";

/// How long a peer's announcement is waited for.
const WAIT: Duration = Duration::from_secs(5);

/// A translated `MetadataExchange`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpExchangeConfig {
    /// The ALPN protocol that enables the exchange.
    pub protocol: Vec<u8>,
    /// Extra labels carried in announced and learnt workloads.
    pub additional_labels: Vec<String>,
    /// The local node's announcement, built on first use (the node is process-wide).
    local_announcement: std::sync::OnceLock<Vec<u8>>,
}

impl TcpExchangeConfig {
    /// Runs the exchange on `io` when the connection negotiated this config's ALPN
    /// protocol: announces the local node, learns the peer, and returns the stream with
    /// any application bytes read past the peer's announcement put back in front.
    pub async fn run(
        &self,
        negotiated: Option<&[u8]>,
        mut io: BoxIo,
    ) -> (BoxIo, Option<Arc<Workload>>) {
        if negotiated != Some(self.protocol.as_slice()) {
            return (io, None);
        }
        let local = self.local_announcement.get_or_init(|| {
            let (id, metadata) = crate::istio::local_node();
            announcement(self, id, metadata)
        });
        let (peer, rest) = exchange(&mut io, local, &self.additional_labels, WAIT).await;
        if !rest.is_empty() {
            io = Box::new(crate::io::PrefixedIo::new(rest, io));
        }
        (io, peer)
    }
}

/// Translates the filter's config.
pub fn translate(bytes: &[u8], path: &str) -> Result<TcpExchangeConfig> {
    let c =
        proto::MetadataExchange::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    Ok(TcpExchangeConfig {
        protocol: c.protocol.into_bytes(),
        additional_labels: c.additional_labels,
        local_announcement: Default::default(),
    })
}

/// The bytes announcing the local node (`metadata`, `id`).
fn announcement(
    config: &TcpExchangeConfig,
    id: &str,
    metadata: &xds_client::proto::google::protobuf::Struct,
) -> Vec<u8> {
    use prost_types::value::Kind;
    let local = Workload::from_node(metadata, &config.additional_labels);
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        METADATA_KEY.to_string(),
        prost_types::Value {
            kind: Some(Kind::StructValue(local.to_struct())),
        },
    );
    if !id.is_empty() {
        fields.insert(
            ID_KEY.to_string(),
            prost_types::Value {
                kind: Some(Kind::StringValue(id.to_string())),
            },
        );
    }
    let any = prost_types::Any {
        type_url: STRUCT_URL.into(),
        value: prost_types::Struct { fields }.encode_to_vec(),
    };
    let payload = any.encode_to_vec();
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// What the front of a stream holds.
#[derive(Debug, PartialEq)]
pub enum Front {
    /// Too few bytes to tell.
    Incomplete,
    /// Not an announcement: pass everything on.
    Other,
    /// An announcement of `len` bytes and the peer it names (`None`: unreadable).
    Announcement(usize, Option<Box<Workload>>),
}

/// Reads the peer's announcement from the front of `buf` (a stream's first bytes).
/// Public for the fuzz targets: these are untrusted bytes from the network.
pub fn front(buf: &[u8], additional_labels: &[String]) -> Front {
    if buf.len() < 8 {
        return Front::Incomplete;
    }
    let magic = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if magic != MAGIC || len > MAX_PAYLOAD {
        return Front::Other;
    }
    if buf.len() < 8 + len {
        return Front::Incomplete;
    }
    let peer = prost_types::Any::decode(&buf[8..8 + len])
        .ok()
        .filter(|a| a.type_url.ends_with("google.protobuf.Struct"))
        .and_then(|a| prost_types::Struct::decode(a.value.as_slice()).ok())
        .and_then(|s| match s.fields.get(METADATA_KEY)?.kind.as_ref()? {
            prost_types::value::Kind::StructValue(m) => {
                Some(Box::new(Workload::from_struct(m, additional_labels)))
            }
            _ => None,
        });
    Front::Announcement(8 + len, peer)
}

/// Announces the local node on `io` and reads the peer's announcement, waiting at most
/// `wait` for it. Returns the peer (if it announced one) and the bytes read past it,
/// which belong to the application and must be passed on first.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    announcement: &[u8],
    additional_labels: &[String],
    wait: Duration,
) -> (Option<Arc<Workload>>, Vec<u8>) {
    if io.write_all(announcement).await.is_err() || io.flush().await.is_err() {
        return (None, Vec::new());
    }
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match front(&buf, additional_labels) {
                Front::Incomplete => {}
                Front::Other => return None,
                Front::Announcement(len, peer) => {
                    buf.drain(..len);
                    return peer.map(|p| Arc::new(*p));
                }
            }
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let peer = tokio::time::timeout(wait, read).await.ok().flatten();
    (peer, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> xds_client::proto::google::protobuf::Struct {
        let json = serde_json::json!({"NAMESPACE": "default", "WORKLOAD_NAME": "ratings-v1",
            "LABELS": {"app": "ratings", "role": "server"}});
        xds_client::json::decode(json, "google.protobuf.Struct", false).unwrap()
    }

    fn config() -> TcpExchangeConfig {
        TcpExchangeConfig {
            protocol: b"istio-peer-exchange".to_vec(),
            additional_labels: vec!["role".into()],
            local_announcement: Default::default(),
        }
    }

    #[test]
    fn announcements_parse_back_and_others_pass() {
        let a = announcement(&config(), "sidecar~1", &node());
        assert_eq!(&a[..4], &[0x3D, 0x23, 0x04, 0x67]);
        let Front::Announcement(len, Some(peer)) = front(&a, &["role".into()]) else {
            panic!("parses")
        };
        assert_eq!(len, a.len());
        assert_eq!(peer.workload, "ratings-v1");
        assert_eq!(peer.labels.get("role").map(String::as_str), Some("server"));
        assert_eq!(front(&a[..5], &[]), Front::Incomplete);
        assert_eq!(front(&a[..a.len() - 1], &[]), Front::Incomplete);
        assert_eq!(front(b"GET / HTTP/1.1\r\n", &[]), Front::Other);
        let mut huge = a.clone();
        huge[4..8].copy_from_slice(&(1u32 << 30).to_be_bytes());
        assert_eq!(
            front(&huge, &[]),
            Front::Other,
            "a hostile length is not waited for"
        );
    }

    #[tokio::test]
    async fn both_sides_exchange_and_keep_application_bytes() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let ann_a = announcement(&config(), "a", &node());
        let ann_b = announcement(&config(), "b", &node());
        let labels = config().additional_labels;
        let side_b = tokio::spawn(async move {
            let r = exchange(&mut b, &ann_b, &[], Duration::from_secs(5)).await;
            b.write_all(b"hello").await.unwrap();
            r
        });
        let (peer, rest) = exchange(&mut a, &ann_a, &labels, Duration::from_secs(5)).await;
        assert_eq!(peer.unwrap().workload, "ratings-v1");
        let mut got = rest;
        while got.len() < 5 {
            let mut c = [0u8; 8];
            let n = a.read(&mut c).await.unwrap();
            got.extend_from_slice(&c[..n]);
        }
        assert_eq!(got, b"hello");
        let (peer_b, rest_b) = side_b.await.unwrap();
        assert!(peer_b.is_some() && rest_b.is_empty());
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_other_bytes_are_kept() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let ann = announcement(&config(), "a", &node());
        let (peer, rest) = exchange(&mut a, &ann, &[], Duration::from_millis(50)).await;
        assert!(peer.is_none() && rest.is_empty());
        b.write_all(b"PLAIN TEXT").await.unwrap();
        let (peer, rest) = exchange(&mut a, &ann, &[], Duration::from_secs(5)).await;
        assert!(peer.is_none());
        assert_eq!(rest, b"PLAIN TEXT");
    }
}
