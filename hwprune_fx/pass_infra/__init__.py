"""Small pass infrastructure in the style of torch.fx, onnx_ir and TVM."""
from __future__ import annotations

from hwprune_fx.pass_infra.base import PassBase, PassError, PassResult
from hwprune_fx.pass_infra.instruments import PassInstrument, TimingInstrument, VerifyInstrument
from hwprune_fx.pass_infra.manager import PassManager

__all__ = ["PassBase", "PassError", "PassResult", "PassInstrument", "TimingInstrument",
           "VerifyInstrument", "PassManager"]
