//! The listener-level access log (`Listener.access_log`): one record per downstream
//! connection, written when the connection ends, whichever way it ends: closed by a
//! listener filter, matching no filter chain (`NR`, `filter_chain_not_found`, the case
//! istiod's listener log is for), or served. As in Envoy, the record of a TCP proxy
//! connection is the TCP proxy's own; an HTTP connection's carries its protocol and wire
//! bytes.

use super::{ActiveListener, ConnectionInfo};
use crate::access_log::record::{Record, ResponseFlags};
use std::sync::Arc;
use std::time::Instant;

/// The pending listener-level record of one connection; logged on drop.
pub(super) struct ConnectionLog {
    listener: Arc<ActiveListener>,
    record: Record,
    started: Instant,
}

impl ConnectionLog {
    /// Starts the record at accept time, when the listener has access logs.
    pub(super) fn start(listener: &Arc<ActiveListener>, info: &ConnectionInfo) -> Option<Self> {
        if listener.access_logs.is_empty() {
            return None;
        }
        let mut record = info.record();
        record.downstream_remote = info.remote;
        Some(ConnectionLog {
            listener: listener.clone(),
            record,
            started: Instant::now(),
        })
    }

    /// The connection moved to the listener of its original destination: that
    /// listener's logs write the record.
    pub(super) fn hand_off(
        this: &mut Option<Self>,
        to: &Arc<ActiveListener>,
        info: &ConnectionInfo,
    ) {
        // A listener without logs writes nothing: the record then goes nowhere.
        match this {
            Some(log) => log.listener = to.clone(),
            None => *this = Self::start(to, info),
        }
    }

    /// Takes what is known of the connection now (addresses after listener filters, the
    /// SNI, the peer certificate after the handshake).
    pub(super) fn connection(&mut self, info: &ConnectionInfo) {
        let start_time = self.record.start_time;
        self.record = info.record();
        self.record.downstream_remote = info.remote;
        self.record.start_time = start_time;
    }

    /// No filter chain matched the connection.
    pub(super) fn no_filter_chain(&mut self) {
        self.record.flags.insert(ResponseFlags::NO_ROUTE_FOUND);
        self.record.response_code_details = "filter_chain_not_found".into();
    }

    /// A network filter closed the connection: the TCP proxy's record of it (when the
    /// chain ends in one) with the filter's `details`.
    pub(super) fn terminated(&mut self, tcp_proxy: Option<Record>, details: String) {
        if let Some(record) = tcp_proxy {
            self.served_by_tcp_proxy(record);
        }
        self.record.connection_termination_details = Some(details.into());
    }

    /// The TCP proxy's record of the connection becomes this one (from accept time).
    pub(super) fn served_by_tcp_proxy(&mut self, mut record: Record) {
        record.start_time = self.record.start_time;
        self.record = record;
    }

    /// An HTTP connection's protocol and the bytes it carried on the wire.
    pub(super) fn served_by_http(
        &mut self,
        protocol: Option<&'static str>,
        received: u64,
        sent: u64,
    ) {
        self.record.protocol = protocol.unwrap_or_default();
        self.record.bytes_received = received;
        self.record.bytes_sent = sent;
    }
}

impl Drop for ConnectionLog {
    fn drop(&mut self) {
        self.record.duration = self.started.elapsed();
        for l in self.listener.access_logs.iter() {
            l.log(&self.record);
        }
    }
}
