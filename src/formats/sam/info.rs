//! A SAM file's facts: its header and, for `.sam.gz`, its index.

use std::any::Any;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::cache::cache_manager::FileMetadata;
use object_store::ObjectMeta;

use crate::bgzf::index::{find_index, index_mismatch, read_index, BamIndex, IndexKind};
use crate::formats::catalog::FileFacts;
use crate::formats::sam::lines::{read_sam_text_header, SamHeader, SamLines};
use crate::io::{warnings, ObjectBytes};

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
}

impl FileFacts for SamInfo {
    /// Reads the header and looks for an index. Blocking: call on a blocking thread.
    fn load(bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Self> {
        let path = bytes.shown.clone();
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
        match index_mismatch(&index, &header.file, meta.size) {
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
