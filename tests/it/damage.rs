//! Editing BAM bytes to damage them on purpose: BGZF blocks, records, inflating and deflating.

use std::io::Write;

use noodles_bgzf as bgzf;

use crate::oracle::data;

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

/// The uncompressed BAM data of a BGZF file.
pub fn inflate(bytes: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut bgzf::io::Reader::new(bytes), &mut data).unwrap();
    data
}

/// BGZF-compresses BAM data (noodles' writer: full blocks, records spanning them).
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut w = bgzf::io::Writer::new(Vec::new());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// Offsets of the records in uncompressed BAM data, after the header.
pub fn record_offsets(data: &[u8]) -> Vec<usize> {
    let u32_at = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap()) as usize;
    let mut at = 8 + u32_at(4);
    let n_ref = u32_at(at);
    at += 4;
    for _ in 0..n_ref {
        at += 4 + u32_at(at) + 4;
    }
    let mut offsets = Vec::new();
    while at < data.len() {
        offsets.push(at);
        at += 4 + u32_at(at);
    }
    offsets
}

pub fn sample() -> Vec<u8> {
    std::fs::read(data("sample.bam")).unwrap()
}
