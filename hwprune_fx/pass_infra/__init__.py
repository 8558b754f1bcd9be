"""Small pass infrastructure in the style of torch.fx, onnx_ir and TVM."""
from __future__ import annotations

from hwprune_fx.pass_infra.base import PassBase, PassError, PassResult
from hwprune_fx.pass_infra.context import PassContext
from hwprune_fx.pass_infra.instruments import (IRDumpInstrument, LatencyInstrument, LatencyRecord, PassInstrument,
                                               TimingInstrument, VerifyInstrument, verify_model)
from hwprune_fx.pass_infra.manager import PassManager
from hwprune_fx.pass_infra.pipeline_text import PassRecord, PassSpec, Pipeline, PipelineResult
from hwprune_fx.pass_infra.registry import (Choices, Range, available_passes, create_pass, pass_info,
                                            register_pass)

__all__ = ["PassBase", "PassError", "PassResult", "PassContext", "PassInstrument", "TimingInstrument",
           "VerifyInstrument", "verify_model", "LatencyInstrument", "LatencyRecord", "IRDumpInstrument",
           "PassManager", "PassSpec", "PassRecord", "Pipeline", "PipelineResult", "Choices", "Range",
           "register_pass", "available_passes", "create_pass", "pass_info"]
