"""Shared helpers for the benchmark scripts: machine description, timing, reference models,
and writing a script's own section into ``benchmarks/RESULTS.md``.

Timing rule for every script: variants are run side by side in one process, interleaved
(ABAB...), after warm-up; figures are medians over repeats and ratios are taken pairwise.
"""

from __future__ import annotations

import contextlib
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """One line describing where the figures come from."""
    import os

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"CPU: {cpu_model()}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}; "
        f"torch {torch.__version__}; Python {platform.python_version()}; GPU: {gpu}"
    )


def command_line() -> str:
    """The command that produced a result, as it should be re-typed from the repository root."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path.cwd().resolve())
    return " ".join(["python", str(script), *sys.argv[1:]])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(25th, 75th) percentile of ``values`` (the interquartile range's ends)."""
    if len(values) < 2:
        v = float(values[0])
        return v, v
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 2,
    inner: int = 1,
) -> dict[str, list[float]]:
    """Seconds per call of each ``fns`` entry, measured interleaved: A B C, C B A, A B C...

    Each sample times ``inner`` back-to-back calls and divides. The order alternates
    direction every round so no variant always runs right after the same neighbour.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            fn = fns[name]
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner)
    return samples


def write_section(name: str, body: str) -> None:
    """Replace the ``<!-- BEGIN name -->`` ... ``<!-- END name -->`` block of RESULTS.md with ``body``.

    The block is appended if the markers are missing. Only the script's own block changes.
    """
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# normguard benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    found = pattern.search(text) is not None
    text = pattern.sub(lambda _: block, text) if found else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(f"[wrote section {name!r} of {RESULTS}]")


def header(title: str, extra: str = "") -> str:
    """The provenance lines every section starts with."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"Command: `{command_line()}`  ", f"Machine: {machine()}  ", f"Run: {when}"]
    if extra:
        lines[-1] += "  "
        lines.append(extra)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- reference models
def mlp(width: int = 2048, depth: int = 4, d_in: int = 512, d_out: int = 10) -> nn.Module:
    """An MLP with large weight matrices (few, big tensors)."""
    layers: list[nn.Module] = [nn.Linear(d_in, width), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, d_out))
    return nn.Sequential(*layers)


def small_cnn(channels: int = 64, classes: int = 10) -> nn.Module:
    """A small VGG-style CNN with batch norm, for 3×32×32 inputs."""
    c = channels
    blocks: list[nn.Module] = []
    c_in = 3
    for c_out in (c, c, 2 * c, 2 * c, 4 * c, 4 * c):
        blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        if c_out == c_in:
            blocks.append(nn.MaxPool2d(2))
        c_in = c_out
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes))


class TinyTransformer(nn.Module):
    """Token embedding + ``nn.TransformerEncoder`` + linear head (12 tensors per layer)."""

    def __init__(self, vocab: int = 1000, d_model: int = 256, layers: int = 12, heads: int = 4, ff: int = 1024):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)))


class ManySmall(nn.Module):
    """``n`` tiny linear layers (2 tensors each): the worst case for per-tensor overhead."""

    def __init__(self, n_layers: int = 1250, width: int = 16):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def reference_models(quick: bool = False) -> dict[str, nn.Module]:
    """The four reference models of the norm-pass benchmark."""
    if quick:
        return {
            "mlp": mlp(width=512, depth=3),
            "cnn": small_cnn(channels=16),
            "transformer": TinyTransformer(d_model=64, layers=9, ff=128),
            "many_small": ManySmall(n_layers=1000, width=8),
        }
    return {
        "mlp": mlp(),
        "cnn": small_cnn(),
        "transformer": TinyTransformer(),
        "many_small": ManySmall(),
    }


def param_stats(model: nn.Module) -> tuple[int, int, int]:
    """(tensors, elements, bytes) of the trainable parameters."""
    ps = [p for p in model.parameters() if p.requires_grad]
    return len(ps), sum(p.numel() for p in ps), sum(p.numel() * p.element_size() for p in ps)
