//! `bam_depth` against its oracles: mosdepth 0.3.3 (per-base runs, `--by` windows and BED
//! intervals, `--thresholds`) and `samtools depth -aa` (samtools mode), on every test file that
//! samtools can index, at several partition counts, with and without the index, and through
//! COPY to Parquet.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_bam::{BamError, BamSessionExt};

use crate::corpus::corpus;
use crate::oracle::{data, samtools};

/// A run: reference, 1-based start, inclusive end, depth.
type Run = (String, i64, i64, i64);

fn context_with(partitions: usize) -> SessionContext {
    let ctx =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions)).enable_url_table();
    ctx.enable_bam().unwrap();
    ctx
}

async fn sql(ctx: &SessionContext, query: &str) -> datafusion::error::Result<Vec<RecordBatch>> {
    ctx.sql(query).await?.collect().await
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
    let column = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap();
    let column = column.as_string::<i32>();
    (0..column.len()).map(|i| column.value(i).to_string()).collect()
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let column = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    match column.data_type() {
        arrow::datatypes::DataType::Int32 => {
            column.as_primitive::<Int32Type>().values().iter().map(|&v| v.into()).collect()
        }
        _ => column.as_primitive::<Int64Type>().values().to_vec(),
    }
}

fn runs_of(batches: &[RecordBatch]) -> Vec<Run> {
    let mut runs = Vec::new();
    for b in batches {
        let (r, s, e, d) = (strings(b, "rname"), ints(b, "start"), ints(b, "end"), ints(b, "depth"));
        runs.extend((0..b.num_rows()).map(|i| (r[i].clone(), s[i], e[i], d[i])));
    }
    runs
}

/// Runs in the header's reference order, then by start (the order mosdepth writes).
fn in_order(mut runs: Vec<Run>, bam: &Path) -> Vec<Run> {
    let order: BTreeMap<String, usize> =
        header_references(bam).into_iter().enumerate().map(|(i, (n, _))| (n, i)).collect();
    runs.sort_by_key(|(r, s, _, _)| (order[r], *s));
    runs
}

fn header_references(bam: &Path) -> Vec<(String, i64)> {
    samtools(&["view", "-H", bam.to_str().unwrap()])
        .lines()
        .filter(|l| l.starts_with("@SQ"))
        .map(|l| {
            let field = |key: &str| l.split('\t').find_map(|f| f.strip_prefix(key)).unwrap().to_string();
            (field("SN:"), field("LN:").parse().unwrap())
        })
        .collect()
}

fn gunzip(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let mut text = String::new();
    noodles_bgzf::io::Reader::new(&bytes[..]).read_to_string(&mut text).unwrap();
    text
}

fn run_tool(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("{program} must be installed (the oracle of these tests; apt-get install {program} libhts-dev): {e}")
    });
    assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// mosdepth's outputs for `bam` with `args`, by file suffix, in `dir`.
fn mosdepth(bam: &Path, args: &[&str], dir: &Path) -> PathBuf {
    let prefix = dir.join(format!("md{}", args.join("").replace([',', '/', '.'], "_")));
    let mut all = args.to_vec();
    let (p, b) = (prefix.to_str().unwrap(), bam.to_str().unwrap());
    all.extend([p, b]);
    run_tool("mosdepth", &all, dir);
    prefix
}

fn mosdepth_runs(bam: &Path, dir: &Path) -> Vec<Run> {
    let prefix = mosdepth(bam, &[], dir);
    parse_bed_runs(&gunzip(Path::new(&format!("{}.per-base.bed.gz", prefix.display()))))
}

/// mosdepth's per-base BED as runs (1-based starts).
fn parse_bed_runs(text: &str) -> Vec<Run> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].parse::<i64>().unwrap() + 1, f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect()
}

/// `samtools depth -aa` (every position of every reference) as runs.
fn samtools_depth_runs(bam: &Path, extra: &[&str]) -> Vec<Run> {
    let mut args = vec!["depth", "-aa"];
    args.extend_from_slice(extra);
    args.push(bam.to_str().unwrap());
    let mut runs: Vec<Run> = Vec::new();
    for line in samtools(&args).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (r, p, d): (&str, i64, i64) = (f[0], f[1].parse().unwrap(), f[2].parse().unwrap());
        match runs.last_mut() {
            Some(last) if last.0 == r && last.3 == d && last.2 + 1 == p => last.2 = p,
            _ => runs.push((r.to_string(), p, p, d)),
        }
    }
    runs
}

/// The test files samtools can index, each copied into `dir` with its index (none for those
/// `samtools index` refuses: unsorted or without references).
fn indexable(dir: &Path) -> Vec<PathBuf> {
    let shipped = ["sample.bam", "long_reads.bam", "many_refs.bam", "empty.bam"].map(data);
    let mut out = Vec::new();
    for file in corpus().into_iter().chain(shipped) {
        let copy = dir.join(file.file_name().unwrap());
        std::fs::copy(&file, &copy).unwrap();
        let status = Command::new("samtools").args(["index", copy.to_str().unwrap()]).output().unwrap();
        if status.status.success() && !header_references(&copy).is_empty() {
            out.push(copy);
        }
    }
    assert!(out.len() >= 20, "only {} test files could be indexed", out.len());
    out
}

async fn depth_runs(ctx: &SessionContext, bam: &Path, args: &str) -> Vec<Run> {
    let query = format!("SELECT * FROM bam_depth('{}'{args})", bam.display());
    let batches = sql(ctx, &query).await.unwrap_or_else(|e| panic!("{query}: {e}"));
    in_order(runs_of(&batches), bam)
}

/// The runs of `bam`, through the user's path: COPY to Parquet, then read back.
async fn depth_runs_through_parquet(ctx: &SessionContext, bam: &Path, dir: &Path) -> Vec<Run> {
    let parquet = dir.join(format!("{}.depth.parquet", bam.file_name().unwrap().to_str().unwrap()));
    let _ = std::fs::remove_file(&parquet);
    let copy =
        format!("COPY (SELECT * FROM bam_depth('{}')) TO '{}' STORED AS PARQUET", bam.display(), parquet.display());
    sql(ctx, &copy).await.unwrap_or_else(|e| panic!("{copy}: {e}"));
    let back = sql(ctx, &format!("SELECT * FROM '{}'", parquet.display())).await.unwrap();
    in_order(runs_of(&back), bam)
}

/// Runs must tile each reference: no gap, no overlap, no two equal neighbours.
fn assert_tiled(runs: &[Run], bam: &Path) {
    for w in runs.windows(2) {
        if w[0].0 == w[1].0 {
            assert_eq!(w[0].2 + 1, w[1].1, "{}: runs {:?} and {:?} do not meet", bam.display(), w[0], w[1]);
            assert_ne!(w[0].3, w[1].3, "{}: runs {:?} and {:?} have one depth", bam.display(), w[0], w[1]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_equal_mosdepth_and_samtools_on_every_indexable_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = indexable(dir.path());
    let contexts: Vec<_> = [1, 2, 3, 7].map(|n| (n, context_with(n))).into();
    for bam in &files {
        let expected = mosdepth_runs(bam, dir.path());
        let samtools_expected = samtools_depth_runs(bam, &[]);
        for (n, ctx) in &contexts {
            let got = depth_runs_through_parquet(ctx, bam, dir.path()).await;
            assert_tiled(&got, bam);
            assert_same_runs(&got, &expected, &format!("{} at {n} partitions, through Parquet", bam.display()));
            let got = depth_runs(ctx, bam, ", 'mode=samtools'").await;
            assert_eq!(
                got,
                samtools_expected,
                "{} at {n} partitions: runs differ from samtools depth -aa",
                bam.display()
            );
        }
    }
}

/// Equal runs, or a panic that shows where they first differ.
fn assert_same_runs(got: &[Run], expected: &[Run], context: &str) {
    if got == expected {
        return;
    }
    let at = got.iter().zip(expected).position(|(g, e)| g != e).unwrap_or(got.len().min(expected.len()));
    let near = |runs: &[Run]| runs[at.saturating_sub(2)..(at + 3).min(runs.len())].to_vec();
    panic!(
        "{context}: {} runs against {} expected; first difference at run {at}:\n got      {:?}\n expected {:?}",
        got.len(),
        expected.len(),
        near(got),
        near(expected)
    );
}

/// A context that splits files of any size into byte ranges.
fn splitting_context(partitions: usize) -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(partitions)
        .set_usize("datafusion.optimizer.repartition_file_min_size", 0);
    let ctx = SessionContext::new_with_config(config).enable_url_table();
    ctx.enable_bam().unwrap();
    ctx
}

/// The byte ranges `bam_depth` counts `bam` in, as its plan shows them (1 if read in order).
async fn byte_ranges(ctx: &SessionContext, bam: &Path, args: &str) -> usize {
    let query = format!("EXPLAIN SELECT * FROM bam_depth('{}'{args})", bam.display());
    let plan = strings(&sql(ctx, &query).await.unwrap()[0], "plan").join("\n");
    let ranges = plan.split("byte_ranges=").nth(1).map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next());
    ranges.flatten().map_or(1, |n| n.parse().unwrap())
}

/// The files without their index, as users often have them: each is split into byte ranges
/// counted in parallel, whose edges are merged, at several partition counts and with a
/// `max_span` that makes each range give out its middle itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_index_byte_ranges_count_in_parallel_and_equal_mosdepth() {
    let dir = tempfile::tempdir().unwrap();
    let files = indexable(dir.path());
    let bare = tempfile::tempdir().unwrap();
    let chosen = ["sample.bam", "long_reads.bam", "hisat2_spliced.bam", "markdup.bam", "bwa_mem.bam", "many_refs.bam"];
    for bam in files.iter().filter(|f| chosen.iter().any(|n| f.ends_with(n))) {
        let expected = mosdepth_runs(bam, dir.path());
        let samtools_expected = samtools_depth_runs(bam, &[]);
        let copy = bare.path().join(bam.file_name().unwrap());
        std::fs::copy(bam, &copy).unwrap();
        let long = bam.ends_with("long_reads.bam") || bam.ends_with("hisat2_spliced.bam");
        let span = if long { " max_span=200000" } else { " max_span=1000" };
        for n in [1, 2, 3, 7] {
            let ctx = splitting_context(n);
            let ranges = byte_ranges(&ctx, &copy, "").await;
            assert!(ranges >= n.min(2), "{} at {n} partitions is counted in {ranges} byte ranges", copy.display());
            for span in ["", span] {
                let context = format!("{} without an index at {n} partitions, '{span}'", copy.display());
                let got = depth_runs(&ctx, &copy, &format!(", 'mode=mosdepth{span}'")).await;
                assert_tiled(&got, &copy);
                assert_same_runs(&got, &expected, &context);
                let got = depth_runs(&ctx, &copy, &format!(", 'mode=samtools{span}'")).await;
                assert_same_runs(&got, &samtools_expected, &format!("{context}, samtools mode"));
            }
        }
    }
}

/// Every coordinate-sorted test file without its index gives, in byte ranges, the rows of one
/// pass (`split=false`): per base in both modes and in windows with thresholds, at partition
/// counts that cut the files in many places, with `max_span` as small as the file's longest
/// read allows, so that every range gives out what it can itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_ranges_equal_one_pass_on_every_sorted_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = indexable(dir.path());
    let bare = tempfile::tempdir().unwrap();
    let one_pass = context_with(1);
    let mut split_somewhere = 0;
    for bam in &files {
        let copy = bare.path().join(bam.file_name().unwrap());
        std::fs::copy(bam, &copy).unwrap();
        let query = format!("SELECT max(endpos - pos + 1) AS span FROM '{}'", bam.display());
        let span = ints(&sql(&one_pass, &query).await.unwrap()[0], "span").first().copied().unwrap_or(1).max(1);
        for options in ["mode=mosdepth", "mode=samtools", "window=500 thresholds=1,3"] {
            let rows = |ctx: SessionContext, options: String| {
                let query = format!("SELECT * FROM bam_depth('{}', '{options}')", copy.display());
                async move {
                    let batches = sql(&ctx, &query).await.unwrap_or_else(|e| panic!("{query}: {e}"));
                    let mut lines: Vec<String> = arrow::util::pretty::pretty_format_batches(&batches)
                        .unwrap()
                        .to_string()
                        .lines()
                        .filter(|l| l.starts_with("| "))
                        .map(str::to_string)
                        .collect();
                    lines.sort();
                    lines
                }
            };
            let expected = rows(one_pass.clone(), format!("{options} split=false")).await;
            for n in [2, 4, 5, 11] {
                let ctx = splitting_context(n);
                split_somewhere += usize::from(byte_ranges(&ctx, &copy, "").await > 1);
                let got = rows(ctx, format!("{options} max_span={span}")).await;
                assert!(got == expected, "{} at {n} partitions, '{options} max_span={span}'", copy.display());
            }
        }
    }
    assert!(split_somewhere > files.len(), "only {split_somewhere} runs were split into byte ranges");
}

/// A read that reaches further than `max_span` across the edge of a byte range is an error
/// that names it, not a wrong depth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_longer_than_max_span_across_a_range_edge_is_an_error() {
    let bare = tempfile::tempdir().unwrap();
    let copy = bare.path().join("long_reads.bam");
    std::fs::copy(data("long_reads.bam"), &copy).unwrap();
    let ctx = splitting_context(3);
    let query = format!("SELECT * FROM bam_depth('{}', 'max_span=10')", copy.display());
    let e = sql(&ctx, &query).await.unwrap_err();
    assert!(matches!(BamError::find(&e), Some(BamError::Unsupported { .. })), "{e}");
    let message = e.to_string();
    for part in ["long_reads.bam", "max_span (10 bases)", "samtools index"] {
        assert!(message.contains(part), "{message}");
    }
}

/// The two cases of the issue, made with samtools: a deletion is not covered (unless deletions
/// count), and overlapping mates count once under mosdepth's rules and twice under samtools'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_and_overlapping_mates_as_each_tool_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let sam = dir.path().join("cases.sam");
    let q = "IIIIIIIIIIIIIIIIIIII";
    let text = format!(
        "@HD\tVN:1.6\tSO:coordinate\n@SQ\tSN:c\tLN:100\n\
         del\t0\tc\t11\t60\t5M3D5M\t*\t0\t0\tACGTAACGTA\t{}\n\
         pair\t99\tc\t41\t60\t6M2D6M\t=\t45\t26\tACGTAACGTAAC\t{}\n\
         pair\t147\tc\t45\t60\t12M\t=\t41\t-26\tACGTAACGTAAC\t{}\n",
        &q[..10],
        &q[..12],
        &q[..12]
    );
    std::fs::write(&sam, text).unwrap();
    let bam = dir.path().join("cases.bam");
    samtools(&["view", "-b", "-o", bam.to_str().unwrap(), sam.to_str().unwrap()]);
    samtools(&["index", bam.to_str().unwrap()]);
    let ctx = context_with(2);
    let mosdepth_mode = depth_runs(&ctx, &bam, "").await;
    assert_eq!(mosdepth_mode, mosdepth_runs(&bam, dir.path()));
    // The deletion at 16-18 is not covered; the pair covers 41-56 once (its deletion too).
    let at = |runs: &[Run], pos: i64| runs.iter().find(|r| r.1 <= pos && pos <= r.2).unwrap().3;
    assert_eq!([at(&mosdepth_mode, 15), at(&mosdepth_mode, 17), at(&mosdepth_mode, 19)], [1, 0, 1]);
    assert!((41..=56).all(|p| at(&mosdepth_mode, p) == 1), "{mosdepth_mode:?}");
    let samtools_mode = depth_runs(&ctx, &bam, ", 'mode=samtools'").await;
    assert_eq!(samtools_mode, samtools_depth_runs(&bam, &[]));
    assert_eq!(
        [at(&samtools_mode, 45), at(&samtools_mode, 47), at(&samtools_mode, 48), at(&samtools_mode, 53)],
        [2, 1, 1, 2]
    );
    let deletions = depth_runs(&ctx, &bam, ", 'mode=samtools count_deletions=true'").await;
    assert_eq!(deletions, samtools_depth_runs(&bam, &["-J"]));
    assert_eq!(at(&deletions, 17), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_equal_the_tools_options() {
    let dir = tempfile::tempdir().unwrap();
    let bam = crate::oracle::indexed_copy(dir.path(), "sample.bam", crate::oracle::IndexKind::Bai);
    let ctx = context_with(3);
    let min_mapq = depth_runs(&ctx, &bam, ", 'mode=samtools min_mapq=30'").await;
    assert_eq!(min_mapq, samtools_depth_runs(&bam, &["-Q", "30"]));
    // 0x10 (reverse strand) added to the excluded flags; 0x40 required (first mates only).
    let exclude = depth_runs(&ctx, &bam, ", 'mode=samtools exclude_flags=1812'").await;
    assert_eq!(exclude, samtools_depth_runs(&bam, &["-G", "16"]));
    run_tool("mosdepth", &["-i", "64", "inc", bam.to_str().unwrap()], dir.path());
    let mosdepth_include = gunzip(&dir.path().join("inc.per-base.bed.gz"));
    let mosdepth_mode = depth_runs(&ctx, &bam, ", 'include_flags=64'").await;
    let expected = parse_bed_runs(&mosdepth_include);
    assert_eq!(mosdepth_mode, expected, "include_flags=64 against mosdepth -i 64");
    assert!(mosdepth_mode != depth_runs(&ctx, &bam, "").await, "the filter changed nothing");
    // MAPQ against mosdepth -Q.
    let prefix = mosdepth(&bam, &["-Q", "30"], dir.path());
    let expected = gunzip(Path::new(&format!("{}.per-base.bed.gz", prefix.display())));
    let got = depth_runs(&ctx, &bam, ", 'min_mapq=30'").await;
    assert_eq!(got, parse_bed_runs(&expected), "min_mapq=30 against mosdepth -Q 30");
}

/// `window` and `regions` against `mosdepth --by` (means to mosdepth's two decimals) and
/// `--thresholds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_bed_intervals_equal_mosdepth_by() {
    let dir = tempfile::tempdir().unwrap();
    let files = indexable(dir.path());
    let bare = tempfile::tempdir().unwrap();
    let bed = dir.path().join("targets.bed");
    std::fs::write(
        &bed,
        "chr1\t100\t5000\texon1\nchr1\t4000\t9000\texon2\nchr2\t0\t30000\tbig\nchrM\t10\t20\tm\nchr3\t5\t50\n",
    )
    .unwrap();
    for bam in files.iter().filter(|f| {
        ["sample.bam", "long_reads.bam", "bwa_mem.bam", "minimap2_splice.bam"].iter().any(|n| f.ends_with(n))
    }) {
        for by in ["1000", bed.to_str().unwrap()] {
            let prefix = mosdepth(bam, &["-n", "--by", by, "--thresholds", "1,10,20"], dir.path());
            let regions = gunzip(Path::new(&format!("{}.regions.bed.gz", prefix.display())));
            let thresholds = gunzip(Path::new(&format!("{}.thresholds.bed.gz", prefix.display())));
            let option = if by == "1000" { "window=1000".to_string() } else { format!("regions={by}") };
            // With the index, and without it (byte ranges that give out part of a window each).
            let bare = bare.path().join(bam.file_name().unwrap());
            std::fs::copy(bam, &bare).unwrap();
            let long = bam.ends_with("long_reads.bam") || bam.ends_with("minimap2_splice.bam");
            let span = if long { " max_span=200000" } else { " max_span=1000" };
            let cases = [1, 2, 3, 7].into_iter().flat_map(|n| {
                [(n, context_with(n), bam.as_path(), ""), (n, splitting_context(n), bare.as_path(), span)]
            });
            for (n, ctx, file, span) in cases {
                let query =
                    format!("SELECT * FROM bam_depth('{}', '{option} thresholds=1,10,20{span}')", file.display());
                let batches = sql(&ctx, &query).await.unwrap_or_else(|e| panic!("{query}: {e}"));
                let mut got = Vec::new();
                for b in &batches {
                    let (r, s, e) = (strings(b, "rname"), ints(b, "start"), ints(b, "end"));
                    let mean = b.column_by_name("mean").unwrap().as_primitive::<Float64Type>().values().to_vec();
                    let names = b.column_by_name("name").map(|c| c.as_string::<i32>().clone());
                    let t: Vec<Vec<i64>> =
                        ["at_least_1", "at_least_10", "at_least_20"].iter().map(|c| ints(b, c)).collect();
                    for i in 0..b.num_rows() {
                        let name = names.as_ref().and_then(|c| (!c.is_null(i)).then(|| c.value(i).to_string()));
                        got.push((r[i].clone(), s[i] - 1, e[i], name, mean[i], [t[0][i], t[1][i], t[2][i]]));
                    }
                }
                let mut expected_means = Vec::new();
                for line in regions.lines() {
                    let f: Vec<&str> = line.split('\t').collect();
                    let (name, mean) = if f.len() == 5 { (Some(f[3].to_string()), f[4]) } else { (None, f[3]) };
                    expected_means.push((
                        f[0].to_string(),
                        f[1].parse::<i64>().unwrap(),
                        f[2].parse::<i64>().unwrap(),
                        name,
                        mean.parse::<f64>().unwrap(),
                    ));
                }
                let expected_thresholds: Vec<[i64; 3]> = thresholds
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| {
                        let f: Vec<&str> = l.split('\t').collect();
                        [f[4].parse().unwrap(), f[5].parse().unwrap(), f[6].parse().unwrap()]
                    })
                    .collect();
                let key = |r: &str| header_references(bam).iter().position(|(n, _)| n == r).unwrap();
                got.sort_by_key(|g| (key(&g.0), g.1, g.2));
                let context = format!("{} by {by} at {n} partitions", file.display());
                assert_eq!(got.len(), expected_means.len(), "{context}: row count");
                for (g, (e, t)) in got.iter().zip(expected_means.iter().zip(&expected_thresholds)) {
                    assert_eq!((&g.0, g.1, g.2, &g.3), (&e.0, e.1, e.2, &e.3), "{context}");
                    assert!(
                        (g.4 - e.4).abs() <= 0.005 + 1e-9,
                        "{context}: mean {} against mosdepth's {} in {e:?}",
                        g.4,
                        e.4
                    );
                    assert_eq!(&g.5, t, "{context}: thresholds of {e:?}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_is_the_runs_clipped() {
    let dir = tempfile::tempdir().unwrap();
    let bam = crate::oracle::indexed_copy(dir.path(), "sample.bam", crate::oracle::IndexKind::Bai);
    let whole = depth_runs(&context_with(1), &bam, "").await;
    for (region, (rname, from, to)) in [("chr1:100000-200000", ("chr1", 100000, 200000)), ("chr2", ("chr2", 1, 200000))]
    {
        let clipped: Vec<Run> = whole
            .iter()
            .filter(|r| r.0 == rname && r.2 >= from && r.1 <= to)
            .map(|r| (r.0.clone(), r.1.max(from), r.2.min(to), r.3))
            .collect();
        for n in [1, 3, 7] {
            let got = depth_runs(&context_with(n), &bam, &format!(", '{region}'")).await;
            assert_eq!(got, clipped, "{region} at {n} partitions");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohort_gets_a_file_column_and_copies_to_parquet_and_bedgraph() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["sample.bam", "long_reads.bam"] {
        crate::oracle::indexed_copy(dir.path(), name, crate::oracle::IndexKind::Bai);
    }
    let ctx = context_with(3);
    let cohort = format!("{}/", dir.path().display());
    let batches = sql(&ctx, &format!("SELECT * FROM bam_depth('{cohort}')")).await.unwrap();
    let mut by_file: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for b in &batches {
        let files = strings(b, "file");
        let runs = runs_of(std::slice::from_ref(b));
        for (f, r) in files.into_iter().zip(runs) {
            by_file.entry(f).or_default().push(r);
        }
    }
    assert_eq!(by_file.len(), 2, "{:?}", by_file.keys());
    for (file, runs) in by_file {
        let bam = PathBuf::from(&file);
        assert_eq!(in_order(runs, &bam), mosdepth_runs(&bam, dir.path()), "{file} in the cohort");
    }
    // COPY to Parquet, read back; and to a bedGraph (0-based start, tab-separated).
    let bam = dir.path().join("bai_sample.bam");
    let parquet = dir.path().join("depth.parquet");
    sql(
        &ctx,
        &format!("COPY (SELECT * FROM bam_depth('{}')) TO '{}' STORED AS PARQUET", bam.display(), parquet.display()),
    )
    .await
    .unwrap();
    let back = sql(&ctx, &format!("SELECT * FROM '{}'", parquet.display())).await.unwrap();
    assert_eq!(in_order(runs_of(&back), &bam), mosdepth_runs(&bam, dir.path()));
    let bedgraph = dir.path().join("depth.bedgraph");
    let copy = format!(
        "COPY (SELECT rname, start - 1 AS start, \"end\", depth FROM bam_depth('{}') ORDER BY rname, start) \
         TO '{}' STORED AS CSV OPTIONS ('format.delimiter' E'\\t', 'format.has_header' 'false')",
        bam.display(),
        bedgraph.display()
    );
    sql(&ctx, &copy).await.unwrap();
    let text = std::fs::read_to_string(&bedgraph).unwrap();
    let md = gunzip(Path::new(&format!("{}.per-base.bed.gz", mosdepth(&bam, &[], dir.path()).display())));
    let sorted = |t: &str| {
        let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&text), sorted(&md), "the bedGraph is mosdepth's per-base BED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_options_are_errors_that_say_what() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context_with(2);
    // Name-sorted: the first record out of coordinate order is named.
    // In one pass, and in byte ranges (each range checks its own records, the merge their order).
    let unsorted = data("name_sorted.bam");
    for ctx in [&ctx, &splitting_context(3)] {
        let e = sql(ctx, &format!("SELECT * FROM bam_depth('{}')", unsorted.display())).await.unwrap_err();
        match BamError::find(&e) {
            Some(BamError::Unsorted { file, record, .. }) => {
                assert!(file.ends_with("name_sorted.bam") && !record.is_empty(), "{e}");
            }
            _ => panic!("not an Unsorted error: {e}"),
        }
    }
    // A record placed before its reference's first base (a fuzz finding: the table shows such a
    // position as samtools prints it).
    let before = data("fuzz/fuzz-1796690380.bam");
    let e = sql(&ctx, &format!("SELECT * FROM bam_depth('{}')", before.display())).await.unwrap_err();
    assert!(
        matches!(BamError::find(&e), Some(BamError::Damaged { file, reason, .. }) if file.ends_with("fuzz-1796690380.bam") && reason.contains("chr1-2352 at position -335536643")),
        "{e}"
    );
    // A region without an index.
    let bare = dir.path().join("bare.bam");
    std::fs::copy(data("sample.bam"), &bare).unwrap();
    let e = sql(&ctx, &format!("SELECT * FROM bam_depth('{}', 'chr1:1-1000')", bare.display())).await.unwrap_err();
    assert!(
        matches!(BamError::find(&e), Some(BamError::InvalidOption { key, reason }) if key == "region" && reason.contains("bare.bam") && reason.contains("index")),
        "{e}"
    );
    // Bad options, a missing file and a reference the file lacks.
    let sample = data("sample.bam");
    for (args, key) in
        [("'window=0'", "window"), ("'mode=bedtools'", "mode"), ("'thresholds=1'", "thresholds"), ("'chrZZ'", "region")]
    {
        let e = sql(&ctx, &format!("SELECT * FROM bam_depth('{}', {args})", sample.display())).await.unwrap_err();
        assert!(matches!(BamError::find(&e), Some(BamError::InvalidOption { key: k, .. }) if k == key), "{args}: {e}");
    }
    let e = sql(&ctx, "SELECT * FROM bam_depth('/no/such/file.bam')").await.unwrap_err();
    assert!(matches!(BamError::find(&e), Some(BamError::NotFound { .. })), "{e}");
    let e = sql(&ctx, "SELECT * FROM bam_depth(1)").await.unwrap_err();
    assert!(e.to_string().contains("bam_depth takes"), "{e}");
}

/// The shipped SQL example runs and its summary equals mosdepth's `summary.txt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_query_equals_mosdepth_summary() {
    let dir = tempfile::tempdir().unwrap();
    let bam = crate::oracle::indexed_copy(dir.path(), "sample.bam", crate::oracle::IndexKind::Bai);
    let prefix = mosdepth(&bam, &["-n"], dir.path());
    let summary = std::fs::read_to_string(format!("{}.mosdepth.summary.txt", prefix.display())).unwrap();
    let example = std::fs::read_to_string(crate::oracle::repo_root().join("sql-examples/depth.sql")).unwrap();
    let query = example
        .split(';')
        .map(str::trim)
        .find(|q| q.contains("AS bases"))
        .expect("sql-examples/depth.sql has the summary query")
        .replace("tests/data/sample.bam", bam.to_str().unwrap());
    let batches = sql(&context_with(2), &query).await.unwrap();
    let mut got = BTreeMap::new();
    for b in &batches {
        let (r, l, bases, mn, mx) =
            (strings(b, "chrom"), ints(b, "length"), ints(b, "bases"), ints(b, "min"), ints(b, "max"));
        let mean = b.column_by_name("mean").unwrap().as_primitive::<Float64Type>().values().to_vec();
        for i in 0..b.num_rows() {
            got.insert(r[i].clone(), (l[i], bases[i], format!("{:.2}", mean[i]), mn[i], mx[i]));
        }
    }
    let mut expected = BTreeMap::new();
    for line in summary.lines().skip(1).filter(|l| !l.starts_with("total")) {
        let f: Vec<&str> = line.split('\t').collect();
        expected.insert(
            f[0].to_string(),
            (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].to_string(),
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
            ),
        );
    }
    // mosdepth leaves references without reads out of its summary.
    for (chrom, row) in got.iter().filter(|(c, _)| !expected.contains_key(*c)) {
        assert_eq!(row.1, 0, "{chrom} has reads but is not in mosdepth's summary");
    }
    got.retain(|c, _| expected.contains_key(c));
    assert_eq!(got, expected);
}

/// CRAM (with its reference and `.crai`) against mosdepth, and bgzipped SAM with each of its
/// index kinds against `samtools depth`, at several partition counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cram_and_sam_gz_equal_the_tools() {
    let dir = tempfile::tempdir().unwrap();
    let cram = data("cram/bwa_mem.cram");
    let reference = data("cram/ref.fa");
    let prefix = mosdepth(&cram, &["-f", reference.to_str().unwrap()], dir.path());
    let expected = parse_bed_runs(&gunzip(Path::new(&format!("{}.per-base.bed.gz", prefix.display()))));
    assert!(expected.iter().any(|r| r.3 > 0));
    // With the index, and without it: in byte ranges (containers, BGZF blocks).
    let bare = dir.path().join("bare.cram");
    std::fs::copy(&cram, &bare).unwrap();
    for n in [1, 3, 7] {
        for (ctx, file) in [(context_with(n), &cram), (splitting_context(n), &bare)] {
            let got = depth_runs(&ctx, file, &format!(", 'reference={} max_span=1000'", reference.display())).await;
            assert_same_runs(&got, &expected, &format!("{} at {n} partitions", file.display()));
        }
    }
    for name in ["sam/sorted_bai.sam.gz", "sam/sorted_tbi.sam.gz", "sam/long_csi.sam.gz", "sam/long_reads.sam.gz"] {
        let sam = data(name);
        let expected = samtools_depth_runs(&sam, &[]);
        for n in [1, 3] {
            for ctx in [context_with(n), splitting_context(n)] {
                let got = depth_runs(&ctx, &sam, ", 'mode=samtools'").await;
                assert_same_runs(&got, &expected, &format!("{name} at {n} partitions"));
            }
        }
    }
}

/// A file on S3 (with its index beside it) gives the runs of the same file read locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_file_equals_the_local_one() {
    let server = crate::s3_server::S3Server::start();
    server.upload(&["sample.bam", "sample.bam.bai"]).await;
    let local = depth_runs(&context_with(1), &data("sample.bam"), "").await;
    for n in [1, 3] {
        let ctx = context_with(n);
        let url = format!("s3://{}", crate::s3_server::BUCKET);
        ctx.register_object_store(
            datafusion::execution::object_store::ObjectStoreUrl::parse(&url).unwrap().as_ref(),
            server.store(),
        );
        let query = format!("SELECT * FROM bam_depth('{url}/sample.bam')");
        let remote = in_order(runs_of(&sql(&ctx, &query).await.unwrap()), &data("sample.bam"));
        assert_eq!(remote, local, "over S3 at {n} partitions");
    }
}

/// Only the columns depth needs are decoded, the flag and MAPQ filters run in the decoder, and a
/// region reads what the index selects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_decodes_only_what_depth_needs() {
    let ctx = context_with(2);
    let sample = data("sample.bam");
    let explain = |args: &str| format!("EXPLAIN SELECT * FROM bam_depth('{}'{args})", sample.display());
    let plan = |batches: Vec<RecordBatch>| arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    let shown = plan(sql(&ctx, &explain(", 'chr1:1000-2000', 'mode=samtools min_mapq=20'")).await.unwrap());
    assert!(shown.contains("DepthExec"), "{shown}");
    assert!(shown.contains("projection=[flag, rname, pos, mapq, cigar]"), "{shown}");
    assert!(shown.contains("predicate=") && shown.contains("1796") && shown.contains("mapq@"), "{shown}");
    assert!(shown.contains("chunks"), "the index selects what the region needs:\n{shown}");
    let shown = plan(sql(&ctx, &explain("")).await.unwrap());
    assert!(shown.contains("projection=[qname, flag, rname, pos, mapq, cigar, rnext, pnext]"), "{shown}");
}
