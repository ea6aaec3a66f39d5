//! The records of a BAM byte range: BGZF inflation (libdeflate, CRC-checked) is noodles'; this
//! module frames records by their `block_size`, verifies that a range ends exactly at the next
//! range's first record, and turns every failure into an error naming the file and the virtual
//! offset (`compressed:uncompressed`) of the record.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use noodles_bgzf as bgzf;

use crate::bgzf::framing::{
    absolute, append_record_at, check_end_of_blocks, error_at, positions_before_record, reader_at, show_virtual,
    FileContext, FileReader,
};
use crate::bgzf::pieces::{BoundaryOrigin, Piece};
use crate::bgzf::resync::find_first_record;
use crate::decode::reader::{DecodeSpec, RawBatch, RecordSource, ScanMetrics, BATCH_BYTE_BUDGET};
use crate::error::BamError;
use crate::io::{progress, warnings, ObjectBytes};

/// The reader of the piece being read.
struct Current {
    reader: FileReader,
    base: u64,
    piece: Piece,
    last_block: u64,
    /// File offset up to which compressed bytes were counted.
    counted_to: u64,
    /// The block where the record being read (or looked for) starts: after damage, reading
    /// resumes at the first record found after it.
    reading_block: u64,
}

/// What reading one record did.
enum Step {
    Record,
    /// The current piece ended: `at` is the position before the next block was loaded, `next`
    /// the record start after it.
    PieceEnded {
        piece: Piece,
        at: bgzf::VirtualPosition,
        next: Option<bgzf::VirtualPosition>,
    },
    NoMorePieces,
}

/// The records of some pieces of one BAM file.
pub struct BamRecords {
    path: String,
    bytes: ObjectBytes,
    pieces: VecDeque<Piece>,
    current: Option<Current>,
    file: Arc<FileContext>,
    skip_damaged: bool,
    metrics: ScanMetrics,
    /// Compressed bytes read and not yet reported by `bytes_read`.
    unreported: u64,
}

impl BamRecords {
    /// The records of `pieces` of the BAM file `bytes`.
    pub fn new(
        path: &str,
        bytes: ObjectBytes,
        pieces: Vec<Piece>,
        file: &Arc<FileContext>,
        spec: &DecodeSpec<'_>,
        metrics: ScanMetrics,
    ) -> Self {
        Self {
            path: path.to_string(),
            bytes,
            pieces: pieces.into(),
            current: None,
            file: Arc::clone(file),
            skip_damaged: spec.skip_damaged,
            metrics,
            unreported: 0,
        }
    }
}

impl RecordSource for BamRecords {
    type Position = bgzf::VirtualPosition;

    fn fill(&mut self, raw: &mut RawBatch<Self::Position>, batch_size: usize) -> Result<bool> {
        raw.clear();
        while raw.ends.len() < batch_size && raw.data.len() < BATCH_BYTE_BUDGET {
            match self.read_record(raw) {
                Ok(Step::Record) => {}
                Ok(Step::PieceEnded { piece, at, next }) => {
                    if let (Some(to), Some(origin)) = (piece.to, &piece.boundary_from) {
                        if at != to && next != Some(to) {
                            return Err(misplaced_boundary(&self.path, to, next, origin));
                        }
                    }
                }
                Ok(Step::NoMorePieces) => return Ok(false),
                Err(e) if self.skip_damaged => self.skip_damaged_data(e)?,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn invalid(&self, at: Self::Position, e: crate::record::RecordError) -> DataFusionError {
        error_at(&self.path, at, format!("invalid record: {e}"))
    }

    fn bytes_read(&mut self) -> u64 {
        let mut bytes = std::mem::take(&mut self.unreported);
        if let Some(cur) = &mut self.current {
            bytes += cur.advance(absolute(cur.base, cur.reader.virtual_position()).compressed());
        }
        bytes
    }
}

impl BamRecords {
    /// Reads the next record of the current piece (opening the next piece if needed) into
    /// `raw`. Every error is damage in the file.
    fn read_record(&mut self, raw: &mut RawBatch<bgzf::VirtualPosition>) -> Result<Step> {
        if self.current.is_none() {
            let Some(piece) = self.pieces.pop_front() else { return Ok(Step::NoMorePieces) };
            match Current::open(&self.path, &self.bytes, piece.clone()) {
                Ok(cur) => self.current = Some(cur),
                Err(e) => {
                    // Kept, so that skipping damage knows where this piece was going.
                    self.pieces.push_front(piece);
                    return Err(e);
                }
            }
        }
        let cur = self.current.as_mut().expect("a piece was opened above");
        let (at, start) = positions_before_record(&self.path, cur.base, &mut cur.reader)?;
        if start.is_none() && cur.piece.to.is_none() {
            check_end_of_blocks(&self.path, at, self.bytes.size)?;
        }
        let ended = match (cur.piece.to, start) {
            (_, None) => true,
            (Some(to), Some(start)) => at >= to || start >= to,
            (None, Some(_)) => false,
        };
        if ended {
            let piece = self.close_piece(at.compressed());
            return Ok(Step::PieceEnded { piece, at, next: start });
        }
        let start = start.expect("not at the end of the data");
        cur.reading_block = start.compressed();
        if start.compressed() != cur.last_block {
            self.metrics.bgzf_blocks.add(1);
            cur.last_block = start.compressed();
        }
        let record_from = raw.data.len();
        if let Err(e) = append_record_at(&self.path, start, &mut cur.reader, &mut raw.data) {
            raw.data.truncate(record_from);
            return Err(e);
        }
        if cur.piece.read_until.is_some_and(|until| until.is_passed_by(&raw.data[record_from..])) {
            raw.data.truncate(record_from);
            let read_to = absolute(cur.base, cur.reader.virtual_position()).compressed();
            // Stopped before the piece's end: there is no boundary to verify.
            let piece = Piece { boundary_from: None, ..self.close_piece(read_to) };
            return Ok(Step::PieceEnded { piece, at: start, next: Some(start) });
        }
        raw.ends.push(raw.data.len());
        raw.starts.push(start);
        let end_block = absolute(cur.base, cur.reader.virtual_position()).compressed();
        if end_block != cur.last_block {
            self.metrics.bgzf_blocks.add(1);
            cur.last_block = end_block;
        }
        Ok(Step::Record)
    }

    /// Drops the current piece's reader, counting the compressed bytes read up to `offset`.
    fn close_piece(&mut self, offset: u64) -> Piece {
        let mut cur = self.current.take().expect("a current piece");
        self.unreported += cur.advance(offset);
        cur.piece
    }

    /// Option `skip_damaged`: after `error` in the current piece, goes on at the first record
    /// found (as a partition boundary is found) in a sound block after the damaged one, within
    /// the piece. Records in between are lost; the stretch is counted and reported.
    fn skip_damaged_data(&mut self, error: DataFusionError) -> Result<()> {
        let (piece, damaged_block) = match self.current.take() {
            Some(cur) => (cur.piece, cur.reading_block),
            None => {
                let piece = self.pieces.pop_front().expect("the piece that failed to open");
                let block = piece.from.compressed();
                (piece, block)
            }
        };
        let resume = self.first_record_between(damaged_block + 1, piece.to)?;
        self.metrics.damaged_stretches.add(1);
        progress::add_damaged(1);
        let until = match resume {
            Some(v) => show_virtual(v),
            None => "the end of this partition".to_string(),
        };
        warnings::warn(format!("{error}; skipped damaged data up to {until} (option skip_damaged)"));
        if let Some(from) = resume {
            self.pieces.push_front(Piece { from, ..piece });
        }
        Ok(())
    }

    /// The first record starting in a sound block at or after byte `from`, if one comes before
    /// `to`. A search that runs into more damage looks again one block-size further on.
    fn first_record_between(
        &self,
        mut from: u64,
        to: Option<bgzf::VirtualPosition>,
    ) -> Result<Option<bgzf::VirtualPosition>> {
        let limit = to.map_or(self.bytes.size, |t| t.compressed() + 1);
        while from < limit {
            if let Ok(found) = find_first_record(self.bytes.open_at(from)?, from, self.bytes.size, &self.file) {
                return Ok(found.filter(|v| to.is_none_or(|t| *v < t)));
            }
            from += 1 << 16;
        }
        Ok(None)
    }
}

impl Current {
    fn open(path: &str, bytes: &ObjectBytes, piece: Piece) -> Result<Self> {
        let (reader, base) = reader_at(path, bytes, piece.from)?;
        let from = piece.from.compressed();
        Ok(Self { reader, base, last_block: u64::MAX, counted_to: from, reading_block: from, piece })
    }

    /// Moves the count of compressed bytes read up to `offset`; returns the bytes added.
    fn advance(&mut self, offset: u64) -> u64 {
        let added = offset.saturating_sub(self.counted_to);
        self.counted_to = self.counted_to.max(offset);
        added
    }
}

fn misplaced_boundary(
    path: &str,
    to: bgzf::VirtualPosition,
    stop: Option<bgzf::VirtualPosition>,
    origin: &BoundaryOrigin,
) -> DataFusionError {
    let show = |v: Option<bgzf::VirtualPosition>| v.map_or("the end of the file".to_string(), show_virtual);
    let advice = match origin {
        BoundaryOrigin::Index(_) => "The index does not fit this file: rebuild it (samtools index) or remove it.",
        BoundaryOrigin::RecordSearch(_) => {
            "Disable splitting for this table (OPTIONS ('split' 'false')) and report the file."
        }
    };
    let reason = format!(
        "a partition boundary was misplaced: reading on from the previous partition reaches {}, but {origin} chose {}. \
         {advice}",
        show(stop),
        show(Some(to))
    );
    BamError::damaged(path, "", reason).into()
}
