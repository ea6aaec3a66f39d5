//! Bad input gives a clear error naming the file and the offset; never a panic, never a
//! partial result presented as complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use datafusion_bam::{warnings, BamError, BamOptions, BamSessionExt};
use noodles_bgzf as bgzf;

use crate::damage::{block_offsets, deflate, inflate, record_offsets, sample};
use crate::oracle::{data, samtools, samtools_rows, table_rows, Row};
use crate::{context, query};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// All rows of `path` read as a table with `options`.
async fn scan(path: &Path, options: BamOptions) -> datafusion::error::Result<Vec<arrow::array::RecordBatch>> {
    let ctx = context();
    ctx.register_bam("t", path.to_str().unwrap(), options).await?;
    query(&ctx, "SELECT * FROM t").await
}

async fn count_rows(path: &Path, options: BamOptions) -> datafusion::error::Result<usize> {
    Ok(scan(path, options).await?.iter().map(|b| b.num_rows()).sum())
}

/// The error of registering and then fully scanning `path`.
async fn scan_error(path: &Path) -> String {
    scan(path, BamOptions::default()).await.expect_err("bad input must fail").to_string()
}

/// Warnings about `path` recorded since `cursor`.
fn warnings_about(cursor: u64, path: &Path) -> Vec<String> {
    let name = path.to_str().unwrap().trim_start_matches('/');
    warnings::since(cursor).0.into_iter().filter(|w| w.contains(name)).collect()
}

/// How many records of the BGZF file at `path` start in one block and end in another.
pub fn records_crossing_blocks(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    // Each block's inflated size (ISIZE) is its last 4 bytes; the ends in uncompressed offsets.
    let offsets = block_offsets(&bytes);
    let mut ends = Vec::new();
    let mut total = 0;
    for next in offsets.iter().skip(1).copied().chain([bytes.len()]) {
        total += u32::from_le_bytes(bytes[next - 4..next].try_into().unwrap()) as usize;
        ends.push(total);
    }
    let data = inflate(&bytes);
    let starts = record_offsets(&data);
    let record_ends = starts.iter().skip(1).copied().chain([data.len()]);
    starts
        .iter()
        .zip(record_ends)
        .filter(|&(&start, end)| {
            let block_end = ends[ends.partition_point(|&e| e <= start)];
            end > block_end
        })
        .count()
}

/// The virtual position of uncompressed offset `offset` in the BGZF file `bytes`, as the scan
/// names a record starting there (the block holding its first byte).
fn virtual_offset_of(bytes: &[u8], offset: usize) -> String {
    let mut reader = bgzf::io::Reader::new(bytes);
    std::io::Read::read_exact(&mut reader, &mut vec![0; offset]).unwrap();
    std::io::BufRead::fill_buf(&mut reader).unwrap();
    let v = reader.virtual_position();
    format!("virtual offset {}:{}", v.compressed(), v.uncompressed())
}

/// The provider's rows, sorted.
fn sorted_rows(batches: &[arrow::array::RecordBatch]) -> Vec<Row> {
    let mut rows = table_rows(batches);
    rows.sort();
    rows
}

/// Whether sorted `part` is a sub-multiset of sorted `whole`.
fn is_subset(part: &[Row], whole: &[Row]) -> bool {
    let mut i = 0;
    part.iter().all(|row| {
        while i < whole.len() && whole[i] < *row {
            i += 1;
        }
        let found = i < whole.len() && whole[i] == *row;
        i += 1;
        found
    })
}

#[tokio::test]
async fn missing_file() {
    let err = scan_error(Path::new("/nonexistent/dir/reads.bam")).await;
    assert!(err.contains("/nonexistent/dir/reads.bam"), "{err}");
}

/// Errors name the file as its user wrote it (an absolute path keeps its leading `/`) and are
/// typed as damage, whether found when the table is made (the header) or during the scan.
#[tokio::test]
async fn errors_name_the_absolute_path_and_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "text.bam", b"@HD\tVN:1.6\nnot BAM at all\n".repeat(10).as_slice());
    let bytes = sample();
    let cut = write(dir.path(), "cut.bam", &bytes[..bytes.len() / 2 + 77]);
    for path in [text, cut] {
        let err = scan(&path, BamOptions::default()).await.expect_err("bad input must fail");
        let shown = path.to_str().unwrap();
        assert!(shown.starts_with('/'), "{shown}");
        match BamError::find(&err) {
            Some(BamError::Damaged { file, .. }) => assert_eq!(file, shown),
            other => panic!("{shown}: expected a Damaged error, got {other:?}: {err}"),
        }
        assert!(err.to_string().contains(&format!("{shown}: ")), "{err}");
    }
}

#[tokio::test]
async fn text_file_is_not_bam() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "text.bam", b"@HD\tVN:1.6\nthis is a SAM text file, not BAM\n".repeat(10).as_slice());
    let err = scan_error(&p).await;
    assert!(err.contains("text.bam") && err.contains("not a BAM file"), "{err}");
}

#[tokio::test]
async fn bgzf_of_other_data_is_not_bam() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = noodles_bgzf::io::Writer::new(Vec::new());
    w.write_all(b"plain text compressed with BGZF").unwrap();
    let p = write(dir.path(), "other.bam", &w.finish().unwrap());
    let err = scan_error(&p).await;
    assert!(err.contains("other.bam") && err.contains("magic number") && err.contains("virtual offset 0:0"), "{err}");
}

#[tokio::test]
async fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "zero.bam", b"");
    let err = scan_error(&p).await;
    assert!(err.contains("zero.bam"), "{err}");
}

/// A file cut at a block boundary has no end-of-file block: as samtools does, the records
/// before the cut are read, with a warning naming the file and the byte.
#[tokio::test]
async fn file_cut_at_a_block_boundary_is_read_with_a_warning() {
    let bytes = sample();
    let blocks = block_offsets(&bytes);
    let cut = blocks[blocks.len() * 2 / 3];
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "cut.bam", &bytes[..cut]);
    let cursor = warnings::cursor();
    let rows = count_rows(&p, BamOptions::default()).await.unwrap();
    let expected: usize = samtools(&["view", "-c", p.to_str().unwrap()]).trim().parse().unwrap();
    assert!(expected > 0 && expected < 21_882, "the cut keeps some records: {expected}");
    assert_eq!(rows, expected);
    let shown = warnings_about(cursor, &p);
    assert!(
        shown.iter().any(|w| w.contains("end-of-file block is missing") && w.contains(&format!("byte {}", cut - 28))),
        "{shown:?}"
    );
}

#[tokio::test]
async fn file_cut_inside_a_block() {
    let bytes = sample();
    let blocks = block_offsets(&bytes);
    let cut = blocks[blocks.len() * 2 / 3] + 100;
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "cut.bam", &bytes[..cut]);
    let err = scan_error(&p).await;
    assert!(err.contains("cut.bam") && err.contains("truncated"), "{err}");
}

/// A file cut inside a block's header: samtools fails ("Failed to read BGZF header"), and so does
/// the table, where noodles-bgzf alone would take the cut for the end of the data.
#[tokio::test]
async fn file_cut_inside_a_block_header() {
    let bytes = sample();
    let blocks = block_offsets(&bytes);
    let cut = blocks[blocks.len() * 2 / 3] + 10;
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "cut_header.bam", &bytes[..cut]);
    assert!(crate::oracle::samtools_read(&p, &[]).error.is_some(), "samtools reads a file cut inside a block header");
    let err = scan_error(&p).await;
    assert!(err.contains("cut_header.bam") && err.contains("inside a BGZF block header"), "{err}");
}

#[tokio::test]
async fn lost_middle_is_detected_even_with_an_eof_block() {
    // Blocks missing from the middle (as from a broken concatenation): the record that straddled
    // the gap no longer parses.
    let bytes = sample();
    let blocks = block_offsets(&bytes);
    let (a, b) = (blocks[blocks.len() / 2], blocks[blocks.len() / 2 + 3]);
    let mut spliced = bytes[..a].to_vec();
    // Keep the block start but drop its tail: the stream then ends inside a block.
    spliced.extend_from_slice(&bytes[a..a + 40]);
    spliced.extend_from_slice(&bytes[b..]);
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "spliced.bam", &spliced);
    let err = scan_error(&p).await;
    assert!(err.contains("spliced.bam") && err.contains("virtual offset"), "{err}");
}

/// The error of scanning `bytes`, written as `name`, with bytes flipped inside the compressed
/// data of the block at `target`: its CRC (or inflate) must catch it.
async fn scan_with_damaged_block(bytes: &mut [u8], target: usize, name: &str) -> String {
    for i in 40..60 {
        bytes[target + i] ^= 0x5a;
    }
    let dir = tempfile::tempdir().unwrap();
    scan_error(&write(dir.path(), name, bytes)).await
}

#[tokio::test]
async fn corrupted_block_names_its_offset() {
    let mut bytes = sample();
    let blocks = block_offsets(&bytes);
    let target = blocks[blocks.len() * 3 / 4];
    let err = scan_with_damaged_block(&mut bytes, target, "corrupt.bam").await;
    assert!(err.contains("corrupt.bam") && err.contains("corrupt BGZF data"), "{err}");
    assert!(err.contains(&format!("virtual offset {target}:")), "{err}");
}

/// A damaged block that a long record continues into is named, besides the record's start.
#[tokio::test]
async fn a_damaged_block_inside_a_record_is_named() {
    // Full blocks, as noodles writes them, so records span blocks.
    let mut bytes = deflate(&inflate(&std::fs::read(data("long_reads.bam")).unwrap()));
    let blocks = block_offsets(&bytes);
    let records: std::collections::BTreeSet<usize> = record_offsets(&inflate(&bytes)).into_iter().collect();
    // Each block's first uncompressed byte: the size of the data of the blocks before it.
    let starts: Vec<usize> = blocks.iter().map(|&at| inflate(&bytes[..at]).len()).collect();
    let (target, _) = blocks[..blocks.len() - 1] // not the end-of-file block
        .iter()
        .zip(&starts)
        .skip(blocks.len() / 2)
        .find(|(_, start)| !records.contains(start))
        .expect("a block that starts inside a record");
    let err = scan_with_damaged_block(&mut bytes, *target, "inside.bam").await;
    assert!(err.contains("inside.bam") && err.contains("corrupt BGZF data"), "{err}");
    assert!(err.contains(&format!("in the BGZF block at byte {target}, which this record continues into")), "{err}");
}

/// Rows of sample.bam as samtools shows them, sorted.
fn sample_rows() -> Vec<Row> {
    let mut rows = samtools_rows(&data("sample.bam"), &[]);
    rows.sort();
    rows
}

/// A copy of sample.bam whose record `k` is changed by `damage` (given the record's bytes from
/// its `block_size` on), recompressed; with the virtual offset naming that record.
fn damaged_sample(dir: &Path, name: &str, k: usize, damage: impl Fn(&mut [u8])) -> (PathBuf, String) {
    let mut data = inflate(&sample());
    let at = record_offsets(&data)[k];
    damage(&mut data[at..]);
    let bytes = deflate(&data);
    let shown = virtual_offset_of(&bytes, at);
    (write(dir, name, &bytes), shown)
}

/// The offset of a record's first aux field, from its `block_size` on.
fn aux_offset(record: &[u8]) -> usize {
    let u16_at = |i: usize| u16::from_le_bytes([record[i], record[i + 1]]) as usize;
    let l_seq = u32::from_le_bytes(record[20..24].try_into().unwrap()) as usize;
    4 + 32 + record[12] as usize + 4 * u16_at(16) + l_seq.div_ceil(2) + l_seq
}

/// A record whose fields are inconsistent is an error naming it; with `skip_damaged` exactly
/// that record is left out, counted, and reported.
#[tokio::test]
async fn damaged_records_are_errors_or_skipped_one_by_one() {
    type Damage = fn(&mut [u8]);
    let cases: [(&str, Damage, &str); 5] = [
        ("cigar_overrun", |r| r[16..18].copy_from_slice(&0xfff0u16.to_le_bytes()), "too short for its read name"),
        (
            "sequence_overrun",
            |r| r[20..24].copy_from_slice(&0x00ff_ffffu32.to_le_bytes()),
            "too short for its read name",
        ),
        (
            "bad_tag_type",
            |r| {
                let aux = aux_offset(r);
                r[aux + 2] = b'Q';
            },
            "invalid type byte 0x51",
        ),
        ("bad_reference", |r| r[4..8].copy_from_slice(&7i32.to_le_bytes()), "refID 7 is outside [-1, 4)"),
        (
            "bad_quality",
            |r| {
                let aux = aux_offset(r);
                r[aux - 1] = 120;
            },
            "base quality 120 is above 93",
        ),
    ];
    let whole = sample_rows();
    let dir = tempfile::tempdir().unwrap();
    for (name, damage, what) in cases {
        let k = 777;
        let (p, at) = damaged_sample(dir.path(), &format!("{name}.bam"), k, damage);
        let err = scan_error(&p).await;
        assert!(err.contains(&format!("{name}.bam")) && err.contains(what) && err.contains(&at), "{name}: {err}");

        let cursor = warnings::cursor();
        let rows = sorted_rows(&scan(&p, BamOptions::default().with_skip_damaged(true)).await.unwrap());
        assert_eq!(rows.len(), whole.len() - 1, "{name}");
        assert!(is_subset(&rows, &whole), "{name}: skipping returned rows samtools does not have");
        let shown = warnings_about(cursor, &p);
        assert!(
            shown.len() == 1 && shown[0].contains(what) && shown[0].contains("record skipped"),
            "{name}: {shown:?}"
        );
    }
}

/// Damage that breaks the framing of records or the BGZF data: an error naming the place, or
/// with `skip_damaged` a skip to the next sound block, keeping every record before the damage.
#[tokio::test]
async fn damaged_framing_and_blocks_are_errors_or_skipped_to_the_next_block() {
    let whole = sample_rows();
    let dir = tempfile::tempdir().unwrap();
    let k = 5000;
    let block_size = |v: u32| move |r: &mut [u8]| r[..4].copy_from_slice(&v.to_le_bytes());
    let mut cases: Vec<(PathBuf, String, &str)> = Vec::new();
    for (name, v, what) in [
        ("short_record", 10u32, "invalid record length 10"),
        ("huge_record", 0x7fff_ffff, "invalid record length 2147483647"),
        ("record_past_the_end", 100 << 20, "truncated"),
    ] {
        let (p, at) = damaged_sample(dir.path(), &format!("{name}.bam"), k, block_size(v));
        cases.push((p, at, what));
    }
    // Block-level damage in sample.bam itself (records never span its blocks).
    let bytes = sample();
    let blocks = block_offsets(&bytes);
    let target = blocks[blocks.len() / 2];
    let end = blocks[blocks.len() / 2 + 1];
    let mut wrong_isize = bytes.clone();
    wrong_isize[end - 4..end].copy_from_slice(&100u32.to_le_bytes());
    let mut wrong_crc = bytes.clone();
    wrong_crc[end - 8] ^= 0xff;
    for (name, b) in [("wrong_isize", wrong_isize), ("wrong_crc", wrong_crc)] {
        cases.push((
            write(dir.path(), &format!("{name}.bam"), &b),
            format!("virtual offset {target}:"),
            "corrupt BGZF data",
        ));
    }
    for (p, at, what) in cases {
        let err = scan_error(&p).await;
        assert!(
            err.contains(p.file_name().unwrap().to_str().unwrap()) && err.contains(what) && err.contains(&at),
            "{err}"
        );

        for partitions in [1, 3] {
            let ctx = crate::partitions::split_context(partitions);
            let cursor = warnings::cursor();
            ctx.register_bam("t", p.to_str().unwrap(), BamOptions::default().with_skip_damaged(true)).await.unwrap();
            let rows = sorted_rows(&query(&ctx, "SELECT * FROM t").await.unwrap());
            assert!(rows.len() < whole.len() && rows.len() > whole.len() - 1000, "{p:?}: {} rows", rows.len());
            assert!(is_subset(&rows, &whole), "{p:?}: skipping returned rows samtools does not have");
            let shown = warnings_about(cursor, &p);
            assert!(
                shown.iter().any(|w| w.contains(what) && w.contains("skipped damaged data up to")),
                "{p:?}: {shown:?}"
            );
            let analyzed = query(&ctx, "EXPLAIN ANALYZE SELECT count(qname) FROM t").await.unwrap();
            let analyzed = arrow::util::pretty::pretty_format_batches(&analyzed).unwrap().to_string();
            assert!(analyzed.contains("damaged_stretches=1"), "{analyzed}");
        }
    }
}

/// A header whose reference count disagrees with its reference list is an error, not records
/// read with the wrong references: too many, and the list runs into the records; too few, and
/// the list's last entry is read as the first record.
#[tokio::test]
async fn header_lying_about_its_reference_count() {
    let data = inflate(&sample());
    let l_text = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
    let n_ref_at = 8 + l_text;
    let n_ref = u32::from_le_bytes(data[n_ref_at..n_ref_at + 4].try_into().unwrap());
    let dir = tempfile::tempdir().unwrap();
    for (name, lie) in [("more_refs", n_ref + 1), ("fewer_refs", n_ref - 1), ("absurd_refs", u32::MAX)] {
        let mut lying = data.clone();
        lying[n_ref_at..n_ref_at + 4].copy_from_slice(&lie.to_le_bytes());
        let p = write(dir.path(), &format!("{name}.bam"), &deflate(&lying));
        let err = scan_error(&p).await;
        let what = if name == "fewer_refs" { "invalid record" } else { "header" };
        assert!(err.contains(&format!("{name}.bam")) && err.contains(what), "{name}: {err}");
    }
}

/// An index made for another layout of the same records (same header, other blocks) is
/// detected when loaded and not trusted: the file is read without it, correctly.
#[tokio::test]
async fn an_index_of_another_layout_of_the_file_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "relaid.bam", &deflate(&inflate(&sample())));
    std::fs::copy(data("sample.bam.bai"), dir.path().join("relaid.bam.bai")).unwrap();
    let cursor = warnings::cursor();
    let ctx = context();
    ctx.register_bam("t", p.to_str().unwrap(), BamOptions::default()).await.unwrap();
    let sql = "SELECT count(*) FROM t WHERE rname = 'chr1' AND pos <= 9000 AND endpos >= 2000";
    let batches = query(&ctx, sql).await.unwrap();
    let n = batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0);
    let expected: i64 =
        samtools(&["view", "-c", data("sample.bam").to_str().unwrap(), "chr1:2000-9000"]).trim().parse().unwrap();
    assert_eq!(n, expected);
    let shown = warnings_about(cursor, &p);
    assert!(shown.iter().any(|w| w.contains("relaid.bam.bai ignored")), "{shown:?}");
}
