"""Camera-motion prompt augmentation for the reward rollouts of align.py.

The official alignment wraps each training prompt in a randomly chosen camera-motion sentence (or
leaves it bare) so the LoRA learns 3D-consistent videos for many trajectories, not only the orbit
template used at inference. These are our own templates in the same spirit; ``{p}`` is the prompt
in backticks, as in the released inference template (:data:`vist3a.wan.CAMERA_TEMPLATE`, included).
"""

from __future__ import annotations

import random

from vist3a.wan.prompts import CAMERA_TEMPLATE

__all__ = ["CAMERA_PROMPTS", "augment_camera_prompt"]

CAMERA_PROMPTS = (
    "{p}",
    CAMERA_TEMPLATE.replace("`{prompt}`", "{p}"),
    "A slow orbit around the subject keeps it centred while the background turns: {p}.",
    "The camera circles the scene at a steady height, showing it from every side: {p}.",
    "The camera pans slowly from left to right across {p}.",
    "A smooth right-to-left pan sweeps over {p}, revealing its full width.",
    "The camera dollies forward towards the centre of {p}.",
    "The camera pulls back gently to reveal the whole of {p}.",
    "The view tilts upward from the ground, taking in the height of {p}.",
    "The view tilts down from above onto {p}.",
    "A drone-like flight glides over {p}, low and steady.",
    "The camera rises like a crane shot, lifting to an overview of {p}.",
    "The camera moves along a gentle arc past {p}, changing the parallax of near and far objects.",
    "A half circle around {p} shows the front and then the side.",
    "The camera spirals slowly upward around {p}.",
    "A steady tracking shot moves sideways alongside {p}.",
    "A handheld walk-through explores {p} from a human point of view.",
    "The camera zooms in slowly on the middle of {p}.",
)


def augment_camera_prompt(prompt: str, rng: random.Random) -> str:
    """The prompt alone (first template) or wrapped, in backticks, in a camera-motion sentence."""
    template = rng.choice(CAMERA_PROMPTS)
    return prompt if template == "{p}" else template.format(p=f"`{prompt}`")
