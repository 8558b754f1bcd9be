"""Importers into the ChannelGraph (ONNX, torch.fx)."""
