//! Plans with BAM scans serialized and run in a session that knows nothing of BAM, as a
//! distributed engine's executor would: the same rows, and the pushdown survives.

use std::sync::Arc;

use datafusion::physical_plan::{collect, displayable};
use datafusion::prelude::SessionContext;
use datafusion_bam::codec::{BamLogicalCodec, BamPhysicalCodec};
use datafusion_bam::{BamOptions, BamSessionExt, BamTable};
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};

use crate::oracle::{data, samtools, samtools_count, samtools_rows, table_rows};
use crate::partitions::split_context;

fn sorted(batches: &[arrow::array::RecordBatch]) -> Vec<String> {
    let text = arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn physical_plans_with_pushdown_run_elsewhere() {
    let ctx = split_context(3);
    let sample = data("sample.bam");
    ctx.register_bam("t", sample.to_str().unwrap(), BamOptions::default().with_skip_damaged(true)).await.unwrap();
    let sql = "SELECT qname, pos, mapq FROM t WHERE rname = 'chr1' AND pos <= 60000 AND endpos >= 20000 AND mapq >= 30";
    let df = ctx.sql(sql).await.unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    let local = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();

    let bytes = physical_plan_to_bytes_with_extension_codec(plan, &BamPhysicalCodec).unwrap();
    let elsewhere = SessionContext::new();
    let decoded =
        physical_plan_from_bytes_with_extension_codec(&bytes, &elsewhere.task_ctx(), &BamPhysicalCodec).unwrap();
    let shown = displayable(decoded.as_ref()).indent(true).to_string();
    assert!(
        shown.contains("predicate=") && shown.contains("regions=[chr1:") && shown.contains("file_groups={3 groups"),
        "the decoded scan keeps its predicate and byte ranges:\n{shown}"
    );
    assert!(!shown.contains("FilterExec"), "{shown}");
    let remote = collect(decoded, elsewhere.task_ctx()).await.unwrap();
    assert_eq!(sorted(&remote), sorted(&local));
    let rows: usize = remote.iter().map(|b| b.num_rows()).sum();
    let expected = samtools_count(&["-q", "30", sample.to_str().unwrap(), "chr1:20000-60000"]);
    assert_eq!(rows as i64, expected);
}

#[tokio::test]
async fn logical_plans_of_bam_tables_run_elsewhere() {
    let ctx = SessionContext::new();
    let sample = data("sample.bam");
    let table = BamTable::open(&ctx.state(), sample.to_str().unwrap(), BamOptions::default()).await.unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    let plan =
        ctx.sql("SELECT * FROM t WHERE mapq >= 30 AND flag & 1024 = 0").await.unwrap().into_optimized_plan().unwrap();
    let bytes = logical_plan_to_bytes_with_extension_codec(&plan, &BamLogicalCodec).unwrap();

    let elsewhere = SessionContext::new();
    let decoded =
        logical_plan_from_bytes_with_extension_codec(&bytes, &elsewhere.task_ctx(), &BamLogicalCodec).unwrap();
    let batches = elsewhere.execute_logical_plan(decoded).await.unwrap().collect().await.unwrap();
    let mut rows = table_rows(&batches);
    rows.sort();
    let mut expected = samtools_rows(&sample, &["-q", "30", "-F", "1024"]);
    expected.sort();
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn logical_plans_keep_globs_and_options() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.bam", "b.bam"] {
        std::fs::copy(data("edge.bam"), dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), "not a BAM file").unwrap();
    let glob = format!("{}/*.bam", dir.path().display());
    let ctx = SessionContext::new();
    let options = BamOptions::default().with_regions(datafusion_bam::parse_regions("chr1:400-600").unwrap());
    ctx.register_table("t", Arc::new(BamTable::open(&ctx.state(), &glob, options).await.unwrap())).unwrap();
    let plan = ctx.sql("SELECT count(*) FROM t").await.unwrap().into_optimized_plan().unwrap();
    let bytes = logical_plan_to_bytes_with_extension_codec(&plan, &BamLogicalCodec).unwrap();
    let elsewhere = SessionContext::new();
    let decoded =
        logical_plan_from_bytes_with_extension_codec(&bytes, &elsewhere.task_ctx(), &BamLogicalCodec).unwrap();
    let batches = elsewhere.execute_logical_plan(decoded).await.unwrap().collect().await.unwrap();
    use arrow::array::AsArray;
    let n = batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0);
    let sorted_edge = dir.path().join("sorted.bam");
    samtools(&["sort", "-o", sorted_edge.to_str().unwrap(), data("edge.bam").to_str().unwrap()]);
    samtools(&["index", sorted_edge.to_str().unwrap()]);
    assert_eq!(n, 2 * samtools_count(&[sorted_edge.to_str().unwrap(), "chr1:400-600"]));
}

/// `bam_depth` plans (logical and physical, with windows and a BED file) run elsewhere and give
/// the same rows, as on Ballista's scheduler and executors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_plans_run_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let bed = dir.path().join("t.bed");
    std::fs::write(&bed, "chr1\t100\t5000\tex1\nchr2\t0\t300\n").unwrap();
    let sample = data("sample.bam");
    // Without its index, the file is counted in byte ranges: one scan each under one DepthExec.
    let unindexed = dir.path().join("unindexed.bam");
    std::fs::copy(&sample, &unindexed).unwrap();
    let ctx = split_context(3);
    for (file, args) in [
        (&sample, String::new()),
        (&sample, ", 'window=5000 thresholds=1,10'".to_string()),
        (&sample, ", 'chr1:1000-90000', 'mode=samtools window=500 thresholds=1,5'".to_string()),
        (&sample, format!(", 'regions={} min_mapq=20'", bed.display())),
        (&unindexed, ", 'max_span=1000'".to_string()),
        (&unindexed, ", 'window=5000 max_span=1000'".to_string()),
    ] {
        let sql = format!("SELECT * FROM bam_depth('{}'{args})", file.display());
        let df = ctx.sql(&sql).await.unwrap();
        let logical = df.clone().into_optimized_plan().unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
        assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() >= 2, "{sql}");
        let local = sorted(&batches);

        let elsewhere = SessionContext::new();
        let bytes = physical_plan_to_bytes_with_extension_codec(plan, &BamPhysicalCodec).unwrap();
        let decoded =
            physical_plan_from_bytes_with_extension_codec(&bytes, &elsewhere.task_ctx(), &BamPhysicalCodec).unwrap();
        let shown = displayable(decoded.as_ref()).indent(true).to_string();
        assert!(shown.contains("DepthExec"), "{shown}");
        assert_eq!(shown.contains("byte_ranges=3"), file == &unindexed, "{shown}");
        assert_eq!(sorted(&collect(decoded, elsewhere.task_ctx()).await.unwrap()), local, "physical: {sql}");

        let bytes = logical_plan_to_bytes_with_extension_codec(&logical, &BamLogicalCodec).unwrap();
        let decoded =
            logical_plan_from_bytes_with_extension_codec(&bytes, &elsewhere.task_ctx(), &BamLogicalCodec).unwrap();
        let batches = elsewhere.execute_logical_plan(decoded).await.unwrap().collect().await.unwrap();
        assert_eq!(sorted(&batches), local, "logical: {sql}");
    }
}

/// The plan of `COPY ... STORED AS BAM` (and SAM, CRAM) runs elsewhere: the decoded sink writes
/// the same file, header and index as the plan run where it was made.
#[tokio::test]
async fn alignment_outputs_run_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let reference = data("cram/ref.fa");
    let source = data("corpus/bwa_mem.bam");
    let cases = [
        ("BAM", "bam", " OPTIONS ('index' 'bai', 'compression_level' '3')".to_string()),
        ("SAM", "sam.gz", String::new()),
        ("CRAM", "cram", format!(" OPTIONS ('reference' '{}')", reference.display())),
    ];
    for (format, extension, options) in cases {
        let mut written = Vec::new();
        for how in ["local", "elsewhere"] {
            let ctx = split_context(2);
            ctx.register_bam("t", source.to_str().unwrap(), BamOptions::default()).await.unwrap();
            let out = dir.path().join(format!("{how}.{extension}"));
            let sql = format!(
                "COPY (SELECT * FROM t ORDER BY rname, pos) TO '{}' STORED AS {format}{options}",
                out.display()
            );
            let plan = ctx.sql(&sql).await.unwrap().create_physical_plan().await.unwrap();
            let plan = match how {
                "local" => plan,
                _ => {
                    let bytes = physical_plan_to_bytes_with_extension_codec(plan, &BamPhysicalCodec).unwrap();
                    let elsewhere = SessionContext::new();
                    physical_plan_from_bytes_with_extension_codec(&bytes, &elsewhere.task_ctx(), &BamPhysicalCodec)
                        .unwrap()
                }
            };
            collect(plan, ctx.task_ctx()).await.unwrap();
            written.push(out);
        }
        let view = |path: &std::path::Path| {
            crate::oracle::samtools(&[
                "view",
                "-h",
                "--no-PG",
                "-T",
                reference.to_str().unwrap(),
                path.to_str().unwrap(),
            ])
        };
        assert_eq!(view(&written[0]), view(&written[1]), "{format}");
        assert!(view(&written[1]).contains("SO:coordinate"), "{format}");
        if format == "BAM" {
            let index = |p: &std::path::Path| std::fs::read(format!("{}.bai", p.display())).unwrap();
            assert_eq!(index(&written[0]), index(&written[1]));
            assert_eq!(std::fs::read(&written[0]).unwrap(), std::fs::read(&written[1]).unwrap());
        }
    }
}
