"""The application subcommands: ``inpaint``, ``img2img``, ``upscale``, ``interpolate``, ``synth``. Parse, load, call the
sampling layer, write; no math here."""

from __future__ import annotations

from pathlib import Path

from genforge.cli.args import family_flags, positive_int, section_overrides

MASK_HELP = "a mask image (white = fill) or a built-in: center, left, right, top, bottom, random:FRACTION"


def _common(p, *, options: str) -> None:
    p.add_argument("run_dir", help="a run directory written by `genforge train`")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); image i of a folder uses seed + i")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (default 256)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar=f"{options}.KEY=VALUE",
                   help=f"an option of the family's {options} method (repeatable); also accepted as flags")


def _add_inpaint(sub) -> None:
    p = sub.add_parser("inpaint", help="restore the masked pixels of images, keeping the others exactly",
                       description="Fill the white pixels of --mask in --image (a file, or a folder of images) "
                                   "with the run's model, keeping every other pixel bit-identical. Diffusion: "
                                   "RePaint (--steps, --jump-length, --resamples, --sampler); VAE: encode-decode "
                                   "then latent optimisation; GAN: latent optimisation (--steps, --lr, --restarts, "
                                   "--prior). A colour image given to a grayscale model is converted (warned); "
                                   "another size is refused unless --resize.")
    _common(p, options="inpaint")
    p.add_argument("--image", required=True, help="an image file, or a folder of them")
    p.add_argument("--mask", required=True, help=MASK_HELP)
    p.add_argument("--label", help="class of a conditional model, by id or name (default: the model decides)")
    p.add_argument("--resize", action="store_true", help="scale images of another size to the model's (bicubic)")
    p.add_argument("-o", "--out", required=True, help="output file (one image) or folder (a folder of images)")
    p.set_defaults(func=cmd_inpaint)


def _add_img2img(sub) -> None:
    p = sub.add_parser("img2img", help="regenerate images from a strength of the way to noise (SDEdit)",
                       description="Noise --image (a file, or a folder of images) to --strength of the way to "
                                   "noise and denoise it under --prompt / --label (or none): 0 returns the image, "
                                   "1 ignores it. Diffusion and latent diffusion (latents: up to the autoencoder's "
                                   "round trip). Sampler options as flags: --steps, --sampler, --guidance, "
                                   "--negative-prompt. A colour image given to a grayscale model is converted "
                                   "(warned); another size is refused unless --resize.")
    _common(p, options="sample")
    p.add_argument("--image", required=True, help="an image file, or a folder of them")
    p.add_argument("--strength", type=float, default=DEFAULT_STRENGTH,
                   help=f"how far towards noise the source goes, in [0, 1] (default {DEFAULT_STRENGTH})")
    p.add_argument("--prompt", help="what to regenerate it as (a text-to-image model)")
    p.add_argument("--label", help="the class to regenerate it as, by id or name (a class-conditional model)")
    p.add_argument("--resize", action="store_true", help="scale images of another size to the model's (bicubic)")
    p.add_argument("-o", "--out", required=True, help="output file (one image) or folder (a folder of images)")
    p.set_defaults(func=cmd_img2img)


DEFAULT_STRENGTH = 0.6


def _add_translate(sub) -> None:
    p = sub.add_parser("translate", help="translate images from one condition (domain, style) to another",
                       description="Translate --image (a file or a folder) drawn in the --from domain (a label, or "
                                   "a prompt with --from-prompt) into the --to domain. ddib (default): invert each "
                                   "image with the deterministic ODE under --from, regenerate under --to (with "
                                   "--to-run: by another model of the same latent shape); deterministic. sdedit: "
                                   "img2img under --to from --strength. Sampler options as flags (--steps).")
    _common(p, options="sample")
    p.add_argument("--image", required=True, help="an image file, or a folder of them")
    p.add_argument("--from", dest="source", help="the images' class (id or name)")
    p.add_argument("--to", dest="target", help="the class to translate them to")
    p.add_argument("--from-prompt", help="the images' caption (a text-to-image model)")
    p.add_argument("--to-prompt", help="the caption to translate them to")
    p.add_argument("--method", choices=("ddib", "sdedit"), default="ddib", help="default ddib")
    p.add_argument("--strength", type=float, default=DEFAULT_STRENGTH, help="sdedit's strength (default 0.6)")
    p.add_argument("--to-run", help="regenerate with this run instead (ddib between two models)")
    p.add_argument("--refine", type=int, default=3, help="ddib: fixed-point refinements per inversion step (default 3)")
    p.add_argument("--resize", action="store_true", help="scale images of another size to the model's (bicubic)")
    p.add_argument("-o", "--out", required=True, help="output file (one image) or folder (a folder of images)")
    p.set_defaults(func=cmd_translate)


def _add_upscale(sub) -> None:
    p = sub.add_parser("upscale", help="super-resolve low-resolution images with a super-resolution run",
                       description="Upscale --image (a file or a folder) with a super-resolution run (e.g. "
                                   "mnist-sr): inputs must be image_size / f pixels for a factor f the run was "
                                   "trained on. --steps sets the model evaluations per image.")
    _common(p, options="sample")
    p.add_argument("--image", required=True, help="an image file, or a folder of them")
    p.add_argument("-o", "--out", required=True, help="output file (one image) or folder")
    p.set_defaults(func=cmd_upscale)


def _add_interpolate(sub) -> None:
    p = sub.add_parser("interpolate", help="a strip of images walking the latent space between two ends",
                       description="Spherical interpolation between the latents of two seeds (GAN/VAE z, a diffusion "
                                   "model's initial noise rendered by a deterministic sampler) or of two real images "
                                   "(VAE encoder, DDIM/flow ODE inversion). The first and last frames of a seed "
                                   "interpolation are exactly `genforge sample --n 1` for those seeds. Sampler "
                                   "settings: --set sample.steps=20 --set sample.sampler=ddim.")
    p.add_argument("run_dir", help="a run directory written by `genforge train`")
    p.add_argument("--steps", type=positive_int, default=8, help="frames per strip, ends included (default 8)")
    p.add_argument("--from", dest="seed_from", type=int, default=0, help="seed of the first end (default 0)")
    p.add_argument("--to", dest="seed_to", type=int, default=1, help="seed of the last end (default 1)")
    p.add_argument("--labels", help="A,B: class of each end (ids or names); the class is interpolated too")
    p.add_argument("--from-image", help="a real image as the first end (families that invert: vae, diffusion)")
    p.add_argument("--to-image", help="a real image as the last end")
    p.add_argument("--rows", type=positive_int, default=1, help="strips, row r from seeds FROM+r to TO+r")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file when it exists")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="sample.KEY=VALUE",
                   help="a sample option used to render (repeatable)")
    p.add_argument("-o", "--out", required=True, help="output PNG")
    p.set_defaults(func=cmd_interpolate)


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a labelled synthetic dataset from a conditional run",
                       description="Draw --n images with balanced class labels and write them as class sub-folders "
                                   "of PNGs (read back with data.name=imagefolder:DIR) or, for --out FILE.npz, as "
                                   "arrays x/y; manifest.json records model, seed, sample options and class counts. "
                                   "An existing output is never written over.")
    _common(p, options="sample")
    p.add_argument("--n", type=positive_int, required=True, help="number of images")
    p.add_argument("--out", required=True, help="a new folder, or a .npz file")
    p.set_defaults(func=cmd_synth)


APP_COMMANDS = {"inpaint": _add_inpaint, "img2img": _add_img2img, "translate": _add_translate,
                "upscale": _add_upscale, "interpolate": _add_interpolate,
                "synth": _add_synth}


# --------------------------------------------------------------------------- commands
def _options(args, section: str) -> dict:
    return {**family_flags(getattr(args, "extra", [])), **section_overrides(args.overrides, section, args.command)}


def _open(args):
    from genforge.sampling.images import ImagePipeline

    return ImagePipeline.from_run(args.run_dir, device=args.device)


def _inputs(image: str) -> list[Path]:
    from genforge.data.imagefolder import IMAGE_EXTENSIONS

    path = Path(image)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                       and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{path} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return files
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image file or folder")
    return [path]


def _outputs(inputs: list[Path], out: str, folder: bool, overwrite: bool, command: str) -> list[Path]:
    """Output path per input (a folder input writes ``OUT/<stem>.png``), checked before any work (inside a run,
    ``command`` writes only ``samples/COMMAND-*``: ``genforge.rundir.OWNED``)."""
    from genforge.rundir import check_location, check_output

    if not folder:
        return [check_output(out, overwrite=overwrite, command=command)]
    root = check_location(out, command=command, what="output folder", folder=True)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--out {root} is a file; a folder of images needs an output folder")
    return [check_output(root / f"{p.stem}.png", overwrite=overwrite, command=command) for p in inputs]


def _save(images, paths: list[Path], meta: dict) -> None:
    """Each image atomically; a new output folder is staged beside its final name and renamed into place whole."""
    from genforge.io import atomic_dir
    from genforge.sampling.images import save_grid

    roots = {p.parent for p in paths}
    root = roots.pop() if len(paths) > 1 and len(roots) == 1 else None
    if root is not None and not root.exists():
        with atomic_dir(root) as tmp:
            for img, path in zip(images, paths):
                save_grid(img[None], tmp / path.name, nrow=1, metadata=meta, scale=1, padding=0)
        print("\n".join(map(str, paths)))
        return
    for img, path in zip(images, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_grid(img[None], path, nrow=1, metadata=meta, scale=1, padding=0)
        print(path)


def cmd_inpaint(args) -> int:
    import torch

    from genforge.models.conditions import parse_condition
    from genforge.sampling.inpaint import inpaint_images, require_inpaints
    from genforge.sampling.masks import builtin_mask, check_mask, check_size, is_builtin, read_mask, read_model_image

    pipe = _open(args)
    model = require_inpaints(pipe.model, pipe.name)
    opts = model.parse_inpaint_options(_options(args, "inpaint"))
    given_label = parse_condition(model, {"label": args.label}, extra=("image", "mask"), name=pipe.name)
    label = None if given_label is None else given_label.label  # the one parser: an id or a class name
    inputs = _inputs(args.image)
    paths = _outputs(inputs, args.out, Path(args.image).is_dir(), args.overwrite, args.command)
    c, s, _ = pipe.model.image_shape
    given = None if is_builtin(args.mask) else read_mask(args.mask)
    images, fills = [], []
    for i, p in enumerate(inputs):
        x = read_model_image(p, c)
        if given is not None:
            check_mask(given, x, str(p))  # the mask matches the image as given, before any resize
        x = check_size(x, s, str(p), resize=args.resize)
        if given is None:
            fill = builtin_mask(args.mask, s, n=1, seed=args.seed + i)[0]
        else:
            fill = check_size(given.to(torch.uint8) * 255, s, f"mask {args.mask}", resize=args.resize) >= 128
        images.append(x)
        fills.append(check_mask(fill, x, str(p)))
    out = inpaint_images(pipe.model, torch.stack(images), torch.stack(fills), labels=label, seed=args.seed,
                         batch_size=args.batch_size, options=opts)
    _save(out, paths, {"genforge_model": pipe.model.family, "run": pipe.name, "seed": args.seed,
                       "inpaint": model.inpaint_method, "mask": args.mask})
    return 0


def cmd_img2img(args) -> int:
    import torch

    from genforge.models.conditions import parse_condition
    from genforge.models.img2img import check_strength
    from genforge.sampling.img2img import img2img_images, require_img2img
    from genforge.sampling.masks import check_size, read_model_image

    pipe = _open(args)
    model = require_img2img(pipe.model, pipe.name)
    strength = check_strength(args.strength)
    opts = model.parse_sample_options(_options(args, "sample"))
    condition = parse_condition(model, {"label": args.label, "prompt": args.prompt}, name=pipe.name)
    inputs = _inputs(args.image)
    paths = _outputs(inputs, args.out, Path(args.image).is_dir(), args.overwrite, args.command)
    c, s, _ = model.image_shape
    images = torch.stack([check_size(read_model_image(p, c), s, str(p), resize=args.resize) for p in inputs])
    out = img2img_images(model, images, strength=strength, condition=condition, seed=args.seed,
                         batch_size=args.batch_size, options=opts)
    meta = {"genforge_model": model.family, "run": pipe.name, "seed": args.seed, "strength": strength,
            "img2img": "SDEdit"}
    meta.update({k: v for k, v in (("prompt", args.prompt), ("label", args.label)) if v is not None})
    _save(out, paths, meta)
    return 0


def cmd_translate(args) -> int:
    import torch

    from genforge.models.conditions import parse_condition
    from genforge.models.img2img import check_strength
    from genforge.sampling.images import ImagePipeline
    from genforge.sampling.masks import check_size, read_model_image
    from genforge.sampling.translate import translate_images

    pipe = _open(args)
    model = pipe.model
    other = ImagePipeline.from_run(args.to_run, device=args.device).model if args.to_run else model
    strength = check_strength(args.strength)
    opts = _options(args, "sample")
    model.parse_sample_options(opts)
    source = parse_condition(model, {"label": args.source, "prompt": args.from_prompt}, name=pipe.name)
    target = parse_condition(other, {"label": args.target, "prompt": args.to_prompt}, name=args.to_run or pipe.name)
    inputs = _inputs(args.image)
    paths = _outputs(inputs, args.out, Path(args.image).is_dir(), args.overwrite, args.command)
    c, s, _ = model.image_shape
    images = torch.stack([check_size(read_model_image(p, c), s, str(p), resize=args.resize) for p in inputs])
    out = translate_images(model, images, source=source, target=target, method=args.method, strength=strength,
                           target_model=other, seed=args.seed, batch_size=args.batch_size, options=opts,
                           refine=args.refine)
    meta = {"genforge_model": model.family, "run": pipe.name, "method": args.method, "seed": args.seed}
    given = (("from", args.source or args.from_prompt), ("to", args.target or args.to_prompt), ("to_run", args.to_run))
    meta.update({k: str(v) for k, v in given if v is not None})
    _save(out, paths, meta)
    return 0


def cmd_upscale(args) -> int:
    import torch

    from genforge.models.conditions import Condition, parse_condition
    from genforge.sampling.masks import read_model_image

    pipe = _open(args)
    model = pipe.model
    parse_condition(model, {"image": torch.zeros(0)}, name=pipe.name)  # refuses a model that takes no image
    opts = model.parse_sample_options(_options(args, "sample"))
    inputs = _inputs(args.image)
    paths = _outputs(inputs, args.out, Path(args.image).is_dir(), args.overwrite, args.command)
    lows = []
    for p in inputs:
        x = read_model_image(p, model.image_shape[0])
        model.check_source(x, str(p))
        lows.append(x)
    outs = []
    for side in sorted({int(x.shape[-1]) for x in lows}):
        group = [i for i, x in enumerate(lows) if x.shape[-1] == side]
        source = torch.stack([lows[i] for i in group])
        res = pipe.generate(len(group), condition=Condition(image=source), seed=args.seed, batch_size=args.batch_size,
                            options=opts)
        outs += list(zip(group, res))
    outs.sort(key=lambda t: t[0])
    _save([img for _, img in outs], paths, {"genforge_model": model.family, "run": pipe.name, "seed": args.seed})
    return 0


def cmd_interpolate(args) -> int:
    import torch

    from genforge.rundir import check_output
    from genforge.sampling.images import save_grid
    from genforge.sampling.interpolate import interpolate, require_latents
    from genforge.sampling.masks import check_size, read_model_image

    pipe = _open(args)
    options = _options(args, "sample")
    path = check_output(args.out, overwrite=args.overwrite, command="interpolate")
    labels = (None, None)
    if args.labels is not None:
        if not pipe.num_classes:
            raise ValueError(f"{pipe.name} holds an unconditional model: --labels cannot be used")
        parts = [t.strip() for t in args.labels.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--labels takes two classes A,B, got {args.labels!r}")
        labels = (pipe.label_id(parts[0]), pipe.label_id(parts[1]))
    images = None
    if (args.from_image is None) != (args.to_image is None):
        raise ValueError("give both --from-image and --to-image (or neither, to interpolate between seeds)")
    if args.from_image is not None:
        require_latents(pipe.model, pipe.name, invert=True)  # before reading any file
        c, s, _ = pipe.model.image_shape
        images = tuple(check_size(read_model_image(p, c), s, p) for p in (args.from_image, args.to_image))
    rows = []
    for r in range(1 if images is not None else args.rows):
        rows.append(interpolate(pipe.model, args.steps, seeds=(args.seed_from + r, args.seed_to + r), labels=labels,
                                images=images, options=options))
    meta = {"genforge_model": pipe.model.family, "run": pipe.name, "steps": args.steps,
            "ends": "images" if images is not None else f"seeds {args.seed_from}->{args.seed_to} (+row)",
            "labels": args.labels or "the seeds' own"}
    print(save_grid(torch.cat(rows), path, nrow=args.steps, metadata=meta))
    return 0


def cmd_synth(args) -> int:
    from genforge.sampling.synth import check_new_output, manifest, synthesize, write_dataset

    check_new_output(args.out)
    pipe = _open(args)
    opts = pipe.model.parse_sample_options(_options(args, "sample"))
    x, y = synthesize(pipe, args.n, seed=args.seed, batch_size=args.batch_size, options=opts)
    meta = manifest(pipe, y, seed=args.seed, options=opts, run=str(Path(args.run_dir)))
    print(write_dataset(x, y, args.out, meta))
    return 0

