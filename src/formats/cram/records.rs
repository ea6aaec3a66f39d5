//! The records a scan reads from a CRAM file: the containers that start in its byte range (a
//! container belongs to the range holding its first byte, as a BAM record does), listed by the
//! `.crai` beside the file or found by walking the container headers from the first; region
//! scans skip the containers whose reference span cannot overlap the regions. noodles-cram
//! decodes them, or htslib with feature `htslib`.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use noodles_cram::crai;

use crate::bgzf::framing::FileContext;
use crate::decode::reader::{RawBatch, RecordSource, ScanMetrics, BATCH_BYTE_BUDGET};
#[cfg(feature = "htslib")]
use crate::error::BamError;
use crate::formats::cram::container::{cram_error, ContainerReader, CramHeader, CramPosition, Reference};
use crate::formats::cram::head::{read_head, ContainerHead, ContainerSpan};
use crate::io::warnings;
use crate::io::ObjectBytes;
use crate::options::region::Region;

/// Which containers a scan reads.
enum Containers {
    /// Every container from the first one, decoding those that start in `[start, end)`: the
    /// headers before `start` are read, their bodies jumped over.
    Walk { next: u64, start: u64, end: u64 },
    /// These containers (from the index), in file order.
    Listed(VecDeque<u64>),
}

/// What decodes the containers' records: noodles-cram, from the object store's bytes; or, with
/// feature `htslib` and a local file, htslib, with noodles-cram for the containers htslib cannot
/// decode as built here (LZMA blocks: hts-sys's `lzma` feature and DataFusion's `liblzma` link the
/// same C library, which cargo refuses).
struct Decoder {
    noodles: Option<ContainerReader>,
    encoder: noodles_bam::io::Writer<Vec<u8>>,
    #[cfg(feature = "htslib")]
    htslib: Option<Option<crate::formats::cram::htslib::HtslibCram>>,
}

/// The records of the containers of one CRAM file that a scan reads.
pub struct CramRecords {
    path: String,
    bytes: ObjectBytes,
    header: Arc<CramHeader>,
    reference: Reference,
    containers: Containers,
    decoder: Decoder,
    regions: Option<Arc<[Region]>>,
    skip_damaged: bool,
    metrics: ScanMetrics,
    /// Bytes of the containers handled that are not yet counted as read.
    uncounted: u64,
    #[cfg(feature = "htslib")]
    required_fields: u32,
}

/// What a CRAM scan reads of a file.
pub struct CramScan {
    pub reference: Reference,
    /// The `[start, end)` byte range of the partition.
    pub range: (u64, u64),
    pub regions: Option<Arc<[Region]>>,
    pub skip_damaged: bool,
    /// The SAM fields htslib decodes (`htslib::required_fields`).
    #[cfg(feature = "htslib")]
    pub required_fields: u32,
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
            None => Containers::Walk { next: header.first_container, start: start.max(header.first_container), end },
        };
        Self {
            path: path.to_string(),
            decoder: Decoder::new(&bytes),
            bytes,
            header,
            reference: scan.reference,
            containers,
            regions: scan.regions,
            skip_damaged: scan.skip_damaged,
            metrics,
            uncounted: 0,
            #[cfg(feature = "htslib")]
            required_fields: scan.required_fields,
        }
    }

    /// The header of the next container the scan decodes; `None` after the last.
    fn next_head(&mut self) -> Result<Option<ContainerHead>> {
        loop {
            let head = match &mut self.containers {
                Containers::Walk { next, start, end } => {
                    let Some(head) = head_at(&self.path, &self.bytes, &mut self.decoder, *next)? else {
                        warnings::warn(format!(
                            "CRAM file {}: the end-of-file container is missing at byte {next}: the file is \
                             probably truncated; its records were read up to there",
                            self.path
                        ));
                        return Ok(None);
                    };
                    if head.is_eof || head.offset >= *end {
                        return Ok(None);
                    }
                    *next = head.end;
                    if head.offset < *start {
                        continue;
                    }
                    head
                }
                Containers::Listed(offsets) => {
                    let Some(offset) = offsets.pop_front() else { return Ok(None) };
                    match head_at(&self.path, &self.bytes, &mut self.decoder, offset)? {
                        Some(head) if !head.is_eof => head,
                        _ => {
                            return Err(cram_error(
                                &self.path,
                                format!(
                                    "its index names a container at byte {offset}, where the file has none: \
                                     rebuild the index (samtools index) or remove it"
                                ),
                            ))
                        }
                    }
                }
            };
            self.uncounted += head.end - head.offset;
            if head.records == 0
                || self.regions.as_deref().is_some_and(|regions| !head.span.may_overlap(regions, &self.header.file))
            {
                continue;
            }
            return Ok(Some(head));
        }
    }

    /// Appends the records of the container `head` to `raw`.
    fn decode(&mut self, head: &ContainerHead, raw: &mut RawBatch<CramPosition>) -> Result<()> {
        #[cfg(feature = "htslib")]
        if let Some(htslib) = &mut self.decoder.htslib {
            let htslib = match htslib {
                Some(decoder) => decoder,
                None => htslib.insert(crate::formats::cram::htslib::HtslibCram::open(
                    &self.path,
                    &self.bytes.shown,
                    &self.reference,
                    self.required_fields,
                )?),
            };
            let (records, data) = (raw.ends.len(), raw.data.len());
            let decoded =
                htslib.decode_into(&self.bytes, head, &self.header, &self.reference, &mut raw.data, &mut raw.ends);
            let failure = match decoded {
                Ok(()) => return Ok(()),
                Err(e) if matches!(BamError::find(&e), Some(BamError::MissingReference { .. })) => return Err(e),
                Err(e) => e,
            };
            raw.data.truncate(data);
            raw.ends.truncate(records);
            return self.decode_with_noodles(head, raw).map_err(|_| failure);
        }
        self.decode_with_noodles(head, raw)
    }

    /// Appends the records of the container `head`, decoded by noodles-cram, to `raw`.
    fn decode_with_noodles(&mut self, head: &ContainerHead, raw: &mut RawBatch<CramPosition>) -> Result<()> {
        let Decoder { noodles, encoder, .. } = &mut self.decoder;
        if noodles.as_ref().is_none_or(|r| r.position() != head.offset) {
            *noodles = Some(ContainerReader::at(&self.path, &self.bytes, head.offset)?);
        }
        let reader = noodles.as_mut().expect("opened above");
        reader.read(head)?;
        reader.decode_into(&self.header, &self.reference, encoder, &mut raw.data, &mut raw.ends)
    }
}

/// The header of the container at byte `offset` of `bytes`: from the noodles reader's stream when
/// it stands there (a remote file then needs no request per container), else read on its own.
fn head_at(path: &str, bytes: &ObjectBytes, decoder: &mut Decoder, offset: u64) -> Result<Option<ContainerHead>> {
    if let Some(reader) = decoder.noodles.as_mut().filter(|r| r.position() == offset) {
        if let Some(head) = reader.buffered_head(bytes.size) {
            return Ok(Some(head));
        }
    }
    read_head(path, bytes, offset)
}

impl Decoder {
    /// htslib for a local file when the feature is on, noodles otherwise.
    #[cfg_attr(not(feature = "htslib"), allow(unused_variables))]
    fn new(bytes: &ObjectBytes) -> Self {
        Self {
            noodles: None,
            encoder: noodles_bam::io::Writer::from(Vec::new()),
            #[cfg(feature = "htslib")]
            htslib: crate::formats::cram::htslib::HtslibCram::can_read(bytes).then_some(None),
        }
    }
}

impl RecordSource for CramRecords {
    type Position = CramPosition;

    fn fill(&mut self, raw: &mut RawBatch<CramPosition>, batch_size: usize) -> Result<bool> {
        raw.clear();
        while raw.ends.len() < batch_size && raw.data.len() < BATCH_BYTE_BUDGET {
            let head = match self.next_head() {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(false),
                // A container header that cannot be read ends the partition: the next one cannot
                // be found.
                Err(e) if self.skip_damaged => {
                    self.skipped(e, "up to the end of this partition");
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
            let first = raw.ends.len();
            let from = raw.data.len();
            match self.decode(&head, raw) {
                Ok(()) => {
                    let offset = head.offset;
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
        std::mem::take(&mut self.uncounted)
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
