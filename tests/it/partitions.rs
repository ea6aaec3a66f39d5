//! Byte-range partitions: the rows of any split equal samtools' view of the file.

use std::path::Path;

use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_bam::{BamOptions, BamSessionExt};

use crate::oracle::{data, indexed_copy, samtools_rows, table_rows, IndexKind, Row};
use crate::query;

/// A session that splits every file into `n` byte ranges, however small the file.
pub fn split_context(n: usize) -> SessionContext {
    let config =
        SessionConfig::new().with_target_partitions(n).set_usize("datafusion.optimizer.repartition_file_min_size", 0);
    let ctx = SessionContext::new_with_config(config);
    ctx.enable_bam().unwrap();
    ctx
}

async fn rows_with_partitions(file: &str, n: usize, options: BamOptions) -> (Vec<Row>, String) {
    rows_of_path(&data(file), n, options).await
}

async fn rows_of_path(path: &Path, n: usize, options: BamOptions) -> (Vec<Row>, String) {
    let ctx = split_context(n);
    ctx.register_bam("t", path.to_str().unwrap(), options).await.unwrap();
    let plan = query(&ctx, "EXPLAIN SELECT * FROM t").await.unwrap();
    let plan = arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string();
    let mut rows = table_rows(&query(&ctx, "SELECT * FROM t").await.unwrap());
    rows.sort();
    (rows, plan)
}

#[tokio::test]
async fn every_split_gives_samtools_rows() {
    for file in [
        "sample.bam",
        "name_sorted.bam",
        "unaligned.bam",
        "edge.bam",
        "many_refs.bam",
        "empty.bam",
        "long_reads.bam",
        "long_ref.bam",
    ] {
        let mut expected = samtools_rows(&data(file), &[]);
        expected.sort();
        for n in [1, 2, 3, 7, 16] {
            let (rows, plan) = rows_with_partitions(file, n, BamOptions::default()).await;
            assert_eq!(rows.len(), expected.len(), "{file} with {n} partitions: record count\n{plan}");
            assert!(rows == expected, "{file} with {n} partitions: rows differ from samtools");
        }
    }
}

#[tokio::test]
async fn files_are_split_into_byte_ranges_unless_disabled() {
    let (_, plan) = rows_with_partitions("sample.bam", 3, BamOptions::default()).await;
    assert!(plan.contains("sample.bam:0.."), "expected byte ranges in the plan:\n{plan}");
    let (_, plan) = rows_with_partitions("sample.bam", 3, BamOptions::default().with_split(false)).await;
    assert!(!plan.contains("sample.bam:0.."), "split=false must keep the file whole:\n{plan}");
}

/// The same file split with BAI boundaries, CSI boundaries, and guessed ones (no index).
#[tokio::test]
async fn indexed_and_guessed_boundaries_give_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["sample.bam", "long_reads.bam"] {
        let mut expected = samtools_rows(&data(file), &[]);
        expected.sort();
        for kind in [IndexKind::Bai, IndexKind::Csi, IndexKind::None] {
            let path = indexed_copy(dir.path(), file, kind);
            for n in [2, 3, 7, 16] {
                let (rows, plan) = rows_of_path(&path, n, BamOptions::default()).await;
                assert_eq!(rows.len(), expected.len(), "{file} ({kind:?}) with {n} partitions: record count\n{plan}");
                assert!(rows == expected, "{file} ({kind:?}) with {n} partitions: rows differ from samtools");
            }
        }
    }
}
