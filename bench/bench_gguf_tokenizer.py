"""The bundled model's tokenizer straight from its GGUF file: ``pvf_core.gguf`` against the libraries.

Why ``pvf_core/gguf.py`` exists instead of a library call: on a fresh machine ``inspect`` counts tokens
before the bundled model is converted. Each method runs in a fresh process (imports included, as a user's
command pays them), the same number of rounds, and must give the same token counts on the same texts:

- ours: ``gguf.read_metadata`` + ``gguf.byte_level_tokenizer`` (struct + ``tokenizers``, no torch);
- transformers: ``AutoTokenizer.from_pretrained(folder, gguf_file=...)`` (what the conversion uses);
- gguf: the ``gguf`` package's ``GGUFReader`` reading the metadata only (no tokenizer built yet).

Not a compute benchmark (no matmul): it parses 49k tokens and 49k merges, so no peak is measured.

    .venv/bin/python bench/bench_gguf_tokenizer.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["This movie was great.", "Привет 你好 🙂 café", "<|im_start|>user\nHi<|im_end|>\n",
         "  two leading spaces\tand a tab", "What is the capital of Mongolia ?"]

METHODS = {
    "ours": """
from pvf_core import gguf
from pvf_core.models import bundled_gguf_path
fast = gguf.byte_level_tokenizer(gguf.read_metadata(bundled_gguf_path()))
counts = [len(e.ids) for e in fast.encode_batch(TEXTS, add_special_tokens=False)]
""",
    "transformers": """
from transformers import AutoTokenizer
from pvf_core.models import bundled_gguf_path
path = bundled_gguf_path()
tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
counts = [len(ids) for ids in tokenizer(TEXTS, add_special_tokens=False)["input_ids"]]
""",
    "gguf": """
from gguf import GGUFReader
from pvf_core.models import bundled_gguf_path
reader = GGUFReader(str(bundled_gguf_path()))
counts = None
""",
}


def run(method: str) -> dict:
    code = (f"import json, time\nstarted = time.perf_counter()\nTEXTS = {TEXTS!r}\n{METHODS[method]}\n"
            "print(json.dumps({'seconds': time.perf_counter() - started, 'counts': counts}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"})
    if done.returncode:
        raise SystemExit(f"{method} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = {m: [run(m) for _ in range(args.rounds)] for m in METHODS}
    seconds = {m: statistics.median(r["seconds"] for r in rs) for m, rs in results.items()}
    ours_counts = results["ours"][0]["counts"]
    same = ours_counts == results["transformers"][0]["counts"]
    print(f"| method | median s of {args.rounds} fresh processes (imports included) | ours faster by |")
    print("|---|---|---|")
    for method, value in seconds.items():
        print(f"| {method} | {value:.2f} | {value / seconds['ours']:.1f}× |")
    print(f"token counts, ours {ours_counts} vs transformers {results['transformers'][0]['counts']}: "
          f"{'the same' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
