//! Pushdown: region, MAPQ and flag predicates, with and without an index, at several partition
//! counts, checked against samtools; `bam_region`; statistics from the index; LIMIT.

use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_bam::{BamOptions, BamSessionExt};

use crate::oracle::{
    data, indexed_copy, plan_metric, records_read_per_partition, samtools, samtools_count_of, samtools_rows,
    seeded_below, table_rows, IndexKind,
};
use crate::query;

fn split_context(n: usize) -> SessionContext {
    let config =
        SessionConfig::new().with_target_partitions(n).set_usize("datafusion.optimizer.repartition_file_min_size", 0);
    let ctx = SessionContext::new_with_config(config).enable_url_table();
    ctx.enable_bam().unwrap();
    ctx
}

async fn table(path: &Path, n: usize) -> SessionContext {
    let ctx = split_context(n);
    ctx.register_bam("t", path.to_str().unwrap(), BamOptions::default()).await.unwrap();
    ctx
}

fn single_count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn count(ctx: &SessionContext, sql: &str) -> i64 {
    single_count(&query(ctx, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")))
}

async fn plan(ctx: &SessionContext, sql: &str) -> String {
    let batches = query(ctx, &format!("EXPLAIN {sql}")).await.unwrap();
    arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string()
}

/// (reference, start, end), 1-based and closed, as samtools takes them.
fn test_regions() -> Vec<(&'static str, u64, u64)> {
    let references = [("chr1", 300_000u64), ("chr2", 200_000), ("chr3", 120_000), ("chrM", 16_569)];
    let mut regions = vec![
        ("chr1", 1, 1),             // the very first base
        ("chr1", 299_900, 300_000), // the reference end
        ("chrM", 16_000, 16_569),   // the end of a short reference
        ("chr3", 119_990, 125_000), // running past the end
        ("chr2", 16_300, 16_500),   // across a 16 kbp index window
        ("chr2", 131_000, 131_200), // across a 128 kbp bin
        ("chr1", 50_000, 250_000),  // a large stretch
    ];
    // Seeded pseudo-random regions of 1 bp to 20 kbp.
    let mut next = seeded_below(20261124);
    for _ in 0..8 {
        let (name, len) = references[next(4) as usize];
        let start = 1 + next(len);
        let end = (start + next(20_000)).min(len + 100);
        regions.push((name, start, end));
    }
    regions
}

#[tokio::test]
async fn region_counts_equal_samtools_with_and_without_index() {
    let dir = tempfile::tempdir().unwrap();
    let regions = test_regions();
    for kind in [IndexKind::Bai, IndexKind::Csi, IndexKind::None] {
        let path = indexed_copy(dir.path(), "sample.bam", kind);
        let oracle = indexed_copy(dir.path(), "sample.bam", IndexKind::Bai);
        for n in [1, 3, 7] {
            let ctx = table(&path, n).await;
            for &(name, start, end) in &regions {
                let expected = samtools_count_of(&oracle, &[&format!("{name}:{start}-{end}")]);
                let sql =
                    format!("SELECT count(*) FROM t WHERE rname = '{name}' AND pos <= {end} AND endpos >= {start}");
                assert_eq!(count(&ctx, &sql).await, expected, "{kind:?}, {n} partitions: {sql}");
            }
            // A whole reference, the unplaced reads, and several regions at once.
            assert_eq!(
                count(&ctx, "SELECT count(*) FROM t WHERE rname = 'chr2'").await,
                samtools_count_of(&oracle, &["chr2"])
            );
            assert_eq!(
                count(&ctx, "SELECT count(*) FROM t WHERE rname IS NULL").await,
                samtools_count_of(&oracle, &["*"])
            );
            let both = samtools_count_of(&oracle, &["chr1:1000-5000", "chr3:70000-71000"]);
            let sql = "SELECT count(*) FROM t WHERE (rname = 'chr1' AND pos <= 5000 AND endpos >= 1000) \
                       OR (rname = 'chr3' AND pos BETWEEN 60000 AND 71000 AND endpos >= 70000)";
            assert_eq!(count(&ctx, sql).await, both, "{kind:?}, {n} partitions: {sql}");
            let listed = samtools_count_of(&oracle, &["chrM", "chr3"]);
            assert_eq!(count(&ctx, "SELECT count(*) FROM t WHERE rname IN ('chrM', 'chr3')").await, listed);
        }
    }
}

#[tokio::test]
async fn region_rows_equal_samtools_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = indexed_copy(dir.path(), "sample.bam", IndexKind::Bai);
    let ctx = table(&path, 3).await;
    for (region, sql) in
        [("chr2:16300-16500", "rname = 'chr2' AND pos <= 16500 AND endpos >= 16300"), ("*", "rname IS NULL")]
    {
        let mut expected = samtools_rows(&path, &[region]);
        expected.sort();
        let mut rows = table_rows(&query(&ctx, &format!("SELECT * FROM t WHERE {sql}")).await.unwrap());
        rows.sort();
        assert!(!expected.is_empty());
        assert!(rows == expected, "{region}: rows differ from samtools");
    }
}

#[tokio::test]
async fn mapq_and_flag_filters_equal_samtools_and_run_in_the_decoder() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [IndexKind::Bai, IndexKind::None] {
        let path = indexed_copy(dir.path(), "sample.bam", kind);
        let cases: [(&str, Vec<&str>); 7] = [
            ("mapq >= 30", vec!["-q", "30"]),
            ("(flag & 1024) = 0", vec!["-F", "1024"]),
            ("flag & 4 = 0", vec!["-F", "4"]),
            ("mapq >= 30 AND (flag & 1024) = 0 AND (flag & 256) = 0", vec!["-q", "30", "-F", "1280"]),
            ("mapq BETWEEN 1 AND 59", vec!["-e", "mapq>=1 && mapq<=59"]),
            ("flag IN (99, 147, 83)", vec!["-e", "flag==99 || flag==147 || flag==83"]),
            (
                "rname = 'chr1' AND pos <= 20000 AND endpos >= 10000 AND mapq >= 30",
                vec!["-q", "30", "chr1:10000-20000"],
            ),
        ];
        for n in [1, 3] {
            let ctx = table(&path, n).await;
            for (predicate, args) in &cases {
                let sql = format!("SELECT count(*) FROM t WHERE {predicate}");
                // The shipped file has its index, for samtools' region argument.
                let expected = samtools_count_of(&data("sample.bam"), args);
                assert!(expected > 0, "{predicate} selects nothing: a weak test");
                assert_eq!(count(&ctx, &sql).await, expected, "{kind:?}, {n} partitions: {sql}");
                let shown = plan(&ctx, &sql).await;
                assert!(!shown.contains("FilterExec"), "{predicate} must be evaluated by the decoder:\n{shown}");
                assert!(shown.contains("predicate="), "{shown}");
            }
        }
    }
    // MAPQ spread over 0..60, on 5000 references.
    let path = data("many_refs.bam");
    let ctx = table(&path, 3).await;
    for (predicate, args) in [
        ("mapq BETWEEN 10 AND 40", ["-e", "mapq>=10 && mapq<=40"]),
        ("mapq < 7 OR mapq > 50", ["-e", "mapq<7 || mapq>50"]),
    ] {
        let expected = samtools_count_of(&path, &args);
        assert!(expected > 50, "{predicate}");
        assert_eq!(count(&ctx, &format!("SELECT count(*) FROM t WHERE {predicate}")).await, expected, "{predicate}");
    }
}

#[tokio::test]
async fn filters_the_decoder_cannot_take_stay_with_datafusion() {
    let ctx = table(&data("sample.bam"), 2).await;
    let sql = "SELECT count(*) FROM t WHERE qname LIKE '%1' AND mapq >= 30";
    let shown = plan(&ctx, sql).await;
    assert!(shown.contains("FilterExec"), "{shown}");
    assert!(shown.contains("predicate=mapq"), "mapq >= 30 is still pushed:\n{shown}");
    let expected = samtools(&["view", "-q", "30", data("sample.bam").to_str().unwrap()])
        .lines()
        .filter(|l| l.split('\t').next().unwrap().ends_with('1'))
        .count() as i64;
    assert_eq!(count(&ctx, sql).await, expected);
}

#[tokio::test]
async fn explain_shows_pushed_predicate_and_index_selection() {
    let dir = tempfile::tempdir().unwrap();
    let path = indexed_copy(dir.path(), "sample.bam", IndexKind::Bai);
    let ctx = table(&path, 2).await;
    let shown = plan(&ctx, "SELECT qname FROM t WHERE rname = 'chr2' AND pos <= 20000 AND endpos >= 10000").await;
    assert!(shown.contains("regions=[chr2:10000-20000]"), "{shown}");
    assert!(shown.contains("index_selection=["), "{shown}");
    assert!(shown.contains("bai_sample.bam.bai)"), "{shown}");
    let analyzed =
        plan(&ctx, "ANALYZE SELECT qname FROM t WHERE rname = 'chr2' AND pos <= 20000 AND endpos >= 10000").await;
    let read = plan_metric(&analyzed, "records_read");
    assert!(read > 0 && read < 21_882 / 4, "the index must limit what is read, read {read}:\n{analyzed}");
}

/// In coordinate-sorted data, reading an index chunk stops at the first record past the region:
/// a short region reads far fewer records than a longer one in the same 16 kbp index bin.
#[tokio::test]
async fn indexed_reading_stops_after_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = indexed_copy(dir.path(), "sample.bam", IndexKind::Bai);
    for partitions in [1, 2] {
        let ctx = table(&path, partitions).await;
        let mut read = Vec::new();
        for end in [101_000, 114_000] {
            let sql = format!("SELECT count(*) FROM t WHERE rname = 'chr1' AND pos <= {end} AND endpos >= 100000");
            assert_eq!(count(&ctx, &sql).await, samtools_count_of(&path, &[&format!("chr1:100000-{end}")]), "{sql}");
            read.push(plan_metric(&plan(&ctx, &format!("ANALYZE {sql}")).await, "records_read"));
        }
        assert!(
            read[0] * 3 < read[1],
            "{partitions} partitions: records read for 100000-101000 and 100000-114000: {read:?}"
        );
    }
}

/// A region scan on an indexed file shares out the bytes the index selects: every partition
/// decodes a fair part of the region's records (cutting inside index chunks), and no record is
/// lost or doubled.
#[tokio::test]
async fn region_scans_share_the_selection_between_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let path = indexed_copy(dir.path(), "sample.bam", IndexKind::Bai);
    let ctx = table(&path, 3).await;
    let sql = "SELECT qname FROM t WHERE rname = 'chr1' AND pos <= 250000 AND endpos >= 50000";
    let (rows, read) = records_read_per_partition(&ctx, sql, 3).await;
    assert_eq!(rows as i64, samtools_count_of(&path, &["chr1:50000-250000"]));
    let total: usize = read.iter().sum();
    assert!(read.iter().all(|&r| r * 6 > total), "records read per partition: {read:?}");
}

#[tokio::test]
async fn csi_answers_regions_beyond_512_mbp() {
    let path = data("long_ref.bam");
    for n in [1, 4] {
        let ctx = table(&path, n).await;
        for (start, end) in
            [(536_870_000u64, 536_880_000u64), (600_000_000, 700_000_000), (999_000_000, 1_000_000_000), (1, 5000)]
        {
            for name in ["huge", "small"] {
                let sql =
                    format!("SELECT count(*) FROM t WHERE rname = '{name}' AND pos <= {end} AND endpos >= {start}");
                let expected = samtools_count_of(&path, &[&format!("{name}:{start}-{end}")]);
                assert_eq!(count(&ctx, &sql).await, expected, "{n} partitions: {sql}");
            }
        }
        let shown =
            plan(&ctx, "SELECT count(*) FROM t WHERE rname = 'huge' AND pos <= 700000000 AND endpos >= 600000000")
                .await;
        assert!(shown.contains("long_ref.bam.csi"), "{shown}");
    }
}

#[tokio::test]
async fn bam_region_follows_samtools() {
    let dir = tempfile::tempdir().unwrap();
    let path = indexed_copy(dir.path(), "sample.bam", IndexKind::Bai);
    let p = path.to_str().unwrap();
    let ctx = split_context(3);
    for regions in
        [vec!["chr1:100000-200000"], vec!["chr2"], vec!["chrM:1,000-2,000", "chr3:5000"], vec!["*"], vec!["{chr1}:7-7"]]
    {
        let args: Vec<String> = regions.iter().map(|r| format!("'{r}'")).collect();
        let sql = format!("SELECT * FROM bam_region('{p}', {})", args.join(", "));
        let mut rows = table_rows(&query(&ctx, &sql).await.unwrap());
        rows.sort();
        let plain: Vec<String> = regions.iter().map(|r| r.replace(['{', '}'], "")).collect();
        let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
        let mut expected = samtools_rows(&path, &plain);
        expected.sort();
        assert!(rows == expected, "bam_region {regions:?}: {} rows, samtools {}", rows.len(), expected.len());
    }
    for bad in [format!("bam_region('{p}')"), format!("bam_region('{p}', 'chr1:9-5')"), format!("bam_region('{p}', 7)")]
    {
        let err = query(&ctx, &format!("SELECT * FROM {bad}")).await.unwrap_err().to_string();
        assert!(err.contains("bam_region") || err.contains("invalid region"), "{bad}: {err}");
    }
    let err = query(&ctx, "SELECT * FROM bam_region('/no/such.bam', 'chr1')").await.unwrap_err().to_string();
    assert!(err.contains("/no/such.bam") || err.contains("no/such.bam"), "{err}");
}

#[tokio::test]
async fn region_option_on_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = indexed_copy(dir.path(), "sample.bam", IndexKind::Bai);
    let ctx = split_context(2);
    let sql = format!(
        "CREATE EXTERNAL TABLE r STORED AS BAM LOCATION '{}' OPTIONS ('region' 'chr1:1000-50000 chrM')",
        path.display()
    );
    query(&ctx, &sql).await.unwrap();
    let expected = samtools_count_of(&path, &["chr1:1000-50000", "chrM"]);
    assert_eq!(count(&ctx, "SELECT count(*) FROM r").await, expected);
    let sql =
        format!("CREATE EXTERNAL TABLE bad STORED AS BAM LOCATION '{}' OPTIONS ('region' 'chr1:0-5')", path.display());
    let err = query(&ctx, &sql).await.unwrap_err().to_string();
    assert!(err.contains("invalid region 'chr1:0-5'"), "{err}");
}

#[tokio::test]
async fn count_star_comes_from_a_current_index() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["sample.bam", "many_refs.bam", "long_reads.bam"] {
        let path = indexed_copy(dir.path(), file, IndexKind::Bai);
        let ctx = table(&path, 2).await;
        let shown = plan(&ctx, "SELECT count(*) FROM t").await;
        assert!(!shown.contains("DataSourceExec"), "{file}: count(*) must come from the index:\n{shown}");
        assert_eq!(count(&ctx, "SELECT count(*) FROM t").await, samtools_count_of(&path, &[]));
    }
    // An index older than its BAM file may describe another version of it: read the records.
    let path = indexed_copy(dir.path(), "sample.bam", IndexKind::Bai);
    let index = path.with_extension("bam.bai");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&index).unwrap().set_modified(old).unwrap();
    let ctx = table(&path, 2).await;
    let shown = plan(&ctx, "SELECT count(*) FROM t").await;
    assert!(shown.contains("DataSourceExec"), "a stale index must not answer count(*):\n{shown}");
    assert_eq!(count(&ctx, "SELECT count(*) FROM t").await, samtools_count_of(&path, &[]));
}

#[tokio::test]
async fn an_index_of_another_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = indexed_copy(dir.path(), "sample.bam", IndexKind::None);
    std::fs::copy(data("many_refs.bam.bai"), path.with_extension("bam.bai")).unwrap();
    let ctx = table(&path, 3).await;
    let sql = "SELECT count(*) FROM t WHERE rname = 'chr1' AND pos <= 9000 AND endpos >= 2000";
    assert_eq!(count(&ctx, sql).await, samtools_count_of(&data("sample.bam"), &["chr1:2000-9000"]));
    let shown = plan(&ctx, &sql.replace("count(*)", "qname")).await;
    assert!(shown.contains("no index") && shown.contains("ignored: it indexes 5000 references"), "{shown}");
    assert_eq!(count(&ctx, "SELECT count(*) FROM t").await, 21_882);
}

#[tokio::test]
async fn limit_stops_reading_early() {
    let ctx = split_context(1);
    ctx.sql("SET datafusion.execution.batch_size = 100").await.unwrap().collect().await.unwrap();
    ctx.register_bam("t", data("sample.bam").to_str().unwrap(), BamOptions::default()).await.unwrap();
    let analyzed = plan(&ctx, "ANALYZE SELECT qname FROM t LIMIT 3").await;
    let read = plan_metric(&analyzed, "records_read");
    assert!(read < 2_000, "LIMIT 3 read {read} of 21882 records:\n{analyzed}");
}

/// Unmapped reads placed at their mate's position belong to regions that cover that position.
#[tokio::test]
async fn unmapped_reads_placed_by_their_mate_are_in_regions() {
    let dir = tempfile::tempdir().unwrap();
    let sorted = dir.path().join("edge_sorted.bam");
    samtools(&["sort", "-o", sorted.to_str().unwrap(), data("edge.bam").to_str().unwrap()]);
    samtools(&["index", sorted.to_str().unwrap()]);
    let ctx = table(&sorted, 2).await;
    for (start, end) in [(500, 500), (490, 510), (507, 507), (1, 100)] {
        let sql = format!("SELECT count(*) FROM t WHERE rname = 'chr1' AND pos <= {end} AND endpos >= {start}");
        let expected = samtools_count_of(&sorted, &[&format!("chr1:{start}-{end}")]);
        assert_eq!(count(&ctx, &sql).await, expected, "{sql}");
    }
    let unmapped = "SELECT count(*) FROM t WHERE rname = 'chr1' AND pos <= 500 AND endpos >= 500 AND flag & 4 = 4";
    assert_eq!(count(&ctx, unmapped).await, 1);
}
