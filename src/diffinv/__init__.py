"""diffinv: zero-shot image restoration and sparse-view CT with pretrained diffusion priors."""

__version__ = "0.1.0"
