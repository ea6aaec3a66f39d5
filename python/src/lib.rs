//! Python bindings: BAM tables, `STORED AS BAM`, `bam_header` and `bam_region` for the
//! `datafusion` Python package.
//!
//! The objects here are handed to datafusion-python through datafusion-ffi capsules
//! (`__datafusion_table_provider__`, `__datafusion_table_provider_factory__`,
//! `__datafusion_table_function__`), so scans run in Rust with the same partitioning and pushdown
//! as everywhere else, and no row passes through Python.
//!
//! This library links its own copy of tokio, distinct from the one inside datafusion-python, so
//! it runs a runtime of its own and enters it whenever DataFusion calls into the scan: the scan
//! reads files on blocking threads of that runtime.
//!
//! It also keeps a DataFusion runtime environment of its own ([`bam_runtime`]) for everything
//! it plans and runs: datafusion-ffi 55 hands a plugin a fresh default `RuntimeEnv` on every call
//! (`ForeignSession`, `datafusion-ffi/src/session/mod.rs`), which knows no remote object store
//! (those registered in Python never cross) and keeps no cache between queries.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use arrow::array::{AsArray, RecordBatchReader};
use arrow::datatypes::{SchemaRef, UInt64Type};
use arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use async_trait::async_trait;
use datafusion::arrow;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider, TableProviderFactory};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::datasource::listing::{ListingTable, ListingTableUrl};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SendableRecordBatchStream, SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{CreateExternalTable, Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::prelude::SessionContext;
use datafusion_bam::{
    object_store_for, progress, warnings, AlignmentFormat, BamDepthFunction, BamHeaderFunction, BamOptions,
    BamRegionFunction, BamSessionExt, BamTable, BamTableFactory,
};
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use datafusion_ffi::table_provider::FFI_TableProvider;
use datafusion_ffi::table_provider_factory::FFI_TableProviderFactory;
use datafusion_ffi::udtf::FFI_TableFunction;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyPermissionError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCapsule, PyDict, PyTuple, PyType};
use tokio::runtime::{Handle, Runtime};

create_exception!(datafusion_bam, BamError, PyException, "A BAM file, location or option could not be used.");

/// `NotFoundError(BamError, FileNotFoundError)`, `InvalidOptionError(BamError, ValueError)` and
/// `AccessDeniedError(BamError, PermissionError)`, made at import: subclasses that are also Python's own exceptions, so that `except
/// FileNotFoundError` and `except ValueError` work (`create_exception!` takes one base only).
static NOT_FOUND_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_OPTION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static ACCESS_DENIED_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A subclass of `BamError` and of the builtin exception `also`, named `name` in this module.
fn error_subclass(py: Python<'_>, name: &str, doc: &str, also: Bound<'_, PyType>) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__doc__", doc)?;
    namespace.set_item("__module__", "datafusion_bam")?;
    let bases = PyTuple::new(py, [py.get_type::<BamError>(), also])?;
    let class = py.get_type::<PyType>().call1((name, bases, namespace))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

const CODEC_CAPSULE: &CStr = c"datafusion_logical_extension_codec";
const PROVIDER_CAPSULE: &CStr = c"datafusion_table_provider";
const FACTORY_CAPSULE: &CStr = c"datafusion_table_provider_factory";
const FUNCTION_CAPSULE: &CStr = c"datafusion_table_function";

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("datafusion-bam")
            .enable_all()
            .build()
            .expect("the datafusion-bam tokio runtime starts")
    })
}

/// The DataFusion runtime environment of everything this library plans and runs: the object
/// stores of remote locations, and the header/index cache shared by all queries of the process.
fn bam_runtime() -> Arc<RuntimeEnv> {
    static ENV: OnceLock<Arc<RuntimeEnv>> = OnceLock::new();
    Arc::clone(ENV.get_or_init(|| RuntimeEnvBuilder::new().build_arc().expect("a default runtime environment builds")))
}

/// The caller's session settings over [`bam_runtime`].
fn local_state(session: &dyn Session) -> SessionState {
    SessionStateBuilder::new().with_config(session.config().clone()).with_runtime_env(bam_runtime()).build()
}

/// The Python exception of `e`: the class of its typed error, if it has one, else `BamError`.
fn bam_error(e: DataFusionError) -> PyErr {
    let message = datafusion_bam::BamError::message_of(&e);
    Python::attach(|py| {
        let class = match datafusion_bam::BamError::find(&e) {
            Some(datafusion_bam::BamError::NotFound { .. }) => NOT_FOUND_ERROR.get(py),
            Some(datafusion_bam::BamError::InvalidOption { .. }) => INVALID_OPTION_ERROR.get(py),
            Some(datafusion_bam::BamError::Store {
                source: object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. },
                ..
            }) => ACCESS_DENIED_ERROR.get(py),
            _ => None,
        };
        match class {
            Some(class) => PyErr::from_type(class.bind(py).clone(), message),
            None => BamError::new_err(message),
        }
    })
}

/// The logical codec of the calling session (datafusion-python passes its SessionContext).
fn logical_codec(session: &Bound<'_, PyAny>) -> PyResult<FFI_LogicalExtensionCodec> {
    let attr = "__datafusion_logical_extension_codec__";
    let capsule = if session.hasattr(attr)? { session.getattr(attr)?.call0()? } else { session.clone() };
    let capsule = capsule.cast_into::<PyCapsule>()?;
    let pointer = capsule.pointer_checked(Some(CODEC_CAPSULE))?;
    // SAFETY: a capsule of this name holds an FFI_LogicalExtensionCodec (datafusion-ffi's
    // contract), alive while the capsule is; the clone is an independent handle.
    Ok(unsafe { pointer.cast::<FFI_LogicalExtensionCodec>().as_ref() }.clone())
}

/// Polls a future inside this library's runtime, so the scan's `Handle::current()` and
/// `spawn_blocking` find it even when datafusion-python's own runtime polls.
struct InRuntime<F> {
    handle: Handle,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = self.handle.enter();
        self.future.as_mut().poll(cx)
    }
}

fn in_runtime<F: Future>(future: F) -> InRuntime<F> {
    InRuntime { handle: runtime().handle().clone(), future: Box::pin(future) }
}

/// A table planned and scanned inside this library's runtimes (tokio's and DataFusion's).
#[derive(Debug)]
struct InRuntimeTable(Arc<dyn TableProvider>);

#[async_trait]
impl TableProvider for InRuntimeTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.0.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = local_state(state);
        let plan = in_runtime(self.0.scan(&state, projection, filters, limit)).await?;
        Ok(Arc::new(InRuntimeExec(plan)))
    }
}

/// A plan whose partitions run with [`bam_runtime`] in place of the caller's runtime
/// environment, where its object stores are.
#[derive(Debug)]
struct InRuntimeExec(Arc<dyn ExecutionPlan>);

impl DisplayAs for InRuntimeExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt_as(t, f)
    }
}

impl ExecutionPlan for InRuntimeExec {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn downcast_delegate(&self) -> Option<&dyn ExecutionPlan> {
        Some(self.0.as_ref())
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.0.properties()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.0.apply_expressions(f)
    }

    // A leaf, as the scan it wraps.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("a BAM scan has no inputs");
        }
        Ok(self)
    }

    fn repartitioned(
        &self,
        target_partitions: usize,
        config: &ConfigOptions,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let plan = self.0.repartitioned(target_partitions, config)?;
        Ok(plan.map(|plan| Arc::new(Self(plan)) as Arc<dyn ExecutionPlan>))
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.0.statistics_from_inputs(input_stats, args)
    }

    fn metrics(&self) -> Option<datafusion::physical_plan::metrics::MetricsSet> {
        self.0.metrics()
    }

    fn supports_limit_pushdown(&self) -> bool {
        self.0.supports_limit_pushdown()
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        self.0.with_fetch(limit).map(|plan| Arc::new(Self(plan)) as Arc<dyn ExecutionPlan>)
    }

    fn fetch(&self) -> Option<usize> {
        self.0.fetch()
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let context = TaskContext::new(
            context.task_id(),
            context.session_id(),
            context.session_config().clone(),
            context.scalar_functions().clone(),
            context.higher_order_functions().clone(),
            context.aggregate_functions().clone(),
            context.window_functions().clone(),
            bam_runtime(),
        );
        let _entered = runtime().enter();
        self.0.execute(partition, Arc::new(context))
    }
}

fn provider_capsule<'py>(
    py: Python<'py>,
    table: Arc<dyn TableProvider>,
    session: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyCapsule>> {
    let codec = logical_codec(session)?;
    let table = Arc::new(InRuntimeTable(table));
    let provider = FFI_TableProvider::new_with_ffi_codec(table, true, Some(runtime().handle().clone()), codec);
    PyCapsule::new_with_value(py, provider, PROVIDER_CAPSULE)
}

/// Sets up the object store of each remote location from `storage_options` (see
/// [`object_store_for`]), once per bucket or host; nothing for local paths.
async fn prepare_stores(locations: &[String], storage_options: &HashMap<String, String>) -> Result<()> {
    let mut prepared = Vec::new();
    for location in locations {
        let url = datafusion_bam::table_url(location)?;
        if !prepared.contains(&url.object_store()) {
            object_store_for(&bam_runtime(), &url, storage_options).await?;
            prepared.push(url.object_store());
        }
    }
    Ok(())
}

/// BAM files (a path, a directory of .bam files or a glob, or a list of them; local or remote) as
/// a DataFusion table, with one schema over all the files.
///
/// `options` takes the same keys as `CREATE EXTERNAL TABLE ... OPTIONS`: `tags`, `region`,
/// `split`, `tag_sample_records`, `tag_sample_bytes`, `skip_damaged`; `storage_options` configures the object store
/// of remote locations.
#[pyclass(name = "BamTable", module = "datafusion_bam", frozen)]
struct PyBamTable {
    paths: Vec<String>,
    table: Arc<BamTable>,
}

#[pymethods]
impl PyBamTable {
    #[new]
    #[pyo3(signature = (path, options = None, storage_options = None, format = None, tally = None))]
    fn new(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        options: Option<HashMap<String, String>>,
        storage_options: Option<HashMap<String, String>>,
        format: Option<&str>,
        tally: Option<PyRef<'_, PyTally>>,
    ) -> PyResult<Self> {
        // A str is a sequence too: take it as one path, not as its characters.
        let paths: Vec<String> = match path.extract::<String>() {
            Ok(one) => vec![one],
            Err(_) => path.extract()?,
        };
        // Without a format, paths (or globs) that all end in `.cram` are CRAM files, in
        // `.sam`/`.sam.gz` SAM files.
        let formats: Vec<AlignmentFormat> = paths.iter().map(|p| AlignmentFormat::of_path(p)).collect();
        let format = match (format, formats.first()) {
            (Some(name), _) => AlignmentFormat::from_name(name).ok_or_else(|| {
                let reason = format!("{name:?} is none of BAM, CRAM and SAM");
                bam_error(datafusion_bam::BamError::invalid_option("format", reason).into())
            })?,
            (None, Some(&first)) if formats.iter().all(|&f| f == first) => first,
            _ => AlignmentFormat::Bam,
        };
        let options =
            BamOptions::default().with_format(format).with_map(&options.unwrap_or_default()).map_err(bam_error)?;
        let storage_options = storage_options.unwrap_or_default();
        let table = py
            .detach(|| {
                runtime().block_on(async {
                    prepare_stores(&paths, &storage_options).await?;
                    let state = SessionStateBuilder::new().with_runtime_env(bam_runtime()).build();
                    let locations: Vec<&str> = paths.iter().map(String::as_str).collect();
                    BamTable::open_all(&state, &locations, options).await
                })
            })
            .map_err(bam_error)?;
        let table = match tally {
            Some(tally) => table.with_tally(Arc::clone(&tally.0)),
            None => table,
        };
        Ok(Self { paths, table: Arc::new(table) })
    }

    /// The table's Arrow schema, as a pyarrow-compatible capsule object (`pyarrow.schema(t)`).
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let schema = arrow::ffi::FFI_ArrowSchema::try_from(self.table.schema().as_ref())
            .map_err(|e| BamError::new_err(e.to_string()))?;
        PyCapsule::new_with_value(py, schema, c"arrow_schema")
    }

    fn __datafusion_table_provider__<'py>(
        &self,
        py: Python<'py>,
        session: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        provider_capsule(py, Arc::clone(&self.table) as Arc<dyn TableProvider>, &session)
    }

    fn __repr__(&self) -> String {
        match self.paths.as_slice() {
            [one] => format!("BamTable({one:?})"),
            all => format!("BamTable({all:?})"),
        }
    }
}

/// `CREATE EXTERNAL TABLE ... STORED AS BAM` (or `CRAM`), made in this library's runtimes.
#[derive(Debug)]
struct InRuntimeFactory(AlignmentFormat);

#[async_trait]
impl TableProviderFactory for InRuntimeFactory {
    async fn create(&self, session: &dyn Session, cmd: &CreateExternalTable) -> Result<Arc<dyn TableProvider>> {
        let state = local_state(session);
        let created = in_runtime(BamTableFactory::for_format(self.0).create(&state, cmd)).await?;
        // Physical filter pushdown does not cross datafusion-ffi: a BamTable takes the filters
        // at planning time instead.
        let table: Arc<dyn TableProvider> = match created.downcast_ref::<ListingTable>() {
            Some(listing) => Arc::new(BamTable::from_listing(Arc::new(listing.clone()))),
            None => created,
        };
        Ok(Arc::new(InRuntimeTable(table)))
    }
}

/// The table factory of `STORED AS BAM` (or, made with `"CRAM"`, of `STORED AS CRAM`), for
/// `SessionContext.register_table_factory("BAM", ...)`.
#[pyclass(name = "BamTableFactory", module = "datafusion_bam", frozen)]
struct PyBamTableFactory(AlignmentFormat);

#[pymethods]
impl PyBamTableFactory {
    #[new]
    #[pyo3(signature = (format = "BAM"))]
    fn new(format: &str) -> PyResult<Self> {
        AlignmentFormat::from_name(format)
            .map(Self)
            .ok_or_else(|| BamError::new_err(format!("unknown alignment format {format:?}: BAM, CRAM or SAM")))
    }

    fn __datafusion_table_provider_factory__<'py>(
        &self,
        py: Python<'py>,
        codec: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let codec = logical_codec(&codec)?;
        let factory = FFI_TableProviderFactory::new_with_ffi_codec(
            Arc::new(InRuntimeFactory(self.0)),
            Some(runtime().handle().clone()),
            codec,
        );
        PyCapsule::new_with_value(py, factory, FACTORY_CAPSULE)
    }
}

/// A table function whose tables are opened and scanned in this library's runtimes.
#[derive(Debug)]
struct InRuntimeFunction(Arc<dyn TableFunctionImpl>);

impl TableFunctionImpl for InRuntimeFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let state = local_state(args.session());
        let table = self.0.call_with_args(TableFunctionArgs::new(args.exprs(), &state))?;
        Ok(Arc::new(InRuntimeTable(table)))
    }
}

fn function_capsule<'py>(
    py: Python<'py>,
    function: Arc<dyn TableFunctionImpl>,
    session: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyCapsule>> {
    let codec = logical_codec(session)?;
    let function = Arc::new(InRuntimeFunction(function));
    let function = FFI_TableFunction::new_with_ffi_codec(function, Some(runtime().handle().clone()), codec);
    PyCapsule::new_with_value(py, function, FUNCTION_CAPSULE)
}

/// A Python class whose `__datafusion_table_function__` gives `function` to
/// `SessionContext.register_udtf`.
macro_rules! table_function_class {
    ($(#[$doc:meta])* $class:ident, $name:literal, $function:expr) => {
        $(#[$doc])*
        #[pyclass(name = $name, module = "datafusion_bam", frozen)]
        struct $class;

        #[pymethods]
        impl $class {
            #[new]
            fn new() -> Self {
                Self
            }

            fn __datafusion_table_function__<'py>(
                &self,
                py: Python<'py>,
                session: Bound<'py, PyAny>,
            ) -> PyResult<Bound<'py, PyCapsule>> {
                function_capsule(py, Arc::new($function), &session)
            }
        }
    };
}

table_function_class!(
    /// The `bam_region(path, region, ...)` table function, for `SessionContext.register_udtf`.
    PyBamRegionFunction,
    "BamRegionFunction",
    BamRegionFunction::with_runtime(runtime().handle().clone())
);
table_function_class!(
    /// The `bam_depth(path [, region] [, options])` table function, for `SessionContext.register_udtf`.
    PyBamDepthFunction,
    "BamDepthFunction",
    BamDepthFunction
);
table_function_class!(
    /// The `bam_header(path)` table function, for `SessionContext.register_udtf`.
    PyBamHeaderFunction,
    "BamHeaderFunction",
    BamHeaderFunction
);

/// The store and path of a remote location, set up with `storage_options`.
async fn remote(
    location: &str,
    storage_options: &HashMap<String, String>,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let url = ListingTableUrl::parse(location)?;
    let store = object_store_for(&bam_runtime(), &url, storage_options).await?;
    Ok((store, url.prefix().clone()))
}

/// Whether an object exists at a remote location.
#[pyfunction]
#[pyo3(signature = (location, storage_options = None))]
fn remote_exists(py: Python<'_>, location: &str, storage_options: Option<HashMap<String, String>>) -> PyResult<bool> {
    py.detach(|| {
        runtime().block_on(async {
            let (store, path) = remote(location, &storage_options.unwrap_or_default()).await?;
            match store.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(DataFusionError::Execution(format!("{location}: {e}"))),
            }
        })
    })
    .map_err(bam_error)
}

/// Bytes sent per part of an upload (S3 needs at least 5 MiB for every part but the last).
const UPLOAD_PART: usize = 16 << 20;

/// Uploads the local file `path` to the remote `location` as one multipart upload, which the
/// store shows only once complete; a failed upload is aborted.
#[pyfunction]
#[pyo3(signature = (path, location, storage_options = None))]
fn upload(
    py: Python<'_>,
    path: &str,
    location: &str,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<()> {
    py.detach(|| {
        runtime().block_on(async {
            let (store, target) = remote(location, &storage_options.unwrap_or_default()).await?;
            let failed =
                |e: &dyn fmt::Display| DataFusionError::Execution(format!("uploading {path} to {location}: {e}"));
            // Read on this thread, which is block_on's and not one of the runtime's workers.
            let mut file = std::fs::File::open(path).map_err(|e| failed(&e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(
                store.put_multipart(&target).await.map_err(|e| failed(&e))?,
                UPLOAD_PART,
            );
            let mut buffer = vec![0; UPLOAD_PART];
            let sent: Result<()> = async {
                loop {
                    let n = std::io::Read::read(&mut file, &mut buffer).map_err(|e| failed(&e))?;
                    if n == 0 {
                        return Ok(());
                    }
                    writer.wait_for_capacity(2).await.map_err(|e| failed(&e))?;
                    writer.write(&buffer[..n]);
                }
            }
            .await;
            if let Err(e) = sent {
                let _ = writer.abort().await;
                return Err(e);
            }
            writer.finish().await.map_err(|e| failed(&e))?;
            Ok(())
        })
    })
    .map_err(bam_error)
}

/// The name under which [`write_alignments`]'s query finds its source.
const WRITE_INPUT: &str = "input";

/// Rows of an Arrow C stream (a datafusion-python DataFrame, a pyarrow table or reader, a polars
/// frame...), read once, each batch on a blocking thread (the producer may take the GIL).
struct ArrowStreamPartition {
    schema: SchemaRef,
    reader: Mutex<Option<ArrowArrayStreamReader>>,
}

impl fmt::Debug for ArrowStreamPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrowStreamPartition").field("schema", &self.schema).finish()
    }
}

impl PartitionStream for ArrowStreamPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let reader = self.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let batches = futures::stream::unfold(reader, |reader| async move {
            let mut reader = reader?;
            let (next, reader) = tokio::task::spawn_blocking(move || (reader.next(), reader)).await.ok()?;
            Some((next?.map_err(DataFusionError::from), Some(reader)))
        });
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), batches))
    }
}

/// The table of an object with `__arrow_c_stream__`.
fn arrow_stream_table(source: &Bound<'_, PyAny>) -> PyResult<Arc<dyn TableProvider>> {
    let capsule = source.getattr("__arrow_c_stream__")?.call0()?.cast_into::<PyCapsule>()?;
    let pointer = capsule.pointer_checked(Some(c"arrow_array_stream"))?;
    // SAFETY: a capsule of this name holds an FFI_ArrowArrayStream (the Arrow PyCapsule
    // interface); from_raw moves the stream out and leaves the capsule's a released one.
    let reader = unsafe { ArrowArrayStreamReader::from_raw(pointer.cast::<FFI_ArrowArrayStream>().as_ptr()) }
        .map_err(|e| BamError::new_err(format!("cannot read the Arrow stream: {e}")))?;
    let schema = reader.schema();
    let partition = ArrowStreamPartition { schema: Arc::clone(&schema), reader: Mutex::new(Some(reader)) };
    let table = StreamingTable::try_new(schema, vec![Arc::new(partition)]).map_err(bam_error)?;
    Ok(Arc::new(table))
}

/// SQL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Runs `COPY (query) TO output STORED AS <stored_as> OPTIONS (options)` (BAM, SAM or CRAM),
/// where `query` reads table `input`: `source`, a [`PyBamTable`] or an object with
/// `__arrow_c_stream__`. Remote outputs and headers get their stores from `storage_options`.
/// Returns the rows written.
#[pyfunction]
#[pyo3(signature = (source, query, output, stored_as, options = None, storage_options = None))]
fn write_alignments(
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    query: &str,
    output: &str,
    stored_as: &str,
    options: Option<HashMap<String, String>>,
    storage_options: Option<HashMap<String, String>>,
) -> PyResult<u64> {
    let format = AlignmentFormat::from_name(stored_as)
        .ok_or_else(|| bam_error(DataFusionError::Plan(format!("unknown alignment format {stored_as:?}"))))?;
    let input: Arc<dyn TableProvider> = match source.cast::<PyBamTable>() {
        Ok(table) => Arc::clone(&table.get().table) as _,
        Err(_) => arrow_stream_table(source)?,
    };
    let options = options.unwrap_or_default();
    let storage_options = storage_options.unwrap_or_default();
    py.detach(|| {
        runtime().block_on(async {
            let locations: Vec<String> = [Some(output), options.get("header").map(String::as_str)]
                .into_iter()
                .flatten()
                .map(str::to_string)
                .collect();
            prepare_stores(&locations, &storage_options).await?;
            let state = SessionStateBuilder::new().with_default_features().with_runtime_env(bam_runtime()).build();
            let ctx = SessionContext::new_with_state(state);
            ctx.enable_bam()?;
            ctx.register_table(WRITE_INPUT, input)?;
            let mut copy = format!("COPY ({query}) TO {} STORED AS {}", quoted(output), format.name());
            if !options.is_empty() {
                let pairs: Vec<String> = options.iter().map(|(k, v)| format!("{} {}", quoted(k), quoted(v))).collect();
                copy.push_str(&format!(" OPTIONS ({})", pairs.join(", ")));
            }
            let batches = ctx.sql(&copy).await?.collect().await?;
            let count =
                batches.first().and_then(|b| b.column(0).as_primitive_opt::<UInt64Type>()?.values().first().copied());
            count.ok_or_else(|| DataFusionError::Internal("COPY returned no row count".into()))
        })
    })
    .map_err(bam_error)
}

/// Records decoded, compressed bytes read, and compressed bytes the scans so far expect to read
/// (files or index selections), by BAM scans in this process.
#[pyfunction]
fn progress_counters() -> (u64, u64, u64) {
    let s = progress::snapshot();
    (s.records, s.bytes, s.expected)
}

/// Progress counters of one caller's tables (`BamTable(..., tally=t)`), apart from other scans
/// running at once.
#[pyclass(name = "Tally", module = "datafusion_bam", frozen)]
struct PyTally(Arc<progress::Tally>);

#[pymethods]
impl PyTally {
    #[new]
    fn new() -> Self {
        Self(Arc::default())
    }

    /// Records decoded, compressed bytes read and compressed bytes expected, by the scans of
    /// the tables made with this tally.
    fn counters(&self) -> (u64, u64, u64) {
        let s = self.0.snapshot();
        (s.records, s.bytes, s.expected)
    }
}

/// The Parquet settings that suit the table's columns, as `(key, value)` pairs for a COPY's
/// `OPTIONS ('format.<key>' '<value>')`: the defaults of the CLI's COPY and of `to_parquet`.
#[pyfunction]
fn parquet_column_options() -> Vec<(String, &'static str)> {
    datafusion_bam::parquet_column_options()
}

/// The cursor after the latest BAM warning in this process.
#[pyfunction]
fn warnings_cursor() -> u64 {
    warnings::cursor()
}

/// BAM warnings after `cursor`: (messages, how many of them are no longer kept, new cursor).
#[pyfunction]
fn warnings_since(cursor: u64) -> (Vec<String>, u64, u64) {
    warnings::since(cursor)
}

#[pymodule]
fn _datafusion_bam(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Panics of noodles-cram on bad data become errors; the hook keeps Python's stderr quiet.
    datafusion_bam::quiet_decode_panics();
    m.add_class::<PyBamTable>()?;
    m.add_class::<PyTally>()?;
    m.add_class::<PyBamTableFactory>()?;
    m.add_class::<PyBamRegionFunction>()?;
    m.add_class::<PyBamDepthFunction>()?;
    m.add_class::<PyBamHeaderFunction>()?;
    m.add_function(wrap_pyfunction!(remote_exists, m)?)?;
    m.add_function(wrap_pyfunction!(upload, m)?)?;
    m.add_function(wrap_pyfunction!(write_alignments, m)?)?;
    m.add_function(wrap_pyfunction!(parquet_column_options, m)?)?;
    m.add_function(wrap_pyfunction!(progress_counters, m)?)?;
    m.add_function(wrap_pyfunction!(warnings_cursor, m)?)?;
    m.add_function(wrap_pyfunction!(warnings_since, m)?)?;
    let py = m.py();
    m.add("BamError", py.get_type::<BamError>())?;
    let not_found = "A location (file, directory, index, reference) does not exist.";
    let not_found = error_subclass(py, "NotFoundError", not_found, py.get_type::<PyFileNotFoundError>())?;
    m.add("NotFoundError", not_found.clone_ref(py))?;
    let _ = NOT_FOUND_ERROR.set(py, not_found);
    let invalid = "A table option, region or argument has a value that cannot be used.";
    let invalid = error_subclass(py, "InvalidOptionError", invalid, py.get_type::<PyValueError>())?;
    m.add("InvalidOptionError", invalid.clone_ref(py))?;
    let _ = INVALID_OPTION_ERROR.set(py, invalid);
    let denied = "A store refused the credentials, or their access to a location.";
    let denied = error_subclass(py, "AccessDeniedError", denied, py.get_type::<PyPermissionError>())?;
    m.add("AccessDeniedError", denied.clone_ref(py))?;
    let _ = ACCESS_DENIED_ERROR.set(py, denied);
    m.add("DATAFUSION_MAJOR", datafusion_ffi::version())?;
    Ok(())
}
