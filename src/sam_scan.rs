//! The records a scan reads from a SAM file: the lines that start in its byte range (a line
//! belongs to the range holding its first byte, as DataFusion's CSV source splits lines). A
//! BGZF-compressed `.sam.gz` is read whole by the partition whose range starts the file.

use datafusion::common::{DataFusionError, Result};

use std::io::{BufRead, BufReader};
use std::sync::Arc;

use crate::framing::FileContext;
use crate::io::ObjectBytes;
use crate::sam::{is_gzip, read_sam_text_header, sam_error, LineEncoder, SamHeader, SamLines};
use crate::scan::{RawBatch, RecordSource, ScanMetrics, BATCH_BYTE_BUDGET};
use crate::warnings;

/// The record lines of one SAM file that a scan reads.
pub struct SamRecords {
    path: String,
    header: Arc<SamHeader>,
    lines: Option<SamLines>,
    /// Lines starting at or after this text offset belong to the next range.
    end: u64,
    encoder: LineEncoder,
    line: Vec<u8>,
    skip_damaged: bool,
    metrics: ScanMetrics,
    /// Whether the text offsets are file offsets (plain SAM), for the progress counters.
    plain: bool,
    counted_to: u64,
}

impl SamRecords {
    /// The records of the SAM file `bytes` in the byte range `[start, end)`, its header read
    /// first.
    pub fn open(
        path: &str,
        bytes: &ObjectBytes,
        (start, end): (u64, u64),
        skip_damaged: bool,
        metrics: ScanMetrics,
    ) -> Result<Self> {
        // One stream tells gzip from text, gives the header, and (for the range holding the
        // first record) goes on with the records.
        let mut first = BufReader::new(bytes.open_at(0)?);
        let head = first.fill_buf().map_err(|e| sam_error(path, format!("cannot read it: {e}")))?;
        let bgzf = is_gzip(head);
        let mut after_header = SamLines::new(Box::new(first), 0, bgzf);
        let header = Arc::new(read_sam_text_header(path, &mut after_header)?);
        let lines = match (bgzf, start) {
            // The partition that starts the file reads all of it.
            (true, 0) => Some(after_header),
            (true, _) => None,
            // Nothing after the header, or the range ends before the records start.
            (false, _) if header.header_end >= bytes.size || end <= header.header_end => None,
            (false, _) if start <= header.header_end => Some(after_header),
            (false, _) => {
                // The line holding byte `start - 1` belongs to the range before.
                let mut lines = SamLines::new(bytes.open_at(start - 1)?, start - 1, false);
                lines.next_line(path, &mut Vec::new())?;
                Some(lines)
            }
        };
        let counted_to = lines.as_ref().map_or(0, |l| l.offset);
        Ok(Self {
            path: path.to_string(),
            header,
            lines,
            end: if bgzf { u64::MAX } else { end },
            encoder: LineEncoder::default(),
            line: Vec::new(),
            skip_damaged,
            metrics,
            plain: !bgzf,
            counted_to,
        })
    }
}

impl SamRecords {
    /// What decoding needs of the file's header.
    pub fn file(&self) -> &Arc<FileContext> {
        &self.header.file
    }
}

impl RecordSource for SamRecords {
    /// The text offset of a record's line.
    type Position = u64;

    fn fill(&mut self, raw: &mut RawBatch<u64>, batch_size: usize) -> Result<bool> {
        raw.clear();
        let Some(lines) = &mut self.lines else { return Ok(false) };
        while raw.ends.len() < batch_size && raw.data.len() < BATCH_BYTE_BUDGET {
            let at = lines.offset;
            if at >= self.end || !lines.next_line(&self.path, &mut self.line)? {
                return Ok(false);
            }
            if self.line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if self.line.first() == Some(&b'@') {
                return Err(sam_error(&self.path, format!("a header line follows records, at text byte {at}")));
            }
            let from = raw.data.len();
            match self.encoder.encode(&self.header.header, &self.line, &mut raw.data) {
                Ok(()) => {
                    raw.ends.push(raw.data.len());
                    raw.starts.push(at);
                }
                Err(e) => {
                    raw.data.truncate(from);
                    let error = sam_error(&self.path, format!("invalid record at text byte {at}: {e}"));
                    if !self.skip_damaged {
                        return Err(error);
                    }
                    self.metrics.damaged_records.add(1);
                    crate::progress::add_damaged(1);
                    warnings::warn(format!("{error}; record skipped (option skip_damaged)"));
                }
            }
        }
        Ok(true)
    }

    fn invalid(&self, at: u64, e: crate::record::RecordError) -> DataFusionError {
        sam_error(&self.path, format!("invalid record at text byte {at}: {e}"))
    }

    fn bytes_read(&mut self) -> u64 {
        let Some(lines) = self.lines.as_ref().filter(|_| self.plain) else { return 0 };
        let read = lines.offset.saturating_sub(self.counted_to);
        self.counted_to = self.counted_to.max(lines.offset);
        read
    }
}
