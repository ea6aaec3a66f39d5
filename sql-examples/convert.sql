-- Convert a BAM file to Parquet, every column, then check the row count.
-- Run from the repository root: datafusion-bam -f sql-examples/convert.sql
CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION 'tests/data/sample.bam';
COPY (SELECT * FROM reads) TO 'sample.parquet' STORED AS PARQUET;
SELECT count(*) AS records FROM 'sample.parquet';
