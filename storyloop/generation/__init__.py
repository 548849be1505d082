"""GSA for diffusers FLUX, Stage-1 training, candidate generation (issue #3)."""
