//! CI's fuzzing: every target replays its committed corpus (`corpus/<target>/`: seeds and
//! every crash input found so far), then seeded mutations of it, for at most
//! `MUTATIONS` inputs or `BUDGET` per target. A failing input is written to
//! `$CARGO_TARGET_TMPDIR/fuzz-failures/<target>` and named in the failure.

mod support;

use fuzz_targets::{Target, TARGETS};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{mutate, Rng};

const MUTATIONS: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(3);

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            (p, bytes)
        })
        .collect()
}

/// Runs `target` on `input`; on a panic, keeps the input and returns where it came from.
fn run(name: &str, target: Target, input: &[u8], origin: &str) -> Result<(), String> {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_ok() {
        return Ok(());
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    std::fs::create_dir_all(&dir).expect("failure dir");
    let kept = dir.join(name);
    std::fs::write(&kept, input).expect("failure input");
    Err(format!(
        "{name} failed on {origin}; input kept in {}",
        kept.display()
    ))
}

/// The corpus, then seeded mutations of it, until the first failure.
fn fuzz(index: usize, name: &str, target: Target) -> Result<(), String> {
    let seeds = corpus(name);
    for (path, bytes) in &seeds {
        run(name, target, bytes, &path.display().to_string())?;
    }
    let mut rng = Rng::new(0x5EED_0000 + index as u64);
    let started = Instant::now();
    let mut done = 0;
    while done < MUTATIONS && started.elapsed() < BUDGET {
        let (_, input) = &seeds[rng.below(seeds.len())];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let mutated = mutate(&mut rng, input, other);
        run(name, target, &mutated, &format!("mutation {done}"))?;
        done += 1;
    }
    eprintln!(
        "{name}: {} corpus inputs, {done} mutations in {:?}",
        seeds.len(),
        started.elapsed()
    );
    Ok(())
}

#[test]
fn every_target_has_a_corpus_and_a_libfuzzer_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in TARGETS {
        assert!(corpus(name).len() >= 3, "{name}: corpus too small");
        let bin = root.join("fuzz/fuzz_targets").join(format!("{name}.rs"));
        assert!(bin.exists(), "{name}: no {}", bin.display());
    }
}

#[test]
fn corpus_and_seeded_mutations_keep_every_invariant() {
    let failures: Vec<String> = TARGETS
        .iter()
        .enumerate()
        .filter_map(|(index, (name, target))| fuzz(index, name, *target).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
