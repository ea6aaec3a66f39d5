"""bam.write_bam: BAM written back from BAM files, from DataFrames of any query and from Parquet
copies, equal to what samtools prints for the source."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext
from oracle import DATA, SAMPLE, samtools
from oracle import sam_records as records

import datafusion_bam as bam


def test_bam_files_to_bam_with_a_filter_and_progress(tmp_path: Path) -> None:
    out = tmp_path / "q30.bam"
    seen: list[bam.Progress] = []
    written = bam.write_bam(SAMPLE, out, min_mapq=30, progress=seen.append)
    assert written == len(records(SAMPLE, "-q", "30")) > 0
    assert records(out) == records(SAMPLE, "-q", "30")
    assert seen and seen[-1].records > 0
    header = samtools("view", "-H", str(out))
    assert "ID:datafusion-bam" in header and "SO:unsorted" in header


def test_a_dataframe_of_any_query_to_bam(tmp_path: Path) -> None:
    ctx = SessionContext()
    bam.register(ctx, "reads", SAMPLE)
    out = tmp_path / "sorted.bam"
    df = ctx.sql("SELECT * FROM reads WHERE flag & 16 = 0")
    bam.write_bam(df, out, header=SAMPLE, index="bai")
    assert "SO:coordinate" in samtools("view", "-H", str(out))
    assert records(out) == records(SAMPLE, "-F", "16")
    # The index written beside it answers region queries as samtools' filter does.
    assert Path(f"{out}.bai").is_file()
    assert records(out, "chr1:40000-60000") == records(SAMPLE, "-F", "16", "chr1:40000-60000")
    # A DataFrame has no header of its own: it must be named.
    with pytest.raises(ValueError, match="header="):
        bam.write_bam(ctx.sql("SELECT * FROM reads"), tmp_path / "no_header.bam")
    with pytest.raises(ValueError, match="region"):
        bam.write_bam(ctx.sql("SELECT * FROM reads"), tmp_path / "region.bam", header=SAMPLE, region="chr1")


def test_a_parquet_copy_comes_back_as_the_original(tmp_path: Path) -> None:
    corners = DATA / "corpus" / "hand_corners.bam"
    parquet = tmp_path / "corners.parquet"
    bam.write_parquet(str(corners), parquet)
    out = tmp_path / "back.bam"
    # Through pyarrow and through datafusion-python: the tag types ride in the field metadata.
    assert bam.write_bam(pq.read_table(parquet), out, header=corners) == len(records(corners))
    assert records(out) == records(corners)
    ctx = SessionContext()
    bam.write_bam(ctx.read_parquet(str(parquet)), out, header=corners, compression_level=9)
    assert records(out) == records(corners)


def test_a_row_that_is_not_a_record_fails_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bad.bam"
    first = samtools("view", SAMPLE).split("\t", 1)[0]
    ctx = SessionContext()
    bam.register(ctx, "reads", SAMPLE)
    bad = ctx.sql(f"SELECT * REPLACE (CASE WHEN qname = '{first}' THEN 'chrZ' ELSE rname END AS rname) FROM reads")
    with pytest.raises(bam.BamError, match=f"qname {first}.*not a reference sequence"):
        bam.write_bam(bad, out, header=SAMPLE)
    assert not out.exists()
    with pytest.raises(bam.BamError, match="needs columns"):
        bam.write_bam(SAMPLE, out, columns=["qname", "seq"])
    with pytest.raises(bam.BamError, match="compression_level"):
        bam.write_bam(SAMPLE, out, compression_level=12)
    assert not out.exists()


def test_sam_and_cram_writers(tmp_path: Path) -> None:
    corpus = str(DATA / "corpus" / "bwa_mem.bam")
    reference = str(DATA / "cram" / "ref.fa")
    # Plain SAM from a filter, BGZF SAM (by its name) sorted, CRAM against the reference.
    sam = tmp_path / "q30.sam"
    assert bam.write_sam(SAMPLE, sam, min_mapq=30) == len(records(SAMPLE, "-q", "30"))
    assert sam.read_text().startswith("@HD")
    assert records(sam) == records(SAMPLE, "-q", "30")
    gz = tmp_path / "sorted.sam.gz"
    bam.write_sam(SAMPLE, gz, sort=True)
    assert gz.read_bytes()[:4] == b"\x1f\x8b\x08\x04"
    assert "SO:coordinate" in samtools("view", "-H", str(gz))
    assert records(gz) == records(SAMPLE)
    cram = tmp_path / "reads.cram"
    assert bam.write_cram(corpus, cram, reference=reference, index="crai") == len(records(corpus))
    assert samtools("view", "-c", "-T", reference, str(cram)).strip() == str(len(records(corpus)))
    assert Path(f"{cram}.crai").is_file()
    # Through the .crai; counted, as samtools shows RG twice in a CRAM noodles-cram wrote (docs/writing.md).
    assert samtools("view", "-c", "-T", reference, str(cram), "chr2") == samtools("view", "-c", corpus, "chr2")
    # A reference without the header's chr3: an error naming it, and no file.
    with pytest.raises(bam.BamError, match="chr3"):
        bam.write_cram(SAMPLE, tmp_path / "bad.cram", reference=reference)
    assert not (tmp_path / "bad.cram").exists()
