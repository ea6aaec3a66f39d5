//! CRAM tables (`STORED AS CRAM`): every CRAM of `tests/data/cram/` (written by samtools in CRAM
//! 2.1, 3.0 and 3.1, with embedded and without references, and by htsjdk) equals
//! `samtools view -T ref.fa` at 1, 2 and 7 partitions and through `COPY (SELECT *)` to Parquet and
//! Arrow; regions skip containers; a missing reference is an error that names what is missing.

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use datafusion_bam::{AlignmentFormat, BamOptions, BamSessionExt};

use crate::corpus::check_file;
use crate::oracle::{cached_index_notes, data, plan_metric, samtools, samtools_rows, seeded_below, table_rows};
use crate::partitions::split_context;
use crate::query;
use crate::write::typed_records;

fn reference() -> PathBuf {
    data("cram").join("ref.fa")
}

fn cram_options() -> BamOptions {
    BamOptions::default().with_format(AlignmentFormat::Cram).with_reference(reference().to_str().unwrap())
}

/// The CRAM files of the test data, by name.
fn crams() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data("cram"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cram"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "tests/data/cram holds {} CRAM files: run tests/data/cram.sh", files.len());
    files
}

/// The `samtools view` arguments that read `path` as the table does: with the reference, and,
/// for a file with an embedded reference decoded by noodles-cram, without regenerating `MD`/`NM`
/// (htslib does from the embedded reference; noodles-cram keeps it private).
fn samtools_args(path: &Path) -> Vec<String> {
    let mut args = vec!["-T".to_string(), reference().to_str().unwrap().to_string()];
    if !cfg!(feature = "htslib") && path.file_name().unwrap().to_str().unwrap().contains("embedded") {
        args.extend(["--input-fmt-option".to_string(), "decode_md=0".to_string()]);
    }
    args
}

fn count(batches: &[arrow::array::RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cram_equals_samtools_and_converts() {
    let out = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for path in crams() {
        let args = samtools_args(&path);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(why) = check_file(&path, &cram_options(), &args, &[1, 2, 3, 7], out.path()).await {
            failures.push(why);
        }
    }
    assert!(failures.is_empty(), "{} CRAM files failed:\n{}", failures.len(), failures.join("\n"));
}

/// The bgzipped reference (with `.fai` and `.gzi`) decodes the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bgzipped_reference_works_too() {
    let out = tempfile::tempdir().unwrap();
    let gz = data("cram").join("ref.fa.gz");
    let options = cram_options().with_reference(gz.to_str().unwrap());
    let path = data("cram").join("bwa_mem_v31.cram");
    check_file(&path, &options, &["-T", reference().to_str().unwrap()], &[1, 2], out.path()).await.unwrap();
}

/// Several partitions of one file each decode their own containers: with the `.crai` and by
/// walking the containers (no index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_is_split_into_container_ranges() {
    for name in ["bwa_mem.cram", "bwa_mem_v31.cram"] {
        let ctx = split_context(7);
        let path = data("cram").join(name);
        ctx.register_bam("t", path.to_str().unwrap(), cram_options()).await.unwrap();
        let plan = arrow::util::pretty::pretty_format_batches(&query(&ctx, "EXPLAIN SELECT * FROM t").await.unwrap())
            .unwrap()
            .to_string();
        assert!(plan.contains("file_groups={7 groups:"), "{name}: {plan}");
        let analyzed = arrow::util::pretty::pretty_format_batches(
            &query(&ctx, "EXPLAIN ANALYZE SELECT count(qname) FROM t").await.unwrap(),
        )
        .unwrap()
        .to_string();
        assert_eq!(plan_metric(&analyzed, "records_read"), 1690, "{name}: every record once: {analyzed}");
    }
}

/// Regions are answered as samtools answers them, and containers off the region are not decoded
/// (with the `.crai`, and from the containers' own reference spans without one).
/// Regions on the corpus genome: fixed ones (a whole reference, a reference's first bases), then
/// seeded pseudo-random ones of 1 bp to 10 kbp, as (samtools region, SQL filter).
fn cram_regions() -> Vec<(String, String)> {
    let mut regions = vec![
        ("chr1:20000-30000".to_string(), "rname = 'chr1' AND pos <= 30000 AND endpos >= 20000".to_string()),
        ("chr2".to_string(), "rname = 'chr2'".to_string()),
        ("chrM:1-100".to_string(), "rname = 'chrM' AND pos <= 100 AND endpos >= 1".to_string()),
    ];
    let references = [("chr1", 100_000u64), ("chr2", 60_000), ("chrM", 5_000)];
    let mut next = seeded_below(20261207);
    for _ in 0..6 {
        let (name, len) = references[next(3) as usize];
        let start = 1 + next(len);
        let end = (start + next(10_000)).min(len);
        regions.push((
            format!("{name}:{start}-{end}"),
            format!("rname = '{name}' AND pos <= {end} AND endpos >= {start}"),
        ));
    }
    regions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_skip_containers_and_equal_samtools() {
    let reference = reference();
    let indexed = tempfile::tempdir().unwrap();
    let regions = cram_regions();
    let mut checked_rows = 0;
    for name in ["bwa_mem.cram", "bwa_mem_v31.cram", "long_embedded_ref.cram", "bowtie2_unsorted.cram"] {
        let path = data("cram").join(name);
        // samtools answers regions through an index: a copy indexed for it (ours reads the
        // original, which may have none). An unsorted file cannot be indexed: its sorted copy
        // holds the same records.
        let oracle = indexed.path().join(name);
        if name.contains("unsorted") {
            let (out, input) = (oracle.to_str().unwrap(), path.to_str().unwrap());
            samtools(&["sort", "--no-PG", "-O", "cram", "--reference", reference.to_str().unwrap(), "-o", out, input]);
        } else {
            std::fs::copy(&path, &oracle).unwrap();
        }
        samtools(&["index", oracle.to_str().unwrap()]);
        let ctx = split_context(2);
        ctx.register_bam("t", path.to_str().unwrap(), cram_options()).await.unwrap();
        for (region, filter) in &regions {
            let mut args = samtools_args(&path);
            args.push(region.to_string());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut expected = samtools_rows(&oracle, &args);
            expected.sort();
            let mut rows = table_rows(&query(&ctx, &format!("SELECT * FROM t WHERE {filter}")).await.unwrap());
            rows.sort();
            assert_eq!(rows, expected, "{name} {region}");
            checked_rows += rows.len();
        }
        let plan = arrow::util::pretty::pretty_format_batches(
            &query(
                &ctx,
                "EXPLAIN ANALYZE SELECT count(*) FROM t WHERE rname = 'chr1' AND pos <= 30000 AND endpos >= 20000",
            )
            .await
            .unwrap(),
        )
        .unwrap()
        .to_string();
        let read = plan_metric(&plan, "records_read");
        let total = samtools(&["view", "-c", "-T", reference.to_str().unwrap(), path.to_str().unwrap()]);
        let total: u64 = total.trim().parse().unwrap();
        assert!(read < total, "{name}: the region decoded {read} of {total} records: {plan}");
    }
    assert!(checked_rows > 1000, "the regions hold records: {checked_rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_as_cram_in_sql_reads_a_directory_and_its_header() {
    let ctx = crate::context();
    let dir = data("cram");
    let create = format!(
        "CREATE EXTERNAL TABLE reads STORED AS CRAM LOCATION '{}/' OPTIONS ('reference' '{}', 'tags' 'NM,MD')",
        dir.display(),
        reference().display()
    );
    query(&ctx, &create).await.unwrap();
    let expected: i64 = crams()
        .iter()
        .map(|p| {
            samtools(&["view", "-c", "-T", reference().to_str().unwrap(), p.to_str().unwrap()])
                .trim()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    let got = count(&query(&ctx, "SELECT count(*) FROM reads").await.unwrap());
    assert_eq!(got, expected, "the directory's CRAM files only (not its .crai, .fa, .fai)");
    let path = dir.join("bwa_mem.cram");
    let lines = query(&ctx, &format!("SELECT line FROM bam_header('{}') WHERE record_type = 'SQ'", path.display()))
        .await
        .unwrap();
    let ours: Vec<String> =
        lines.iter().flat_map(|b| b.column(0).as_string::<i32>().iter().map(|v| v.unwrap().to_string())).collect();
    let theirs: Vec<String> = samtools(&["view", "-H", path.to_str().unwrap()])
        .lines()
        .filter(|l| l.starts_with("@SQ"))
        .map(str::to_string)
        .collect();
    assert_eq!(ours, theirs);
}

/// Every CRAM read into a BAM: `COPY ... STORED AS BAM` takes the CRAM's header and gives the
/// records htslib decodes from the CRAM, each aux field with its exact BAM type (compared with
/// `samtools view -b` of the CRAM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cram_is_written_back_as_bam_exactly() {
    let out = tempfile::tempdir().unwrap();
    for path in crams() {
        let name = path.file_name().unwrap().to_str().unwrap();
        let ctx = split_context(2);
        ctx.register_bam("t", path.to_str().unwrap(), cram_options()).await.unwrap();
        let bam = out.path().join(format!("{name}.bam"));
        query(&ctx, &format!("COPY (SELECT * FROM t) TO '{}' STORED AS BAM", bam.display())).await.unwrap();
        let by_htslib = out.path().join(format!("{name}.htslib.bam"));
        let args = samtools_args(&path);
        let mut view: Vec<&str> = vec!["view", "--no-PG", "-b", "-o", by_htslib.to_str().unwrap()];
        view.extend(args.iter().map(String::as_str));
        view.push(path.to_str().unwrap());
        samtools(&view);
        assert_eq!(typed_records(&bam), typed_records(&by_htslib), "{name}");
    }
}

fn error_of(result: datafusion::error::Result<Vec<arrow::array::RecordBatch>>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

async fn scan_error(path: &Path, options: BamOptions) -> String {
    let ctx = split_context(2);
    match ctx.register_bam("t", path.to_str().unwrap(), options).await {
        Err(e) => e.to_string(),
        Ok(()) => error_of(query(&ctx, "SELECT count(seq) FROM t").await),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_reference_names_what_is_missing() {
    // A CRAM whose header names (UR) a FASTA that is gone since: htslib would read the sequences
    // from there, as samtools does.
    let dir = tempfile::tempdir().unwrap();
    let (gone, path) = (dir.path().join("gone.fa"), dir.path().join("bwa_mem_v31.cram"));
    std::fs::copy(reference(), &gone).unwrap();
    let bam = data("corpus").join("bwa_mem.bam");
    let (fasta, out) = (gone.to_str().unwrap(), path.to_str().unwrap());
    samtools(&["view", "--no-PG", "-O", "cram,version=3.1", "-T", fasta, "-o", out, bam.to_str().unwrap()]);
    std::fs::remove_file(&gone).unwrap();
    let cram = BamOptions::default().with_format(AlignmentFormat::Cram);
    let err = scan_error(&path, cram.clone()).await;
    assert!(
        err.contains("bwa_mem_v31.cram")
            && err.contains("reference sequence chr1")
            && err.contains("M5 ")
            && err.contains("'reference'"),
        "{err}"
    );
    // A FASTA without the file's references.
    let other = dir.path().join("other.fa");
    std::fs::write(&other, ">chrX\nACGTACGTAC\n").unwrap();
    samtools(&["faidx", other.to_str().unwrap()]);
    let err = scan_error(&path, cram.clone().with_reference(other.to_str().unwrap())).await;
    assert!(err.contains("reference sequence chr1") && err.contains("does not hold"), "{err}");
    // The right names, other bases: noodles' checksum test fails.
    let wrong = dir.path().join("wrong.fa");
    let text = std::fs::read_to_string(reference()).unwrap();
    let flipped: String = text
        .lines()
        .map(|l| if l.starts_with('>') { l.to_string() } else { l.replace('A', "C") })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&wrong, flipped + "\n").unwrap();
    samtools(&["faidx", wrong.to_str().unwrap()]);
    let err = scan_error(&path, cram.clone().with_reference(wrong.to_str().unwrap())).await;
    assert!(err.contains("bwa_mem_v31.cram") && err.contains("container at byte"), "{err}");
    // No FASTA index.
    let bare = dir.path().join("bare.fa");
    std::fs::write(&bare, ">chr1\nACGT\n").unwrap();
    let err = scan_error(&path, cram.with_reference(bare.to_str().unwrap())).await;
    assert!(err.contains("bare.fa.fai"), "{err}");
    // The embedded and reference-free files need none.
    for name in ["long_embedded_ref.cram", "sr_no_ref.cram", "unaligned.cram"] {
        let ctx = split_context(2);
        let path = data("cram").join(name);
        ctx.register_bam("t", path.to_str().unwrap(), BamOptions::default().with_format(AlignmentFormat::Cram))
            .await
            .unwrap();
        let n = count(&query(&ctx, "SELECT count(seq) FROM t").await.unwrap());
        assert_eq!(n.to_string(), samtools(&["view", "-c", path.to_str().unwrap()]).trim(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_crams_fail_with_the_file_and_byte_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read(data("cram").join("bwa_mem_v31.cram")).unwrap();
    // CRAM 2.1, which noodles-cram does not read.
    let err = scan_error(&data("cram").join("unsupported/bwa_mem_v21.cram"), cram_options()).await;
    assert!(err.contains("bwa_mem_v21.cram") && err.contains("CRAM 2.1 is not supported"), "{err}");
    // Not a CRAM at all.
    let err = scan_error(&data("corpus").join("bwa_mem.bam"), cram_options()).await;
    assert!(err.contains("not a CRAM file") && err.contains("STORED AS BAM"), "{err}");
    // Cut in the middle of a container.
    let cut = dir.path().join("cut.cram");
    std::fs::write(&cut, &source[..source.len() / 2]).unwrap();
    let err = scan_error(&cut, cram_options()).await;
    assert!(err.contains("cut.cram") && err.contains("truncated") && err.contains("byte"), "{err}");
    // Cut inside the header container's padding, after its SAM header block, which samtools
    // cannot open either.
    let header_end = 26 + 4 + usize::try_from(i32::from_le_bytes(source[26..30].try_into().unwrap())).unwrap();
    std::fs::write(&cut, &source[..header_end]).unwrap();
    let err = scan_error(&cut, cram_options()).await;
    assert!(err.contains("cut.cram") && err.contains("inside its header container"), "{err}");
    // A flipped byte inside a container's data: an error naming the container, or, with
    // skip_damaged, the container skipped with a warning and the rest read.
    let mut flipped = source.clone();
    let at = source.len() * 3 / 5;
    flipped[at] ^= 0x5a;
    let bad = dir.path().join("flipped.cram");
    std::fs::write(&bad, &flipped).unwrap();
    let err = scan_error(&bad, cram_options()).await;
    assert!(err.contains("flipped.cram") && err.contains("container at byte"), "{err}");
    let ctx = split_context(1);
    let skip = BamOptions { skip_damaged: true, ..cram_options() };
    ctx.register_bam("t", bad.to_str().unwrap(), skip).await.unwrap();
    let n = count(&query(&ctx, "SELECT count(seq) FROM t").await.unwrap());
    assert!(n > 0 && n < 1690, "{n} records read around the damage");
}

/// Mutated CRAM files never panic: each either reads or fails with an error naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_crams_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read(data("cram").join("hand_corners.cram")).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut failed, mut read) = (0, 0);
    for case in 0..200 {
        let mut bytes = source.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        let path = dir.path().join(format!("m{case}.cram"));
        std::fs::write(&path, &bytes).unwrap();
        let ctx = split_context(1 + case % 3);
        let result = match ctx.register_bam("t", path.to_str().unwrap(), cram_options()).await {
            Ok(()) => query(&ctx, "SELECT * FROM t").await.map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => read += 1,
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains(&format!("m{case}.cram")), "case {case}: {text}");
                assert!(!text.contains("task failed") && !text.contains("panicked"), "case {case}: {text}");
                failed += 1;
            }
        }
    }
    // CRAM 3 checksums every container header and block, which the reader checks as htslib
    // does, so nearly every mutation is caught; the bytes outside them, the file definition's
    // file id, change nothing that is read.
    assert!(failed > 190, "{failed} failed, {read} read");
    let mut renamed = source.clone();
    renamed[10] ^= 0x55;
    let path = dir.path().join("renamed.cram");
    std::fs::write(&path, &renamed).unwrap();
    let ctx = split_context(2);
    ctx.register_bam("t", path.to_str().unwrap(), cram_options()).await.unwrap();
    query(&ctx, "SELECT * FROM t").await.unwrap();
}

/// A CRAM file's header and `.crai` are read once into the session's file metadata cache (not by
/// every partition), and a file replaced by another is read again, without the old index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_crai_are_cached_and_a_changed_file_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.cram");
    std::fs::copy(data("cram").join("bwa_mem.cram"), &path).unwrap();
    std::fs::copy(data("cram").join("bwa_mem.cram.crai"), dir.path().join("x.cram.crai")).unwrap();
    let ctx = split_context(3);
    let p = path.to_str().unwrap();
    let reference = reference();
    let r = reference.to_str().unwrap();
    ctx.register_bam("before", p, cram_options()).await.unwrap();
    let n = count(&query(&ctx, "SELECT count(qname) FROM before").await.unwrap());
    assert_eq!(n.to_string(), samtools(&["view", "-c", "-T", r, p]).trim());
    let notes = cached_index_notes(&ctx);
    assert!(
        notes.len() == 1 && notes[0].ends_with("containers"),
        "one file's header and index in the session's cache: {notes:?}"
    );

    std::fs::copy(data("cram").join("hisat2_spliced.cram"), &path).unwrap();
    std::fs::remove_file(dir.path().join("x.cram.crai")).unwrap();
    ctx.register_bam("after", p, cram_options()).await.unwrap();
    let mut rows = table_rows(&query(&ctx, "SELECT * FROM after").await.unwrap());
    rows.sort();
    let mut expected = samtools_rows(&path, &["-T", r]);
    expected.sort();
    assert!(rows == expected, "the replaced file read with the facts of the old one");
}

/// A scan of some columns gives what those columns of the whole records give (a `COPY (SELECT *)`
/// to Parquet, read back): with feature `htslib`, htslib decodes only the data series the
/// columns need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn some_columns_equal_those_of_the_whole_records() {
    let out = tempfile::tempdir().unwrap();
    let lines = |batches: &[arrow::array::RecordBatch]| {
        let text = arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    for path in crams() {
        let ctx = split_context(2);
        ctx.register_bam("t", path.to_str().unwrap(), cram_options()).await.unwrap();
        let whole = out.path().join(format!("{}.parquet", path.file_name().unwrap().to_str().unwrap()));
        query(&ctx, &format!("COPY (SELECT * FROM t) TO '{}' STORED AS PARQUET", whole.display())).await.unwrap();
        ctx.register_parquet("whole", whole.to_str().unwrap(), Default::default()).await.unwrap();
        let schema = ctx.table("t").await.unwrap().schema().clone();
        for columns in [
            &["rname", "pos", "endpos", "mapq", "flag"][..],
            &["qname", "rnext", "pnext", "tlen"],
            &["seq", "qual"],
            &["cigar", "tags", "tags_extra"],
        ] {
            // A file without tag fields has no `tags` column.
            let columns: Vec<&str> =
                columns.iter().copied().filter(|c| schema.has_column_with_unqualified_name(c)).collect();
            let columns = columns.join(", ");
            let part = query(&ctx, &format!("SELECT {columns} FROM t")).await.unwrap();
            let expected = query(&ctx, &format!("SELECT {columns} FROM whole")).await.unwrap();
            assert_eq!(lines(&part), lines(&expected), "{path:?}: {columns}");
        }
        let scanned = query(&ctx, "SELECT count(*) FROM t").await.unwrap();
        let expected = query(&ctx, "SELECT count(*) FROM whole").await.unwrap();
        assert_eq!(count(&scanned), count(&expected), "{path:?}");
    }
}
