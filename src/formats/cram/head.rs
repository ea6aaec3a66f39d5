//! CRAM container headers read on their own (CRAM 3.x specification, section 7.2), so that a
//! scan finds the containers of its byte range by reading each header and jumping over the body
//! it announces, instead of reading every body before its range. noodles-cram 0.102 keeps its
//! container header reader private (`io::reader::container::header`), and the layout is a short,
//! fixed list of integers.

use datafusion::common::Result;

use crate::bgzf::framing::FileContext;
use crate::formats::cram::container::container_error;
use crate::io::ObjectBytes;
use crate::options::region::{Region, RegionReference};

/// Bytes read first for a container header: every field but the landmarks fits in 57, and the
/// landmarks of a few dozen slices fit in the rest. A longer header is read again whole.
const HEAD_PROBE_BYTES: u64 = 256;

/// The position an end-of-file container declares: "EOF" in ASCII (section 9).
const EOF_POSITION: i32 = 0x45_4f_46;

/// The reference sequences a container's records lie on, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerSpan {
    /// Reference `id`, 1-based positions `start..=end`.
    On { id: usize, start: u64, end: u64 },
    /// Unplaced records only.
    Unplaced,
    /// Several references.
    Many,
}

impl ContainerSpan {
    /// Whether records in this span may overlap one of `regions`.
    pub fn may_overlap(self, regions: &[Region], file: &FileContext) -> bool {
        match self {
            Self::Many => true,
            // Unplaced records only: no position satisfies a region on a reference.
            Self::Unplaced => regions.iter().any(|r| r.reference == RegionReference::Unplaced),
            Self::On { id, start, end } => {
                let name = file.reference_names.get(id);
                regions.iter().any(|r| {
                    let on_reference = match &r.reference {
                        RegionReference::Any => true,
                        RegionReference::Named(n) => Some(n) == name,
                        RegionReference::Unplaced => false,
                    };
                    on_reference && r.start <= end && r.end >= start
                })
            }
        }
    }
}

/// A container's header: where the container is, what it holds, and where the next one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerHead {
    /// The byte offset of the container.
    pub offset: u64,
    /// The byte offset just past its body: the next container's.
    pub end: u64,
    /// The reference span of its records.
    pub span: ContainerSpan,
    /// How many records it holds.
    pub records: u64,
    /// Whether it is CRAM's end-of-file container.
    pub is_eof: bool,
    /// The length of the header, whose last 4 bytes are its CRC32.
    pub header_len: u32,
    /// How many blocks its body holds.
    pub blocks: u32,
}

/// CRAM's ITF8 integer at the start of `b` (section 2.3), and the bytes it takes.
fn itf8(b: &[u8]) -> Option<(i32, usize)> {
    let first = *b.first()?;
    let extra = first.leading_ones() as usize;
    let bytes = b.get(..1 + extra.min(4))?;
    let value = match extra {
        0 => u32::from(first),
        1..=3 => bytes[1..].iter().fold(u32::from(first) & (0xff >> (extra + 1)), |v, &x| v << 8 | u32::from(x)),
        _ => {
            bytes[1..4].iter().fold(u32::from(first) & 0x0f, |v, &x| v << 8 | u32::from(x)) << 4
                | u32::from(bytes[4] & 0x0f)
        }
    };
    Some((value as i32, bytes.len()))
}

/// CRAM's LTF8 integer at the start of `b` (section 2.4), and the bytes it takes.
fn ltf8(b: &[u8]) -> Option<(i64, usize)> {
    let first = *b.first()?;
    let extra = first.leading_ones() as usize;
    let bytes = b.get(..1 + extra)?;
    let high = if extra >= 7 { 0 } else { u64::from(first) & (0xff >> (extra + 1)) };
    let value = bytes[1..].iter().fold(high, |v, &x| v << 8 | u64::from(x));
    Some((value as i64, bytes.len()))
}

/// Why a container header does not parse.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The bytes end inside it; `needed` bytes would hold it.
    Short { needed: usize },
    /// A field holds an impossible value.
    Invalid(&'static str),
}

/// A position in a container header's bytes, reading its integers one after another.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn itf8(&mut self) -> std::result::Result<i32, HeadError> {
        let (v, n) = itf8(self.b.get(self.at..).unwrap_or_default()).ok_or(HeadError::Short { needed: self.at + 5 })?;
        self.at += n;
        Ok(v)
    }

    fn ltf8(&mut self) -> std::result::Result<i64, HeadError> {
        let (v, n) = ltf8(self.b.get(self.at..).unwrap_or_default()).ok_or(HeadError::Short { needed: self.at + 9 })?;
        self.at += n;
        Ok(v)
    }
}

/// Parses the container header at the start of `b`, the container starting at byte `offset`.
pub fn parse_head(b: &[u8], offset: u64) -> std::result::Result<ContainerHead, HeadError> {
    let length = i32::from_le_bytes(b.get(..4).ok_or(HeadError::Short { needed: 4 })?.try_into().expect("4 bytes"));
    let mut c = Cursor { b, at: 4 };
    let (reference, start, span, records) = (c.itf8()?, c.itf8()?, c.itf8()?, c.itf8()?);
    let (_record_counter, _bases, blocks) = (c.ltf8()?, c.ltf8()?, c.itf8()?);
    let landmarks = c.itf8()?;
    if landmarks < 0 {
        return Err(HeadError::Invalid("a negative landmark count"));
    }
    for _ in 0..landmarks {
        let at = c.at;
        c.itf8().map_err(|_| HeadError::Short { needed: at + 5 * landmarks as usize })?;
    }
    let head_len = c.at + 4; // the CRC32
    if b.len() < head_len {
        return Err(HeadError::Short { needed: head_len });
    }
    // noodles-cram 0.102 does not check it; htslib refuses the container.
    let stored = u32::from_le_bytes(b[c.at..head_len].try_into().expect("4 bytes"));
    if crc32fast::hash(&b[..c.at]) != stored {
        return Err(HeadError::Invalid("header checksum mismatch"));
    }
    if length < 0 {
        return Err(HeadError::Invalid("a negative length"));
    }
    if records < 0 {
        return Err(HeadError::Invalid("a negative record count"));
    }
    if blocks < 0 {
        return Err(HeadError::Invalid("a negative block count"));
    }
    let span = match reference {
        -2 => ContainerSpan::Many,
        -1 => ContainerSpan::Unplaced,
        id if id >= 0 && start >= 1 && span >= 1 => {
            ContainerSpan::On { id: id as usize, start: start as u64, end: start as u64 + span as u64 - 1 }
        }
        id if id >= 0 => ContainerSpan::Many,
        _ => return Err(HeadError::Invalid("a reference id below -2")),
    };
    Ok(ContainerHead {
        offset,
        end: offset + head_len as u64 + length as u64,
        span,
        records: records as u64,
        is_eof: records == 0 && reference == -1 && start == EOF_POSITION,
        header_len: head_len as u32,
        blocks: blocks as u32,
    })
}

/// Reads the header of the container at byte `offset` of `bytes` (the CRAM file `path`);
/// `None` at the end of the file.
pub fn read_head(path: &str, bytes: &ObjectBytes, offset: u64) -> Result<Option<ContainerHead>> {
    if offset >= bytes.size {
        return Ok(None);
    }
    let truncated = || {
        container_error(
            path,
            offset,
            format!("the file ends inside a container: it is truncated (file size {})", bytes.size),
        )
    };
    let mut want = HEAD_PROBE_BYTES;
    loop {
        let len = want.min(bytes.size - offset);
        let data = bytes.read_range(offset, len)?;
        match parse_head(&data, offset) {
            Ok(head) if head.end > bytes.size => return Err(truncated()),
            Ok(head) => return Ok(Some(head)),
            Err(HeadError::Short { .. }) if len == bytes.size - offset => return Err(truncated()),
            Err(HeadError::Short { needed }) => want = (needed as u64).max(want * 2),
            Err(HeadError::Invalid(what)) => {
                return Err(container_error(path, offset, format!("invalid container header: {what}")))
            }
        }
    }
}

/// A block of a container body (section 8): its compression method (0 raw, 1 gzip, 2 bzip2,
/// 3 lzma, 4 rANS 4x8, 5 rANS Nx16, 6 arithmetic coder, 7 fqzcomp, 8 name tokeniser), and where
/// its bytes lie in the container.
struct BlockHead {
    method: u8,
    /// Where the block starts.
    start: usize,
    /// Where its data ends and its CRC32 starts.
    data_end: usize,
}

/// The blocks of the container `head` describes, whose bytes (header and body) are `container`.
/// `Err` says where the blocks stop making sense.
fn block_heads(head: &ContainerHead, container: &[u8]) -> std::result::Result<Vec<BlockHead>, String> {
    let mut c = Cursor { b: container, at: head.header_len as usize };
    let mut blocks = Vec::new();
    for block in 0..head.blocks {
        let start = c.at;
        let short = |_| format!("block {block} is cut short");
        let method = *container.get(start).ok_or_else(|| format!("block {block} is cut short"))?;
        c.at += 2; // method, content type
        let (_content_id, compressed, _raw) =
            (c.itf8().map_err(short)?, c.itf8().map_err(short)?, c.itf8().map_err(short)?);
        let data_end =
            usize::try_from(compressed).ok().and_then(|n| c.at.checked_add(n)).ok_or("a negative block size")?;
        if container.len() < data_end {
            return Err(format!("block {block} is cut short"));
        }
        blocks.push(BlockHead { method, start, data_end });
        c.at = data_end + 4; // the CRC32
    }
    Ok(blocks)
}

/// Checks the CRC32s of the blocks of the container `head` describes (its header's was checked
/// by [`parse_head`]), whose bytes (header and body) are `container` (section 8: method, content
/// type, content id, sizes and data, then the CRC32 of those bytes). `Err` says what does not
/// match.
pub fn check_checksums(head: &ContainerHead, container: &[u8]) -> std::result::Result<(), String> {
    let crc_at = |at: usize| -> std::result::Result<u32, String> {
        let b = container.get(at..at + 4).ok_or("the container ends inside a checksum")?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    for (block, BlockHead { method, start, data_end }) in block_heads(head, container)?.into_iter().enumerate() {
        if crc32fast::hash(&container[start..data_end]) != crc_at(data_end)? {
            return Err(format!("block {block} (compression method {method}) checksum mismatch"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::cram::container::FILE_DEFINITION_LEN;

    #[test]
    fn itf8_reads_every_width() {
        // Examples of the CRAM specification's encoding: 1 to 5 bytes.
        assert_eq!(itf8(&[0x05]), Some((5, 1)));
        assert_eq!(itf8(&[0x80, 0xff]), Some((255, 2)));
        assert_eq!(itf8(&[0xc1, 0x00, 0x00]), Some((0x10000, 3)));
        assert_eq!(itf8(&[0xe0, 0x12, 0x34, 0x56]), Some((0x123456, 4)));
        assert_eq!(itf8(&[0xff, 0xff, 0xff, 0xff, 0x0e]), Some((-2, 5)));
        assert_eq!(itf8(&[0xf0, 0x00, 0x00, 0x00, 0x01]), Some((1, 5)));
        assert_eq!(itf8(&[0xc1, 0x00]), None, "cut short");
    }

    #[test]
    fn ltf8_reads_every_width() {
        assert_eq!(ltf8(&[0x05]), Some((5, 1)));
        assert_eq!(ltf8(&[0x81, 0x00]), Some((0x100, 2)));
        assert_eq!(ltf8(&[0xfe, 1, 2, 3, 4, 5, 6, 7]), Some((0x01020304050607, 8)));
        assert_eq!(ltf8(&[0xff, 0, 0, 0, 0, 0, 0, 1, 0]), Some((0x100, 9)));
        assert_eq!(ltf8(&[0xff, 0, 0]), None, "cut short");
    }

    /// The compression methods of every block of the CRAM file `name` of tests/data/cram.
    fn methods_of(name: &str) -> std::collections::BTreeSet<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cram").join(name);
        let file = std::fs::read(path).unwrap();
        let mut methods = std::collections::BTreeSet::new();
        let mut at = FILE_DEFINITION_LEN;
        while at < file.len() {
            let head = parse_head(&file[at..], at as u64).unwrap();
            let container = &file[at..head.end as usize];
            let blocks = block_heads(&head, container).unwrap();
            // The blocks fill the body, one after another, each followed by its CRC32.
            let starts: Vec<usize> = blocks.iter().map(|block| block.start).collect();
            let ends: Vec<usize> = blocks.iter().map(|block| block.data_end + 4).collect();
            assert_eq!(starts.first(), Some(&(head.header_len as usize)), "{name}: container at {at}");
            assert_eq!(starts[1..], ends[..ends.len() - 1], "{name}: container at {at}");
            assert_eq!(ends.last(), Some(&container.len()), "{name}: container at {at}");
            methods.extend(blocks.iter().map(|block| block.method));
            at = head.end as usize;
        }
        methods
    }

    /// The CRAM 3.1 test files hold the codecs their profiles promise: fqzcomp (7) in `small`,
    /// and the arithmetic coder (6) and the name tokeniser (8) as well in `archive`, so the
    /// tests that read them cover those decoders (tests/data/cram.sh).
    #[test]
    fn the_cram_3_1_profiles_use_their_codecs() {
        let (small, archive) = (methods_of("bwa_mem_v31_small.cram"), methods_of("bwa_mem_v31_archive.cram"));
        assert!(small.contains(&7), "small: {small:?}");
        assert!(archive.contains(&6) && archive.contains(&7) && archive.contains(&8), "archive: {archive:?}");
        assert!(!methods_of("bwa_mem.cram").iter().any(|m| (5..=8).contains(m)), "CRAM 3.0 has no 3.1 codecs");
    }

    /// A container header with these fields, as section 7.2 lays it out (one-byte integers).
    fn head(length: i32, ints: &[u8], landmarks: &[u8]) -> Vec<u8> {
        let mut b = length.to_le_bytes().to_vec();
        b.extend_from_slice(ints); // reference, start, span, records
        b.extend_from_slice(&[0, 0]); // record counter, bases (LTF8)
        b.push(1); // blocks
        b.push(landmarks.len() as u8);
        b.extend_from_slice(landmarks);
        b.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
        b
    }

    #[test]
    fn heads_give_span_records_and_the_next_offset() {
        let b = head(1000, &[0x01, 0x0a, 0x80, 0xc8, 0x07], &[0, 50]);
        let parsed = parse_head(&b, 100).unwrap();
        assert_eq!(parsed.span, ContainerSpan::On { id: 1, start: 10, end: 209 });
        assert_eq!(parsed.records, 7);
        assert_eq!(parsed.end, 100 + b.len() as u64 + 1000);
        assert!(!parsed.is_eof);
        let unplaced = [0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 3];
        assert_eq!(parse_head(&head(5, &unplaced, &[]), 0).unwrap().span, ContainerSpan::Unplaced);
        let many = [0xff, 0xff, 0xff, 0xff, 0x0e, 0, 0, 3];
        assert_eq!(parse_head(&head(5, &many, &[]), 0).unwrap().span, ContainerSpan::Many);
    }

    #[test]
    fn the_end_of_file_container_is_known() {
        // Section 9's CRAM 3 end-of-file container, as samtools writes it.
        let eof = [
            0x0f, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xe0, 0x45, 0x4f, 0x46, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x00, 0x05, 0xbd, 0xd9, 0x4f, 0x00, 0x01, 0x00, 0x06, 0x06, 0x01, 0x00, 0x01, 0x00, 0x01, 0x00, 0xee, 0x63,
            0x01, 0x4b,
        ];
        let parsed = parse_head(&eof, 10).unwrap();
        assert!(parsed.is_eof);
        assert_eq!(parsed.end, 10 + eof.len() as u64);
    }

    #[test]
    fn checksums_of_headers_and_blocks_are_checked() {
        let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cram/bwa_mem.cram")).unwrap();
        // After the file definition: the header container, then the first data container.
        let header = parse_head(&file[FILE_DEFINITION_LEN..], FILE_DEFINITION_LEN as u64).unwrap();
        let first = parse_head(&file[header.end as usize..], header.end).unwrap();
        assert!(first.blocks > 2 && first.records > 0);
        for head in [header, first] {
            let mut container = file[head.offset as usize..head.end as usize].to_vec();
            assert_eq!(check_checksums(&head, &container), Ok(()));
            let last = container.len() - 10;
            container[last] ^= 1;
            let e = check_checksums(&head, &container).unwrap_err();
            assert!(e.contains("block") && e.contains("checksum mismatch"), "{e}");
            container[last] ^= 1;
            container[5] ^= 1;
            assert_eq!(parse_head(&container, head.offset), Err(HeadError::Invalid("header checksum mismatch")));
        }
    }

    #[test]
    fn short_and_invalid_heads_say_so() {
        let b = head(1000, &[0x01, 0x0a, 0x80, 0xc8, 0x07], &[0, 50]);
        assert!(matches!(parse_head(&b[..b.len() - 1], 0), Err(HeadError::Short { .. })));
        assert!(matches!(parse_head(&b[..6], 0), Err(HeadError::Short { .. })));
        assert_eq!(parse_head(&head(-1, &[1, 1, 1, 1], &[]), 0), Err(HeadError::Invalid("a negative length")));
        let mut damaged = head(1000, &[0x01, 0x0a, 0x80, 0xc8, 0x07], &[0, 50]);
        damaged[6] ^= 1;
        assert_eq!(parse_head(&damaged, 0), Err(HeadError::Invalid("header checksum mismatch")));
    }
}
