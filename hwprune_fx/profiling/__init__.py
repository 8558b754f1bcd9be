"""Per-layer latency: layer extraction, timing and channel-count sweeps."""
