"""Peak memory of loading SEVERAL LLaMA-7B-shaped layers at once (PneumoLLM's ``load_llm_layers``), both formats.

The same synthetic checkpoints as ``load_memory.py`` (``--layers`` layers of LLaMA-7B's exact shapes, default 2;
fp16, Hugging Face sharded safetensors and Meta ``consolidated.00.pth``). Each case loads every layer as bf16, with
the final norm, in a fresh subprocess that reports its peak resident set (VmHWM) growth over its resident set
before loading, and compares it with the bytes of the layers it keeps. The bar: growth under 1.3x those bytes.

    python benchmarks/load_memory_stack.py [--layers 32] [--dir DIR] [--keep]

All 32 layers need about 25 GiB of disk for the two checkpoints and 13 GiB of memory for the loaded layers.
"""

from __future__ import annotations

import sys

from load_memory import STATUS, compare_formats  # the checkpoints and the measurement of the one-layer benchmark

CHILD = STATUS + r"""
from medboost_cli.models.llm_loading import load_llm_layers
before = status('VmRSS:')
stack = load_llm_layers(sys.argv[1], list(range(int(sys.argv[2]))), dtype=torch.bfloat16, norm="pretrained", hf_rope_order=True)
peak = status('VmHWM:')
kept = sum(p.numel() * p.element_size() for b in stack.blocks + [stack.norm] for p in b.parameters())
print(json.dumps({"growth": peak - before, "bytes": kept, "what": f"{len(stack.blocks)} layers"}))
"""


if __name__ == "__main__":
    sys.exit(compare_formats(CHILD, 1.3, __doc__.splitlines()[0]))
