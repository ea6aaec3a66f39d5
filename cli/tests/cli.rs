//! The `datafusion-bam` binary, and the runnable `sql-examples/`.

use std::path::Path;
use std::process::{Command, Output};

use datafusion::prelude::SessionContext;
use datafusion_bam::BamSessionExt;

use crate::oracle::{data, repo_root, samtools, samtools_count, samtools_count_of};
use crate::s3_server::{moto_python, run, S3Server, BUCKET};

// The library's test helpers, shared rather than copied.
#[path = "../../tests/it/damage.rs"]
mod damage;
#[path = "../../tests/it/oracle.rs"]
#[allow(dead_code)]
mod oracle;
#[path = "../../tests/it/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

const BIN: &str = env!("CARGO_BIN_EXE_datafusion-bam");

/// Runs the CLI in `dir`, where `tests/` points at the repository's tests, so the examples'
/// relative paths work and their outputs land in `dir`.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let tests = dir.join("tests");
    if !tests.exists() {
        std::os::unix::fs::symlink(repo_root().join("tests"), tests).unwrap();
    }
    Command::new(BIN).args(args).current_dir(dir).output().unwrap()
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "CLI failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The last integer printed alone on a line (the `records` result of an example in CSV).
fn last_number(s: &str) -> i64 {
    s.lines().rev().find_map(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("no number in output:\n{s}"))
}

fn sample() -> String {
    data("sample.bam").to_str().unwrap().to_string()
}

#[test]
fn commands_run_in_order_and_print_csv() {
    let dir = tempfile::tempdir().unwrap();
    let create = format!("CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '{}'", sample());
    let out = run_in(
        dir.path(),
        &["-q", "--format", "csv", "-c", &create, "-c", "SELECT count(*) AS n FROM reads WHERE mapq >= 30"],
    );
    let text = stdout_ok(&out);
    assert_eq!(last_number(&text), samtools_count(&["-q", "30", &sample()]));
    assert!(text.contains("n\n"), "CSV header expected:\n{text}");
    let json = stdout_ok(&run_in(
        dir.path(),
        &["-q", "--format", "json", "-c", &create, "-c", "SELECT flag FROM reads LIMIT 1"],
    ));
    assert!(json.contains("{\"flag\":"), "{json}");
}

#[test]
fn failing_statement_stops_with_an_error_status() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        &["-q", "-c", "CREATE EXTERNAL TABLE r STORED AS BAM LOCATION 'no/such/file.bam'", "-c", "SELECT 42"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/file.bam"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("42"), "ran on after an error");

    std::fs::write(dir.path().join("bad.sql"), "SELECT * FROM nowhere;\nSELECT 42;\n").unwrap();
    let out = run_in(dir.path(), &["-q", "-f", "bad.sql"]);
    assert!(!out.status.success(), "a failing -f file must fail the run");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("42"));
}

/// `--memory-limit` bounds the session's memory pool: a sort larger than it spills and gives
/// samtools' count; an aggregate that cannot spill fails, naming the exhausted pool; a size
/// DataFusion cannot parse is an error naming the option.
#[test]
fn memory_limit_bounds_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let create = format!("CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '{}'", sample());
    let limited = |sql: &str| run_in(dir.path(), &["-q", "--format", "csv", "-m", "2M", "-c", &create, "-c", sql]);
    let sorted = stdout_ok(&limited("SELECT count(*) FROM (SELECT qname, seq FROM reads ORDER BY seq, qname)"));
    assert_eq!(last_number(&sorted), samtools_count(&[&sample()]));
    // One sort for all partitions, which DataFusion 55 needs to spill reliably (docs/cli.md).
    let setting = stdout_ok(&limited(
        "SELECT value FROM information_schema.df_settings \
         WHERE name = 'datafusion.optimizer.repartition_sorts'",
    ));
    assert_eq!(setting.lines().last(), Some("false"), "{setting}");
    let out = limited("SELECT length(string_agg(seq, '')) FROM reads");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Resources exhausted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unlimited = run_in(dir.path(), &["-q", "-c", &create, "-c", "SELECT length(string_agg(seq, '')) FROM reads"]);
    stdout_ok(&unlimited);
    let out = run_in(dir.path(), &["-q", "--memory-limit", "lots", "-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--memory-limit lots"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn example(dir: &Path, name: &str) -> String {
    let file = repo_root().join("sql-examples").join(name);
    stdout_ok(&run_in(dir, &["-q", "--format", "csv", "-f", file.to_str().unwrap()]))
}

#[test]
fn example_convert() {
    let dir = tempfile::tempdir().unwrap();
    let out = example(dir.path(), "convert.sql");
    assert_eq!(last_number(&out), samtools_count(&[&sample()]));
    assert!(dir.path().join("sample.parquet").is_file());
}

#[test]
fn example_depth() {
    let dir = tempfile::tempdir().unwrap();
    let out = example(dir.path(), "depth.sql");
    // The bedGraph is mosdepth's per-base BED, line for line.
    let mosdepth = std::process::Command::new("mosdepth")
        .args(["md", &sample()])
        .current_dir(dir.path())
        .output()
        .expect("mosdepth must be installed (apt-get install mosdepth libhts-dev)");
    assert!(mosdepth.status.success(), "{}", String::from_utf8_lossy(&mosdepth.stderr));
    let gz = std::fs::read(dir.path().join("md.per-base.bed.gz")).unwrap();
    let mut expected = String::new();
    std::io::Read::read_to_string(&mut noodles_bgzf::io::Reader::new(&gz[..]), &mut expected).unwrap();
    let got = std::fs::read_to_string(dir.path().join("depth.bedgraph")).unwrap();
    let sorted = |t: &str| {
        let mut lines: Vec<&str> = t.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    assert_eq!(sorted(&got), sorted(&expected));
    assert!(dir.path().join("depth.parquet").exists());
    // chr1's row of the summary, then the last query's five 10 kb windows of chr1:1-50000.
    assert_eq!(out.lines().filter(|l| l.starts_with("chr1,")).count(), 1 + 5, "{out}");
}

#[test]
fn example_filter() {
    let dir = tempfile::tempdir().unwrap();
    let out = example(dir.path(), "filter.sql");
    assert_eq!(last_number(&out), samtools_count(&["-q", "30", "-F", "0xD04", &sample()]));
    assert!(dir.path().join("filtered.arrow").is_file());
}

#[test]
fn example_write_bam() {
    let dir = tempfile::tempdir().unwrap();
    let out = example(dir.path(), "write_bam.sql");
    let expected = samtools(&["view", "-q", "30", "-F", "1024", &sample()]);
    assert_eq!(last_number(&out), expected.lines().count() as i64);
    let written = dir.path().join("q30.bam");
    let written = written.to_str().unwrap();
    // Coordinate-sorted and indexed: samtools prints the records its own filter keeps, and its
    // region queries through the written index agree.
    assert_eq!(samtools(&["view", written]), expected);
    assert!(samtools(&["view", "-H", written]).contains("SO:coordinate"));
    assert!(dir.path().join("q30.bam.bai").is_file());
    let source = sample();
    for region in ["chr1:40000-60000", "chr2", "chr3:100-200"] {
        let filtered = samtools(&["view", "-q", "30", "-F", "1024", &source, region]);
        assert_eq!(samtools(&["view", written, region]), filtered, "{region}");
    }
}

/// SAM and CRAM outputs from the CLI, by `STORED AS` and by the target's name: samtools reads
/// them as it reads the source, and CRAM's options (its reference) reach the writer.
#[test]
fn copy_to_sam_and_cram() {
    let dir = tempfile::tempdir().unwrap();
    let source = data("corpus/bwa_mem.bam");
    let source = source.to_str().unwrap();
    let reference = data("cram/ref.fa");
    let reference = reference.to_str().unwrap();
    let create = format!("CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '{source}'");
    let copies = [
        "COPY (SELECT * FROM reads) TO 'plain.sam' STORED AS SAM".to_string(),
        "COPY (SELECT * FROM reads) TO 'named.sam'".to_string(),
        format!("COPY (SELECT * FROM reads) TO 'reads.cram' STORED AS CRAM OPTIONS ('reference' '{reference}')"),
        format!("COPY (SELECT * FROM reads ORDER BY rname, pos) TO 'named.cram' OPTIONS ('reference' '{reference}', 'index' 'crai')"),
    ];
    let mut args = vec!["-q", "-c", create.as_str()];
    for copy in &copies {
        args.extend(["-c", copy.as_str()]);
    }
    stdout_ok(&run_in(dir.path(), &args));
    let count = samtools_count(&[source]);
    for name in ["plain.sam", "named.sam", "reads.cram", "named.cram"] {
        let path = dir.path().join(name);
        let path = path.to_str().unwrap();
        assert_eq!(samtools_count(&["-T", reference, path]), count, "{name}");
    }
    assert!(std::fs::read_to_string(dir.path().join("plain.sam")).unwrap().starts_with("@HD"));
    assert!(dir.path().join("named.cram.crai").is_file());
    let named = dir.path().join("named.cram");
    let region = samtools_count(&["-T", reference, named.to_str().unwrap(), "chr2"]);
    assert_eq!(region, samtools_count(&[source, "chr2"]));
}

#[test]
fn example_cram() {
    let dir = tempfile::tempdir().unwrap();
    let out = example(dir.path(), "cram.sql");
    let cram = repo_root().join("tests/data/cram/bwa_mem.cram");
    let reference = repo_root().join("tests/data/cram/ref.fa");
    let (cram, reference) = (cram.to_str().unwrap(), reference.to_str().unwrap());
    assert_eq!(last_number(&out), samtools_count(&["-q", "30", "-T", reference, cram]));
    // The BAM written from the CRAM holds what samtools reads from the CRAM.
    let written = dir.path().join("bwa_mem_q30.bam");
    let expected = samtools(&["view", "-q", "30", "-T", reference, cram]);
    let mut got: Vec<&str> = Vec::new();
    let written_records = samtools(&["view", written.to_str().unwrap()]);
    got.extend(written_records.lines());
    let mut expected: Vec<&str> = expected.lines().collect();
    got.sort();
    expected.sort();
    assert_eq!(got.len(), expected.len());
    let fields = |line: &str| line.split('\t').take(11).collect::<Vec<_>>().join("\t");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(fields(g), fields(e));
    }
}

#[test]
fn example_region() {
    let dir = tempfile::tempdir().unwrap();
    let out = example(dir.path(), "region.sql");
    // samtools' region query also returns unmapped reads placed in the region; the SQL keeps
    // only those with an alignment end.
    let expected = samtools_count(&["-F", "4", &sample(), "chr1:100000-200000"]);
    assert!(expected > 0);
    assert_eq!(last_number(&out), expected);
}

#[test]
fn example_stats_matches_idxstats() {
    let dir = tempfile::tempdir().unwrap();
    let out = example(dir.path(), "stats.sql");
    let rows: Vec<Vec<String>> = out.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect();
    let idx = samtools(&["idxstats", &sample()]);
    let mut checked = 0;
    for line in idx.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (mapped, unmapped): (i64, i64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        if mapped + unmapped == 0 {
            continue;
        }
        let row = rows.iter().find(|r| r[0] == f[0]).unwrap_or_else(|| panic!("no row for {}\n{out}", f[0]));
        assert_eq!((row[1].parse::<i64>().unwrap(), row[2].parse::<i64>().unwrap()), (mapped, unmapped), "{}", f[0]);
        checked += 1;
    }
    assert!(checked >= 5, "all four chromosomes and the unplaced reads: {out}");
}

/// Writes `dir/late_corrupt.bam`: sample.bam with a block near the end damaged, so a scan fails
/// after writing most rows. Returns its path and the damaged block's offset.
fn late_corrupt_sample(dir: &Path) -> (std::path::PathBuf, usize) {
    let mut bytes = crate::damage::sample();
    let blocks = crate::damage::block_offsets(&bytes);
    let target = blocks[blocks.len() - 5];
    for b in &mut bytes[target + 40..target + 60] {
        *b ^= 0x5a;
    }
    let bam = dir.join("late_corrupt.bam");
    std::fs::write(&bam, &bytes).unwrap();
    (bam, target)
}

/// A `COPY` of sample.bam joined with itself 4000 times (87M rows): it runs for minutes.
fn long_copy(target: &str) -> String {
    format!(
        "COPY (SELECT r.* FROM '{}' r CROSS JOIN generate_series(1, 4000)) TO '{target}' STORED AS PARQUET",
        sample()
    )
}

#[test]
fn failed_copy_leaves_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let (bam, target) = late_corrupt_sample(dir.path());
    let create = format!("CREATE EXTERNAL TABLE t STORED AS BAM LOCATION '{}'", bam.display());
    for (name, stored) in [("out.parquet", "PARQUET"), ("out.arrow", "ARROW"), ("outdir/", "PARQUET")] {
        let out = dir.path().join(name);
        let copy = format!("COPY (SELECT * FROM t) TO '{}' STORED AS {stored}", out.display());
        let run = run_in(dir.path(), &["-q", "-c", &create, "-c", &copy]);
        assert!(!run.status.success(), "COPY of a corrupt file must fail");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains("late_corrupt.bam") && err.contains(&format!("virtual offset {target}:")), "{err}");
        assert!(!out.exists(), "a failed COPY left {} behind", out.display());
    }
}

#[test]
fn parquet_compression_defaults_to_zstd_level_1_unless_set() {
    let dir = tempfile::tempdir().unwrap();
    let show = ["-c", "SHOW datafusion.execution.parquet.compression"];
    let out = stdout_ok(&run_in(dir.path(), &show));
    assert!(out.contains("zstd(1)"), "{out}");
    let out = Command::new(BIN).args(show).env("DATAFUSION_EXECUTION_PARQUET_COMPRESSION", "snappy").output().unwrap();
    let out = stdout_ok(&out);
    assert!(out.contains("snappy") && !out.contains("zstd(1)"), "{out}");
    let out = stdout_ok(&run_in(
        dir.path(),
        &["-c", "SET datafusion.execution.parquet.compression = 'lz4_raw'", "-c", show[1]],
    ));
    assert!(out.contains("lz4_raw"), "{out}");
}

/// The CLI's per-column Parquet defaults reach the file a COPY writes (no dictionary and no
/// statistics for `seq`; `flag` keeps both), and a COPY's OPTIONS override them.
#[test]
fn parquet_column_defaults_apply_unless_overridden() {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str, options: &str| {
        let create = format!("CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '{}'", sample());
        let copy = format!("COPY (SELECT * FROM reads) TO '{name}' STORED AS PARQUET {options}");
        stdout_ok(&run_in(dir.path(), &["-q", "-c", &create, "-c", &copy]));
        let reader = SerializedFileReader::new(std::fs::File::open(dir.path().join(name)).unwrap()).unwrap();
        let group = reader.metadata().row_group(0).clone();
        move |path: &str| {
            let c = group.columns().iter().find(|c| c.column_path().string() == path).unwrap();
            (c.dictionary_page_offset().is_some(), c.statistics().is_some())
        }
    };
    let column = copy("defaults.parquet", "");
    assert_eq!(column("seq"), (false, false));
    assert_eq!(column("flag"), (true, true));
    let column = copy(
        "overridden.parquet",
        "OPTIONS ('format.dictionary_enabled::seq' 'true', 'format.statistics_enabled::seq' 'page')",
    );
    assert_eq!(column("seq"), (true, true));
}

/// Ctrl-C (SIGINT) during a long `COPY`: the statement stops, nothing that looks like output is
/// left behind, and the exit status is 130.
#[test]
fn interrupted_copy_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["-q", "-c", &long_copy("out.parquet")])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // By now the COPY is reading and writing.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the COPY ended before it could be interrupted");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("Interrupted"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Warnings (here: damaged records skipped) are printed after the statement, on stderr.
#[test]
fn warnings_are_shown_after_the_statement() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = crate::damage::inflate(&std::fs::read(sample()).unwrap());
    let offsets = crate::damage::record_offsets(&data);
    for &at in &offsets[100..130] {
        // refID far outside the header's references.
        data[at + 4..at + 8].copy_from_slice(&1000i32.to_le_bytes());
    }
    let damaged = dir.path().join("damaged.bam");
    std::fs::write(&damaged, crate::damage::deflate(&data)).unwrap();
    let create = format!(
        "CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '{}' OPTIONS ('skip_damaged' 'true')",
        damaged.display()
    );
    let out = run_in(dir.path(), &["-q", "--format", "csv", "-c", &create, "-c", "SELECT count(*) FROM reads"]);
    assert_eq!(last_number(&stdout_ok(&out)), 21_882 - 30);
    let err = String::from_utf8_lossy(&out.stderr);
    let shown = err.lines().filter(|l| l.starts_with("Warning: ") && l.contains("refID 1000")).count();
    assert_eq!(shown, 20, "{err}");
    assert!(err.contains("Warning: 10 more warnings not shown"), "{err}");
}

/// Rows of a Parquet file, read back with DataFusion.
async fn parquet_rows(path: &Path) -> i64 {
    let ctx = datafusion::prelude::SessionContext::new();
    let df = ctx.read_parquet(path.to_str().unwrap(), Default::default()).await.unwrap();
    df.count().await.unwrap() as i64
}

/// The README's conversion of a file without aux fields (no `tags` column), to both formats,
/// and `convert` of it.
#[tokio::test]
async fn file_without_aux_fields_converts() {
    let dir = tempfile::tempdir().unwrap();
    let unaligned = data("unaligned.bam");
    let expected = samtools_count(&[unaligned.to_str().unwrap()]);
    let create = format!("CREATE EXTERNAL TABLE t STORED AS BAM LOCATION '{}'", unaligned.display());
    let copy = |stored: &str, target: &str| format!("COPY (SELECT * FROM t) TO '{target}' STORED AS {stored}");
    let out = run_in(
        dir.path(),
        &["-q", "-c", &create, "-c", &copy("PARQUET", "u.parquet"), "-c", &copy("ARROW", "u.arrow")],
    );
    stdout_ok(&out);
    assert_eq!(parquet_rows(&dir.path().join("u.parquet")).await, expected);
    let ctx = SessionContext::new().enable_url_table();
    ctx.enable_bam().unwrap();
    for file in ["u.parquet", "u.arrow"] {
        let df = ctx.sql(&format!("SELECT * FROM '{}'", dir.path().join(file).display())).await.unwrap();
        let names: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names.last().map(String::as_str), Some("tags_extra"), "{file}: {names:?}");
        assert!(!names.iter().any(|n| n == "tags"), "{file}: {names:?}");
        assert_eq!(df.count().await.unwrap() as i64, expected, "{file}");
    }
    stdout_ok(&run_in(dir.path(), &["convert", "-d", "out", unaligned.to_str().unwrap()]));
    assert_eq!(parquet_rows(&dir.path().join("out/unaligned.parquet")).await, expected);
}

/// `convert` reads `.cram` (with `-o reference=`) and `.sam` inputs as CRAM and SAM.
#[tokio::test]
async fn convert_reads_cram_and_sam_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let cram = data("cram").join("bwa_mem.cram");
    let sam = data("sam").join("hand_corners.sam");
    let reference = data("cram").join("ref.fa");
    let option = format!("reference={}", reference.display());
    let args = ["convert", "-d", "out", "-o", &option, cram.to_str().unwrap(), sam.to_str().unwrap()];
    stdout_ok(&run_in(dir.path(), &args));
    let cram_rows = samtools_count(&["-T", reference.to_str().unwrap(), cram.to_str().unwrap()]);
    assert_eq!(parquet_rows(&dir.path().join("out/bwa_mem.parquet")).await, cram_rows);
    assert_eq!(
        parquet_rows(&dir.path().join("out/hand_corners.parquet")).await,
        samtools_count(&[sam.to_str().unwrap()])
    );
}

/// `convert` writes one complete file per input; after a failure, a rerun skips what was done
/// and converts the rest.
#[tokio::test]
async fn convert_each_file_and_resume_after_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::copy(data("sample.bam"), inputs.join("a.bam")).unwrap();
    let bytes = std::fs::read(data("name_sorted.bam")).unwrap();
    // b.bam is cut inside a block: its conversion fails half-way.
    std::fs::write(inputs.join("b.bam"), &bytes[..bytes.len() / 2 + 77]).unwrap();
    std::fs::copy(data("edge.bam"), inputs.join("c.bam")).unwrap();
    let out = dir.path().join("out");
    let args = |names: &[&str]| {
        let mut a: Vec<String> = vec!["convert".into(), "-d".into(), out.to_str().unwrap().into()];
        a.extend(names.iter().map(|n| inputs.join(n).to_str().unwrap().to_string()));
        a
    };
    let all = args(&["a.bam", "b.bam", "c.bam"]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();

    let first = run_in(dir.path(), &all);
    assert!(!first.status.success());
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(err.contains("b.bam") && err.contains("truncated"), "{err}");
    let listing = |d: &Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(listing(&out), vec!["a.parquet"], "only complete outputs, no temporary files");
    let a_written = std::fs::metadata(out.join("a.parquet")).unwrap().modified().unwrap();

    // The damaged input is replaced; the rerun resumes.
    std::fs::write(inputs.join("b.bam"), &bytes).unwrap();
    let second = run_in(dir.path(), &all);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(err.contains("a.parquet: done before, skipped"), "{err}");
    assert_eq!(listing(&out), vec!["a.parquet", "b.parquet", "c.parquet"]);
    assert_eq!(std::fs::metadata(out.join("a.parquet")).unwrap().modified().unwrap(), a_written);
    for (name, source) in [("a", "sample.bam"), ("b", "name_sorted.bam"), ("c", "edge.bam")] {
        let expected = samtools_count(&[data(source).to_str().unwrap()]);
        assert_eq!(parquet_rows(&out.join(format!("{name}.parquet"))).await, expected, "{name}");
    }
}

#[test]
fn convert_rejects_bad_options_and_colliding_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec!["convert", "-d", o];
        a.extend_from_slice(extra);
        run_in(dir.path(), &a)
    };
    let s = sample();
    let s = s.as_str();
    for (extra, message) in [
        (vec!["-o", "tagz=NM", s], "unknown BAM table option"),
        (vec!["-o", "tags", s], "not KEY=VALUE"),
        (vec!["--to", "csv", s], "unknown output format"),
        (vec![s, s], "would both be converted to"),
    ] {
        let result = run(&extra);
        let err = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success() && err.contains(message), "{extra:?}: {err}");
    }
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

/// Runs the interactive shell in `dir` with `input` on stdin; SIGINT after `interrupt_after`.
fn shell(dir: &Path, input: &str, interrupt_after: Option<std::time::Duration>) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["-q", "--format", "csv"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    if let Some(wait) = interrupt_after {
        std::thread::sleep(wait);
        assert!(child.try_wait().unwrap().is_none(), "the shell ended before it could be interrupted");
        assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    }
    child.wait_with_output().unwrap()
}

/// The shell creates BAM tables with format options, also from a file run with `\i`
/// (datafusion-cli's own shell rejects them), goes on after a failing statement, and removes
/// what a failed `COPY` wrote.
#[test]
fn shell_takes_bam_options_and_cleans_up_after_a_failed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (_, target) = late_corrupt_sample(dir.path());
    // A file run with `\i`, as datafusion-cli's prompt runs one: here with BAM options too.
    let create = format!("CREATE EXTERNAL TABLE r STORED AS BAM LOCATION '{}' OPTIONS ('tags' 'NM');\n", sample());
    std::fs::write(dir.path().join("create.sql"), create).unwrap();
    let input = "\\i create.sql\n\
         SELECT count(*) AS n FROM r WHERE tags['NM'] = 0;\n\
         CREATE EXTERNAL TABLE bad STORED AS BAM LOCATION 'late_corrupt.bam';\n\
         COPY (SELECT * FROM bad) TO 'out.parquet' STORED AS PARQUET;\n\
         SELECT arrow_typeof(tags) AS tags_type FROM r LIMIT 1;\n\
         SELECT 7 * 6 AS answer;\n";
    let out = shell(dir.path(), input, None);
    let text = stdout_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    let numbers: Vec<i64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let nm_zero = samtools_count(&["-e", "[NM]==0", &sample()]);
    assert_eq!(numbers, vec![nm_zero, 42], "stdout:\n{text}\nstderr:\n{err}");
    let tags_type = text.lines().find(|l| l.contains("Struct")).unwrap_or_else(|| panic!("no tags type in:\n{text}"));
    assert!(tags_type.contains("NM") && !tags_type.contains("AS"), "only the NM tag was asked for: {tags_type}");
    assert!(err.contains("late_corrupt.bam") && err.contains(&format!("virtual offset {target}:")), "{err}");
    assert!(err.contains("removed") && !dir.path().join("out.parquet").exists(), "{err}");
}

/// Ctrl-C in the shell stops the running `COPY`, removes its output, and the shell goes on.
#[test]
fn shell_interrupt_stops_the_statement_not_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let input = format!("{};\nSELECT 7 * 6 AS answer;\n", long_copy("out.parquet"));
    let out = shell(dir.path(), &input, Some(std::time::Duration::from_millis(1500)));
    let text = stdout_ok(&out);
    assert!(text.contains("^C") && text.lines().any(|l| l.trim() == "42"), "{text}");
    let left: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != ".history").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// On a terminal the progress bar shows the share of the bytes read, and is erased before the
/// results print (it once stood at the start of the table's first line).
#[test]
fn progress_bar_is_erased_before_results_print() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    for i in 0..80 {
        std::os::unix::fs::symlink(data("sample.bam"), runs.join(format!("s{i}.bam"))).unwrap();
    }
    let create = format!("CREATE EXTERNAL TABLE t STORED AS BAM LOCATION '{}/'", runs.display());
    let select = "SELECT count(*) AS n FROM t WHERE qname LIKE 'x%'";
    // `script` runs the CLI on a pseudo-terminal and copies what it shows to stdout.
    let command = format!("{BIN} -c \"{create}\" -c \"{select}\"");
    let out = Command::new("script").args(["-qec", &command, "/dev/null"]).current_dir(dir.path()).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("% ") && shown.contains(" MiB, ") && shown.contains(" s left"), "no progress bar:\n{shown}");
    // The table starts on a line of its own: after the last bar comes an erase, then the table.
    let table = shown.rfind("+---").expect("a result table");
    let line_start = shown[..table].rfind('\n').map_or(0, |i| i + 1);
    let before_table = shown[line_start..table].replace("\r\x1b[2K", "").replace('\r', "");
    assert!(before_table.is_empty(), "the table's first line starts with {before_table:?}");
    let last_bar = shown.rfind("s left").unwrap();
    assert!(shown[last_bar..table].contains("\r\x1b[2K"), "the bar was not erased before the results");
}

/// The CLI reads `s3://` with the store's options in `OPTIONS`, with and without BAM options: a
/// file, a glob in the URL and a directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reads_s3_locations() {
    let server = S3Server::start();
    server.upload(&["sample.bam", "sample.bam.bai", "name_sorted.bam"]).await;
    let store = format!(
        "'aws.endpoint' '{}', 'aws.allow_http' 'true', 'aws.region' 'us-east-1', \
         'aws.access_key_id' 'test', 'aws.secret_access_key' 'test'",
        server.endpoint
    );
    let in_sample = samtools_count_of(&data("sample.bam"), &["-q", "30"]);
    let in_both = in_sample + samtools_count_of(&data("name_sorted.bam"), &["-q", "30"]);
    // A glob matching sample.bam only, and the directory, whose index is not read as a BAM file.
    let cases = [
        ("sample.bam", "", in_sample),
        ("sam*.bam", ", 'tags' 'NM', 'skip_damaged' 'true'", in_sample),
        ("", "", in_both),
    ];
    for (location, extra, expected) in cases {
        let create = format!(
            "CREATE EXTERNAL TABLE r STORED AS BAM LOCATION 's3://{BUCKET}/{location}' OPTIONS ({store}{extra})"
        );
        let out = Command::new(BIN)
            .args(["-q", "--format", "csv", "-c", &create, "-c", "SELECT count(*) FROM r WHERE mapq >= 30"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{location}{extra}: {}", String::from_utf8_lossy(&out.stderr));
        let n: i64 = text.lines().rev().find_map(|l| l.trim().parse().ok()).unwrap();
        assert_eq!(n, expected, "{location}{extra}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("test"), "credentials must not be printed");
    }
}

/// `http://` locations: plain ranged GETs (the moto server serves public objects over HTTP), with
/// the index fetched the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reads_http_locations() {
    let server = S3Server::start();
    let upload = format!(
        "import boto3\n\
         s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n\
         for name in ['sample.bam', 'sample.bam.bai']:\n    s3.upload_file('{}/' + name, '{BUCKET}', name, ExtraArgs={{'ACL': 'public-read'}})\n",
        server.endpoint,
        data("").display()
    );
    run(Command::new(moto_python()).args(["-c", &upload]));
    let create = format!("CREATE EXTERNAL TABLE h STORED AS BAM LOCATION '{}/{BUCKET}/sample.bam'", server.endpoint);
    let region = "SELECT count(*) FROM h WHERE rname = 'chr1' AND pos <= 60000 AND endpos >= 40000";
    let out = Command::new(BIN)
        .args([
            "-q",
            "--format",
            "csv",
            "-c",
            &create,
            "-c",
            "SELECT count(qname) FROM h WHERE mapq >= 30",
            "-c",
            region,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let numbers: Vec<i64> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    let expected = vec![
        samtools_count_of(&data("sample.bam"), &["-q", "30"]),
        samtools_count_of(&data("sample.bam"), &["chr1:40000-60000"]),
    ];
    assert_eq!(numbers, expected);

    // Plain HTTP cannot list a directory: the error says so.
    let directory = format!("{}/{BUCKET}/", server.endpoint);
    let create = format!("CREATE EXTERNAL TABLE d STORED AS BAM LOCATION '{directory}'");
    let out = Command::new(BIN).args(["-q", "-c", &create]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("BAM location {directory}: cannot list it")), "{err}");
    assert!(err.contains("an http(s) location must name a file"), "{err}");
}

/// `gs://` locations through object_store's Google Cloud Storage client. That client speaks the
/// GCS XML API (path-style GET, HEAD and `list-type=2` listing), which is the S3 protocol, so the
/// moto server stands in for Google's endpoint: `gcs_base_url` in the service account key points
/// the client at it, and `disable_oauth` leaves out the token exchange. The directory holds an
/// index beside its BAM files: only the `.bam` files are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reads_gs_locations() {
    const SECRET: &str = "key-id-not-to-be-printed";
    // The GCS client writes a `-` in a bucket name as `%2D`, which moto does not decode.
    const GS_BUCKET: &str = "bamgs";
    let server = S3Server::start();
    let upload = format!(
        "import boto3\n\
         s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n\
         s3.create_bucket(Bucket='{GS_BUCKET}', ACL='public-read')\n\
         for name in ['sample.bam', 'sample.bam.bai', 'name_sorted.bam']:\n    s3.upload_file('{}/' + name, '{GS_BUCKET}', name, ExtraArgs={{'ACL': 'public-read'}})\n",
        server.endpoint,
        data("").display()
    );
    run(Command::new(moto_python()).args(["-c", &upload]));
    let key = format!(
        r#"{{"gcs_base_url": "{}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": "{SECRET}"}}"#,
        server.endpoint
    );
    let options = format!("OPTIONS ('gcp.service_account_key' '{key}')");
    let sql = [
        format!("CREATE EXTERNAL TABLE g STORED AS BAM LOCATION 'gs://{GS_BUCKET}/sample.bam' {options}"),
        "SELECT count(qname) FROM g WHERE mapq >= 30".to_string(),
        "SELECT count(*) FROM g WHERE rname = 'chr1' AND pos <= 60000 AND endpos >= 40000".to_string(),
        "EXPLAIN SELECT qname FROM g WHERE rname = 'chr1' AND pos <= 60000 AND endpos >= 40000".to_string(),
        format!("CREATE EXTERNAL TABLE d STORED AS BAM LOCATION 'gs://{GS_BUCKET}/' {options}"),
        "SELECT count(*) FROM d".to_string(),
    ];
    let mut cmd = Command::new(BIN);
    cmd.args(["-q", "--format", "csv", "--maxrows", "inf"]);
    for statement in &sql {
        cmd.args(["-c", statement]);
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let numbers: Vec<i64> = stdout.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let sample = data("sample.bam");
    let expected = vec![
        samtools_count_of(&sample, &["-q", "30"]),
        samtools_count_of(&sample, &["chr1:40000-60000"]),
        samtools_count_of(&sample, &[]) + samtools_count_of(&data("name_sorted.bam"), &[]),
    ];
    assert_eq!(numbers, expected);
    assert!(
        stdout.contains("chunks") && stdout.contains("sample.bam.bai"),
        "the index comes from the store:\n{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "credentials must not be printed");
}
