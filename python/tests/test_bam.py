"""The Python package against samtools, on the BAM files shipped in tests/data.

Run by `cargo test` (python/tests/pytest.rs), which builds the extension first.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext
from oracle import DATA, SAMPLE, samtools, samtools_count, sql_count

import datafusion_bam as bam


@pytest.fixture
def ctx() -> SessionContext:
    ctx = SessionContext()
    bam.register(ctx, "reads", SAMPLE, tags="NM,MD")
    return ctx


def test_counts_per_reference_match_samtools(ctx: SessionContext) -> None:
    df = ctx.sql("SELECT rname, count(*) AS n FROM reads WHERE mapq >= 30 GROUP BY rname").to_pandas()
    ours = {r.rname: r.n for r in df.itertuples() if r.rname is not None}
    references = [line.split("\t")[0] for line in samtools("idxstats", SAMPLE).splitlines() if not line.startswith("*")]
    expected = {ref: samtools_count("-q", "30", SAMPLE, ref) for ref in references}
    assert {k: v for k, v in expected.items() if v} == ours
    assert sum(ours.values()) > 0


def test_rows_match_samtools_field_by_field(ctx: SessionContext) -> None:
    table = ctx.sql(
        "SELECT qname, flag, rname, pos, mapq, cigar, seq, qual, tags['NM'] AS nm, tags['MD'] AS md FROM reads"
    ).to_arrow_table()
    ours = Counter(zip(*(table.column(i).to_pylist() for i in range(table.num_columns))))

    def none_if_star(value: str) -> str | None:
        return None if value == "*" else value

    expected: Counter = Counter()
    for line in samtools("view", SAMPLE).splitlines():
        f = line.split("\t")
        tags = dict((t[:2], t[5:]) for t in f[11:])
        mapq = int(f[4])
        expected[(
            f[0], int(f[1]), none_if_star(f[2]), int(f[3]) or None, None if mapq == 255 else mapq,
            none_if_star(f[5]), none_if_star(f[9]), none_if_star(f[10]),
            int(tags["NM"]) if "NM" in tags else None, tags.get("MD"),
        )] += 1
    assert sum(expected.values()) == table.num_rows > 0
    assert ours == expected


def test_dataframes_of_every_kind(ctx: SessionContext) -> None:
    df = ctx.sql("SELECT qname, pos FROM reads WHERE rname = 'chr2' ORDER BY qname, pos")
    expected = samtools_count(SAMPLE, "chr2")
    pandas_df = df.to_pandas()
    polars_df = df.to_polars()
    arrow_table = df.to_arrow_table()
    assert len(pandas_df) == len(polars_df) == arrow_table.num_rows == expected > 0
    assert pandas_df["qname"].tolist() == polars_df["qname"].to_list() == arrow_table.column("qname").to_pylist()


def test_schema_is_readable_by_pyarrow() -> None:
    schema = pa.schema(bam.table(SAMPLE, tags="NM"))
    assert schema.names[:4] == ["qname", "flag", "rname", "pos"]
    assert schema.field("tags").type.field("NM").type == pa.int64()


def test_region_function_matches_samtools(ctx: SessionContext) -> None:
    for region in ["chr1:100000-120000", "chr3", "chrM:1-500", "*"]:
        ours = sql_count(ctx, f"SELECT count(*) FROM bam_region('{SAMPLE}', '{region}')")
        assert ours == samtools_count(SAMPLE, region), region


def test_region_filter_reads_only_indexed_chunks(ctx: SessionContext) -> None:
    total = samtools_count(SAMPLE)
    before = bam.progress_counters()[0]
    n = sql_count(ctx, "SELECT count(*) FROM reads WHERE rname = 'chr3' AND pos <= 5000 AND endpos >= 1000")
    read = bam.progress_counters()[0]
    assert n == samtools_count(SAMPLE, "chr3:1000-5000") > 0
    # Pushed through the FFI boundary to the index: far fewer records decoded than the file holds.
    assert read - before < total // 4


def test_write_parquet_with_region_mapq_and_progress(tmp_path: Path) -> None:
    out = tmp_path / "chr1.parquet"
    seen: list[bam.Progress] = []
    rows = bam.write_parquet(SAMPLE, out, region="chr1:100000-200000", min_mapq=30, progress=seen.append)
    expected = samtools_count("-q", "30", SAMPLE, "chr1:100000-200000")
    assert rows == pq.read_table(out).num_rows == expected > 0
    assert seen and seen[-1].records >= expected
    # The total is what the index selected for the region, a part of the file; reading stops at
    # the region's end, which may come before the selection's.
    assert 0 < seen[-1].bytes_read <= seen[-1].bytes_total < os.path.getsize(SAMPLE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chr1.parquet"]


def test_write_parquet_writes_with_the_cli_defaults(tmp_path: Path) -> None:
    out = tmp_path / "all.parquet"
    assert bam.write_parquet(SAMPLE, out) == samtools_count(SAMPLE)
    group = pq.ParquetFile(out).metadata.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    assert columns["seq"].compression == "ZSTD"
    assert not columns["seq"].has_dictionary_page and not columns["seq"].is_stats_set
    assert columns["flag"].has_dictionary_page and columns["flag"].is_stats_set
    # A projection without the columns the options name writes too.
    assert bam.write_parquet(SAMPLE, tmp_path / "flag.parquet", columns=["flag"]) == samtools_count(SAMPLE)


def test_write_ipc_of_several_files(tmp_path: Path) -> None:
    out = tmp_path / "both.arrow"
    files = [SAMPLE, str(DATA / "name_sorted.bam")]
    rows = bam.write_ipc(files, out, columns=["qname", "flag", "mapq"], where="flag & 4 = 0", tags="none")
    expected = sum(samtools_count("-F", "4", f) for f in files)
    with pa.ipc.open_file(out) as reader:
        table = reader.read_all()
    assert rows == table.num_rows == expected > 0
    assert table.column_names == ["qname", "flag", "mapq"]


def test_files_with_different_tags_convert_together(tmp_path: Path, ctx: SessionContext) -> None:
    long_reads = str(DATA / "long_reads.bam")
    files = [SAMPLE, long_reads]
    assert samtools_count("-d", "RG", long_reads) == 0 < samtools_count("-d", "RG", SAMPLE)
    out = tmp_path / "both.parquet"
    rows = bam.write_parquet(files, out)
    table = pq.read_table(out)
    assert rows == table.num_rows == sum(samtools_count(f) for f in files)
    tags = table.column("tags").combine_chunks()
    for tag in ["RG", "MD", "tp"]:
        with_tag = sum(samtools_count("-d", tag, f) for f in files)
        assert len(tags.field(tag)) - tags.field(tag).null_count == with_tag, tag

    ctx.register_table("both", bam.table(files, tags="RG,NM"))
    assert sql_count(ctx, "SELECT count(both.tags['RG']) FROM both") == samtools_count("-d", "RG", SAMPLE)
    with pytest.raises(bam.BamError, match="given twice"):
        bam.table([SAMPLE, SAMPLE])


@pytest.mark.parametrize("path", ["unaligned.bam", "long_ref.bam", "corpus/stripped.bam", "corpus/header_only.bam"])
def test_files_without_aux_fields_convert(tmp_path: Path, path: str) -> None:
    source = str(DATA / path)
    assert all(len(line.split("\t")) == 11 for line in samtools("view", source).splitlines())
    expected = samtools_count(source)
    parquet, ipc = tmp_path / "x.parquet", tmp_path / "x.arrow"
    assert bam.write_parquet(source, parquet) == expected
    assert bam.write_ipc(source, ipc) == expected
    with pa.ipc.open_file(ipc) as reader:
        for table in (pq.read_table(parquet), reader.read_all()):
            assert table.num_rows == expected
            assert "tags" not in table.column_names and table.column_names[-1] == "tags_extra"
            assert table.column("tags_extra").null_count == expected
    assert "tags" not in pa.schema(bam.table(source)).names


def test_bad_path_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.bam"
    with pytest.raises(bam.BamError, match="missing.bam"):
        bam.table(missing)


def test_not_a_bam_file_is_an_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.bam"
    fake.write_bytes(b"this is not BGZF data at all" * 10)
    with pytest.raises(bam.BamError, match="fake.bam"):
        bam.table(fake)


@pytest.mark.parametrize(
    "options, message",
    [({"tags": "NM:q"}, "NM:q"), ({"region": "chr1:200-100"}, "chr1:200-100"), ({"split": "maybe"}, "split")],
)
def test_bad_options_are_errors(options: dict, message: str) -> None:
    with pytest.raises(bam.BamError, match=message):
        bam.BamTable(SAMPLE, options)


def test_failed_conversion_leaves_no_output(tmp_path: Path) -> None:
    # A file cut short fails half-way through the scan, after the writer has started.
    data = Path(SAMPLE).read_bytes()
    cut = tmp_path / "cut.bam"
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out.parquet"
    with pytest.raises(Exception, match="cut.bam"):
        bam.write_parquet(cut, out, progress=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.bam"]
    with pytest.raises(Exception, match="no_such_column"):
        bam.write_parquet(SAMPLE, out, where="no_such_column > 1")
    assert not out.exists()


def test_damaged_data_is_an_error_or_skipped_with_a_warning(tmp_path: Path) -> None:
    data = bytearray(Path(SAMPLE).read_bytes())
    blocks, at = [], 0
    while at < len(data):
        blocks.append(at)
        at += struct.unpack_from("<H", data, at + 16)[0] + 1
    # Break the CRC of a block in the middle of the file.
    data[blocks[len(blocks) // 2 + 1] - 8] ^= 0xFF
    damaged = tmp_path / "damaged.bam"
    damaged.write_bytes(bytes(data))
    with pytest.raises(Exception, match="damaged.bam"):
        bam.write_parquet(damaged, tmp_path / "strict.parquet")
    with pytest.warns(bam.BamWarning, match="skipped damaged data"):
        n = bam.write_parquet(damaged, tmp_path / "out.parquet", skip_damaged=True)
    total = samtools_count(SAMPLE)
    assert total - 1000 < n < total
    assert pq.read_table(tmp_path / "out.parquet").num_rows == n


def test_convert_each_resumes_after_a_failure(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.bam").write_bytes(Path(SAMPLE).read_bytes())
    damaged = Path(DATA / "name_sorted.bam").read_bytes()
    (inputs / "b.bam").write_bytes(damaged[: len(damaged) // 2 + 77])
    out = tmp_path / "out"
    paths = [inputs / "a.bam", inputs / "b.bam"]
    with pytest.raises(Exception, match="b.bam"):
        bam.convert_each(paths, out)
    assert sorted(p.name for p in out.iterdir()) == ["a.parquet"]
    (inputs / "b.bam").write_bytes(damaged)
    done = bam.convert_each(paths, out)
    assert done == {str(paths[0]): None, str(paths[1]): samtools_count(str(DATA / "name_sorted.bam"))}
    assert pq.read_table(out / "a.parquet").num_rows == samtools_count(SAMPLE)
    with pytest.raises(ValueError, match="unknown output format"):
        bam.convert_each(paths, out, stored_as="csv")


def test_the_tag_sample_is_bounded_by_records_and_bytes() -> None:
    corners = str(DATA / "corpus" / "hand_corners.bam")
    # Its first record has no aux field: a sample of it alone gives no tags struct.
    assert "tags" in pa.schema(bam.table(corners)).names
    for bound in [{"tag_sample_records": 1}, {"tag_sample_bytes": 1}]:
        assert "tags" not in pa.schema(bam.table(corners, **bound)).names, bound
