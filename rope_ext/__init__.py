"""rope-ext: N×N block rotary position encodings for ViTs."""
