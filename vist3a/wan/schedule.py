"""The official UniPC flow schedule (diffusers 0.33.1, the version VIST3A pins), computed here.

diffusers 0.37 changed how ``UniPCMultistepScheduler`` lays out flow sigmas (first sigma 1.0 instead of
0.9998, a different last non-zero sigma), so the installed diffusers cannot be trusted to reproduce the
official samples.  This module owns the grid and the UniPC (bh2, order 2, x0-prediction, lower order at
the end) update coefficients, so the schedule is the official one whatever diffusers is installed:

- :func:`official_flow_schedule` gives the timesteps and sigmas 0.33.1 gives for the official config;
- :func:`unipc_updates` gives each step as a linear map of the sampler state (what the sync-free loop
  applies), derived from the UniPC formulas in float64;
- :func:`make_official_scheduler` is a diffusers scheduler that installs that grid in ``set_timesteps``,
  for code that drives diffusers' own stepping (``WanPipeline``, training roll-outs).
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import numpy as np
import torch

__all__ = ["NUM_TRAIN_TIMESTEPS", "SOLVER_ORDER", "official_flow_schedule", "unipc_updates",
           "make_official_scheduler", "UniPCUpdate"]

NUM_TRAIN_TIMESTEPS = 1000
SOLVER_ORDER = 2  # diffusers' default, used by the official script

# One UniPC step as a linear map.  State slots: 0 = sample, 1 = last (corrected) sample, 2, 3 = the
# scheduler's model outputs (x0 predictions, oldest first), then one input slot (4) for the model output
# (flow velocity).  For every output slot: None (not set yet) or the non-zero (input slot, coefficient) pairs.
UniPCUpdate = tuple[Optional[tuple[tuple[int, float], ...]], ...]


def _check(steps: int, shift: float) -> tuple[int, float]:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps} is not possible: use at least 1 denoising step (official: 50)")
    if not (float(shift) > 0 and math.isfinite(float(shift))):
        raise ValueError(f"shift={shift} is not possible: the flow shift must be a positive number (official: 5)")
    return int(steps), float(shift)


def official_flow_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps int64 [steps], sigmas float32 [steps + 1]) exactly as diffusers 0.33.1's UniPC makes them
    for ``prediction_type='flow_prediction', use_flow_sigmas=True, flow_shift=shift`` and 1000 train steps.

    The grid is ``1 - linspace(1, 1/1000, steps+1)`` shifted by ``shift*s / (1 + (shift-1)*s)``, flipped,
    without its last (zero) point; timesteps are ``sigma * 1000`` truncated to integers; a final sigma 0.
    """
    steps, shift = _check(steps, shift)
    alphas = np.linspace(1, 1 / NUM_TRAIN_TIMESTEPS, steps + 1)  # float64, numpy's own rounding
    s = 1.0 - alphas
    s = np.flip(shift * s / (1 + (shift - 1) * s))[:-1].copy()
    timesteps = torch.from_numpy(s * NUM_TRAIN_TIMESTEPS).to(torch.int64)  # truncation, as 0.33.1
    sigmas = torch.from_numpy(np.concatenate([s, [0.0]]).astype(np.float32))
    return timesteps, sigmas


def _lam(sigma: float) -> float:
    """log-SNR of the flow parameterisation: alpha = 1 - sigma."""
    return math.log(1.0 - sigma) - math.log(sigma) if sigma > 0 else math.inf


def _phi_terms(h: float, order: int) -> tuple[float, float, list[float]]:
    """(h_phi_1, B_h, b) of UniPC-bh2 for x0 prediction (hh = -h)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = h_phi_1
    h_phi_k = h_phi_1 / hh - 1.0 if math.isfinite(hh) else -1.0
    fact, b = 1, []
    for i in range(1, order + 1):
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = (h_phi_k / hh if math.isfinite(hh) else 0.0) - 1.0 / fact
    return h_phi_1, b_h, b


def _axpy(*terms: tuple[float, dict]) -> dict:
    out: dict = {}
    for c, vec in terms:
        for k, v in vec.items():
            out[k] = out.get(k, 0.0) + c * v
    return out


@functools.lru_cache(maxsize=64)
def _updates_cached(sigmas: tuple[float, ...]) -> tuple[UniPCUpdate, ...]:
    n = len(sigmas) - 1
    X, LAST, M_OLD, M_NEW, EPS = 0, 1, 2, 3, 4
    unit = lambda k: {k: 1.0}  # noqa: E731
    have_last, have = False, [False, False]  # state slots set so far
    lower_order_nums, this_order = 0, 1
    updates = []
    for i in range(n):
        s_i = sigmas[i]
        x0 = {X: 1.0, EPS: -s_i}  # flow prediction -> x0 = sample - sigma * v
        # Corrector (UniC) on the sample, using the previous step's order.
        if i > 0 and have_last:
            s_prev, lam_t, lam_s0 = sigmas[i - 1], _lam(s_i), _lam(sigmas[i - 1])
            h = lam_t - lam_s0
            alpha_t = 1.0 - s_i
            h_phi_1, b_h, b = _phi_terms(h, this_order)
            if this_order == 1:
                rhos = [0.5]
                corr = {}
            else:
                rk = (_lam(sigmas[i - 2]) - lam_s0) / h
                # rhos = solve([[1, 1], [rk, 1]], b)
                det = 1.0 - rk
                rhos = [(b[0] - b[1]) / det, (b[1] - rk * b[0]) / det]
                corr = _axpy((rhos[0] / rk, unit(M_OLD)), (-rhos[0] / rk, unit(M_NEW)))
            x = _axpy((s_i / s_prev, unit(LAST)), (-alpha_t * h_phi_1, unit(M_NEW)),
                      (-alpha_t * b_h, corr), (-alpha_t * b_h * rhos[-1], x0), (alpha_t * b_h * rhos[-1], unit(M_NEW)))
        else:
            x = unit(X)
        # Shift the history, then predict (UniP) with order min(2, steps left, warm-up).
        m_old = unit(M_NEW) if have[1] else None
        this_order = min(SOLVER_ORDER, n - i, lower_order_nums + 1)
        s_t = sigmas[i + 1]
        lam_s0 = _lam(s_i)
        h = _lam(s_t) - lam_s0
        alpha_t = 1.0 - s_t
        h_phi_1, b_h, _ = _phi_terms(h, this_order)
        x_next = _axpy((s_t / s_i, x), (-alpha_t * h_phi_1, x0))
        if this_order == 2:
            rk = (_lam(sigmas[i - 1]) - lam_s0) / h
            # D1 = (m_old - x0) / rk with rhos_p = 0.5 (diffusers' order-2 shortcut)
            x_next = _axpy((1.0, x_next), (-alpha_t * b_h * 0.5 / rk, m_old), (alpha_t * b_h * 0.5 / rk, x0))
        lower_order_nums = min(lower_order_nums + 1, SOLVER_ORDER)

        def pack(vec):
            return None if vec is None else tuple(sorted((k, float(c)) for k, c in vec.items() if c != 0.0))

        updates.append((pack(x_next), pack(x), pack(m_old), pack(x0)))
        have_last, have = True, [have[1], True]
    return tuple(updates)


def unipc_updates(sigmas: torch.Tensor) -> tuple[UniPCUpdate, ...]:
    """Per-step linear maps of UniPC on the sigma grid ``sigmas`` ([steps + 1], last one 0).

    Each update turns ``(sample, last_sample, model_output_old, model_output_new, velocity)`` into the
    next such state: the official UniC corrector then UniP predictor (bh2, order 2 with warm-up and lower
    order at the end), with coefficients computed in float64 from the float32 sigmas.
    """
    values = tuple(float(v) for v in torch.as_tensor(sigmas, dtype=torch.float32).double())
    if len(values) < 2 or values[-1] != 0.0 or any(not (0.0 < v < 1.0) for v in values[:-1]):
        raise ValueError("sigmas must be a decreasing grid in (0, 1) followed by a final 0")
    return _updates_cached(values)


@functools.lru_cache(maxsize=1)
def _scheduler_class():
    from diffusers import UniPCMultistepScheduler

    class OfficialUniPCScheduler(UniPCMultistepScheduler):
        """diffusers' UniPC whose ``set_timesteps`` installs the diffusers-0.33.1 flow grid."""

        def set_timesteps(self, num_inference_steps=None, device=None, *args, **kwargs):
            super().set_timesteps(num_inference_steps, device, *args, **kwargs)
            if args or kwargs.get("sigmas") is not None or kwargs.get("mu") is not None:
                return  # custom grids are the caller's business
            timesteps, sigmas = official_flow_schedule(len(self.timesteps), self.config.flow_shift)
            self.sigmas = sigmas
            self.timesteps = timesteps.to(device=self.timesteps.device)
            self.num_inference_steps = len(timesteps)

    return OfficialUniPCScheduler


def make_official_scheduler(shift: float):
    """The official script's scheduler (UniPC, flow prediction, flow sigmas, ``flow_shift=shift``) with the
    0.33.1 grid, as a diffusers scheduler: usable as ``WanPipeline(scheduler=...)``."""
    _check(1, shift)
    return _scheduler_class()(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=float(shift),
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    )
