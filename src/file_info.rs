//! What a scan knows about each BAM file before decoding records: its header (reference names
//! and lengths, where the records begin) and its `.bai`/`.csi` index, if one sits beside it.
//!
//! Loaded once per file ([`Catalog`], in DataFusion's runtime metadata cache), so every partition
//! and query that reads a file shares them until the file changes.

use std::any::Any;
use std::io::{BufRead, Read};
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::{CachedFileMetadataEntry, FileMetadata, FileMetadataCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::StreamExt;
use noodles_bgzf::VirtualPosition;
use noodles_cram::crai;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::cram::{read_cram_header, CramHeader, CRAM_MAGIC};
use crate::framing::{bgzf_reader, read_header, reader_at, show_virtual, FileContext};
use crate::index::{BamIndex, IndexKind};
use crate::io::{open_blocking_reader, ObjectBytes};
use crate::resync::plausible_record;
use crate::sam::{is_gzip, read_sam_text_header, SamHeader, SamLines};
use crate::warnings;

/// A BAM file's header facts and index.
pub struct FileInfo {
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

impl FileInfo {
    /// Reads the header and looks for an index. Blocking: call on a blocking thread.
    pub fn load(bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Self> {
        let path = meta.location.to_string();
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
                match mismatch(&index, &context, meta.size).or_else(|| unplausible_start(&index, bytes, &context)) {
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

/// A SAM file's header and, when it is BGZF-compressed (`.sam.gz`), the index beside it:
/// `x.sam.gz.bai` or `x.sam.gz.csi` (`samtools index`), or `x.sam.gz.tbi` (`tabix -p sam`).
pub struct SamInfo {
    pub header: Arc<SamHeader>,
    pub index: Option<Arc<BamIndex>>,
    /// What became of the index search, for messages.
    pub index_note: String,
}

impl SamInfo {
    /// Reads the header only (no index is looked for). Blocking: call on a blocking thread.
    pub fn header_only(bytes: &ObjectBytes, path: &str) -> Result<Self> {
        let mut lines = SamLines::open(path, bytes)?;
        let header = Arc::new(read_sam_text_header(path, &mut lines)?);
        Ok(Self { header, index: None, index_note: "none".to_string() })
    }

    /// Reads the header and looks for an index. Blocking: call on a blocking thread.
    pub fn load(bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Self> {
        let path = meta.location.to_string();
        let Self { header, .. } = Self::header_only(bytes, &path)?;
        if !header.bgzf {
            return Ok(Self { header, index: None, index_note: "none".to_string() });
        }
        let name = meta.location.as_ref();
        let candidates =
            [IndexKind::Bai, IndexKind::Csi, IndexKind::Tbi].map(|kind| (format!("{name}.{}", kind.extension()), kind));
        let Some((location, kind, _)) = find_index(bytes, candidates)? else {
            return Ok(Self { header, index: None, index_note: "none".to_string() });
        };
        let index = read_index(bytes, &location, kind, &header.file)?;
        match mismatch(&index, &header.file, meta.size) {
            Some(why) => {
                let note = format!("{location} ignored: {why}");
                warnings::warn(format!("SAM file {path}: index {note}; the file is read without it"));
                Ok(Self { header, index: None, index_note: note })
            }
            None => Ok(Self { header, index: Some(Arc::new(index)), index_note: location.to_string() }),
        }
    }
}

impl FileMetadata for SamInfo {
    fn as_any(&self) -> &dyn Any {
        self
    }

    /// The header text, about twice over for noodles' parsed header and the reference lists,
    /// and the index as for BAM files.
    fn memory_size(&self) -> usize {
        let names: usize = self.header.file.reference_names.iter().map(|n| n.len() + size_of::<String>()).sum();
        let index = self.index.as_ref().map_or(0, |i| 2 * i.memory_size());
        size_of::<Self>() + 3 * names + index + self.index_note.len()
    }

    fn extra_info(&self) -> datafusion::common::HashMap<String, String> {
        [("index".to_string(), self.index_note.clone())].into_iter().collect()
    }
}

/// A CRAM file's header and the `.crai` beside it (`x.cram.crai`, as samtools writes it, or
/// `x.crai`), if there is one that fits the file; one that does not is ignored with a warning.
pub struct CramInfo {
    pub header: Arc<CramHeader>,
    pub index: Option<crai::Index>,
}

impl CramInfo {
    /// Reads the header and looks for an index. Blocking: call on a blocking thread.
    pub fn load(bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Self> {
        let path = meta.location.as_ref();
        let header = Arc::new(read_cram_header(path, bytes.open_at(0)?)?);
        let stem = path.strip_suffix(".cram").unwrap_or(path);
        for candidate in [format!("{path}.crai"), format!("{stem}.crai")] {
            let location = Path::from(candidate);
            let (store, at) = (Arc::clone(&bytes.store), location.clone());
            let data = match bytes.wait(async move { store.get(&at).await?.bytes().await })? {
                Ok(data) => data,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(DataFusionError::Execution(format!("cannot read CRAM index {location}: {e}"))),
            };
            let index = match crai::io::Reader::new(data.as_ref()).read_index() {
                Ok(index) => index,
                Err(e) => {
                    warnings::warn(format!("CRAM index {location} is invalid ({e}); the file is read without it"));
                    return Ok(Self { header, index: None });
                }
            };
            let n_ref = header.file.reference_names.len();
            let misfit = index.iter().find(|r| {
                r.offset() < header.first_container
                    || r.offset() >= meta.size
                    || r.reference_sequence_id().is_some_and(|id| id >= n_ref)
            });
            if let Some(record) = misfit {
                warnings::warn(format!(
                    "CRAM file {path}: index {location} ignored: it names a container at byte {} for reference {:?}, \
                     which does not fit the file; the file is read without it",
                    record.offset(),
                    record.reference_sequence_id()
                ));
                return Ok(Self { header, index: None });
            }
            return Ok(Self { header, index: Some(index) });
        }
        Ok(Self { header, index: None })
    }
}

impl FileMetadata for CramInfo {
    fn as_any(&self) -> &dyn Any {
        self
    }

    /// The header's reference names, about three times over (noodles' parsed header, the
    /// reference lists), and the `.crai`'s records.
    fn memory_size(&self) -> usize {
        let names: usize = self.header.file.reference_names.iter().map(|n| n.len() + size_of::<String>()).sum();
        let index = self.index.as_ref().map_or(0, |i| i.len() * size_of::<crai::Record>());
        size_of::<Self>() + 3 * names + index
    }

    fn extra_info(&self) -> datafusion::common::HashMap<String, String> {
        let index = match &self.index {
            Some(index) => format!("{} containers", index.len()),
            None => "none".to_string(),
        };
        [("index".to_string(), index)].into_iter().collect()
    }
}

/// The SAM header of the BAM, CRAM or SAM file at `location` (told apart by their first bytes,
/// and a `.sam.gz` name from BAM, which is BGZF too).
pub async fn read_sam_header(store: &Arc<dyn ObjectStore>, location: &Path) -> Result<noodles_sam::Header> {
    let reader = open_blocking_reader(store, location).await?;
    let name = location.to_string();
    tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(reader);
        let head = reader.fill_buf().map(|head| head.get(..4).unwrap_or(head).to_vec()).unwrap_or_default();
        if head.starts_with(CRAM_MAGIC) {
            return read_cram_header(&name, reader).map(|h| h.header);
        }
        let sam_gz = is_gzip(&head) && name.to_ascii_lowercase().ends_with(".sam.gz");
        if sam_gz || head.first() == Some(&b'@') {
            let mut lines = SamLines::from_start(Box::new(reader), sam_gz);
            return read_sam_text_header(&name, &mut lines).map(|h| h.header);
        }
        let mut reader = bgzf_reader(&name, reader)?;
        read_header(&name, &mut reader).map(|h| h.header)
    })
    .await
    .map_err(|e| DataFusionError::Execution(format!("header reading task failed: {e}")))?
}

/// The first of the `candidates` (locations and their kind, in samtools' order of search) that
/// exists beside the file `bytes`.
fn find_index(
    bytes: &ObjectBytes,
    candidates: impl IntoIterator<Item = (String, IndexKind)>,
) -> Result<Option<(Path, IndexKind, ObjectMeta)>> {
    for (candidate, kind) in candidates {
        let location = Path::from(candidate);
        let (store, at) = (Arc::clone(&bytes.store), location.clone());
        match bytes.wait(async move { store.head(&at).await })? {
            Ok(found) => return Ok(Some((location, kind, found))),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(DataFusionError::Execution(format!("cannot look for index {location}: {e}"))),
        }
    }
    Ok(None)
}

/// Reads and parses the index at `location`, of a file whose header `context` describes.
fn read_index(bytes: &ObjectBytes, location: &Path, kind: IndexKind, context: &FileContext) -> Result<BamIndex> {
    let (store, at) = (Arc::clone(&bytes.store), location.clone());
    let data = bytes
        .wait(async move { store.get(&at).await?.bytes().await })?
        .map_err(|e| DataFusionError::Execution(format!("cannot read index {location}: {e}")))?;
    BamIndex::parse(kind, &data, &context.reference_names)
        .map_err(|e| DataFusionError::Execution(format!("index {location}: invalid {} index: {e}", kind.extension())))
}

/// Why `index` cannot belong to a file with this header and size, if it cannot.
fn mismatch(index: &BamIndex, context: &FileContext, size: u64) -> Option<String> {
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

/// Index positions checked against the BAM file when the index is loaded.
const CHECKED_INDEX_POSITIONS: usize = 8;

/// Why `index` does not fit the BAM file, if one of a few record starts it names is not a
/// plausible record (an index of an older version of the file, for example). Positions at the
/// end of the data are fine: a chunk end may be there.
fn unplausible_start(index: &BamIndex, bytes: &ObjectBytes, context: &FileContext) -> Option<String> {
    let path = bytes.location.to_string();
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

impl FileMetadata for FileInfo {
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

/// Bytes of file facts a [`Catalog`] keeps when no session's cache is given (DataFusion's default
/// `datafusion.runtime.metadata_cache_limit`).
const OWN_CACHE_BYTES: usize = 50 << 20;

/// Each file's facts, loaded once and shared by the partitions and queries that read the file.
/// They are kept in a DataFusion [`FileMetadataCache`]: the session runtime's (bounded by
/// `datafusion.runtime.metadata_cache_limit`, as Parquet footers are), keyed by path and checked
/// against the file's size and modification time, so a changed file is read again.
#[derive(Clone)]
pub struct Catalog {
    cache: Arc<FileMetadataCache>,
}

impl Default for Catalog {
    /// A catalog with a bounded cache of its own, for scans built without a session.
    fn default() -> Self {
        Self { cache: Arc::new(DefaultCache::new(OWN_CACHE_BYTES).with_name("BamFileInfoCache")) }
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Catalog({})", self.cache.name())
    }
}

impl Catalog {
    /// The catalog kept in `runtime`'s file metadata cache.
    pub fn of(runtime: &RuntimeEnv) -> Self {
        Self { cache: runtime.cache_manager.get_file_metadata_cache() }
    }

    /// The facts of `meta`'s BAM file, if loaded since it last changed.
    pub fn get(&self, meta: &ObjectMeta) -> Option<Arc<FileInfo>> {
        self.cached(meta)
    }

    /// The facts of one BAM file, loading them if needed. Blocking: call on a blocking thread.
    pub fn get_or_load(&self, bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Arc<FileInfo>> {
        self.cached_or_load(meta, || FileInfo::load(bytes, meta))
    }

    /// The header and index of one CRAM file, loading them if needed. Blocking: call on a
    /// blocking thread.
    pub fn cram_info(&self, bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Arc<CramInfo>> {
        self.cached_or_load(meta, || CramInfo::load(bytes, meta))
    }

    /// The header and index of one SAM file, loading them if needed. Blocking: call on a
    /// blocking thread.
    pub fn sam_info(&self, bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Arc<SamInfo>> {
        self.cached_or_load(meta, || SamInfo::load(bytes, meta))
    }

    fn cached<T: FileMetadata>(&self, meta: &ObjectMeta) -> Option<Arc<T>> {
        let entry = self.cache.get(&meta.location).filter(|e| e.is_valid_for(meta))?;
        let any: Arc<dyn Any + Send + Sync> = entry.file_metadata;
        any.downcast::<T>().ok()
    }

    /// `meta`'s entry of type `T` (a file read as BAM by one table and as SAM by another has
    /// the one last loaded).
    fn cached_or_load<T: FileMetadata>(&self, meta: &ObjectMeta, load: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        if let Some(info) = self.cached(meta) {
            return Ok(info);
        }
        let info = Arc::new(load()?);
        self.cache.put(&meta.location, CachedFileMetadataEntry::new(meta.clone(), Arc::clone(&info) as _));
        Ok(info)
    }

    /// Loads the facts of every file in `metas` (a few at a time).
    pub async fn load_all(&self, store: &Arc<dyn ObjectStore>, metas: Vec<ObjectMeta>) -> Result<()> {
        let handle = tokio::runtime::Handle::current();
        let loads = metas.into_iter().map(|meta| {
            let catalog = self.clone();
            let bytes = ObjectBytes {
                store: Arc::clone(store),
                location: meta.location.clone(),
                size: meta.size,
                handle: handle.clone(),
            };
            async move {
                tokio::task::spawn_blocking(move || catalog.get_or_load(&bytes, &meta).map(|_| ()))
                    .await
                    .map_err(|e| DataFusionError::Execution(format!("loading a BAM header failed: {e}")))?
            }
        });
        let results: Vec<Result<()>> = futures::stream::iter(loads).buffer_unordered(8).collect().await;
        results.into_iter().collect()
    }
}
