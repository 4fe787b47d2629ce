//! HTTP/1.0 admission, as Envoy's HTTP/1 codec and connection manager decide it: without
//! `http_protocol_options.accept_http_10` an HTTP/1.0 request gets 426 Upgrade Required
//! (Istio turns HTTP/1.0 on per mesh or per pod, so a sidecar without the switch must
//! refuse it); with it, a request without `Host` takes `default_host_for_http_10`, or
//! gets 400 when none is configured.

use super::local_reply::LocalReply;
use crate::access_log::record::Record;
use http::{header, HeaderValue, Request, Version};

/// A connection manager's HTTP/1.0 options (`Http1ProtocolOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Http10Options {
    /// `accept_http_10`.
    pub accept: bool,
    /// `default_host_for_http_10`.
    pub default_host: Option<HeaderValue>,
}

/// Admits a request: HTTP/1.1 and HTTP/2 always; HTTP/1.0 as `options` say, its `Host`
/// filled in from the default. A refusal is the local reply to send.
pub fn admit<B>(
    req: &mut Request<B>,
    options: &Http10Options,
    record: &mut Record,
) -> Result<(), LocalReply> {
    if req.version() != Version::HTTP_10 {
        return Ok(());
    }
    if !options.accept {
        // Envoy's codec refuses before it has a request: its log shows no method or
        // path, and the protocol of its HTTP/1.1 answer.
        record.protocol = "HTTP/1.1";
        return Err(LocalReply::http10_refused());
    }
    if req.headers().contains_key(header::HOST) {
        return Ok(());
    }
    match &options.default_host {
        Some(host) => {
            req.headers_mut().insert(header::HOST, host.clone());
            Ok(())
        }
        None => Err(LocalReply::missing_host()),
    }
}

/// For an HTTP/1.0 request, whether it asked to keep the connection (`Connection:
/// keep-alive`); `None` for later versions, whose connections persist by default.
pub fn asks_keep_alive<B>(req: &Request<B>) -> Option<bool> {
    (req.version() == Version::HTTP_10).then(|| {
        req.headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
    })
}

/// Marks the response to an HTTP/1.0 request as Envoy does: an HTTP/1.0 response saying
/// `connection: keep-alive` when the connection stays, `connection: close` otherwise.
pub fn persist<B>(resp: &mut http::Response<B>, keep: bool) {
    *resp.version_mut() = Version::HTTP_10;
    resp.headers_mut().insert(
        header::CONNECTION,
        HeaderValue::from_static(if keep { "keep-alive" } else { "close" }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, host: Option<&'static str>) -> Request<()> {
        let mut r = Request::builder().version(version).uri("/");
        if let Some(h) = host {
            r = r.header(header::HOST, h);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn http10_is_refused_unless_accepted_and_takes_the_default_host() {
        let mut record = Record::new(1);
        let off = Http10Options::default();
        let e = admit(&mut request(Version::HTTP_10, Some("a")), &off, &mut record).unwrap_err();
        assert_eq!((e.status.as_u16(), &*e.details), (426, "low_version"));
        assert!(admit(&mut request(Version::HTTP_11, None), &off, &mut record).is_ok());
        let on = Http10Options {
            accept: true,
            default_host: Some(HeaderValue::from_static("d.example")),
        };
        let mut r = request(Version::HTTP_10, None);
        admit(&mut r, &on, &mut record).unwrap();
        assert_eq!(r.headers()[header::HOST], "d.example");
        let mut r = request(Version::HTTP_10, Some("given"));
        admit(&mut r, &on, &mut record).unwrap();
        assert_eq!(r.headers()[header::HOST], "given");
        let bare = Http10Options {
            accept: true,
            default_host: None,
        };
        let e = admit(&mut request(Version::HTTP_10, None), &bare, &mut record).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), &*e.details),
            (400, "missing_host_header")
        );
    }
}
