//! Python bindings: BAM tables and `bam_region` for the `datafusion` Python package.
//!
//! The objects here are handed to datafusion-python through datafusion-ffi capsules
//! (`__datafusion_table_provider__`, `__datafusion_table_function__`), so scans run in Rust with
//! the same partitioning and pushdown as everywhere else, and no row passes through Python.
//!
//! This library links its own copy of tokio, distinct from the one inside datafusion-python, so
//! it runs a runtime of its own and enters it whenever DataFusion calls into the scan: the scan
//! reads files on blocking threads of that runtime.

use std::collections::HashMap;
use std::ffi::CStr;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::arrow;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_bam::BamRegionFunction;
use datafusion_bam::{progress, warnings, BamOptions, BamTable};
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use datafusion_ffi::table_provider::FFI_TableProvider;
use datafusion_ffi::udtf::FFI_TableFunction;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use tokio::runtime::{Handle, Runtime};

create_exception!(datafusion_bam, BamError, PyException, "A BAM file or option could not be used.");

const CODEC_CAPSULE: &CStr = c"datafusion_logical_extension_codec";
const PROVIDER_CAPSULE: &CStr = c"datafusion_table_provider";
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

fn bam_error(e: DataFusionError) -> PyErr {
    BamError::new_err(e.to_string())
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

/// A table whose planning runs inside this library's runtime.
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
        let future = Box::pin(self.0.scan(state, projection, filters, limit));
        InRuntime { handle: runtime().handle().clone(), future }.await
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

/// BAM files (a path, a directory of .bam files or a glob, or a list of them) as a DataFusion
/// table, with one schema over all the files.
///
/// `options` takes the same keys as `CREATE EXTERNAL TABLE ... OPTIONS`: `tags`, `region`,
/// `split`, `tag_sample_records`, `skip_damaged`.
#[pyclass(name = "BamTable", module = "datafusion_bam", frozen)]
struct PyBamTable {
    paths: Vec<String>,
    table: Arc<BamTable>,
}

#[pymethods]
impl PyBamTable {
    #[new]
    #[pyo3(signature = (path, options = None))]
    fn new(py: Python<'_>, path: &Bound<'_, PyAny>, options: Option<HashMap<String, String>>) -> PyResult<Self> {
        // A str is a sequence too: take it as one path, not as its characters.
        let paths: Vec<String> = match path.extract::<String>() {
            Ok(one) => vec![one],
            Err(_) => path.extract()?,
        };
        let options = BamOptions::from_map(&options.unwrap_or_default()).map_err(bam_error)?;
        let table = py
            .detach(|| {
                runtime().block_on(async {
                    let ctx = SessionContext::new();
                    let locations: Vec<&str> = paths.iter().map(String::as_str).collect();
                    BamTable::open_all(&ctx.state(), &locations, options).await
                })
            })
            .map_err(bam_error)?;
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

/// `bam_region(path, region, ...)` with samtools' region syntax.
#[derive(Debug)]
struct InRuntimeRegionFunction;

impl TableFunctionImpl for InRuntimeRegionFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        Ok(Arc::new(InRuntimeTable(BamRegionFunction.call_with_args(args)?)))
    }
}

/// The `bam_region` table function, for `SessionContext.register_udtf`.
#[pyclass(name = "BamRegionFunction", module = "datafusion_bam", frozen)]
struct PyBamRegionFunction;

#[pymethods]
impl PyBamRegionFunction {
    #[new]
    fn new() -> Self {
        Self
    }

    fn __datafusion_table_function__<'py>(
        &self,
        py: Python<'py>,
        session: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let codec = logical_codec(&session)?;
        let function = FFI_TableFunction::new_with_ffi_codec(
            Arc::new(InRuntimeRegionFunction),
            Some(runtime().handle().clone()),
            codec,
        );
        PyCapsule::new_with_value(py, function, FUNCTION_CAPSULE)
    }
}

/// Records decoded and compressed bytes read by BAM scans in this process so far.
#[pyfunction]
fn progress_counters() -> (u64, u64) {
    let s = progress::snapshot();
    (s.records, s.bytes)
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
    m.add_class::<PyBamTable>()?;
    m.add_class::<PyBamRegionFunction>()?;
    m.add_function(wrap_pyfunction!(progress_counters, m)?)?;
    m.add_function(wrap_pyfunction!(warnings_cursor, m)?)?;
    m.add_function(wrap_pyfunction!(warnings_since, m)?)?;
    m.add("BamError", m.py().get_type::<BamError>())?;
    m.add("DATAFUSION_MAJOR", datafusion_ffi::version())?;
    Ok(())
}
