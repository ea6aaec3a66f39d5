//! How bytes reach the decoder: object-store reads bridged to blocking `Read`, and blocking
//! decode work bridged back to an async stream.
//!
//! Decoding is CPU-bound and synchronous, so it runs on tokio's blocking pool: one task per file
//! partition, handing batches to the query through a channel of [`CHANNEL_BATCHES`] slots. The
//! bounded channel caps memory at a few batches per partition, and a consumer that stops early
//! (LIMIT, an error elsewhere) stops the decoder at its next send.

pub mod progress;
pub mod store;
pub mod warnings;

use std::future::Future;
use std::io::Read;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult, GetResultPayload, ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio::runtime::Handle;

use crate::error::BamError;

const CHANNEL_BATCHES: usize = 2;

/// A blocking reader over a whole object. Local files are read directly; other stores stream
/// through a bridge, which must then be read on a blocking thread, never on the async runtime.
pub async fn open_blocking_reader(store: &Arc<dyn ObjectStore>, location: &Path) -> Result<Box<dyn Read + Send>> {
    let result = store.get_opts(location, GetOptions::default()).await.map_err(|e| BamError::store(location, e))?;
    blocking_reader(result, location, 0, &Handle::current())
}

/// A blocking reader over a `get` result, whose bytes start at `offset` of the object.
fn blocking_reader(result: GetResult, location: &Path, offset: u64, handle: &Handle) -> Result<Box<dyn Read + Send>> {
    use std::io::{Seek, SeekFrom};
    let expected = result.range.end.saturating_sub(result.range.start);
    Ok(match result.payload {
        GetResultPayload::File(mut file, _) => {
            // Local files come back unpositioned; the requested range is only advisory. The buffer
            // is a few BGZF blocks: region reads open many short stretches.
            file.seek(SeekFrom::Start(offset)).map_err(|e| BamError::Damaged {
                file: location.to_string(),
                at: format!("at byte {offset}"),
                reason: "cannot seek there".to_string(),
                source: Some(Box::new(e)),
            })?;
            Box::new(std::io::BufReader::with_capacity(256 << 10, file))
        }
        GetResultPayload::Stream(stream) => Box::new(StreamedBytes::start(stream, expected, handle)),
    })
}

/// Chunks of a remote object the download may run ahead of the decoder (a chunk is what the HTTP
/// client read at once), so each reader holds a few MiB (docs/benchmarks-history.md, "Object
/// store").
const PREFETCH_CHUNKS: usize = 8;

/// The bytes of a remote object, read on a blocking thread. A task on the runtime downloads them
/// into a channel; the reader takes them out. Dropping the reader stops the download. When the
/// download ends early (the runtime shuts down, the connection breaks) reading fails: bytes are
/// counted against the range the store promised, so a short read is never taken for the end.
struct StreamedBytes {
    chunks: tokio::sync::mpsc::Receiver<object_store::Result<Bytes>>,
    current: Bytes,
    remaining: u64,
}

impl StreamedBytes {
    fn start(mut stream: BoxStream<'static, object_store::Result<Bytes>>, expected: u64, handle: &Handle) -> Self {
        let (tx, chunks) = tokio::sync::mpsc::channel(PREFETCH_CHUNKS);
        handle.spawn(async move {
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        Self { chunks, current: Bytes::new(), remaining: expected }
    }
}

impl Read for StreamedBytes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.remaining == 0 {
                return Ok(0);
            }
            self.current = match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "the object store download stopped {} bytes before the end of the requested range",
                            self.remaining
                        ),
                    ))
                }
            };
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
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
            Err(e) => Some(Err(DataFusionError::Execution(format!("decoder task failed: {e}")))),
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
    /// The location as its user wrote it, for messages (see [`shown_location`]).
    pub shown: String,
    pub size: u64,
    pub handle: Handle,
}

/// A location as its user wrote it: a local path with its leading `/`, or the URL of a remote
/// object (`s3://bucket/x.bam`), where object_store's path has neither. Without the store's URL,
/// the path as the store names it.
pub fn shown_location(url: Option<&ObjectStoreUrl>, location: &Path) -> String {
    match url.map(ObjectStoreUrl::as_str) {
        Some("file:///") => format!("/{location}"),
        Some(base) => format!("{}/{location}", base.trim_end_matches('/')),
        None => location.to_string(),
    }
}

impl ObjectBytes {
    /// The object `meta` of `store` (whose URL is `url`, when known), read on `handle`.
    pub fn new(store: &Arc<dyn ObjectStore>, url: Option<&ObjectStoreUrl>, meta: &ObjectMeta, handle: Handle) -> Self {
        Self {
            store: Arc::clone(store),
            location: meta.location.clone(),
            shown: shown_location(url, &meta.location),
            size: meta.size,
            handle,
        }
    }

    /// A blocking reader from `offset` to the end of the object. Call only off the runtime.
    pub fn open_at(&self, offset: u64) -> Result<Box<dyn Read + Send>> {
        let options = GetOptions { range: Some(GetRange::Offset(offset)), ..Default::default() };
        let (store, location) = (Arc::clone(&self.store), self.location.clone());
        let result = self
            .wait(async move { store.get_opts(&location, options).await })?
            .map_err(|e| BamError::store(format!("{} from byte {offset}", self.shown), e))?;
        blocking_reader(result, &self.location, offset, &self.handle)
    }

    /// The `len` bytes from `offset` (a ranged request). Call only off the runtime.
    pub fn read_range(&self, offset: u64, len: u64) -> Result<Bytes> {
        let (store, location) = (Arc::clone(&self.store), self.location.clone());
        self.wait(async move { store.get_range(&location, offset..offset + len).await })?
            .map_err(|e| BamError::store(format!("{} bytes {offset}..{}", self.shown, offset + len), e).into())
    }

    /// Runs an object-store request on the runtime and waits for it. Call only off the runtime.
    /// Unlike `Handle::block_on`, a runtime that shuts down meanwhile gives an error, not a panic:
    /// the request is a task of the runtime, dropped with it.
    pub fn wait<T: Send + 'static>(&self, request: impl Future<Output = T> + Send + 'static) -> Result<T> {
        futures::executor::block_on(self.handle.spawn(request))
            .map_err(|e| DataFusionError::Execution(format!("object store request for {} stopped: {e}", self.shown)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> Vec<object_store::Result<Bytes>> {
        parts.iter().map(|p| Ok(Bytes::from_static(p))).collect()
    }

    /// Reads everything `reader` gives on a thread outside the runtime.
    fn read_all(mut reader: StreamedBytes) -> std::io::Result<Vec<u8>> {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        })
        .join()
        .unwrap()
    }

    #[test]
    fn streamed_bytes_arrive_whole_and_in_order() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let stream = futures::stream::iter(chunks(&[b"BAM", b"\x01", b"", b"rest"])).boxed();
        let reader = StreamedBytes::start(stream, 8, runtime.handle());
        assert_eq!(read_all(reader).unwrap(), b"BAM\x01rest");
    }

    /// A download that ends before the promised range is an error, never a short read taken for
    /// the end of the object.
    #[test]
    fn streamed_bytes_ending_early_are_an_error() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let stream = futures::stream::iter(chunks(&[b"BAM", b"\x01"])).boxed();
        let err = read_all(StreamedBytes::start(stream, 10, runtime.handle())).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("6 bytes before the end"), "{err}");

        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"BA")),
            Err(object_store::Error::Generic { store: "test", source: "connection reset".into() }),
        ])
        .boxed();
        assert!(read_all(StreamedBytes::start(failing, 10, runtime.handle())).is_err());
    }

    /// The runtime shuts down while a reader waits for bytes (a library user's runtime ending
    /// after a failed query): the reader gets an error, and neither it nor the request panics.
    #[test]
    fn runtime_shutdown_fails_readers_and_requests_without_panics() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let stalled = futures::stream::iter(chunks(&[b"BAM"])).chain(futures::stream::pending()).boxed();
        let mut reader = StreamedBytes::start(stalled, 100, runtime.handle());
        let bytes = ObjectBytes {
            store: Arc::new(object_store::memory::InMemory::new()),
            location: Path::from("x.bam"),
            shown: "memory:///x.bam".to_string(),
            size: 0,
            handle: runtime.handle().clone(),
        };
        let reading = std::thread::spawn(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out.clone()).map_err(|e| (e, out))
        });
        let requesting = std::thread::spawn(move || bytes.wait(futures::future::pending::<()>()));
        std::thread::sleep(std::time::Duration::from_millis(200));
        runtime.shutdown_background();
        let (err, out) =
            reading.join().expect("no panic while reading").expect_err("the stalled download must fail the read");
        assert_eq!(out, b"BAM");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        let request = requesting.join().expect("no panic while waiting for a request");
        assert!(request.unwrap_err().to_string().contains("x.bam"));
    }
}
