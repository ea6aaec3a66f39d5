//! BAI, CSI and tabix (`.tbi`) indexes (parsed by noodles): exact partition boundaries, the chunks
//! that can hold a region's records, and per-reference record counts.
//!
//! Every chunk start and end in an index is the virtual position of a record start (or of the
//! end of the data). Those positions are where partitions can begin without guessing.

use std::collections::{HashMap, HashSet};
use std::io;

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use noodles_bgzf::VirtualPosition;
use noodles_core::{region::Interval, Position};
use noodles_csi::binning_index::index::reference_sequence::Index as ReferenceIndex;
use noodles_csi::binning_index::Index as GenericIndex;
use noodles_csi::binning_index::ReferenceSequence as _;
use noodles_csi::BinningIndex;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::bgzf::framing::FileContext;
use crate::error::BamError;
use crate::io::ObjectBytes;

/// The index formats, by the file extension that names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Bai,
    Csi,
    /// Tabix, as `tabix -p sam` writes it for BGZF-compressed SAM.
    Tbi,
}

impl IndexKind {
    pub fn extension(self) -> &'static str {
        match self {
            IndexKind::Bai => "bai",
            IndexKind::Csi => "csi",
            IndexKind::Tbi => "tbi",
        }
    }
}

/// A parsed index and what the scan derives from it.
pub struct BamIndex {
    index: Box<dyn RegionQuery>,
    unplaced_count: Option<u64>,
    /// Sorted, deduplicated virtual positions at which records start (or the data ends).
    record_starts: Vec<VirtualPosition>,
    /// Where the records without a reference begin: the end of the last placed record.
    unplaced_start: Option<VirtualPosition>,
    reference_count: usize,
    /// The index's reference number of each of the file header's references, when the index
    /// names its references (tabix does, in the order they first appear in the file).
    index_ids: Option<Vec<Option<usize>>>,
    /// A reference the index names that the file's header lacks, if any.
    unknown_reference: Option<String>,
    /// Per reference: (mapped, unmapped) record counts if recorded, and whether it has records.
    reference_counts: Vec<(Option<(u64, u64)>, bool)>,
}

impl BamIndex {
    /// Parses the bytes of a `.bai`, `.csi` or `.tbi` file of a file whose header lists the
    /// references `reference_names` (an index that names its references is matched by name).
    pub fn parse(kind: IndexKind, bytes: &[u8], reference_names: &[String]) -> io::Result<Self> {
        match kind {
            IndexKind::Bai => {
                let index = noodles_bam::bai::io::Reader::new(bytes).read_index()?;
                let offsets = index.reference_sequences().iter().flat_map(|r| r.index().iter().copied()).collect();
                Ok(Self::new(index, offsets, reference_names))
            }
            IndexKind::Csi => {
                let index = noodles_csi::io::Reader::new(bytes).read_index()?;
                let offsets = index.reference_sequences().iter().flat_map(|r| r.index().values().copied()).collect();
                Ok(Self::new(index, offsets, reference_names))
            }
            IndexKind::Tbi => {
                let index = noodles_tabix::io::Reader::new(bytes).read_index()?;
                let offsets = index.reference_sequences().iter().flat_map(|r| r.index().iter().copied()).collect();
                Ok(Self::new(index, offsets, reference_names))
            }
        }
    }

    /// `offsets` are the linear (BAI) or bin (CSI) offsets: record starts too, and where region
    /// chunks may begin (see [`RegionQuery::chunks`]).
    fn new<I>(index: GenericIndex<I>, offsets: Vec<VirtualPosition>, reference_names: &[String]) -> Self
    where
        I: ReferenceIndex + Send + Sync + 'static,
    {
        // 0:0 marks windows without records in a BAI: not a record start.
        let mut record_starts: Vec<VirtualPosition> =
            offsets.into_iter().filter(|v| *v != VirtualPosition::default()).collect();
        for reference in index.reference_sequences() {
            for bin in reference.bins().values() {
                for chunk in bin.chunks() {
                    record_starts.push(chunk.start());
                    record_starts.push(chunk.end());
                }
            }
            if let Some(m) = reference.metadata() {
                record_starts.extend([m.start_position(), m.end_position()]);
            }
        }
        record_starts.sort_unstable();
        record_starts.dedup();
        // An index that names its references (tabix) is matched to the header by name.
        let names = index.header().map(|h| h.reference_sequence_names()).filter(|names| !names.is_empty());
        let named: Option<HashMap<&[u8], usize>> =
            names.map(|names| names.iter().enumerate().map(|(i, n)| (n.as_slice(), i)).collect());
        let index_ids = named.as_ref().map(|by_name| {
            reference_names.iter().map(|name| by_name.get(name.as_bytes()).copied()).collect::<Vec<_>>()
        });
        let in_header: HashSet<&[u8]> = reference_names.iter().map(|r| r.as_bytes()).collect();
        let unknown_reference = names
            .into_iter()
            .flatten()
            .find(|n| n.as_slice() != UNPLACED_NAME.as_bytes() && !in_header.contains(n.as_slice()))
            .map(|n| String::from_utf8_lossy(n).into_owned());
        // Tabix indexes the records without a reference as reference `*`; the others keep them
        // after the last placed record.
        let unplaced_start = match named.as_ref().and_then(|by_name| by_name.get(UNPLACED_NAME.as_bytes())) {
            Some(&id) => index.reference_sequences()[id]
                .bins()
                .values()
                .flat_map(|bin| bin.chunks().iter().map(|c| c.start()))
                .min(),
            None => record_starts.last().copied(),
        };
        let reference_counts = index
            .reference_sequences()
            .iter()
            .map(|r| (r.metadata().map(|m| (m.mapped_record_count(), m.unmapped_record_count())), !r.bins().is_empty()))
            .collect::<Vec<_>>();
        let reference_count = reference_counts.len();
        let unplaced_count = index.unplaced_unmapped_record_count();
        Self {
            index: Box::new(index),
            unplaced_count,
            record_starts,
            unplaced_start,
            reference_count,
            index_ids,
            unknown_reference,
            reference_counts,
        }
    }

    /// The index's number for the header's reference `reference_id` (`None`: not indexed).
    fn index_id(&self, reference_id: usize) -> Option<usize> {
        match &self.index_ids {
            Some(ids) => ids.get(reference_id).copied().flatten(),
            None => Some(reference_id),
        }
    }

    /// Bytes held by what this struct derives from the index (record starts, per-reference
    /// counts), not counting noodles' index itself.
    pub fn memory_size(&self) -> usize {
        self.record_starts.len() * size_of::<VirtualPosition>()
            + self.reference_counts.len() * size_of::<(Option<(u64, u64)>, bool)>()
    }

    /// How many references the index numbers (`None` when it names them instead).
    pub fn reference_count(&self) -> Option<usize> {
        self.index_ids.is_none().then_some(self.reference_count)
    }

    /// A reference the index names that the file's header lacks, if any.
    pub fn unknown_reference(&self) -> Option<&str> {
        self.unknown_reference.as_deref()
    }

    /// The last position the index knows of, for checking that it fits its BAM file.
    pub fn last_position(&self) -> Option<VirtualPosition> {
        self.record_starts.last().copied()
    }

    /// Up to `n` of the record starts the index names, spread over the file, for checking that
    /// the index fits its BAM file (a chunk end may be the end of the data instead).
    pub fn sample_record_starts(&self, n: usize) -> Vec<VirtualPosition> {
        let len = self.record_starts.len();
        let mut picks: Vec<VirtualPosition> =
            (0..n.min(len)).map(|i| self.record_starts[i * len / n.min(len)]).collect();
        picks.dedup();
        picks
    }

    /// The first known record start in a block at or after byte `offset`, if the index knows one.
    pub fn boundary_at(&self, offset: u64) -> Option<VirtualPosition> {
        let i = self.record_starts.partition_point(|v| v.compressed() < offset);
        self.record_starts.get(i).copied()
    }

    /// The chunks that hold every record of reference `reference_id` overlapping the 1-based
    /// closed interval `[start, end]` (and possibly others).
    pub fn chunks(&self, reference_id: usize, start: u64, end: u64) -> io::Result<Vec<Span>> {
        let position = |p: u64| {
            Position::try_from(usize::try_from(p.max(1)).unwrap_or(usize::MAX))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        let interval = Interval::from(position(start)?..=position(end.max(start))?);
        match self.index_id(reference_id) {
            Some(id) => self.index.chunks(id, interval),
            None => Ok(Vec::new()),
        }
    }

    /// Roughly the compressed offset at which the records of reference `reference_id` pass the
    /// 1-based `position`, from the linear (BAI) or bin (CSI) offsets around it; for sharing
    /// work out between partitions, never for deciding what to read.
    pub fn offset_estimate(&self, reference_id: usize, position: u64) -> Option<u64> {
        self.index.offset_estimate(self.index_id(reference_id)?, position)
    }

    /// The chunk of records without a reference (the unplaced, unmapped tail), up to the end of
    /// the file.
    pub fn unplaced_from(&self) -> Option<VirtualPosition> {
        self.unplaced_start
    }

    /// The number of records, from the per-reference counts, when the index records them.
    pub fn record_count(&self) -> Option<u64> {
        let mut total = self.unplaced_count?;
        for (metadata, has_records) in &self.reference_counts {
            match metadata {
                Some((mapped, unmapped)) => total += mapped + unmapped,
                // Records without counts: the index cannot say how many.
                None if *has_records => return None,
                None => {}
            }
        }
        Some(total)
    }
}

/// The reference name under which tabix indexes records without a reference (SAM's `*`).
const UNPLACED_NAME: &str = "*";

/// A region query on a BAI, CSI or tabix index, whichever its per-reference index is.
trait RegionQuery: Send + Sync {
    fn chunks(&self, reference_id: usize, interval: Interval) -> io::Result<Vec<Span>>;
    fn offset_estimate(&self, reference_id: usize, position: u64) -> Option<u64>;
}

impl<I: ReferenceIndex + Send + Sync> RegionQuery for GenericIndex<I> {
    /// noodles' query, with each chunk starting no earlier than the linear (BAI) or bin (CSI)
    /// offset of the interval's start: records before it end before the interval in sorted
    /// data. htslib merges small bins into their parents when indexing, so without this a
    /// chunk may start a whole parent bin (e.g. 128 kbp) before the interval.
    fn chunks(&self, reference_id: usize, interval: Interval) -> io::Result<Vec<Span>> {
        let chunks = self.query(reference_id, interval)?;
        let start = interval.start().unwrap_or(Position::MIN);
        let min_offset = self.reference_sequences()[reference_id].min_offset(self.min_shift(), self.depth(), start);
        Ok(chunks.into_iter().map(|c| (c.start().max(min_offset), Some(c.end()))).collect())
    }

    /// Interpolates between the offsets of the window holding `position` and of the next one.
    fn offset_estimate(&self, reference_id: usize, position: u64) -> Option<u64> {
        let reference = self.reference_sequences().get(reference_id)?;
        let offset_at = |p: u64| {
            let p = Position::try_from(usize::try_from(p).ok()?).ok()?;
            Some(reference.min_offset(self.min_shift(), self.depth(), p).compressed())
        };
        let window = 1u64 << self.min_shift();
        let window_start = position.checked_sub(1)? / window * window + 1;
        let (low, high) = (offset_at(window_start)?, offset_at(window_start.checked_add(window)?)?);
        // The last window, or offsets of merged bins: no estimate.
        if high <= low {
            return None;
        }
        Some(low + ((high - low) as u128 * (position - window_start) as u128 / window as u128) as u64)
    }
}

/// A stretch of records: from a record start up to another (`None`: the end of the data).
pub type Span = (VirtualPosition, Option<VirtualPosition>);

/// Spans separated by fewer compressed bytes than this are read as one: inflating a gap of a
/// block or two is cheaper than starting a new read. (The predicate drops the extra records.)
pub const SPAN_GAP_BYTES: u64 = 1 << 16;

/// Sorts and merges spans so that each record is read at most once, joining spans whose gap is
/// under `gap` compressed bytes.
pub fn merge_spans(mut spans: Vec<Span>, gap: u64) -> Vec<Span> {
    spans.sort_by_key(|s| s.0);
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last)
                if last
                    .1
                    .is_none_or(|end| span.0 <= end || span.0.compressed() < end.compressed().saturating_add(gap)) =>
            {
                last.1 = match (last.1, span.1) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => merged.push(span),
        }
    }
    merged
}

/// The first of the `candidates` (locations and their kind, in samtools' order of search) that
/// exists beside the file `bytes`.
pub fn find_index(
    bytes: &ObjectBytes,
    candidates: impl IntoIterator<Item = (String, IndexKind)>,
) -> Result<Option<(Path, IndexKind, ObjectMeta)>> {
    for (candidate, kind) in candidates {
        let location = Path::from(candidate);
        let (store, at) = (Arc::clone(&bytes.store), location.clone());
        match bytes.wait(async move { store.head(&at).await })? {
            Ok(found) => return Ok(Some((location, kind, found))),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(BamError::store(location, e).into()),
        }
    }
    Ok(None)
}

/// Reads and parses the index at `location`, of a file whose header `context` describes.
pub fn read_index(bytes: &ObjectBytes, location: &Path, kind: IndexKind, context: &FileContext) -> Result<BamIndex> {
    let (store, at) = (Arc::clone(&bytes.store), location.clone());
    let data =
        bytes.wait(async move { store.get(&at).await?.bytes().await })?.map_err(|e| BamError::store(location, e))?;
    BamIndex::parse(kind, &data, &context.reference_names)
        .map_err(|e| BamError::Damaged {
            file: location.to_string(),
            at: String::new(),
            reason: format!("invalid {} index", kind.extension()),
            source: Some(Box::new(e)),
        })
        .map_err(DataFusionError::from)
}

/// Why `index` cannot belong to a file with this header and size, if it cannot.
pub fn index_mismatch(index: &BamIndex, context: &FileContext, size: u64) -> Option<String> {
    let references = context.reference_names.len();
    if let Some(count) = index.reference_count().filter(|&count| count > references) {
        return Some(format!("it indexes {count} references, the file's header has {references}"));
    }
    if let Some(name) = index.unknown_reference() {
        return Some(format!("it names reference {name}, which the file's header lacks"));
    }
    match index.last_position() {
        Some(last) if last.compressed() >= size => {
            Some(format!("it points at byte {}, beyond the end of the {size}-byte file", last.compressed()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(c: u64, u: u16) -> VirtualPosition {
        VirtualPosition::try_from((c, u)).unwrap()
    }

    #[test]
    fn merge_joins_overlapping_and_touching_spans() {
        let spans = vec![
            (vp(50, 0), Some(vp(60, 0))),
            (vp(10, 5), Some(vp(20, 0))),
            (vp(20, 0), Some(vp(30, 1))),
            (vp(12, 0), Some(vp(15, 0))),
        ];
        assert_eq!(merge_spans(spans.clone(), 0), vec![(vp(10, 5), Some(vp(30, 1))), (vp(50, 0), Some(vp(60, 0)))]);
        let open_ended = vec![(vp(40, 0), None), (vp(10, 0), Some(vp(20, 0))), (vp(45, 0), Some(vp(90, 0)))];
        assert_eq!(merge_spans(open_ended, 0), vec![(vp(10, 0), Some(vp(20, 0))), (vp(40, 0), None)]);
        assert_eq!(merge_spans(spans, 25), vec![(vp(10, 5), Some(vp(60, 0)))]);
    }
}
