"""The official VIST3A prompt wording (``inference_t23d.py`` of the release).

The reward-aligned Wan LoRA was trained and evaluated with the user's text wrapped in an orbit
camera template and with one fixed negative prompt; generating without them gives noticeably
less 3D-consistent videos, so every front end uses these constants.
"""

from __future__ import annotations

__all__ = ["CAMERA_TEMPLATE", "NEGATIVE_PROMPT", "build_prompt", "empty_prompt_note"]

# Note the backticks around the user's text: they are part of the released template.
CAMERA_TEMPLATE = (
    "The camera rotates around the scene, maintaining constant distance: `{prompt}`. "
    "The orbiting trajectory captures 3D structure and consistency."
)

NEGATIVE_PROMPT = (
    "Background blur, Blurred background, Blurred scene, Artifacts, not aesthetic, not realistic, "
    "rendered noise, low quality movement, low quality video, low quality image, deformed, disfigured, "
    "distorted, extra limbs, cloned face, skinny, glitchy, double torso, extra arms, extra hands, "
    "mangled fingers, missing lips, ugly face, distorted legs, fused fingers, too many fingers, long neck"
)


def build_prompt(prompt: str, camera_template: bool = True) -> str:
    """Return the text actually sent to the text encoder.

    With ``camera_template`` the prompt is embedded in :data:`CAMERA_TEMPLATE` exactly as the
    official inference does; without it the prompt is passed through unchanged (for users who
    write their own camera wording).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if not camera_template:
        return prompt
    return CAMERA_TEMPLATE.format(prompt=prompt)


def empty_prompt_note(prompt: str, camera_template: bool = True) -> str | None:
    """A warning when the scene prompt is empty (or only spaces), else None.

    An empty prompt is allowed (it still conditions on the camera template and is guided away from the
    negative prompt), but it is almost always a slip that costs a whole run: every front end shows this.
    """
    if prompt.strip():
        return None
    source = ("the camera template alone ('The camera rotates around the scene...')" if camera_template
              else "no text at all (the camera template is off)")
    return (f"The prompt is empty: the scene comes from {source}, guided away from the negative prompt; "
            "write what the scene should contain.")
