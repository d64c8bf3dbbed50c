"""GPTQ int4 (Frantar et al., 2022): each column's rounding error is compensated on the columns still
to quantize, with the inverse Hessian of calibration inputs. Stored like int4 RTN (`Int4Linear`)."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.quant.config import QuantError, check_group
from lmops.quant.method import scheme
from lmops.quant.methods.int4 import Int4Weight, check_divides
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class GPTQConfig:
    """int4 GPTQ, one (scale, zero) per `group_size` columns; `damp` is the Hessian's diagonal damping
    as a share of its mean diagonal."""
    group_size: int = 64
    damp: float = 0.01

    def __post_init__(self):
        check_group(self.group_size)
        if not 0 < self.damp < 1:
            raise QuantError(f"damp must be in (0, 1), got {self.damp}")


class GPTQ(Int4Weight):
    name = "gptq"
    schemes = {"w4_gptq": scheme(), "w4_gptq_kv8": scheme(kv=8)}

    def apply(self, model, config: GPTQConfig, calib):
        from lmops.quant.api import collect_stats, target_linears
        from lmops.quant.int4 import gptq

        linears = target_linears(model)
        check_divides(linears, config.group_size)
        hessians = collect_stats(model, calib, list(linears), hessian=True)
        return self.quantize_linears(model, config.group_size,
                                     lambda name, w: gptq(w, hessians[name], config.group_size, config.damp))


register_method(GPTQConfig, GPTQ())
