"""Files: atomic writes, safetensors with checksums (never pickle), training state, run locks and metrics."""
