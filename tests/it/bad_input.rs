//! Bad input gives a clear error naming the file and the offset; never a panic, never a
//! partial result presented as complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use datafusion_bam::{BamOptions, BamSessionExt};

use crate::oracle::data;
use crate::{context, query};

/// Offsets of the BGZF blocks of a file (each block's BSIZE is at bytes 16..18 of its header).
pub fn block_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + 18 <= bytes.len() {
        offsets.push(at);
        at += usize::from(u16::from_le_bytes([bytes[at + 16], bytes[at + 17]])) + 1;
    }
    offsets
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The error of registering and then fully scanning `path`.
async fn scan_error(path: &Path) -> String {
    let ctx = context();
    let result = async {
        ctx.register_bam("t", path.to_str().unwrap(), BamOptions::default()).await?;
        query(&ctx, "SELECT * FROM t").await
    }
    .await;
    result.expect_err("bad input must fail").to_string()
}

pub fn sample() -> Vec<u8> {
    std::fs::read(data("sample.bam")).unwrap()
}

#[tokio::test]
async fn missing_file() {
    let err = scan_error(Path::new("/nonexistent/dir/reads.bam")).await;
    assert!(err.contains("/nonexistent/dir/reads.bam"), "{err}");
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

#[tokio::test]
async fn file_cut_at_a_block_boundary() {
    let bytes = sample();
    let blocks = block_offsets(&bytes);
    let cut = blocks[blocks.len() * 2 / 3];
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "cut.bam", &bytes[..cut]);
    let err = scan_error(&p).await;
    assert!(err.contains("cut.bam") && err.contains("end-of-file block is missing") && err.contains(&format!("byte {}", cut - 28)), "{err}");
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

#[tokio::test]
async fn corrupted_block_names_its_offset() {
    let mut bytes = sample();
    let blocks = block_offsets(&bytes);
    let target = blocks[blocks.len() * 3 / 4];
    // Flip bytes inside the compressed data: the CRC (or inflate) must catch it.
    for i in 40..60 {
        bytes[target + i] ^= 0x5a;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "corrupt.bam", &bytes);
    let err = scan_error(&p).await;
    assert!(err.contains("corrupt.bam") && err.contains("corrupt BGZF data"), "{err}");
    assert!(err.contains(&format!("virtual offset {target}:")), "{err}");
}
