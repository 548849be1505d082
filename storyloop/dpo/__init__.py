"""Pair sampler, preference-set export and the Diffusion-DPO trainer (issue #5)."""
