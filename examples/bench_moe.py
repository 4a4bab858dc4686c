"""Benchmark the sparse MoE (top-5 of 32 vs all 32 experts) and DS-MoE-n/s vs YOLOv8n/s on this CPU.

python examples/bench_moe.py            # same as: dsmoe bench-moe
python examples/bench_moe.py runs=20 threads=2 models=n,s
"""

import sys

from dsmoe_yolo.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-moe", *sys.argv[1:]]))
