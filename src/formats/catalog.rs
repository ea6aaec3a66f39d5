//! What a scan knows about each file before decoding records (its header and index, as each
//! format defines them in its `info` module), loaded once per file ([`Catalog`], in
//! DataFusion's runtime metadata cache), so every partition and query that reads a file shares
//! them until the file changes.

use std::any::Any;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::{CachedFileMetadataEntry, FileMetadata, FileMetadataCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};

use crate::io::ObjectBytes;

/// Bytes of file facts a [`Catalog`] keeps when no session's cache is given (DataFusion's default
/// `datafusion.runtime.metadata_cache_limit`).
const OWN_CACHE_BYTES: usize = 50 << 20;

/// What a format knows about one of its files before decoding records (its header and index),
/// kept in a [`Catalog`].
pub trait FileFacts: FileMetadata + Sized {
    /// Reads the facts of `meta`'s file. Blocking: call on a blocking thread.
    fn load(bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Self>;
}

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

    /// The facts of type `T` of `meta`'s file, if loaded since the file last changed.
    pub fn get<T: FileFacts>(&self, meta: &ObjectMeta) -> Option<Arc<T>> {
        let entry = self.cache.get(&meta.location).filter(|e| e.is_valid_for(meta))?;
        let any: Arc<dyn Any + Send + Sync> = entry.file_metadata;
        any.downcast::<T>().ok()
    }

    /// The facts of type `T` of `meta`'s file, loading them if needed (a file read as BAM by one
    /// table and as SAM by another has the one last loaded). Blocking: call on a blocking thread.
    pub fn load<T: FileFacts>(&self, bytes: &ObjectBytes, meta: &ObjectMeta) -> Result<Arc<T>> {
        if let Some(info) = self.get(meta) {
            return Ok(info);
        }
        let info = Arc::new(T::load(bytes, meta)?);
        self.cache.put(&meta.location, CachedFileMetadataEntry::new(meta.clone(), Arc::clone(&info) as _));
        Ok(info)
    }

    /// Loads the facts of every file in `metas` of `store` (whose URL is `url`, when known), a
    /// few at a time.
    pub async fn load_all<T: FileFacts>(
        &self,
        store: &Arc<dyn ObjectStore>,
        url: Option<&ObjectStoreUrl>,
        metas: Vec<ObjectMeta>,
    ) -> Result<()> {
        let handle = tokio::runtime::Handle::current();
        let loads = metas.into_iter().map(|meta| {
            let catalog = self.clone();
            let bytes = ObjectBytes::new(store, url, &meta, handle.clone());
            async move {
                tokio::task::spawn_blocking(move || catalog.load::<T>(&bytes, &meta).map(|_| ()))
                    .await
                    .map_err(|e| DataFusionError::Execution(format!("loading a file's header failed: {e}")))?
            }
        });
        let results: Vec<Result<()>> = futures::stream::iter(loads).buffer_unordered(8).collect().await;
        results.into_iter().collect()
    }
}
