//! The fuzz targets' smoke run, on stable Rust: every input under
//! `fuzz/corpus/<target>/` (the seeds, and whatever a fuzz run added there)
//! goes through its target, which must not panic. The long runs are
//! `cargo +nightly fuzz run <target>` (BENCHMARKS.md).

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in revokd::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            revokd::fuzzing::run(target, &data);
            inputs += 1;
        }
        assert!(inputs > 0, "no seed for {target}");
        // Truncations of every seed too: the parsers' edge cases are at the ends.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            for end in 0..data.len().min(256) {
                revokd::fuzzing::run(target, &data[..end]);
            }
        }
    }
}
