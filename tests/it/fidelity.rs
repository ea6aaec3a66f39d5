//! Every field of every record equals `samtools view` of the same file.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion_bam::{BamOptions, BamSessionExt, TagSelection};

use crate::oracle::{data, endpos_from_text, samtools, samtools_rows, table_rows, Row};
use crate::{context, query};

/// The table's rows in file order: files stay whole (split=false), since partitions arrive in
/// any order; `partitions.rs` checks the split scans.
async fn provider_rows(path: &str, options: BamOptions) -> Vec<Row> {
    let ctx = context();
    ctx.register_bam("t", path, options.with_split(false)).await.unwrap();
    table_rows(&query(&ctx, "SELECT * FROM t").await.unwrap())
}

async fn assert_same_as_samtools(file: &str, options: BamOptions) {
    let path = data(file);
    let expected = samtools_rows(&path, &[]);
    let actual = provider_rows(path.to_str().unwrap(), options).await;
    assert_eq!(actual.len(), expected.len(), "{file}: record count");
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "{file}: record {i} differs");
    }
}

#[tokio::test]
async fn realistic_coordinate_sorted_file() {
    assert_same_as_samtools("sample.bam", BamOptions::default()).await;
}

#[tokio::test]
async fn realistic_name_sorted_file() {
    assert_same_as_samtools("name_sorted.bam", BamOptions::default()).await;
}

#[tokio::test]
async fn unaligned_file() {
    assert_same_as_samtools("unaligned.bam", BamOptions::default()).await;
}

#[tokio::test]
async fn edge_cases() {
    assert_same_as_samtools("edge.bam", BamOptions::default()).await;
}

#[tokio::test]
async fn long_reads_spanning_many_blocks() {
    assert_same_as_samtools("long_reads.bam", BamOptions::default()).await;
}

#[tokio::test]
async fn reference_longer_than_bai_can_index() {
    assert_same_as_samtools("long_ref.bam", BamOptions::default()).await;
}

#[tokio::test]
async fn many_references() {
    assert_same_as_samtools("many_refs.bam", BamOptions::default()).await;
}

#[tokio::test]
async fn header_only_file_has_no_rows() {
    assert_eq!(samtools(&["view", "-c", data("empty.bam").to_str().unwrap()]).trim(), "0");
    assert_same_as_samtools("empty.bam", BamOptions::default()).await;
}

#[tokio::test]
async fn nothing_is_lost_with_any_tag_selection() {
    for tags in ["none", "NM,MD", "XZ:Z,NM:i,Bf,xy", "XA:Z,Xf:i"] {
        let options = BamOptions::default().with_tags(TagSelection::parse(tags).unwrap());
        assert_same_as_samtools("edge.bam", options.clone()).await;
        assert_same_as_samtools("sample.bam", options).await;
    }
}

#[tokio::test]
async fn tag_struct_holds_typed_fields_and_overflow_goes_to_tags_extra() {
    let ctx = context();
    let path = data("edge.bam");
    ctx.register_bam("t", path.to_str().unwrap(), BamOptions::default()).await.unwrap();
    let schema = ctx.table("t").await.unwrap().schema().as_arrow().clone();
    let DataType::Struct(fields) = schema.field_with_name("tags").unwrap().data_type() else {
        panic!("tags is a struct")
    };
    let ty = |n: &str| fields.iter().find(|f| f.name() == n).unwrap().data_type().clone();
    // NM is typed by the SAM spec (integer) even though the file also holds NM:Z.
    assert_eq!(ty("NM"), DataType::Int64);
    assert_eq!(ty("XI"), DataType::Int64);
    assert_eq!(ty("Xf"), DataType::Float32);
    assert!(matches!(ty("Bf"), DataType::List(f) if f.data_type() == &DataType::Float32));
    assert!(matches!(ty("BI"), DataType::List(f) if f.data_type() == &DataType::Int64));
    assert!(fields.iter().all(|f| f.name() != "CG"), "CG is consumed into cigar");

    let b = query(&ctx, "SELECT tags['NM'] AS nm, tags['XZ'] AS xz, tags_extra FROM t WHERE qname = 'oddtags'")
        .await
        .unwrap();
    let b = &b[0];
    assert!(b.column(0).is_null(0), "NM:Z cannot sit in the integer field");
    assert_eq!(b.column(1).as_string::<i32>().value(0), "first");
    assert_eq!(b.column(2).as_string::<i32>().value(0), "NM:Z:notanumber\tXZ:Z:second");
    let b = query(&ctx, "SELECT tags['XI'], tags['Xc'], tags['BS'] FROM t WHERE qname = 'all_types'").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 3_000_000_000);
    assert_eq!(b[0].column(1).as_primitive::<Int64Type>().value(0), -5);
    let bs = b[0].column(2).as_list::<i32>().value(0);
    assert_eq!(bs.as_primitive::<Int64Type>().values(), &[65535, 0]);
}

#[tokio::test]
async fn endpos_is_samtools_endpos() {
    for file in ["sample.bam", "edge.bam"] {
        let path = data(file);
        let expected: Vec<Option<i64>> = samtools_rows(&path, &[]).iter().map(endpos_from_text).collect();
        let ctx = context();
        ctx.register_bam("t", path.to_str().unwrap(), BamOptions::default().with_split(false)).await.unwrap();
        let batches = query(&ctx, "SELECT endpos FROM t").await.unwrap();
        let actual: Vec<Option<i64>> =
            batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().iter().collect::<Vec<_>>()).collect();
        assert_eq!(actual, expected, "{file}");
    }
    // And against samtools' own endpos, for the records whose CIGAR is unusual.
    let path = data("edge.bam");
    let ctx = context();
    ctx.register_bam("t", path.to_str().unwrap(), BamOptions::default()).await.unwrap();
    // (`pair` with flag 133 is unmapped, placed at its mate's position.)
    for (name, flag) in [("spliced", 16), ("longcigar", 0), ("split", 2048), ("pair", 133)] {
        let b = query(&ctx, &format!("SELECT endpos FROM t WHERE qname = '{name}' AND flag = {flag}")).await.unwrap();
        let end = b[0].column(0).as_primitive::<Int64Type>().value(0);
        let expr = format!("qname == \"{name}\" && flag == {flag} && endpos == {end}");
        let n = samtools(&["view", "-c", "-e", &expr, path.to_str().unwrap()]);
        assert_eq!(n.trim(), "1", "{name}: samtools disagrees with endpos {end}");
    }
}

#[tokio::test]
async fn several_files_read_as_one_table() {
    let files: Vec<_> = std::fs::read_dir(data(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bam"))
        .collect();
    assert!(files.len() >= 8, "expected the shipped test files, found {files:?}");
    let mut expected: Vec<Row> = files.iter().flat_map(|f| samtools_rows(f, &[])).collect();
    let glob = format!("{}/*.bam", data("").to_str().unwrap().trim_end_matches('/'));
    let mut actual = provider_rows(&glob, BamOptions::default()).await;
    expected.sort();
    actual.sort();
    assert_eq!(actual.len(), expected.len());
    assert!(actual == expected, "multiset of rows of all files differs from samtools");
}
