//! SAM tables (`STORED AS SAM`): plain and BGZF-compressed SAM text equals `samtools view` at 1,
//! 2, 3 and 7 partitions and through `COPY (SELECT *)` to Parquet and Arrow; bad lines are errors
//! naming the file and the byte.

use std::path::PathBuf;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use datafusion_bam::{AlignmentFormat, BamOptions, BamSessionExt};

use crate::corpus::check_file;
use crate::oracle::{data, samtools};
use crate::partitions::split_context;
use crate::query;

fn sam_options() -> BamOptions {
    BamOptions::default().with_format(AlignmentFormat::Sam)
}

fn sams() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data("sam")).unwrap().map(|e| e.unwrap().path()).collect();
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
    // A BAM under STORED AS SAM.
    let ctx = split_context(1);
    let err = match ctx.register_bam("b", data("sample.bam").to_str().unwrap(), sam_options()).await {
        Err(e) => e.to_string(),
        Ok(()) => query(&ctx, "SELECT count(*) FROM b").await.unwrap_err().to_string(),
    };
    assert!(err.contains("sample.bam"), "{err}");
}
