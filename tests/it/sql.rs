//! SQL: `STORED AS BAM`, options, COPY to Parquet and Arrow, aggregates, `bam_header`.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use datafusion_bam::BamError;

use crate::oracle::{data, samtools, samtools_count, table_rows};
use crate::{context, query};

fn create(table: &str, file: &str, options: &str) -> String {
    format!("CREATE EXTERNAL TABLE {table} STORED AS BAM LOCATION '{}' {options}", data(file).display())
}

/// The single number a count query (or a COPY, which reports UInt64) returns.
fn count(batches: &[arrow::array::RecordBatch]) -> i64 {
    let col = arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Int64).unwrap();
    col.as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn stored_as_bam_with_options() {
    let ctx = context();
    query(&ctx, &create("reads", "sample.bam", "OPTIONS ('tags' 'NM,AS')")).await.unwrap();
    let schema = ctx.table("reads").await.unwrap().schema().as_arrow().clone();
    let tags: Vec<String> = match schema.field_with_name("tags").unwrap().data_type() {
        arrow::datatypes::DataType::Struct(f) => f.iter().map(|f| f.name().clone()).collect(),
        _ => unreachable!(),
    };
    assert_eq!(tags, ["NM", "AS"]);
    let err = query(&ctx, &create("bad", "sample.bam", "OPTIONS ('tagz' 'NM')")).await.unwrap_err().to_string();
    assert!(err.contains("tagz") && err.contains("valid options"), "{err}");
    let err = query(&ctx, &create("bad", "sample.bam", "OPTIONS ('tags' 'N')")).await.unwrap_err().to_string();
    assert!(err.contains("invalid SAM tag name"), "{err}");
}

#[tokio::test]
async fn aggregates_match_samtools_counts() {
    let ctx = context();
    query(&ctx, &create("reads", "sample.bam", "")).await.unwrap();
    let path = data("sample.bam");
    let p = path.to_str().unwrap();
    let total: i64 = samtools(&["view", "-c", p]).trim().parse().unwrap();
    assert_eq!(count(&query(&ctx, "SELECT count(*) FROM reads").await.unwrap()), total);

    let batches =
        query(&ctx, "SELECT rname, count(*) FROM reads WHERE mapq >= 30 GROUP BY rname ORDER BY 1").await.unwrap();
    let mut seen = 0;
    for b in &batches {
        for i in 0..b.num_rows() {
            let name = b.column(0).as_string::<i32>().value(i);
            let n = b.column(1).as_primitive::<Int64Type>().value(i);
            let expected: i64 = samtools(&["view", "-c", "-q", "30", p, name]).trim().parse().unwrap();
            assert_eq!(n, expected, "{name}");
            seen += 1;
        }
    }
    assert_eq!(seen, 4, "chr1, chr2, chr3 and chrM have reads with mapq >= 30");

    let dup_free_unmapped = "SELECT count(*) FROM reads WHERE (flag & 4) = 4 AND (flag & 1024) = 0";
    let expected: i64 = samtools(&["view", "-c", "-f", "4", "-F", "1024", p]).trim().parse().unwrap();
    assert_eq!(count(&query(&ctx, dup_free_unmapped).await.unwrap()), expected);
}

#[tokio::test]
async fn copy_to_parquet_and_arrow_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context();
    query(&ctx, &create("reads", "edge.bam", "")).await.unwrap();
    let original = table_rows(&query(&ctx, "SELECT * FROM reads").await.unwrap());
    for (ext, stored) in [("parquet", "PARQUET"), ("arrow", "ARROW")] {
        let out = dir.path().join(format!("reads.{ext}"));
        let copied = query(&ctx, &format!("COPY (SELECT * FROM reads) TO '{}' STORED AS {stored}", out.display()))
            .await
            .unwrap();
        assert_eq!(count(&copied) as usize, original.len());
        let back = table_rows(&query(&ctx, &format!("SELECT * FROM '{}'", out.display())).await.unwrap());
        assert_eq!(back, original, "{stored} round trip");
    }
    let out = dir.path().join("names.arrow");
    query(&ctx, &format!("COPY (SELECT qname, seq, qual FROM reads) TO '{}' STORED AS ARROW", out.display()))
        .await
        .unwrap();
    let b = query(&ctx, &format!("SELECT count(*) FROM '{}' WHERE seq IS NULL", out.display())).await.unwrap();
    let expected =
        crate::oracle::samtools_rows(&data("edge.bam"), &[]).iter().filter(|r| r.fields[9].is_none()).count();
    assert_eq!(count(&b) as usize, expected);
    assert!(expected > 0);
}

#[tokio::test]
async fn bam_header_lists_the_header_lines() {
    let ctx = context();
    let path = data("edge.bam");
    let batches =
        query(&ctx, &format!("SELECT record_type, line FROM bam_header('{}') ORDER BY line_number", path.display()))
            .await
            .unwrap();
    let lines: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(|i| b.column(1).as_string::<i32>().value(i).to_string()).collect::<Vec<_>>()
        })
        .collect();
    let expected: Vec<String> =
        samtools(&["view", "-H", "--no-PG", path.to_str().unwrap()]).lines().map(str::to_string).collect();
    assert_eq!(lines, expected);
    let types: Vec<&str> = batches[0].column(0).as_string::<i32>().iter().map(|t| t.unwrap()).collect();
    assert_eq!(types[0], "HD");
    let err = query(&ctx, "SELECT * FROM bam_header(1)").await.unwrap_err().to_string();
    assert!(err.contains("bam_header takes one argument"), "{err}");
    assert!(batches[0].column(1).null_count() == 0);
}

/// Every value of every row, as text.
fn text_rows(batches: &[arrow::array::RecordBatch]) -> Vec<Vec<String>> {
    let text = |b: &arrow::array::RecordBatch, row| -> Vec<String> {
        b.columns().iter().map(|c| arrow::util::display::array_value_to_string(c, row).unwrap()).collect()
    };
    batches.iter().flat_map(|b| (0..b.num_rows()).map(move |row| text(b, row))).collect()
}

/// Files named one by one share a table as a directory's files do: one schema over all their tags.
#[tokio::test]
async fn several_locations_with_different_tags_share_one_table() {
    let ctx = context();
    let (sample, long) = (data("sample.bam"), data("long_reads.bam"));
    let (s, l) = (sample.to_str().unwrap(), long.to_str().unwrap());
    query(&ctx, &format!("CREATE EXTERNAL TABLE both_files STORED AS BAM LOCATION ('{s}', '{l}')")).await.unwrap();
    let total = samtools_count(&[s]) + samtools_count(&[l]);
    assert_eq!(count(&query(&ctx, "SELECT count(*) FROM both_files").await.unwrap()), total);
    // RG and MD are in sample.bam only, tp in both.
    let with_tag = |tag: &str| samtools_count(&["-d", tag, s]) + samtools_count(&["-d", tag, l]);
    assert!(samtools_count(&["-d", "RG", l]) == 0 && with_tag("RG") > 0);
    for tag in ["RG", "MD", "tp"] {
        let expected = with_tag(tag);
        let sql = format!("SELECT count(both_files.tags['{tag}']) FROM both_files");
        assert_eq!(count(&query(&ctx, &sql).await.unwrap()), expected, "{tag}");
    }

    let err = query(&ctx, &format!("CREATE EXTERNAL TABLE twice STORED AS BAM LOCATION ('{s}', '{s}')"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("given twice"), "{err}");
    let missing = format!("{s}.missing");
    let err = query(&ctx, &format!("CREATE EXTERNAL TABLE gone STORED AS BAM LOCATION ('{s}', '{missing}')"))
        .await
        .unwrap_err();
    match BamError::find(&err) {
        Some(BamError::NotFound { location, .. }) => assert_eq!(location, &missing, "as the user wrote it"),
        other => panic!("expected NotFound, got {other:?}: {err}"),
    }
    assert!(err.to_string().contains(&format!("{missing}: not found")), "{err}");
    let empty_dir = tempfile::tempdir().unwrap();
    let dir = format!("{}/", empty_dir.path().display());
    let err = query(&ctx, &format!("CREATE EXTERNAL TABLE none STORED AS BAM LOCATION '{dir}'"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{dir}: no .bam files there")), "{err}");
}

/// Hive-style directories (`sample=a/`) become columns, inferred or declared, typed by a column
/// list of partition columns only; indexes beside the files are not read as BAM files.
#[tokio::test]
async fn partition_directories_become_columns() {
    let root = tempfile::tempdir().unwrap();
    let files =
        [("sample=a/lane=1", "sample.bam"), ("sample=a/lane=2", "name_sorted.bam"), ("sample=b/lane=1", "edge.bam")];
    for (dir, file) in files {
        let dir = root.path().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(data(file), dir.join(file)).unwrap();
    }
    std::fs::copy(data("sample.bam.bai"), root.path().join("sample=a/lane=1/sample.bam.bai")).unwrap();
    let n = |file: &str| samtools_count(&[data(file).to_str().unwrap()]);
    let location = format!("{}/", root.path().display());
    let ctx = context();
    let tables = [
        ("inferred", ""),
        ("named", "PARTITIONED BY (sample, lane)"),
        ("typed", "(sample VARCHAR, lane INT) PARTITIONED BY (sample, lane)"),
    ];
    for (name, columns) in tables {
        query(&ctx, &format!("CREATE EXTERNAL TABLE {name} {columns} STORED AS BAM LOCATION '{location}'"))
            .await
            .unwrap();
        let sql = format!("SELECT sample, CAST(lane AS INT), count(*) FROM {name} GROUP BY 1, 2 ORDER BY 1, 2");
        let rows = text_rows(&query(&ctx, &sql).await.unwrap());
        let expected = [("a", "1", n("sample.bam")), ("a", "2", n("name_sorted.bam")), ("b", "1", n("edge.bam"))]
            .map(|(sample, lane, count)| vec![sample.to_string(), lane.to_string(), count.to_string()]);
        assert_eq!(rows, expected, "{name}");
    }
    let schema = ctx.table("typed").await.unwrap().schema().as_arrow().clone();
    assert_eq!(schema.field_with_name("lane").unwrap().data_type(), &arrow::datatypes::DataType::Int32);
    // Only lane 2's file is read.
    let sql = "SELECT count(*) FROM typed WHERE lane = 2";
    assert_eq!(count(&query(&ctx, sql).await.unwrap()), n("name_sorted.bam"));
    let plan = text_rows(&query(&ctx, &format!("EXPLAIN {sql}")).await.unwrap()).concat().join("\n");
    assert!(plan.contains("lane=2/name_sorted.bam") && !plan.contains("lane=1"), "{plan}");

    let bad = [
        (
            "(qname VARCHAR, sample VARCHAR) PARTITIONED BY (sample)",
            "a column list may only give the types of PARTITIONED BY columns, and qname is not one",
        ),
        ("(sample VARCHAR) PARTITIONED BY (sample, lane)", "partition column lane is missing from the column list"),
        ("PARTITIONED BY (lane)", "Inferred partitions to be [\"sample\", \"lane\"]"),
    ];
    for (columns, message) in bad {
        let err = query(&ctx, &format!("CREATE EXTERNAL TABLE bad {columns} STORED AS BAM LOCATION '{location}'"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{columns}: {err}");
    }
}

/// `WITH ORDER` declares the order the files are in (here coordinate order, whose reference
/// names happen to sort as text): DataFusion then needs no sort for it.
#[tokio::test]
async fn with_order_declares_the_order_of_the_files() {
    let ctx = context();
    let path = data("sample.bam");
    let create = |name: &str, order: &str| {
        format!("CREATE EXTERNAL TABLE {name} STORED AS BAM WITH ORDER ({order}) LOCATION '{}'", path.display())
    };
    query(&ctx, &create("sorted", "rname ASC, pos ASC")).await.unwrap();
    let sql = "SELECT rname, pos FROM sorted ORDER BY rname, pos";
    let plan = text_rows(&query(&ctx, &format!("EXPLAIN {sql}")).await.unwrap()).concat().join("\n");
    assert!(
        plan.contains("output_ordering=[rname@0 ASC NULLS LAST, pos@1 ASC NULLS LAST]") && !plan.contains("SortExec"),
        "{plan}"
    );
    let ours: Vec<String> = text_rows(&query(&ctx, sql).await.unwrap()).iter().map(|r| r[1].clone()).collect();
    let expected: Vec<String> = samtools(&["view", path.to_str().unwrap()])
        .lines()
        .map(|l| l.split('\t').nth(3).unwrap())
        .map(|pos| if pos == "0" { String::new() } else { pos.to_string() })
        .collect();
    assert_eq!(ours, expected);

    let err = query(&ctx, &create("bad", "nosuch ASC")).await.unwrap_err();
    assert!(err.to_string().contains("WITH ORDER: column nosuch is not in the BAM table"), "{err}");
}

/// A region option naming a reference no file has, or coordinates that do not parse (read as a
/// name, as samtools reads `chr1:x-y`), is an `InvalidOption` error listing the files'
/// references, not an empty table; a region of a reference another file of the table has is fine.
#[tokio::test]
async fn a_region_of_no_reference_is_an_invalid_option() {
    let ctx = context();
    let sample = data("sample.bam");
    let s = sample.to_str().unwrap();
    let references = samtools(&["view", "-H", s]);
    let first = references.lines().find_map(|l| l.strip_prefix("@SQ\tSN:")).unwrap().split('\t').next().unwrap();
    for region in ["chrZZ:1-100", "chr1:x-y", "chr1:1-100 chrZZ"] {
        let sql = format!("CREATE EXTERNAL TABLE r STORED AS BAM LOCATION '{s}' OPTIONS ('region' '{region}')");
        let err = query(&ctx, &sql).await.expect_err(region);
        match BamError::find(&err) {
            Some(BamError::InvalidOption { key, reason }) => {
                assert_eq!(key, "region", "{region}");
                assert!(reason.contains(first), "{region}: the message lists the references: {reason}");
            }
            other => panic!("{region}: expected InvalidOption, got {other:?}: {err}"),
        }
    }
    // `huge` is long_ref.bam's reference only: a table over both files takes it.
    let other = data("long_ref.bam");
    let o = other.to_str().unwrap();
    let sql =
        format!("CREATE EXTERNAL TABLE both_files STORED AS BAM LOCATION ('{s}', '{o}') OPTIONS ('region' 'huge')");
    query(&ctx, &sql).await.unwrap();
    let expected = samtools_count(&[o, "huge"]);
    assert!(expected > 0);
    assert_eq!(count(&query(&ctx, "SELECT count(*) FROM both_files").await.unwrap()), expected);
}
