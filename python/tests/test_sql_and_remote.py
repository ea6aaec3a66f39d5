"""`STORED AS BAM` in Python SQL, and BAM files on S3, GCS and HTTP servers, against samtools.

The remote tests run a moto server on loopback (from the test requirements): it serves S3, stands
in for Google Cloud Storage (object_store's GCS client speaks the same XML API), and serves
public objects over plain HTTP with ranged GETs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext
from oracle import DATA, SAMPLE, sam_records, samtools, samtools_count
from oracle import sql_count as count

import datafusion_bam as bam

NAME_SORTED = str(DATA / "name_sorted.bam")
LONG_READS = str(DATA / "long_reads.bam")
REGION_SQL = "rname = 'chr1' AND pos <= 60000 AND endpos >= 40000"
REGION = "chr1:40000-60000"


def samtools_rows(path: str) -> list[tuple]:
    """(qname, flag, pos, mapq, cigar) of every record, sorted, as the table gives them."""
    rows = []
    for line in samtools("view", path).splitlines():
        f = line.split("\t")
        mapq = int(f[4])
        rows.append((f[0], int(f[1]), int(f[3]) or None, None if mapq == 255 else mapq, None if f[5] == "*" else f[5]))
    return sorted(rows, key=repr)


def table_rows(ctx: SessionContext, table: str) -> list[tuple]:
    t = ctx.sql(f"SELECT qname, flag, pos, mapq, cigar FROM {table}").to_arrow_table()
    return sorted(zip(*(t.column(i).to_pylist() for i in range(t.num_columns))), key=repr)


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.fixture
def ctx() -> SessionContext:
    ctx = SessionContext()
    bam.enable(ctx)
    return ctx


# --- CREATE EXTERNAL TABLE ... STORED AS BAM in Python SQL -------------------------------------


def test_a_file_as_in_the_cli(ctx: SessionContext) -> None:
    ctx.sql(f"CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '{SAMPLE}'")
    assert table_rows(ctx, "reads") == samtools_rows(SAMPLE)
    assert count(ctx, "SELECT count(*) FROM reads WHERE mapq >= 30") == samtools_count("-q", "30", SAMPLE)
    # lower case too, as DataFusion upper-cases STORED AS before finding the factory
    ctx.sql(f"CREATE EXTERNAL TABLE lower STORED AS bam LOCATION '{SAMPLE}'")
    assert count(ctx, "SELECT count(*) FROM lower") == samtools_count(SAMPLE)


def test_region_filters_use_the_index_beside_the_files(ctx: SessionContext, tmp_path: Path) -> None:
    for name in ["sample.bam", "sample.bam.bai", "name_sorted.bam"]:
        shutil.copy(DATA / name, tmp_path / name)
    ctx.sql(f"CREATE EXTERNAL TABLE d STORED AS BAM LOCATION '{tmp_path}/'")
    assert count(ctx, "SELECT count(*) FROM d") == samtools_count(SAMPLE) + samtools_count(NAME_SORTED)
    ctx.sql(f"CREATE EXTERNAL TABLE s STORED AS BAM LOCATION '{tmp_path / 'sample.bam'}'")
    records_before = bam.progress_counters()[0]
    assert count(ctx, f"SELECT count(*) FROM s WHERE {REGION_SQL}") == samtools_count(SAMPLE, REGION) > 0
    # Only the index's chunks are decoded.
    assert bam.progress_counters()[0] - records_before < samtools_count(SAMPLE) // 4


def test_glob_and_two_locations_with_different_tags(ctx: SessionContext, tmp_path: Path) -> None:
    for name in ["sample.bam", "name_sorted.bam", "long_reads.bam"]:
        shutil.copy(DATA / name, tmp_path / name)
    ctx.sql(f"CREATE EXTERNAL TABLE g STORED AS BAM LOCATION '{tmp_path}/*_s*.bam'")
    assert count(ctx, "SELECT count(*) FROM g") == samtools_count(NAME_SORTED)
    ctx.sql(f"CREATE EXTERNAL TABLE two STORED AS BAM LOCATION ('{SAMPLE}', '{LONG_READS}')")
    assert count(ctx, "SELECT count(*) FROM two") == samtools_count(SAMPLE) + samtools_count(LONG_READS)
    # RG comes from sample.bam only: the table's tags are those of both files.
    assert samtools_count("-d", "RG", LONG_READS) == 0
    for tag in ["RG", "tp", "NM"]:
        expected = samtools_count("-d", tag, SAMPLE) + samtools_count("-d", tag, LONG_READS)
        assert count(ctx, f"SELECT count(two.tags['{tag}']) FROM two") == expected > 0, tag


def test_partition_directories_prune_files(ctx: SessionContext, tmp_path: Path) -> None:
    for directory, name in [("sample=a", "sample.bam"), ("sample=b", "name_sorted.bam")]:
        (tmp_path / directory).mkdir()
        shutil.copy(DATA / name, tmp_path / directory / name)
    for name, columns in [("inferred", ""), ("named", "PARTITIONED BY (sample)")]:
        ctx.sql(f"CREATE EXTERNAL TABLE {name} {columns} STORED AS BAM LOCATION '{tmp_path}/'")
        bytes_before = bam.progress_counters()[1]
        assert count(ctx, f"SELECT count(*) FROM {name} WHERE sample = 'b'") == samtools_count(NAME_SORTED)
        # sample=a's file is not read at all.
        assert bam.progress_counters()[1] - bytes_before <= os.path.getsize(NAME_SORTED)


def test_with_order(ctx: SessionContext) -> None:
    # Accepted and checked as in the CLI. DataFusion still sorts here: an ordering crosses
    # datafusion-ffi 55 as opaque expressions that equal nothing on the caller's side
    # (ForeignPhysicalExpr compares by identity, physical_expr/mod.rs), so it cannot satisfy an
    # ORDER BY; the CLI and Rust sessions sort nothing.
    ctx.sql(f"CREATE EXTERNAL TABLE sorted STORED AS BAM WITH ORDER (rname ASC, pos ASC) LOCATION '{SAMPLE}'")
    ours = ctx.sql("SELECT rname, pos FROM sorted ORDER BY rname, pos").to_arrow_table().column("pos").to_pylist()
    assert ours == [int(line.split("\t")[3]) or None for line in samtools("view", SAMPLE).splitlines()]
    with pytest.raises(Exception, match="WITH ORDER: column nosuch is not in the BAM table"):
        ctx.sql(f"CREATE EXTERNAL TABLE bad STORED AS BAM WITH ORDER (nosuch ASC) LOCATION '{SAMPLE}'")


def test_table_options(ctx: SessionContext, tmp_path: Path) -> None:
    ctx.sql(f"CREATE EXTERNAL TABLE t STORED AS BAM LOCATION '{SAMPLE}' OPTIONS ('tags' 'NM', 'region' '{REGION}')")
    schema = ctx.table("t").schema()
    assert schema.field("tags").type == pa.struct([pa.field("NM", pa.int64())])
    assert count(ctx, "SELECT count(*) FROM t") == samtools_count(SAMPLE, REGION) > 0
    assert count(ctx, "SELECT count(t.tags['NM']) FROM t") == samtools_count("-d", "NM", SAMPLE, REGION)

    data = Path(SAMPLE).read_bytes()
    cut = tmp_path / "cut.bam"
    cut.write_bytes(data[: len(data) * 2 // 3])
    ctx.sql(f"CREATE EXTERNAL TABLE strict STORED AS BAM LOCATION '{cut}'")
    with pytest.raises(Exception, match="cut.bam"):
        count(ctx, "SELECT count(*) FROM strict")
    ctx.sql(f"CREATE EXTERNAL TABLE lenient STORED AS BAM LOCATION '{cut}' OPTIONS ('skip_damaged' 'true')")
    assert 0 < count(ctx, "SELECT count(*) FROM lenient") < samtools_count(SAMPLE)


def test_bad_statements_name_what_is_wrong(ctx: SessionContext, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no_such_option"):
        ctx.sql(f"CREATE EXTERNAL TABLE t STORED AS BAM LOCATION '{SAMPLE}' OPTIONS ('no_such_option' '1')")
    missing = tmp_path / "missing.bam"
    with pytest.raises(Exception, match=f"{missing}: not found"):
        ctx.sql(f"CREATE EXTERNAL TABLE t STORED AS BAM LOCATION '{missing}'")


def test_errors_are_pythons_own_classes(ctx: SessionContext, tmp_path: Path) -> None:
    missing = tmp_path / "missing.bam"
    with pytest.raises(FileNotFoundError, match=f"{missing}: not found") as caught:
        bam.register(ctx, "gone", missing)
    assert isinstance(caught.value, bam.BamError) and isinstance(caught.value, bam.NotFoundError)
    with pytest.raises(ValueError, match="chrZZ") as caught:
        bam.register(ctx, "nowhere", SAMPLE, region="chrZZ:1-100")
    assert isinstance(caught.value, bam.InvalidOptionError)
    assert "chr1" in str(caught.value), "the message lists the references the file has"
    with pytest.raises(ValueError, match="tag_sample_records"):
        bam.register(ctx, "bad", SAMPLE, tag_sample_records=-1)


def test_header_and_region_functions(ctx: SessionContext) -> None:
    header = ctx.sql(f"SELECT record_type, line FROM bam_header('{SAMPLE}')").to_arrow_table()
    assert header.column("line").to_pylist() == samtools("head", SAMPLE).splitlines()
    assert count(ctx, f"SELECT count(*) FROM bam_region('{SAMPLE}', '{REGION}')") == samtools_count(SAMPLE, REGION)


def test_a_bam_table_joins_a_parquet_file_of_datafusion_python(ctx: SessionContext, tmp_path: Path) -> None:
    references = [line.split("\t")[0] for line in samtools("idxstats", SAMPLE).splitlines() if line[0] != "*"]
    chosen = references[:2]
    pq.write_table(pa.table({"rname": chosen, "label": ["first", "second"]}), tmp_path / "refs.parquet")
    ctx.register_parquet("refs", str(tmp_path / "refs.parquet"))
    ctx.sql(f"CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '{SAMPLE}'")
    got = ctx.sql(
        "SELECT label, count(*) AS n FROM reads JOIN refs USING (rname) WHERE mapq >= 30 GROUP BY label ORDER BY label"
    ).to_pydict()
    assert got == {"label": ["first", "second"], "n": [samtools_count("-q", "30", SAMPLE, r) for r in chosen]}


def test_register_enables_sql_too() -> None:
    ctx = SessionContext()
    bam.register(ctx, "reads", SAMPLE)
    ctx.sql(f"CREATE EXTERNAL TABLE more STORED AS BAM LOCATION '{NAME_SORTED}'")
    assert count(ctx, "SELECT count(*) FROM more") == samtools_count(NAME_SORTED)
    assert count(ctx, f"SELECT count(*) FROM bam_header('{SAMPLE}')") == len(samtools("head", SAMPLE).splitlines())


# --- remote locations ----------------------------------------------------------------------------

BUCKET = "bam-test"
# object_store's GCS client writes a `-` in a bucket name as `%2D`, which moto does not decode.
GS_BUCKET = "bamgs"
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


class Moto:
    """A moto server on a free loopback port; `auth=True` makes it refuse unknown credentials."""

    def __init__(self, auth: bool = False) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0") if auth else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        self.endpoint = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **CREDENTIALS)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    server = Moto()
    s3 = server.client()
    for bucket in [BUCKET, GS_BUCKET]:
        s3.create_bucket(Bucket=bucket, ACL="public-read")
        for name in ["sample.bam", "sample.bam.bai", "name_sorted.bam"]:
            s3.upload_file(str(DATA / name), bucket, name, ExtraArgs={"ACL": "public-read"})
    yield server
    server.stop()


def s3_options(moto: Moto) -> dict[str, str]:
    return {"aws.endpoint": moto.endpoint, "aws.allow_http": "true", "aws.region": "us-east-1",
            "aws.access_key_id": "test", "aws.secret_access_key": "test"}


def sql_options(options: dict[str, str]) -> str:
    return ", ".join(f"{quote(k)} {quote(v)}" for k, v in options.items())


def test_s3_table_rows_equal_samtools(moto: Moto) -> None:
    ctx = SessionContext()
    # storage_options as pandas and polars users write them: object_store's keys, no namespace
    options = {"endpoint": moto.endpoint, "allow_http": "true", "region": "us-east-1", **CREDENTIALS}
    ctx.register_table("reads", bam.table(f"s3://{BUCKET}/sample.bam", storage_options=options))
    assert table_rows(ctx, "reads") == samtools_rows(SAMPLE)
    records_before = bam.progress_counters()[0]
    assert count(ctx, f"SELECT count(*) FROM reads WHERE {REGION_SQL}") == samtools_count(SAMPLE, REGION) > 0
    # The remote .bai chose the chunks.
    assert bam.progress_counters()[0] - records_before < samtools_count(SAMPLE) // 4
    # A directory: its BAM files, not its index.
    ctx.register_table("all", bam.table(f"s3://{BUCKET}/", storage_options=options))
    assert count(ctx, "SELECT count(*) FROM all") == samtools_count(SAMPLE) + samtools_count(NAME_SORTED)


def test_s3_settings_from_the_environment(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_ENDPOINT": moto.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                       "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(key, value)
    ctx = SessionContext()
    # A store option makes the extension build the bucket's store anew: from the environment,
    # then the option.
    bam.register(ctx, "reads", f"s3://{BUCKET}/name_sorted.bam", storage_options={"aws.region": "us-east-1"})
    assert count(ctx, "SELECT count(*) FROM reads") == samtools_count(NAME_SORTED)


def test_s3_in_sql(moto: Moto, ctx: SessionContext) -> None:
    options = sql_options(s3_options(moto))
    ctx.sql(f"CREATE EXTERNAL TABLE r STORED AS BAM LOCATION 's3://{BUCKET}/sample.bam' OPTIONS ({options}, 'tags' 'NM')")
    assert count(ctx, "SELECT count(*) FROM r WHERE mapq >= 30") == samtools_count("-q", "30", SAMPLE)
    assert count(ctx, f"SELECT count(*) FROM r WHERE {REGION_SQL}") == samtools_count(SAMPLE, REGION)
    assert count(ctx, "SELECT count(r.tags['NM']) FROM r") == samtools_count("-d", "NM", SAMPLE)
    ctx.sql(f"CREATE EXTERNAL TABLE g STORED AS BAM LOCATION 's3://{BUCKET}/*.bam' OPTIONS ({options})")
    assert count(ctx, "SELECT count(*) FROM g") == samtools_count(SAMPLE) + samtools_count(NAME_SORTED)
    lines = ctx.sql(f"SELECT line FROM bam_header('s3://{BUCKET}/sample.bam')").to_arrow_table().column(0)
    assert lines.to_pylist() == samtools("head", SAMPLE).splitlines()
    region = f"SELECT count(*) FROM bam_region('s3://{BUCKET}/sample.bam', '{REGION}')"
    assert count(ctx, region) == samtools_count(SAMPLE, REGION)


def test_conversions_from_and_to_s3(moto: Moto, tmp_path: Path) -> None:
    options = s3_options(moto)
    local = tmp_path / "from_s3.parquet"
    seen: list[bam.Progress] = []
    rows = bam.write_parquet(f"s3://{BUCKET}/sample.bam", local, storage_options=options, progress=seen.append)
    assert rows == pq.read_table(local).num_rows == samtools_count(SAMPLE)
    # Progress knows the total from the store, not from the local disk: the compressed bytes
    # after the header, all read but the BGZF end-of-file block (28 bytes, checked apart).
    size = os.path.getsize(SAMPLE)
    assert size - 1000 < seen[-1].bytes_total == seen[-1].bytes_read + 28 < size

    target = f"s3://{BUCKET}/out/sample.parquet"
    assert bam.write_parquet(SAMPLE, target, min_mapq=30, storage_options=options) == samtools_count("-q", "30", SAMPLE)
    s3 = moto.client()
    written = s3.get_object(Bucket=BUCKET, Key="out/sample.parquet")["Body"].read()
    assert pq.read_table(pa.BufferReader(written)).num_rows == samtools_count("-q", "30", SAMPLE)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]] == ["out/sample.parquet"]

    done = bam.convert_each([f"s3://{BUCKET}/sample.bam", NAME_SORTED], f"s3://{BUCKET}/each/", stored_as="arrow",
                            storage_options=options)
    assert done == {f"s3://{BUCKET}/sample.bam": samtools_count(SAMPLE), NAME_SORTED: samtools_count(NAME_SORTED)}
    again = bam.convert_each([NAME_SORTED], f"s3://{BUCKET}/each", stored_as="arrow", storage_options=options)
    assert again == {NAME_SORTED: None}


def test_sql_copy_to_s3_through_a_store_of_datafusion_python(moto: Moto, ctx: SessionContext) -> None:
    # SQL COPY runs in datafusion-python's writer, which sees the stores of its own context.
    from datafusion.object_store import AmazonS3

    store = AmazonS3(bucket_name=BUCKET, region="us-east-1", access_key_id="test", secret_access_key="test",
                     endpoint=moto.endpoint, allow_http=True)
    ctx.register_object_store("s3://", store, BUCKET)
    ctx.sql(f"CREATE EXTERNAL TABLE r STORED AS BAM LOCATION 's3://{BUCKET}/sample.bam' "
            f"OPTIONS ({sql_options(s3_options(moto))})")
    ctx.sql(f"COPY (SELECT * FROM r WHERE {REGION_SQL}) TO 's3://{BUCKET}/sql/r.parquet' STORED AS PARQUET").collect()
    written = moto.client().get_object(Bucket=BUCKET, Key="sql/r.parquet")["Body"].read()
    assert pq.read_table(pa.BufferReader(written)).num_rows == samtools_count(SAMPLE, REGION) > 0


def test_a_failed_upload_leaves_nothing(moto: Moto, tmp_path: Path) -> None:
    data = Path(SAMPLE).read_bytes()
    cut = tmp_path / "cut.bam"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(Exception, match="cut.bam"):
        bam.write_parquet(cut, f"s3://{BUCKET}/failed/x.parquet", storage_options=s3_options(moto))
    assert "Contents" not in moto.client().list_objects_v2(Bucket=BUCKET, Prefix="failed/")


def test_bam_written_to_s3_with_a_remote_header(moto: Moto, ctx: SessionContext, tmp_path: Path) -> None:
    options = s3_options(moto)
    target = f"s3://{BUCKET}/bam/q30.bam"
    assert bam.write_bam(SAMPLE, target, min_mapq=30, storage_options=options) == samtools_count("-q", "30", SAMPLE)
    local = tmp_path / "q30.bam"
    local.write_bytes(moto.client().get_object(Bucket=BUCKET, Key="bam/q30.bam")["Body"].read())
    assert sam_records(local) == sam_records(SAMPLE, "-q", "30")
    # Rows from a DataFrame, the header from the bucket.
    bam.register(ctx, "reads", SAMPLE)
    df = ctx.sql(f"SELECT * FROM reads WHERE {REGION_SQL}")
    bam.write_bam(df, f"s3://{BUCKET}/bam/region.bam", header=f"s3://{BUCKET}/sample.bam", storage_options=options)
    local.write_bytes(moto.client().get_object(Bucket=BUCKET, Key="bam/region.bam")["Body"].read())
    assert sam_records(local) == sam_records(SAMPLE, REGION)
    # A failure leaves no object.
    with pytest.raises(bam.BamError, match="needs columns"):
        bam.write_bam(SAMPLE, f"s3://{BUCKET}/bam/bad.bam", columns=["qname"], storage_options=options)
    keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=BUCKET, Prefix="bam/")["Contents"]]
    assert keys == ["bam/q30.bam", "bam/region.bam"]


def test_sam_and_cram_written_to_s3(moto: Moto, tmp_path: Path) -> None:
    options = s3_options(moto)
    corpus = str(DATA / "corpus" / "bwa_mem.bam")
    reference = str(DATA / "cram" / "ref.fa")
    assert bam.write_sam(SAMPLE, f"s3://{BUCKET}/alignments/q30.sam.gz", min_mapq=30, storage_options=options) > 0
    assert bam.write_cram(corpus, f"s3://{BUCKET}/alignments/reads.cram", reference=reference, storage_options=options) > 0
    sam = tmp_path / "q30.sam.gz"
    sam.write_bytes(moto.client().get_object(Bucket=BUCKET, Key="alignments/q30.sam.gz")["Body"].read())
    assert sam_records(sam) == sam_records(SAMPLE, "-q", "30")
    cram = tmp_path / "reads.cram"
    cram.write_bytes(moto.client().get_object(Bucket=BUCKET, Key="alignments/reads.cram")["Body"].read())
    assert samtools("view", "-c", "-T", reference, str(cram)) == samtools("view", "-c", corpus)
    # A .crai is made from a file on disk: refused for a remote output, which is not written.
    with pytest.raises(bam.BamError, match="crai"):
        bam.write_cram(corpus, f"s3://{BUCKET}/alignments/indexed.cram", reference=reference, index="crai",
                       storage_options=options)
    keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=BUCKET, Prefix="alignments/")["Contents"]]
    assert keys == ["alignments/q30.sam.gz", "alignments/reads.cram"]


def test_http_location(moto: Moto, ctx: SessionContext) -> None:
    url = f"{moto.endpoint}/{BUCKET}/sample.bam"
    ctx.register_table("h", bam.table(url))
    assert table_rows(ctx, "h") == samtools_rows(SAMPLE)
    ctx.sql(f"CREATE EXTERNAL TABLE hs STORED AS BAM LOCATION '{url}'")
    assert count(ctx, f"SELECT count(*) FROM hs WHERE {REGION_SQL}") == samtools_count(SAMPLE, REGION)
    with pytest.raises(bam.BamError, match="an http\\(s\\) location must name a file"):
        bam.table(f"{moto.endpoint}/{BUCKET}/")


def test_gs_location(moto: Moto, ctx: SessionContext) -> None:
    key = ('{"gcs_base_url": "%s", "disable_oauth": true, "client_email": "", "private_key": "", '
           '"private_key_id": ""}' % moto.endpoint)
    t = bam.table(f"gs://{GS_BUCKET}/sample.bam", storage_options={"service_account_key": key})
    ctx.register_table("g", t)
    assert count(ctx, "SELECT count(*) FROM g WHERE mapq >= 30") == samtools_count("-q", "30", SAMPLE)
    ctx.sql(f"CREATE EXTERNAL TABLE gd STORED AS BAM LOCATION 'gs://{GS_BUCKET}/' "
            f"OPTIONS ('gcp.service_account_key' {quote(key)})")
    assert count(ctx, "SELECT count(*) FROM gd") == samtools_count(SAMPLE) + samtools_count(NAME_SORTED)


def test_remote_errors_name_the_location(moto: Moto) -> None:
    options = s3_options(moto)
    with pytest.raises(bam.BamError, match=f"s3://{BUCKET}/missing.bam"):
        bam.table(f"s3://{BUCKET}/missing.bam", storage_options=options)
    with pytest.raises(bam.BamError, match="unknown store option aws.no_such_key"):
        bam.table(f"s3://{BUCKET}/sample.bam", storage_options={**options, "aws.no_such_key": "1"})
    with pytest.raises(bam.BamError, match="option gcp.region is not for this location"):
        bam.table(f"s3://{BUCKET}/sample.bam", storage_options={"gcp.region": "x"})

    guarded = Moto(auth=True)
    try:
        wrong = {**s3_options(guarded), "aws.access_key_id": "unknown", "aws.secret_access_key": "not-to-be-printed"}
        started = time.monotonic()
        with pytest.raises(bam.BamError, match=f"s3://{BUCKET}/sample.bam") as error:
            bam.table(f"s3://{BUCKET}/sample.bam", storage_options=wrong)
        assert "not-to-be-printed" not in str(error.value)
        assert time.monotonic() - started < 60
    finally:
        guarded.stop()
