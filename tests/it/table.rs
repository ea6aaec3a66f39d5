//! `BamTable`: the provider that takes its filters at planning time (used across FFI), checked
//! against samtools and against the plan it produces.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_bam::{BamOptions, BamSessionExt, BamTable};

use crate::oracle::{data, samtools, samtools_count, samtools_rows, table_rows};
use crate::query;

async fn context(path: &str, partitions: usize) -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(partitions)
        .set_usize("datafusion.optimizer.repartition_file_min_size", 0);
    let ctx = SessionContext::new_with_config(config);
    let table = BamTable::open(&ctx.state(), path, BamOptions::default()).await.unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    ctx
}

async fn count_and_plan(ctx: &SessionContext, sql: &str) -> (i64, String) {
    let batches = query(ctx, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let count = batches[0].column(0).as_primitive::<Int64Type>().value(0);
    let plan = query(ctx, &format!("EXPLAIN {sql}")).await.unwrap();
    (count, arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string())
}

#[tokio::test]
async fn pushed_filters_match_samtools_without_a_filter_of_datafusion() {
    let path = data("sample.bam");
    let p = path.to_str().unwrap();
    for partitions in [1, 3] {
        let ctx = context(p, partitions).await;
        let cases: [(&str, Vec<&str>); 4] = [
            ("rname = 'chr1' AND pos <= 120000 AND endpos >= 100000", vec![p, "chr1:100000-120000"]),
            ("rname = 'chr2' AND mapq >= 30", vec!["-q", "30", p, "chr2"]),
            ("(flag & 1024) = 0 AND (flag & 4) = 0", vec!["-F", "1028", p]),
            ("rname IS NULL", vec![p, "*"]),
        ];
        for (filter, args) in cases {
            let sql = format!("SELECT count(*) FROM t WHERE {filter}");
            let (count, plan) = count_and_plan(&ctx, &sql).await;
            assert_eq!(count, samtools_count(&args), "{sql} at {partitions} partitions");
            assert!(!plan.contains("FilterExec"), "{sql}: DataFusion filters again:\n{plan}");
            assert!(plan.contains("predicate="), "{sql}: nothing pushed:\n{plan}");
            // Taken at planning time (the logical scan holds them), not only by physical pushdown.
            assert!(plan.contains("full_filters="), "{sql}: not an Exact filter of the table:\n{plan}");
        }
        // The region reaches the index.
        let (_, plan) = count_and_plan(&ctx, "SELECT count(*) FROM t WHERE rname = 'chr3' AND pos < 5000").await;
        assert!(plan.contains("index_selection="), "{plan}");
    }
}

#[tokio::test]
async fn other_filters_stay_with_datafusion() {
    let path = data("sample.bam");
    let ctx = context(path.to_str().unwrap(), 2).await;
    let sql = "SELECT count(*) FROM t WHERE mapq >= 30 AND qname LIKE 'chr2-%'";
    let (count, plan) = count_and_plan(&ctx, sql).await;
    assert!(plan.contains("FilterExec"), "{plan}");
    let names = samtools(&["view", "-q", "30", path.to_str().unwrap()]);
    let expected = names.lines().filter(|l| l.split('\t').next().unwrap().starts_with("chr2-")).count() as i64;
    assert!(expected > 0, "the test filter selects nothing");
    assert_eq!(count, expected);
}

#[tokio::test]
async fn limit_with_pushed_filter_returns_filtered_rows() {
    let path = data("sample.bam");
    let ctx = context(path.to_str().unwrap(), 2).await;
    let batches = query(&ctx, "SELECT mapq FROM t WHERE mapq >= 50 LIMIT 7").await.unwrap();
    let values: Vec<u8> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<arrow::datatypes::UInt8Type>().values().to_vec())
        .collect();
    assert_eq!(values.len(), 7);
    assert!(values.iter().all(|&q| q >= 50), "{values:?}");
}

/// A `BamTable` over Hive-style directories (as the Python extension makes from `STORED AS BAM`)
/// gives partition-column filters to the listing, which reads only the matching files; record
/// filters still reach the decoder.
#[tokio::test]
async fn partition_filters_choose_the_files() {
    let root = tempfile::tempdir().unwrap();
    for (dir, file) in [("sample=a", "sample.bam"), ("sample=b", "name_sorted.bam")] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
        std::fs::copy(data(file), root.path().join(dir).join(file)).unwrap();
    }
    let ctx = SessionContext::new();
    ctx.enable_bam().unwrap();
    let create = format!("CREATE EXTERNAL TABLE l STORED AS BAM LOCATION '{}/'", root.path().display());
    query(&ctx, &create).await.unwrap();
    let provider = ctx.table_provider("l").await.unwrap();
    let listing = provider.downcast_ref::<datafusion::datasource::listing::ListingTable>().unwrap().clone();
    ctx.register_table("t", Arc::new(BamTable::from_listing(Arc::new(listing)))).unwrap();

    let name_sorted = data("name_sorted.bam");
    let (count, plan) = count_and_plan(&ctx, "SELECT count(*) FROM t WHERE sample = 'b' AND mapq >= 30").await;
    assert_eq!(count, samtools_count(&["-q", "30", name_sorted.to_str().unwrap()]));
    assert!(plan.contains("sample=b/name_sorted.bam") && !plan.contains("sample=a"), "{plan}");
    assert!(!plan.contains("FilterExec"), "both filters are taken below DataFusion: {plan}");
}

/// Headers and indexes live in the session's file metadata cache, checked against each file's
/// size and modification time: a file replaced by another BAM is read again, not with the old
/// header and index. The cache is bounded by the runtime's limit.
#[tokio::test]
async fn file_facts_are_cached_per_session_and_a_changed_file_is_read_again() {
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.bam");
    std::fs::copy(data("sample.bam"), &path).unwrap();
    std::fs::copy(data("sample.bam.bai"), dir.path().join("x.bam.bai")).unwrap();
    let ctx = crate::context();
    let cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
    let p = path.to_str().unwrap();
    ctx.register_bam("before", p, BamOptions::default()).await.unwrap();
    let n = query(&ctx, "SELECT count(flag) FROM before").await.unwrap();
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), samtools_count(&[p]));
    assert_eq!(cache.len(), 1, "one file's facts in the session's cache");

    std::fs::copy(data("edge.bam"), &path).unwrap();
    std::fs::remove_file(dir.path().join("x.bam.bai")).unwrap();
    ctx.register_bam("after", p, BamOptions::default()).await.unwrap();
    let mut rows = table_rows(&query(&ctx, "SELECT * FROM after").await.unwrap());
    rows.sort();
    let mut expected = samtools_rows(&path, &[]);
    expected.sort();
    assert!(rows == expected, "the replaced file read with the facts of the old one");

    // A limit below one file's facts keeps none of them; scans still work.
    let runtime = RuntimeEnvBuilder::new().with_metadata_cache_limit(16).build_arc().unwrap();
    let small = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    small.enable_bam().unwrap();
    small.register_bam("t", p, BamOptions::default()).await.unwrap();
    assert_eq!(table_rows(&query(&small, "SELECT * FROM t").await.unwrap()).len(), expected.len());
    assert_eq!(small.runtime_env().cache_manager.get_file_metadata_cache().len(), 0);
}
