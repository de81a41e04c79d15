"""Text decoding speed at batch 1 and batch 8: the fused C step (genforge/models/native) against PyTorch.

For each model, ``GPT.generate`` makes ``--new`` tokens after the prompt "ROMEO:" at temperature 0.8 with
the same seed on both paths, interleaved (PyTorch, native, PyTorch, ...) so the ratio is measured in one run;
figures are medians of ``--repeats``, and the two paths must give the same tokens (printed). Models:

- ``shakespeare-char``: a trained run (``--run RUN_DIR``, else trained first, about a minute, on Tiny
  Shakespeare from ``--data-dir``; missing, the script exits with code 2);
- nanoGPT's CPU shape (4 layers, 4 heads, width 128, context 64) and a 6 x 384 model (context 256),
  randomly initialised over the same 65 characters (speed does not depend on the weights' values).

Batch 1 is also timed through onnxruntime (the exported, verified ``decoder`` graph behind the same decode
loop; needs the ``export`` extra), one of the options the fused step was chosen over. The server's streaming
path is timed too: one request at a time through ``TextEngine`` (the continuous
batcher behind ``/v1/completions``), tokens/s from submit to the last token. The machine line gives the CPU
model and its measured fp32/bf16 matmul peaks.

    python bench/gpt_sampling.py [--run runs/shakespeare-char-... | --data-dir DIR] [--new 500] [--repeats 5]
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
from common import add_data_dir, fail, print_machine, require_data, require_idle, summary  # noqa: E402

from genforge.data import DataError  # noqa: E402
from genforge.models import native  # noqa: E402
from genforge.models.gpt import GPT, GPTConfig  # noqa: E402
from genforge.sampling.text import TextPipeline, TextRequest, load_text_model  # noqa: E402

SHAPES = {"nanoGPT 4x128": dict(n_layer=4, n_head=4, n_embd=128, block_size=64),
          "6x384": dict(n_layer=6, n_head=6, n_embd=384, block_size=256)}


def rate(model, prompt: torch.Tensor, new: int, seed: int, fused: bool) -> tuple[float, torch.Tensor]:
    """Tokens/s of one ``generate`` call (all rows), and its tokens."""
    ctx = native.disabled() if not fused else torch.no_grad()
    with ctx:
        t = time.perf_counter()
        out = model.generate(prompt, new, temperature=0.8, generator=torch.Generator().manual_seed(seed))
        return prompt.shape[0] * new / (time.perf_counter() - t), out


def compare(name: str, model, prompt: torch.Tensor, new: int, repeats: int) -> None:
    rate(model, prompt, 20, 0, True), rate(model, prompt, 20, 0, False)  # warm-up, build, timing race
    rates: dict[bool, list[float]] = {True: [], False: []}
    same = True
    for r in range(repeats):
        a, ta = rate(model, prompt, new, r, False)
        b, tb = rate(model, prompt, new, r, True)
        rates[False].append(a)
        rates[True].append(b)
        same &= torch.equal(ta, tb)
    p, f = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"{name:24s} batch {prompt.shape[0]}: pytorch {summary(rates[False])} tokens/s | native "
          f"{summary(rates[True])} tokens/s | {f / p:.2f}x | same tokens: {same}", flush=True)


def onnx_rate(model, prompt: torch.Tensor, new: int, repeats: int) -> str:
    """Batch-1 tokens/s of the decode loop over onnxruntime, or why it was not measured."""
    try:
        import onnxruntime as ort

        from genforge.export.onnx import OnnxLanguageModel, export_graph
    except ImportError as e:
        return f"not measured ({e.name} is not installed)"
    from genforge.models import decoding

    module, inputs, names, outputs, axes = model.onnx_graphs()["decoder"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "decoder.onnx"
        export_graph(module, inputs, path, names, outputs, axes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        lm = OnnxLanguageModel(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), model)
    rates = []
    for r in range(repeats):
        t = time.perf_counter()
        list(decoding.stream(lm, prompt, new, generator=torch.Generator().manual_seed(r), temperature=0.8))
        rates.append(new / (time.perf_counter() - t))
    return f"{summary(rates)} tokens/s"


def engine_rate(run: str, new: int, repeats: int) -> None:
    """Batch-1 streaming through the server's engine: one seeded request at a time."""
    from genforge.sampling.engine import JobDone, TextEngine

    for fused in (False, True):
        ctx = native.disabled() if not fused else torch.no_grad()
        rates = []
        with ctx:
            engine = TextEngine(TextPipeline.from_run(run), max_rows=8)
            try:
                for r in range(repeats + 1):
                    done = []
                    t = time.perf_counter()
                    job = engine.submit(TextRequest(prompt="ROMEO:", n=1, seed=r), {"max_new_tokens": new,
                                        "temperature": 0.8}, sink=lambda e: done.append(e) if isinstance(e, JobDone) else None)
                    job.wait()
                    if r:  # the first builds and races
                        rates.append(new / (time.perf_counter() - t))
            finally:
                engine.close()
        print(f"{'server engine, stream':24s} batch 1: {'native' if fused else 'pytorch'} {summary(rates)} tokens/s",
              flush=True)


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
    print_machine()
    print(f"native kernels: {native.status('gpt_step')}", flush=True)
    tmp = None
    run = args.run
    if run is None:
        import genforge

        tmp = tempfile.TemporaryDirectory()
        print("training shakespeare-char first ...", flush=True)
        try:
            run = str(genforge.train("shakespeare-char", data_dir=args.data_dir, out=Path(tmp.name) / "run",
                                     progress=False).run_dir)
        except DataError as e:
            fail(str(e))
    model, tok = load_text_model(run)
    prompt = torch.tensor([tok.encode("ROMEO:")])
    models = {"shakespeare-char": model}
    for name, shape in SHAPES.items():
        torch.manual_seed(0)
        models[name] = GPT(GPTConfig(vocab_size=model.config.vocab_size, **shape)).eval()
    for name, m in models.items():
        cfg = m.config
        print(f"-- {name}: {cfg.n_layer} layers x {cfg.n_embd}, {cfg.n_head} heads, context {cfg.block_size}")
        compare(name, m, prompt, args.new, args.repeats)
        print(f"{name:24s} batch 1: onnxruntime {onnx_rate(m, prompt, args.new, max(1, args.repeats // 2))}",
              flush=True)
        compare(name, m, prompt.expand(args.batch, -1), args.new, max(1, args.repeats // 2))
    engine_rate(run, args.new, args.repeats)
    g = torch.Generator().manual_seed(0)
    print("--- sample (seed 0, temperature 0.8) ---\n" + tok.decode(
        model.generate(prompt, 300, temperature=0.8, generator=g)[0].tolist()))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
