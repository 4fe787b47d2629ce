//! The `meshproxy` binary: an Envoy-compatible command line over [`meshproxy::app`].

fn main() {
    std::process::exit(meshproxy::app::main());
}
