//! SDK for writing Proxy-Wasm filters for meshproxy in Rust. Empty until the Proxy-Wasm
//! issue: it exports nothing, so nothing can depend on behaviour it does not have.
