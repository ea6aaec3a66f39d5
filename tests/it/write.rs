//! `COPY ... TO 'x.bam' STORED AS BAM`: every test file written back as BAM (directly, and after
//! a Parquet round trip) gives what `samtools view` prints for the original, samtools accepts the
//! output, and rows that cannot be records fail the COPY without leaving a file.

use std::path::{Path, PathBuf};

use datafusion_bam::BamError;

use crate::corpus::{bams_in, corpus};
use crate::oracle::{data, samtools};
use crate::partitions::split_context;
use crate::query;

/// `CREATE EXTERNAL TABLE name STORED AS BAM LOCATION 'path'`, as a user writes it.
async fn create_table(ctx: &datafusion::prelude::SessionContext, name: &str, path: &Path) {
    query(ctx, &format!("CREATE EXTERNAL TABLE {name} STORED AS BAM LOCATION '{}'", path.display())).await.unwrap();
}

/// `samtools view` of a file, each record as its eleven fields and its aux fields sorted (a
/// record's tags are a set: the table keeps typed tags and the others apart), records sorted.
fn records(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = samtools(&["view", path.to_str().unwrap()])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let mut tags = fields[11..].to_vec();
            tags.sort();
            let mut canonical = fields[..11].join("\t");
            for tag in tags {
                canonical.push('\t');
                canonical.push_str(tag);
            }
            canonical
        })
        .collect();
    lines.sort();
    lines
}

/// The header lines of `path` of one record type (`@SQ`, `@RG`, ...).
fn header_lines(path: &Path, kind: &str) -> Vec<String> {
    samtools(&["view", "--no-PG", "-H", path.to_str().unwrap()])
        .lines()
        .filter(|l| l.starts_with(kind))
        .map(str::to_string)
        .collect()
}

/// `samtools quickcheck`, which asks for `@SQ` lines unless told the file is unaligned (`-u`).
fn quickcheck(path: &Path) -> Result<(), String> {
    let unaligned = header_lines(path, "@SQ").is_empty();
    let args: &[&str] = if unaligned { &["quickcheck", "-v", "-u"] } else { &["quickcheck", "-v"] };
    let out = std::process::Command::new("samtools").args(args).arg(path).output().unwrap();
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("samtools quickcheck fails: {}", String::from_utf8_lossy(&out.stdout))),
    }
}

/// Writes `path` back as BAM from the table and from its Parquet copy; both must read as the
/// original. Returns what went wrong, if anything.
async fn round_trip(path: &Path, out: &Path) -> Result<(), String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{name}: {what}: {e}");
    let ctx = split_context(2);
    let create = format!("CREATE EXTERNAL TABLE t STORED AS BAM LOCATION '{}'", path.display());
    query(&ctx, &create).await.map_err(|e| fail("create", &e))?;
    let direct = out.join(format!("direct_{name}"));
    let copy = format!("COPY (SELECT * FROM t) TO '{}' STORED AS BAM", direct.display());
    query(&ctx, &copy).await.map_err(|e| fail("COPY to BAM", &e))?;
    let parquet = out.join(format!("{name}.parquet"));
    query(&ctx, &format!("COPY (SELECT * FROM t) TO '{}' STORED AS PARQUET", parquet.display()))
        .await
        .map_err(|e| fail("COPY to Parquet", &e))?;
    // A fresh session, which knows the Parquet file only: the header comes from the option.
    let from_parquet = out.join(format!("parquet_{name}"));
    let copy = format!(
        "COPY (SELECT * FROM '{}') TO '{}' STORED AS BAM OPTIONS ('header' '{}')",
        parquet.display(),
        from_parquet.display(),
        path.display()
    );
    query(&crate::context(), &copy).await.map_err(|e| fail("Parquet to BAM", &e))?;
    let expected = records(path);
    for (how, written) in [("direct", &direct), ("through Parquet", &from_parquet)] {
        quickcheck(written).map_err(|e| fail(how, &e))?;
        let got = records(written);
        if got != expected {
            let first = got.iter().zip(&expected).find(|(g, e)| g != e);
            return Err(format!(
                "{name}, {how}: {} records, the original {}; first difference:\n  written:  {:?}\n  original: {:?}",
                got.len(),
                expected.len(),
                first.map(|f| f.0),
                first.map(|f| f.1)
            ));
        }
        for kind in ["@SQ", "@RG"] {
            if header_lines(written, kind) != header_lines(path, kind) {
                return Err(format!("{name}, {how}: the {kind} lines differ from the original's"));
            }
        }
    }
    Ok(())
}

async fn round_trip_all(files: &[PathBuf]) {
    let out = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for path in files {
        if let Err(why) = round_trip(path, out.path()).await {
            failures.push(why);
        }
    }
    assert!(failures.is_empty(), "{} of {} files failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_file_is_written_back_as_samtools_reads_it() {
    round_trip_all(&corpus()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_test_file_is_written_back_as_samtools_reads_it() {
    round_trip_all(&bams_in(&data(""))).await;
}

/// `@HD SO` of a written file.
fn sort_order(path: &Path) -> String {
    let hd = header_lines(path, "@HD").concat();
    hd.split('\t').find_map(|f| f.strip_prefix("SO:")).unwrap_or("").to_string()
}

/// Output ordered by `rname, pos` is marked `SO:coordinate` when the header's reference names are
/// in text order (then it is BAM's coordinate order); option `index` writes its `.bai` or `.csi`,
/// through which samtools' region counts equal the original's, and samtools indexes it the same.
/// Otherwise, and without ORDER BY, it is `unsorted`, and cannot be indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_output_is_marked_coordinate_sorted_and_indexed() {
    let out = tempfile::tempdir().unwrap();
    let ctx = split_context(3);
    let source = data("sample.bam");
    create_table(&ctx, "t", &source).await;
    let regions = ["chr1", "chr2:1000-5000", "chr3:1-1", "chr1:50000-50100", "chr4", "*"];
    let count = |p: &Path, region: &str| samtools(&["view", "-c", p.to_str().unwrap(), region]);
    for kind in ["bai", "csi"] {
        let sorted = out.path().join(format!("sorted_{kind}.bam"));
        let copy = format!(
            "COPY (SELECT * FROM t ORDER BY rname, pos) TO '{}' STORED AS BAM OPTIONS ('index' '{kind}')",
            sorted.display()
        );
        query(&ctx, &copy).await.unwrap();
        assert_eq!(sort_order(&sorted), "coordinate");
        let index = out.path().join(format!("sorted_{kind}.bam.{kind}"));
        assert!(index.is_file(), "no {}", index.display());
        for region in regions {
            assert_eq!(count(&sorted, region), count(&source, region), "{kind}: {region}");
        }
        assert_eq!(records(&sorted), records(&source));
        // samtools' own index of the file answers the same.
        std::fs::remove_file(&index).unwrap();
        samtools(&["index", sorted.to_str().unwrap()]);
        for region in regions {
            assert_eq!(count(&sorted, region), count(&source, region), "samtools' index: {region}");
        }
    }
    let sorted = out.path().join("sorted_bai.bam");
    let programs = header_lines(&sorted, "@PG");
    assert!(
        programs.iter().any(|l| l.contains("ID:datafusion-bam") && l.contains("PN:datafusion-bam")),
        "{programs:?}"
    );

    let unordered = out.path().join("unordered.bam");
    query(&ctx, &format!("COPY (SELECT * FROM t) TO '{}' STORED AS BAM", unordered.display())).await.unwrap();
    assert_eq!(sort_order(&unordered), "unsorted");
    let copy = format!("COPY (SELECT * FROM t) TO '{}' STORED AS BAM OPTIONS ('index' 'bai')", unordered.display());
    let err = query(&ctx, &copy).await.unwrap_err().to_string();
    assert!(err.contains("ORDER BY rname, pos"), "{err}");

    // `huge` sorts before `small` by name, but comes after it in the header.
    let by_name = out.path().join("by_name.bam");
    let long_ref = data("long_ref.bam");
    create_table(&ctx, "l", &long_ref).await;
    query(&ctx, &format!("COPY (SELECT * FROM l ORDER BY rname, pos) TO '{}' STORED AS BAM", by_name.display()))
        .await
        .unwrap();
    assert_eq!(sort_order(&by_name), "unsorted");
    assert_eq!(records(&by_name), records(&long_ref));
}

/// A row that cannot be a BAM record fails the COPY with an error naming its `qname`, and so do
/// queries without the columns a record needs; no output file is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_cannot_be_records_fail_and_leave_nothing() {
    let out = tempfile::tempdir().unwrap();
    let ctx = split_context(2);
    let source = data("sample.bam");
    create_table(&ctx, "t", &source).await;
    let target = out.path().join("bad.bam");
    let first =
        samtools(&["view", source.to_str().unwrap()]).lines().next().unwrap().split('\t').next().unwrap().to_string();
    let cases = [
        (
            format!("SELECT * REPLACE (CASE WHEN qname = '{first}' THEN 'chrZ' ELSE rname END AS rname) FROM t"),
            vec![first.as_str(), "rname chrZ is not a reference sequence"],
        ),
        (
            format!("SELECT * REPLACE (CASE WHEN qname = '{first}' THEN '1M' ELSE cigar END AS cigar) FROM t"),
            vec![first.as_str(), "length"],
        ),
        (
            format!("SELECT * REPLACE (CASE WHEN qname = '{first}' THEN 'a\tb' ELSE qname END AS qname) FROM t"),
            vec!["qname holds a tab"],
        ),
        ("SELECT qname, flag FROM t".to_string(), vec!["needs columns rname, pos"]),
        ("SELECT *, 1 AS extra FROM t".to_string(), vec!["column extra has no place in a BAM record"]),
    ];
    for (i, (select, expected)) in cases.into_iter().enumerate() {
        let copy = format!("COPY ({select}) TO '{}' STORED AS BAM", target.display());
        let err = query(&ctx, &copy).await.expect_err(&select);
        if i == 0 {
            match BamError::find(&err) {
                Some(BamError::InvalidRow { qname, .. }) => assert_eq!(qname, &first),
                other => panic!("{select}: expected an InvalidRow error, got {other:?}: {err}"),
            }
        }
        let err = err.to_string();
        for part in expected {
            assert!(err.contains(part), "{select}: {err}");
        }
        assert!(!target.exists(), "{select}: a failed COPY left {}", target.display());
    }
    // No BAM table, no header option: the error says how to give one.
    let copy = format!(
        "COPY (SELECT 'r' AS qname, CAST(4 AS SMALLINT UNSIGNED) AS flag, NULL AS rname, NULL AS pos, NULL AS mapq, \
         NULL AS cigar, NULL AS rnext, NULL AS pnext, 0 AS tlen, 'ACGT' AS seq, NULL AS qual) TO '{}' STORED AS BAM",
        target.display()
    );
    let err = query(&ctx, &copy).await.unwrap_err().to_string();
    assert!(err.contains("OPTIONS ('header'"), "{err}");
    let with_header =
        copy.replace("STORED AS BAM", &format!("STORED AS BAM OPTIONS ('header' '{}')", source.display()));
    query(&ctx, &with_header).await.unwrap();
    assert_eq!(records(&target), vec!["r\t4\t*\t0\t255\t*\t*\t0\t0\tACGT\t*".to_string()]);
}

/// Tables over files of different references need a header named; `compression_level` sets the
/// BGZF level; `PARTITIONED BY` writes one valid BAM per value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_options_and_partitioned_outputs() {
    let out = tempfile::tempdir().unwrap();
    let ctx = split_context(2);
    let (a, b) = (data("sample.bam"), data("long_ref.bam"));
    let create = format!("CREATE EXTERNAL TABLE mixed STORED AS BAM LOCATION ('{}', '{}')", a.display(), b.display());
    query(&ctx, &create).await.unwrap();
    let target = out.path().join("mixed.bam");
    let err = query(&ctx, &format!("COPY (SELECT * FROM mixed) TO '{}' STORED AS BAM", target.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("different reference sequences") && err.contains("'header'"), "{err}");

    create_table(&ctx, "t", &a).await;
    let size = |level: u8| {
        let path = out.path().join(format!("level{level}.bam"));
        (
            path.clone(),
            format!(
                "COPY (SELECT * FROM t) TO '{}' STORED AS BAM OPTIONS ('compression_level' '{level}')",
                path.display()
            ),
        )
    };
    let (stored, copy) = size(0);
    query(&ctx, &copy).await.unwrap();
    let (best, copy) = size(9);
    query(&ctx, &copy).await.unwrap();
    let bytes = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(bytes(&stored) > 2 * bytes(&best), "level 0: {} bytes, level 9: {}", bytes(&stored), bytes(&best));
    assert_eq!(records(&stored), records(&a));
    let bad = query(&ctx, &size(10).1).await.unwrap_err().to_string();
    assert!(bad.contains("compression_level"), "{bad}");

    let dir = out.path().join("by_flag");
    let copy = format!(
        "COPY (SELECT * FROM t WHERE flag IN (99, 147)) TO '{}/' STORED AS BAM PARTITIONED BY (flag)",
        dir.display()
    );
    let err = query(&ctx, &copy).await.unwrap_err().to_string();
    assert!(err.contains("flag"), "a record without its flag cannot be written: {err}");
    let copy = format!(
        "COPY (SELECT *, CASE WHEN pos < 5000 THEN 'low' ELSE 'high' END AS part FROM t) TO '{}/' STORED AS BAM \
         PARTITIONED BY (part)",
        dir.display()
    );
    query(&ctx, &copy).await.unwrap();
    let mut parts = Vec::new();
    for part in ["low", "high"] {
        let files = bams_in(&dir.join(format!("part={part}")));
        assert_eq!(files.len(), 1, "{part}: {files:?}");
        quickcheck(&files[0]).unwrap();
        parts.extend(records(&files[0]));
    }
    parts.sort();
    assert_eq!(parts, records(&a));
}

/// A COPY whose input fails part-way (a truncated source) leaves no output: the writer sees only
/// the end of its rows and completes the file, which the sink then removes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_fails_part_way_leaves_no_output() {
    let out = tempfile::tempdir().unwrap();
    let bytes = crate::damage::sample();
    let blocks = crate::damage::block_offsets(&bytes);
    let cut = out.path().join("cut.bam");
    std::fs::write(&cut, &bytes[..blocks[blocks.len() * 2 / 3] + 100]).unwrap();
    for (partitions, name) in [(1, "one.bam"), (3, "three.bam")] {
        let ctx = split_context(partitions);
        create_table(&ctx, "t", &cut).await;
        let target = out.path().join(name);
        let copy = format!("COPY (SELECT * FROM t) TO '{}' STORED AS BAM", target.display());
        let err = query(&ctx, &copy).await.unwrap_err().to_string();
        assert!(err.contains("cut.bam") && err.contains("truncated"), "{err}");
        assert!(!target.exists(), "{partitions} partitions: the failed COPY left {name}");
    }
}

/// A table over several files with the same references writes one header holding every file's
/// read groups (records name theirs in `RG`), and every file's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_groups_of_every_file_are_kept() {
    let out = tempfile::tempdir().unwrap();
    let ctx = split_context(2);
    let (a, b) = (data("corpus").join("bwa_mem.bam"), data("corpus").join("addreplacerg.bam"));
    let create = format!("CREATE EXTERNAL TABLE t STORED AS BAM LOCATION ('{}', '{}')", a.display(), b.display());
    query(&ctx, &create).await.unwrap();
    let target = out.path().join("merged.bam");
    query(&ctx, &format!("COPY (SELECT * FROM t) TO '{}' STORED AS BAM", target.display())).await.unwrap();
    let ids = |p: &Path| -> Vec<String> {
        let mut ids: Vec<String> =
            header_lines(p, "@RG").iter().map(|l| l.split('\t').nth(1).unwrap().into()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&a), ["ID:lane1"]);
    assert_eq!(ids(&b), ["ID:new"]);
    assert_eq!(ids(&target), ["ID:lane1", "ID:new"]);
    let mut lines = header_lines(&a, "@RG");
    lines.extend(header_lines(&b, "@RG"));
    lines.sort();
    let mut written = header_lines(&target, "@RG");
    written.sort();
    assert_eq!(written, lines);
    let mut both = records(&a);
    both.extend(records(&b));
    both.sort();
    assert_eq!(records(&target), both);
    quickcheck(&target).unwrap();
}
