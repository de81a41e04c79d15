"""Load on ``genforge serve``: concurrent clients against a text and an image model, and continuous batching
against serving the same requests one at a time, measured in one run.

    python bench/serve_load.py                                   # 32 clients, 60 s per phase
    python bench/serve_load.py --clients 8 --seconds 10          # a quick look
    python bench/serve_load.py --text-run runs/shakespeare-char --image-run runs/mnist-diffusion

Without ``--text-run`` / ``--image-run`` the script trains the models it needs for 2 steps (throughput does
not depend on training) into a temporary folder, offline: the ``shakespeare-char`` architecture on English text
that ships with scikit-learn, and the ``digits-diffusion`` recipe (16x16 digits). Each phase starts a fresh
``genforge serve`` on 127.0.0.1 and runs ``--clients`` asyncio clients that send requests back to back for
``--seconds``:

1. text, continuous batching (``--max-batch`` = clients): streaming completions (``max_tokens`` 64, each
   client its own seed), time to first token from the first streamed chunk;
2. text, one at a time (``--max-batch 1``): the same clients and requests; the ratio of tokens/s is
   continuous batching's gain;
3. images (``--max-batch`` = clients): one image per request with the family's default sampler options
   (diffusion: ``--image-steps`` steps).

Every response is checked: a 429 (queue full) is counted apart, anything else that is not 200 is an error;
a request still running when the phase ends is counted as late and its output is not in the rates.
Figures: requests, tokens/s or images/s, latency p50/p99, time to first token p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fail, require_idle  # noqa: E402

PROMPTS = ["ROMEO:", "First Citizen:\nWe are", "The king", "O, ", "What is", "Enter"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _corpus(path: Path) -> Path:
    """A small English text with every character of PROMPTS (no download)."""
    import sklearn

    words = (Path(sklearn.__file__).parent / "datasets" / "descr").glob("*.rst")
    text = "\n".join(p.read_text(encoding="utf-8", errors="ignore") for p in sorted(words))
    path.write_text("ROMEO: First Citizen:\nWe are The king O, What is Enter\n" + text, encoding="utf-8")
    return path


def _train(recipe: str, out: Path, *extra: str) -> Path:
    subprocess.run([sys.executable, "-m", "genforge.cli", "train", recipe, "--out", str(out), "--no-progress",
                    "--set", "train.max_steps=2", "--set", "train.eval_every=0", "--set", "train.sample_every=0",
                    *extra], check=True, capture_output=True)
    return out


class Server:
    """``genforge serve RUN`` on a free 127.0.0.1 port, stopped (SIGTERM) on exit."""

    def __init__(self, run: Path, *flags: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "genforge.cli", "serve", f"m={run}", "--port",
                                      str(self.port), "--log-level", "warning", *flags])

    def __enter__(self) -> Server:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not become ready in 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def _text_client(client, url: str, k: int, until: float, stats: dict) -> None:
    i = 0
    while time.perf_counter() < until:
        body = {"model": "m", "prompt": PROMPTS[(k + i) % len(PROMPTS)], "max_tokens": 64, "temperature": 0.8,
                "seed": k * 100_000 + i, "stream": True}
        i += 1
        t0 = time.perf_counter()
        first = None
        async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                stats["429" if r.status_code == 429 else "errors"] += 1
                await asyncio.sleep(0.05)
                continue
            tokens = 0
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first is None and chunk["choices"] and chunk["choices"][0]["text"]:
                    first = time.perf_counter() - t0
                if "error" in chunk:
                    stats["errors"] += 1
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        done = time.perf_counter()
        if done > until:  # finished after the window: its tokens do not count toward the rate
            stats["late"] += 1
            continue
        stats["ok"] += 1
        stats["tokens"] += tokens
        stats["latency"].append(done - t0)
        if first is not None:
            stats["ttft"].append(first)


async def _image_client(client, url: str, k: int, until: float, stats: dict, steps: int | None) -> None:
    i = 0
    while time.perf_counter() < until:
        body = {"model": "m", "n": 1, "seed": k * 100_000 + i, **({"steps": steps} if steps else {})}
        i += 1
        t0 = time.perf_counter()
        r = await client.post(f"{url}/v1/images/generations", json=body)
        done = time.perf_counter()
        if r.status_code != 200:
            stats["429" if r.status_code == 429 else "errors"] += 1
            await asyncio.sleep(0.05)
            continue
        if done > until:
            stats["late"] += 1
            continue
        stats["ok"] += 1
        stats["images"] += len(r.json()["data"])
        stats["latency"].append(done - t0)


async def _phase(url: str, clients: int, seconds: float, kind: str, steps: int | None) -> dict:
    import httpx

    stats = {"ok": 0, "429": 0, "errors": 0, "late": 0, "tokens": 0, "images": 0, "latency": [], "ttft": [],
             "kind": kind}
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        until = start + seconds
        if kind == "text":
            tasks = [_text_client(client, url, k, until, stats) for k in range(clients)]
        else:
            tasks = [_image_client(client, url, k, until, stats, steps) for k in range(clients)]
        await asyncio.gather(*tasks)
        stats["seconds"] = seconds
    return stats


def _report(name: str, s: dict) -> None:
    unit, amount = ("tokens/s", s["tokens"]) if s["kind"] == "text" else ("images/s", s["images"])
    line = (f"{name:<28} {s['ok']:>5} ok  {s['429']:>3} x 429  {s['errors']:>3} errors  {s['late']:>3} late  "
            f"{amount / s['seconds']:8.1f} {unit}  latency p50 {_pct(s['latency'], 0.5):6.2f} s  "
            f"p99 {_pct(s['latency'], 0.99):6.2f} s")
    if s["ttft"]:
        line += f"  TTFT p50 {_pct(s['ttft'], 0.5):5.2f} s  p99 {_pct(s['ttft'], 0.99):5.2f} s"
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients (default: 32)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each phase (default: 60)")
    ap.add_argument("--text-run", type=Path, help="a text run to serve (default: train the shakespeare-char "
                                                  "architecture 2 steps on a built-in text)")
    ap.add_argument("--image-run", type=Path, help="an image run to serve (default: digits-diffusion, 2 steps)")
    ap.add_argument("--image-steps", type=int, default=20, help="sampler steps of a diffusion image request "
                                                                "(default: 20; ignored by other families)")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: batched, single, images")
    args = ap.parse_args()
    if args.clients < 1 or args.seconds <= 0:
        fail("--clients must be >= 1 and --seconds > 0")
    for run in (args.text_run, args.image_run):
        if run is not None and not (run / "config.yaml").is_file():
            fail(f"{run} is not a run directory (no config.yaml)")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    require_idle()
    os.environ.setdefault("GENFORGE_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        text_run = args.text_run or _train("shakespeare-char", Path(tmp) / "text", "--set",
                                           f"data.name=text:{_corpus(Path(tmp) / 'corpus.txt')}")
        image_run = args.image_run or _train("digits-diffusion", Path(tmp) / "image")
        queue = str(4 * args.clients)
        rates = {}
        for name, flags in (("batched", ["--max-batch", str(args.clients), "--max-n", "1"]),
                            ("single", ["--max-batch", "1", "--max-n", "1"])):
            if name in skip:
                continue
            with Server(text_run, *flags, "--max-queue", queue) as server:
                s = asyncio.run(_phase(server.url, args.clients, args.seconds, "text", None))
            _report(f"text, {'continuous batching' if name == 'batched' else 'one at a time'}", s)
            rates[name] = s["tokens"] / s["seconds"]
        if len(rates) == 2:
            print(f"continuous batching / one at a time: {rates['batched'] / max(rates['single'], 1e-9):.1f}x "
                  f"tokens/s with {args.clients} clients", flush=True)
        if "images" not in skip:
            with Server(image_run, "--max-batch", str(args.clients), "--max-queue", queue) as server:
                family = server_family(server.url)
                s = asyncio.run(_phase(server.url, args.clients, args.seconds, "image",
                                       args.image_steps if family == "diffusion" else None))
            _report(f"images ({family}, {args.image_steps if family == 'diffusion' else 1} evals)", s)


def server_family(url: str) -> str:
    import httpx

    return httpx.get(f"{url}/v1/models").json()["data"][0]["genforge"]["family"]


if __name__ == "__main__":
    main()
