-- Reads overlapping chr1:100000-200000 (samtools region semantics), as Parquet.
CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION 'tests/data/sample.bam';
COPY (
  SELECT qname, flag, rname, pos, endpos, mapq, cigar, seq, qual
  FROM reads
  WHERE rname = 'chr1' AND pos <= 200000 AND endpos >= 100000
) TO 'chr1_100k_200k.parquet' STORED AS PARQUET;
SELECT count(*) AS records FROM 'chr1_100k_200k.parquet';
