//! BAM files in an object store: a real S3-compatible server serves them ([`crate::s3_server`]);
//! partitions, the index and pushdown work as on local files.

use datafusion::prelude::SessionContext;
use datafusion_bam::{BamOptions, BamSessionExt};

use crate::oracle::{data, samtools_count_of, samtools_rows, table_rows};
use crate::partitions::split_context;
use crate::query;
use crate::s3_server::{S3Server, BUCKET};

fn register_store(ctx: &SessionContext, server: &S3Server) {
    let url = datafusion::execution::object_store::ObjectStoreUrl::parse(format!("s3://{BUCKET}")).unwrap();
    ctx.register_object_store(url.as_ref(), server.store());
}

fn count(batches: &[arrow::array::RecordBatch]) -> i64 {
    use arrow::array::AsArray;
    batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_scans_equal_samtools_with_partitions_index_and_pushdown() {
    let server = S3Server::start();
    server.upload(&["sample.bam", "sample.bam.bai", "name_sorted.bam"]).await;
    let ctx = split_context(3);
    register_store(&ctx, &server);

    ctx.register_bam("s", &format!("s3://{BUCKET}/sample.bam"), BamOptions::default()).await.unwrap();
    let mut rows = table_rows(&query(&ctx, "SELECT * FROM s").await.unwrap());
    rows.sort();
    let mut expected = samtools_rows(&data("sample.bam"), &[]);
    expected.sort();
    assert_eq!(rows, expected, "all rows over S3, 3 partitions");

    let region = "SELECT count(*) FROM s WHERE rname = 'chr1' AND pos <= 60000 AND endpos >= 40000";
    assert_eq!(
        count(&query(&ctx, region).await.unwrap()),
        samtools_count_of(&data("sample.bam"), &["chr1:40000-60000"])
    );
    let plan = query(&ctx, &format!("EXPLAIN {}", region.replace("count(*)", "qname"))).await.unwrap();
    let plan = arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string();
    assert!(plan.contains("chunks") && plan.contains("sample.bam.bai"), "the index comes from the store:\n{plan}");
    let mapq = "SELECT count(*) FROM s WHERE mapq >= 30 AND flag & 1024 = 0";
    assert_eq!(
        count(&query(&ctx, mapq).await.unwrap()),
        samtools_count_of(&data("sample.bam"), &["-q", "30", "-F", "1024"])
    );

    // A directory of the store: both files.
    ctx.register_bam("all", &format!("s3://{BUCKET}/"), BamOptions::default()).await.unwrap();
    let both = samtools_count_of(&data("sample.bam"), &[]) + samtools_count_of(&data("name_sorted.bam"), &[]);
    assert_eq!(count(&query(&ctx, "SELECT count(*) FROM all").await.unwrap()), both);
    // A glob in the URL: only the files it matches.
    ctx.register_bam("globbed", &format!("s3://{BUCKET}/s*.bam"), BamOptions::default()).await.unwrap();
    assert_eq!(
        count(&query(&ctx, "SELECT count(*) FROM globbed").await.unwrap()),
        samtools_count_of(&data("sample.bam"), &[])
    );
}

/// Partition directories in a bucket become columns, with indexes beside the files (which are
/// not read as BAM files), as in a local directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_partition_directories_become_columns() {
    let server = S3Server::start();
    let files = [
        ("runs/sample=a/x.bam", "sample.bam"),
        ("runs/sample=a/x.bam.bai", "sample.bam.bai"),
        ("runs/sample=b/y.bam", "name_sorted.bam"),
    ];
    server.upload_as(&files).await;
    let ctx = split_context(2);
    register_store(&ctx, &server);
    let expected = format!(
        "a {}, b {}",
        samtools_count_of(&data("sample.bam"), &[]),
        samtools_count_of(&data("name_sorted.bam"), &[])
    );
    for (name, partitioned) in [("inferred", ""), ("named", "PARTITIONED BY (sample)")] {
        let create = format!("CREATE EXTERNAL TABLE {name} STORED AS BAM {partitioned} LOCATION 's3://{BUCKET}/runs/'");
        query(&ctx, &create).await.unwrap_or_else(|e| panic!("{create}: {e}"));
        let batches =
            query(&ctx, &format!("SELECT sample, count(*) FROM {name} GROUP BY sample ORDER BY sample")).await.unwrap();
        let counts: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |i| {
                    let text = |c: usize| arrow::util::display::array_value_to_string(b.column(c), i).unwrap();
                    format!("{} {}", text(0), text(1))
                })
            })
            .collect();
        assert_eq!(counts.join(", "), expected, "{name}");
    }
    // Globs in URLs, two of them in one table; they cannot carry partition columns.
    let globs = format!("LOCATION ('s3://{BUCKET}/runs/sample=a/*.bam', 's3://{BUCKET}/runs/sample=b/y*')");
    query(&ctx, &format!("CREATE EXTERNAL TABLE globbed STORED AS BAM {globs}")).await.unwrap();
    let both = samtools_count_of(&data("sample.bam"), &[]) + samtools_count_of(&data("name_sorted.bam"), &[]);
    assert_eq!(count(&query(&ctx, "SELECT count(*) FROM globbed").await.unwrap()), both);
    let err = query(&ctx, &format!("CREATE EXTERNAL TABLE bad STORED AS BAM PARTITIONED BY (sample) {globs}"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("a glob in a URL cannot be combined with partition columns"), "{err}");
}
