//! `envoy.filters.http.compressor`: compresses responses with gzip, brotli or zstd when the
//! client accepts it and the response qualifies (content type, size, no prior encoding,
//! no `cache-control: no-transform`), following Envoy's documented rules.

use super::{Body, BoxError};
use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_TYPE, ETAG, VARY,
};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use std::io::Write;
use xds_client::proto::envoy::extensions::compression as lib;
use xds_client::proto::envoy::extensions::filters::http::compressor::v3 as proto;

/// The filter's protobuf type name.
pub const TYPE_NAME: &str = "envoy.extensions.filters.http.compressor.v3.Compressor";

/// Envoy's default compressible content types.
const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "application/javascript",
    "application/x-javascript",
    "text/javascript",
    "text/x-javascript",
    "text/ecmascript",
    "text/js",
    "text/jscript",
    "text/x-js",
    "application/ecmascript",
    "application/x-json",
    "application/xml",
    "application/json",
    "image/svg+xml",
    "text/xml",
    "application/xhtml+xml",
];

/// The compression library and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// gzip with a level 0-9.
    Gzip { level: u32 },
    /// brotli with quality 0-11 and window bits.
    Brotli { quality: u32, window_bits: u32 },
    /// zstd with a level.
    Zstd { level: i32 },
}

impl Library {
    /// The `content-encoding` token.
    pub fn encoding(&self) -> &'static str {
        match self {
            Library::Gzip { .. } => "gzip",
            Library::Brotli { .. } => "br",
            Library::Zstd { .. } => "zstd",
        }
    }
}

/// A translated Compressor filter config.
#[derive(Debug, Clone)]
pub struct CompressorConfig {
    /// Library.
    pub library: Library,
    /// Compress responses (default true).
    pub response_enabled: bool,
    /// Minimum known content length (default 30).
    pub min_content_length: u64,
    /// Content types to compress (media type only, lower case).
    pub content_types: Vec<String>,
    /// Skip responses with an ETag.
    pub disable_on_etag: bool,
    /// Remove `accept-encoding` before the upstream sees it.
    pub remove_accept_encoding: bool,
}

impl CompressorConfig {
    /// Translates the filter's protobuf bytes; request-direction compression is rejected.
    #[allow(deprecated)] // CommonDirectionConfig.content_type is the current field despite the lint
    pub fn from_proto(bytes: &[u8]) -> Result<Self, String> {
        let c =
            proto::Compressor::decode(bytes).map_err(|e| format!("malformed Compressor: {e}"))?;
        if c.request_direction_config
            .as_ref()
            .and_then(|r| r.common_config.as_ref())
            .and_then(|c| c.enabled.as_ref())
            .is_some_and(|e| e.default_value.as_ref().is_some_and(|v| v.value))
        {
            return Err("request_direction_config: request compression is not supported".into());
        }
        let lib_any = c
            .compressor_library
            .as_ref()
            .and_then(|l| l.typed_config.as_ref())
            .ok_or("compressor_library.typed_config is required")?;
        let library = match xds_client::descriptors::type_name_of_url(&lib_any.type_url) {
            "envoy.extensions.compression.gzip.compressor.v3.Gzip" => {
                let g = lib::gzip::compressor::v3::Gzip::decode(lib_any.value.as_slice())
                    .map_err(|e| e.to_string())?;
                // BEST_SPEED=1, BEST_COMPRESSION=2 (9), DEFAULT=0 (6), COMPRESSION_LEVEL_1..9 = 3..11.
                let level = match g.compression_level {
                    1 => 1,
                    2 => 9,
                    n @ 3..=11 => n as u32 - 2,
                    _ => 6,
                };
                Library::Gzip { level }
            }
            "envoy.extensions.compression.brotli.compressor.v3.Brotli" => {
                let b = lib::brotli::compressor::v3::Brotli::decode(lib_any.value.as_slice())
                    .map_err(|e| e.to_string())?;
                Library::Brotli {
                    quality: b.quality.as_ref().map(|v| v.value).unwrap_or(3).min(11),
                    window_bits: b
                        .window_bits
                        .as_ref()
                        .map(|v| v.value)
                        .unwrap_or(18)
                        .clamp(10, 24),
                }
            }
            "envoy.extensions.compression.zstd.compressor.v3.Zstd" => {
                let z = lib::zstd::compressor::v3::Zstd::decode(lib_any.value.as_slice())
                    .map_err(|e| e.to_string())?;
                Library::Zstd {
                    level: z
                        .compression_level
                        .as_ref()
                        .map(|v| v.value as i32)
                        .unwrap_or(3),
                }
            }
            other => return Err(format!("compressor_library: unsupported library {other}")),
        };
        let response = c.response_direction_config.clone().unwrap_or_default();
        let common = response.common_config.clone().unwrap_or_default();
        let content_types = if common.content_type.is_empty() {
            DEFAULT_CONTENT_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            common
                .content_type
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect()
        };
        Ok(CompressorConfig {
            library,
            response_enabled: common
                .enabled
                .as_ref()
                .and_then(|e| e.default_value.as_ref())
                .map(|v| v.value)
                .unwrap_or(true),
            min_content_length: common
                .min_content_length
                .as_ref()
                .map(|v| u64::from(v.value))
                .unwrap_or(30),
            content_types,
            disable_on_etag: response.disable_on_etag_header,
            remove_accept_encoding: response.remove_accept_encoding_header,
        })
    }

    /// Whether a response with these headers should be compressed.
    pub fn response_qualifies(&self, status: http::StatusCode, headers: &HeaderMap) -> bool {
        if !self.response_enabled
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED
        {
            return false;
        }
        if headers
            .get(CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes() != b"identity")
        {
            return false;
        }
        if header_tokens(headers.get(CACHE_CONTROL)).any(|t| t.eq_ignore_ascii_case("no-transform"))
        {
            return false;
        }
        if self.disable_on_etag && headers.contains_key(ETAG) {
            return false;
        }
        if let Some(len) = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len < self.min_content_length {
                return false;
            }
        }
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        match media_type {
            Some(t) => self.content_types.contains(&t),
            None => true,
        }
    }

    /// Rewrites headers for a compressed response and wraps the body in the encoder.
    pub fn compress(&self, headers: &mut HeaderMap, body: Body) -> Body {
        headers.remove(CONTENT_LENGTH);
        headers.insert(
            CONTENT_ENCODING,
            HeaderValue::from_static(self.library.encoding()),
        );
        if !header_tokens(headers.get(VARY)).any(|t| t.eq_ignore_ascii_case("accept-encoding")) {
            headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        if let Some(etag) = headers.get(ETAG).cloned() {
            if !etag.as_bytes().starts_with(b"W/") {
                let mut weak = b"W/".to_vec();
                weak.extend_from_slice(etag.as_bytes());
                if let Ok(v) = HeaderValue::from_bytes(&weak) {
                    headers.insert(ETAG, v);
                }
            }
        }
        CompressedBody {
            inner: body,
            encoder: Encoder::new(self.library),
            finished: false,
            trailers: None,
        }
        .boxed()
    }
}

fn header_tokens(v: Option<&HeaderValue>) -> impl Iterator<Item = &str> {
    v.and_then(|v| v.to_str().ok())
        .into_iter()
        .flat_map(|s| s.split(',').map(str::trim))
}

/// Picks the encoding for a response among `available` (in filter order), per the request's
/// `accept-encoding`: the highest q-value wins, `*` covers unlisted encodings, q=0 excludes,
/// ties go to the first filter. `None` when the client accepts none of them (or no header).
pub fn choose_encoding<'a>(request: &HeaderMap, available: &[&'a str]) -> Option<&'a str> {
    let header = request
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    if header.trim().is_empty() {
        return None;
    }
    let mut prefs: Vec<(String, f32)> = Vec::new();
    for item in header.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        prefs.push((name, q));
    }
    let q_of = |enc: &str| {
        prefs
            .iter()
            .find(|(n, _)| n == enc)
            .map(|(_, q)| *q)
            .or_else(|| prefs.iter().find(|(n, _)| n == "*").map(|(_, q)| *q))
    };
    let mut best: Option<(&'a str, f32)> = None;
    for enc in available {
        if let Some(q) = q_of(enc).filter(|q| *q > 0.0) {
            if best.is_none_or(|(_, bq)| q > bq) {
                best = Some((enc, q));
            }
        }
    }
    let identity_q = prefs.iter().find(|(n, _)| n == "identity").map(|(_, q)| *q);
    match (best, identity_q) {
        (Some((_, q)), Some(iq)) if iq > q => None,
        (b, _) => b.map(|(e, _)| e),
    }
}

/// A streaming encoder that returns the compressed bytes produced by each input chunk.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Done,
}

impl Encoder {
    fn new(library: Library) -> Self {
        match library {
            Library::Gzip { level } => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level),
            )),
            Library::Brotli {
                quality,
                window_bits,
            } => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                quality,
                window_bits,
            ))),
            Library::Zstd { level } => match zstd::stream::write::Encoder::new(Vec::new(), level) {
                Ok(e) => Encoder::Zstd(e),
                Err(_) => Encoder::Done,
            },
        }
    }

    fn write(&mut self, chunk: &[u8]) -> Result<Bytes, BoxError> {
        let out = match self {
            Encoder::Gzip(e) => {
                e.write_all(chunk)?;
                e.flush()?;
                std::mem::take(e.get_mut())
            }
            Encoder::Brotli(e) => {
                e.write_all(chunk)?;
                e.flush()?;
                std::mem::take(e.get_mut())
            }
            Encoder::Zstd(e) => {
                e.write_all(chunk)?;
                e.flush()?;
                std::mem::take(e.get_mut())
            }
            Encoder::Done => return Err("compressor used after finish".into()),
        };
        Ok(out.into())
    }

    fn finish(&mut self) -> Result<Bytes, BoxError> {
        let out = match std::mem::replace(self, Encoder::Done) {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Brotli(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
            Encoder::Done => Vec::new(),
        };
        Ok(out.into())
    }
}

/// A response body passed through an [`Encoder`]; trailers pass untouched after the
/// compressed data is flushed.
struct CompressedBody {
    inner: Body,
    encoder: Encoder,
    finished: bool,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for CompressedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        if self.finished {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        loop {
            return match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match self.encoder.write(&data) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => Poll::Ready(Some(Err(e))),
                    },
                    // Trailers end the body: flush the encoder, then pass them on.
                    Err(frame) => {
                        self.finished = true;
                        self.trailers = frame.into_trailers().ok();
                        Poll::Ready(Some(self.encoder.finish().map(Frame::data)))
                    }
                },
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    self.finished = true;
                    Poll::Ready(Some(self.encoder.finish().map(Frame::data)))
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn chooses_by_q_value_then_filter_order() {
        let avail = ["br", "zstd", "gzip"];
        assert_eq!(
            choose_encoding(&headers(&[("accept-encoding", "gzip, br")]), &avail),
            Some("br")
        );
        assert_eq!(
            choose_encoding(
                &headers(&[("accept-encoding", "gzip;q=1, br;q=0.5")]),
                &avail
            ),
            Some("gzip")
        );
        assert_eq!(
            choose_encoding(&headers(&[("accept-encoding", "br;q=0, *;q=0.2")]), &avail),
            Some("zstd")
        );
        assert_eq!(
            choose_encoding(&headers(&[("accept-encoding", "deflate")]), &avail),
            None
        );
        assert_eq!(
            choose_encoding(
                &headers(&[("accept-encoding", "gzip;q=0.5, identity")]),
                &avail
            ),
            None
        );
        assert_eq!(choose_encoding(&HeaderMap::new(), &avail), None);
    }

    fn config(library: Library) -> CompressorConfig {
        CompressorConfig {
            library,
            response_enabled: true,
            min_content_length: 30,
            content_types: vec!["text/plain".into()],
            disable_on_etag: false,
            remove_accept_encoding: false,
        }
    }

    #[test]
    fn qualification_rules() {
        let c = config(Library::Gzip { level: 6 });
        let ok = http::StatusCode::OK;
        assert!(c.response_qualifies(
            ok,
            &headers(&[("content-type", "text/plain; charset=utf-8")])
        ));
        assert!(!c.response_qualifies(ok, &headers(&[("content-type", "image/png")])));
        assert!(!c.response_qualifies(ok, &headers(&[("content-length", "10")])));
        assert!(!c.response_qualifies(ok, &headers(&[("content-encoding", "br")])));
        assert!(!c.response_qualifies(
            ok,
            &headers(&[("cache-control", "max-age=1, no-transform")])
        ));
        assert!(!c.response_qualifies(http::StatusCode::NO_CONTENT, &HeaderMap::new()));
    }

    async fn round_trip(library: Library) -> (HeaderMap, Vec<u8>) {
        let text = "hello compressed world ".repeat(100);
        let mut h = headers(&[
            ("content-length", &text.len().to_string()),
            ("etag", "\"abc\""),
        ]);
        let body = Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed();
        let out = config(library)
            .compress(&mut h, body)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        (h, out.to_vec())
    }

    #[tokio::test]
    async fn gzip_brotli_zstd_decode_back() {
        let want = "hello compressed world ".repeat(100).into_bytes();
        let (h, gz) = round_trip(Library::Gzip { level: 6 }).await;
        assert_eq!(h.get("content-encoding").unwrap(), "gzip");
        assert!(h.get("content-length").is_none());
        assert_eq!(h.get("vary").unwrap(), "Accept-Encoding");
        assert_eq!(h.get("etag").unwrap(), "W/\"abc\"");
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
        assert_eq!(plain, want);

        let (_, br) = round_trip(Library::Brotli {
            quality: 3,
            window_bits: 18,
        })
        .await;
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut brotli::Decompressor::new(&br[..], 4096), &mut plain)
            .unwrap();
        assert_eq!(plain, want);

        let (_, zs) = round_trip(Library::Zstd { level: 3 }).await;
        assert_eq!(zstd::stream::decode_all(&zs[..]).unwrap(), want);
        assert!(zs.len() < want.len());
    }
}
