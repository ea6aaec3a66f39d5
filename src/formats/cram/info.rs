//! A CRAM file's facts: its header and its `.crai`.

use std::any::Any;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::cache::cache_manager::FileMetadata;
use noodles_cram::crai;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::error::BamError;
use crate::formats::catalog::FileFacts;
use crate::formats::cram::container::{read_cram_header, CramHeader};
use crate::io::{warnings, ObjectBytes};

/// A CRAM file's header and the `.crai` beside it (`x.cram.crai`, as samtools writes it, or
/// `x.crai`), if there is one that fits the file; one that does not is ignored with a warning.
pub struct CramInfo {
    pub header: Arc<CramHeader>,
    pub index: Option<crai::Index>,
}

impl FileFacts for CramInfo {
    /// Reads the header and looks for an index. Blocking: call on a blocking thread.
    fn load(bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Self> {
        let path = bytes.shown.as_str();
        let header = Arc::new(read_cram_header(path, bytes.open_at(0)?)?);
        let name = meta.location.as_ref();
        let stem = name.strip_suffix(".cram").unwrap_or(name);
        for candidate in [format!("{name}.crai"), format!("{stem}.crai")] {
            let location = Path::from(candidate);
            let (store, at) = (Arc::clone(&bytes.store), location.clone());
            let data = match bytes.wait(async move { store.get(&at).await?.bytes().await })? {
                Ok(data) => data,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(BamError::store(location, e).into()),
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
