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
    records_with(path, None)
}

/// Every record of a BAM file as noodles decodes it: the fixed fields, and the aux fields sorted,
/// each value with its exact BAM type (`UInt8(0)` is not `Int32(0)`, `B:C` not `B:i`, `A` not
/// `Z`); records sorted. `samtools view` prints every integer width as `i`, so only this sees
/// widths.
pub fn typed_records(path: &Path) -> Vec<String> {
    let mut reader = noodles_bam::io::reader::Builder.build_from_path(path).unwrap();
    // Past the header without parsing its text, which noodles refuses for some htslib-test files.
    let mut header = reader.header_reader();
    header.read_magic_number().unwrap();
    header.raw_sam_header_reader().unwrap().discard_to_end().unwrap();
    header.read_reference_sequences().unwrap();
    let mut records: Vec<String> = reader
        .records()
        .map(|record| {
            let r = record.unwrap();
            let mut aux: Vec<String> = r.data().iter().map(|field| format!("{field:?}")).collect();
            aux.sort();
            format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {:?} {:?} {:?} {aux:?}",
                r.name(),
                r.flags(),
                r.reference_sequence_id(),
                r.alignment_start(),
                r.mapping_quality(),
                r.cigar(),
                r.mate_reference_sequence_id(),
                r.mate_alignment_start(),
                r.template_length(),
                r.sequence(),
                r.quality_scores(),
                r.data().get(b"CG"),
            )
        })
        .collect();
    records.sort();
    records
}

/// htslib's own test SAMs (Debian's `htslib-test`), every corner of the format, as samtools
/// writes them as BAM, and the BAM files htslib ships beside them.
fn htslib_test_bams(dir: &Path) -> Vec<PathBuf> {
    let root = Path::new("/usr/share/htslib-test/test");
    let mut files = Vec::new();
    for sub in ["", "base_mods", "mpileup"] {
        for entry in std::fs::read_dir(root.join(sub)).expect("htslib-test is installed (.ci/run installs it)") {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if let Some(stem) = name.strip_suffix(".sam") {
                let bam = dir.join(format!("htslib_{stem}.bam"));
                samtools(&["view", "--no-PG", "-b", "-o", bam.to_str().unwrap(), path.to_str().unwrap()]);
                files.push(bam);
            } else if name.ends_with(".bam") && name != "colons.bam" {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 69, "{} htslib-test files", files.len());
    files
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

/// Writes `path` back as BAM from the table and from its Parquet copy, at 1 and 3 partitions;
/// each must read as the original. Returns what went wrong, if anything.
async fn round_trip(path: &Path, out: &Path) -> Result<(), String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{name}: {what}: {e}");
    let mut outputs = Vec::new();
    for partitions in [1, 3] {
        let ctx = split_context(partitions);
        let create = format!("CREATE EXTERNAL TABLE t STORED AS BAM LOCATION '{}'", path.display());
        query(&ctx, &create).await.map_err(|e| fail("create", &e))?;
        let direct = out.join(format!("direct_{partitions}_{name}"));
        let copy = format!("COPY (SELECT * FROM t) TO '{}' STORED AS BAM", direct.display());
        query(&ctx, &copy).await.map_err(|e| fail("COPY to BAM", &e))?;
        let parquet = out.join(format!("{partitions}_{name}.parquet"));
        query(&ctx, &format!("COPY (SELECT * FROM t) TO '{}' STORED AS PARQUET", parquet.display()))
            .await
            .map_err(|e| fail("COPY to Parquet", &e))?;
        // A fresh session, which knows the Parquet file only: the header comes from the option.
        let from_parquet = out.join(format!("parquet_{partitions}_{name}"));
        let copy = format!(
            "COPY (SELECT * FROM '{}') TO '{}' STORED AS BAM OPTIONS ('header' '{}')",
            parquet.display(),
            from_parquet.display(),
            path.display()
        );
        query(&split_context(partitions).enable_url_table(), &copy).await.map_err(|e| fail("Parquet to BAM", &e))?;
        outputs.push((format!("direct, {partitions} partitions"), direct));
        outputs.push((format!("through Parquet, {partitions} partitions"), from_parquet));
    }
    let expected = records(path);
    let typed_expected = typed_records(path);
    for (how, written) in &outputs {
        let how = how.as_str();
        quickcheck(written).map_err(|e| fail(how, &e))?;
        let typed = typed_records(written);
        if typed != typed_expected {
            let first = typed.iter().zip(&typed_expected).find(|(g, e)| g != e);
            return Err(format!(
                "{name}, {how}: typed records differ; first:\n  written:  {:?}\n  original: {:?}",
                first.map(|f| f.0),
                first.map(|f| f.1)
            ));
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_htslib_test_file_is_written_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    round_trip_all(&htslib_test_bams(dir.path())).await;
}

/// htslib-test's `colons.bam` names a reference `chr1,chr3`, which the SAM specification forbids
/// and noodles' header writer refuses: the COPY fails before writing, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_name_the_specification_forbids_is_named() {
    let ctx = crate::context();
    create_table(&ctx, "t", Path::new("/usr/share/htslib-test/test/colons.bam")).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bam");
    let error = query(&ctx, &format!("COPY (SELECT * FROM t) TO '{}' STORED AS BAM", out.display())).await.unwrap_err();
    assert!(error.to_string().contains("cannot hold reference sequence \"chr1,chr3\""), "{error}");
    assert!(!out.exists());
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
            vec![first.as_str(), "bases, and its cigar 1"],
        ),
        (
            format!("SELECT * REPLACE (CASE WHEN qname = '{first}' THEN 'a\tb' ELSE qname END AS qname) FROM t"),
            vec!["is not 1 to 254 printable characters"],
        ),
        ("SELECT qname, flag FROM t".to_string(), vec!["needs columns rname, pos"]),
        ("SELECT *, 1 AS extra FROM t".to_string(), vec!["column extra has no place in a BAM record"]),
    ];
    for (i, (select, expected)) in cases.into_iter().enumerate() {
        let copy = format!("COPY ({select}) TO '{}' STORED AS BAM", target.display());
        let err = query(&ctx, &copy).await.expect_err(&select);
        if i == 0 {
            match BamError::find(&err) {
                Some(BamError::InvalidRow { qname, output, .. }) => {
                    assert_eq!(qname, &first);
                    assert_eq!(output, target.to_str().unwrap(), "the output as the COPY named it");
                }
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

/// The `@PG` lines of `path`, as `(ID, PP)`.
fn programs(path: &Path) -> Vec<(String, String)> {
    let field = |line: &str, tag: &str| line.split('\t').find_map(|f| f.strip_prefix(tag)).unwrap_or("").to_string();
    header_lines(path, "@PG").iter().map(|l| (field(l, "ID:"), field(l, "PP:"))).collect()
}

/// The output's `@PG` line follows the source's last one (`PP`), as samtools chains it; a file
/// this tool wrote gets `datafusion-bam.1`, then `.2`; `@CO` lines are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_program_line_is_chained_as_samtools_chains_it() {
    let dir = tempfile::tempdir().unwrap();
    let sam = dir.path().join("two_programs.sam");
    std::fs::write(
        &sam,
        "@HD\tVN:1.6\n@SQ\tSN:c\tLN:10\n@PG\tID:a\tPN:a\n@PG\tID:b\tPN:b\n@CO\tkept\nr\t4\t*\t0\t0\t*\t*\t0\t0\tA\tI\n",
    )
    .unwrap();
    let source = dir.path().join("two_programs.bam");
    samtools(&["view", "--no-PG", "-b", "-o", source.to_str().unwrap(), sam.to_str().unwrap()]);
    let write = |from: PathBuf, to: PathBuf| async move {
        let ctx = crate::context();
        create_table(&ctx, "t", &from).await;
        query(&ctx, &format!("COPY (SELECT * FROM t) TO '{}' STORED AS BAM", to.display())).await.unwrap();
        to
    };
    let once = write(source.clone(), dir.path().join("once.bam")).await;
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    assert_eq!(programs(&once), pairs(&[("a", ""), ("b", ""), ("datafusion-bam", "b")]));
    assert_eq!(header_lines(&once, "@CO"), ["@CO\tkept"]);
    let twice = write(once, dir.path().join("twice.bam")).await;
    let thrice = write(twice, dir.path().join("thrice.bam")).await;
    assert_eq!(
        programs(&thrice),
        pairs(&[
            ("a", ""),
            ("b", ""),
            ("datafusion-bam", "b"),
            ("datafusion-bam.1", "datafusion-bam"),
            ("datafusion-bam.2", "datafusion-bam.1")
        ])
    );
    // A chain: minimap2, then bamsort.
    let chained = write(data("corpus/biobambam_sorted.bam"), dir.path().join("chained.bam")).await;
    assert_eq!(programs(&chained).last().unwrap(), &("datafusion-bam".to_string(), "bamsort".to_string()));
}

/// Picard's `ValidateSamFile` summary (its error and warning counts, or "No errors found").
fn picard_summary(path: &Path) -> Vec<String> {
    let out = std::process::Command::new("PicardCommandLine")
        .args(["ValidateSamFile", &format!("I={}", path.display()), "MODE=SUMMARY"])
        .output()
        .expect("Picard must be installed: it is an oracle of these tests (apt-get install picard-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("ERROR:") || l.starts_with("WARNING:") || l.starts_with("No errors"))
        .map(str::to_string)
        .collect();
    assert!(
        !lines.is_empty(),
        "Picard gave no summary for {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

/// Picard finds in each written file exactly what it finds in its source (sorted and indexed
/// outputs too): the writer adds no error of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picard_finds_nothing_new_in_written_files() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["sample.bam", "long_reads.bam", "unaligned.bam", "corpus/bwa_mem.bam", "corpus/picard_sorted.bam"] {
        let source = data(name);
        let ctx = split_context(2);
        create_table(&ctx, "t", &source).await;
        let out = dir.path().join(name.replace('/', "_"));
        let sql = format!(
            "COPY (SELECT * FROM t ORDER BY rname, pos) TO '{}' STORED AS BAM OPTIONS ('index' 'bai')",
            out.display()
        );
        query(&ctx, &sql).await.unwrap();
        assert_eq!(picard_summary(&out), picard_summary(&source), "{name}");
    }
}

/// A session with a memory pool of `limit` bytes, spilling to a temporary directory unless
/// `spill` is false.
fn limited_context(limit: usize, spill: bool) -> datafusion::prelude::SessionContext {
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let mode = if spill { DiskManagerMode::OsTmpDirectory } else { DiskManagerMode::Disabled };
    // As the CLI's --memory-limit makes it: a fair pool and one sort for all partitions. With
    // DataFusion's greedy pool, or a sort per partition, one partition's sort may take what
    // another's merge needs (apache/datafusion#24739), and the COPY fails at random.
    let pool = datafusion::execution::memory_pool::FairSpillPool::new(limit);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(std::sync::Arc::new(pool))
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(mode))
        .build_arc()
        .unwrap();
    let config = datafusion::prelude::SessionConfig::new()
        .with_target_partitions(2)
        .set_bool("datafusion.optimizer.repartition_sorts", false);
    let ctx = datafusion::prelude::SessionContext::new_with_config_rt(config, runtime);
    datafusion_bam::BamSessionExt::enable_bam(&ctx).unwrap();
    ctx
}

/// A sorted COPY whose rows do not fit the session's memory pool (256 MiB) spills to disk
/// instead of failing, and writes what `samtools sort` writes. Without a disk to spill to, the
/// same COPY fails: the sort does need more than the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_larger_than_the_memory_pool_spills() {
    let dir = tempfile::tempdir().unwrap();
    let header_sam = dir.path().join("header.sam");
    std::fs::write(&header_sam, "@HD\tVN:1.6\n@SQ\tSN:chr1\tLN:2000000\n").unwrap();
    let header = dir.path().join("header.bam");
    samtools(&["view", "--no-PG", "-b", "-o", header.to_str().unwrap(), header_sam.to_str().unwrap()]);
    // 500,000 reads of 300 bases (about 350 MB as Arrow), at distinct positions in no order.
    let unsorted = dir.path().join("unsorted.bam");
    let make = format!(
        "COPY (SELECT concat('r', value) AS qname, arrow_cast(0, 'UInt16') AS flag, 'chr1' AS rname, \
         (value * 7919) % 1000003 + 1 AS pos, arrow_cast(60, 'UInt8') AS mapq, '300M' AS cigar, \
         CAST(NULL AS VARCHAR) AS rnext, CAST(NULL AS BIGINT) AS pnext, 0 AS tlen, repeat('ACGT', 75) AS seq, \
         repeat('I', 300) AS qual FROM generate_series(1, 500000)) TO '{}' STORED AS BAM OPTIONS ('header' '{}')",
        unsorted.display(),
        header.display()
    );
    query(&crate::context(), &make).await.unwrap();
    let sort = |out: &Path| {
        format!(
            "COPY (SELECT * FROM t ORDER BY rname, pos) TO '{}' STORED AS BAM OPTIONS ('index' 'bai')",
            out.display()
        )
    };

    let no_disk = limited_context(256 << 20, false);
    create_table(&no_disk, "t", &unsorted).await;
    let failed = dir.path().join("failed.bam");
    let error = query(&no_disk, &sort(&failed)).await.unwrap_err();
    assert!(error.to_string().contains("Resources exhausted"), "{error}");
    assert!(!failed.exists());

    let ctx = limited_context(256 << 20, true);
    create_table(&ctx, "t", &unsorted).await;
    let sorted = dir.path().join("sorted.bam");
    query(&ctx, &sort(&sorted)).await.unwrap();
    let by_samtools = dir.path().join("samtools.bam");
    samtools(&["sort", "-o", by_samtools.to_str().unwrap(), unsorted.to_str().unwrap()]);
    let in_order = |path: &Path| samtools(&["view", "--no-PG", path.to_str().unwrap()]);
    assert!(in_order(&sorted) == in_order(&by_samtools), "the sorted output differs from samtools sort's");
    assert_eq!(sort_order(&sorted), "coordinate");
    samtools(&["quickcheck", sorted.to_str().unwrap()]);
}

/// [`records`] of `path`, read against `reference` if given (a CRAM).
fn records_with(path: &Path, reference: Option<&Path>) -> Vec<String> {
    let mut args = vec!["view", "--no-PG"];
    if let Some(reference) = reference {
        args.extend(["-T", reference.to_str().unwrap()]);
    }
    args.push(path.to_str().unwrap());
    let mut lines: Vec<String> = samtools(&args)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let mut tags = fields[11..].to_vec();
            tags.sort();
            [fields[..11].to_vec(), tags].concat().join("\t")
        })
        .collect();
    lines.sort();
    lines
}

/// `COPY ... STORED AS SAM` writes SAM text, `.sam.gz` BGZF-compressed SAM, and `STORED AS CRAM`
/// CRAM against option `reference`: samtools reads each as it reads the source, at 1 and 3
/// partitions. noodles-cram 0.102 keeps a record's `RG` tag in its tags as well as in CRAM's read
/// group (`get_filtered_data`, `io/writer/record/convert.rs`), so samtools shows `RG` twice in a
/// CRAM output; the test expects exactly that, and fails once noodles stops doing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sam_and_cram_outputs_read_as_their_sources() {
    let dir = tempfile::tempdir().unwrap();
    let reference = data("cram/ref.fa");
    for name in ["sample.bam", "corpus/bwa_mem.bam", "corpus/minimap2_long_Y.bam", "corpus/picard_sorted.bam"] {
        let source = data(name);
        let expected = records_with(&source, None);
        let cram_ok = samtools(&["view", "-H", source.to_str().unwrap()]).contains("SN:chr1\tLN:100000");
        for partitions in [1, 3] {
            let ctx = split_context(partitions);
            create_table(&ctx, "t", &source).await;
            let stem = format!("{}_{partitions}", name.replace('/', "_"));
            let mut outputs = vec![
                (dir.path().join(format!("{stem}.sam")), "SAM", String::new()),
                (dir.path().join(format!("{stem}.sam.gz")), "SAM", String::new()),
            ];
            if cram_ok {
                let options = format!(" OPTIONS ('reference' '{}')", reference.display());
                outputs.push((dir.path().join(format!("{stem}.cram")), "CRAM", options));
            }
            for (out, format, options) in outputs {
                let copy = format!("COPY (SELECT * FROM t) TO '{}' STORED AS {format}{options}", out.display());
                query(&ctx, &copy).await.unwrap_or_else(|e| panic!("{copy}: {e}"));
                quickcheck(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
                let got = records_with(&out, (format == "CRAM").then_some(reference.as_path()));
                let expected: Vec<String> = match format {
                    "CRAM" => expected
                        .iter()
                        .map(|line| match line.split('\t').find(|f| f.starts_with("RG:Z:")) {
                            Some(rg) => {
                                let mut fields: Vec<&str> = line.split('\t').collect();
                                fields.push(rg);
                                let mut tags = fields[11..].to_vec();
                                tags.sort();
                                [fields[..11].to_vec(), tags].concat().join("\t")
                            }
                            None => line.clone(),
                        })
                        .collect(),
                    _ => expected.clone(),
                };
                let mut expected = expected;
                expected.sort();
                assert!(got == expected, "{}: {} records, the source {}", out.display(), got.len(), expected.len());
            }
            let gz = dir.path().join(format!("{stem}.sam.gz"));
            assert_eq!(&std::fs::read(&gz).unwrap()[..4], b"\x1f\x8b\x08\x04", "BGZF");
        }
    }
}

/// What BAM holds but SAM text cannot (htslib-test's `auxf#values.sam` has a tag named `A!` and
/// lowercase hex, which htslib writes and the SAM specification forbids) fails a SAM output with
/// the row, its qname and the field, and leaves no file; the same rows write as BAM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sam_outputs_name_what_sam_text_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let bam = dir.path().join("auxf.bam");
    let sam = "/usr/share/htslib-test/test/auxf#values.sam";
    samtools(&["view", "--no-PG", "-b", "-o", bam.to_str().unwrap(), sam]);
    let ctx = crate::context();
    create_table(&ctx, "t", &bam).await;
    let out = dir.path().join("auxf.sam");
    let copy = format!("COPY (SELECT * FROM t) TO '{}' STORED AS SAM", out.display());
    let e = query(&ctx, &copy).await.unwrap_err().to_string();
    assert!(e.contains("row 1") && e.contains("qname Fred") && e.contains(r#"tag "A!""#), "{e}");
    assert!(!out.exists());
    let as_bam = dir.path().join("auxf_out.bam");
    query(&ctx, &format!("COPY (SELECT * FROM t) TO '{}' STORED AS BAM", as_bam.display())).await.unwrap();
    quickcheck(&as_bam).unwrap();
    // Lowercase hex.
    let text = dir.path().join("hex.sam");
    std::fs::write(&text, "@SQ\tSN:c\tLN:20\nr\t0\tc\t1\t0\t4M\t*\t0\t0\tACGT\t*\tH1:H:dead00beef\n").unwrap();
    let hex = dir.path().join("hex.bam");
    samtools(&["view", "--no-PG", "-b", "-o", hex.to_str().unwrap(), text.to_str().unwrap()]);
    create_table(&ctx, "h", &hex).await;
    let copy = format!("COPY (SELECT * FROM h) TO '{}' STORED AS SAM", out.display());
    let e = query(&ctx, &copy).await.unwrap_err().to_string();
    assert!(e.contains("H1:H:dead00beef") && e.contains("0-9A-F"), "{e}");
}

/// A CRAM output names the sequence it cannot compress against: without option `reference`,
/// with a FASTA that lacks one of the header's sequences, or one whose sequence is another than
/// the header's `M5` says. Nothing is left behind. `index` is for BAM outputs only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cram_outputs_name_the_reference_they_lack() {
    let dir = tempfile::tempdir().unwrap();
    let reference = data("cram/ref.fa");
    // The corpus header with an M5 for chr2 that is not ref.fa's chr2.
    let header = dir.path().join("header.sam");
    let text = samtools(&["view", "-H", "--no-PG", data("corpus/bwa_mem.bam").to_str().unwrap()])
        .replace("@SQ\tSN:chr2\tLN:60000", "@SQ\tSN:chr2\tLN:60000\tM5:0123456789abcdef0123456789abcdef");
    std::fs::write(&header, text).unwrap();
    let wrong_m5 = dir.path().join("wrong_m5.bam");
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "samtools reheader {} {} > {}",
            header.display(),
            data("corpus/bwa_mem.bam").display(),
            wrong_m5.display()
        ))
        .status()
        .unwrap();
    let cases = [
        (data("corpus/bwa_mem.bam"), String::new(), "OPTIONS ('reference' 'path/to/ref.fa')"),
        (
            data("sample.bam"),
            format!(" OPTIONS ('reference' '{}')", reference.display()),
            "does not hold sequence chr3",
        ),
        (wrong_m5, format!(" OPTIONS ('reference' '{}')", reference.display()), "header's M5 is 0123456789abcdef"),
    ];
    for (source, options, expected) in cases {
        let ctx = crate::context();
        create_table(&ctx, "t", &source).await;
        let out = dir.path().join("out.cram");
        let copy = format!("COPY (SELECT * FROM t) TO '{}' STORED AS CRAM{options}", out.display());
        let error = query(&ctx, &copy).await.unwrap_err();
        assert!(matches!(BamError::find(&error), Some(BamError::MissingReference { .. })), "{error}");
        assert!(error.to_string().contains(expected), "{copy}: {error}");
        assert!(!out.exists(), "{copy} left {}", out.display());
    }
    // A bad row at the end fails a CRAM output too, after records were written: no file remains.
    let ctx = split_context(2);
    create_table(&ctx, "t", &data("corpus/bwa_mem.bam")).await;
    let out = dir.path().join("bad_row.cram");
    let copy = format!(
        "COPY (SELECT * REPLACE (CASE WHEN qname = (SELECT max(qname) FROM t) THEN '1M' ELSE cigar END AS cigar) \
         FROM t ORDER BY qname) TO '{}' STORED AS CRAM OPTIONS ('reference' '{}')",
        out.display(),
        reference.display()
    );
    let error = query(&ctx, &copy).await.unwrap_err();
    assert!(matches!(BamError::find(&error), Some(BamError::InvalidRow { .. })), "{error}");
    assert!(!out.exists(), "a failed CRAM COPY left {}", out.display());
    let ctx = crate::context();
    create_table(&ctx, "t", &data("sample.bam")).await;
    let copy = format!(
        "COPY (SELECT * FROM t ORDER BY rname, pos) TO '{}' STORED AS SAM OPTIONS ('index' 'bai')",
        dir.path().join("x.sam").display()
    );
    let error = query(&ctx, &copy).await.unwrap_err();
    assert!(matches!(BamError::find(&error), Some(BamError::Unsupported { .. })), "{error}");
}

/// A sorted CRAM output is marked `SO:coordinate`, and option `index 'crai'` writes its `.crai`:
/// samtools' region queries through it give what they give on the source, and on the same file
/// indexed by `samtools index`. `crai` is refused for unsorted and BAM outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_cram_outputs_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let reference = data("cram/ref.fa");
    for name in ["corpus/bwa_mem.bam", "corpus/minimap2_long_Y.bam"] {
        let source = data(name);
        let ctx = split_context(2);
        create_table(&ctx, "t", &source).await;
        let out = dir.path().join(format!("{}.cram", name.replace('/', "_")));
        let options = format!("OPTIONS ('reference' '{}', 'index' 'crai')", reference.display());
        let copy =
            format!("COPY (SELECT * FROM t ORDER BY rname, pos) TO '{}' STORED AS CRAM {options}", out.display());
        query(&ctx, &copy).await.unwrap();
        let by_samtools = dir.path().join("by_samtools.cram");
        std::fs::copy(&out, &by_samtools).unwrap();
        samtools(&["index", by_samtools.to_str().unwrap()]);
        let (out, reference, source) = (out.to_str().unwrap(), reference.to_str().unwrap(), source.to_str().unwrap());
        assert!(std::path::Path::new(&format!("{out}.crai")).is_file());
        assert!(samtools(&["view", "-H", out]).contains("SO:coordinate"));
        for region in ["chr1:20000-40000", "chr1:99000-100000", "chr2", "chrM:100-200", "*"] {
            let expected = samtools(&["view", "-c", source, region]);
            assert_eq!(samtools(&["view", "-c", "-T", reference, out, region]), expected, "{name} {region}");
            let by_samtools = by_samtools.to_str().unwrap();
            assert_eq!(samtools(&["view", "-c", "-T", reference, by_samtools, region]), expected, "{name} {region}");
        }
    }
    let ctx = split_context(2);
    create_table(&ctx, "t", &data("corpus/bwa_mem.bam")).await;
    let reference = reference.display();
    let unsorted = format!(
        "COPY (SELECT * FROM t) TO '{}/u.cram' STORED AS CRAM OPTIONS ('reference' '{reference}', 'index' 'crai')",
        dir.path().display()
    );
    assert!(query(&ctx, &unsorted).await.unwrap_err().to_string().contains("coordinate-sorted"));
    let bam = format!(
        "COPY (SELECT * FROM t ORDER BY rname, pos) TO '{}/x.bam' STORED AS BAM OPTIONS ('index' 'crai')",
        dir.path().display()
    );
    assert!(matches!(BamError::find(&query(&ctx, &bam).await.unwrap_err()), Some(BamError::Unsupported { .. })));
}

/// Tags built without the table's metadata (a struct made in SQL, as rows that went through
/// polars) take their types from a sample of option `header`'s file: `tp:A` stays `A`, integers
/// keep htslib's widths. An Arrow integer of a BAM width keeps that width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untyped_tags_take_their_types_from_the_header_file() {
    let dir = tempfile::tempdir().unwrap();
    let sample = data("sample.bam");
    let ctx = crate::context();
    create_table(&ctx, "t", &sample).await;
    let out = dir.path().join("rebuilt.bam");
    let copy = format!(
        "COPY (SELECT qname, flag, rname, pos, mapq, cigar, rnext, pnext, tlen, seq, qual, \
         named_struct('tp', tags['tp'], 'NM', tags['NM'], 'XU', arrow_cast(tags['AS'], 'UInt16')) AS tags FROM t) \
         TO '{}' STORED AS BAM OPTIONS ('header' '{}')",
        out.display(),
        sample.display()
    );
    query(&ctx, &copy).await.unwrap();
    let typed = typed_records(&out);
    // The aux fields are Debug text inside Debug text: their quotes come escaped.
    let count = |what: &str| typed.iter().filter(|r| r.contains(what)).count();
    assert_eq!(count(r#"Tag(\"tp\"), Character("#), count(r#"Tag(\"tp\")"#));
    assert_eq!(count(r#"Tag(\"XU\"), UInt16("#), count(r#"Tag(\"XU\")"#));
    assert!(count(r#"Tag(\"tp\")"#) > 1000 && count(r#"Tag(\"XU\")"#) > 1000);
    let expected = typed_records(&sample);
    let nm = |r: &String| r.split(r#"Tag(\"NM\"), "#).nth(1).map(|v| v.split(')').next().unwrap().to_string());
    let mut got: Vec<_> = typed.iter().map(nm).collect();
    let mut want: Vec<_> = expected.iter().map(nm).collect();
    got.sort();
    want.sort();
    assert!(got.iter().filter(|v| v.is_some()).count() > 1000);
    assert_eq!(got, want, "NM's values and widths");
}
