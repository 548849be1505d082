"""How long identifying a base model takes: the legacy full hash, then base_fingerprint without and with its memo.

    python scripts/time_base_fingerprint.py [MODEL]          # default: the toy base
    python scripts/time_base_fingerprint.py --flux1-dev-shaped DIR

--flux1-dev-shaped writes DIR/transformer: FLUX.1-dev's tensor names and shapes in bf16 in three shards
with an index, as on the hub, as sparse files (23.8 GB apparent, no disk used; the weights read as zeros,
so the full hash is timed without disk reads: a lower bound). The page cache is whatever it is: figures
are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def flux1_dev_shaped(root: Path) -> Path:
    import torch
    from diffusers import FluxTransformer2DModel

    from storyloop.bench.gsa import CONFIGS

    folder = root / "transformer"
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        model = FluxTransformer2DModel(**CONFIGS["flux1-dev"]["transformer"])
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    names = sorted(shapes)
    shards = [names[i::3] for i in range(3)]
    weight_map = {}
    for i, keys in enumerate(shards, 1):
        shard = f"diffusion_pytorch_model-{i:05d}-of-00003.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for k in keys:
            nbytes = 2 * int(torch.tensor(shapes[k]).prod())
            header[k] = {"dtype": "BF16", "shape": shapes[k], "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[k] = shard
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        with open(folder / shard, "wb") as fh:
            fh.write(len(text).to_bytes(8, "little") + text)
            fh.truncate(8 + len(text) + offset)  # a hole: the weights read as zeros
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel",
                                                    **CONFIGS["flux1-dev"]["transformer"]}))
    return root


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--flux1-dev-shaped", type=Path, default=None)
    args = parser.parse_args()
    os.environ["STORYLOOP_CACHE_DIR"] = tempfile.mkdtemp(prefix="fingerprint-memo-")  # start without a memo

    from storyloop.generation.fingerprint import base_fingerprint, legacy_fingerprint
    from storyloop.hashing import sha256_path
    from storyloop.toy.assets import BASE

    model = str(flux1_dev_shaped(args.flux1_dev_shaped)) if args.flux1_dev_shaped else (args.model or str(BASE))
    folder = Path(model) / "transformer"
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"{model}: transformer {size / 1e9:.2f} GB")
    _, old = timed(lambda: sha256_path(folder))
    print(f"before (sha256 of the folder, every call):  {old * 1000:10.1f} ms")
    fp, first = timed(lambda: base_fingerprint(model))
    _, second = timed(lambda: base_fingerprint(model))
    print(f"after, first call (headers + samples):      {first * 1000:10.1f} ms   {fp[:24]}…")
    print(f"after, second call (memo):                  {second * 1000:10.1f} ms")
    _, legacy = timed(lambda: legacy_fingerprint(folder))
    _, legacy2 = timed(lambda: legacy_fingerprint(folder))
    print(f"legacy check, first / memoised:             {legacy * 1000:10.1f} / {legacy2 * 1000:.1f} ms")


if __name__ == "__main__":
    main()
