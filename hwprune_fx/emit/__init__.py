"""Emitters: pruned ONNX, reports."""
