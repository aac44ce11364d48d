"""Diffusion priors: schedules, the Prior interface, network adapters and loaders."""

from .adm import ADM_CHECKPOINT_NAMES, ADM_CONFIGS, ADMUNet, adm_from_config
from .base import Prior
from .denoiser import DenoiserPrior, from_denoiser
from .ffdnet import load_ffdnet
from .gaussian import GaussianPrior
from .loading import (
    CheckpointError,
    describe_shipped_priors,
    load,
    load_adm,
    schedule_from_scheduler_config,
    shipped_priors,
)
from .network import NetworkPrior
from .sampling import ddim_sample, ddpm_sample, ve_pc_sample
from .schedules import VESchedule, VPSchedule

__all__ = [
    "Prior",
    "GaussianPrior",
    "DenoiserPrior",
    "from_denoiser",
    "load_ffdnet",
    "VPSchedule",
    "VESchedule",
    "NetworkPrior",
    "ADMUNet",
    "ADM_CONFIGS",
    "ADM_CHECKPOINT_NAMES",
    "adm_from_config",
    "CheckpointError",
    "load",
    "load_adm",
    "schedule_from_scheduler_config",
    "shipped_priors",
    "describe_shipped_priors",
    "ddpm_sample",
    "ddim_sample",
    "ve_pc_sample",
]
