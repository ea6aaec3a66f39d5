//! Every test file, as a user converts it: each BAM of `tests/data/` and of the corpus that
//! `tests/data/corpus.sh` makes with other tools (aligners, samtools subcommands, Picard,
//! sambamba, biobambam2, bamtools, bgzip) equals `samtools view` at 1, 2 and 7 partitions, and
//! goes through the README's `COPY (SELECT *) TO` Parquet and Arrow and back unchanged.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion_bam::{BamOptions, BamSessionExt, TagSelection};

use crate::bad_input::records_crossing_blocks;
use crate::damage::{deflate, inflate};
use crate::oracle::{data, samtools_rows, table_rows, Row};
use crate::partitions::split_context;
use crate::query;

/// The BAM files of a directory, by name.
pub fn bams_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bam"))
        .collect();
    files.sort();
    files
}

/// The corpus made by other tools.
pub fn corpus() -> Vec<PathBuf> {
    let files = bams_in(&data("corpus"));
    assert!(files.len() >= 25, "tests/data/corpus holds {} files: run tests/data/corpus.sh", files.len());
    files
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

/// The partition counts every file is compared at.
pub const PARTITIONS: [usize; 3] = [1, 2, 7];

/// Compares the rows of `path` with samtools (given `samtools_args`, such as a CRAM's reference)
/// at each of `partitions`, then (at 2 partitions) COPYs `SELECT *` to Parquet and Arrow and
/// compares what is read back. Returns what went wrong, if anything.
pub async fn check_file(
    path: &Path,
    options: &BamOptions,
    samtools_args: &[&str],
    partitions: &[usize],
    out: &Path,
) -> Result<(), String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let expected = sorted(samtools_rows(path, samtools_args));
    for &n in partitions {
        let ctx = split_context(n);
        ctx.register_bam("t", path.to_str().unwrap(), options.clone()).await.map_err(|e| format!("{name}: {e}"))?;
        let rows = sorted(table_rows(
            &query(&ctx, "SELECT * FROM t").await.map_err(|e| format!("{name}, {n} partitions: {e}"))?,
        ));
        if rows.len() != expected.len() {
            return Err(format!("{name}, {n} partitions: {} rows, samtools {}", rows.len(), expected.len()));
        }
        if let Some((a, e)) = rows.iter().zip(&expected).find(|(a, e)| a != e) {
            return Err(format!(
                "{name}, {n} partitions: row differs from samtools\n  ours:     {a:?}\n  samtools: {e:?}"
            ));
        }
        if n != 2 {
            continue;
        }
        for stored in ["PARQUET", "ARROW"] {
            let target = out.join(format!("{name}.{}", stored.to_lowercase()));
            let copy = format!("COPY (SELECT * FROM t) TO '{}' STORED AS {stored}", target.display());
            query(&ctx, &copy).await.map_err(|e| format!("{name}: COPY to {stored}: {e}"))?;
            let read_back = format!("SELECT * FROM '{}'", target.display());
            let back = query(&crate::context(), &read_back)
                .await
                .map_err(|e| format!("{name}: reading {stored} back: {e}"))?;
            let back = sorted(table_rows(&back));
            if back != expected {
                return Err(format!(
                    "{name}: {stored} read back differs from samtools ({} rows, samtools {})",
                    back.len(),
                    expected.len()
                ));
            }
        }
    }
    Ok(())
}

async fn check_all(files: &[PathBuf], options: BamOptions) {
    let out = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for path in files {
        if let Err(why) = check_file(path, &options, &[], &PARTITIONS, out.path()).await {
            failures.push(why);
        }
    }
    assert!(failures.is_empty(), "{} of {} files failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_file_equals_samtools_and_converts() {
    check_all(&corpus(), BamOptions::default()).await;
}

/// noodles' BGZF writer fills blocks whole too: copies of a short-read and a long-read file
/// recompressed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noodles_recompressed_copies_equal_samtools_and_convert() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["bwa_mem.bam", "minimap2_long_Y.bam", "import_plain.bam"] {
        let bytes = std::fs::read(data("corpus").join(name)).unwrap();
        let copy = dir.path().join(format!("noodles_{name}"));
        std::fs::write(&copy, deflate(&inflate(&bytes))).unwrap();
        assert!(records_crossing_blocks(&copy) > 0, "{name}: the copy has no record crossing a block");
        files.push(copy);
    }
    check_all(&files, BamOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_test_file_equals_samtools_and_converts() {
    let files = bams_in(&data(""));
    assert!(files.len() >= 8, "{files:?}");
    check_all(&files, BamOptions::default()).await;
}

/// With no tag struct at all, and with a tag sample of one record (by record count, and by a
/// budget of one byte; so tags first seen later go to `tags_extra`), the corpus still converts
/// and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_converts_without_tag_columns_and_with_a_tiny_tag_sample() {
    let files = corpus();
    check_all(&files, BamOptions::default().with_tags(TagSelection::parse("").unwrap())).await;
    check_all(&files, BamOptions { tag_sample_records: 1, ..BamOptions::default() }).await;
    check_all(&files, BamOptions { tag_sample_bytes: 1, ..BamOptions::default() }).await;
}

/// The corpus holds what it is for: records crossing BGZF blocks (written by bgzip, Picard,
/// biobambam2, bamtools), files without any aux field, spliced, secondary, supplementary and
/// duplicate records, every `B` subtype, and `=` bases.
#[test]
fn corpus_covers_what_it_claims() {
    let dir = data("corpus");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    for file in [
        "bgzip_bwa_mem.bam",
        "bgzip_long_reads.bam",
        "bgzip_import_plain.bam",
        "picard_sorted.bam",
        "picard_unaligned.bam",
        "biobambam_sorted.bam",
        "bamtools_filter.bam",
    ] {
        assert!(records_crossing_blocks(&dir.join(file)) > 0, "{file}: no record crosses a BGZF block");
    }
    for file in ["import_plain.bam", "stripped.bam", "header_only.bam"] {
        assert!(samtools_rows(&dir.join(file), &[]).iter().all(|r| r.tags.is_empty()), "{file} has aux fields");
    }
    let count = |args: &[&str]| crate::oracle::samtools_count(args);
    assert!(count(&["-f", "256", &p("bwa_mem_all_secondaries.bam")]) > 0);
    assert!(count(&["-f", "2048", &p("minimap2_long_Y.bam")]) > 0);
    assert!(count(&["-f", "1024", &p("markdup.bam")]) > 0);
    assert!(count(&["-f", "1024", &p("picard_markdup.bam")]) > 0);
    let rows = |file: &str| samtools_rows(&dir.join(file), &[]);
    assert!(rows("hisat2_spliced.bam").iter().any(|r| r.sam_field(5).contains('N')));
    assert!(rows("minimap2_splice.bam").iter().any(|r| r.sam_field(5).contains('N')));
    assert!(rows("calmd_equals.bam").iter().any(|r| r.sam_field(9).contains('=')));
    assert!(rows("minimap2_cs.bam").iter().all(|r| r.fields[2].is_none() || r.tags.iter().any(|(t, _)| t == "cs")));
    let corners = crate::oracle::samtools(&["view", &p("hand_corners.bam")]);
    for needle in ["B:c,", "B:C,", "B:s,", "B:S,", "B:i,", "B:I,", "B:f,", "Be:B:C\t", "H:00FF", "3M2P2I3M", "4=1X3="] {
        assert!(corners.contains(needle), "hand_corners.bam lacks {needle}");
    }
}

/// Tables without tag fields have no `tags` column, whichever way they come about.
#[tokio::test]
async fn a_table_without_tag_fields_has_no_tags_column() {
    let ctx = split_context(2);
    let cases = [
        ("import_plain.bam", ""),
        ("stripped.bam", ""),
        ("header_only.bam", ""),
        ("bwa_mem.bam", "OPTIONS ('tags' '')"),
        ("bwa_mem.bam", "OPTIONS ('tags' 'none')"),
    ];
    for (i, (file, options)) in cases.iter().enumerate() {
        let create = format!(
            "CREATE EXTERNAL TABLE t{i} STORED AS BAM LOCATION '{}' {options}",
            data("corpus").join(file).display()
        );
        query(&ctx, &create).await.unwrap();
        let schema = ctx.table(format!("t{i}").as_str()).await.unwrap().schema().as_arrow().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names.last(), Some(&"tags_extra"), "{file} {options}");
        assert!(!names.contains(&"tags"), "{file} {options}: {names:?}");
        assert_eq!(names.len(), 13);
    }
    // Asking for it is a planning error that names the column.
    let err = query(&ctx, "SELECT tags FROM t0").await.unwrap_err().to_string();
    assert!(err.contains("tags"), "{err}");
}

/// The degenerate schema parts that could reach a writer: several header-only files, files that
/// disagree (with and without tags), a tag that is always an empty array, a projection of only
/// `tags`, and COPY with PARTITIONED BY.
#[tokio::test]
async fn degenerate_tables_convert() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::context();
    let corpus = data("corpus");
    let copy = |table: &str, select: &str, target: &Path, extra: &str| {
        format!("COPY (SELECT {select} FROM {table}) TO '{}' STORED AS PARQUET {extra}", target.display())
    };

    // Every file header-only: no rows, no tags column, and a readable Parquet file.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::copy(corpus.join("header_only.bam"), empty.join("a.bam")).unwrap();
    std::fs::copy(data("empty.bam"), empty.join("b.bam")).unwrap();
    query(&ctx, &format!("CREATE EXTERNAL TABLE empty STORED AS BAM LOCATION '{}/'", empty.display())).await.unwrap();
    let target = dir.path().join("empty.parquet");
    query(&ctx, &copy("empty", "*", &target, "")).await.unwrap();
    let back = query(&ctx, &format!("SELECT * FROM '{}'", target.display())).await.unwrap();
    assert_eq!(back.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    let schema = ctx.table("empty").await.unwrap().schema().as_arrow().clone();
    assert!(schema.field_with_name("tags").is_err() && schema.field_with_name("tags_extra").is_ok());

    // Files that disagree: one table, with the tags of the file that has them.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for file in ["import_plain.bam", "hand_corners.bam", "stripped.bam"] {
        std::fs::copy(corpus.join(file), mixed.join(file)).unwrap();
    }
    query(&ctx, &format!("CREATE EXTERNAL TABLE mixed STORED AS BAM LOCATION '{}/'", mixed.display())).await.unwrap();
    let target = dir.path().join("mixed.parquet");
    query(&ctx, &copy("mixed", "*", &target, "")).await.unwrap();
    let mut expected: Vec<Row> = ["import_plain.bam", "hand_corners.bam", "stripped.bam"]
        .iter()
        .flat_map(|f| samtools_rows(&corpus.join(f), &[]))
        .collect();
    expected.sort();
    let back = sorted(table_rows(&query(&ctx, &format!("SELECT * FROM '{}'", target.display())).await.unwrap()));
    assert!(back == expected, "mixed files: Parquet read back differs from samtools");

    // `Be` is an empty `B:C` array in every record that has it: an empty list, not a null.
    let be = query(&ctx, "SELECT tags['Be'] AS be FROM mixed WHERE qname LIKE 'arrays%'").await.unwrap();
    let be = arrow::compute::concat(&be.iter().map(|b| b.column(0).as_ref()).collect::<Vec<_>>()).unwrap();
    assert!(matches!(be.data_type(), DataType::List(_)), "{:?}", be.data_type());
    let be = be.as_list::<i32>();
    assert_eq!(be.len(), 2);
    assert!((0..2).all(|i| be.is_valid(i) && be.value(i).is_empty()));

    // Only the tags struct.
    let target = dir.path().join("tags_only.parquet");
    query(&ctx, &copy("mixed", "tags", &target, "")).await.unwrap();
    let n = query(&ctx, &format!("SELECT count(*) FROM '{}'", target.display())).await.unwrap();
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), expected.len() as i64);

    // PARTITIONED BY, on a table with tags and on one without.
    for (table, file, options) in
        [("part_tags", "bwa_mem.bam", ""), ("part_plain", "stripped.bam", "OPTIONS ('tags' 'none')")]
    {
        let path = corpus.join(file);
        query(&ctx, &format!("CREATE EXTERNAL TABLE {table} STORED AS BAM LOCATION '{}' {options}", path.display()))
            .await
            .unwrap();
        let target = dir.path().join(table);
        query(&ctx, &copy(table, "*", &target, "PARTITIONED BY (rname)")).await.unwrap();
        let back = query(&ctx, &format!("SELECT count(*) FROM '{}/'", target.display())).await.unwrap();
        let n = back[0].column(0).as_primitive::<Int64Type>().value(0);
        assert_eq!(n, crate::oracle::samtools_count(&[path.to_str().unwrap()]), "{table}");
    }
}
