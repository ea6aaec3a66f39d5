"""The DataFusion shape: `read_*` returning DataFrames, `register_*`, and one options type.

Run by `cargo test` (python/tests/pytest.rs), which builds the extension first.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
from datafusion import SessionContext, col, lit
from datafusion import functions as f
from oracle import DATA, SAMPLE, samtools, samtools_count, sql_count

import datafusion_bam as bam

READERS = [bam.read_bam, bam.read_cram, bam.read_sam]
REGISTERS = [bam.register_bam, bam.register_cram, bam.register_sam, bam.register]


def test_read_bam_gives_a_dataframe_equal_to_samtools() -> None:
    df = bam.read_bam(SAMPLE)
    assert df.count() == samtools_count(SAMPLE)
    counts = df.aggregate([col("rname")], [f.count(lit(1)).alias("n")]).to_pydict()
    # idxstats: per reference, the mapped records and the unmapped ones placed on it.
    expected = {}
    for line in samtools("idxstats", SAMPLE).splitlines():
        name, _, mapped, unmapped = line.split("\t")
        if name != "*" and int(mapped) + int(unmapped):
            expected[name] = int(mapped) + int(unmapped)
    got = {name: n for name, n in zip(counts["rname"], counts["n"]) if name is not None}
    assert got == expected


def test_dataframe_filters_reach_the_decoder_and_the_index(capsys: pytest.CaptureFixture[str]) -> None:
    df = bam.read_bam(SAMPLE).filter(col("mapq") >= lit(30))
    # explain(): the scan takes the filter whole (no FilterExec stays above it); the extension's
    # own plan is opaque across the FFI boundary, so its logical scan shows it.
    df.explain()
    shown = capsys.readouterr().out
    assert "full_filters=[" in shown and "mapq" in shown, shown
    assert "FilterExec" not in shown, shown
    assert df.count() == samtools_count("-q", "30", SAMPLE)
    # A region's columns go to the index: far fewer records read than the file holds.
    before = bam.progress_counters()[0]
    region = bam.read_bam(SAMPLE).filter((col("rname") == lit("chr3")) & (col("pos") <= lit(5000)) & (col("endpos") >= lit(1000)))
    assert region.count() == samtools_count(SAMPLE, "chr3:1000-5000") > 0
    assert bam.progress_counters()[0] - before < samtools_count(SAMPLE) // 4


def test_read_cram_and_read_sam_equal_samtools(tmp_path: Path) -> None:
    cram, reference = DATA / "cram" / "bwa_mem.cram", DATA / "cram" / "ref.fa"
    assert bam.read_cram(cram, reference=reference).count() == samtools_count(str(cram))
    sam = DATA / "sam" / "sorted_bai.sam.gz"
    assert bam.read_sam(sam).count() == samtools_count(str(sam))
    # The format is the function's, whatever the name says.
    renamed = tmp_path / "reads.data"
    shutil.copy(cram, renamed)
    assert bam.read_cram(renamed, reference=reference).count() == samtools_count(str(cram))
    with pytest.raises(bam.BamError, match="reads.data"):
        bam.read_bam(renamed).count()


def test_read_bam_takes_a_list_a_directory_and_a_context(tmp_path: Path) -> None:
    copies = [tmp_path / f"s{i}.bam" for i in range(2)]
    for copy in copies:
        shutil.copy(SAMPLE, copy)
    n = samtools_count(SAMPLE)
    assert bam.read_bam(copies).count() == 2 * n
    assert bam.read_bam(tmp_path).count() == 2 * n
    ctx = SessionContext()
    df = bam.read_bam(SAMPLE, ctx=ctx, tags="NM")
    assert [f.name for f in df.schema()][-2:] == ["tags", "tags_extra"]
    # The context's SQL knows BAM afterwards.
    assert sql_count(ctx, f"SELECT count(*) FROM bam_region('{SAMPLE}', 'chr1:1-1000')") == samtools_count(SAMPLE, "chr1:1-1000")


def test_register_functions_name_a_table(tmp_path: Path) -> None:
    ctx = SessionContext()
    bam.register_bam(ctx, "reads", SAMPLE, region="chr1")
    assert sql_count(ctx, "SELECT count(*) FROM reads") == samtools_count(SAMPLE, "chr1")
    cram, reference = DATA / "cram" / "bwa_mem.cram", DATA / "cram" / "ref.fa"
    bam.register_cram(ctx, "crams", cram, reference=reference)
    assert sql_count(ctx, "SELECT count(*) FROM crams") == samtools_count(str(cram))
    bam.register_sam(ctx, "sams", DATA / "sam" / "sorted_bai.sam.gz")
    assert sql_count(ctx, "SELECT count(*) FROM sams") == samtools_count(str(DATA / "sam" / "sorted_bai.sam.gz"))
    # The earlier name still works, and tells the format from the names.
    bam.register(ctx, "old", cram, reference=reference)
    assert sql_count(ctx, "SELECT count(*) FROM old") == samtools_count(str(cram))


@pytest.mark.parametrize("function", READERS + [bam.table])
def test_options_are_checked_by_key_and_value(function) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'tag'"):
        function(SAMPLE, tag="NM")
    with pytest.raises(bam.InvalidOptionError, match="split") as error:
        function(SAMPLE, split="maybe")
    assert isinstance(error.value, ValueError) and isinstance(error.value, bam.BamError)
    with pytest.raises(bam.NotFoundError, match="no_such.bam") as missing:
        function("no_such.bam")
    assert isinstance(missing.value, FileNotFoundError)


def test_every_reader_takes_the_one_options_type() -> None:
    keys = set(bam.ReadOptions.__annotations__)
    assert keys >= {"tags", "region", "reference", "storage_options", "skip_damaged"}
    for key in keys:
        assert f"``{key}``" in bam.ReadOptions.__doc__, key
    scanners = [bam.scan_bam, bam.scan_cram, bam.scan_sam]
    functions = READERS + REGISTERS + scanners + [bam.table, bam.write_parquet, bam.write_ipc, bam.convert_each]
    for function in functions:
        options = inspect.signature(function).parameters["options"]
        assert options.kind is inspect.Parameter.VAR_KEYWORD, function.__name__
        assert options.annotation == "Unpack[ReadOptions]", function.__name__


def test_column_names_are_quoted_in_queries() -> None:
    assert bam._select(['odd"name', "mapq"], "t", None, None) == 'SELECT "odd""name", "mapq" FROM t'


def test_the_earlier_writer_names_are_the_writers() -> None:
    assert (bam.to_parquet, bam.to_ipc, bam.to_bam) == (bam.write_parquet, bam.write_ipc, bam.write_bam)


def test_each_table_counts_its_own_progress() -> None:
    long_reads = str(DATA / "long_reads.bam")
    mine, theirs = bam.Tally(), bam.Tally()
    ctx = SessionContext()
    ctx.register_table("mine", bam.BamTable(SAMPLE, None, None, None, mine))
    ctx.register_table("theirs", bam.BamTable(long_reads, None, None, None, theirs))
    # count(flag), not count(*): the scans must run (a count of rows may come from statistics).
    assert sql_count(ctx, "SELECT count(flag) FROM mine") == samtools_count(SAMPLE)
    assert sql_count(ctx, "SELECT count(flag) FROM theirs") == samtools_count(long_reads)
    assert mine.counters()[0] == samtools_count(SAMPLE)
    assert theirs.counters()[0] == samtools_count(long_reads)
    assert 0 < mine.counters()[1] <= mine.counters()[2] <= Path(SAMPLE).stat().st_size


def test_two_conversions_at_once_report_their_own_progress(tmp_path: Path) -> None:
    import threading

    long_reads = str(DATA / "long_reads.bam")
    start = threading.Barrier(2)
    last: dict[str, bam.Progress] = {}

    def convert(name: str, source: str) -> None:
        start.wait()
        bam.write_parquet(source, tmp_path / f"{name}.parquet", progress=lambda p: last.__setitem__(name, p))

    threads = [threading.Thread(target=convert, args=a) for a in (("a", SAMPLE), ("b", long_reads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert last["a"].records == samtools_count(SAMPLE)
    assert last["b"].records == samtools_count(long_reads)
    assert 0 < last["a"].bytes_read <= last["a"].bytes_total <= Path(SAMPLE).stat().st_size


def test_progress_true_draws_a_tqdm_bar_of_the_calls_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bam.write_parquet(SAMPLE, tmp_path / "x.parquet", progress=True)
    shown = capsys.readouterr().err
    assert "reading" in shown and f"{samtools_count(SAMPLE):,} records" in shown, shown


def test_a_store_that_refuses_access_raises_permission_error() -> None:
    import http.server
    import threading

    class Forbidden(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802
            self.send_response(403)
            self.end_headers()

        do_GET = do_HEAD  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        location = f"http://127.0.0.1:{server.server_address[1]}/private/x.bam"
        with pytest.raises(bam.AccessDeniedError, match="private/x.bam") as error:
            bam.read_bam(location, storage_options={"allow_http": "true"})
        assert isinstance(error.value, PermissionError) and isinstance(error.value, bam.BamError)
    finally:
        server.shutdown()


def _decoded_bytes(df, capsys: pytest.CaptureFixture[str]) -> int:
    """The scan's `decoded_bytes` metric, as EXPLAIN ANALYZE shows it across the FFI boundary."""
    import re

    df.explain(analyze=True)
    shown = capsys.readouterr().out
    found = re.findall(r"decoded_bytes=(\d+(?:\.\d+)?)\s*([KMG]?)", shown)
    assert found, shown
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}
    return int(sum(float(n) * scale[unit] for n, unit in found))


def test_projection_reaches_the_decoder(capsys: pytest.CaptureFixture[str]) -> None:
    two = _decoded_bytes(bam.read_bam(SAMPLE).select("flag", "mapq"), capsys)
    every = _decoded_bytes(bam.read_bam(SAMPLE), capsys)
    assert 0 < two * 20 < every, (two, every)
