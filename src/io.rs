//! How bytes reach the decoder: object-store reads bridged to blocking `Read`, and blocking
//! decode work bridged back to an async stream.
//!
//! Decoding is CPU-bound and synchronous, so it runs on tokio's blocking pool: one task per file
//! partition, handing batches to the query through a channel of [`CHANNEL_BATCHES`] slots. The
//! bounded channel caps memory at a few batches per partition, and a consumer that stops early
//! (LIMIT, an error elsewhere) stops the decoder at its next send.

use std::io::Read;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore};
use tokio_util::io::{StreamReader, SyncIoBridge};

const CHANNEL_BATCHES: usize = 2;

/// A blocking reader over a whole object. Local files are read directly; other stores stream
/// through a bridge, which must then be read on a blocking thread, never on the async runtime.
pub async fn open_blocking_reader(
    store: &Arc<dyn ObjectStore>,
    location: &Path,
) -> Result<Box<dyn Read + Send>> {
    let result = store
        .get_opts(location, GetOptions::default())
        .await
        .map_err(|e| DataFusionError::Execution(format!("cannot open BAM file {location}: {e}")))?;
    blocking_reader(result.payload, location, 0, tokio::runtime::Handle::current())
}

/// A blocking reader over a `get` result for the bytes from `offset` on.
fn blocking_reader(payload: GetResultPayload, location: &Path, offset: u64, handle: tokio::runtime::Handle) -> Result<Box<dyn Read + Send>> {
    use std::io::{Seek, SeekFrom};
    Ok(match payload {
        GetResultPayload::File(mut file, _) => {
            // Local files come back unpositioned; the requested range is only advisory. The buffer
            // is a few BGZF blocks: region reads open many short stretches.
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| DataFusionError::Execution(format!("cannot seek BAM file {location} to byte {offset}: {e}")))?;
            Box::new(std::io::BufReader::with_capacity(256 << 10, file))
        }
        GetResultPayload::Stream(stream) => {
            let stream = stream.map_err(std::io::Error::other);
            Box::new(SyncIoBridge::new_with_handle(StreamReader::new(stream), handle))
        }
    })
}

/// Runs `make` on the blocking pool and streams the items of the iterator it returns.
pub fn blocking_stream<T, I, F>(make: F) -> BoxStream<'static, Result<T>>
where
    T: Send + 'static,
    I: Iterator<Item = Result<T>>,
    F: FnOnce() -> Result<I> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_BATCHES);
    let task = tokio::task::spawn_blocking(move || {
        let items = match make() {
            Ok(items) => items,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        for item in items {
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    let batches = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    // A panic in the decoder must surface as an error, not as a silently short result.
    let outcome = futures::stream::once(async move {
        match task.await {
            Ok(()) => None,
            Err(e) => Some(Err(DataFusionError::Execution(format!("BAM decoder task failed: {e}")))),
        }
    })
    .filter_map(|x| async move { x });
    batches.chain(outcome).boxed()
}

/// One object, opened at any offset from a blocking thread (a partition's decoder needs the
/// header at byte 0, its own start, and the next partition's start).
#[derive(Clone)]
pub struct ObjectBytes {
    pub store: Arc<dyn ObjectStore>,
    pub location: Path,
    pub size: u64,
    pub handle: tokio::runtime::Handle,
}

impl ObjectBytes {
    /// A blocking reader from `offset` to the end of the object. Call only off the runtime.
    pub fn open_at(&self, offset: u64) -> Result<Box<dyn Read + Send>> {
        let options = GetOptions { range: Some(GetRange::Offset(offset)), ..Default::default() };
        let location = &self.location;
        let result = self
            .handle
            .block_on(self.store.get_opts(location, options))
            .map_err(|e| DataFusionError::Execution(format!("cannot read BAM file {location} from byte {offset}: {e}")))?;
        blocking_reader(result.payload, location, offset, self.handle.clone())
    }
}
