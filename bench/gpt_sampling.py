"""Text sampling speed of a trained GPT: KV cache vs no cache, batch 1 and several samples.

Times ``GPT.generate`` for ``--new`` tokens after the prompt "ROMEO:" at
temperature 0.8 (the same seed for both paths, which therefore produce the
same tokens), median of ``--repeats``. Tokens/s counts new tokens of all
samples in the batch. Uses ``--run RUN_DIR`` (a ``genforge train
shakespeare-char`` run directory), else trains one first (about 45 s) on Tiny
Shakespeare from ``--data-dir`` (default ``$GENFORGE_TEST_DATA/tinyshakespeare``
or the shared folder beside the checkout; missing, it exits with code 2).

    python bench/gpt_sampling.py [--run runs/shakespeare-char-... | --data-dir DIR] [--new 500] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_dir, fail, require_data, require_idle, summary  # noqa: E402

from genforge.data import DataError  # noqa: E402
from genforge.sampling.text import load_text_model  # noqa: E402


def time_generate(model, prompt: torch.Tensor, new: int, use_cache: bool, repeats: int) -> tuple[list[float], torch.Tensor]:
    rates, out = [], None
    for r in range(repeats):
        g = torch.Generator().manual_seed(r)
        t = time.perf_counter()
        out = model.generate(prompt, new, temperature=0.8, generator=g, use_cache=use_cache)
        rates.append(prompt.shape[0] * new / (time.perf_counter() - t))
    return rates, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a shakespeare-char run directory (default: train one now)")
    add_data_dir(ap, "tinyshakespeare", "Tiny Shakespeare's input.txt, to train a model when --run is not given")
    ap.add_argument("--new", type=int, default=500, help="new tokens per sample (default 500)")
    ap.add_argument("--batch", type=int, default=8, help="samples per batch for the batched figure (default 8)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.run is None:
        require_data(args.data_dir, ["input.txt"], "Tiny Shakespeare",
                     alternative="--run RUN_DIR with a trained shakespeare-char run")
    require_idle()
    tmp = None
    run = args.run
    if run is None:
        import genforge

        tmp = tempfile.TemporaryDirectory()
        print("training shakespeare-char first ...", flush=True)
        try:
            run = genforge.train("shakespeare-char", data_dir=args.data_dir, out=Path(tmp.name) / "run",
                                 progress=False).run_dir
        except DataError as e:
            fail(str(e))
    model, tok = load_text_model(run)
    cfg = model.config
    print(f"model: {cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, context {cfg.block_size}, "
          f"vocab {cfg.vocab_size}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    prompt = torch.tensor([tok.encode("ROMEO:")])
    model.generate(prompt, 20)  # warm-up
    cached, a = time_generate(model, prompt, args.new, True, args.repeats)
    uncached, b = time_generate(model, prompt, args.new, False, max(1, args.repeats // 2))
    same = torch.equal(a, b) if args.repeats == max(1, args.repeats // 2) else None
    batched, _ = time_generate(model, prompt.expand(args.batch, -1), args.new, True, args.repeats)
    c, u, bt = (statistics.median(v) for v in (cached, uncached, batched))
    print(f"batch 1, KV cache    : tokens/s {summary(cached)}")
    print(f"batch 1, no cache    : tokens/s {summary(uncached)}   → cache speed-up {c / u:.1f}x")
    print(f"batch {args.batch}, KV cache    : tokens/s {summary(batched)}   ({bt / c:.1f}x batch 1)")
    if same is not None:
        print(f"cached and uncached outputs identical: {same}")
    g = torch.Generator().manual_seed(0)
    text = tok.decode(model.generate(prompt, 300, temperature=0.8, generator=g)[0].tolist())
    print("--- sample (seed 0, temperature 0.8) ---\n" + text)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
