"""``genforge export RUN --format onnx|hf``: its flags and the call into ``genforge.export``."""

from __future__ import annotations

import json


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a run as ONNX graphs or a Hugging Face-style model folder",
                       description="Export a trained run. onnx: one graph per part the family declares "
                                   "(GAN generator, VAE decoder, diffusion denoiser, GPT decoder with a key/value "
                                   "cache), each checked with onnxruntime against PyTorch (verify.json). hf: "
                                   "config.json, model.safetensors, tokenizer, README.md model card. Needs the "
                                   "export extra for onnx: pip install 'genforge[export]'.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--format", dest="fmt", required=True, metavar="FORMAT", help="onnx or hf")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder, absent or empty (default: RUN/export-onnx or RUN/export-hf)")
    p.set_defaults(func=export_command)


def export_command(args) -> int:
    """Export, then print the folder and, for onnx, each graph's max |onnxruntime − torch|."""
    from genforge.export import export_run

    out = export_run(args.run, args.fmt, out=args.out)
    verify = out / "verify.json"
    if verify.is_file():
        for name, g in json.loads(verify.read_text(encoding="utf-8"))["graphs"].items():
            print(f"{name:10s} {g['file']}  max |onnxruntime - torch| = {g['max_abs_diff']:.2e}")
    print(f"exported {args.fmt} to {out}")
    return 0
