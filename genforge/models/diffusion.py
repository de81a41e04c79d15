"""Diffusion models (Ho et al. 2020) and flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023),
unconditional or class-conditional with classifier-free guidance (Ho & Salimans 2022).

The family is a denoiser (a U-Net, ``genforge.models.unet``, or with ``backbone: dit`` a diffusion transformer,
``genforge.models.dit``) plus a schedule object; samplers
(``genforge.models.schedules``: DDPM ancestral, DDIM, DPM-Solver++ 2M, Euler for flow) are chosen at
sampling time, so one trained model samples with any of them. Objectives (``model.objective``):

- ``ddpm``: x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε, t uniform in 0..T-1; the U-Net predicts ε
  (``prediction: epsilon``) or v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x0 (``prediction: v``), MSE loss.
  ``log_likelihood`` is the variational bound with a discretised Gaussian decoder over 8-bit pixels
  (nats per image; an upper bound on the NLL), estimated on ``k`` stratified timesteps (all T when k ≥ T).
- ``flow``: x_s = (1 - s) x0 + s ε, s ~ U(0, 1); the U-Net predicts the velocity ε - x0. No likelihood.

Conditional models drop the label with probability ``label_dropout`` in training (the "no label" class),
so one network gives conditional and unconditional predictions; ``guidance`` w combines them as
uncond + w · (cond - uncond): w = 0 is unconditional, 1 conditional, > 1 guided.

Text-to-image (``prompted: true``): the caption is encoded by the model's own word tokenizer and small
transformer (:mod:`genforge.models.text_encoder`), trained jointly, or by the frozen text tower of a
``clip`` run named as ``parents.text_encoder`` (``frozen_text``, :mod:`genforge.models.clip`); its tokens
enter the U-Net through cross-attention at sides ≤ 16 and its pooled vector joins the time embedding.
The caption is replaced by the empty caption with probability ``label_dropout``, so guidance works as for
labels, and a ``negative_prompt`` takes the empty caption's place in the unconditional pass.
Pixels are mapped from uint8 to [-1, 1]. Shape legend: B batch, C channels, S side, T timesteps, K classes.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genforge.config import ConfigError, FieldError
from genforge.models import rng
from genforge.models.base import Batch, GenerativeModel, OnnxGraphs, eval_mode, labels_for, unpack_image_batch
from genforge.models.capabilities import EditsImages, EmbedsTextAndImages, ImageModel, Inpaints, Inverts
from genforge.models.repaint import REPAINT_SAMPLERS, RePaintOptions, jump_schedule, levels, repaint
from genforge.models.samplers import SAMPLERS, DDIMSampler, FlowEuler, Sampler, make_sampler
from genforge.models.schedules import _eps_from, _x0_from
from genforge.models.schedules import FlowSchedule, NoiseSchedule
from genforge.models.text_encoder import Captioned, TextEncoder, WordTokenizer, prompted_graphs
from genforge.models.dit import DiT
from genforge.models.img2img import first_step, noised_to
from genforge.models.conditions import Condition
from genforge.models.unet import UNet
from genforge.models.diffusion_vlb import VLBLikelihood
from genforge.models.diffusion_config import DiffusionConfig, DiffusionSampleOptions



class Diffusion(VLBLikelihood, Captioned, GenerativeModel, ImageModel, Inverts, Inpaints, EditsImages):
    """U-Net denoiser + schedule; one parameter group ``loss``."""

    config_class: ClassVar[type[DiffusionConfig]] = DiffusionConfig
    family: ClassVar[str] = "diffusion"
    sample_options: ClassVar[type[DiffusionSampleOptions]] = DiffusionSampleOptions
    inpaint_options: ClassVar[type[RePaintOptions]] = RePaintOptions
    inpaint_method: ClassVar[str] = "RePaint: known region re-noised to every level, with jumps back (resampling)"

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__(config)
        config.check_complete()
        self.config: DiffusionConfig = config
        self.prompted = config.prompted
        c, side = self.space[0], self.space[1]
        context = config.text_width if config.prompted else 0
        if config.backbone == "dit":
            if side % config.patch:
                raise FieldError("patch", f"must divide the denoised side {side}, got {config.patch}")
            self.dit = DiT(c, side, width=config.width, depth=config.depth, heads=config.heads,
                           patch=config.patch, dropout=config.dropout, num_classes=self.num_classes,
                           context=context)
        else:
            self.unet = UNet(c, side, width=config.width, blocks=config.blocks,
                             max_mult=config.max_mult, attention=config.attention, dropout=config.dropout,
                             num_classes=self.num_classes, context=context)
        if config.prompted:
            self.tokenizer = WordTokenizer(config.text_words, config.text_len)
            if not config.frozen_text:  # else the text_encoder parent's tower (attach_parents)
                self.text = TextEncoder(self.tokenizer.vocab_size, config.text_len, config.text_width,
                                        config.text_layers)
            self.text_pool = nn.Linear(config.text_width, self.net.emb_dim)  # pooled caption → time embedding
        if config.objective == "ddpm":
            self.schedule: NoiseSchedule | FlowSchedule = NoiseSchedule(config.schedule, config.timesteps)
        else:
            self.schedule = FlowSchedule(config.timesteps)

    export_formats: ClassVar[tuple[str, ...]] = ("onnx", "hf")
    optional_parent_roles: ClassVar[tuple[str, ...]] = ("text_encoder",)

    def attach_parents(self, parents: dict[str, GenerativeModel]) -> None:
        """With ``parents.text_encoder`` (a ``clip`` run), captions are read by its frozen text tower: it must
        have this model's vocabulary, caption length and width (``model.frozen_text`` says it is named)."""
        super().attach_parents(parents)
        encoder = parents.get("text_encoder")
        if encoder is None:
            if self.config.frozen_text:
                raise ConfigError("model.frozen_text is set but no parents.text_encoder (a clip run) is named",
                                  key="parents.text_encoder")
            return
        if not isinstance(encoder, EmbedsTextAndImages):
            raise ConfigError(f"parents.text_encoder must be a clip run, got family {encoder.family!r}",
                              key="parents.text_encoder")
        if not (self.prompted and self.config.frozen_text):
            raise ConfigError("parents.text_encoder needs model.prompted and model.frozen_text (a text-to-image "
                              "model reading captions with the named run)", key="parents.text_encoder")
        theirs = encoder.config
        for mine, their in (("text_words", "text_words"), ("text_len", "text_len"), ("text_width", "text_width"),
                            ("text_layers", "text_layers")):
            if getattr(self.config, mine) != getattr(theirs, their):
                shown = [len(v) if mine == "text_words" else v for v in (getattr(theirs, their), getattr(self.config, mine))]
                raise ConfigError(f"model.{mine} must be the text_encoder run's ({shown[0]}), got {shown[1]}",
                                  key=f"model.{mine}")
        self.__dict__["text"] = encoder.text_tower  # not a submodule: its weights stay in the parent's run

    @property
    def net(self) -> UNet | DiT:
        """The denoiser: the U-Net, or the DiT (``backbone: dit``)."""
        return self.dit if self.config.backbone == "dit" else self.unet

    @property
    def space(self) -> tuple[int, int, int]:
        """(C, S, S) of what the U-Net denoises: the images themselves (a latent model: their latents)."""
        return (self.config.channels, self.config.image_size, self.config.image_size)

    def to_space(self, x: Tensor) -> Tensor:
        """Images float [B, C, S, S] in [0, 1] → what the U-Net denoises, [B, *space], about unit scale."""
        return x * 2 - 1

    def from_space(self, h: Tensor) -> Tensor:
        """The inverse of :meth:`to_space`: [B, *space] → images float32 [B, C, S, S] in [0, 1]."""
        return ((h.float() + 1) / 2).clamp_(0, 1)

    def space_mask(self, fill: Tensor) -> Tensor:
        """A pixel mask bool [B, 1, S, S] (True = to generate) at the side of :attr:`space`."""
        return fill

    def accepted_conditions(self) -> tuple[str, ...]:
        """A prompt (text-to-image) or a label (class-conditional), and a source image for img2img."""
        return (*(("text",) if self.prompted else super().accepted_conditions()), "image")

    def onnx_graphs(self) -> OnnxGraphs:
        """``denoiser``: x_t float32 [B, *space], t float32 [B] (+ y int64 [B] when conditional; K = no label)
        → the prediction float32 [B, *space] (no guidance: the caller mixes two passes). A prompted model:
        ``text_encoder`` and a denoiser taking its outputs (:func:`~genforge.models.text_encoder.prompted_graphs`)."""
        if self.prompted:
            return prompted_graphs(self, self.space)
        x = torch.randn(2, *self.space, device=self.device)
        t = torch.tensor([1.0, float(self.config.timesteps // 2)], device=self.device)
        inputs = (x, t, torch.zeros(2, dtype=torch.long, device=self.device)) if self.num_classes else (x, t)
        names = ["x_t", "t", "y"][:len(inputs)]
        axes = {n: {0: "batch"} for n in [*names, "output"]}
        return {"denoiser": (self.net, inputs, names, ["output"], axes)}

    # ---- training
    def losses(self, batch: Batch, *, groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """MSE of the prediction (ε, v or velocity) at a random time per image; noise from the global RNG."""
        if groups is not None and set(groups) - {"loss"}:
            raise ValueError(f"unknown loss groups {sorted(set(groups) - {'loss'})}; the diffusion family has "
                             f"['loss']")
        x, y = unpack_image_batch(batch, self.config, self.device, "diffusion model")
        if self.prompted:
            y = self._batch_text(batch, x.shape[0])
        x0 = self.to_space(x)  # [B, *space]: pixels in [-1, 1] (or scaled latents)
        noise = rng.train_randn(x0.shape, x0.device).to(x0.dtype)
        b = x0.shape[0]
        if y is not None and self.config.label_dropout > 0:  # classifier-free guidance: sometimes no label
            drop = rng.train_rand((b,), x0.device) < self.config.label_dropout
            null = self._null(y)
            y = torch.where(drop.view(-1, *[1] * (y.dim() - 1)), null, y)
        if self.config.objective == "ddpm":
            u = rng.train_randint(0, self.config.timesteps, (b,), x0.device)  # (B,) int64
        elif self.config.time_sampling == "logit-normal":
            u = torch.sigmoid(rng.train_randn((b,), x0.device))  # (B,) in (0, 1)
        else:
            u = rng.train_rand((b,), x0.device)  # (B,) in [0, 1)
        x_t, fed, target = self._training_pair(x0, noise, u)
        out = self._predict(x_t, fed, y)
        return {"loss": F.mse_loss(out.float(), target.float())}

    def _predict(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """The U-Net's prediction for x [B, C, S, S] at times t [B] under y: labels / class weights, or (prompted)
        caption ids int64 [B, L] through the text encoder; None = no label."""
        if not self.prompted:
            return self.net(x, t, y)
        if y is None:
            y = self.tokenizer.empty(x.shape[0]).to(x.device)
        tokens, keep, pooled = self.text(y)  # [B, L, D], [B, L], [B, D]
        emb = self.net.embed(t, None) + self.text_pool(pooled).to(x.dtype)
        return self.net.trunk(x, emb, (tokens, keep))

    def _training_pair(self, x0: Tensor, noise: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(noisy x, what the U-Net is fed, its target) at times ``u`` [B]: int64 timesteps (DDPM) or s in
        [0, 1] (flow); x0 and noise [B, C, S, S]."""
        if self.config.objective == "ddpm":
            x_t = self.schedule.add_noise(x0, noise, u)
            target = noise if self.config.prediction == "epsilon" else self.schedule.velocity(x0, noise, u)
            return x_t, u.float(), target
        return self.schedule.add_noise(x0, noise, u), u * self.config.timesteps, self.schedule.velocity(x0, noise)

    @torch.no_grad()
    def classify_known(self, x0: Tensor, known: Tensor, samples: int, generator: rng.Generator) -> Tensor:
        """The class whose conditional denoising error on the known pixels is lowest (a diffusion classifier,
        Li et al. 2023): x0 [B, C, S, S] in [-1, 1] (unknown pixels set to -1), known bool [B, 1, S, S] →
        int64 [B]. The error is summed over ``samples`` stratified noise levels, with the same noise for
        every class (paired, so the comparison has low variance)."""
        b, k = x0.shape[0], self.num_classes
        x0 = torch.where(known, x0, torch.full_like(x0, -1.0))
        err = torch.zeros(b, k, device=x0.device)
        for j in range(samples):
            noise = rng.randn(tuple(x0.shape), generator).to(x0.device)
            frac = (j + 0.5) / samples
            u = torch.full((b,), frac, device=x0.device)
            if self.config.objective == "ddpm":
                u = (u * self.config.timesteps).long()
            x_t, fed, target = self._training_pair(x0, noise, u)
            for c in range(k):  # one class at a time: [B] forward each
                out = self.net(x_t, fed, torch.full((b,), c, dtype=torch.long, device=x0.device))
                err[:, c] += ((out.float() - target.float()).pow(2) * known).flatten(1).sum(1)
        return err.argmin(dim=1)

    # ---- sampling
    def _null(self, y: Tensor) -> Tensor:
        """The "no condition" rows like y: the empty caption [B, L] (prompted), or the "no label" labels."""
        return self._with_null(y)[1]

    def _with_null(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(y, the "no condition" rows like it): caption ids [B, L] → the empty caption (prompted); labels int64
        [B] → index K; class weights [B, K] → [B, K+1] one-hot K."""
        if self.prompted:
            return y, self.tokenizer.empty(y.shape[0]).to(y.device)
        if not y.is_floating_point():
            return y, torch.full_like(y, self.num_classes)
        y = F.pad(y, (0, self.num_classes + 1 - y.shape[1]))
        return y, F.one_hot(torch.full((y.shape[0],), self.num_classes, device=y.device),
                            self.num_classes + 1).to(y.dtype)

    def _guided(self, x: Tensor, t: Tensor, y: Tensor | None, guidance: float, null: Tensor | None = None) -> Tensor:
        """The U-Net's prediction with classifier-free guidance w: uncond + w · (cond - uncond); ``null``
        replaces the unconditional rows (a negative prompt's ids)."""
        if y is None or guidance == 1.0:
            return self._predict(x, t, y)
        if guidance == 0.0 and null is None:
            return self._predict(x, t, None)
        y, empty = self._with_null(y)
        both = self._predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, empty if null is None else null]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    def parse_sample_options(self, options: Any = None) -> DiffusionSampleOptions:
        """The base checks, this model's bounds, then the sampler these options build (its step range on this
        model's schedule, eta only for ddim): everything ``sample`` would refuse, refused before any work, as a
        ``ConfigError`` whose ``key`` is the option (``sample.steps``, ``sample.sampler``, ``sample.eta`` …)."""
        opts = super().parse_sample_options(options)
        try:
            self._check_sampler(opts.sampler, SAMPLERS)
            if opts.steps > self.config.timesteps:
                raise FieldError("steps", f"must be <= the {self.config.timesteps} training timesteps, "
                                          f"got {opts.steps}")
            if opts.guidance is not None and not (self.num_classes or self.prompted):
                raise FieldError("guidance", "needs a class-conditional or text-to-image model; this one is "
                                             "unconditional")
            if opts.guidance is not None and opts.guidance != 1.0 and self.config.label_dropout == 0:
                raise FieldError("guidance", "needs a model trained with label_dropout > 0 (it never learned the "
                                             "unconditional prediction guidance mixes in); use guidance 1")
            if opts.negative_prompt is not None:
                if not self.prompted:
                    raise FieldError("negative_prompt", "needs a text-to-image model (model.prompted)")
                self.tokenizer.encode([opts.negative_prompt], field="negative_prompt")  # unknown or too many words
            self._sampler(opts.sampler, opts.steps, opts.eta)
        except FieldError as e:
            raise ConfigError(f"invalid value: sample.{e}", key=f"sample.{e.field}") from None
        return opts

    def _check_sampler(self, name: str | None, allowed: Any) -> None:
        objective = self.config.objective
        if name is not None and (name not in allowed or SAMPLERS[name].objective != objective):
            usable = [n for n in allowed if SAMPLERS[n].objective == objective]
            where = "" if allowed is SAMPLERS else " for this"
            raise FieldError("sampler", f"{name!r} does not run a {objective} model{where}; use one of "
                                        f"{', '.join(usable)}")

    def _sampler(self, name: str | None, steps: int, eta: float = 0.0) -> Sampler:
        """Sampler ``name`` (None = dpm++ for the DDPM objective, euler for flow) over ``steps`` levels."""
        name = name or ("dpm++" if self.config.objective == "ddpm" else "euler")
        return make_sampler(name, self.schedule, steps, prediction=self.config.prediction, eta=eta)

    @torch.no_grad()
    def _integrate(self, x: Tensor, y: Tensor | None, opts: DiffusionSampleOptions,
                   generator: rng.Generator, source: Tensor | None = None, strength: float = 1.0) -> Tensor:
        """Run the sampler from noise x [n, *space] → images float32 [n, C, S, S] in [0, 1]. With a ``source``
        (images float [n, C, S, S] in [0, 1]): SDEdit, its last ``int(strength · steps)`` steps from the source
        noised with x (:mod:`~genforge.models.img2img`)."""
        guidance = 1.0 if opts.guidance is None else opts.guidance
        sampler = self._sampler(opts.sampler, opts.steps, opts.eta)
        n, device = x.shape[0], x.device
        null = None if opts.negative_prompt is None else self.tokenizer.encode([opts.negative_prompt] * n).to(device)
        start = 0
        if source is not None:
            start = first_step(opts.steps, strength)
            if start:
                x = noised_to(sampler, self.to_space(source.to(device).float()).to(x.dtype), x, start)
                sampler.start_at(start)
        with eval_mode(self):
            for i, t in enumerate(sampler.timesteps.tolist()[start:], start):
                fed = torch.full((n,), float(t), device=device)
                x = sampler.step(self._guided(x, fed, y, guidance, null), i, x, generator)
        return self.from_space(x)

    @torch.no_grad()
    def sample(self, n: int, *, condition: Any = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Draw ``n`` images float32 [n, C, S, S] in [0, 1] with the chosen sampler (eval mode, restored after).

        Args:
            condition: None (random labels when conditional), an int, or n labels.
            generator: CPU RNG for labels, the initial noise and any sampler noise.
            options: :class:`DiffusionSampleOptions`.
        """
        opts = self.parse_sample_options(options)
        x, y = self.draw_latents(n, condition, generator)
        source = condition.image if isinstance(condition, Condition) else None
        if source is None:
            return self._integrate(x, y, opts, generator)
        shape = (n, *self.image_shape)
        if tuple(source.shape) != shape:
            raise FieldError("image", f"img2img takes {n} source images of [{', '.join(map(str, shape[1:]))}] "
                                      f"(this model's shape), got {list(source.shape)}")
        image = source.float() / 255 if source.dtype == torch.uint8 else source.float()  # [n, C, S, S] in [0, 1]
        return self._integrate(x, y, opts, generator, image, condition.strength)

    # ---- latent space: the initial noise, rendered by a deterministic sampler
    def draw_latents(self, n: int, condition: Any = None,
                     generator: rng.Generator = None) -> tuple[Tensor, Tensor | None]:
        if n < 1:
            raise FieldError("n", f"must be >= 1, got {n}")
        y = self.condition_rows(n, condition, generator)
        return rng.randn((n, *self.space), generator).to(self.device), y  # noise [n, *space]

    def condition_rows(self, n: int, condition: Any = None, generator: rng.Generator = None) -> Tensor | None:
        """What the denoiser is conditioned on for ``n`` rows of ``condition``: caption ids int64 [n, L]
        (prompted), labels int64 [n] / class weights [n, K] (class-conditional; drawn from ``generator`` when
        none is given), or None. A condition holding only a source image (img2img) is unconditional."""
        if isinstance(condition, Condition) and condition.kinds() == ("image",) and (self.prompted or self.num_classes):
            return self._null(torch.zeros(n, dtype=torch.long, device=self.device) if not self.prompted else
                              self.tokenizer.empty(n).to(self.device))
        return self._prompt_ids(n, condition, generator) if self.prompted else labels_for(
            n, condition, self.num_classes, self.device, generator)

    def _deterministic(self, options: dict[str, Any]) -> DiffusionSampleOptions:
        opts = self.parse_sample_options(options)
        if opts.sampler == "ddpm" or opts.eta > 0:
            raise ValueError("rendering latents needs a deterministic sampler (dpm++, ddim with eta=0, or euler), "
                             f"got sampler={opts.sampler!r} eta={opts.eta}")
        return opts

    @torch.no_grad()
    def render(self, z: Tensor, y: Tensor | None = None, **options: Any) -> Tensor:
        """Initial noise z [n, C, S, S] through the ODE sampler (dpm++ / ddim η=0 / euler) → images in [0, 1]."""
        opts = self._deterministic(options)
        if tuple(z.shape[1:]) != self.space:
            raise FieldError("latents", f"must be [n, {', '.join(map(str, self.space))}], got {list(z.shape)}")
        return self._integrate(z.to(self.device), y, opts, None)

    @torch.no_grad()
    def invert(self, x: Tensor, y: Tensor | None = None, *, refine: int = 0, **options: Any) -> Tensor:
        """The noise that renders to images x [B, C, S, S] in [0, 1]: the ODE run backwards (DDIM inversion for
        the DDPM objective, reversed Euler for flow) over ``steps`` levels → [B, C, S, S]. Each step is first
        taken explicitly (the prediction at the lower level); ``refine`` > 0 then solves the sampler's own
        step for its start by that many fixed-point iterations (prediction at the higher level, as the sampler
        evaluates it: Pan et al. 2023), so rendering returns the images far more exactly."""
        opts = self._deterministic(options)
        guidance = 1.0 if opts.guidance is None else opts.guidance
        if isinstance(refine, bool) or not isinstance(refine, int) or not 0 <= refine <= 50:
            raise FieldError("refine", f"must be an int in [0, 50], got {refine!r}")
        y = None if y is None else y.to(self.device)
        h = self.to_space(x.to(self.device).float())
        n, device = h.shape[0], h.device
        at = lambda level: torch.full((n,), float(level), device=device)  # noqa: E731 - fed times [n]
        with eval_mode(self.net):
            if self.config.objective == "flow":
                sigmas = FlowEuler(self.schedule, opts.steps).sigmas.tolist()[::-1]  # 0 → 1
                T = self.schedule.timesteps
                for lo, hi in zip(sigmas, sigmas[1:]):
                    z = h + (hi - lo) * self._guided(h, at(lo * T), y, guidance)
                    for _ in range(refine):  # z such that z + (lo - hi) v(z, hi) = h: Euler's step from hi
                        z = h + (hi - lo) * self._guided(z, at(hi * T), y, guidance)
                    h = z
                return h
            sampler = DDIMSampler(self.schedule, opts.steps, prediction=self.config.prediction)
            ts = sampler.timesteps.tolist()[::-1]  # ascending
            ab = self.schedule.alphas_cumprod
            for i, t in enumerate(ts):  # from level ts[i-1] (ts[0]: ~clean) up to ts[i]
                src = ts[i - 1] if i else 0
                a_src, a_dst = float(ab[src]), float(ab[t])
                out = self._guided(h, at(src), y, guidance)
                eps = _eps_from(out, h, a_src, self.config.prediction)
                z = math.sqrt(a_dst) * _x0_from(out, h, a_src, self.config.prediction) + math.sqrt(1 - a_dst) * eps
                for _ in range(refine):  # z whose DDIM step (eps predicted at z, t) lands on h
                    out = self._guided(z, at(t), y, guidance)
                    eps = _eps_from(out, z, a_dst, self.config.prediction)
                    x0 = (h - math.sqrt(1 - a_src) * eps) / math.sqrt(a_src)
                    z = math.sqrt(a_dst) * x0 + math.sqrt(1 - a_dst) * eps
                h = z
            return h

    # ---- inpainting
    def inpaint(self, x: Tensor, fill: Tensor, *, condition: Any = None, generator: rng.Generator = None,
                **options: Any) -> Tensor:
        """RePaint (:mod:`~genforge.models.repaint`) with a single-step sampler. A conditional model given no
        label first takes the class its own denoising error on the known pixels favours
        (:meth:`classify_known`, ``classify`` noise levels; 0 = the unconditional "no label" class, which
        a model trained with a little label dropout renders poorly). Images and ``fill`` as in
        :meth:`Inpaints.inpaint`."""
        opts = self.parse_inpaint_options(options)
        self._check_sampler(opts.sampler, REPAINT_SAMPLERS[self.config.objective])
        if opts.steps > self.config.timesteps:
            raise FieldError("steps", f"must be <= the {self.config.timesteps} training timesteps, got {opts.steps}")
        if opts.guidance is not None and not (self.prompted and condition is not None) and (
                not self.num_classes or (condition is None and not opts.classify)):
            raise ValueError("guidance needs a class-conditional model and a label (given, or classify > 0), or a "
                             "text-to-image model and a prompt")
        b = x.shape[0]
        x0 = self.to_space(x.to(self.device).float())  # [B, *space]
        fill = fill.to(self.device)
        fill_space = self.space_mask(fill)  # [B, 1, *space side]
        if self.prompted:
            y = None if condition is None else self._prompt_ids(b, condition, None)
        else:
            y = None if condition is None else labels_for(b, condition, self.num_classes, self.device, None)
        if y is None and self.num_classes and opts.classify > 0:
            with eval_mode(self.net):
                y = self.classify_known(x0, ~fill_space, opts.classify, generator)
        guidance = 1.0 if opts.guidance is None else opts.guidance
        sampler = self._sampler(opts.sampler or REPAINT_SAMPLERS[self.config.objective][0], opts.steps)
        lv = levels(sampler, self.schedule.alphas_cumprod if self.config.objective == "ddpm" else None)
        path = jump_schedule(opts.steps, opts.jump_length, opts.resamples)
        with torch.no_grad(), eval_mode(self):
            out = repaint(lambda h, fed: self._guided(h, fed, y, guidance), sampler, lv, x0, fill_space, path,
                          generator)
            out = self.from_space(out)
        return torch.where(fill, out, x.to(self.device).float())
