"""tsprune's C++ sparse kernel (``tsprune.sparse.kernel``) against a float64 dense reference.

The error bound used throughout. The kernel computes each ``y[t, o] = sum_i x[t, i] W[o, i] + b[o]`` in float32
as a chain of ``n_o + 1`` floating-point operations: the row's ``n_o`` nonzero products accumulated one after
another (a fused multiply-add, or a multiply and an add in the portable path; partial sums stored between column
panels are float32 values, so storing them is exact), then the bias added. The inputs are float32 numbers and the
reference is computed exactly enough in float64 from the same numbers, so by the standard analysis of recursive
summation (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1 and §4.2), with unit roundoff
``u = 2^-24 = eps_f32 / 2`` and ``gamma_k = k u / (1 - k u)``:

    |y[t, o] - y_ref[t, o]|  <=  gamma_{n_o + 2} * (sum_i |x[t, i]| |W[o, i]| + |b[o]|)

per element (``n_o + 1`` operations, plus one ``u`` of margin for the float64 reference's own error, about
``2^-53 n_o`` relative). That is a guaranteed worst-case bound, a few hundred times the typical error, so a
separate test uses small integers, where every product and partial sum is exact in float32 and the kernel has
to match the reference exactly: that catches a dropped or duplicated nonzero that the bound might hide.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tsprune.sparse import kernel

U = 2.0**-24  # unit roundoff of float32


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    if not kernel.available():
        pytest.skip(f"the C++ sparse kernel cannot be built here: {kernel.reason()}")


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


def random_weight(out: int, inp: int, density: float, gen: torch.Generator) -> torch.Tensor:
    keep = torch.rand(out, inp, generator=gen) < density
    return torch.randn(out, inp, generator=gen) * keep


def check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor) -> None:
    """``y`` within the bound of the module docstring of ``x Wᵀ + b`` (float64), element by element."""
    x64, w64 = x.double().reshape(-1, x.shape[-1]), weight.double()
    b64 = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias.double()
    reference = x64 @ w64.T + b64
    magnitude = x64.abs() @ w64.abs().T + b64.abs()
    k = (weight != 0).sum(1).double() + 2  # n_o + 2, per output row
    bound = k * U / (1 - k * U) * magnitude
    assert y.shape == (*x.shape[:-1], weight.shape[0]) and y.dtype == torch.float32
    error = (y.double().reshape(reference.shape) - reference).abs()
    assert bool((error <= bound).all()), f"max error / bound = {float((error / bound.clamp_min(1e-300)).max())}"


def runnable() -> list[str]:
    """The instruction sets this CPU runs, widest first: each path is checked, not only the one it would pick (the
    AVX2 and AVX-512 paths share one micro-kernel, ``rows_simd``, so both instantiations need their own check)."""
    return list(kernel.ISAS[: kernel.ISAS.index(kernel.isa()) + 1])[::-1]


def needs(isa: str) -> None:
    if isa not in runnable():
        pytest.skip(f"this CPU has no {isa} (the kernel refuses it, see test_avx512_runs_or_refuses)")


SHAPES = [  # (out, in, tokens, density): sizes off multiples of 8 and of the 96-token tile, up to 5000 tokens
    (1, 1, 1, 1.0), (7, 13, 5, 0.5), (33, 65, 97, 0.3), (130, 300, 200, 0.107), (17, 1000, 61, 0.05),
    (512, 2048, 96, 0.107), (2048, 512, 385, 0.25), (64, 200, 5000, 0.2), (300, 40, 3072, 0.6),
]


@pytest.mark.parametrize("isa", kernel.ISAS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_dense(shape: tuple[int, int, int, float], isa: str, threads: int) -> None:
    needs(isa)
    out, inp, tokens, density = shape
    gen = torch.Generator().manual_seed(out * 1000 + inp)
    weight, bias = random_weight(out, inp, density, gen), torch.randn(out, generator=gen)
    x = torch.randn(tokens, inp, generator=gen)
    packed = kernel.pack(weight)
    for b in (bias, None):
        check(x, weight, b, kernel.linear(x, packed, b, isa=isa))


@pytest.mark.parametrize("panel", [1, 8, 24, 100])
def test_panels_and_tiles(panel: int, threads: int) -> None:
    """Narrow panels (many partial-sum passes, ragged last panel) and capped tiles give the same bound."""
    gen = torch.Generator().manual_seed(panel)
    weight, bias = random_weight(45, 203, 0.3, gen), torch.randn(45, generator=gen)
    x = torch.randn(203, 203, generator=gen)
    packed = kernel.pack(weight, panel)
    assert packed.panels == -(-203 // panel)
    for tile in (0, 8, 40):
        for isa in (None, *runnable()):
            check(x, weight, bias, kernel.linear(x, packed, bias, isa=isa, tile=tile))


def test_exact_on_integers(threads: int) -> None:
    """Small integers: every product and partial sum is exact in float32, so the result must be exact."""
    gen = torch.Generator().manual_seed(1)
    weight = torch.randint(-3, 4, (250, 700), generator=gen).float() * (torch.rand(250, 700, generator=gen) < 0.2)
    bias = torch.randint(-5, 6, (250,), generator=gen).float()
    x = torch.randint(-4, 5, (1111, 700), generator=gen).float()
    reference = (x.double() @ weight.double().T + bias.double()).float()
    for panel in (None, 37):
        packed = kernel.pack(weight, panel)
        for isa in (None, *runnable()):
            assert torch.equal(kernel.linear(x, packed, bias, isa=isa), reference)


def test_leading_dims(threads: int) -> None:
    gen = torch.Generator().manual_seed(2)
    weight, bias = random_weight(96, 72, 0.2, gen), torch.randn(96, generator=gen)
    packed = kernel.pack(weight)
    for shape in [(72,), (3, 72), (4, 31, 72), (2, 3, 5, 72)]:
        x = torch.randn(*shape, generator=gen)
        check(x, weight, bias, kernel.linear(x, packed, bias))
    x = torch.randn(4, 31, 72, generator=gen).transpose(0, 1)  # not contiguous: copied first
    check(x, weight, bias, kernel.linear(x, packed, bias))
    assert kernel.linear(torch.zeros(0, 5, 72), packed, bias).shape == (0, 5, 96)


def test_empty_rows_zero_weight_full_density(threads: int) -> None:
    gen = torch.Generator().manual_seed(3)
    x, bias = torch.randn(150, 90, generator=gen), torch.randn(70, generator=gen)
    weight = random_weight(70, 90, 0.3, gen)
    weight[::3] = 0  # empty rows
    weight[:, 30:60] = 0  # an empty column range: whole empty (panel, row) pairs
    check(x, weight, bias, kernel.linear(x, kernel.pack(weight, 30), bias))
    zero = kernel.pack(torch.zeros(70, 90))
    assert zero.nnz == 0
    assert torch.equal(kernel.linear(x, zero, bias), bias.expand(150, 70))
    assert torch.equal(kernel.linear(x, zero), torch.zeros(150, 70))
    full = torch.randn(70, 90, generator=gen)
    assert kernel.pack(full).density == 1.0
    check(x, full, bias, kernel.linear(x, kernel.pack(full), bias))
    nothing_in = kernel.pack(torch.zeros(5, 0))
    assert torch.equal(kernel.linear(torch.zeros(3, 0), nothing_in, bias[:5]), bias[:5].expand(3, 5))


def test_pack_format() -> None:
    weight = torch.tensor([[0.0, 2.0, 0.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5.0, 0.0, 6.0, 0.0, -0.0]])
    packed = kernel.pack(weight, panel=2)  # panels: columns [0, 2), [2, 4), [4, 5); -0.0 is a zero
    assert packed.panels == 3 and packed.nnz == 5
    assert packed.ptr.tolist() == [0, 1, 1, 2, 3, 3, 4, 5, 5, 5]  # (panel, row) buckets, panel-major
    assert packed.cols.tolist() == [1, 0, 1, 0, 0] and packed.cols.dtype == torch.int32  # relative to the panel
    assert packed.values.tolist() == [2.0, 5.0, 3.0, 6.0, 4.0]
    assert packed.row_nnz.tolist() == [0, 3, 3, 5]
    assert torch.equal(packed.dense(), weight)  # unpacking gives the weight back, zeros included
    assert kernel.panel_width(512, 0.25) == 64 and kernel.panel_width(2048, 0.02) == 512
    assert kernel.panel_width(100, 0.01) == 100


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_activation_epilogue(activation: str, threads: int) -> None:
    """The epilogue equals torch's activation of the kernel's own product on every path: ReLU exactly, exact GELU
    within A&S erf's absolute error and rounding (vec_math.h: 2.5e-7 |v| plus the output's rounding, the class of
    torch's float32 GELU)."""
    gen = torch.Generator().manual_seed(7)
    weight, bias = random_weight(37, 50, 0.2, gen), torch.randn(37, generator=gen)
    x = torch.randn(101, 50, generator=gen) * 3  # pre-activations from about -30 to 30
    packed = kernel.pack(weight)
    for isa in runnable():
        plain = kernel.linear(x, packed, bias, isa=isa)
        out = kernel.linear(x, packed, bias, isa=isa, activation=activation)
        if activation == "relu":
            assert torch.equal(out, torch.nn.functional.relu(plain))
            continue
        exact = torch.nn.functional.gelu(plain.double())
        bound = 2.5e-7 * plain.double().abs() + 4 * U * exact.abs() + 1e-12
        error = (out.double() - exact).abs()
        assert bool((error <= bound).all()), f"{isa}: max error / bound = {float((error / bound).max())}"


def test_errors() -> None:
    packed = kernel.pack(torch.eye(4))
    with pytest.raises(RuntimeError, match="inference only"):
        kernel.linear(torch.ones(2, 4, requires_grad=True), packed)
    with torch.inference_mode():
        kernel.linear(torch.ones(2, 4, requires_grad=True), packed)  # no graph needed: fine
    with pytest.raises(TypeError, match="float32"):
        kernel.linear(torch.ones(2, 4, dtype=torch.float64), packed)
    with pytest.raises(ValueError, match="in_features=4"):
        kernel.linear(torch.ones(2, 5), packed)
    with pytest.raises(ValueError, match="bias"):
        kernel.linear(torch.ones(2, 4), packed, torch.ones(3))
    with pytest.raises(ValueError, match="isa"):
        kernel.linear(torch.ones(2, 4), packed, isa="neon")
    with pytest.raises(ValueError, match="activation"):
        kernel.linear(torch.ones(2, 4), packed, activation="tanh")
    with pytest.raises(ValueError, match="2-D"):
        kernel.pack(torch.ones(2, 3, 4))


def test_avx512_runs_or_refuses() -> None:
    """On an AVX-512 CPU the AVX-512 path is checked like the others; elsewhere it is refused, never executed."""
    gen = torch.Generator().manual_seed(4)
    weight, x = random_weight(50, 77, 0.3, gen), torch.randn(300, 77, generator=gen)
    if kernel.isa() == "avx512":
        check(x, weight, None, kernel.linear(x, kernel.pack(weight), isa="avx512"))
    else:
        with pytest.raises(RuntimeError, match="supports up to"):
            kernel.linear(x, kernel.pack(weight), isa="avx512")


FALLBACK = """
import warnings
from tsprune.sparse import kernel
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert kernel.available() is False and kernel.available() is False
messages = [str(w.message) for w in caught]
assert len(messages) == 1 and "unavailable" in messages[0] and "\\n" not in messages[0], messages
print(kernel.reason())
"""


@pytest.mark.parametrize("env", [{"TSPRUNE_NO_KERNEL_BUILD": "1"}, {"CXX": "/nonexistent/c++"}],
                         ids=["no-build", "no-cxx"])
def test_no_compiler_falls_back(env: dict[str, str], tmp_path: Path) -> None:
    """A fresh process with an empty kernel cache and no usable compiler: unavailable, one one-line warning."""
    full = {**os.environ, "TSPRUNE_CACHE": str(tmp_path), **env}
    done = subprocess.run([sys.executable, "-c", FALLBACK], env=full, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("TSPRUNE_NO_KERNEL_BUILD" if "TSPRUNE_NO_KERNEL_BUILD" in env else "no C++ compiler") in done.stdout


def test_missing_compiler_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same path with the module state reset and ``_compiler`` patched (state restored afterwards)."""
    monkeypatch.setenv("TSPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(kernel, "_compiler", lambda: None)
    monkeypatch.setattr(kernel, "_state", {"loaded": None, "reason": None})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not kernel.available() and not kernel.available()
    assert len(caught) == 1 and "no C++ compiler" in str(caught[0].message)
    with pytest.raises(kernel.KernelUnavailable, match="check available"):
        kernel.linear(torch.ones(2, 4), kernel.pack(torch.eye(4)))


def test_failed_build_is_remembered(tmp_path: Path) -> None:
    """A compiler that fails: the first process warns and leaves build-failed.txt, the next one falls back without
    building again."""
    cxx = tmp_path / "c++"
    cxx.write_text("#!/bin/sh\necho 'broken compiler' >&2\nexit 1\n")
    cxx.chmod(0o755)
    full = {**os.environ, "TSPRUNE_CACHE": str(tmp_path / "cache"), "CXX": str(cxx)}
    first = subprocess.run([sys.executable, "-c", FALLBACK], env=full, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert list((tmp_path / "cache").glob("kernels/*/build-failed.txt"))
    second = subprocess.run([sys.executable, "-c", FALLBACK], env=full, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "build failed before" in second.stdout, second.stderr
