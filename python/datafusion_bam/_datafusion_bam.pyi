"""Type stubs of the Rust extension module (python/src/lib.rs)."""

from typing import Any, Sequence

DATAFUSION_MAJOR: int

class BamError(Exception):
    """A BAM file, location or option could not be used."""

class NotFoundError(BamError, FileNotFoundError):
    """A location (file, directory, index, reference) does not exist."""

class InvalidOptionError(BamError, ValueError):
    """A table option, region or argument has a value that cannot be used."""

class AccessDeniedError(BamError, PermissionError):
    """A store refused the credentials, or their access to a location."""

class BamTable:
    """BAM files (a path, a directory of .bam files or a glob, or a list of them) as one
    DataFusion table, with one schema over all the files.

    ``options`` takes the keys of ``CREATE EXTERNAL TABLE ... OPTIONS``: ``tags``, ``region``,
    ``split``, ``tag_sample_records``, ``tag_sample_bytes``, ``skip_damaged``, ``reference``;
    ``storage_options`` configures the object store of remote locations. ``format`` (``"BAM"``,
    ``"CRAM"`` or ``"SAM"``) overrides the format the paths' names suggest; ``tally`` counts its
    scans' progress apart from other scans. Opening reads the
    headers; errors raise :class:`BamError`.
    """

    def __init__(
        self,
        path: str | Sequence[str],
        options: dict[str, str] | None = None,
        storage_options: dict[str, str] | None = None,
        format: str | None = None,
        tally: Tally | None = None,
    ) -> None: ...
    def __arrow_c_schema__(self) -> Any: ...
    def __datafusion_table_provider__(self, session: Any) -> Any: ...

class Tally:
    """Progress counters of one caller's tables (``BamTable(..., tally=t)``), apart from other
    scans running at once."""

    def __init__(self) -> None: ...
    def counters(self) -> tuple[int, int, int]:
        """Records decoded, compressed bytes read and compressed bytes expected."""

class BamTableFactory:
    """The table factory of ``STORED AS BAM`` (or of ``STORED AS CRAM``, made with ``"CRAM"``),
    for ``SessionContext.register_table_factory``."""

    def __init__(self, format: str = "BAM") -> None: ...
    def __datafusion_table_provider_factory__(self, codec: Any) -> Any: ...

class BamHeaderFunction:
    """The ``bam_header(path)`` table function, for ``datafusion.udtf``."""

    def __init__(self) -> None: ...
    def __datafusion_table_function__(self, session: Any) -> Any: ...

class BamDepthFunction:
    """The ``bam_depth(path [, region] [, options])`` table function, for ``datafusion.udtf``."""

    def __init__(self) -> None: ...
    def __datafusion_table_function__(self, session: Any) -> Any: ...

class BamRegionFunction:
    """The ``bam_region(path, region, ...)`` table function, for ``datafusion.udtf``."""

    def __init__(self) -> None: ...
    def __datafusion_table_function__(self, session: Any) -> Any: ...

def parquet_column_options() -> list[tuple[str, str]]:
    """The per-column Parquet settings of the CLI's COPY and of ``to_parquet``, as ``(key, value)``
    pairs for ``COPY ... OPTIONS ('format.<key>' '<value>')``."""

def progress_counters() -> tuple[int, int, int]:
    """(records decoded, compressed bytes read, compressed bytes the scans expect to read) by BAM
    scans in this process so far."""

def remote_exists(location: str, storage_options: dict[str, str] | None = None) -> bool:
    """Whether an object exists at a remote location (``s3://``, ``gs://``, ``http(s)://``)."""

def upload(path: str, location: str, storage_options: dict[str, str] | None = None) -> None:
    """Uploads a local file to a remote location in one multipart upload, visible once complete."""

def write_alignments(
    source: BamTable | object,
    query: str,
    output: str,
    stored_as: str,
    options: dict[str, str] | None = None,
    storage_options: dict[str, str] | None = None,
) -> int:
    """Runs ``COPY (query) TO output STORED AS <stored_as> OPTIONS (options)`` (``BAM``, ``SAM``
    or ``CRAM``) with ``source`` (a :class:`BamTable` or an object with ``__arrow_c_stream__``)
    as table ``input``; returns the records written."""

def warnings_cursor() -> int:
    """The cursor after the latest BAM warning in this process, for :func:`warnings_since`."""

def warnings_since(cursor: int) -> tuple[list[str], int, int]:
    """BAM warnings recorded after ``cursor``: (messages, how many of those were dropped from the
    process's last 1000, the new cursor)."""
