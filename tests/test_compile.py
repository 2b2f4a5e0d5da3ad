"""``torch.compile`` (inductor, CPU) runs every model to its eager output, dense and compiled for the sparse engine,
and tsprune's kernel is a proper custom op: ``torch.library.opcheck`` (schema, fake kernel, dispatch) passes.

Each compiled model of the matrix is called at batch 1 (a static graph: size-1 dimensions are where inductor's
stride checks of the ops it runs eagerly failed, FEDformer's ``[:, index]`` on a complex spectrum), then at batch 3,
which recompiles with a symbolic batch size, so the fake kernel also runs on symbolic shapes. Compiling one tiny
model takes 10 s to 2 minutes on a busy 2-core machine, so the matrix is heavy (``make test-heavy``); ``make test``
compiles two one-layer models at batch 1 only: FEDformer dense (the model that broke) and Transformer on the sparse
engine, plus the op checks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from conftest import TINY, random_inputs
from tsprune.config import ModelConfig
from tsprune.models.registry import build_model, default_config, model_names
from tsprune.prune.unstructured import prune_magnitude
from tsprune.sparse import kernel as pcsr
from tsprune.sparse.engine import compile_sparse
from tsprune.sparse.layers import SparseConv1d, SparseLinear, SparseWeight

DENSITY = 0.107  # the study's density of interest (as tests/test_sparse.py)
TOLERANCE = 1e-5  # inductor fuses and reorders float32 reductions; the observed differences are below 1.5e-6
BATCHES = (1, 3)  # static batch 1, then a recompilation with a symbolic batch size
ONE_LAYER = {"e_layers": 1, "d_layers": 1}  # the fast cases: half the graph to compile

pytestmark = [pytest.mark.usefixtures("one_thread"),
              # inductor runs FEDformer's and Autoformer's complex FFT ops eagerly, and says so once per process
              pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex")]


def needs_kernel() -> None:
    if not pcsr.available():
        pytest.skip(f"the C++ sparse kernel cannot be built here: {pcsr.reason()}")


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    """Every test compiles from scratch: no compiled graph of an earlier test is reused or counts against dynamo's
    recompilation limit."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def tiny_model(name: str, **sizes: int) -> tuple[nn.Module, ModelConfig]:
    config = default_config(name, **{**TINY, **sizes})
    torch.manual_seed(0)
    return build_model(config).eval(), config


def on_sparse_engine(model: nn.Module, config: ModelConfig) -> nn.Module:
    """``model`` magnitude-pruned to ``DENSITY`` and compiled for the sparse engine with every pruned layer on
    tsprune's kernel (``force``: no timing), all-zero feed-forward layers rewritten as the engine does."""
    needs_kernel()
    prune_magnitude(model, DENSITY)
    model, plan = compile_sparse(model, random_inputs(config, batch=1, device="cpu"), force="pcsr")
    assert any(isinstance(m, SparseWeight) and m.layout == "pcsr" for m in model.modules()), plan
    return model


def forward(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One seeded inference pass, as the engine runs models (Informer samples keys even in eval)."""
    torch.manual_seed(123)
    with torch.inference_mode():
        return model(*inputs)


def compiled_equals_eager(model: nn.Module, config: ModelConfig, batches: tuple[int, ...] = BATCHES) -> None:
    compiled = torch.compile(model)  # the default backend: inductor
    # Inductor draws random numbers with its own generator unless told to call torch's: with fallback_random,
    # Informer's compiled key sample is the eager one under the same seed, so the outputs are comparable.
    with torch._inductor.config.patch(fallback_random=True):
        for batch in batches:
            inputs = random_inputs(config, batch=batch, device="cpu")
            expected = forward(model, inputs)
            torch.testing.assert_close(forward(compiled, inputs), expected, rtol=TOLERANCE, atol=TOLERANCE)


def test_fedformer_compiles_at_batch_1() -> None:
    model, config = tiny_model("FEDformer", **ONE_LAYER)
    compiled_equals_eager(model, config, batches=(1,))


def test_model_on_the_sparse_engine_compiles() -> None:
    model, config = tiny_model("Transformer", **ONE_LAYER)
    compiled_equals_eager(on_sparse_engine(model, config), config, batches=(1,))


@pytest.mark.heavy
@pytest.mark.parametrize("engine", ["dense", "sparse"])
@pytest.mark.parametrize("name", model_names())
def test_compiled_model_equals_eager(name: str, engine: str) -> None:
    model, config = tiny_model(name)
    compiled_equals_eager(on_sparse_engine(model, config) if engine == "sparse" else model, config)


# ------------------------------------------------------------------------------------------------ the op


def packed_args(out: int, inp: int, tokens: int, bias: bool, seed: int = 0) -> tuple[object, ...]:
    """Arguments of ``tsprune::sparse_linear`` for a random ``[out, in]`` weight at ``DENSITY`` packed by the engine's
    :func:`pcsr.pack`, ``x [tokens, in]`` and an optional bias."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, inp, generator=gen) * (torch.rand(out, inp, generator=gen) < DENSITY)
    packed = pcsr.pack(weight)
    b = torch.randn(out, generator=gen) if bias else None
    x = torch.randn(tokens, inp, generator=gen)
    return (x, packed.ptr, packed.cols, packed.values, packed.row_nnz, packed.out_features, packed.panel, b, -1, 0)


OP_SHAPES = [  # (out, in, tokens): batch 1 and batch 32 of 96 steps; 2, 1 and 4 column panels at DENSITY
    pytest.param(64, 256, 96, id="64x256-batch1"),
    pytest.param(256, 64, 3072, id="256x64-batch32"),
    pytest.param(32, 512, 96, id="32x512-batch1"),
    pytest.param(7, 13, 5, id="odd"),
    pytest.param(16, 32, 0, id="no-tokens"),
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("out,inp,tokens", OP_SHAPES)
def test_sparse_linear_op_passes_opcheck(out: int, inp: int, tokens: int, bias: bool) -> None:
    needs_kernel()
    args = packed_args(out, inp, tokens, bias)
    result = torch.library.opcheck(torch.ops.tsprune.sparse_linear.default, args)
    assert set(result.values()) == {"SUCCESS"}, result


def test_sparse_linear_op_takes_any_strides() -> None:
    """A graph run op by op (an exported program's ``module()``) can pass a view that was contiguous when traced: the
    op copies it, to the same result."""
    needs_kernel()
    args = packed_args(64, 256, 96, bias=True)
    column_major = args[0].T.contiguous().T
    assert not column_major.is_contiguous()
    assert torch.equal(torch.ops.tsprune.sparse_linear(column_major, *args[1:]), torch.ops.tsprune.sparse_linear(*args))
    result = torch.library.opcheck(torch.ops.tsprune.sparse_linear.default, (column_major, *args[1:]))
    assert set(result.values()) == {"SUCCESS"}, result


def test_fake_kernel_gives_the_real_metadata_and_refuses_bad_calls() -> None:
    needs_kernel()
    args = packed_args(64, 256, 96, bias=True)
    real = torch.ops.tsprune.sparse_linear(*args)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = torch.ops.tsprune.sparse_linear(*args)
        assert (fake.shape, fake.dtype, fake.device, fake.stride()) == (real.shape, real.dtype, real.device,
                                                                         real.stride())
        bad_x = torch.randn(96, 100)  # one column panel, where the weight was packed in two
        with pytest.raises(RuntimeError, match="ptr must be"):
            torch.ops.tsprune.sparse_linear(bad_x, *args[1:])
        with pytest.raises(RuntimeError, match="bias must be"):
            torch.ops.tsprune.sparse_linear(*args[:7], torch.randn(63), -1, 0)


def test_sparse_layers_compile_into_one_graph() -> None:
    """The pcsr layers trace without a graph break (the op is in the graph, not run between graphs), also with a
    symbolic number of tokens."""
    needs_kernel()
    torch.manual_seed(0)
    linear, conv = nn.Linear(64, 48), nn.Conv1d(8, 16, 3, padding=1)
    with torch.no_grad():
        for layer in (linear, conv):
            layer.weight.mul_(torch.rand(layer.weight.shape) < 0.2)
    for dense, sparse, shape in ((linear, SparseLinear(linear, "pcsr"), (2, 7, 64)),
                                 (conv, SparseConv1d(conv, "pcsr"), (3, 8, 20))):
        compiled = torch.compile(sparse, fullgraph=True, dynamic=True, backend="aot_eager")
        x = torch.randn(*shape)
        with torch.inference_mode():
            torch.testing.assert_close(compiled(x), dense(x), rtol=0, atol=1e-5)
