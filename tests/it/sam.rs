//! SAM tables (`STORED AS SAM`): plain and BGZF-compressed SAM text equals `samtools view` at 1,
//! 2, 3 and 7 partitions and through `COPY (SELECT *)` to Parquet and Arrow; one file is read by
//! every partition; regions of a `.sam.gz` are read through its `.bai`, `.csi` or `.tbi`; bad
//! lines are errors naming the file and the byte.

use std::path::PathBuf;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use datafusion_bam::{AlignmentFormat, BamOptions, BamSessionExt};

use crate::corpus::check_file;
use crate::oracle::{
    cached_index_notes, data, plan_metric, records_read_per_partition, samtools, samtools_count_of, samtools_rows,
    table_rows,
};
use crate::partitions::split_context;
use crate::query;

fn sam_options() -> BamOptions {
    BamOptions::default().with_format(AlignmentFormat::Sam)
}

fn sams() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data("sam"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().is_some_and(|p| p.ends_with(".sam") || p.ends_with(".sam.gz")))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "tests/data/sam holds {} files: run tests/data/sam.sh", files.len());
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sam_equals_samtools_and_converts() {
    let out = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for path in sams() {
        if let Err(why) = check_file(&path, &sam_options(), &[], &[1, 2, 3, 7], out.path()).await {
            failures.push(why);
        }
    }
    assert!(failures.is_empty(), "{} SAM files failed:\n{}", failures.len(), failures.join("\n"));
}

/// A plain SAM file is split on line boundaries: each partition reads its own lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sam_is_split_into_line_ranges() {
    let ctx = split_context(7);
    let path = data("sam").join("bwa_mem.sam");
    ctx.register_bam("t", path.to_str().unwrap(), sam_options()).await.unwrap();
    let plan = arrow::util::pretty::pretty_format_batches(&query(&ctx, "EXPLAIN SELECT * FROM t").await.unwrap())
        .unwrap()
        .to_string();
    assert!(plan.contains("file_groups={7 groups:"), "{plan}");
    let n = query(&ctx, "SELECT count(qname) FROM t").await.unwrap()[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(n.to_string(), samtools(&["view", "-c", path.to_str().unwrap()]).trim());
}

/// A `.sam.gz` file is split on BGZF blocks: its partitions each read their own lines, none
/// lost or read twice (long lines crossing blocks, an empty end-of-file block mid-file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgzf_sam_is_split_into_block_ranges() {
    for name in ["long_reads.sam.gz", "unaligned.sam.gz", "sorted_bai.sam.gz", "concatenated.sam.gz"] {
        let path = data("sam").join(name);
        let ctx = split_context(3);
        ctx.register_bam("t", path.to_str().unwrap(), sam_options()).await.unwrap();
        let (rows, read) = records_read_per_partition(&ctx, "SELECT qname FROM t", 3).await;
        let expected = samtools_count_of(&path, &[]) as usize;
        assert_eq!((rows, read.iter().sum::<usize>()), (expected, expected), "{name}: {read:?}");
        assert!(read.iter().filter(|&&r| r > 0).count() >= 2, "{name}: records read per partition: {read:?}");
    }
}

/// Regions of an indexed `.sam.gz` equal samtools' answer (field by field) at 1 and 3
/// partitions, and only the index's chunks are read: `samtools index` (`.bai`, `.csi`) and
/// `tabix -p sam` (`.tbi`, whose reference numbers follow the file and which files unplaced
/// records under `*`). samtools reads no `.tbi`: a tabix file is checked against its
/// samtools-indexed twin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_sam_gz_answers_regions_as_samtools() {
    let regions = [
        ("chr1:20000-30000", "rname = 'chr1' AND pos <= 30000 AND endpos >= 20000"),
        ("chr2", "rname = 'chr2'"),
        ("chrM:1-100", "rname = 'chrM' AND pos <= 100 AND endpos >= 1"),
        ("*", "rname IS NULL"),
    ];
    for (name, oracle) in [
        ("sorted_bai.sam.gz", "sorted_bai.sam.gz"),
        ("sorted_tbi.sam.gz", "sorted_bai.sam.gz"),
        ("long_csi.sam.gz", "long_csi.sam.gz"),
        ("long_tbi.sam.gz", "long_csi.sam.gz"),
    ] {
        let (path, oracle) = (data("sam").join(name), data("sam").join(oracle));
        for n in [1, 3] {
            let ctx = split_context(n);
            ctx.register_bam("t", path.to_str().unwrap(), sam_options()).await.unwrap();
            for (region, filter) in regions {
                let mut expected = samtools_rows(&oracle, &[region]);
                expected.sort();
                let mut rows = table_rows(&query(&ctx, &format!("SELECT * FROM t WHERE {filter}")).await.unwrap());
                rows.sort();
                assert_eq!(rows, expected, "{name}, {n} partitions: {region}");
            }
            let plan = arrow::util::pretty::pretty_format_batches(
                &query(&ctx, "EXPLAIN ANALYZE SELECT count(*) FROM t WHERE rname = 'chr2'").await.unwrap(),
            )
            .unwrap()
            .to_string();
            let (read, total) = (plan_metric(&plan, "records_read"), samtools_count_of(&path, &[]) as u64);
            assert!(plan_metric(&plan, "index_chunks") >= 1 && read < total, "{name}: read {read} of {total}: {plan}");
        }
    }
    // At least one region with records without a reference, so that `*` is tested.
    assert!(samtools_count_of(&data("sam").join("long_csi.sam.gz"), &["*"]) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_as_sam_in_sql_and_bad_lines() {
    let ctx = crate::context();
    let path = data("sam").join("bwa_mem.sam");
    query(&ctx, &format!("CREATE EXTERNAL TABLE reads STORED AS SAM LOCATION '{}'", path.display())).await.unwrap();
    let n = query(&ctx, "SELECT count(*) FROM reads WHERE mapq >= 30").await.unwrap()[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);
    assert_eq!(n.to_string(), samtools(&["view", "-c", "-q", "30", path.to_str().unwrap()]).trim());
    let header = query(&ctx, &format!("SELECT line FROM bam_header('{}') WHERE record_type = 'RG'", path.display()))
        .await
        .unwrap();
    assert_eq!(header[0].num_rows(), 1);

    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let broken = lines.iter().position(|l| !l.starts_with('@')).unwrap() + 5;
    lines[broken] = "read\tnot-a-flag\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\tIIII";
    let bad = dir.path().join("bad.sam");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let at: usize = lines[..broken].iter().map(|l| l.len() + 1).sum();
    let ctx = split_context(2);
    ctx.register_bam("bad", bad.to_str().unwrap(), BamOptions { tag_sample_records: 1, ..sam_options() })
        .await
        .unwrap();
    let err = query(&ctx, "SELECT count(*) FROM bad").await.unwrap_err().to_string();
    assert!(err.contains("bad.sam") && err.contains(&format!("text byte {at}")), "{err}");
    // With skip_damaged the line is left out and counted.
    let ctx = split_context(2);
    ctx.register_bam("bad", bad.to_str().unwrap(), BamOptions { skip_damaged: true, ..sam_options() }).await.unwrap();
    let n = query(&ctx, "SELECT count(*) FROM bad").await.unwrap()[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(
        n.to_string(),
        (samtools(&["view", "-c", path.to_str().unwrap()]).trim().parse::<i64>().unwrap() - 1).to_string()
    );
    // A .sam.gz cut short: each partition that reaches the cut says so, naming the file and a
    // position, and no partition's error calls it a BAM file.
    let whole = std::fs::read(data("sam").join("unaligned.sam.gz")).unwrap();
    let cut = dir.path().join("cut.sam.gz");
    std::fs::write(&cut, &whole[..whole.len() * 3 / 5]).unwrap();
    for partitions in [1, 2] {
        let ctx = split_context(partitions);
        ctx.register_bam("cut", cut.to_str().unwrap(), BamOptions { tag_sample_records: 1, ..sam_options() })
            .await
            .unwrap();
        let err = query(&ctx, "SELECT count(*) FROM cut").await.unwrap_err().to_string();
        assert!(err.contains("cut.sam.gz") && err.contains("truncated"), "{partitions} partitions: {err}");
        assert!(err.contains("virtual offset") && !err.contains("BAM file"), "{partitions} partitions: {err}");
    }
    // A BAM under STORED AS SAM.
    let ctx = split_context(1);
    let err = match ctx.register_bam("b", data("sample.bam").to_str().unwrap(), sam_options()).await {
        Err(e) => e.to_string(),
        Ok(()) => query(&ctx, "SELECT count(*) FROM b").await.unwrap_err().to_string(),
    };
    assert!(err.contains("sample.bam"), "{err}");
}

/// A SAM file's header and index are read once into the session's file metadata cache (not by
/// every partition), and a file replaced by another is read again, without the old index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_index_are_cached_and_a_changed_file_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.sam.gz");
    std::fs::copy(data("sam").join("sorted_bai.sam.gz"), &path).unwrap();
    std::fs::copy(data("sam").join("sorted_bai.sam.gz.bai"), dir.path().join("x.sam.gz.bai")).unwrap();
    let ctx = split_context(3);
    let p = path.to_str().unwrap();
    ctx.register_bam("before", p, sam_options()).await.unwrap();
    let sql = "SELECT count(qname) FROM before WHERE rname = 'chr2'";
    let n = query(&ctx, sql).await.unwrap()[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(n, samtools_count_of(&path, &["chr2"]));
    let notes = cached_index_notes(&ctx);
    assert!(
        notes.len() == 1 && notes[0].ends_with(".bai"),
        "one file's header and index in the session's cache: {notes:?}"
    );

    std::fs::copy(data("sam").join("long_csi.sam.gz"), &path).unwrap();
    std::fs::remove_file(dir.path().join("x.sam.gz.bai")).unwrap();
    ctx.register_bam("after", p, sam_options()).await.unwrap();
    let mut rows = table_rows(&query(&ctx, "SELECT * FROM after WHERE rname = 'chr2'").await.unwrap());
    rows.sort();
    let mut expected = samtools_rows(&data("sam").join("long_csi.sam.gz"), &["chr2"]);
    expected.sort();
    assert!(rows == expected, "the replaced file read with the facts of the old one");
}
