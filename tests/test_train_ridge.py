"""find_layer's streaming ridge regression: the conv as a design matrix, the solve, the MSE bookkeeping,
and the cross-rank sum."""

from __future__ import annotations

import os
import socket

import pytest
import torch
from guards import HANG_S

from vist3a_train.common.ridge import RidgeStats, solve_ridge, unfold_conv3d, upsample_latent

KERNEL, STRIDE, PADDING = (5, 3, 3), (1, 2, 2), (2, 1, 1)


def test_unfold_is_the_replicate_padded_conv3d():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 16, 2, 8, 8, generator=g, dtype=torch.float64)
    x = upsample_latent(z)
    assert x.shape[2] == 5
    conv = torch.nn.Conv3d(16, 7, KERNEL, STRIDE, PADDING, padding_mode="replicate").double()
    X = unfold_conv3d(x, KERNEL, STRIDE, PADDING)
    ref = conv(x).permute(0, 2, 3, 4, 1).reshape(-1, 7)
    got = X @ conv.weight.reshape(7, -1).T + conv.bias
    assert torch.allclose(got, ref, atol=1e-10)
    assert X.shape == (2 * 5 * 4 * 4, 16 * 5 * 3 * 3)


def _direct(X, Y, ridge):
    """Ridge without intercept via an augmented least-squares problem, then the mean-residual bias."""
    d = X.shape[1]
    A = torch.cat([X, ridge**0.5 * torch.eye(d, dtype=X.dtype)])
    B = torch.cat([Y, torch.zeros(d, Y.shape[1], dtype=Y.dtype)])
    W = torch.linalg.lstsq(A, B).solution
    b = (Y - X @ W).mean(0)
    mse = ((Y - X @ W - b) ** 2).mean()
    return W, b, float(mse)


@pytest.mark.parametrize("ridge", [1e-4, 0.5])
def test_streaming_ridge_equals_direct_least_squares(ridge):
    g = torch.Generator().manual_seed(1)
    n, d, out = 300, 12, 5
    X = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.3
    W_true = torch.randn(d, out, generator=g, dtype=torch.float64)
    Ys = {"a": X @ W_true + 0.7 + 0.05 * torch.randn(n, out, generator=g, dtype=torch.float64),
          "b": torch.randn(n, out, generator=g, dtype=torch.float64)}
    stats = RidgeStats(d, out, ["a", "b"])
    for lo, hi in ((0, 50), (50, 170), (170, 300)):  # streamed in uneven chunks
        stats.add(X[lo:hi], {k: v[lo:hi] for k, v in Ys.items()})
    for k, Y in Ys.items():
        W, b, mse = solve_ridge(stats, k, ridge)
        W_ref, b_ref, mse_ref = _direct(X, Y, ridge)
        assert torch.allclose(W, W_ref, atol=1e-8, rtol=1e-8)
        assert torch.allclose(b, b_ref, atol=1e-8, rtol=1e-8)
        assert mse == pytest.approx(mse_ref, rel=1e-8, abs=1e-12)
    assert solve_ridge(stats, "a", ridge)[2] < 0.5 < solve_ridge(stats, "b", ridge)[2]  # signal vs noise


def test_solved_conv_reproduces_the_fit():
    """The conv weights find_layer writes (W^T reshaped) applied by nn.Conv3d give the regression's outputs."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 16, 2, 4, 4, generator=g, dtype=torch.float64)
    x = upsample_latent(z)
    X = unfold_conv3d(x, KERNEL, STRIDE, PADDING)
    Y = torch.randn(X.shape[0], 6, generator=g, dtype=torch.float64)
    stats = RidgeStats(X.shape[1], 6, ["l"])
    stats.add(X, {"l": Y})
    W, b, _ = solve_ridge(stats, "l", 1e-4)
    conv = torch.nn.Conv3d(16, 6, KERNEL, STRIDE, PADDING, padding_mode="replicate").double()
    with torch.no_grad():
        conv.weight.copy_(W.T.reshape(6, 16, *KERNEL))
        conv.bias.copy_(b)
    out = conv(x).permute(0, 2, 3, 4, 1).reshape(-1, 6)
    assert torch.allclose(out, X @ W + b, atol=1e-9)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, q):
    from vist3a_train.common import distributed as D

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    D.init_distributed("cpu")
    g = torch.Generator().manual_seed(10 + rank)
    stats = RidgeStats(4, 3, ["x"])
    X, Y = torch.randn(20, 4, generator=g), torch.randn(20, 3, generator=g)
    stats.add(X, {"x": Y})
    total = stats.all_reduced()
    if rank == 0:
        q.put({k: v.clone() for k, v in total.tensors().items()})
    D.shutdown()


def test_statistics_are_summed_across_ranks():
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = q.get(timeout=HANG_S)
    for p in procs:
        p.join(timeout=HANG_S)
        assert p.exitcode == 0
    ref = RidgeStats(4, 3, ["x"])
    for r in range(2):
        g = torch.Generator().manual_seed(10 + r)
        X, Y = torch.randn(20, 4, generator=g), torch.randn(20, 3, generator=g)
        ref.add(X, {"x": Y})
    for k, v in ref.tensors().items():
        assert torch.allclose(got[k], v), k
    assert got["XtX"].dtype == torch.float64 and int(got["n"]) == 40
