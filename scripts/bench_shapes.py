#!/usr/bin/env python
"""How the int8-vs-torch speed ratio depends on the encoder's shape (issue #4's 3x target).

    python scripts/bench_shapes.py [--shapes 2x256x1024,1x256x1024,...] [--n 3000] [--out FILE.json]

For each shape (layers x hidden x FFN), a model with random weights (the bundled tokenizer and n-gram
settings, a 65,536-bucket bag) is exported to static int8 ONNX. The network alone is then timed on
the same length-sorted batches of review texts, one thread each: onnxruntime int8 against torch fp32
eager. Weights do not change the speed, so no training is needed. Best of 3 passes; microseconds per text.

`e2e_ratio` adds the text work both backends share (normalise, tokenise, hash, build results:
~80 µs per text, `scripts/bench.py`). `int8_2core` estimates library texts/s on two cores at 80% of
two single-thread networks plus that shared work: for the bundled 2x256x1024 shape that gives ~1,930,
which `scripts/bench.py` measured (1,926-1,938).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

SHARED_TEXT_US = 80.0


def measure(shape: tuple[int, int, int], texts: list[str], work: Path) -> dict:
    import torch
    from bench import network_us_per_text
    from tokenizers import Tokenizer

    from emotag import Tagger
    from emotag.model.config import EmotagConfig, NgramConfig, resolve_model_dir
    from emotag.model.export import export_onnx
    from emotag.model.modeling import EmotagModel

    layers, hidden, ffn = shape
    bundled = resolve_model_dir(None)
    base = EmotagConfig.load(bundled)
    enc = dict(base.encoder)
    enc.update(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=ffn, num_attention_heads=hidden // 64)
    cfg = EmotagConfig(encoder=enc, max_length=base.max_length, ngram=NgramConfig(buckets=65536, dim=32),
                       name="shape-probe")
    torch.manual_seed(0)
    d = work / f"{layers}x{hidden}x{ffn}"
    EmotagModel(cfg).save(d, tokenizer=Tokenizer.from_file(str(bundled / "tokenizer.json")))
    export_onnx(d, quantize="int8")
    int8 = Tagger.load(d, backend="onnx-int8", threads=1)
    batches = [b for _, b in int8._prepare_chunk(texts, list(range(len(texts))), 64).batches]
    us = {}
    for name, backend in (("int8", int8.backend), ("torch", Tagger.load(d, backend="torch", threads=1).backend)):
        backend.run(batches[0])
        us[name] = network_us_per_text(backend, batches, len(texts))
    shutil.rmtree(d, ignore_errors=True)
    return {"shape": f"{layers}x{hidden}x{ffn}", "int8_us": round(us["int8"]), "torch_us": round(us["torch"]),
            "net_ratio": round(us["torch"] / us["int8"], 2),
            "e2e_ratio": round((us["torch"] + SHARED_TEXT_US) / (us["int8"] + SHARED_TEXT_US), 2),
            "int8_2core": round(2 * 0.80e6 / (us["int8"] + SHARED_TEXT_US))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="2x256x1024,2x256x2048,1x256x1024,3x256x1024,2x192x768,1x384x1536,2x384x1536",
                    help="layers x hidden x FFN, comma-separated (hidden a multiple of 64)")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    a = ap.parse_args()
    import torch
    from bench import load_texts

    torch.set_num_threads(1)
    texts = load_texts(a.n, Path(a.data))
    rows = []
    print("| shape (layers x hidden x FFN) | int8 µs/text | torch µs/text | network ratio | end-to-end ratio | int8 texts/s, 2 cores (est.) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for s in a.shapes.split(","):
            r = measure(tuple(int(x) for x in s.split("x")), texts, Path(tmp))  # type: ignore[arg-type]
            rows.append(r)
            print(f"| {r['shape']} | {r['int8_us']} | {r['torch_us']} | {r['net_ratio']:.2f} | {r['e2e_ratio']:.2f} | {r['int8_2core']} |",
                  flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
