//! Mutation fuzzing of the whole scan: mutated BAM, SAM, `.sam.gz` and CRAM files (mutated
//! before or after compression) go through registration, partitioning and decoding, with and
//! without `skip_damaged`.
//!
//! Every case must end, within a time limit, in rows or in an error naming the file; never a
//! panic. With `skip_damaged`, no record-level error may escape. The oracle looks both ways:
//! - a file read at one partition count must be read, with the same rows, at the other;
//! - a file samtools reads cleanly must be read, with samtools' rows, and a file samtools
//!   rejects must be rejected;
//! - every row `skip_damaged` gives must be one samtools printed from the file, or one of the
//!   undamaged file's: skipping may lose records, never invent them.
//!
//! A short deterministic run is part of the suite; `tests/fuzz.sh` runs it for longer with fresh
//! seeds and saves failing inputs to `tests/data/fuzz/`, which [`saved_findings_stay_fixed`]
//! replays.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use datafusion_bam::{AlignmentFormat, BamOptions, BamSessionExt};

use crate::damage::{deflate, inflate, record_offsets, sample};
use crate::oracle::{data, repo_root, samtools, samtools_read, table_rows, Row, TagValue};
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

/// The formats fuzzed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bam,
    Sam,
    SamGz,
    Cram,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Bam, Kind::Sam, Kind::SamGz, Kind::Cram];

    /// The kind of a saved finding, by its name.
    fn of(path: &Path) -> Kind {
        let name = path.file_name().unwrap().to_str().unwrap();
        *Self::ALL.iter().find(|k| name.ends_with(k.extension())).unwrap_or_else(|| panic!("{name}: not a fuzz case"))
    }

    fn extension(self) -> &'static str {
        match self {
            Kind::Bam => ".bam",
            Kind::Sam => ".sam",
            Kind::SamGz => ".sam.gz",
            Kind::Cram => ".cram",
        }
    }

    /// The table's options: the format, and the CRAM seeds' reference.
    fn options(self) -> BamOptions {
        match self {
            Kind::Bam => BamOptions::default(),
            Kind::Sam | Kind::SamGz => BamOptions::default().with_format(AlignmentFormat::Sam),
            Kind::Cram => BamOptions::default().with_format(AlignmentFormat::Cram).with_reference(cram_reference()),
        }
    }

    /// The same for `samtools view`.
    fn samtools_args(self) -> Vec<&'static str> {
        match self {
            Kind::Cram => vec!["-T", cram_reference()],
            _ => vec![],
        }
    }
}

fn cram_reference() -> &'static str {
    static REFERENCE: OnceLock<String> = OnceLock::new();
    REFERENCE.get_or_init(|| data("cram").join("ref.fa").to_str().unwrap().to_string())
}

/// The undamaged files of a kind: uncompressed data to mutate, and how to write it.
struct Seeds {
    /// BAM: a small slice of sample.bam (a few BGZF blocks) and the edge-case file. SAM: the
    /// same as SAM text. CRAM: the slice as a CRAM without reference, and a CRAM of the spec's
    /// corners compressed against `ref.fa`.
    files: Vec<Vec<u8>>,
    /// The rows samtools reads from all of them.
    rows: BTreeSet<Row>,
}

/// The seeds of `kind`, made once.
fn seeds(kind: Kind) -> &'static Seeds {
    static SEEDS: OnceLock<Vec<Seeds>> = OnceLock::new();
    let all = SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let whole = inflate(&sample());
        let offsets = record_offsets(&whole);
        let small = dir.path().join("small.bam");
        std::fs::write(&small, deflate(&whole[..offsets[400]])).unwrap();
        let bams = [small.clone(), data("edge.bam")];
        let sam_text = |bam: &Path| samtools(&["view", "--no-PG", "-h", bam.to_str().unwrap()]).into_bytes();
        let no_ref = dir.path().join("small.cram");
        let (out, input) = (no_ref.to_str().unwrap(), small.to_str().unwrap());
        samtools(&["view", "--no-PG", "-C", "-O", "cram,no_ref,seqs_per_slice=100", "-o", out, input]);
        Kind::ALL
            .iter()
            .map(|kind| {
                let files: Vec<Vec<u8>> = match kind {
                    Kind::Bam => bams.iter().map(|b| std::fs::read(b).unwrap()).collect(),
                    Kind::Sam | Kind::SamGz => bams.iter().map(|b| sam_text(b)).collect(),
                    Kind::Cram => {
                        vec![
                            std::fs::read(&no_ref).unwrap(),
                            std::fs::read(data("cram").join("hand_corners.cram")).unwrap(),
                        ]
                    }
                };
                let mut rows = BTreeSet::new();
                for (i, file) in files.iter().enumerate() {
                    let path = dir.path().join(format!("seed{i}{}", kind.extension()));
                    std::fs::write(&path, written(*kind, file)).unwrap();
                    let read = samtools_read(&path, &kind.samtools_args());
                    assert!(read.error.is_none(), "seed {path:?}: {:?}", read.error);
                    rows.extend(read.rows.expect("the seeds are SAM"));
                }
                Seeds { files, rows }
            })
            .collect()
    });
    &all[Kind::ALL.iter().position(|k| *k == kind).unwrap()]
}

/// A seed's or mutated case's bytes as the file of `kind` holds them.
fn written(kind: Kind, data: &[u8]) -> Vec<u8> {
    match kind {
        Kind::SamGz => deflate(data),
        _ => data.to_vec(),
    }
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

/// One fuzz input from `seed`: its kind, and its bytes mutated before or after compression.
fn case(seed: u64) -> (Kind, Vec<u8>) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    // Half BAM, the rest SAM, .sam.gz and CRAM.
    let kind = [Kind::Bam, Kind::Bam, Kind::Bam, Kind::Sam, Kind::SamGz, Kind::Cram][rng.below(6)];
    let files = &seeds(kind).files;
    let chosen = &files[rng.below(files.len())];
    let bytes = match kind {
        Kind::Bam if rng.below(2) == 0 => {
            let mut data = inflate(chosen);
            mutate(&mut rng, &mut data);
            deflate(&data)
        }
        Kind::SamGz if rng.below(2) == 0 => {
            let mut bytes = deflate(chosen);
            mutate(&mut rng, &mut bytes);
            bytes
        }
        _ => {
            let mut data = chosen.clone();
            mutate(&mut rng, &mut data);
            written(kind, &data)
        }
    };
    (kind, bytes)
}

/// Scans `path`, a file of `kind`, every way; returns what went wrong, if anything did.
async fn check(path: &Path, kind: Kind) -> Result<(), String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let uncompressed_bound = 64 * std::fs::metadata(path).unwrap().len() as usize + (1 << 20);
    // Without skipping: the rows or the error, by partition count.
    let mut outcomes: Vec<(usize, Result<Vec<Row>, String>)> = Vec::new();
    // With skipping: the rows.
    let mut skipping: Vec<(usize, Vec<Row>)> = Vec::new();
    for partitions in [1, 3] {
        for skip_damaged in [false, true] {
            let ctx = split_context(partitions);
            let scan = async {
                ctx.register_bam("t", path.to_str().unwrap(), kind.options().with_skip_damaged(skip_damaged)).await?;
                query(&ctx, "SELECT * FROM t").await
            };
            let how = format!("{partitions} partitions, skip_damaged={skip_damaged}");
            let outcome = match tokio::time::timeout(CASE_TIME_LIMIT, scan).await {
                Err(_) => return Err(format!("{how}: no answer within {CASE_TIME_LIMIT:?}")),
                Ok(Ok(batches)) => {
                    // Each record has at least 36 bytes: more rows than that would be invented.
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    if rows * 36 > uncompressed_bound {
                        return Err(format!("{how}: {rows} rows from a {uncompressed_bound}-byte bound"));
                    }
                    let mut rows = table_rows(&batches);
                    rows.sort();
                    Ok(rows)
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
                    Err(e)
                }
            };
            match (skip_damaged, outcome) {
                (false, outcome) => outcomes.push((partitions, outcome)),
                (true, Ok(rows)) => skipping.push((partitions, rows)),
                (true, Err(_)) => {}
            }
        }
    }
    // The same at every partition count: rows, or an error.
    let [(_, first), rest @ ..] = outcomes.as_slice() else { unreachable!("two partition counts") };
    for (n, other) in rest {
        match (first, other) {
            (Ok(a), Ok(b)) if a != b => return Err(format!("rows at 1 and {n} partitions differ")),
            (Ok(_), Err(e)) => return Err(format!("read at 1 partition, but at {n}: {e}")),
            (Err(e), Ok(_)) => return Err(format!("read at {n} partitions, but at 1: {e}")),
            _ => {}
        }
    }
    // As samtools reads it, both ways, with two exceptions where the table refuses what samtools
    // takes, by design (bad input gets an error, not silent garbage):
    // - samtools prints what is not SAM: bytes that are not UTF-8 (a tag name of any byte), a
    //   base quality above 93, which no QUAL character holds, a CIGAR op code above 8, or a
    //   string tag holding a tab or a line break, which splits samtools' line (the table reads
    //   the string);
    // - htslib's SAM text parser coerces fields the specification forbids (an unknown RNEXT
    //   becomes `*`, junk after a number is dropped, a malformed tag is taken), which the table
    //   refuses with an error naming the line's byte;
    // - htslib checks a CRAM block's CRC32 only when it decompresses the block
    //   (`cram_uncompress_block` in cram_io.c), so it misses damage in a block it does not use;
    //   noodles-cram checks every block's;
    // - htslib takes a gzip block whose header is not BGZF's (other flags besides FEXTRA, other
    //   extra subfields), as BGZF or as plain gzip, which noodles-bgzf 0.52 refuses
    //   (`is_valid_header` in io/reader/frame.rs wants BGZF's exact header bytes).
    let samtools = samtools_read(path, &kind.samtools_args());
    let loose_bgzf = matches!(kind, Kind::Bam | Kind::SamGz) && has_loose_bgzf_header(&std::fs::read(path).unwrap());
    let not_sam = samtools.rows.as_ref().is_none_or(|rows| rows.iter().any(not_sam_row));
    let lenient_text = matches!(kind, Kind::Sam | Kind::SamGz);
    match (first, &samtools.error, &samtools.rows) {
        (Ok(rows), None, Some(expected)) => {
            let mut expected = expected.clone();
            expected.sort();
            if rows != &expected && !rows.iter().any(splits_sam_line) {
                let only_in = |a: &[Row], b: &[Row]| a.iter().find(|r| !b.contains(r)).map(|r| format!("{r:?}"));
                let shown = |row: Option<String>| row.map(|r| r.chars().take(600).collect::<String>());
                return Err(format!(
                    "{} rows read, samtools reads {} rows that differ: the table has {:?}, samtools {:?}",
                    rows.len(),
                    expected.len(),
                    shown(only_in(rows, &expected)),
                    shown(only_in(&expected, rows)),
                ));
            }
        }
        (Err(e), None, Some(printed))
            if !not_sam && !lenient_text && !loose_bgzf && !e.contains("checksum mismatch") =>
        {
            return Err(format!("samtools reads {} rows cleanly, the table fails: {e}", printed.len()))
        }
        (Ok(rows), Some(why), _) => return Err(format!("samtools fails ({why}), the table reads {} rows", rows.len())),
        _ => {}
    }
    // Skipping loses records, never invents them: each row is one samtools printed or the
    // undamaged file holds, or one the mutation changed, which keeps its name or most fields.
    let known: Vec<&Row> = samtools.rows.iter().flatten().chain(&seeds(kind).rows).collect();
    let changed_from = |row: &Row, known: &Row| {
        row.fields[0] == known.fields[0] || row.fields.iter().zip(&known.fields).filter(|(a, b)| a == b).count() >= 8
    };
    for (n, rows) in &skipping {
        if let Some(row) = rows.iter().find(|r| !known.iter().any(|k| changed_from(r, k))) {
            return Err(format!(
                "skip_damaged at {n} partitions gives a row unlike any samtools printed or the undamaged file has: \
                 {row:?}"
            ));
        }
    }
    Ok(())
}

/// Whether a block of the BGZF file `file`, walked from the start by its `BSIZE`, has a gzip
/// header htslib takes but which is not BGZF's exact one (section 4.1 of the SAM specification).
/// With the FEXTRA flag and others, htslib reads it as BGZF; without BGZF's lone `BC` subfield, it
/// reads the rest of the file as plain gzip (`check_header` and `bgzf_read_block`, bgzf.c).
fn has_loose_bgzf_header(file: &[u8]) -> bool {
    const GZIP: [u8; 3] = [31, 139, 8];
    const BGZF_EXTRA: [u8; 6] = [6, 0, b'B', b'C', 2, 0];
    let mut at = 0;
    while let Some(head) = file.get(at..at + 18) {
        if head[..3] != GZIP {
            return false;
        }
        if head[3] != 4 || head[10..16] != BGZF_EXTRA {
            return true;
        }
        at += usize::from(u16::from_le_bytes([head[16], head[17]])) + 1;
    }
    false
}

/// Whether samtools printed `row` as what is not SAM: a QUAL character above `~` (Phred 93), or
/// a QUAL cut short by a quality printed as a line break, or a CIGAR op code SAM does not have
/// (htslib's `bam_cigar_opchr` in sam.h prints code 9 as `B` and codes 10 to 15 as `?`).
fn not_sam_row(row: &Row) -> bool {
    let quality_above_93 = row.fields[10].as_deref().is_some_and(|q| q.bytes().any(|b| !(b'!'..=b'~').contains(&b)))
        || matches!((&row.fields[9], &row.fields[10]), (Some(seq), Some(qual)) if seq.len() != qual.len());
    let unknown_cigar_op = row.fields[5].as_deref().is_some_and(|cigar| cigar.contains(['?', 'B']));
    quality_above_93 || unknown_cigar_op
}

/// Whether a string tag of `row` (read by the table) holds a tab or a line break, which split the
/// line samtools prints it on.
fn splits_sam_line(row: &Row) -> bool {
    row.tags.iter().any(|(_, value)| matches!(value, TagValue::Str(s) if s.contains(['\t', '\n'])))
}

/// Runs cases from `first` on, for `count` cases or until `deadline`; saves failing inputs to
/// `findings` when given. Returns the failures.
async fn run(first: u64, count: u64, deadline: Option<Instant>, findings: Option<&Path>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut seed = first;
    while seed < first + count && deadline.is_none_or(|d| Instant::now() < d) {
        let (kind, bytes) = case(seed);
        let path = dir.path().join(format!("fuzz-{seed}{}", kind.extension()));
        std::fs::write(&path, bytes).unwrap();
        if let Err(why) = check(&path, kind).await {
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
async fn mutated_files_never_panic_or_hang() {
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
        if let Err(why) = check(&path, Kind::of(&path)).await {
            failures.push(format!("{}: {why}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
