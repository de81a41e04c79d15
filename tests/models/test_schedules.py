"""Noise schedules and samplers: invariants, errors, and step-by-step equality with diffusers' schedulers."""

from __future__ import annotations

import math
import re

import pytest
import torch

from genforge.config import FieldError

from genforge.models.samplers import SAMPLERS, DDIMSampler, DDPMSampler, DPMSolverPP2M, FlowEuler, make_sampler
from genforge.models.schedules import FlowSchedule, NoiseSchedule

SHAPE = (2, 3, 8, 8)
TOL = 1e-5
DIFFUSERS_BETA = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
# diffusers' DPM-Solver set_timesteps calls np.array on a tensor, which numpy 2 flags
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _model(T: int):
    """A fixed deterministic stand-in denoiser ``f(x, t)`` (nonlinear in x, depends on t)."""
    g = torch.Generator().manual_seed(1234)
    proj = torch.randn(SHAPE[1:], generator=g)
    bias = torch.randn(SHAPE[1:], generator=g)

    def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * x + 0.3 * torch.sin(proj * x + bias + float(t) / T)

    return f


def _x_init(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def _trajectory(ours, theirs, their_step, T: int, noises=None, our_generator=None):
    """Run both samplers from the same x_T. At each step both get the same x and the same model output
    (computed on diffusers' x) and the same noise; their next x are compared.

    Returns:
        (worst max |ours - diffusers| over the steps, the same relative to max(1, max |x|) at that step,
        diffusers' final x).
    """
    assert ours.timesteps.dtype == theirs.timesteps.dtype
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    f = _model(T)
    x = _x_init()
    worst = worst_rel = 0.0
    for i, t in enumerate(theirs.timesteps):
        z = None if noises is None else noises[i]
        out = f(x, t)
        ours_next = ours.step(out, i, x, generator=our_generator, noise=z)
        x = their_step(out, t, x, z)
        assert torch.isfinite(x).all()
        diff = float((ours_next - x).abs().max())
        worst, worst_rel = max(worst, diff), max(worst_rel, diff / max(1.0, float(x.abs().max())))
    return worst, worst_rel, x


def _free_run(sampler, T: int, noises=None, generator=None) -> torch.Tensor:
    f = _model(T)
    x = _x_init()
    for i, t in enumerate(sampler.timesteps):
        x = sampler.step(f(x, t), i, x, generator=generator, noise=None if noises is None else noises[i])
    return x


def _noises(n: int, seed: int = 7) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=g) for _ in range(n)]


def _config(schedule: NoiseSchedule, prediction: str) -> dict:
    return dict(num_train_timesteps=schedule.timesteps, beta_schedule=DIFFUSERS_BETA[schedule.kind],
                beta_start=1e-4, beta_end=0.02,
                prediction_type="v_prediction" if prediction == "v" else "epsilon")


def _ddpm(diffusers, schedule, prediction, steps, exact=True):
    theirs = diffusers.DDPMScheduler(**_config(schedule, prediction), variance_type="fixed_small",
                                     clip_sample=False, timestep_spacing="leading")
    theirs.set_timesteps(steps)
    if exact:
        theirs.alphas_cumprod = schedule.alphas_cumprod.clone()
    return theirs


def _ddim(diffusers, schedule, prediction, steps, exact=True, set_alpha_to_one=False):
    theirs = diffusers.DDIMScheduler(**_config(schedule, prediction), clip_sample=False,
                                     set_alpha_to_one=set_alpha_to_one, timestep_spacing="leading", steps_offset=0)
    theirs.set_timesteps(steps)
    if exact:
        theirs.alphas_cumprod = schedule.alphas_cumprod.clone()
        if not set_alpha_to_one:
            theirs.final_alpha_cumprod = schedule.alphas_cumprod[0].clone()
    return theirs


def _dpm(diffusers, schedule, prediction, steps, exact=True):
    theirs = diffusers.DPMSolverMultistepScheduler(**_config(schedule, prediction), algorithm_type="dpmsolver++",
                                                   solver_order=2, lower_order_final=True)
    assert theirs.config.final_sigmas_type == "zero" and theirs.config.timestep_spacing == "linspace"
    theirs.set_timesteps(steps)
    if exact:
        ab = schedule.alphas_cumprod[theirs.timesteps]
        theirs.sigmas = torch.cat([((1 - ab) / ab).sqrt(), torch.zeros(1, dtype=torch.float64)])
    return theirs


# ---------------------------------------------------------------- diffusers equality
# diffusers keeps its schedule in float32 (betas, cumprod, DPM sigmas); ours is float64. The step-by-step
# tests hand diffusers' scheduler our float64 table (``exact=True``), so what they compare is the step rule,
# to 1e-5; test_schedules_match_diffusers_tables checks the tables agree to float32 rounding, and
# test_stock_diffusers_differs_only_by_its_float32_tables runs diffusers untouched.
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedules_match_diffusers_tables(kind):
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule(kind, 1000)
    theirs = diffusers.DDPMScheduler(**_config(schedule, "epsilon"))
    torch.testing.assert_close(schedule.betas.float(), theirs.betas, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(schedule.alphas_cumprod.float(), theirs.alphas_cumprod, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("steps", [1000, 50])
def test_ddpm_matches_diffusers_step_by_step(kind, prediction, steps):
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule(kind, 1000)
    theirs = _ddpm(diffusers, schedule, prediction, steps)
    # the same seed on both sides: diffusers draws torch.randn(shape) on the CPU exactly where we do (t > 0)
    g_theirs = torch.Generator().manual_seed(99)
    worst, _, x_final = _trajectory(DDPMSampler(schedule, steps, prediction=prediction), theirs,
                                    lambda out, t, x, z: theirs.step(out, t, x, generator=g_theirs).prev_sample,
                                    1000, our_generator=torch.Generator().manual_seed(99))
    assert worst < TOL, worst
    free = _free_run(DDPMSampler(schedule, steps, prediction=prediction), 1000,
                     generator=torch.Generator().manual_seed(99))
    assert float((free - x_final).abs().max()) < TOL


def test_ddpm_noise_argument_replaces_the_generator_draw():
    schedule = NoiseSchedule("linear", 100)
    g = torch.Generator().manual_seed(5)
    drawn = [torch.randn(SHAPE, generator=g) for _ in range(19)] + [None]  # t = 0 (the last step) draws nothing
    a = _free_run(DDPMSampler(schedule, 20), 100, noises=drawn)
    b = _free_run(DDPMSampler(schedule, 20), 100, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("kind, steps", [("linear", 50), ("cosine", 20)])
def test_ddim_matches_diffusers_step_by_step(prediction, eta, kind, steps):
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule(kind, 1000)
    theirs = _ddim(diffusers, schedule, prediction, steps)
    worst, _, _ = _trajectory(DDIMSampler(schedule, steps, prediction=prediction, eta=eta), theirs,
                              lambda out, t, x, z: theirs.step(out, t, x, eta=eta, variance_noise=z).prev_sample,
                              1000, noises=_noises(steps))
    assert worst < TOL, worst


def test_ddim_set_alpha_to_one_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule("linear", 1000)
    theirs = _ddim(diffusers, schedule, "epsilon", 25, set_alpha_to_one=True)
    worst, _, _ = _trajectory(DDIMSampler(schedule, 25, set_alpha_to_one=True), theirs,
                              lambda out, t, x, z: theirs.step(out, t, x).prev_sample, 1000)
    assert worst < TOL, worst


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_dpm_solver_pp_2m_matches_diffusers_step_by_step(prediction, steps, kind):
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule(kind, 1000)
    theirs = _dpm(diffusers, schedule, prediction, steps)
    worst, _, x_final = _trajectory(DPMSolverPP2M(schedule, steps, prediction=prediction), theirs,
                                    lambda out, t, x, z: theirs.step(out, t, x).prev_sample, 1000)
    assert worst < TOL, worst
    free = _free_run(DPMSolverPP2M(schedule, steps, prediction=prediction), 1000)
    assert float((free - x_final).abs().max()) < TOL


@pytest.mark.parametrize("steps", [10, 50, 1])
def test_flow_euler_matches_diffusers_step_by_step(steps):
    diffusers = pytest.importorskip("diffusers")
    schedule = FlowSchedule(1000)
    theirs = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    theirs.set_timesteps(steps)
    ours = FlowEuler(schedule, steps)
    assert ours.timesteps.dtype == torch.float32
    assert ours.sigmas.tolist() == theirs.sigmas.tolist()
    worst, _, x_final = _trajectory(ours, theirs, lambda out, t, x, z: theirs.step(out, t, x).prev_sample, 1000)
    assert worst < TOL, worst
    assert float((_free_run(FlowEuler(schedule, steps), 1000) - x_final).abs().max()) < TOL


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_stock_diffusers_differs_only_by_its_float32_tables(kind, prediction, sampler):
    """diffusers as configured, its float32 tables untouched: the steps differ by that rounding only.

    Measured relative to max(1, |x|): <= 1e-5 at 20 steps. At 1000 DDPM steps diffusers' float32
    ``1 - ab_t / ab_{t-1}`` cancels (8e-5 here); our float64 steps are the closer to a float64 reference.
    """
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule(kind, 1000)
    steps = 20
    build = {"ddpm": _ddpm, "ddim": _ddim, "dpm++": _dpm}[sampler]
    theirs = build(diffusers, schedule, prediction, steps, exact=False)
    ours = make_sampler(sampler, schedule, steps, prediction=prediction, eta=1.0 if sampler == "ddim" else 0.0)
    g = torch.Generator().manual_seed(3)
    step = {"ddpm": lambda out, t, x, z: theirs.step(out, t, x, generator=g).prev_sample,
            "ddim": lambda out, t, x, z: theirs.step(out, t, x, eta=1.0, variance_noise=z).prev_sample,
            "dpm++": lambda out, t, x, z: theirs.step(out, t, x).prev_sample}[sampler]
    _, worst_rel, _ = _trajectory(ours, theirs, step, 1000, noises=None if sampler == "ddpm" else _noises(steps),
                                  our_generator=torch.Generator().manual_seed(3))
    assert worst_rel < 5e-5, worst_rel


# ---------------------------------------------------------------- schedule invariants
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alphas_cumprod_strictly_decreasing_in_unit_interval(kind):
    s = NoiseSchedule(kind, 1000)
    ab = s.alphas_cumprod
    assert ab.dtype == torch.float64 and ab.shape == (1000,) and s.betas.shape == s.alphas.shape == (1000,)
    assert bool((ab > 0).all()) and bool((ab < 1).all())
    assert bool((ab[1:] < ab[:-1]).all())
    torch.testing.assert_close(s.alphas, 1 - s.betas)


def test_linear_and_cosine_betas_follow_their_formulas():
    lin = NoiseSchedule("linear", 10, beta_start=0.001, beta_end=0.1)
    torch.testing.assert_close(lin.betas, torch.linspace(0.001, 0.1, 10, dtype=torch.float64))
    cos = NoiseSchedule("cosine", 1000)

    def f(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    assert float(cos.alphas_cumprod[499]) == pytest.approx(f(0.5) / f(0.0), rel=1e-9)
    assert float(cos.betas[-1]) == 0.999  # capped


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_add_noise_at_t0_is_nearly_x0(kind):
    s = NoiseSchedule(kind, 1000)
    x0, noise = _x_init(1), _x_init(2)
    xt = s.add_noise(x0, noise, torch.zeros(2, dtype=torch.long))
    assert float((xt - x0).norm() / x0.norm()) < 1e-2


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_predict_x0_and_epsilon_recover_the_truth(kind):
    s = NoiseSchedule(kind, 1000)
    t = torch.tensor([0, 999])
    for dtype, ts in ((torch.float64, [t, torch.tensor([321, 777])]), (torch.float32, [torch.tensor([0, 400])])):
        x0, eps = _x_init(1).to(dtype), _x_init(2).to(dtype)
        for tt in ts:
            xt = s.add_noise(x0, eps, tt)
            v = s.velocity(x0, eps, tt)
            for prediction, out in (("epsilon", eps), ("v", v)):
                torch.testing.assert_close(s.predict_x0(out, xt, tt, prediction), x0, rtol=0, atol=TOL)
                torch.testing.assert_close(s.predict_epsilon(out, xt, tt, prediction), eps, rtol=0, atol=TOL)


def test_velocity_matches_its_definition():
    s = NoiseSchedule("linear", 1000)
    x0, eps, t = _x_init(1), _x_init(2), torch.tensor([10, 900])
    ab = s.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(s.velocity(x0, eps, t), ab.sqrt() * eps - (1 - ab).sqrt() * x0)


def test_posterior_matches_closed_form():
    s = NoiseSchedule("linear", 1000)
    x0, xt = _x_init(1).double(), _x_init(2).double()
    for t in (0, 1, 10, 500, 999):
        tt = torch.tensor([t, t])
        mean, log_var = s.posterior(x0, xt, tt)
        ab_t = float(s.alphas_cumprod[t])
        ab_p = float(s.alphas_cumprod[t - 1]) if t > 0 else 1.0
        beta = float(s.betas[t])
        want_mean = beta * math.sqrt(ab_p) / (1 - ab_t) * x0 + (1 - ab_p) * math.sqrt(1 - beta) / (1 - ab_t) * xt
        torch.testing.assert_close(mean, want_mean, rtol=1e-12, atol=1e-12)
        var_t = beta * (1 - ab_p) / (1 - ab_t) if t > 0 else float(s.betas[1]) * (1 - float(s.alphas_cumprod[0])) / (
            1 - float(s.alphas_cumprod[1]))
        assert log_var.shape == (2, 1, 1, 1)
        assert float(log_var[0]) == pytest.approx(math.log(var_t), rel=1e-12)
    # at t = 0 the posterior mean is x0 itself
    torch.testing.assert_close(s.posterior(x0, xt, torch.tensor([0, 0]))[0], x0)


def test_bad_timesteps_are_refused():
    s = NoiseSchedule("linear", 100)
    x = _x_init()
    with pytest.raises(ValueError, match=r"\[0, 99\]"):
        s.add_noise(x, x, torch.tensor([0, 100]))
    with pytest.raises(TypeError, match="integers"):
        s.add_noise(x, x, torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match="prediction"):
        s.predict_x0(x, x, torch.tensor([1, 2]), "x0")
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule("quadratic")


def test_flow_path_interpolates_exactly():
    fs = FlowSchedule(1000)
    x0, noise = _x_init(1), _x_init(2)
    assert torch.equal(fs.add_noise(x0, noise, torch.zeros(2)), x0)
    assert torch.equal(fs.add_noise(x0, noise, torch.ones(2)), noise)
    torch.testing.assert_close(fs.add_noise(x0, noise, torch.full((2,), 0.5)), (x0 + noise) / 2, rtol=0, atol=1e-7)
    mixed = fs.add_noise(x0, noise, torch.tensor([0.0, 1.0]))
    assert torch.equal(mixed[0], x0[0]) and torch.equal(mixed[1], noise[1])
    assert torch.equal(fs.velocity(x0, noise), noise - x0)
    s = torch.tensor([0.25, 0.75])
    torch.testing.assert_close(fs.predict_x0(fs.velocity(x0, noise), fs.add_noise(x0, noise, s), s), x0)
    torch.testing.assert_close(fs.model_timestep(s), torch.tensor([250.0, 750.0]))


# ---------------------------------------------------------------- sampler behaviour
def test_ddim_eta0_is_deterministic():
    s = NoiseSchedule("linear", 1000)
    a = _free_run(DDIMSampler(s, 20), 1000, generator=torch.Generator().manual_seed(1))
    b = _free_run(DDIMSampler(s, 20), 1000, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_stochastic_samplers_reproduce_with_a_seed_and_differ_across_seeds():
    s = NoiseSchedule("linear", 1000)
    for make in (lambda: DDPMSampler(s, 20), lambda: DDIMSampler(s, 20, eta=1.0)):
        a = _free_run(make(), 1000, generator=torch.Generator().manual_seed(1))
        b = _free_run(make(), 1000, generator=torch.Generator().manual_seed(1))
        c = _free_run(make(), 1000, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_timesteps_dtypes_and_order():
    s = NoiseSchedule("linear", 1000)
    for sampler in (DDPMSampler(s, 50), DDIMSampler(s, 50), DPMSolverPP2M(s, 50)):
        assert sampler.timesteps.dtype == torch.long and len(sampler.timesteps) == len(sampler) == 50
        assert bool((sampler.timesteps[1:] < sampler.timesteps[:-1]).all())
    assert DDPMSampler(s, 50).timesteps[[0, -1]].tolist() == [980, 0]
    assert DPMSolverPP2M(s, 10).timesteps[[0, -1]].tolist() == [999, 100]
    euler = FlowEuler(FlowSchedule(1000), 10)
    assert euler.timesteps.dtype == torch.float32 and float(euler.timesteps[0]) == 1000.0
    assert bool((euler.timesteps[1:] < euler.timesteps[:-1]).all())


def test_dpm_solver_steps_must_run_in_order():
    s = NoiseSchedule("linear", 1000)
    sampler = DPMSolverPP2M(s, 10)
    x = _x_init()
    x = sampler.step(x, 0, x)
    with pytest.raises(ValueError, match="expected i=1, got 3"):
        sampler.step(x, 3, x)


def test_noise_of_the_wrong_shape_is_refused():
    sampler = DDPMSampler(NoiseSchedule("linear", 100), 10)
    x = _x_init()
    with pytest.raises(ValueError, match="noise must have the shape"):
        sampler.step(x, 0, x, noise=torch.zeros(1, 3, 8, 8))


# ---------------------------------------------------------------- make_sampler
def test_make_sampler_builds_each_registered_sampler():
    ddpm, flow = NoiseSchedule("linear", 100), FlowSchedule(100)
    assert list(SAMPLERS) == ["ddpm", "ddim", "dpm++", "euler"]
    for name, cls in SAMPLERS.items():
        sampler = make_sampler(name, flow if cls.objective == "flow" else ddpm, 10, prediction="v")
        assert type(sampler) is cls and sampler.name == name and sampler.steps == 10
    assert make_sampler("ddim", ddpm, 10, eta=0.5).eta == 0.5
    assert make_sampler("dpm++", ddpm, 10).prediction == "epsilon"


def test_make_sampler_errors():
    ddpm, flow = NoiseSchedule("linear", 1000), FlowSchedule(1000)
    with pytest.raises(FieldError, match=r"sampler must be one of \['ddpm', 'ddim', 'dpm\+\+', 'euler'\], got 'heun'"):
        make_sampler("heun", ddpm, 10)
    for name in ("ddpm", "ddim", "dpm++"):
        with pytest.raises(FieldError, match=rf"sampler '{re.escape(name)}' needs the 'ddpm' objective.*"
                                             r"NoiseSchedule.*got a FlowSchedule"):
            make_sampler(name, flow, 10)
    with pytest.raises(FieldError, match=r"sampler 'euler' needs the 'flow' objective.*FlowSchedule.*"
                                         r"got a NoiseSchedule"):
        make_sampler("euler", ddpm, 10)
    for steps in (0, 1001):
        with pytest.raises(ValueError, match=rf"steps must be an int in \[1, 1000\].*got {steps}"):
            make_sampler("ddpm", ddpm, steps)
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 999\].*'dpm\+\+'"):
        make_sampler("dpm++", ddpm, 1000)
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 1000\].*'euler'"):
        make_sampler("euler", flow, 1001)
    for eta in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
            make_sampler("ddim", ddpm, 10, eta=eta)
    with pytest.raises(ValueError, match="eta applies only to the 'ddim' sampler"):
        make_sampler("ddpm", ddpm, 10, eta=0.5)
    with pytest.raises(ValueError, match="prediction must be one of"):
        make_sampler("ddim", ddpm, 10, prediction="sample")
