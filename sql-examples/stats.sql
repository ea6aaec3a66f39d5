-- Per-reference statistics, like samtools idxstats plus mapping quality and duplicates.
CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION 'tests/data/sample.bam';
SELECT
  coalesce(rname, '*') AS reference,
  count(*) FILTER (WHERE (flag & 4) = 0) AS mapped,
  count(*) FILTER (WHERE (flag & 4) = 4) AS unmapped,
  count(*) FILTER (WHERE (flag & 1024) = 1024) AS duplicates,
  round(avg(mapq) FILTER (WHERE (flag & 4) = 0), 2) AS mean_mapq,
  count(*) FILTER (WHERE mapq >= 30) AS mapq30
FROM reads
GROUP BY rname
ORDER BY reference;
