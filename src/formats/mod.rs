//! The alignment formats. Each folder reads one format's header and index and exports one
//! record source that yields BAM record bytes to the batch reader. This module is the one place
//! that dispatches on [`AlignmentFormat`]: the opener, schema inference and planning ask it.

pub mod bam;
pub mod catalog;
pub mod cram;
pub mod sam;

use std::io::BufRead;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};

use crate::bgzf::framing::{bgzf_reader, read_header, FileContext};
use crate::decode::infer::{resolve, sample_source, sample_tags, SampleBudget, TagCounts};
use crate::decode::pushdown::Prefilter;
use crate::decode::reader::{BatchReader, DecodeSpec, RecordSource, ScanMetrics};
use crate::error::BamError;
use crate::io::progress::Tally;
use crate::io::{open_blocking_reader, ObjectBytes};
use crate::options::region::{Region, RegionReference};
use crate::options::{AlignmentFormat, BamOptions, TagSelection};
use crate::schema::{predefined_kind, TagLayout};
use bam::info::BamInfo;
use bam::records::BamRecords;
use catalog::Catalog;
use cram::container::{read_cram_header, Reference, CRAM_MAGIC};
use cram::info::CramInfo;
use cram::records::{CramRecords, CramScan};
use sam::info::SamInfo;
use sam::lines::{is_gzip, read_sam_text_header, SamLines};
use sam::records::SamRecords;

/// Arrow batches of one byte range of one file.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch>>>;

/// One byte range `[start, end)` of one file, to be decoded into batches.
pub struct RangeScan<'a> {
    pub bytes: ObjectBytes,
    pub meta: &'a ObjectMeta,
    pub range: (u64, u64),
    /// The regions the pushed-down predicate confines records to.
    pub regions: Option<&'a Arc<[Region]>>,
    pub catalog: &'a Catalog,
    /// The reference FASTA of a CRAM scan (opened once for all partitions by the caller).
    pub reference: &'a dyn Fn() -> Result<Reference>,
    pub spec: DecodeSpec<'a>,
    /// The decoder's own filter for a file with this header.
    pub prefilter: &'a dyn Fn(&FileContext) -> Result<Option<Prefilter>>,
    pub metrics: ScanMetrics,
    pub memory: Option<MemoryReservation>,
    /// The caller's progress counters, besides the process's.
    pub tally: Option<Arc<Tally>>,
}

/// The batches of `scan`'s range of a file of `format`. Blocking: call on a blocking thread.
pub fn read_range(format: AlignmentFormat, scan: RangeScan<'_>) -> Result<Batches> {
    let path = scan.bytes.shown.clone();
    let (start, end) = scan.range;
    let skip_damaged = scan.spec.skip_damaged;
    let partition = scan.metrics.clone();
    let accounting = Accounting { metrics: scan.metrics.clone(), memory: scan.memory, tally: scan.tally };
    match format {
        AlignmentFormat::Bam => {
            // Only the range holding the file's end checks for the BGZF end-of-file block.
            if end >= scan.meta.size {
                bam::info::check_eof_marker(&scan.bytes)?;
            }
            let info = scan.catalog.load::<BamInfo>(&scan.bytes, scan.meta)?;
            let regions = scan.regions.map(|r| &r[..]);
            let selection = bam::partition::plan_range(&path, &scan.bytes, &info, start, end, regions)?;
            scan.metrics.index_chunks.add(selection.index_chunks());
            let prefilter = (scan.prefilter)(&info.context)?;
            let records =
                BamRecords::new(&path, scan.bytes, selection.into_pieces(), &info.context, &scan.spec, partition);
            batches(records, &info.context, scan.spec, prefilter, accounting)
        }
        AlignmentFormat::Cram => {
            let cram = CramScan {
                reference: (scan.reference)()?,
                range: (start, end),
                regions: scan.regions.cloned(),
                skip_damaged,
                #[cfg(feature = "htslib")]
                required_fields: cram::htslib::required_fields(
                    scan.spec.projection.iter().map(|&i| scan.spec.table_schema.field(i).name().as_str()),
                ),
            };
            let info = scan.catalog.load::<CramInfo>(&scan.bytes, scan.meta)?;
            let header = Arc::clone(&info.header);
            let records = CramRecords::new(&path, scan.bytes, header, cram, info.index.as_ref(), partition);
            let file = Arc::clone(records.file());
            batches(records, &file, scan.spec, (scan.prefilter)(&file)?, accounting)
        }
        AlignmentFormat::Sam => {
            let info = scan.catalog.load::<SamInfo>(&scan.bytes, scan.meta)?;
            let regions = scan.regions.map(|r| &r[..]);
            let records = SamRecords::open(&path, scan.bytes, &info, (start, end), regions, skip_damaged, partition)?;
            let file = Arc::clone(records.file());
            batches(records, &file, scan.spec, (scan.prefilter)(&file)?, accounting)
        }
    }
}

/// What a scan's reader reports to and holds: its metrics, its memory, and its caller's
/// progress counters.
struct Accounting {
    metrics: ScanMetrics,
    memory: Option<MemoryReservation>,
    tally: Option<Arc<Tally>>,
}

/// The batches of a scan's `records`, decoded as `spec` says.
fn batches<S: RecordSource + 'static>(
    records: S,
    file: &Arc<FileContext>,
    spec: DecodeSpec<'_>,
    prefilter: Option<Prefilter>,
    accounting: Accounting,
) -> Result<Batches> {
    let Accounting { metrics, memory, tally } = accounting;
    let reader = BatchReader::new(records, file, spec, prefilter, metrics)?;
    Ok(Box::new(reader.with_memory(memory).with_tally(tally)))
}

/// Loads the facts that planning uses (the BAM index, for region partitions, index selection
/// and record counts) of every file in `metas` into `catalog`. CRAM and SAM facts are loaded by
/// the partitions that read them.
pub async fn load_planning_facts(
    format: AlignmentFormat,
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    url: &ObjectStoreUrl,
    metas: Vec<ObjectMeta>,
) -> Result<()> {
    match format {
        AlignmentFormat::Bam => catalog.load_all::<BamInfo>(store, Some(url), metas).await,
        AlignmentFormat::Cram | AlignmentFormat::Sam => Ok(()),
    }
}

/// The record count of `meta`'s file from an index at least as new as the file, if its format's
/// index counts records (a `.bai`/`.csi` does; a `.crai` does not).
pub async fn indexed_record_count(
    format: AlignmentFormat,
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    url: Option<&ObjectStoreUrl>,
    meta: &ObjectMeta,
) -> Result<Option<u64>> {
    match format {
        AlignmentFormat::Bam => {
            catalog.load_all::<BamInfo>(store, url, vec![meta.clone()]).await?;
            Ok(catalog
                .get::<BamInfo>(meta)
                .filter(|info| info.index_is_current)
                .and_then(|info| info.index.as_ref()?.record_count()))
        }
        AlignmentFormat::Cram | AlignmentFormat::Sam => Ok(None),
    }
}

/// Whether `meta`'s file has an index that region reads can use (a `.bai`/`.csi` as new as
/// the file, a valid `.crai`, or a `.sam.gz`'s `.bai`/`.csi`/`.tbi`).
pub async fn has_index(
    format: AlignmentFormat,
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    url: Option<&ObjectStoreUrl>,
    meta: &ObjectMeta,
) -> Result<bool> {
    let metas = vec![meta.clone()];
    Ok(match format {
        AlignmentFormat::Bam => {
            catalog.load_all::<BamInfo>(store, url, metas).await?;
            catalog.get::<BamInfo>(meta).is_some_and(|info| info.index.is_some() && info.index_is_current)
        }
        AlignmentFormat::Cram => {
            catalog.load_all::<CramInfo>(store, url, metas).await?;
            catalog.get::<CramInfo>(meta).is_some_and(|info| info.index.is_some())
        }
        AlignmentFormat::Sam => {
            catalog.load_all::<SamInfo>(store, url, metas).await?;
            catalog.get::<SamInfo>(meta).is_some_and(|info| info.index.is_some())
        }
    })
}

/// Counts the tags of the first records of one file of `options.format`, within `budget`.
fn sample_file(
    path: &str,
    bytes: ObjectBytes,
    meta: &ObjectMeta,
    options: &BamOptions,
    budget: SampleBudget,
    counts: &mut TagCounts,
) -> Result<SampleBudget> {
    let (skip, whole) = (options.skip_damaged, (0, meta.size));
    // Sample reads report nothing: the scan reports what it meets.
    let metrics = ScanMetrics::new(&ExecutionPlanMetricsSet::new(), 0);
    match options.format {
        AlignmentFormat::Bam => sample_tags(path, bytes.open_at(0)?, budget, skip, counts),
        AlignmentFormat::Cram => {
            let reference = Reference::open(options.reference.as_deref())?;
            let scan = CramScan {
                reference,
                range: whole,
                regions: None,
                skip_damaged: false,
                // The sample reads the tags.
                #[cfg(feature = "htslib")]
                required_fields: cram::htslib::required_fields(["tags"]),
            };
            let header = Arc::new(read_cram_header(path, bytes.open_at(0)?)?);
            let records = CramRecords::new(path, bytes, header, scan, None, metrics);
            let n_ref = records.file().reference_names.len();
            sample_source(records, n_ref, budget, skip, counts)
        }
        AlignmentFormat::Sam => {
            let info = SamInfo::header_only(&bytes, path)?;
            let records = SamRecords::open(path, bytes, &info, whole, None, false, metrics)?;
            let n_ref = records.file().reference_names.len();
            sample_source(records, n_ref, budget, skip, counts)
        }
    }
}

/// Resolves the tag selection of `options` into a layout, sampling the files if needed.
pub async fn infer_layout(
    store: &Arc<dyn ObjectStore>,
    url: Option<&ObjectStoreUrl>,
    objects: &[ObjectMeta],
    options: &BamOptions,
) -> Result<TagLayout> {
    let needs_sample = match &options.tags {
        TagSelection::None => return Ok(TagLayout::default()),
        TagSelection::Auto => true,
        TagSelection::List(list) => list.iter().any(|(t, k)| k.is_none() && predefined_kind(*t).is_none()),
    };
    let mut counts = TagCounts::default();
    if needs_sample {
        let mut budget = SampleBudget { records: options.tag_sample_records, bytes: options.tag_sample_bytes.max(1) };
        for object in objects {
            if budget.records == 0 || budget.bytes == 0 {
                break;
            }
            let mut file_counts = std::mem::take(&mut counts);
            let bytes = ObjectBytes::new(store, url, object, tokio::runtime::Handle::current());
            let path = bytes.shown.clone();
            let (meta, options) = (object.clone(), options.clone());
            let (left, file_counts) = tokio::task::spawn_blocking(move || {
                sample_file(&path, bytes, &meta, &options, budget, &mut file_counts).map(|left| (left, file_counts))
            })
            .await
            .map_err(|e| DataFusionError::Execution(format!("tag sampling task failed: {e}")))??;
            counts = file_counts;
            budget = left;
        }
    }
    Ok(resolve(&options.tags, &counts))
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

/// Checks that each region of the `region` option that names a reference names one of at least
/// one of the files (as samtools warns where it finds none), so that a misspelt reference or
/// unparsable coordinates (`chr1:x-y`, read as a name) fail instead of giving an empty table.
pub async fn check_regions(store: &Arc<dyn ObjectStore>, objects: &[ObjectMeta], regions: &[Region]) -> Result<()> {
    let named: Vec<&str> = regions
        .iter()
        .filter_map(|r| match &r.reference {
            RegionReference::Named(name) => Some(name.as_str()),
            RegionReference::Any | RegionReference::Unplaced => None,
        })
        .collect();
    let mut references: Vec<String> = Vec::new();
    for object in objects {
        if named.iter().all(|n| references.iter().any(|r| r == n)) {
            return Ok(());
        }
        let header = read_sam_header(store, &object.location).await?;
        for name in header.reference_sequences().keys() {
            let name = name.to_string();
            if !references.contains(&name) {
                references.push(name);
            }
        }
    }
    let Some(missing) = named.iter().find(|n| !references.iter().any(|r| r == *n)) else { return Ok(()) };
    const SHOWN: usize = 20;
    let mut listed = references.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if references.len() > SHOWN {
        listed.push_str(&format!(" and {} more", references.len() - SHOWN));
    }
    let reason = format!(
        "no file of the table has a reference named {missing:?} (a region is NAME, NAME:START-END or \
         {{NAME}}:START-END); the files' references: {listed}"
    );
    Err(BamError::invalid_option("region", reason).into())
}

/// What a `COPY ... STORED AS` file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// BAM: records in BGZF blocks.
    Bam,
    /// SAM text, BGZF-compressed (`.sam.gz`) or plain.
    Sam { bgzf: bool },
    /// CRAM, written by noodles-cram's one writer per file.
    Cram,
}

/// The output of `format` at `url`: a SAM output is BGZF-compressed when its name ends in `.gz`
/// or `.bgz` (as samtools and tabix read it).
pub fn output_kind(format: AlignmentFormat, url: &str) -> OutputKind {
    match format {
        AlignmentFormat::Bam => OutputKind::Bam,
        AlignmentFormat::Sam => OutputKind::Sam { bgzf: url.ends_with(".gz") || url.ends_with(".bgz") },
        AlignmentFormat::Cram => OutputKind::Cram,
    }
}
