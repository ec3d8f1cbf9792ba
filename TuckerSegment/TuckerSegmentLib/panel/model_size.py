"""The model size shown under the DF slider: parameters and GFLOPs for the chosen mode and DF.

The original networks are counted once per mode (size_table.py); each slider change is then
arithmetic (microseconds), not a 1.6–2.5 s recount. Ratios are against the original networks,
the ones `--df 1` runs.
"""

from __future__ import annotations

from ..engine.fidelity import default_df, is_default_df
from ..engine.size_table import SizeTable, size_table
from ..ts.architectures import builtin_spec
from ..ts.weights import EXPERT_NAMES


class ModelSizes:
    """Size tables for fast (3 mm) and full (five experts) mode, built on first use."""

    def __init__(self) -> None:
        self._tables: dict[bool, list[SizeTable]] = {}

    def tables(self, fast: bool) -> list[SizeTable]:
        if fast not in self._tables:
            specs = (
                [builtin_spec("3mm")] if fast else [builtin_spec("1.5mm", e) for e in EXPERT_NAMES]
            )
            self._tables[fast] = [size_table(spec) for spec in specs]
        return self._tables[fast]

    def totals(self, fast: bool, df: float, rank_floor: int) -> tuple[int, int, int, int]:
        """(params, flops, original params, original flops) summed over the mode's models; at the
        default DF each model counts at its own default (the cardiac expert at 0.5), as the CLI
        runs it."""
        params = flops = params0 = flops0 = 0
        models = ["3mm"] if fast else list(EXPERT_NAMES)
        for model, table in zip(models, self.tables(fast), strict=True):
            p, f = table.compressed(default_df(model) if is_default_df(df) else df, rank_floor)
            params, flops = params + p, flops + f
            params0, flops0 = params0 + table.params, flops0 + table.flops
        return params, flops, params0, flops0

    def budget_text(self, fast: bool, share: float) -> str:
        """What "fit my budget" promises before the run: the planner spends at most this share
        of the networks' parameters where it keeps the most kernel energy (ranks per layer, the
        models' layers competing for one budget)."""
        params0 = sum(table.params for table in self.tables(fast))
        return (
            f"at most {share * params0 / 1e6:.2f} M parameters ({share:.0%} of "
            f"{params0 / 1e6:.2f} M): ranks planned per layer where they keep the most"
        )

    def text(self, fast: bool, df: float, rank_floor: int) -> str:
        params, flops, params0, flops0 = self.totals(fast, df, rank_floor)
        if params == params0:
            return f"{params / 1e6:.2f} M parameters, {flops / 1e9:.0f} GFLOPs per patch (the original networks)"
        return (
            f"{params / 1e6:.2f} M parameters ({params0 / params:.1f}× fewer), "
            f"{flops / 1e9:.0f} GFLOPs per patch ({flops0 / flops:.1f}× fewer)"
        )
