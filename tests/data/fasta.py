"""Random sequences and FASTA files for the test-data scripts (make.sh, corpus.sh)."""
import random


def random_seq(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


def write_fasta(path: str, records, width: int = 80) -> None:
    with open(path, "w") as f:
        for name, s in records:
            f.write(f">{name}\n")
            for i in range(0, len(s), width):
                f.write(s[i:i + width] + "\n")
