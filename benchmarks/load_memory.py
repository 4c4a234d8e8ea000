"""Peak memory of loading ONE LLaMA-7B-shaped layer from a synthetic checkpoint, in both formats.

Writes a checkpoint with two layers of LLaMA-7B's exact shapes (hidden 4096, MLP 11008, 32 heads), fp16 like the
released weights, and a small vocabulary: (a) Hugging Face sharded safetensors with an index file, (b) Meta
``consolidated.00.pth``. Each load of the last layer (as bf16) runs in a fresh subprocess that reports its peak
resident set (VmHWM) growth over its resident set before loading. The bar: growth under 1.5x the layer's bytes.

    python benchmarks/load_memory.py [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from medboost_cli.models.llm import KNOWN_SPECS, META_RENAMES

SPEC = KNOWN_SPECS["llama-7b"]
VOCAB = 1024


def layer_tensors(spec, index: int, dtype=torch.float16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(index)
    h, m, q, kv = spec.hidden, spec.intermediate, spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    shapes = {
        "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h), "self_attn.v_proj.weight": (kv, h),
        "self_attn.o_proj.weight": (h, q), "mlp.gate_proj.weight": (m, h), "mlp.up_proj.weight": (m, h),
        "mlp.down_proj.weight": (h, m), "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
    }
    return {k: (torch.randn(s, generator=g) * 0.02).to(dtype) for k, s in shapes.items()}


def write_hf(folder: Path, n_layers: int = 2) -> None:
    """One shard per layer (written one at a time), and one for the embedding and the final norm."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "llama", "hidden_size": SPEC.hidden, "intermediate_size": SPEC.intermediate,
              "num_attention_heads": SPEC.heads, "num_key_value_heads": SPEC.kv_heads, "num_hidden_layers": n_layers,
              "rms_norm_eps": SPEC.eps, "vocab_size": VOCAB, "hidden_act": "silu"}
    (folder / "config.json").write_text(json.dumps(config))
    weight_map = {}
    total = n_layers + 1
    first = {"model.embed_tokens.weight": torch.zeros(VOCAB, SPEC.hidden, dtype=torch.float16),
             "model.norm.weight": torch.ones(SPEC.hidden, dtype=torch.float16)}
    shards = [(f"model-00001-of-{total:05d}.safetensors", lambda: first)]
    shards += [(f"model-{i + 2:05d}-of-{total:05d}.safetensors",
                lambda i=i: {f"model.layers.{i}.{k}": v for k, v in layer_tensors(SPEC, i).items()})
               for i in range(n_layers)]
    for name, make in shards:
        tensors = make()
        save_file(tensors, folder / name)
        weight_map.update({k: name for k in tensors})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write_meta(folder: Path, n_layers: int = 2) -> None:
    """One consolidated.00.pth, as Meta's 7B release (its whole state is in memory while it is written)."""
    folder.mkdir(parents=True, exist_ok=True)
    params = {"dim": SPEC.hidden, "n_heads": SPEC.heads, "n_layers": n_layers, "multiple_of": 256,
              "norm_eps": SPEC.eps, "vocab_size": VOCAB}
    (folder / "params.json").write_text(json.dumps(params))
    inverse = {v: k for k, v in META_RENAMES.items()}
    state = {"tok_embeddings.weight": torch.zeros(VOCAB, SPEC.hidden, dtype=torch.float16),
             "norm.weight": torch.ones(SPEC.hidden, dtype=torch.float16)}
    for i in range(n_layers):
        for key, tensor in layer_tensors(SPEC, i).items():
            module, leaf = key.rsplit(".", 1)
            state[f"layers.{i}.{inverse[module]}.{leaf}"] = tensor
    torch.save(state, folder / "consolidated.00.pth")


# The start of every measuring child: its resident set from /proc (bytes).
STATUS = r"""
import json, sys, torch
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
"""
# Prints {"growth": peak RSS growth, "bytes": bytes kept, "what": what was loaded} for the folder in argv[1]
# (argv[2]: the checkpoint's number of layers).
CHILD = STATUS + r"""
from medboost_cli.models.llm_loading import load_llm_layer
before = status('VmRSS:')
loaded = load_llm_layer(sys.argv[1], -1, dtype=torch.bfloat16, norm="pretrained")  # + the final norm
peak = status('VmHWM:')
layer_bytes = sum(p.numel() * p.element_size() for p in loaded.block.parameters())
print(json.dumps({"growth": peak - before, "bytes": layer_bytes, "what": "layer"}))
"""


def measure(folder: Path, child: str = CHILD, n_layers: int = 2) -> dict:
    out = subprocess.run([sys.executable, "-c", child, str(folder), str(n_layers)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_formats(child: str, bar: float, description: str) -> int:
    """Measure ``child`` on both checkpoint formats (written once into --dir or a temp dir) and print the peak RSS
    growth against the bytes kept; exit status 1 when a format reaches ``bar`` times those bytes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the synthetic checkpoints (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints")
    ap.add_argument("--layers", type=int, default=2, help="layers in the synthetic checkpoint (default 2; LLaMA-7B has "
                    "32, about 12.6 GiB of fp16 per format)")
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="medboost-7b-"))
    ok = True
    try:
        for fmt, writer in (("safetensors (HF, sharded)", write_hf), ("Meta consolidated.00.pth", write_meta)):
            folder = root / f"{fmt.split()[0]}-{args.layers}"
            if not folder.exists():
                writer(folder, args.layers)
            r = measure(folder, child, args.layers)
            ratio = r["growth"] / r["bytes"]
            ok &= ratio < bar
            print(f"{fmt:28s} {r['what']} {r['bytes'] / 2**20:7.1f} MiB (bf16)  peak RSS growth "
                  f"{r['growth'] / 2**20:7.1f} MiB = {ratio:.2f}x  {'ok' if ratio < bar else f'OVER {bar}x'}")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


def main() -> int:
    return compare_formats(CHILD, 1.5, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
