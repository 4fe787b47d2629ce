//! `envoy.filters.http.grpc_stats`: per-cluster gRPC call outcomes (`total`, `success`,
//! `failure` from the `grpc-status` that ends the call) and message counts
//! (`request_message_count`, `response_message_count`, counted by gRPC's 5-byte message
//! prefix as the bodies stream), under `cluster.<name>.grpc.`. With `emit_filter_state`
//! the counts also reach Istio's `istio_request_messages_total` /
//! `istio_response_messages_total`.

use crate::access_log::record::Record;
use crate::config::error::{join, ConfigError, Result};
use crate::stats::Scope;
use bytes::Bytes;
use filters::http::{Body, BoxError};
use http_body::Frame;
use prost::Message;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use xds_client::proto::envoy::extensions::filters::http::grpc_stats::v3 as proto;

/// The filter's protobuf type name.
pub const TYPE_NAME: &str = "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig";

/// A translated grpc_stats config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcStatsConfig {
    /// Share the message counts with other filters (Istio's metrics).
    pub emit_filter_state: bool,
}

/// Translates the filter's config. Per-method stat names (`stats_for_all_methods: true`,
/// `individual_method_stats_allowlist`) and `enable_upstream_stats` are refused.
pub fn translate(bytes: &[u8], path: &str) -> Result<GrpcStatsConfig> {
    let c = proto::FilterConfig::decode(bytes).map_err(|e| ConfigError::at(path, e.to_string()))?;
    use proto::filter_config::PerMethodStatSpecifier as S;
    match &c.per_method_stat_specifier {
        Some(S::IndividualMethodStatsAllowlist(_)) => {
            return Err(ConfigError::at(
                join(path, "individual_method_stats_allowlist"),
                "per-method gRPC stats are not supported",
            ))
        }
        Some(S::StatsForAllMethods(b)) if b.value => {
            return Err(ConfigError::at(
                join(path, "stats_for_all_methods"),
                "per-method gRPC stats are not supported",
            ))
        }
        _ => {}
    }
    if c.enable_upstream_stats {
        return Err(ConfigError::at(
            join(path, "enable_upstream_stats"),
            "gRPC upstream_rq_time is not supported",
        ));
    }
    Ok(GrpcStatsConfig {
        emit_filter_state: c.emit_filter_state,
    })
}

/// Messages a gRPC stream carried each way so far.
#[derive(Debug, Default)]
pub struct MessageCounts {
    /// Request messages.
    pub request: AtomicU64,
    /// Response messages.
    pub response: AtomicU64,
}

/// Finds gRPC message boundaries in a byte stream split at arbitrary points: each
/// message is a 1-byte flag, a 4-byte big-endian length and that many bytes. Public for
/// the fuzz targets: the bytes are a client's or an upstream's.
#[derive(Debug, Default)]
pub struct FrameScanner {
    /// Bytes of the current message prefix seen so far.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message body still to skip.
    remaining: u64,
}

impl FrameScanner {
    /// Scans `data`; returns how many messages started in it.
    pub fn scan(&mut self, mut data: &[u8]) -> u64 {
        let mut started = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = (self.remaining as usize).min(data.len());
                self.remaining -= skip as u64;
                data = &data[skip..];
                continue;
            }
            let take = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == 5 {
                started += 1;
                self.prefix_len = 0;
                self.remaining = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as u64;
            }
        }
        started
    }
}

/// A body whose gRPC messages are counted into one side of [`MessageCounts`].
pub struct CountedMessages {
    inner: Body,
    scanner: FrameScanner,
    counts: Arc<MessageCounts>,
    response: bool,
}

impl CountedMessages {
    /// Counts `inner`'s messages as requests or (`response`) responses.
    pub fn new(inner: Body, counts: Arc<MessageCounts>, response: bool) -> Self {
        CountedMessages {
            inner,
            scanner: FrameScanner::default(),
            counts,
            response,
        }
    }
}

impl http_body::Body for CountedMessages {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                let n = self.scanner.scan(d);
                let side = if self.response {
                    &self.counts.response
                } else {
                    &self.counts.request
                };
                side.fetch_add(n, Ordering::Relaxed);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Charges a finished gRPC stream to its cluster's `grpc.` stats: its message counts,
/// and, when a `grpc-status` ended it, `total` and `success` or `failure`.
pub fn record(root: &Scope, r: &Record, counts: &MessageCounts) {
    let Some(cluster) = r.upstream_cluster.as_deref() else {
        return;
    };
    let s = root
        .tagged("cluster", "envoy_cluster_name", cluster)
        .child("grpc");
    s.counter("request_message_count")
        .add(counts.request.load(Ordering::Relaxed));
    s.counter("response_message_count")
        .add(counts.response.load(Ordering::Relaxed));
    if let Some(status) = r.grpc_status() {
        s.counter("total").inc();
        s.counter(if status == "0" { "success" } else { "failure" })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn messages_are_counted_across_any_split() {
        let mut stream = message(3);
        stream.extend(message(0));
        stream.extend(message(300));
        for split in [1, 2, 4, 5, 6, 7, 100, stream.len()] {
            let mut s = FrameScanner::default();
            let n: u64 = stream.chunks(split).map(|c| s.scan(c)).sum();
            assert_eq!(n, 3, "chunks of {split}");
        }
    }
}
