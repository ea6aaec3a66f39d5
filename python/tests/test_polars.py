"""The polars shape: `scan_*` LazyFrames through polars' IO-plugin interface.

Run by `cargo test` (python/tests/pytest.rs), which builds the extension first.
"""

from __future__ import annotations

import builtins
from pathlib import Path

import polars as pl
import pytest
from oracle import DATA, SAMPLE, sam_records, samtools, samtools_count

import datafusion_bam as bam


def decoded(run) -> int:
    """The records the extension decoded while `run()` ran."""
    before = bam.progress_counters()[0]
    run()
    return bam.progress_counters()[0] - before


def test_scan_bam_equals_samtools_field_by_field() -> None:
    frame = bam.scan_bam(SAMPLE, tags="none").collect()
    assert frame.height == samtools_count(SAMPLE)
    sam_columns = ["qname", "flag", "rname", "pos", "mapq", "cigar", "rnext", "pnext", "tlen", "seq", "qual"]
    assert [c for c in frame.columns if c in sam_columns] == sam_columns
    # Positions, flags and names as samtools prints them, for the placed records of one region.
    region = frame.filter((pl.col("rname") == "chr2") & (pl.col("pos") <= 20000) & (pl.col("endpos") >= 10000))
    expected = {tuple(line.split("\t")[:4]) for line in sam_records(SAMPLE, "chr2:10000-20000")}
    got = {(q, str(f), r, str(p)) for q, f, r, p in region.select("qname", "flag", "rname", "pos").iter_rows()}
    assert got == expected


def test_filters_on_pushed_columns_reach_the_index_and_others_stay_in_polars() -> None:
    total = samtools_count(SAMPLE)
    lazy = bam.scan_bam(SAMPLE).filter(
        (pl.col("rname") == "chr3") & (pl.col("pos") <= 5000) & (pl.col("endpos") >= 1000) & (pl.col("mapq") >= 30)
    )
    rows = []
    n = decoded(lambda: rows.append(lazy.select("qname").collect().height))
    assert rows[0] == samtools_count("-q", "30", SAMPLE, "chr3:1000-5000") > 0
    assert n < total // 4, f"{n} records decoded for a region of {total}"
    # A filter the scan cannot take (a string function) is applied by polars, and is right.
    odd = bam.scan_bam(SAMPLE).filter(pl.col("qname").str.ends_with("1") | (pl.col("mapq") < 0)).collect()
    assert odd.height > 0 and odd["qname"].str.ends_with("1").all()


def test_projection_and_row_limits_stop_the_scan(tmp_path: Path) -> None:
    # Four copies in one file: a limit stops each partition after its first batch.
    big = tmp_path / "x4.bam"
    samtools("cat", "-o", str(big), SAMPLE, SAMPLE, SAMPLE, SAMPLE)
    head = []
    n = decoded(lambda: head.append(bam.scan_bam(big).head(7).collect()))
    assert head[0].height == 7 and n < samtools_count(str(big)) // 4, n
    total = samtools_count(SAMPLE)
    two = bam.scan_bam(SAMPLE).select("flag", "mapq").collect()
    assert two.columns == ["flag", "mapq"] and two.height == total
    assert bam.scan_bam(SAMPLE).select(pl.len()).collect().item() == total


def test_scan_cram_and_scan_sam_count_as_samtools() -> None:
    cram, reference = DATA / "cram" / "bwa_mem.cram", DATA / "cram" / "ref.fa"
    assert bam.scan_cram(cram, reference=reference).select(pl.len()).collect().item() == samtools_count(str(cram))
    sam = DATA / "sam" / "sorted_bai.sam.gz"
    assert bam.scan_sam(sam).collect().height == samtools_count(str(sam))


def test_without_polars_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_polars(name, *args, **kwargs):
        if name == "polars" or name.startswith("polars."):
            raise ImportError("No module named 'polars'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_polars)
    with pytest.raises(ImportError, match=r"datafusion-bam\[polars\]"):
        bam.scan_bam(SAMPLE)


def test_a_lazy_frame_streams_into_a_bam_file(tmp_path: Path) -> None:
    out = tmp_path / "q30.bam"
    lazy = bam.scan_bam(SAMPLE).filter(pl.col("mapq") >= 30)
    written = bam.write_bam(lazy, out, header=SAMPLE)
    assert written == samtools_count("-q", "30", SAMPLE)
    samtools("quickcheck", "-v", str(out))
    # polars keeps no Arrow field metadata, where the table records each tag's BAM type; the
    # types come back from a sample of the header's file (`tp:A:P` stays `A`, not `Z`).
    assert sam_records(out) == sam_records(SAMPLE, "-q", "30")
