//! A BAM file's facts: its header (reference names and lengths, where the records begin) and
//! its `.bai`/`.csi` index, if one sits beside it and fits the file.

use std::any::Any;
use std::io::Read;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::FileMetadata;
use noodles_bgzf::VirtualPosition;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::bgzf::framing::{bgzf_reader, read_header, reader_at, show_virtual, FileContext, BGZF_EOF};
use crate::bgzf::index::{find_index, index_mismatch, read_index, BamIndex, IndexKind};
use crate::bgzf::resync::plausible_record;
use crate::error::BamError;
use crate::formats::catalog::FileFacts;
use crate::io::{warnings, ObjectBytes};

/// A BAM file's header facts and index.
pub struct BamInfo {
    pub context: Arc<FileContext>,
    /// The virtual position right after the header: where the first record starts.
    pub header_end: VirtualPosition,
    pub index: Option<Arc<BamIndex>>,
    /// What became of the index search, for `EXPLAIN`.
    pub index_note: String,
    /// Whether the index is at least as new as the BAM file. Only then do its record counts
    /// stand in for reading the file.
    pub index_is_current: bool,
}

impl FileFacts for BamInfo {
    /// Reads the header and looks for an index. Blocking: call on a blocking thread.
    fn load(bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Self> {
        let path = bytes.shown.clone();
        let mut reader = bgzf_reader(&path, bytes.open_at(0)?)?;
        let header = read_header(&path, &mut reader)?;
        let header_end = reader.virtual_position();
        let context = Arc::new(header.file);
        let name = meta.location.as_ref();
        let stem = name.strip_suffix(".bam").unwrap_or(name);
        let candidates = [IndexKind::Bai, IndexKind::Csi].into_iter().flat_map(|kind| {
            [(format!("{name}.{}", kind.extension()), kind), (format!("{stem}.{}", kind.extension()), kind)]
        });
        let (index, index_note, index_is_current) = match find_index(bytes, candidates)? {
            None => (None, "none".to_string(), false),
            Some((location, kind, index_meta)) => {
                let index = read_index(bytes, &location, kind, &context)?;
                match index_mismatch(&index, &context, meta.size).or_else(|| unplausible_start(&index, bytes, &context))
                {
                    // An index of another file is not trusted: the file is read without it.
                    Some(why) => {
                        let note = format!("{location} ignored: {why}");
                        warnings::warn(format!("BAM file {path}: index {note}; the file is read without it"));
                        (None, note, false)
                    }
                    None => {
                        (Some(Arc::new(index)), location.to_string(), index_meta.last_modified >= meta.last_modified)
                    }
                }
            }
        };
        Ok(Self { context, header_end, index, index_note, index_is_current })
    }
}

/// Index positions checked against the BAM file when the index is loaded.
const CHECKED_INDEX_POSITIONS: usize = 8;

/// Why `index` does not fit the BAM file, if one of a few record starts it names is not a
/// plausible record (an index of an older version of the file, for example). Positions at the
/// end of the data are fine: a chunk end may be there.
fn unplausible_start(index: &BamIndex, bytes: &ObjectBytes, context: &FileContext) -> Option<String> {
    let path = bytes.shown.clone();
    for at in index.sample_record_starts(CHECKED_INDEX_POSITIONS) {
        let show = || show_virtual(at);
        let record = reader_at(&path, bytes, at)
            .and_then(|(reader, _)| record_at(reader).map_err(|e| DataFusionError::Execution(e.to_string())));
        let data = match record {
            Ok(Some(data)) => data,
            // A record longer than what is read: not judged.
            Ok(None) => continue,
            Err(_) => return Some(format!("it points at {}, which cannot be read in the BAM file", show())),
        };
        if !data.is_empty() && plausible_record(&data, context).is_none() {
            return Some(format!("it names a record start at {}, where the BAM file has no record", show()));
        }
    }
    None
}

/// Bytes read at each checked index position: enough for any record but the longest reads.
const MAX_CHECKED_RECORD: u64 = 1 << 20;

/// The bytes of the record at `reader`'s position, with its `block_size`: only as many as it
/// says (empty at the end of the data). `None` when it says more than [`MAX_CHECKED_RECORD`]
/// and that much data follows.
fn record_at(mut reader: impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::with_capacity(4);
    (&mut reader).take(4).read_to_end(&mut data)?;
    let Ok(size) = <[u8; 4]>::try_from(data.as_slice()).map(|b| u64::from(u32::from_le_bytes(b))) else {
        return Ok(Some(data));
    };
    let read = reader.take(size.min(MAX_CHECKED_RECORD)).read_to_end(&mut data)? as u64;
    Ok((size <= MAX_CHECKED_RECORD || read < MAX_CHECKED_RECORD).then_some(data))
}

impl FileMetadata for BamInfo {
    fn as_any(&self) -> &dyn Any {
        self
    }

    /// Reference names and lengths, and the index's record starts and per-reference counts
    /// (noodles' own index structures are about as large again).
    fn memory_size(&self) -> usize {
        let names: usize = self.context.reference_names.iter().map(|n| n.len() + size_of::<String>()).sum();
        let lengths = self.context.reference_lengths.len() * size_of::<u64>();
        let index = self.index.as_ref().map_or(0, |i| 2 * i.memory_size());
        size_of::<Self>() + names + lengths + index + self.index_note.len()
    }

    fn extra_info(&self) -> datafusion::common::HashMap<String, String> {
        [("index".to_string(), self.index_note.clone())].into_iter().collect()
    }
}

/// A BAM file ends with the 28-byte BGZF EOF block. Without it the file was probably cut short
/// at a block boundary: as samtools does, its records are still read, with a warning. Blocking.
pub fn check_eof_marker(bytes: &ObjectBytes) -> Result<()> {
    let (path, size) = (&bytes.shown, bytes.size);
    let tail_start = size.saturating_sub(BGZF_EOF.len() as u64);
    let (store, at) = (Arc::clone(&bytes.store), bytes.location.clone());
    let tail = bytes
        .wait(async move { store.get_range(&at, tail_start..size).await })?
        .map_err(|e| BamError::store(path, e))?;
    if tail.as_ref() != BGZF_EOF {
        warnings::warn(format!(
            "BAM file {path}: the BGZF end-of-file block is missing at byte {tail_start}: the file is probably truncated; \
             its records were read up to byte {size}"
        ));
    }
    Ok(())
}
