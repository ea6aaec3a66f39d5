//! Byte-range partitions of one BAM file, decoded independently.
//!
//! **Ownership rule.** A record belongs to the range `[start, end)` that contains the compressed
//! offset of the BGZF block in which the record starts. So a range reads records while their
//! block starts before `end`, and a range that starts mid-file begins at the first record that
//! starts in a block at or after `start`.
//!
//! **Finding that record without an index.** The first real BGZF block at or after `start` is
//! found by its header signature (magic, `BC` subfield, BSIZE) and confirmed by inflating it
//! (noodles checks the CRC) and by the next block's header following it exactly. Within the
//! inflated data, a candidate record start must pass [`plausible_record`] and be followed by
//! [`CHAIN_LEN`] more records chained by `block_size` that pass it too (or by the end of the
//! data after at least one).
//!
//! **With an index** no guess is needed: every chunk start and end, and every linear (BAI) or bin
//! (CSI) offset, in a `.bai`/`.csi` is a record start, so a boundary at byte `x` becomes the first
//! such position in a block at or after `x`
//! (and a guess only past the last one, e.g. inside the unplaced unmapped tail). Neighbouring
//! ranges place their shared boundary with the same rule, so they meet exactly.
//!
//! **Verification.** A boundary is never trusted alone: the range before it reads on past its end
//! and must arrive exactly at the boundary's record (see [`crate::decode::reader`]); a mismatch is an error.
//!
//! **Regions.** When the pushed-down predicate confines records to regions and the file has an
//! index, a range reads only the index chunks of those regions that fall inside it, and the
//! ranges share out those chunks' bytes rather than the whole file ([`region_file_groups`]), so a
//! region is decoded on every core too. A boundary inside a chunk with no index position near it
//! is found by the record search and verified like any other.

use noodles_bgzf as bgzf;

use crate::bgzf::framing::FileContext;
use crate::bgzf::index::{merge_spans, BamIndex, Span, SPAN_GAP_BYTES};
use crate::options::region::{Region, RegionReference};

/// What a scan reads of a file, or of a range of it.
#[derive(Debug)]
pub enum Selection {
    /// Nothing: the range holds no record start.
    Empty,
    /// All of the piece: there are no regions, no index, or regions the index cannot narrow.
    All(Piece),
    /// The pieces that the regions' index chunks make within the range (none when no record
    /// there can match), and how many chunks the index gave, after merging neighbours.
    Chunks { pieces: Vec<Piece>, chunks: usize },
}

impl Selection {
    /// The pieces to decode, in file order.
    pub fn into_pieces(self) -> Vec<Piece> {
        match self {
            Self::Empty => vec![],
            Self::All(piece) => vec![piece],
            Self::Chunks { pieces, .. } => pieces,
        }
    }

    /// The index chunks selected (0 when the index was not used).
    pub fn index_chunks(&self) -> usize {
        match self {
            Self::Chunks { chunks, .. } => *chunks,
            Self::Empty | Self::All(_) => 0,
        }
    }
}

/// What to read of `whole` for `regions` in a file with header `context` and `index`: all of it
/// without regions or without an index, else the pieces holding the regions' index chunks.
pub fn select_pieces(
    context: &FileContext,
    index: Option<&BamIndex>,
    whole: Piece,
    regions: Option<&[Region]>,
) -> Selection {
    let (from, to) = (whole.from, whole.to);
    let (Some(regions), Some(index)) = (regions, index) else { return Selection::All(whole) };
    // Each chunk with the sort position after which its region wants nothing (none: the
    // unplaced tail, read to the end).
    let mut chunks: Vec<(Span, Option<ReadUntil>)> = Vec::new();
    for region in regions {
        match &region.reference {
            RegionReference::Named(name) => {
                let Some(id) = context.reference_names.iter().position(|n| n == name) else { continue };
                let length = context.reference_lengths[id].max(1);
                let start = region.start.min(length);
                let until = ReadUntil { reference: id as u32, end: region.end };
                match index.chunks(id, start, region.end.min(length).max(start)) {
                    Ok(found) => chunks.extend(found.into_iter().map(|c| (c, Some(until)))),
                    // An index that cannot answer (e.g. a BAI for a position past 2^29) is not
                    // needed: the predicate is exact, so reading everything is still right.
                    Err(_) => return Selection::All(whole),
                }
            }
            RegionReference::Unplaced => chunks.extend(index.unplaced_from().map(|u| ((u, None), None))),
            RegionReference::Any => return Selection::All(whole),
        }
    }
    let spans = merge_spans(chunks.iter().map(|(span, _)| *span).collect(), SPAN_GAP_BYTES);
    let chunk_count = spans.len();
    let pieces = spans
        .into_iter()
        .filter_map(|(s, e): Span| {
            let piece_from = s.max(from);
            let (piece_to, boundary_from) = match (e, to) {
                (Some(e), Some(to)) if e < to => (Some(e), None),
                (None, None) => (None, None),
                (Some(e), None) => (Some(e), None),
                (_, Some(to)) => (Some(to), whole.boundary_from.clone()),
            };
            // The latest stop among the chunks merged into this span (any unbounded one wins).
            let read_until = chunks
                .iter()
                .filter(|((start, _), _)| s <= *start && e.is_none_or(|e| *start < e))
                .map(|(_, until)| *until)
                .reduce(|a, b| a.zip(b).map(|(a, b)| a.max(b)))
                .flatten();
            piece_to.is_none_or(|t| piece_from < t).then_some(Piece {
                from: piece_from,
                to: piece_to,
                boundary_from,
                read_until,
            })
        })
        .collect();
    Selection::Chunks { pieces, chunks: chunk_count }
}

/// What placed a partition boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundaryOrigin {
    /// A record start named by the index (its location, for messages).
    Index(String),
    /// The record search from this byte offset.
    RecordSearch(u64),
}

impl std::fmt::Display for BoundaryOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Index(location) => write!(f, "the index {location}"),
            Self::RecordSearch(offset) => write!(f, "the record search from byte {offset}"),
        }
    }
}

/// A stretch of a file to decode: the records from `from` up to the one at `to`.
#[derive(Debug, Clone)]
pub struct Piece {
    pub from: bgzf::VirtualPosition,
    /// `None`: up to the end of the data.
    pub to: Option<bgzf::VirtualPosition>,
    /// When `to` is a partition boundary, what placed it: reading must then arrive exactly
    /// there, or the boundary was wrong. Index chunk ends need no such check.
    pub boundary_from: Option<BoundaryOrigin>,
    /// For index chunks (coordinate-sorted data): no record sorting after this point is wanted,
    /// so the piece ends at the first such record instead of at the end of its chunk.
    pub read_until: Option<ReadUntil>,
}

impl Piece {
    /// Every record of a file, from the first after its header.
    pub fn whole_file(header_end: bgzf::VirtualPosition) -> Self {
        Self { from: header_end, to: None, boundary_from: None, read_until: None }
    }
}

/// A point in coordinate order: reference `reference` (unmapped records, refID -1, sort last),
/// up to the 1-based position `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadUntil {
    pub reference: u32,
    pub end: u64,
}

impl ReadUntil {
    /// Whether the record `bytes` sorts after this point (it starts on a later reference, or
    /// after `end` on this one): in sorted data, so does every record after it.
    pub fn is_passed_by(&self, bytes: &[u8]) -> bool {
        let (reference, pos) = crate::record::sort_position(bytes);
        // Corrupt values (refID < -1, pos < -1) are left for the decoder to report.
        let reference = match reference {
            -1 => u32::MAX,
            r => match u32::try_from(r) {
                Ok(r) => r,
                Err(_) => return false,
            },
        };
        reference > self.reference
            || reference == self.reference && u64::try_from(i64::from(pos) + 1).is_ok_and(|p| p > self.end)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{select_pieces, Piece, ReadUntil, Selection};
    use crate::bgzf::framing::FileContext;
    use crate::bgzf::index::{BamIndex, IndexKind};
    use crate::options::region::{Region, RegionReference};

    /// `tests/data/sample.bam`'s references and index.
    fn sample() -> (FileContext, BamIndex) {
        let names: Vec<String> = ["chr1", "chr2", "chr3", "chrM"].map(String::from).into();
        let context = FileContext {
            reference_names: names.clone().into(),
            reference_lengths: Arc::from(vec![300_000u64, 200_000, 120_000, 16_569]),
        };
        let bytes = include_bytes!("../../tests/data/sample.bam.bai");
        (context, BamIndex::parse(IndexKind::Bai, bytes, &names).unwrap())
    }

    /// The three answers stay apart: the whole piece when the index cannot narrow the scan, and
    /// chunks, possibly none, when it can (a `.sam.gz` scan reads its lines only in the first case).
    #[test]
    fn selection_tells_all_from_chunks_and_from_nothing() {
        let (context, index) = sample();
        let whole = Piece::whole_file(noodles_bgzf::VirtualPosition::from(1 << 16));
        let select = |index: Option<&BamIndex>, regions: Option<&[Region]>| {
            select_pieces(&context, index, whole.clone(), regions)
        };
        let named = |name: &str| Region { reference: RegionReference::Named(name.into()), start: 1000, end: 2000 };
        assert!(matches!(select(Some(&index), None), Selection::All(_)));
        assert!(matches!(select(None, Some(&[named("chr1")])), Selection::All(_)));
        assert!(matches!(select(Some(&index), Some(&[Region::whole(RegionReference::Any)])), Selection::All(_)));
        let chr1 = select(Some(&index), Some(&[named("chr1")]));
        assert!(chr1.index_chunks() >= 1, "{chr1:?}");
        assert!(matches!(&chr1, Selection::Chunks { pieces, .. } if !pieces.is_empty()), "{chr1:?}");
        let absent = select(Some(&index), Some(&[named("chrX")]));
        assert!(matches!(&absent, Selection::Chunks { pieces, chunks: 0 } if pieces.is_empty()), "{absent:?}");
        assert!(Selection::Empty.into_pieces().is_empty());
        assert_eq!(Selection::All(whole.clone()).into_pieces().len(), 1);
    }

    fn record(reference: i32, pos: i32) -> Vec<u8> {
        let mut bytes = vec![0u8; crate::record::FIXED_LEN];
        bytes[..4].copy_from_slice(&reference.to_le_bytes());
        bytes[4..8].copy_from_slice(&pos.to_le_bytes());
        bytes
    }

    #[test]
    fn read_until_follows_coordinate_order() {
        let until = ReadUntil { reference: 1, end: 1000 };
        // 0-based pos 999 is 1-based 1000: still wanted; 1000 is past.
        assert!(!until.is_passed_by(&record(1, 999)));
        assert!(until.is_passed_by(&record(1, 1000)));
        assert!(!until.is_passed_by(&record(0, 5_000_000)));
        assert!(until.is_passed_by(&record(2, 0)));
        // Unmapped records without a reference sort last.
        assert!(until.is_passed_by(&record(-1, -1)));
        assert!(!ReadUntil { reference: u32::MAX, end: u64::MAX }.is_passed_by(&record(-1, -1)));
        // A corrupt refID or position is not a reason to stop: the decoder reports it.
        assert!(!until.is_passed_by(&record(-7, 0)));
        assert!(!until.is_passed_by(&record(1, -9)));
        assert!(!ReadUntil { reference: 1, end: u64::MAX }.is_passed_by(&record(1, i32::MAX)));
    }
}
