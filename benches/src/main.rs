//! The side-by-side benchmark runner against Envoy 1.40 (issue 3). Not implemented yet: it
//! says so and exits non-zero rather than printing numbers it did not measure.

fn main() {
    eprintln!("benches: the benchmark runner is not implemented yet (see the benchmarks issue)");
    std::process::exit(2);
}
