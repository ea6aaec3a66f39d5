#!/usr/bin/env bash
# Makes tests/data/corpus/: small BAM files written the ways users' files are written, by the
# aligners and tools installable here (Debian packages), for the corpus tests (tests/it/corpus.rs),
# which compare each of them with `samtools view` and convert each through the README's COPY.
#
#   tests/data/corpus.sh        (also run by tests/data/make.sh)
#
# Needs: python3, samtools (1.16), bgzip (tabix), art_illumina (art-nextgen-simulation-tools),
# pbsim, bwa, bowtie2, minimap2, hisat2, picard-tools, sambamba, biobambam2, bamtools.
# Everything is seeded; aligners run in the work directory so their @PG lines hold no temp paths.
set -euo pipefail
data="$(cd "$(dirname "$0")" && pwd)"
out="$data/corpus"
export PYTHONPATH="$data"   # fasta.py
work=$(mktemp -d)
trap 'status=$?; [[ $status -eq 0 ]] || tail -20 "$work/tools.log"; rm -rf "$work"' EXIT
rm -rf "$out"
mkdir -p "$out"
cd "$work"
q() { "$@" > /dev/null 2>> tools.log; }   # run a tool quietly, keeping its messages for errors

# A genome with a segmental duplication (chr2 holds a copy of part of chr1, so reads there map
# twice: MAPQ 0, secondary alignments, XA tags), transcripts made of chr1 exons (for spliced
# reads), and chimeric long reads (for supplementary alignments).
python3 - <<'PY'
import random
from fasta import random_seq, write_fasta
rng = random.Random(20261202)
seq = lambda n: random_seq(rng, n)
write = lambda path, records: write_fasta(path, records, width=60)
chr1 = seq(100_000)
chr2 = seq(30_000) + chr1[20_000:24_000] + seq(26_000)
write("ref.fa", [("chr1", chr1), ("chr2", chr2), ("chrM", seq(5_000))])
# Three transcripts of four exons each, with introns of 300-2000 bp between them.
transcripts = []
for t in range(3):
    start, exons = 40_000 + t * 15_000, []
    for _ in range(4):
        length = rng.randrange(120, 400)
        exons.append(chr1[start:start + length])
        start += length + rng.randrange(300, 2_000)
    transcripts.append((f"tx{t}", "".join(exons)))
write("tx.fa", transcripts)
# Chimeras: 3-8 kbp of chr1 joined to 2-5 kbp of chr2 (reverse-complemented half the time).
comp = str.maketrans("ACGT", "TGCA")
chimeras = []
for i in range(12):
    a = rng.randrange(0, 90_000); la = rng.randrange(3_000, 8_000)
    b = rng.randrange(40_000, 55_000); lb = rng.randrange(2_000, 5_000)
    right = chr2[b:b + lb]
    if i % 2:
        right = right.translate(comp)[::-1]
    chimeras.append((f"chimera{i}", chr1[a:a + la] + right))
write("chimeras.fa", chimeras)
PY

# Short paired reads (ART, HiSeq 2500 profile), a few pairs duplicated under new names for
# markdup to find.
q art_illumina -ss HS25 -i ref.fa -p -l 100 -f 1 -m 300 -s 30 -rs 11 -na -o short_
python3 - <<'PY'
def records(path):
    with open(path) as f:
        lines = f.read().splitlines()
    return [lines[i:i + 4] for i in range(0, len(lines), 4)]
for mate in (1, 2):
    recs = records(f"short_{mate}.fq")
    with open(f"reads_{mate}.fq", "w") as f:
        for r in recs:
            f.write("\n".join(r) + "\n")
        for i, r in enumerate(recs[:200:10]):    # 20 duplicate pairs
            f.write("\n".join([f"@dup{i}/{mate}"] + r[1:]) + "\n")
PY
q art_illumina -ss HS25 -i tx.fa -p -l 100 -f 20 -m 250 -s 30 -rs 12 -na -o rna_
q pbsim --prefix long --data-type CLR --depth 0.3 --length-mean 5000 --length-max 15000 --seed 13 \
  --model_qc /usr/share/pbsim/models/model_qc_clr ref.fa
q pbsim --prefix chim --data-type CLR --depth 1 --length-mean 6000 --length-max 15000 --accuracy-mean 0.9 --accuracy-min 0.85 --seed 14 \
  --model_qc /usr/share/pbsim/models/model_qc_clr chimeras.fa
cat long_*.fastq chim_*.fastq > long.fq

rg='@RG\tID:lane1\tSM:sample1\tPL:ILLUMINA'
sorted() { q samtools sort --no-PG -o "$out/$1" -; }

# Aligners.
q bwa index ref.fa
bwa mem -t 2 -R "$rg" ref.fa reads_1.fq reads_2.fq 2>> tools.log | sorted bwa_mem.bam
q samtools index "$out/bwa_mem.bam"
bwa mem -t 2 -a ref.fa reads_1.fq 2>> tools.log > bwa_all.sam   # -a: every alignment (single-end only)
q samtools view --no-PG -b -o "$out/bwa_mem_all_secondaries.bam" bwa_all.sam
q bowtie2-build ref.fa ref
bowtie2 -p 2 --reorder --seed 1 -x ref -1 reads_1.fq -2 reads_2.fq 2>> tools.log > bowtie2.sam
q samtools view --no-PG -b -o "$out/bowtie2.bam" bowtie2.sam
minimap2 -t 2 -ax sr ref.fa reads_1.fq reads_2.fq 2>> tools.log > mm2_sr.sam
sorted minimap2_sr.bam < mm2_sr.sam
q samtools index -c "$out/minimap2_sr.bam"
# minimap2 2.24 writes MD or cs, not both: cs (long form) here, MD for the long reads below.
minimap2 -t 2 -ax sr --cs=long ref.fa reads_1.fq reads_2.fq 2>> tools.log | sorted minimap2_cs.bam
minimap2 -t 2 -ax map-pb -Y --secondary=yes -N 5 --MD ref.fa long.fq 2>> tools.log > mm2_long.sam
sorted minimap2_long_Y.bam < mm2_long.sam
q samtools index "$out/minimap2_long_Y.bam"
q hisat2-build ref.fa ref_hisat
hisat2 -p 2 --reorder --seed 1 -x ref_hisat -1 rna_1.fq -2 rna_2.fq 2>> tools.log | sorted hisat2_spliced.bam
minimap2 -t 2 -ax splice ref.fa rna_1.fq 2>> tools.log | sorted minimap2_splice.bam

# samtools subcommands.
q samtools import --no-PG -1 reads_1.fq -2 reads_2.fq -o "$out/import_plain.bam"
python3 - <<'PY'
# FASTQ with SAM tags in the comments, as demultiplexers write them (samtools import -T).
with open("reads_1.fq") as f:
    lines = f.read().splitlines()
with open("tagged.fq", "w") as out:
    for i in range(0, min(len(lines), 2000), 4):
        name = lines[i].split()[0].removesuffix("/1")
        bc = "ACGT"[i % 4] * 8
        out.write(f"{name}\tBC:Z:{bc}-{bc[::-1]}\tQT:Z:{'F' * 17}\tRX:Z:{bc}\n{lines[i + 1]}\n+\n{lines[i + 3]}\n")
PY
q samtools import --no-PG -T '*' -0 tagged.fq -o "$out/import_tags.bam"
q samtools collate --no-PG -o collated.bam mm2_sr.sam
q samtools fixmate --no-PG -m collated.bam "$out/fixmate.bam"
q samtools sort --no-PG -o fixmate_sorted.bam "$out/fixmate.bam"
q samtools markdup --no-PG fixmate_sorted.bam "$out/markdup.bam"
samtools calmd --no-PG -b "$out/minimap2_sr.bam" ref.fa > "$out/calmd.bam" 2>> tools.log
samtools calmd --no-PG -b -e "$out/minimap2_sr.bam" ref.fa > "$out/calmd_equals.bam" 2>> tools.log  # '=' bases
q samtools addreplacerg --no-PG -r '@RG\tID:new\tSM:other' -o "$out/addreplacerg.bam" "$out/bwa_mem.bam"
q samtools view --no-PG -b --keep-tag '' -o "$out/stripped.bam" "$out/bwa_mem.bam"

# Hand-written corners of the SAM spec.
python3 - <<'PY'
hdr = "@HD\tVN:1.6\tSO:unsorted\n@SQ\tSN:chr1\tLN:100000\n@SQ\tSN:chr2\tLN:60000\n@CO\tcorners\n"
I = lambda n: "I" * n
recs = [
    # Padded alignment (P) and the =/X operators; a read with a hard clip at each end.
    f"padded\t0\tchr1\t100\t60\t3M2P2I3M\t*\t0\t0\tACGTTACG\t{I(8)}",
    f"eqx\t0\tchr1\t200\t60\t4=1X3=2D2=\t*\t0\t0\tACGTAACGTT\t{I(10)}\tNM:i:3",
    f"hardclips\t2048\tchr1\t300\t60\t30H5M40H\t*\t0\t0\tACGTA\t{I(5)}",
    f"hardonly\t256\tchr1\t310\t0\t5H5M\t*\t0\t0\t*\t*",
    # SEQ * with QUAL *, a SEQ without QUAL, a lower-case SEQ, and an IUPAC alphabet.
    f"noseq\t0\tchr1\t400\t30\t5M\t*\t0\t0\t*\t*",
    f"noqual\t16\tchr1\t400\t30\t6M\t*\t0\t0\tACGTNN\t*",
    f"iupac\t0\tchr1\t500\t30\t16M\t*\t0\t0\tACMGRSVTWYHKDBN=\t{I(16)}",
    # Placed but unmapped (mate mapped), unmapped pair without positions.
    f"placed\t73\tchr2\t1000\t60\t4M\t=\t1000\t0\tACGT\t{I(4)}",
    f"placed\t133\tchr2\t1000\t0\t*\t=\t1000\t0\tTTTT\t{I(4)}",
    f"nowhere\t77\t*\t0\t0\t*\t*\t0\t0\tACGT\t{I(4)}",
    f"nowhere\t141\t*\t0\t0\t*\t*\t0\t0\tTGCA\t{I(4)}",
    # Mates on different references, negative TLEN, secondary without SEQ.
    f"cross\t97\tchr1\t700\t60\t4M\tchr2\t900\t0\tACGT\t{I(4)}\tMC:Z:4M",
    f"cross\t145\tchr2\t900\t60\t4M\tchr1\t700\t0\tACGT\t{I(4)}\tMC:Z:4M",
    f"pairlen\t99\tchr1\t800\t60\t4M\t=\t850\t54\tACGT\t{I(4)}",
    f"pairlen\t147\tchr1\t850\t60\t4M\t=\t800\t-54\tACGT\t{I(4)}",
    f"second\t256\tchr1\t900\t0\t10M\t*\t0\t0\t*\t*\tAS:i:5",
    # Every B subtype at its limits, floats, an always-empty B array, H and A tags.
    "arrays\t4\t*\t0\t0\t*\t*\t0\t0\t*\t*"
    "\tBc:B:c,-128,127\tBC:B:C,0,255\tBs:B:s,-32768,32767\tBS:B:S,0,65535"
    "\tBi:B:i,-2147483648,2147483647\tBI:B:I,0,4294967295\tBf:B:f,-1.5,3.25e+20,1e-07"
    "\tBe:B:C\tXh:H:00FF1AE3\tXa:A:!\tXf:f:-0.000123\tXg:f:1e+30\tXi:i:-2147483648\tXu:i:4294967295",
    "arrays2\t4\t*\t0\t0\t*\t*\t0\t0\tAC\t!~\tBe:B:C\tXh:H:\tXa:A:~\tZZ:Z:",
]
with open("corners.sam", "w") as f:
    f.write(hdr + "\n".join(recs) + "\n")
PY
q samtools view --no-PG -b -o "$out/hand_corners.bam" corners.sam
printf '@HD\tVN:1.6\tSO:coordinate\n@SQ\tSN:chr1\tLN:100000\n@RG\tID:x\tSM:y\n@PG\tID:none\tPN:corpus.sh\n' \
  | samtools view --no-PG -b -o "$out/header_only.bam" -
# No header text at all: references only in the binary list (samtools writes @SQ text, so
# l_text is set to 0 here and the data recompressed by bgzip), and no references either.
python3 - "$out/bwa_mem.bam" <<'PY'
import gzip, struct, sys
data = gzip.open(sys.argv[1]).read()
l_text = struct.unpack("<i", data[4:8])[0]
refs = p = 8 + l_text
n_ref = struct.unpack("<i", data[p:p + 4])[0]
p += 4
for _ in range(n_ref):
    p += 4 + struct.unpack("<i", data[p:p + 4])[0] + 4
for _ in range(1500):   # the first 1500 records
    p += 4 + struct.unpack("<i", data[p:p + 4])[0]
with open("no_text.raw", "wb") as f:
    f.write(b"BAM\1" + struct.pack("<i", 0) + data[refs:p])
PY
bgzip -c no_text.raw > "$out/no_header_text.bam"
printf 'u1\t4\t*\t0\t0\t*\t*\t0\t0\tACGT\tIIII\nu2\t4\t*\t0\t0\t*\t*\t0\t0\tGG\t!!\tXY:Z:late tag\n' \
  | samtools view --no-PG -b -o "$out/no_header_at_all.bam" -

# Records crossing BGZF blocks. htslib starts a new block before a record that does not fit;
# bgzip re-compression, htsjdk (Picard), sambamba, biobambam2 and bamtools fill blocks whole.
bgzip -dc "$out/bwa_mem.bam" | bgzip -c > "$out/bgzip_bwa_mem.bam"
bgzip -dc "$out/minimap2_long_Y.bam" | bgzip -c > "$out/bgzip_long_reads.bam"
bgzip -dc "$out/import_plain.bam" | bgzip -c > "$out/bgzip_import_plain.bam"
q PicardCommandLine SortSam -I bowtie2.sam -O "$out/picard_sorted.bam" -SORT_ORDER coordinate \
  -CREATE_INDEX true -VALIDATION_STRINGENCY SILENT
q PicardCommandLine MarkDuplicates -I "$out/picard_sorted.bam" -O "$out/picard_markdup.bam" -M markdup.txt \
  -VALIDATION_STRINGENCY SILENT
q PicardCommandLine FastqToSam -F1 reads_1.fq -F2 reads_2.fq -O "$out/picard_unaligned.bam" -SM sample1
q sambamba sort -t 2 -o "$out/sambamba_sorted.bam" "$out/bowtie2.bam"
q bamsort inputformat=sam index=1 indexfilename="$out/biobambam_sorted.bam.bai" I=mm2_long.sam \
  O="$out/biobambam_sorted.bam"
q bamtools filter -in "$out/minimap2_long_Y.bam" -out "$out/bamtools_filter.bam" -isMapped true

rm -f "$out"/*.bam.tmp*
ls -l "$out"

# CRAM files from these BAMs, against this genome (the FASTA is kept for the CRAM tests).
mkdir -p "$data/cram"
cp ref.fa "$data/cram/ref.fa"
"$data/cram.sh" > /dev/null
"$data/sam.sh" > /dev/null
