//! Mutation fuzzing of the whole scan: mutated BAM bytes (recompressed) and mutated BGZF bytes
//! go through registration, partitioning and decoding, with and without `skip_damaged`.
//!
//! Every case must end, within a time limit, in rows or in an error naming the file; never a
//! panic. With `skip_damaged`, no record-level error may escape. Rows read without error and
//! without skipping must be the same at 1 and 3 partitions, and equal samtools' where samtools
//! reads the file too. A short deterministic run is
//! part of the suite; `tests/fuzz.sh` runs it for longer with fresh seeds and saves failing
//! inputs to `tests/data/fuzz/`, which [`saved_findings_stay_fixed`] replays.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion_bam::{BamOptions, BamSessionExt};

use crate::damage::{deflate, inflate, record_offsets, sample};
use crate::oracle::{data, repo_root, table_rows, try_samtools_rows, Row};
use crate::partitions::split_context;
use crate::query;

/// Cases of the deterministic run in the normal suite.
const SUITE_CASES: u64 = 120;

/// Longest a scan of a small mutated file may take before it counts as hanging.
const CASE_TIME_LIMIT: Duration = Duration::from_secs(30);

/// xorshift64*: a seeded, dependency-free source of mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The seeds: a small slice of sample.bam (a few BGZF blocks) and the edge-case file.
fn seeds() -> Vec<Vec<u8>> {
    let whole = inflate(&sample());
    let offsets = record_offsets(&whole);
    let small = deflate(&whole[..offsets[400]]);
    vec![small, std::fs::read(data("edge.bam")).unwrap()]
}

const INTERESTING: [u32; 9] = [0, 1, 31, 32, 255, 65_535, 0x7fff_ffff, 0xffff_ffff, 200 << 20];

/// Mutates BAM data (to be recompressed) or BGZF bytes in place.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        if len < 8 {
            return;
        }
        match rng.below(6) {
            0 => bytes[rng.below(len)] ^= 1 << rng.below(8),
            1 => bytes[rng.below(len)] = rng.next() as u8,
            2 => {
                let at = rng.below(len - 4);
                bytes[at..at + 4].copy_from_slice(&INTERESTING[rng.below(INTERESTING.len())].to_le_bytes());
            }
            3 => bytes.truncate(rng.below(len)),
            4 => {
                let (from, n) = (rng.below(len), rng.below(200));
                let piece: Vec<u8> = bytes[from..(from + n).min(len)].to_vec();
                let at = rng.below(len);
                bytes.splice(at..at, piece);
            }
            _ => {
                let (from, n) = (rng.below(len), rng.below(200));
                bytes.drain(from..(from + n).min(len));
            }
        }
    }
}

/// One fuzz input from `seed`: mutated before or after compression.
fn case(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let seeds = seeds();
    let chosen = &seeds[rng.below(seeds.len())];
    if rng.below(2) == 0 {
        let mut data = inflate(chosen);
        mutate(&mut rng, &mut data);
        deflate(&data)
    } else {
        let mut bytes = chosen.clone();
        mutate(&mut rng, &mut bytes);
        bytes
    }
}

/// Scans `path` every way; returns what went wrong, if anything did.
async fn check(path: &Path) -> Result<(), String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let uncompressed_bound = 64 * std::fs::metadata(path).unwrap().len() as usize + (1 << 20);
    // Rows read without error and without skipping, by partition count.
    let mut clean_rows: Vec<(usize, Vec<Row>)> = Vec::new();
    for partitions in [1, 3] {
        for skip_damaged in [false, true] {
            let ctx = split_context(partitions);
            let scan = async {
                ctx.register_bam("t", path.to_str().unwrap(), BamOptions::default().with_skip_damaged(skip_damaged))
                    .await?;
                query(&ctx, "SELECT * FROM t").await
            };
            let how = format!("{partitions} partitions, skip_damaged={skip_damaged}");
            match tokio::time::timeout(CASE_TIME_LIMIT, scan).await {
                Err(_) => return Err(format!("{how}: no answer within {CASE_TIME_LIMIT:?}")),
                Ok(Ok(batches)) => {
                    // Each record has at least 36 bytes: more rows than that would be invented.
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    if rows * 36 > uncompressed_bound {
                        return Err(format!("{how}: {rows} rows from a {uncompressed_bound}-byte bound"));
                    }
                    if !skip_damaged {
                        let mut rows = table_rows(&batches);
                        rows.sort();
                        clean_rows.push((partitions, rows));
                    }
                }
                Ok(Err(e)) => {
                    let e = e.to_string();
                    if ["panicked", "task failed", "Join Error"].iter().any(|p| e.contains(p)) {
                        return Err(format!("{how}: panic: {e}"));
                    }
                    if !e.contains(name) {
                        return Err(format!("{how}: the error does not name the file: {e}"));
                    }
                    if skip_damaged && (e.contains("invalid record: ") || e.contains("invalid record length")) {
                        return Err(format!("{how}: a damaged record was not skipped: {e}"));
                    }
                }
            }
        }
    }
    // What is read without error is the same at every partition count, and what samtools reads
    // too is what samtools reads.
    if let [(_, first), rest @ ..] = clean_rows.as_slice() {
        if let Some((n, _)) = rest.iter().find(|(_, rows)| rows != first) {
            return Err(format!("rows at 1 and {n} partitions differ"));
        }
        if let Some(mut expected) = try_samtools_rows(path) {
            expected.sort();
            if &expected != first {
                return Err(format!("{} rows read, samtools reads {} rows that differ", first.len(), expected.len()));
            }
        }
    }
    Ok(())
}

/// Runs cases from `first` on, for `count` cases or until `deadline`; saves failing inputs to
/// `findings` when given. Returns the failures.
async fn run(first: u64, count: u64, deadline: Option<Instant>, findings: Option<&Path>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut seed = first;
    while seed < first + count && deadline.is_none_or(|d| Instant::now() < d) {
        let path = dir.path().join(format!("fuzz-{seed}.bam"));
        std::fs::write(&path, case(seed)).unwrap();
        if let Err(why) = check(&path).await {
            if let Some(findings) = findings {
                std::fs::create_dir_all(findings).unwrap();
                std::fs::copy(&path, findings.join(path.file_name().unwrap())).unwrap();
            }
            failures.push(format!("seed {seed}: {why}"));
        }
        seed += 1;
    }
    eprintln!("fuzz: ran seeds {first}..{seed}, {} failures", failures.len());
    failures
}

/// The suite's fixed seeds, or with `BAM_FUZZ_SECONDS` set (see `tests/fuzz.sh`) a longer run
/// from `BAM_FUZZ_FIRST_SEED`, saving failures to `BAM_FUZZ_FINDINGS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_bam_never_panics_or_hangs() {
    let seconds: Option<u64> =
        std::env::var("BAM_FUZZ_SECONDS").ok().map(|s| s.parse().expect("BAM_FUZZ_SECONDS is a number"));
    let failures = match seconds {
        None => run(0, SUITE_CASES, None, None).await,
        Some(s) => {
            let first = std::env::var("BAM_FUZZ_FIRST_SEED").map_or(SUITE_CASES, |v| v.parse().expect("a seed number"));
            let findings = std::env::var_os("BAM_FUZZ_FINDINGS").map(PathBuf::from);
            run(first, u64::MAX - first, Some(Instant::now() + Duration::from_secs(s)), findings.as_deref()).await
        }
    };
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Inputs the fuzzer once failed on, kept in `tests/data/fuzz/`.
#[tokio::test]
async fn saved_findings_stay_fixed() {
    let dir = repo_root().join("tests/data/fuzz");
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if let Err(why) = check(&path).await {
            failures.push(format!("{}: {why}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
