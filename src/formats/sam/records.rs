//! The records a scan reads from a SAM file, plain or BGZF-compressed (`.sam.gz`).
//!
//! **Ownership rule, plain SAM.** A line belongs to the byte range `[start, end)` holding its
//! first byte, as DataFusion's CSV source splits lines: a range that starts mid-file skips the
//! line holding byte `start - 1` and reads the lines that start before `end`.
//!
//! **Ownership rule, `.sam.gz`.** Ranges meet at BGZF blocks: let `B(x)` be the first block at or
//! after byte `x`. A range that starts mid-file skips the line holding the first byte of
//! `B(start)` (read by the range before) and reads the lines whose virtual position is at most
//! `B(end):0` (so the line starting exactly there is its last), as Hadoop's text splits do. Both
//! neighbours find `B` the same way, so they meet exactly without an index.
//!
//! **Regions.** With an index beside a `.sam.gz` (`samtools index` writes `.bai`/`.csi`,
//! `tabix -p sam` writes `.tbi`) and regions pushed down, a range reads the index chunks of the
//! regions whose first block lies in it.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use noodles_bgzf::VirtualPosition;

use crate::bgzf::framing::{check_end_of_blocks, reader_at, FileContext};
use crate::bgzf::pieces::{select_pieces, Piece, ReadUntil, Selection};
use crate::bgzf::resync::first_block_at;
use crate::decode::reader::{RawBatch, RecordSource, ScanMetrics, BATCH_BYTE_BUDGET};
use crate::formats::sam::info::SamInfo;
use crate::formats::sam::lines::{sam_error, show_position, LineEncoder, SamHeader, SamLines};
use crate::io::warnings;
use crate::io::ObjectBytes;
use crate::options::region::Region;

/// A stretch of a SAM file's lines to read (positions are [`SamLines::offset`]s).
#[derive(Debug, Clone, Copy)]
struct Stretch {
    /// Where reading begins: a line start, or (with `skip_first`) inside the line to skip.
    from: u64,
    skip_first: bool,
    /// The last position at which a line of this stretch may start.
    last: u64,
    /// For index chunks (coordinate-sorted data): the stretch ends at the first record that
    /// sorts after this point.
    read_until: Option<ReadUntil>,
}

impl Stretch {
    /// Whether no line of the stretch can start within it (then it is not even opened: it may
    /// begin at the end of the file).
    fn is_empty(&self) -> bool {
        self.from > self.last || (self.skip_first && self.from == self.last)
    }
}

/// The record lines of one SAM file that a scan reads.
pub struct SamRecords {
    path: String,
    bytes: ObjectBytes,
    header: Arc<SamHeader>,
    stretches: VecDeque<Stretch>,
    /// The stretch being read, and its lines.
    current: Option<(Stretch, SamLines)>,
    encoder: LineEncoder,
    line: Vec<u8>,
    skip_damaged: bool,
    metrics: ScanMetrics,
    /// Progress counted up to this file byte of the current stretch.
    counted_to: u64,
    /// Bytes of closed stretches not yet counted.
    uncounted: u64,
}

impl SamRecords {
    /// The records of the SAM file `bytes` (header and index in `info`) that the byte range
    /// `[start, end)` holds; only those of `regions`, when given, are wanted.
    pub fn open(
        path: &str,
        bytes: ObjectBytes,
        info: &SamInfo,
        (start, end): (u64, u64),
        regions: Option<&[Region]>,
        skip_damaged: bool,
        metrics: ScanMetrics,
    ) -> Result<Self> {
        let header = Arc::clone(&info.header);
        let stretches: Vec<Stretch> = match header.bgzf {
            false => plain_stretch(&header, start, end).into_iter().collect(),
            true => match index_stretches(info, start, end, regions) {
                Some(stretches) => {
                    metrics.index_chunks.add(stretches.len());
                    stretches
                }
                None => bgzf_stretch(path, &bytes, &header, start, end)?.into_iter().collect(),
            },
        };
        let stretches = stretches.into_iter().filter(|s| !s.is_empty()).collect();
        Ok(Self {
            path: path.to_string(),
            bytes,
            header,
            stretches,
            current: None,
            encoder: LineEncoder::default(),
            line: Vec::new(),
            skip_damaged,
            metrics,
            counted_to: 0,
            uncounted: 0,
        })
    }

    /// What decoding needs of the file's header.
    pub fn file(&self) -> &Arc<FileContext> {
        &self.header.file
    }

    /// The lines of the next stretch, opened at its first line.
    fn open_stretch(&mut self, stretch: Stretch) -> Result<SamLines> {
        let mut lines = match self.header.bgzf {
            false => SamLines::plain(self.bytes.open_at(stretch.from)?, stretch.from),
            true => {
                let (reader, base) = reader_at(&self.path, &self.bytes, VirtualPosition::from(stretch.from))?;
                SamLines::bgzf(reader, base)
            }
        };
        if stretch.skip_first {
            lines.next_line(&self.path, &mut self.line)?;
        }
        self.counted_to = file_byte(&lines, lines.offset);
        Ok(lines)
    }

    /// Ends the current stretch, keeping its last bytes for the progress counters.
    fn close_stretch(&mut self) {
        if let Some((_, lines)) = self.current.take() {
            self.uncounted += file_byte(&lines, lines.offset).saturating_sub(self.counted_to);
        }
    }
}

/// The file byte a line position lies at (its BGZF block for compressed SAM).
fn file_byte(lines: &SamLines, at: u64) -> u64 {
    match lines.is_bgzf() {
        true => VirtualPosition::from(at).compressed(),
        false => at,
    }
}

/// The stretch of a plain SAM file in the byte range `[start, end)`.
fn plain_stretch(header: &SamHeader, start: u64, end: u64) -> Option<Stretch> {
    let last = end.checked_sub(1)?;
    // The records start at the header's end; before it, the line holding byte `start - 1`
    // belongs to the range before.
    let (from, skip_first) = if start <= header.header_end { (header.header_end, false) } else { (start - 1, true) };
    Some(Stretch { from, skip_first, last, read_until: None })
}

/// The stretch of a `.sam.gz` file in the byte range `[start, end)`, met at BGZF blocks.
fn bgzf_stretch(path: &str, bytes: &ObjectBytes, header: &SamHeader, start: u64, end: u64) -> Result<Option<Stretch>> {
    let block_at = |x: u64| {
        first_block_at(bytes.open_at(x)?, x, bytes.size)
            .map(|block| block.map(|b| u64::from(VirtualPosition::try_from((b, 0)).unwrap_or_default())))
            .map_err(|e| sam_error(path, format!("cannot find the first BGZF block after byte {x}: {e}")))
    };
    let (from, skip_first) = match start {
        0 => (header.header_end, false),
        _ => match block_at(start)? {
            None => return Ok(None),
            Some(block) if block < header.header_end => (header.header_end, false),
            Some(block) => (block, true),
        },
    };
    let last = match end >= bytes.size {
        true => u64::MAX,
        false => block_at(end)?.unwrap_or(u64::MAX),
    };
    Ok(Some(Stretch { from, skip_first, last, read_until: None }))
}

/// The index chunks of `regions` whose first block lies in `[start, end)`, when `info` has an
/// index that narrows the scan to them (`None`: read the range's lines).
fn index_stretches(info: &SamInfo, start: u64, end: u64, regions: Option<&[Region]>) -> Option<Vec<Stretch>> {
    let index = info.index.as_deref()?;
    let whole = Piece::whole_file(VirtualPosition::from(info.header.header_end));
    let pieces = match select_pieces(&info.header.file, Some(index), whole, Some(regions?)) {
        Selection::All(_) => return None,
        selection => selection.into_pieces(),
    };
    let stretches = pieces
        .into_iter()
        .filter(|p| (start..end).contains(&p.from.compressed()))
        .map(|p| Stretch {
            from: u64::from(p.from),
            skip_first: false,
            // A chunk ends where its last record ends: the line starting there is not in it.
            last: p.to.map_or(u64::MAX, |to| u64::from(to).saturating_sub(1)),
            read_until: p.read_until,
        })
        .collect();
    Some(stretches)
}

impl RecordSource for SamRecords {
    /// A record line's position: its text offset, or its virtual position in `.sam.gz`.
    type Position = u64;

    fn fill(&mut self, raw: &mut RawBatch<u64>, batch_size: usize) -> Result<bool> {
        raw.clear();
        while raw.ends.len() < batch_size && raw.data.len() < BATCH_BYTE_BUDGET {
            let (stretch, lines) = match &mut self.current {
                Some(current) => current,
                None => {
                    let Some(stretch) = self.stretches.pop_front() else { return Ok(false) };
                    let lines = self.open_stretch(stretch)?;
                    self.current.insert((stretch, lines))
                }
            };
            let at = lines.offset;
            if at > stretch.last {
                self.close_stretch();
                continue;
            }
            if !lines.next_line(&self.path, &mut self.line)? {
                if lines.is_bgzf() {
                    check_end_of_blocks(&self.path, VirtualPosition::from(lines.offset), self.bytes.size)?;
                }
                self.close_stretch();
                continue;
            }
            if self.line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if self.line.first() == Some(&b'@') {
                return Err(sam_error(&self.path, format!("a header line follows records, at {}", lines.show(at))));
            }
            let from = raw.data.len();
            match self.encoder.encode(&self.header.header, &self.line, &mut raw.data) {
                Ok(()) if stretch.read_until.is_some_and(|until| until.is_passed_by(&raw.data[from..])) => {
                    raw.data.truncate(from);
                    self.close_stretch();
                }
                Ok(()) => {
                    raw.ends.push(raw.data.len());
                    raw.starts.push(at);
                }
                Err(e) => {
                    raw.data.truncate(from);
                    let error = sam_error(&self.path, format!("invalid record at {}: {e}", lines.show(at)));
                    if !self.skip_damaged {
                        return Err(error);
                    }
                    self.metrics.damaged_records.add(1);
                    crate::io::progress::add_damaged(1);
                    warnings::warn(format!("{error}; record skipped (option skip_damaged)"));
                }
            }
        }
        Ok(true)
    }

    fn invalid(&self, at: u64, e: crate::record::RecordError) -> DataFusionError {
        sam_error(&self.path, format!("invalid record at {}: {e}", show_position(self.header.bgzf, at)))
    }

    fn bytes_read(&mut self) -> u64 {
        let mut read = std::mem::take(&mut self.uncounted);
        if let Some((_, lines)) = &self.current {
            let reached = file_byte(lines, lines.offset);
            read += reached.saturating_sub(self.counted_to);
            self.counted_to = self.counted_to.max(reached);
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt};

    use super::*;
    use crate::bgzf::framing::BGZF_EOF;
    use crate::record::RawRecord;

    /// A `.sam.gz` whose BGZF blocks end inside the header, at a line's end, inside a line, and
    /// with an empty block mid-file; its record names in order.
    fn awkward_sam_gz() -> (Vec<u8>, Vec<String>) {
        let names: Vec<String> = (0..12).map(|i| format!("r{i}")).collect();
        let line = |i: usize| format!("{}\t4\t*\t0\t0\t*\t*\t0\t0\tACGT\tIIII\n", names[i]);
        let mut writer = noodles_bgzf::io::Writer::new(Vec::new());
        let cut = |writer: &mut noodles_bgzf::io::Writer<Vec<u8>>, text: &str| {
            writer.write_all(text.as_bytes()).unwrap();
            writer.flush().unwrap();
        };
        cut(&mut writer, "@HD\tVN:1.6\n@SQ\tSN:ch");
        cut(&mut writer, "r1\tLN:1000\n");
        cut(&mut writer, &(line(0) + &line(1)));
        let third = line(2);
        cut(&mut writer, &third[..5]);
        cut(&mut writer, &(third[5..].to_string() + &line(3) + &line(4)));
        // A second bgzip output after the first, end-of-file block included, as `cat` joins them.
        let mut data = writer.finish().unwrap();
        let mut writer = noodles_bgzf::io::Writer::new(Vec::new());
        cut(&mut writer, &(line(5) + &line(6) + &line(7)[..1]));
        cut(&mut writer, &line(7)[1..]);
        cut(&mut writer, &(8..12).map(line).collect::<String>());
        data.extend(writer.finish().unwrap());
        assert_eq!(data.windows(BGZF_EOF.len()).filter(|w| *w == BGZF_EOF).count(), 2);
        (data, names)
    }

    /// The record names the ranges `[cuts[i], cuts[i + 1])` read, in order.
    fn read_ranges(bytes: &ObjectBytes, cuts: &[u64]) -> Result<Vec<String>> {
        let info = SamInfo::header_only(bytes, "x.sam.gz")?;
        let mut names = Vec::new();
        for range in cuts.windows(2) {
            let metrics = ScanMetrics::new(&datafusion::physical_plan::metrics::ExecutionPlanMetricsSet::new(), 0);
            let mut records =
                SamRecords::open("x.sam.gz", bytes.clone(), &info, (range[0], range[1]), None, false, metrics)?;
            let mut raw = RawBatch::default();
            loop {
                let more = records.fill(&mut raw, 3)?;
                let mut from = 0;
                for &end in &raw.ends {
                    let record = RawRecord::parse(&raw.data[from..end], 0).unwrap();
                    names.push(String::from_utf8_lossy(record.name()).into_owned());
                    from = end;
                }
                if !more {
                    break;
                }
            }
        }
        Ok(names)
    }

    #[test]
    fn ranges_met_at_blocks_read_every_line_once() {
        let (data, names) = awkward_sam_gz();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = Arc::new(InMemory::new());
        let size = data.len() as u64;
        runtime.block_on(store.put(&Path::from("x.sam.gz"), data.into())).unwrap();
        let bytes = ObjectBytes {
            store: store as Arc<dyn ObjectStore>,
            location: Path::from("x.sam.gz"),
            shown: "memory:///x.sam.gz".to_string(),
            size,
            handle: runtime.handle().clone(),
        };
        assert_eq!(read_ranges(&bytes, &[0, size]).unwrap(), names);
        // Two ranges cut at every byte, and three at pairs of bytes.
        for x in 1..size {
            assert_eq!(read_ranges(&bytes, &[0, x, size]).unwrap(), names, "cut at byte {x}");
        }
        for x in (1..size).step_by(7) {
            for y in (x..size).step_by(5) {
                assert_eq!(read_ranges(&bytes, &[0, x, y, size]).unwrap(), names, "cuts at bytes {x} and {y}");
            }
        }
    }
}
