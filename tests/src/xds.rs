//! A scriptable xDS management server for tests: the real ADS protocol (state-of-the-world
//! and Delta) over gRPC on TCP or a unix socket, built on the same protobuf types.
//!
//! Tests set resources, push a type (a new version goes to every stream subscribed to
//! it), remove resources, drop every stream, stop and restart the server, and read back
//! every request the proxy sent: ACKs, NACKs with their `error_detail`, subscriptions.

use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tonic::{Request as GrpcRequest, Response, Status, Streaming};
use xds_client::proto::envoy::service::discovery::v3::{
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource,
};
use xds_client::proto::google::protobuf::Any;

/// `Cluster` type URL.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `Listener` type URL.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `RouteConfiguration` type URL.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `Secret` type URL.
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// `ClusterLoadAssignment` type URL.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Encodes a JSON resource (proto3 JSON mapping, `@type` inside `Any`s) as an `Any`,
/// exactly as written: TypedStructs stay TypedStructs, as istiod sends them.
pub fn any(type_url: &str, json: serde_json::Value) -> Any {
    try_any(type_url, json).unwrap_or_else(|e| panic!("{e}"))
}

/// [`any`], or why the resource cannot be encoded (a message the descriptors lack).
pub fn try_any(type_url: &str, json: serde_json::Value) -> Result<Any, String> {
    let full_name = type_url.rsplit('/').next().unwrap_or(type_url);
    let pool = pool();
    let descriptor = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| format!("unknown message {full_name}"))?;
    // Fields the descriptors do not know (newer Envoy or Istio fields) are dropped: both
    // proxies under test receive the same bytes.
    let options = prost_reflect::DeserializeOptions::new().deny_unknown_fields(false);
    let message =
        prost_reflect::DynamicMessage::deserialize_with_options(descriptor, json, &options)
            .map_err(|e| format!("test resource of type {full_name}: {e}"))?;
    Ok(Any {
        type_url: type_url.to_string(),
        value: message.encode_to_vec(),
    })
}

/// Envoy's descriptors (with the Istio filter configs meshproxy knows) plus
/// `udpa.type.v1.TypedStruct`, which istiod sends as a raw `Any` in the fixtures and the
/// set lacks (field numbers from the published proto).
fn pool() -> &'static prost_reflect::DescriptorPool {
    use xds_client::proto_def::{field, file, message, Kind};
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = (*xds_client::descriptors::hold()).clone();
        let struct_file = pool
            .get_message_by_name("google.protobuf.Struct")
            .expect("Struct")
            .parent_file()
            .name()
            .to_string();
        let typed_struct = file(
            "test/udpa/typed_struct.proto",
            "udpa.type.v1",
            &[struct_file.as_str()],
            vec![message(
                "TypedStruct",
                vec![
                    field("type_url", 1, Kind::String),
                    field("value", 2, Kind::Message(".google.protobuf.Struct")),
                ],
                vec![],
            )],
            vec![],
        );
        pool.add_file_descriptor_protos([typed_struct])
            .expect("test Istio descriptors");
        pool
    })
}

/// One request the proxy sent.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which stream (1 for the first connection, 2 after a reconnect, ...).
    pub stream: u64,
    /// Sent on a Delta stream.
    pub delta: bool,
    /// The resource type.
    pub type_url: String,
    /// SotW `version_info`.
    pub version_info: String,
    /// The nonce answered (empty on a subscription request).
    pub nonce: String,
    /// SotW names, or Delta `resource_names_subscribe`.
    pub names: Vec<String>,
    /// Delta `resource_names_unsubscribe`.
    pub unsubscribe: Vec<String>,
    /// Delta `initial_resource_versions`.
    pub initial_versions: BTreeMap<String, String>,
    /// The NACK's `error_detail.message`.
    pub error: Option<String>,
    /// The node id, when the request carried a node.
    pub node_id: Option<String>,
}

impl Request {
    /// An ACK: answers a response and reports no error.
    pub fn is_ack(&self) -> bool {
        !self.nonce.is_empty() && self.error.is_none()
    }

    /// A NACK.
    pub fn is_nack(&self) -> bool {
        self.error.is_some()
    }

    /// Whether this answers the response with `nonce`.
    pub fn response_nonce_is(&self, nonce: &str) -> bool {
        self.nonce == nonce
    }
}

/// Where the server listens.
#[derive(Debug, Clone)]
pub enum Address {
    /// TCP on loopback.
    Tcp(SocketAddr),
    /// A unix socket.
    Unix(PathBuf),
}

/// type -> name -> (version, resource)
type Resources = BTreeMap<String, BTreeMap<String, (String, Any)>>;

#[derive(Default)]
struct Shared {
    resources: Mutex<Resources>,
    version: AtomicU64,
    streams: AtomicU64,
    nonces: AtomicU64,
    log: Mutex<Vec<Request>>,
    /// Every response sent: (nonce, type, resource names).
    sent: Mutex<Vec<(String, String, Vec<String>)>>,
}

/// Pushes by type, every one delivered to every stream (a watch would merge a CDS push
/// and the EDS push right after it).
type Pushes = tokio::sync::broadcast::Sender<String>;

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The management server.
pub struct ControlPlane {
    shared: Arc<Shared>,
    pushes: Arc<Pushes>,
    kill: Arc<watch::Sender<u64>>,
    /// Where it listens.
    pub address: Address,
    runtime: tokio::runtime::Runtime,
    serving: Option<tokio::task::JoinHandle<()>>,
}

struct Service {
    shared: Arc<Shared>,
    pushes: Arc<Pushes>,
    kill: Arc<watch::Sender<u64>>,
}

impl ControlPlane {
    /// Starts on a free loopback TCP port.
    pub fn tcp() -> ControlPlane {
        let port = crate::free_port();
        Self::start(Address::Tcp(SocketAddr::from(([127, 0, 0, 1], port))))
    }

    /// Starts on a unix socket at `path`.
    pub fn unix(path: PathBuf) -> ControlPlane {
        Self::start(Address::Unix(path))
    }

    fn start(address: Address) -> ControlPlane {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("control plane runtime");
        let mut cp = ControlPlane {
            shared: Arc::new(Shared::default()),
            pushes: Arc::new(tokio::sync::broadcast::channel(4096).0),
            kill: Arc::new(watch::channel(0).0),
            address,
            runtime,
            serving: None,
        };
        cp.serve();
        cp
    }

    fn serve(&mut self) {
        let service = || Service {
            shared: self.shared.clone(),
            pushes: self.pushes.clone(),
            kill: self.kill.clone(),
        };
        let ads = AggregatedDiscoveryServiceServer::new(service())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);

        let _guard = self.runtime.enter();
        let listener = match &self.address {
            Address::Tcp(a) => {
                let l = std::net::TcpListener::bind(a).expect("bind control plane");
                l.set_nonblocking(true).expect("nonblocking");
                Listener::Tcp(tokio::net::TcpListener::from_std(l).expect("tokio listener"))
            }
            Address::Unix(p) => {
                let _ = std::fs::remove_file(p);
                Listener::Unix(
                    tokio::net::UnixListener::bind(p).expect("bind control plane socket"),
                )
            }
        };
        // Connections live in the set: aborting the task drops them all (a dead server).
        self.serving = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let io: Box<dyn Io> = match &listener {
                    Listener::Tcp(l) => match l.accept().await {
                        Ok((s, _)) => Box::new(s),
                        Err(_) => continue,
                    },
                    Listener::Unix(l) => match l.accept().await {
                        Ok((s, _)) => Box::new(s),
                        Err(_) => continue,
                    },
                };
                let ads = ads.clone();
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        use tonic::codegen::Service as _;
                        let mut ads = ads.clone();
                        async move { ads.call(to_aggregated(req)).await }
                    });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                    .await;
                });
            }
        }));
    }

    /// Sets (adds or replaces) a resource; it goes out with the next push of its type.
    pub fn set(&self, type_url: &str, name: &str, resource: Any) {
        let v = self.shared.version.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared
            .resources
            .lock()
            .unwrap()
            .entry(type_url.to_string())
            .or_default()
            .insert(name.to_string(), (format!("{v}"), resource));
    }

    /// Sets a resource from JSON.
    pub fn set_json(&self, type_url: &str, name: &str, json: serde_json::Value) {
        self.set(type_url, name, any(type_url, json));
    }

    /// Removes a resource; the next push of its type omits it (SotW) or lists it in
    /// `removed_resources` (Delta).
    pub fn remove(&self, type_url: &str, name: &str) {
        if let Some(m) = self.shared.resources.lock().unwrap().get_mut(type_url) {
            m.remove(name);
        }
    }

    /// Sends the current resources of `type_url` to every stream subscribed to it.
    pub fn push(&self, type_url: &str) {
        self.shared.version.fetch_add(1, Ordering::Relaxed);
        let _ = self.pushes.send(type_url.to_string());
    }

    /// Ends every open stream with UNAVAILABLE (the server keeps listening).
    pub fn disconnect(&self) {
        self.kill.send_modify(|k| *k += 1);
    }

    /// Stops listening and ends every stream (a dead control plane).
    pub fn stop(&mut self) {
        self.disconnect();
        if let Some(t) = self.serving.take() {
            t.abort();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    /// Listens again on the same address, keeping the resources.
    pub fn restart(&mut self) {
        self.stop();
        self.serve();
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The requests of one type.
    pub fn requests_of(&self, type_url: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.type_url == type_url)
            .collect()
    }

    /// The ACKs and NACKs of one type.
    pub fn answers(&self, type_url: &str) -> Vec<Request> {
        self.requests_of(type_url)
            .into_iter()
            .filter(|r| !r.nonce.is_empty())
            .collect()
    }

    /// Every response sent: (nonce, type, resource names).
    pub fn sent_log(&self) -> Vec<(String, String, Vec<String>)> {
        self.shared.sent.lock().unwrap().clone()
    }

    /// How many responses were sent so far (a mark for [`ControlPlane::wait_verdict`]).
    pub fn sent_count(&self) -> usize {
        self.shared.sent.lock().unwrap().len()
    }

    /// Waits for the proxy's answer (ACK or NACK) to the first response sent after `mark`
    /// that carried resource `name` of `type_url`.
    pub fn wait_verdict(&self, type_url: &str, name: &str, mark: usize, secs: u64) -> Request {
        let mut nonce = None;
        crate::wait_until(
            secs,
            &format!("a response carrying {type_url} {name}"),
            || {
                nonce = self.shared.sent.lock().unwrap()[mark..]
                    .iter()
                    .find(|(_, t, names)| t == type_url && names.iter().any(|n| n == name))
                    .map(|(n, _, _)| n.clone());
                nonce.is_some()
            },
        );
        let nonce = nonce.expect("found");
        self.wait_for(secs, &format!("the answer to {nonce} ({name})"), |r| {
            r.response_nonce_is(&nonce)
        })
    }

    /// The answer to the first response sent after `mark` that carried `name`, if it
    /// arrived.
    pub fn try_verdict(&self, type_url: &str, name: &str, mark: usize) -> Option<Request> {
        let nonce = self.shared.sent.lock().unwrap()[mark..]
            .iter()
            .find(|(_, t, names)| t == type_url && names.iter().any(|n| n == name))
            .map(|(n, _, _)| n.clone())?;
        self.requests()
            .into_iter()
            .find(|r| r.response_nonce_is(&nonce))
    }

    /// The names of `type_url` the latest stream subscribes to now.
    pub fn subscribed(&self, type_url: &str) -> BTreeSet<String> {
        let requests = self.requests_of(type_url);
        let latest = requests.iter().map(|r| r.stream).max().unwrap_or(0);
        let mut names = BTreeSet::new();
        for r in requests.iter().filter(|r| r.stream == latest) {
            if !r.delta {
                names = r.names.iter().cloned().collect();
                continue;
            }
            names.extend(r.names.iter().cloned());
            for n in &r.unsubscribe {
                names.remove(n);
            }
        }
        names
    }

    /// How many streams were opened.
    pub fn streams(&self) -> u64 {
        self.shared.streams.load(Ordering::Relaxed)
    }

    /// Waits until a request matching `pred` arrived (panics after `secs`).
    pub fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&Request) -> bool) -> Request {
        let mut found = None;
        crate::wait_until(secs, what, || {
            found = self.requests().into_iter().find(|r| pred(r));
            found.is_some()
        });
        found.expect("found")
    }

    /// Waits until `n` ACKs or NACKs of `type_url` arrived (in total), returning them.
    pub fn wait_answers(&self, type_url: &str, n: usize, secs: u64) -> Vec<Request> {
        let mut answers = Vec::new();
        crate::wait_until(secs, &format!("{n} answers to {type_url}"), || {
            answers = self.answers(type_url);
            answers.len() >= n
        });
        answers
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(t) = self.serving.take() {
            t.abort();
        }
        if let Address::Unix(p) = &self.address {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Shared {
    fn record(&self, r: Request) {
        self.log.lock().unwrap().push(r);
    }

    fn sent(&self, nonce: &str, type_url: &str, names: Vec<String>) {
        self.sent
            .lock()
            .unwrap()
            .push((nonce.to_string(), type_url.to_string(), names));
    }

    fn nonce(&self) -> String {
        format!("n{}", self.nonces.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The resources of a type: all (wildcard) or the named ones that exist.
    fn select(
        &self,
        type_url: &str,
        wildcard: bool,
        names: &BTreeSet<String>,
    ) -> Vec<(String, String, Any)> {
        let all = self.resources.lock().unwrap();
        all.get(type_url)
            .map(|m| {
                m.iter()
                    .filter(|(n, _)| wildcard || names.contains(*n))
                    .map(|(n, (v, a))| (n.clone(), v.clone(), a.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn is_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER
}

/// Serves the per-type services (CDS, LDS, RDS, EDS, SDS: the same messages on their own
/// streams) with the aggregated service's handlers, by their method path.
fn to_aggregated<B>(mut req: http::Request<B>) -> http::Request<B> {
    let path = req.uri().path();
    if path.starts_with("/envoy.service.") && !path.contains("AggregatedDiscoveryService") {
        let method = path.rsplit('/').next().unwrap_or_default();
        let target = if method.starts_with("Delta") {
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
        } else {
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
        };
        *req.uri_mut() = http::Uri::from_static(target);
    }
    req
}

type ResponseStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

fn outgoing<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<Result<T, Status>>,
) -> ResponseStream<T> {
    Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: GrpcRequest<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(self.state_of_the_world(request))
    }

    async fn delta_aggregated_resources(
        &self,
        request: GrpcRequest<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(self.delta(request))
    }
}

/// Where a stream's responses go.
type Tx<T> = mpsc::UnboundedSender<Result<T, Status>>;

/// The protocol half of one served stream.
trait Session: Default + Send + 'static {
    /// Request message.
    type Req: prost::Message + Default + Send + 'static;
    /// Response message.
    type Resp: Send + 'static;
    /// What the log keeps of a request.
    fn log(stream: u64, req: &Self::Req) -> Request;
    /// Follows a request (subscription change, ACK or NACK).
    fn on_request(&mut self, shared: &Shared, req: Self::Req, tx: &Tx<Self::Resp>);
    /// Sends `type_url`'s current resources if the stream subscribes to them.
    fn on_push(&mut self, shared: &Shared, type_url: &str, tx: &Tx<Self::Resp>);
}

impl Service {
    fn state_of_the_world(
        &self,
        request: GrpcRequest<Streaming<DiscoveryRequest>>,
    ) -> Response<ResponseStream<DiscoveryResponse>> {
        self.serve::<SotwSession>(request)
    }

    fn delta(
        &self,
        request: GrpcRequest<Streaming<DeltaDiscoveryRequest>>,
    ) -> Response<ResponseStream<DeltaDiscoveryResponse>> {
        self.serve::<DeltaSession>(request)
    }

    /// Runs one stream: requests are logged and followed, pushes sent, and a disconnect
    /// ends it with UNAVAILABLE.
    fn serve<S: Session>(
        &self,
        request: GrpcRequest<Streaming<S::Req>>,
    ) -> Response<ResponseStream<S::Resp>> {
        let stream_id = self.shared.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = self.shared.clone();
        let mut pushes = self.pushes.subscribe();
        let mut kill = self.kill.subscribe();
        kill.mark_unchanged();
        tokio::spawn(async move {
            let mut session = S::default();
            loop {
                tokio::select! {
                    _ = kill.changed() => {
                        let _ = tx.send(Err(Status::unavailable("control plane disconnected the stream")));
                        return;
                    }
                    pushed = pushes.recv() => {
                        let Ok(type_url) = pushed else { return };
                        session.on_push(&shared, &type_url, &tx);
                    }
                    msg = inbound.message() => {
                        let Ok(Some(req)) = msg else { return };
                        shared.record(S::log(stream_id, &req));
                        session.on_request(&shared, req, &tx);
                    }
                }
            }
        });
        Response::new(outgoing(rx))
    }
}

/// A state-of-the-world stream: type -> (wildcard, names).
#[derive(Default)]
struct SotwSession {
    subs: BTreeMap<String, (bool, BTreeSet<String>)>,
}

impl SotwSession {
    fn send(
        shared: &Shared,
        tx: &Tx<DiscoveryResponse>,
        type_url: &str,
        wildcard: bool,
        names: &BTreeSet<String>,
    ) {
        let version = shared.version.load(Ordering::Relaxed).to_string();
        let selected = shared.select(type_url, wildcard, names);
        let nonce = shared.nonce();
        shared.sent(
            &nonce,
            type_url,
            selected.iter().map(|(n, _, _)| n.clone()).collect(),
        );
        let _ = tx.send(Ok(DiscoveryResponse {
            version_info: version,
            resources: selected.into_iter().map(|(_, _, a)| a).collect(),
            type_url: type_url.to_string(),
            nonce,
            ..Default::default()
        }));
    }
}

impl Session for SotwSession {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;

    fn log(stream: u64, req: &DiscoveryRequest) -> Request {
        Request {
            stream,
            delta: false,
            type_url: req.type_url.clone(),
            version_info: req.version_info.clone(),
            nonce: req.response_nonce.clone(),
            names: req.resource_names.clone(),
            unsubscribe: Vec::new(),
            initial_versions: BTreeMap::new(),
            error: req.error_detail.as_ref().map(|e| e.message.clone()),
            node_id: req.node.as_ref().map(|n| n.id.clone()),
        }
    }

    fn on_request(&mut self, shared: &Shared, req: DiscoveryRequest, tx: &Tx<DiscoveryResponse>) {
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let wildcard = names.is_empty() && is_wildcard_type(&req.type_url);
        if self.subs.get(&req.type_url) != Some(&(wildcard, names.clone())) {
            self.subs
                .insert(req.type_url.clone(), (wildcard, names.clone()));
            if wildcard || !names.is_empty() {
                Self::send(shared, tx, &req.type_url, wildcard, &names);
            }
        }
    }

    fn on_push(&mut self, shared: &Shared, type_url: &str, tx: &Tx<DiscoveryResponse>) {
        if let Some((w, n)) = self.subs.get(type_url) {
            Self::send(shared, tx, type_url, *w, n);
        }
    }
}

/// A Delta stream: its subscriptions by type.
#[derive(Default)]
struct DeltaSession {
    subs: BTreeMap<String, DeltaSub>,
}

impl DeltaSession {
    /// Sends what the client lacks of `type_url` (changed and removed resources); with
    /// `always`, even an empty response.
    fn send(
        shared: &Shared,
        tx: &Tx<DeltaDiscoveryResponse>,
        type_url: &str,
        sub: &mut DeltaSub,
        always: bool,
    ) {
        let current = shared.select(type_url, sub.wildcard, &sub.names);
        let present: BTreeSet<&String> = current.iter().map(|(n, _, _)| n).collect();
        let removed: Vec<String> = sub
            .client_has
            .keys()
            .filter(|n| !present.contains(n) && (sub.wildcard || sub.names.contains(*n)))
            .cloned()
            .collect();
        let resources: Vec<DeltaResource> = current
            .iter()
            .filter(|(n, v, _)| sub.client_has.get(n) != Some(v))
            .map(|(n, v, a)| DeltaResource {
                name: n.clone(),
                version: v.clone(),
                resource: Some(a.clone()),
                ..Default::default()
            })
            .collect();
        if resources.is_empty() && removed.is_empty() && !always {
            return;
        }
        for r in &resources {
            sub.client_has.insert(r.name.clone(), r.version.clone());
        }
        for n in &removed {
            sub.client_has.remove(n);
        }
        let nonce = shared.nonce();
        shared.sent(
            &nonce,
            type_url,
            resources.iter().map(|r| r.name.clone()).collect(),
        );
        let _ = tx.send(Ok(DeltaDiscoveryResponse {
            system_version_info: shared.version.load(Ordering::Relaxed).to_string(),
            resources,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        }));
    }
}

impl Session for DeltaSession {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;

    fn log(stream: u64, req: &DeltaDiscoveryRequest) -> Request {
        Request {
            stream,
            delta: true,
            type_url: req.type_url.clone(),
            version_info: String::new(),
            nonce: req.response_nonce.clone(),
            names: req.resource_names_subscribe.clone(),
            unsubscribe: req.resource_names_unsubscribe.clone(),
            initial_versions: req.initial_resource_versions.clone().into_iter().collect(),
            error: req.error_detail.as_ref().map(|e| e.message.clone()),
            node_id: req.node.as_ref().map(|n| n.id.clone()),
        }
    }

    fn on_request(
        &mut self,
        shared: &Shared,
        req: DeltaDiscoveryRequest,
        tx: &Tx<DeltaDiscoveryResponse>,
    ) {
        if !req.response_nonce.is_empty() {
            return;
        }
        let first = !self.subs.contains_key(&req.type_url);
        let sub = self
            .subs
            .entry(req.type_url.clone())
            .or_insert_with(|| DeltaSub {
                wildcard: false,
                names: BTreeSet::new(),
                client_has: req.initial_resource_versions.clone().into_iter().collect(),
            });
        for n in &req.resource_names_subscribe {
            if n == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(n);
            }
            sub.client_has.remove(n);
        }
        if first && req.resource_names_subscribe.is_empty() && is_wildcard_type(&req.type_url) {
            sub.wildcard = true;
        }
        Self::send(shared, tx, &req.type_url, sub, first);
    }

    fn on_push(&mut self, shared: &Shared, type_url: &str, tx: &Tx<DeltaDiscoveryResponse>) {
        if let Some(sub) = self.subs.get_mut(type_url) {
            Self::send(shared, tx, type_url, sub, false);
        }
    }
}

/// A Delta subscription of one type on one stream.
struct DeltaSub {
    wildcard: bool,
    names: BTreeSet<String>,
    client_has: BTreeMap<String, String>,
}

/// Test resources and bootstraps in the shape istiod and pilot-agent produce.
pub mod resources {
    use super::{Address, ControlPlane};
    use serde_json::{json, Value};

    /// A static HTTP/2 cluster `name` pointing at `cp`, as pilot-agent's bootstrap has
    /// `xds-grpc` and `sds-grpc`.
    pub fn grpc_cluster(name: &str, cp: &ControlPlane) -> Value {
        let address = match &cp.address {
            Address::Tcp(a) => {
                json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
            }
            Address::Unix(p) => json!({"pipe": {"path": p.display().to_string()}}),
        };
        json!({
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
        })
    }

    /// A bootstrap whose ADS stream (`GRPC` or `DELTA_GRPC`) goes to `cp` through the
    /// static `xds-grpc` cluster, with CDS and LDS over ADS (initial fetch timeout 0s:
    /// wait for the first answer, as pilot-agent configures it).
    pub fn ads_bootstrap(cp: &ControlPlane, delta: bool, static_listeners: Vec<Value>) -> String {
        let source =
            json!({"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"});
        crate::config::bootstrap_with(
            static_listeners,
            vec![grpc_cluster("xds-grpc", cp)],
            json!({
                "node": {"id": "sidecar~10.0.0.1~app.default~default.svc.cluster.local", "cluster": "app.default"},
                "dynamic_resources": {
                    "ads_config": {"api_type": if delta { "DELTA_GRPC" } else { "GRPC" },
                        "transport_api_version": "V3", "set_node_on_first_message_only": true,
                        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
                    "cds_config": source, "lds_config": source
                }
            }),
        )
    }

    /// A config source on its own stream to the `xds-grpc` cluster (`api_config_source`).
    pub fn api_source(delta: bool) -> Value {
        json!({"api_config_source": {"api_type": if delta { "DELTA_GRPC" } else { "GRPC" },
            "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
            "initial_fetch_timeout": "0s", "resource_api_version": "V3"})
    }

    /// A bootstrap without ADS: CDS (state-of-the-world) and LDS (Delta) each on their own
    /// stream to `cp`.
    pub fn api_bootstrap(cp: &ControlPlane) -> String {
        crate::config::bootstrap_with(
            vec![],
            vec![grpc_cluster("xds-grpc", cp)],
            json!({
                "node": {"id": "router~10.0.0.2~gw.default~default.svc.cluster.local", "cluster": "gw"},
                "dynamic_resources": {"cds_config": api_source(false), "lds_config": api_source(true)}
            }),
        )
    }

    /// One HTTP service: EDS cluster `backend` (endpoint on `upstream_port`), listener
    /// `http` on `listener_port` taking route configuration `routes` (tagged `v1`) from RDS.
    pub fn seed_http_service(cp: &ControlPlane, listener_port: u16, upstream_port: u16) {
        eds_service(cp, "backend", &[upstream_port]);
        cp.set_json(
            super::LISTENER,
            "http",
            rds_listener("http", listener_port, "routes"),
        );
        cp.set_json(
            super::ROUTE,
            "routes",
            route_config("routes", "backend", "v1"),
        );
    }

    /// Serves EDS cluster `name` with its endpoints on 127.0.0.1 `ports`.
    pub fn eds_service(cp: &ControlPlane, name: &str, ports: &[u16]) {
        cp.set_json(super::CLUSTER, name, eds_cluster(name));
        cp.set_json(super::ENDPOINT, name, assignment(name, ports));
    }

    /// An EDS cluster fetched over ADS.
    pub fn eds_cluster(name: &str) -> Value {
        json!({"name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}, "service_name": name}})
    }

    /// A load assignment with endpoints on 127.0.0.1 ports.
    pub fn assignment(name: &str, ports: &[u16]) -> Value {
        let eps: Vec<Value> = ports
            .iter()
            .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
            .collect();
        json!({"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]})
    }

    /// A listener on 127.0.0.1:`port` whose HCM takes route configuration `routes` from RDS.
    pub fn rds_listener(name: &str, port: u16, routes: &str) -> Value {
        json!({
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "rds": {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": routes},
                "http_filters": crate::config::router()
            }}]}]
        })
    }

    /// A route configuration sending everything to `cluster`, adding `x-route: <tag>` to
    /// responses (so a test sees which version served).
    pub fn route_config(name: &str, cluster: &str, tag: &str) -> Value {
        json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}],
            "response_headers_to_add": [{"header": {"key": "x-route", "value": tag}}]})
    }
}
