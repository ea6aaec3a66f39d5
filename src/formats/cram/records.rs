//! The records a scan reads from a CRAM file: the containers that start in its byte range (a
//! container belongs to the range holding its first byte, as a BAM record does), listed by the
//! `.crai` beside the file or found by walking the containers from the first; region scans skip
//! the containers whose reference span cannot overlap the regions.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use noodles_cram::crai;

use crate::bgzf::framing::FileContext;
use crate::decode::reader::{RawBatch, RecordSource, ScanMetrics, BATCH_BYTE_BUDGET};
use crate::formats::cram::container::{
    cram_error, ContainerReader, ContainerSpan, CramHeader, CramPosition, Reference,
};
use crate::io::warnings;
use crate::io::ObjectBytes;
use crate::options::region::Region;

/// Which containers a scan reads.
enum Containers {
    /// Every container from the first one, decoding those that start in `[start, end)`.
    Walk { start: u64, end: u64 },
    /// These containers (from the index), in file order.
    Listed(VecDeque<u64>),
}

/// The records of the containers of one CRAM file that a scan reads.
pub struct CramRecords {
    path: String,
    bytes: ObjectBytes,
    header: Arc<CramHeader>,
    reference: Reference,
    containers: Containers,
    reader: Option<ContainerReader>,
    regions: Option<Arc<[Region]>>,
    encoder: noodles_bam::io::Writer<Vec<u8>>,
    skip_damaged: bool,
    metrics: ScanMetrics,
    /// Where the bytes read were last counted.
    counted_to: u64,
}

/// What a CRAM scan reads of a file.
pub struct CramScan {
    pub reference: Reference,
    /// The `[start, end)` byte range of the partition.
    pub range: (u64, u64),
    pub regions: Option<Arc<[Region]>>,
    pub skip_damaged: bool,
}

impl CramRecords {
    /// What decoding needs of the file's header.
    pub fn file(&self) -> &Arc<FileContext> {
        &self.header.file
    }

    /// The records of the containers of the CRAM file `bytes` that `scan` reads, with its
    /// `header` and the `.crai` `index` that fits it, if any.
    pub fn new(
        path: &str,
        bytes: ObjectBytes,
        header: Arc<CramHeader>,
        scan: CramScan,
        index: Option<&crai::Index>,
        metrics: ScanMetrics,
    ) -> Self {
        let (start, end) = scan.range;
        let containers = match index {
            Some(index) => {
                let mut offsets: Vec<u64> = index
                    .iter()
                    .filter(|r| (start..end).contains(&r.offset()))
                    .filter(|r| scan.regions.as_deref().is_none_or(|regions| indexed_overlap(r, regions, &header)))
                    .map(|r| r.offset())
                    .collect();
                offsets.sort_unstable();
                offsets.dedup();
                metrics.index_chunks.add(offsets.len());
                Containers::Listed(offsets.into())
            }
            None => Containers::Walk { start: start.max(header.first_container), end },
        };
        Self {
            path: path.to_string(),
            bytes,
            header,
            reference: scan.reference,
            containers,
            reader: None,
            regions: scan.regions,
            encoder: noodles_bam::io::Writer::from(Vec::new()),
            skip_damaged: scan.skip_damaged,
            metrics,
            counted_to: start,
        }
    }

    /// Reads the next container the scan decodes; returns `false` after the last.
    fn next_container(&mut self) -> Result<bool> {
        loop {
            match &mut self.containers {
                Containers::Walk { start, end } => {
                    let reader = match &mut self.reader {
                        Some(reader) => reader,
                        None => self.reader.insert(ContainerReader::at(
                            &self.path,
                            &self.bytes,
                            self.header.first_container,
                        )?),
                    };
                    match reader.next_container()? {
                        Some(offset) if offset >= *end => return Ok(false),
                        Some(offset) if offset < *start => {
                            // Before the range: read past, not decoded or counted.
                            self.counted_to = reader.position();
                            continue;
                        }
                        Some(_) => {}
                        None => return Ok(false),
                    }
                }
                Containers::Listed(offsets) => {
                    let Some(offset) = offsets.pop_front() else { return Ok(false) };
                    if self.reader.as_ref().is_none_or(|r| r.position() != offset) {
                        self.reader = Some(ContainerReader::at(&self.path, &self.bytes, offset)?);
                        self.counted_to = offset;
                    }
                    let reader = self.reader.as_mut().expect("opened above");
                    if reader.next_container()?.is_none() {
                        return Err(cram_error(
                            &self.path,
                            format!(
                                "its index names a container at byte {offset}, where the file has none: \
                                 rebuild the index (samtools index) or remove it"
                            ),
                        ));
                    }
                }
            }
            let reader = self.reader.as_ref().expect("a container was read");
            if self.regions.as_deref().is_some_and(|regions| !reader.may_overlap(regions, &self.header.file)) {
                continue;
            }
            return Ok(true);
        }
    }
}

impl RecordSource for CramRecords {
    type Position = CramPosition;

    fn fill(&mut self, raw: &mut RawBatch<CramPosition>, batch_size: usize) -> Result<bool> {
        raw.clear();
        while raw.ends.len() < batch_size && raw.data.len() < BATCH_BYTE_BUDGET {
            let next = self.next_container();
            let more = match next {
                Ok(more) => more,
                // A container that cannot be read ends the partition: the next one cannot be found.
                Err(e) if self.skip_damaged => {
                    self.skipped(e, "up to the end of this partition");
                    false
                }
                Err(e) => return Err(e),
            };
            if !more {
                return Ok(false);
            }
            let reader = self.reader.as_ref().expect("a container was read");
            let first = raw.ends.len();
            let from = raw.data.len();
            match reader.decode_into(&self.header, &self.reference, &mut self.encoder, &mut raw.data, &mut raw.ends) {
                Ok(()) => {
                    let offset = reader.offset();
                    raw.starts
                        .extend((0..raw.ends.len() - first).map(|record| CramPosition { container: offset, record }));
                }
                Err(e) if self.skip_damaged => {
                    raw.data.truncate(from);
                    raw.ends.truncate(first);
                    self.skipped(e, "the next container");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn invalid(&self, at: CramPosition, e: crate::record::RecordError) -> DataFusionError {
        cram_error(&self.path, format!("invalid record: {e} ({at})"))
    }

    fn bytes_read(&mut self) -> u64 {
        let Some(reader) = &self.reader else { return 0 };
        let at = reader.position();
        let read = at.saturating_sub(self.counted_to);
        self.counted_to = self.counted_to.max(at);
        read
    }
}

impl CramRecords {
    /// Option `skip_damaged`: `error` skipped, counted and reported.
    fn skipped(&self, error: DataFusionError, until: &str) {
        self.metrics.damaged_stretches.add(1);
        crate::io::progress::add_damaged(1);
        warnings::warn(format!("{error}; skipped damaged data {until} (option skip_damaged)"));
    }
}

/// Whether the slice an index record describes may hold records overlapping `regions`.
fn indexed_overlap(record: &crai::Record, regions: &[Region], header: &CramHeader) -> bool {
    let span = match record.reference_sequence_id() {
        None => ContainerSpan::Unplaced,
        Some(id) => {
            let start = record.alignment_start().map_or(0, |p| usize::from(p) as u64);
            ContainerSpan::On { id, start, end: start + record.alignment_span() as u64 }
        }
    };
    span.may_overlap(regions, &header.file)
}
