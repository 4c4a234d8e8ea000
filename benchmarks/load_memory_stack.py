"""Peak memory of loading SEVERAL LLaMA-7B-shaped layers at once (PneumoLLM's ``load_llm_layers``), both formats.

The same synthetic checkpoints as ``load_memory.py`` (two layers of LLaMA-7B's exact shapes, fp16, Hugging Face
sharded safetensors and Meta ``consolidated.00.pth``). Each case loads both layers as bf16, with the final norm,
in a fresh subprocess that reports its peak resident set (VmHWM) growth over its resident set before loading, and
compares it with the bytes of the layers it keeps. The bar: growth under 1.3x those bytes.

    python benchmarks/load_memory_stack.py [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from load_memory import write_hf, write_meta  # the checkpoints of the one-layer benchmark beside this file

BAR = 1.3
CHILD = r"""
import json, sys, torch
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
from medboost_cli.models.llm_loading import load_llm_layers
before = status('VmRSS:')
stack = load_llm_layers(sys.argv[1], [0, 1], dtype=torch.bfloat16, norm="pretrained", hf_rope_order=True)
peak = status('VmHWM:')
kept = sum(p.numel() * p.element_size() for b in stack.blocks + [stack.norm] for p in b.parameters())
print(json.dumps({"growth": peak - before, "bytes": kept, "layers": len(stack.blocks)}))
"""


def measure(folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="where to write the synthetic checkpoints (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints")
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="medboost-7b-"))
    ok = True
    try:
        for fmt, writer in (("safetensors (HF, sharded)", write_hf), ("Meta consolidated.00.pth", write_meta)):
            folder = root / fmt.split()[0]
            if not folder.exists():
                writer(folder)
            r = measure(folder)
            ratio = r["growth"] / r["bytes"]
            ok &= ratio < BAR
            print(f"{fmt:28s} {r['layers']} layers {r['bytes'] / 2**20:7.1f} MiB (bf16)  peak RSS growth "
                  f"{r['growth'] / 2**20:7.1f} MiB = {ratio:.2f}x  {'ok' if ratio < BAR else f'OVER {BAR}x'}")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
