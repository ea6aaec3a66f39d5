"""BAM files (aligned sequencing reads) as Apache DataFusion tables.

>>> from datafusion import SessionContext
>>> import datafusion_bam as bam
>>> ctx = SessionContext()
>>> bam.register(ctx, "reads", "sample.bam", tags="NM,MD")
>>> ctx.sql("SELECT rname, count(*) FROM reads WHERE mapq >= 30 GROUP BY rname").to_pandas()
>>> ctx.sql("CREATE EXTERNAL TABLE more STORED AS BAM LOCATION 's3://bucket/runs/'")

Reading happens in Rust (the ``datafusion-bam`` crate) with byte-range partitioning, the
``.bai``/``.csi`` index and filter pushdown; rows reach Python only as Arrow data. Remote
locations (``s3://``, ``gs://``, ``http(s)://``) use object stores the extension builds itself
from the environment and ``storage_options``: stores registered on a ``SessionContext`` do not
reach it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if sys.version_info >= (3, 11):
    from typing import TypedDict, Unpack
else:
    from typing_extensions import TypedDict, Unpack

import datafusion
from datafusion import SessionConfig, SessionContext, udtf

if TYPE_CHECKING:
    import polars

from ._datafusion_bam import (
    DATAFUSION_MAJOR,
    AccessDeniedError,
    BamDepthFunction,
    BamError,
    BamHeaderFunction,
    BamRegionFunction,
    BamTable,
    BamTableFactory,
    InvalidOptionError,
    NotFoundError,
    Tally,
    parquet_column_options,
    progress_counters,
    remote_exists,
    upload,
    warnings_cursor,
    warnings_since,
    write_alignments as _write_alignments,
)

__all__ = [
    "AccessDeniedError",
    "BamDepthFunction",
    "BamError",
    "BamHeaderFunction",
    "BamRegionFunction",
    "BamTable",
    "BamTableFactory",
    "BamWarning",
    "InvalidOptionError",
    "NotFoundError",
    "Progress",
    "ReadOptions",
    "Tally",
    "convert_each",
    "depth",
    "enable",
    "read_bam",
    "read_cram",
    "read_sam",
    "register",
    "register_bam",
    "register_cram",
    "register_sam",
    "scan_bam",
    "scan_cram",
    "scan_sam",
    "table",
    "to_bam",
    "to_ipc",
    "to_parquet",
    "write_bam",
    "write_cram",
    "write_sam",
    "write_ipc",
    "write_parquet",
    "warnings_cursor",
    "warnings_since",
]


class BamWarning(UserWarning):
    """Something a scan went on past: damaged data skipped, a missing BGZF end-of-file block,
    an index that does not fit its BAM file."""


def _check_datafusion_version() -> None:
    # datafusion-ffi structs differ between major versions: a mismatch would crash the process.
    installed = datafusion.__version__.split(".")[0]
    if installed != str(DATAFUSION_MAJOR):
        raise ImportError(
            f"datafusion-bam was built for datafusion {DATAFUSION_MAJOR}.x, "
            f"but datafusion {datafusion.__version__} is installed"
        )


_check_datafusion_version()


StorageOptions = dict[str, str]


class ReadOptions(TypedDict, total=False):
    """The options of every function that reads alignment files, passed by keyword:
    :func:`read_bam`, :func:`register_bam`, :func:`table`, :func:`write_parquet` and the others.

    - ``tags``: the fields of the typed ``tags`` struct: ``"auto"`` (the default: the tags of the
      first records), a list (``"NM,MD"``, ``["NM:i", "MD:Z"]``) or ``"none"``. Aux fields the
      struct does not hold are in ``tags_extra``.
    - ``region``: only records overlapping these samtools-style regions (``"chr1:100-200"``, or a
      list), through the index.
    - ``split``: ``False`` reads each file as one partition.
    - ``tag_sample_records``, ``tag_sample_bytes``: how many first records (or bytes) ``"auto"``
      tags are sampled from.
    - ``skip_damaged``: ``True`` skips and counts damaged records instead of failing, each
      reported as a :class:`BamWarning`.
    - ``reference``: the FASTA (indexed by ``.fai``) CRAM records were compressed against.
    - ``storage_options``: the object store of remote locations, over the environment:
      object_store's keys, bare or with the scheme's namespace (``{"region": "eu-west-1"}``,
      ``{"aws.endpoint": "http://localhost:9000", "aws.allow_http": "true"}``).
    """

    tags: str | Sequence[str]
    region: str | Sequence[str]
    split: bool
    tag_sample_records: int
    tag_sample_bytes: int
    skip_damaged: bool
    reference: str | os.PathLike[str]
    storage_options: StorageOptions


def _table_options(function: str, options: ReadOptions) -> tuple[dict[str, str], StorageOptions | None]:
    """The table options (as ``CREATE EXTERNAL TABLE ... OPTIONS`` takes them) and the storage
    options of ``options``; an unknown key is a ``TypeError``, as for any unknown keyword."""
    table_options: dict[str, str] = {}
    for key, value in options.items():
        if key not in ReadOptions.__annotations__:
            raise TypeError(f"{function}() got an unexpected keyword argument {key!r}")
        if value is None or key == "storage_options":
            continue
        if key in ("split", "skip_damaged"):
            if not isinstance(value, bool):
                raise InvalidOptionError(f"option {key}: must be True or False, got {value!r}")
            table_options[key] = "true" if value else "false"
        elif key in ("tags", "region") and not isinstance(value, str):
            table_options[key] = (",".join if key == "tags" else " ".join)(value)  # type: ignore[arg-type]
        elif key == "reference":
            table_options[key] = os.fspath(value)  # type: ignore[arg-type]
        else:
            table_options[key] = str(value)
    return table_options, options.get("storage_options")




class ArrowStreamExportable(Protocol):
    """Anything that exports an Arrow C stream: a datafusion DataFrame, a pyarrow table."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...


def table(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    format: str | None = None,
    **options: Unpack[ReadOptions],
) -> BamTable:
    """Opens alignment files (a path, a directory or a glob, or a list of them) as one table, for
    ``ctx.register_table`` or ``ctx.read_table``. Their format is ``format`` (``"BAM"``,
    ``"CRAM"`` or ``"SAM"``), or else what the names say: paths (or globs) that all end in
    ``.cram`` are CRAM, in ``.sam`` or ``.sam.gz`` SAM, the rest BAM. Its tag columns come from
    all the files, so files with different tags share it. Locations may be local or remote:
    ``s3://bucket/x.bam``, ``gs://bucket/runs/*.bam``, ``https://host/x.bam`` (a file: plain HTTP
    cannot list directories). The options are :class:`ReadOptions`.
    """
    table_options, storage_options = _table_options("table", options)
    return BamTable(_paths(path), table_options, storage_options, format)


def _paths(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    return [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]


def enable(ctx: SessionContext) -> None:
    """Enables BAM in ``ctx``'s SQL: ``CREATE EXTERNAL TABLE ... STORED AS BAM`` (and ``STORED AS
    CRAM``, with option ``reference``, and ``STORED AS SAM``) with everything
    the CLI takes there (files, directories, globs, several locations, ``PARTITIONED BY``,
    ``WITH ORDER``, the table options, and ``aws.*``/``gcp.*``/``http.*`` store options), and the
    ``bam_header(path)``, ``bam_region(path, region, ...)`` and
    ``bam_depth(path [, region] [, options])`` table functions.

    ``COPY ... STORED AS BAM`` is not available in ``ctx``'s SQL: datafusion-python 55 has no way
    to take a file format from an extension (only tables, table factories and functions cross its
    FFI). :func:`write_bam` writes BAM instead, from BAM files or from any query's DataFrame.
    """
    ctx.register_table_factory("BAM", BamTableFactory())
    ctx.register_table_factory("CRAM", BamTableFactory("CRAM"))
    ctx.register_table_factory("SAM", BamTableFactory("SAM"))
    ctx.register_udtf(udtf(BamHeaderFunction(), "bam_header"))
    ctx.register_udtf(udtf(BamRegionFunction(), "bam_region"))
    ctx.register_udtf(udtf(BamDepthFunction(), "bam_depth"))


def depth(
    path: str | os.PathLike[str],
    region: str | None = None,
    *,
    ctx: SessionContext | None = None,
    mode: str | None = None,
    min_mapq: int | None = None,
    exclude_flags: int | None = None,
    include_flags: int | None = None,
    count_deletions: bool | None = None,
    window: int | None = None,
    regions: str | os.PathLike[str] | None = None,
    thresholds: Sequence[int] | None = None,
    max_span: int | None = None,
    reference: str | os.PathLike[str] | None = None,
) -> datafusion.DataFrame:
    """Read depth of a BAM, CRAM or SAM file (or of every file of a directory or glob, with a
    ``file`` column) as a DataFrame, as SQL's ``bam_depth`` gives it (docs/depth.md).

    By default one row per run of equal depth (``rname``, ``start``, ``end`` 1-based and inclusive,
    ``depth``), counted as mosdepth counts (``mode="samtools"`` counts as ``samtools depth``). With
    ``window`` (bases) or ``regions`` (a BED file), the mean depth per window or interval, and with
    ``thresholds`` the bases at or above each depth there. ``region`` (samtools syntax) limits the
    count to one region. A file without an index is counted in byte ranges in parallel;
    ``max_span`` is how far (bases) a read may reach past the next range's first read."""
    ctx = _enabled(ctx)
    words = {
        "mode": mode,
        "min_mapq": min_mapq,
        "exclude_flags": exclude_flags,
        "include_flags": include_flags,
        "count_deletions": None if count_deletions is None else str(count_deletions).lower(),
        "window": window,
        "regions": None if regions is None else os.fspath(regions),
        "thresholds": None if thresholds is None else ",".join(str(t) for t in thresholds),
        "max_span": max_span,
        "reference": None if reference is None else os.fspath(reference),
    }
    for key, value in words.items():
        if value is not None and any(c.isspace() for c in str(value)):
            raise InvalidOptionError(f"option {key}: {value!r} contains white space, which bam_depth's options cannot hold")
    options = " ".join(f"{k}={v}" for k, v in words.items() if v is not None)
    args = [_quote(os.fspath(path))]
    if region is not None:
        args.append(_quote(region))
    if options:
        args.append(_quote(options))
    return ctx.sql(f"SELECT * FROM bam_depth({', '.join(args)})")


def read_bam(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    ctx: SessionContext | None = None,
    **options: Unpack[ReadOptions],
) -> datafusion.DataFrame:
    """BAM files (a path, a directory, a glob, a list of them, or a remote URL) as a DataFusion
    DataFrame, in ``ctx`` (a new context if none), whose SQL then knows BAM (see :func:`enable`).
    Filters on the DataFrame reach the decoder as they do in SQL:
    ``read_bam(p).filter(col("mapq") >= 30)`` decodes only what passes. The options are
    :class:`ReadOptions`."""
    return _read("read_bam", path, "BAM", ctx, options)


def read_cram(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    ctx: SessionContext | None = None,
    **options: Unpack[ReadOptions],
) -> datafusion.DataFrame:
    """CRAM files as a DataFrame, as :func:`read_bam`; ``reference`` names their FASTA."""
    return _read("read_cram", path, "CRAM", ctx, options)


def read_sam(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    ctx: SessionContext | None = None,
    **options: Unpack[ReadOptions],
) -> datafusion.DataFrame:
    """SAM files (plain or bgzipped) as a DataFrame, as :func:`read_bam`."""
    return _read("read_sam", path, "SAM", ctx, options)


def _read(function: str, path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], format: str,
          ctx: SessionContext | None, options: ReadOptions) -> datafusion.DataFrame:
    table_options, storage_options = _table_options(function, options)
    ctx = _enabled(ctx)
    return ctx.read_table(BamTable(_paths(path), table_options, storage_options, format))


_DEFAULT_CONTEXT: SessionContext | None = None
_DEFAULT_CONTEXT_LOCK = threading.Lock()


def _enabled(ctx: SessionContext | None) -> SessionContext:
    """``ctx`` with BAM enabled, or the shared context if it is None."""
    if ctx is None:
        return _default_context()
    enable(ctx)
    return ctx


def _default_context() -> SessionContext:
    """The context of calls given none. It lives as long as the process: a DataFrame's plan
    reaches the extension's tables through its context, which must outlive it."""
    global _DEFAULT_CONTEXT
    with _DEFAULT_CONTEXT_LOCK:
        if _DEFAULT_CONTEXT is None:
            _DEFAULT_CONTEXT = SessionContext()
            enable(_DEFAULT_CONTEXT)
        return _DEFAULT_CONTEXT


def register_bam(
    ctx: SessionContext,
    name: str,
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    **options: Unpack[ReadOptions],
) -> None:
    """Registers BAM files as table ``name`` in ``ctx``, and enables BAM in its SQL (see
    :func:`enable`). The options are :class:`ReadOptions`."""
    _register("register_bam", ctx, name, path, "BAM", options)


def register_cram(
    ctx: SessionContext,
    name: str,
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    **options: Unpack[ReadOptions],
) -> None:
    """Registers CRAM files as table ``name`` in ``ctx``, as :func:`register_bam`; ``reference``
    names their FASTA."""
    _register("register_cram", ctx, name, path, "CRAM", options)


def register_sam(
    ctx: SessionContext,
    name: str,
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    **options: Unpack[ReadOptions],
) -> None:
    """Registers SAM files (plain or bgzipped) as table ``name`` in ``ctx``, as
    :func:`register_bam`."""
    _register("register_sam", ctx, name, path, "SAM", options)


def register(
    ctx: SessionContext,
    name: str,
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    **options: Unpack[ReadOptions],
) -> None:
    """The earlier name of :func:`register_bam`, kept for one release: it reads CRAM or SAM when
    the paths' names say so (see :func:`table`)."""
    _register("register", ctx, name, path, None, options)


def _register(function: str, ctx: SessionContext, name: str,
              path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], format: str | None,
              options: ReadOptions) -> None:
    table_options, storage_options = _table_options(function, options)
    ctx.register_table(name, BamTable(_paths(path), table_options, storage_options, format))
    enable(ctx)


def scan_bam(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    **options: Unpack[ReadOptions],
) -> polars.LazyFrame:
    """BAM files as a polars LazyFrame, streamed batch by batch from the extension through
    polars' IO-plugin interface. The columns polars selects are the only ones decoded; its row
    limit stops the scan; filters on ``mapq``, ``flag``, ``rname``, ``pos`` and ``endpos``
    (comparisons with literals, joined by ``&`` and ``|``) reach the decoder and the index, and
    polars applies every filter itself as well. Needs polars (``pip install
    datafusion-bam[polars]``). The options are :class:`ReadOptions`."""
    return _scan("scan_bam", path, "BAM", options)


def scan_cram(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    **options: Unpack[ReadOptions],
) -> polars.LazyFrame:
    """CRAM files as a polars LazyFrame, as :func:`scan_bam`; ``reference`` names their FASTA."""
    return _scan("scan_cram", path, "CRAM", options)


def scan_sam(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    **options: Unpack[ReadOptions],
) -> polars.LazyFrame:
    """SAM files (plain or bgzipped) as a polars LazyFrame, as :func:`scan_bam`."""
    return _scan("scan_sam", path, "SAM", options)


def _scan(function: str, path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], format: str,
          options: ReadOptions) -> polars.LazyFrame:
    try:
        import polars as pl
        from polars.io.plugins import register_io_source
    except ImportError as e:
        raise ImportError(f"{function} needs polars: pip install 'datafusion-bam[polars]'") from e
    import pyarrow as pa

    table_options, storage_options = _table_options(function, options)
    provider = BamTable(_paths(path), table_options, storage_options, format)
    schema = pl.from_arrow(pa.schema(provider).empty_table()).schema

    def batches(with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
                _batch_size: int | None) -> Iterator[pl.DataFrame]:
        df = _default_context().read_table(provider)
        pushed = _datafusion_filter(predicate) if predicate is not None else None
        if pushed is not None:
            df = df.filter(pushed)
        if with_columns is not None:
            needed = list(dict.fromkeys([*with_columns, *(predicate.meta.root_names() if predicate is not None else [])]))
            df = df.select(*needed)
        if n_rows is not None and predicate is None:
            df = df.limit(n_rows)
        left = n_rows
        for batch in df.execute_stream():
            frame = pl.from_arrow(batch.to_pyarrow())
            assert isinstance(frame, pl.DataFrame)
            if predicate is not None:
                frame = frame.filter(predicate)
            if with_columns is not None:
                frame = frame.select(with_columns)
            if left is not None:
                frame = frame.head(left)
                left -= frame.height
            yield frame
            if left == 0:
                return

    return register_io_source(batches, schema=schema)


# What a polars filter on these columns may pass to the scan: its comparisons, as DataFusion's.
_PUSHED_COLUMNS = frozenset(("mapq", "flag", "rname", "pos", "endpos"))
_COMPARISONS = {"Eq": "__eq__", "NotEq": "__ne__", "Lt": "__lt__", "LtEq": "__le__", "Gt": "__gt__",
                "GtEq": "__ge__"}
_MIRRORED = {"Eq": "Eq", "NotEq": "NotEq", "Lt": "Gt", "LtEq": "GtEq", "Gt": "Lt", "GtEq": "LtEq"}


def _datafusion_filter(predicate: polars.Expr) -> datafusion.Expr | None:
    """The part of a polars predicate the scan can take (None if none): comparisons of the
    pushed columns with literals, under ``&`` (the parts it can take) and ``|`` (both sides or
    nothing). Read from the expression's JSON form; what it does not recognise stays in polars."""
    import json

    try:
        tree = json.loads(predicate.meta.serialize(format="json"))
    except Exception:
        return None
    return _filter_of(tree)


def _filter_of(node: object) -> datafusion.Expr | None:
    from datafusion import col, lit

    binary = node.get("BinaryExpr") if isinstance(node, dict) else None
    if not isinstance(binary, dict):
        return None
    op, left, right = binary.get("op"), binary.get("left"), binary.get("right")
    if op in ("And", "LogicalAnd"):
        parts = [p for p in (_filter_of(left), _filter_of(right)) if p is not None]
        return parts[0] & parts[1] if len(parts) == 2 else (parts[0] if parts else None)
    if op in ("Or", "LogicalOr"):
        a, b = _filter_of(left), _filter_of(right)
        return a | b if a is not None and b is not None else None
    if op not in _COMPARISONS:
        return None
    column, value = _column_of(left), _literal_of(right)
    if column is None or value is None:
        column, value, op = _column_of(right), _literal_of(left), _MIRRORED[op]
    if column not in _PUSHED_COLUMNS or value is None:
        return None
    return getattr(col(column), _COMPARISONS[op])(lit(value[0]))


def _column_of(node: object) -> str | None:
    name = node.get("Column") if isinstance(node, dict) else None
    return name if isinstance(name, str) else None


def _literal_of(node: object) -> tuple[object] | None:
    literal = node.get("Literal") if isinstance(node, dict) else None
    if not isinstance(literal, dict) or len(literal) != 1:
        return None
    (inner,) = literal.values()
    if not isinstance(inner, dict) or len(inner) != 1:
        return None
    ((kind, value),) = inner.items()
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    return (value,)


@dataclass(frozen=True)
class Progress:
    """How far a conversion has got: BAM records decoded and compressed bytes read."""

    records: int
    bytes_read: int
    bytes_total: int
    seconds: float


ProgressCallback = Callable[[Progress], None]


def _progress_bar(p: Progress) -> None:
    share = p.bytes_read / p.bytes_total if p.bytes_total else 1.0
    rate = p.records / p.seconds if p.seconds > 0 else 0.0
    sys.stderr.write(f"\r{share:6.1%}  {p.records:,} records  {rate:,.0f} records/s")
    sys.stderr.flush()


class _TqdmBar:
    """A tqdm bar over the compressed bytes a conversion reads, with its records as a postfix."""

    def __init__(self, tqdm: Callable[..., object]) -> None:
        self.bar = tqdm(total=0, unit="B", unit_scale=True, desc="reading", leave=True)

    def show(self, p: Progress) -> None:
        bar = self.bar
        bar.total = p.bytes_total  # type: ignore[attr-defined]
        bar.n = p.bytes_read  # type: ignore[attr-defined]
        bar.set_postfix_str(f"{p.records:,} records", refresh=False)  # type: ignore[attr-defined]
        bar.refresh()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.bar.close()  # type: ignore[attr-defined]


def _tqdm_bar() -> _TqdmBar | None:
    """A bar through tqdm (the one notebooks show) if it is installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return _TqdmBar(tqdm)


@contextlib.contextmanager
def _reporting(progress: bool | ProgressCallback, stacklevel: int, tally: Tally | None) -> Iterator[None]:
    """Reports progress twice a second while the block runs, and the BAM warnings it caused
    (``stacklevel`` counted from here to the user's call). The progress is that of the tables
    made with ``tally``, or of every scan in the process without one."""
    bar = _tqdm_bar() if progress is True else None
    if bar is not None:
        callback: ProgressCallback | None = bar.show
    else:
        callback = _progress_bar if progress is True else (progress or None)
    counters = tally.counters if tally is not None else progress_counters
    stop = threading.Event()
    watcher = None
    start_records, start_bytes, start_expected = counters()
    started = time.monotonic()

    def report() -> None:
        assert callback is not None
        records, read, expected = counters()
        callback(Progress(records - start_records, read - start_bytes, expected - start_expected,
                          time.monotonic() - started))

    if callback is not None:
        def watch() -> None:
            while not stop.wait(0.5):
                report()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
    warned = warnings_cursor()
    try:
        yield
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
            report()
            if bar is not None:
                bar.close()
            elif progress is True:
                sys.stderr.write("\n")
        messages, dropped, _ = warnings_since(warned)
        for message in messages:
            warnings.warn(message, BamWarning, stacklevel=stacklevel)
        if dropped:
            warnings.warn(f"{dropped} more BAM warnings were dropped", BamWarning, stacklevel=stacklevel)


def _select(columns: Sequence[str] | None, source: str, where: str | None, min_mapq: int | None) -> str:
    projection = ", ".join('"' + c.replace('"', '""') + '"' for c in columns) if columns else "*"
    conditions = [f"({where})"] if where else []
    if min_mapq is not None:
        conditions.append(f"mapq >= {int(min_mapq)}")
    filter_sql = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {projection} FROM {source}{filter_sql}"


def _is_remote(location: str) -> bool:
    scheme, found, _ = location.partition("://")
    return bool(found) and scheme != "file"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _convert(
    function: str,
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    stored_as: str,
    *,
    columns: Sequence[str] | None,
    where: str | None,
    min_mapq: int | None,
    progress: bool | ProgressCallback,
    ctx: SessionContext | None,
    options: ReadOptions,
) -> int:
    table_options, storage_options = _table_options(function, options)
    sources = _paths(paths)
    if not sources:
        raise ValueError("no BAM files given")
    output = os.fspath(output)
    # zstd level 1, as the CLI writes: files as small as level 3's, about 1.15x faster.
    ctx = ctx or SessionContext(SessionConfig().set("datafusion.execution.parquet.compression", "zstd(1)"))
    # One table over all inputs: one schema, whatever tags each file has.
    name = f"__bam_input_{os.getpid()}_{threading.get_ident()}"
    tally = Tally()
    ctx.register_table(name, BamTable(sources, table_options, storage_options, None, tally))
    query = _select(columns, name, where, min_mapq)

    # Written under a temporary name and renamed when complete, so a failed or interrupted
    # conversion never leaves an output that looks finished. A remote output is written to a
    # local temporary file first and then uploaded in one multipart upload, which the store
    # shows only once complete: the writer runs in datafusion-python, whose stores the
    # extension's cannot reach.
    remote_output = _is_remote(output)
    # The extension makes DataFusion write one file, not a directory.
    extension = {"PARQUET": "parquet", "ARROW": "arrow"}[stored_as]
    if remote_output:
        fd, partial = tempfile.mkstemp(prefix=".bam-upload-", suffix=f".{extension}")
        os.close(fd)
        os.remove(partial)
    else:
        directory, base = os.path.split(os.path.abspath(output))
        partial = os.path.join(directory, f".{base}.partial-{os.getpid()}.{extension}")
    copy = f"COPY ({query}) TO {_quote(partial)} STORED AS {stored_as}"
    if stored_as == "PARQUET":
        # The CLI's per-column defaults (no dictionaries for names, bases, qualities...).
        pairs = ", ".join(f"{_quote('format.' + k)} {_quote(v)}" for k, v in parquet_column_options())
        copy += f" OPTIONS ({pairs})"

    try:
        # Frames to the user: this generator, contextlib, _convert, write_parquet/write_ipc.
        with _reporting(progress, stacklevel=5, tally=tally):
            result = ctx.sql(copy).collect()
            if remote_output:
                upload(partial, output, storage_options)
                os.remove(partial)
            else:
                os.replace(partial, output)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    finally:
        ctx.deregister_table(name)
    return int(result[0].column(0)[0].as_py())


def write_parquet(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    where: str | None = None,
    min_mapq: int | None = None,
    progress: bool | ProgressCallback = False,
    ctx: SessionContext | None = None,
    **options: Unpack[ReadOptions],
) -> int:
    """Converts BAM files (one path or several; CRAM files when the paths end in ``.cram``, with
    ``reference`` their FASTA) to one Parquet file; returns the rows written.

    A thin wrapper over ``COPY (SELECT ...) TO 'output' STORED AS PARQUET``. ``where`` is a SQL
    condition over the table's columns; ``min_mapq`` and ``region`` are pushed into the decoder
    and the index. Inputs and ``output`` may be remote (``s3://``, ``gs://``, ``http(s)://`` for
    inputs), their stores set up from the environment and ``storage_options`` (see
    :func:`table`); an output appears only when complete. ``progress=True`` draws a tqdm bar
    when tqdm is installed (a line on stderr otherwise); a callable receives a :class:`Progress`
    twice a second, counting this call's reads only. Session settings
    (Parquet compression, partitions) come from ``ctx`` when given; without it, zstd level 1 as
    in the CLI. The CLI's per-column Parquet settings apply either way (no dictionary for
    ``qname``, ``seq``, ``qual``, ``cigar`` and positions; no statistics for ``seq`` and
    ``qual``).
    """
    return _convert("write_parquet", paths, output, "PARQUET", columns=columns, where=where, min_mapq=min_mapq,
                    progress=progress, ctx=ctx, options=options)


def write_ipc(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    where: str | None = None,
    min_mapq: int | None = None,
    progress: bool | ProgressCallback = False,
    ctx: SessionContext | None = None,
    **options: Unpack[ReadOptions],
) -> int:
    """Converts BAM, CRAM or SAM files to one Arrow IPC file; as :func:`write_parquet` otherwise."""
    return _convert("write_ipc", paths, output, "ARROW", columns=columns, where=where, min_mapq=min_mapq,
                    progress=progress, ctx=ctx, options=options)


def write_bam(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | ArrowStreamExportable,
    output: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    where: str | None = None,
    min_mapq: int | None = None,
    region: str | Sequence[str] | None = None,
    skip_damaged: bool | None = None,
    header: str | os.PathLike[str] | None = None,
    compression_level: int | None = None,
    index: str | None = None,
    sort: bool = False,
    storage_options: StorageOptions | None = None,
    progress: bool | ProgressCallback = False,
) -> int:
    """Writes reads as one BAM file; returns the records written. ``COPY ... STORED AS BAM``, run
    by the extension (datafusion-python cannot take a file format from it).

    ``source`` is BAM files (as :func:`write_parquet` takes them; ``region`` and ``skip_damaged``
    apply to them), or any object with ``__arrow_c_stream__`` that has the table's columns: a
    ``datafusion`` DataFrame (``ctx.sql("SELECT * FROM reads WHERE ...")``, reads of a Parquet
    copy...), a pyarrow table, a polars DataFrame; or a polars LazyFrame (such as
    :func:`scan_bam` gives), which polars runs batch by batch without collecting it whole. ``columns``, ``where`` and ``min_mapq`` select as
    in :func:`write_parquet`. SAM's eleven mandatory columns are needed; ``tags`` and
    ``tags_extra`` give the aux fields back.

    ``header`` names the BAM file whose header the output takes; BAM files given as ``source``
    supply their own, other sources need it. The output may be remote (``s3://``, ``gs://``); it
    appears only when complete, and a failure leaves nothing. ``compression_level`` is BGZF's,
    0 to 9 (default 6). ``sort=True`` sorts the rows by coordinate (``ORDER BY rname, pos``, in
    the extension: an ordering does not cross the Arrow stream of a DataFrame), so the output is
    marked ``SO:coordinate`` when the header's reference names are in text order.
    ``index="bai"`` (or ``"csi"``) sorts so too and writes the index beside the output.
    """
    options: dict[str, str] = {}
    if compression_level is not None:
        options["compression_level"] = str(int(compression_level))
    if index is not None:
        options["index"] = index
    return _write_alignments_of("BAM", source, output, options, columns=columns, where=where, min_mapq=min_mapq,
                                region=region, skip_damaged=skip_damaged, header=header,
                                sort=sort or index is not None, storage_options=storage_options, progress=progress)


def write_sam(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | ArrowStreamExportable,
    output: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    where: str | None = None,
    min_mapq: int | None = None,
    region: str | Sequence[str] | None = None,
    skip_damaged: bool | None = None,
    header: str | os.PathLike[str] | None = None,
    sort: bool = False,
    storage_options: StorageOptions | None = None,
    progress: bool | ProgressCallback = False,
) -> int:
    """Writes reads as one SAM file, BGZF-compressed when ``output`` ends in ``.gz`` or ``.bgz``
    (as samtools and tabix read it); returns the records written. ``COPY ... STORED AS SAM``;
    sources and the other arguments as in :func:`write_bam`.
    """
    return _write_alignments_of("SAM", source, output, {}, columns=columns, where=where, min_mapq=min_mapq,
                                region=region, skip_damaged=skip_damaged, header=header, sort=sort,
                                storage_options=storage_options, progress=progress)


def write_cram(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | ArrowStreamExportable,
    output: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str],
    columns: Sequence[str] | None = None,
    where: str | None = None,
    min_mapq: int | None = None,
    region: str | Sequence[str] | None = None,
    skip_damaged: bool | None = None,
    header: str | os.PathLike[str] | None = None,
    sort: bool = False,
    index: str | None = None,
    storage_options: StorageOptions | None = None,
    progress: bool | ProgressCallback = False,
) -> int:
    """Writes reads as one CRAM file compressed against ``reference`` (a local FASTA with its
    ``.fai``, holding every sequence of the header); returns the records written.
    ``COPY ... STORED AS CRAM``; sources and the other arguments as in :func:`write_bam`. A
    sequence the reference lacks, or whose MD5 differs from the header's ``M5``, raises
    :class:`BamError` naming it, and nothing is written. ``index="crai"`` sorts by coordinate
    and writes ``output.crai`` beside a local output.
    """
    options = {"reference": os.fspath(reference)}
    if index is not None:
        options["index"] = index
    return _write_alignments_of("CRAM", source, output, options, columns=columns, where=where, min_mapq=min_mapq,
                                region=region, skip_damaged=skip_damaged, header=header,
                                sort=sort or index is not None, storage_options=storage_options, progress=progress)


def _write_alignments_of(
    stored_as: str,
    source: object,
    output: str | os.PathLike[str],
    options: dict[str, str],
    *,
    columns: Sequence[str] | None,
    where: str | None,
    min_mapq: int | None,
    region: str | Sequence[str] | None,
    skip_damaged: bool | None,
    header: str | os.PathLike[str] | None,
    sort: bool,
    storage_options: StorageOptions | None,
    progress: bool | ProgressCallback,
) -> int:
    """The writers' shared part: the source as table ``input``, then ``COPY ... STORED AS``."""
    caller = f"write_{stored_as.lower()}"
    tally = None  # the rows of a DataFrame come from scans of its own: the process's counters
    if _is_lazy_frame(source):
        source = _lazy_frame_stream(source)
    if isinstance(source, (str, os.PathLike)) or not hasattr(source, "__arrow_c_stream__"):
        sources = _paths(source)  # type: ignore[arg-type]
        if not sources:
            raise ValueError("no BAM files given")
        table_options, _ = _table_options(caller, {"region": region, "skip_damaged": skip_damaged})
        tally = Tally()
        source = BamTable(sources, table_options, storage_options, None, tally)
    elif region is not None or skip_damaged is not None:
        raise ValueError("region and skip_damaged apply to BAM files; filter a DataFrame in its query")
    elif header is None:
        raise ValueError(f"a {stored_as} output needs a header: give header='path/to/file.bam' with rows "
                         "that do not come from BAM files")
    options = dict(options)
    if header is not None:
        options["header"] = os.fspath(header)
    query = _select(columns, '"input"', where, min_mapq)
    if sort:
        query += " ORDER BY rname, pos"
    with _reporting(progress, stacklevel=5, tally=tally):
        return _write_alignments(source, query, os.fspath(output), stored_as, options, storage_options)


# The earlier names, kept for one release.
to_parquet = write_parquet
to_ipc = write_ipc
to_bam = write_bam


def _is_lazy_frame(source: object) -> bool:
    polars = sys.modules.get("polars")
    return polars is not None and isinstance(source, polars.LazyFrame)


def _lazy_frame_stream(frame: polars.LazyFrame) -> object:
    """A polars LazyFrame as an Arrow stream, run batch by batch by polars' streaming engine
    rather than collected whole."""
    import polars as pl
    import pyarrow as pa

    schema = pl.DataFrame(schema=frame.collect_schema()).to_arrow().schema
    batches = (batch for part in frame.collect_batches() for batch in part.to_arrow().to_batches())
    return pa.RecordBatchReader.from_batches(schema, batches)


def _exists(location: str, storage_options: StorageOptions | None) -> bool:
    return remote_exists(location, storage_options) if _is_remote(location) else os.path.exists(location)


def convert_each(
    paths: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    stored_as: str = "parquet",
    progress: bool | ProgressCallback = False,
    ctx: SessionContext | None = None,
    **options: Unpack[ReadOptions],
) -> dict[str, int | None]:
    """Converts each BAM file (or CRAM, with ``reference``, or SAM, by their names) to its own
    ``output_dir/<name>.parquet`` (or ``.arrow`` with ``stored_as="arrow"``), resumably: an output appears only when complete, and outputs that
    exist already are skipped. Returns, per input, the rows written (``None`` when skipped).
    Inputs and ``output_dir`` may be remote (see :func:`write_parquet`). Stops at the first
    failure; rerun to resume.
    """
    convert = {"parquet": write_parquet, "arrow": write_ipc}.get(stored_as.lower())
    if convert is None:
        raise ValueError(f"unknown output format {stored_as!r}: use 'parquet' or 'arrow'")
    output_dir = os.fspath(output_dir)
    remote_dir = _is_remote(output_dir)
    _table_options("convert_each", options)  # unknown keys fail before any file is written
    storage_options = options.get("storage_options")
    outputs = {}
    for path in paths:
        path = os.fspath(path)
        name = posixpath.basename(path) if _is_remote(path) else os.path.basename(path)
        stem = next((name[: -len(ext)] for ext in (".bam", ".cram", ".sam.gz", ".sam") if name.endswith(ext)), name)
        file_name = f"{stem}.{stored_as.lower()}"
        output = f"{output_dir.rstrip('/')}/{file_name}" if remote_dir else os.path.join(output_dir, file_name)
        if output in outputs.values():
            raise ValueError(f"two inputs would both be converted to {output}: give files with distinct names")
        outputs[path] = output
    if not remote_dir:
        os.makedirs(output_dir, exist_ok=True)
    done: dict[str, int | None] = {}
    for path, output in outputs.items():
        if _exists(output, storage_options):
            done[path] = None
            continue
        done[path] = convert(path, output, progress=progress, ctx=ctx, **options)
    return done
