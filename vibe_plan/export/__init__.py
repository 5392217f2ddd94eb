"""Engine exports written from a placement: SGLang, TensorRT-LLM, DeepSeek-EPLB-style tensors."""

from vibe_plan.export.engines import EXPORTERS, export_placement, parse_export_specs

__all__ = ["EXPORTERS", "export_placement", "parse_export_specs"]
