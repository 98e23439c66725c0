"""Run Size: one dropdown that sets every size of a workflow, the official one or a quick try for CPUs.

The shipped workflows wire its outputs into the widgets they set (Sample's steps, frames, width and height,
KSampler's steps and the empty latent's size, Render Views' views and size, Images to Splats' views and
size), so a new user on a CPU changes one value instead of finding nine; the values come from
vist3a.run_sizes, the same numbers the time estimates advise.
"""

from __future__ import annotations

from comfy_api.latest import io

from vist3a.run_sizes import OFFICIAL, QUICK, RUN_SIZES

from .errors import NodeError, friendly
from .sockets import CATEGORY

CHOICES = list(RUN_SIZES)
DEFAULT = next(name for name, size in RUN_SIZES.items() if size == OFFICIAL)


def _values(size) -> str:
    return (f"{size.steps} steps, {size.frames} frames at {size.size}², {size.views} views at {size.view_size}², "
            f"AnySplat {size.max_views} views at {size.anysplat_size}²")


class RunSize(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VIST3ARunSize",
            display_name="Run Size (VIST3A)",
            category=CATEGORY,
            description="Sets the sizes of the whole workflow at once: the official settings, or a quick try that "
                        "finishes on a CPU. Connect its outputs to the widgets they set (Sample, KSampler, the empty "
                        "latent, Render Views, Images to Splats).",
            inputs=[
                io.Combo.Input("run", options=CHOICES, default=DEFAULT,
                               tooltip=f"official (GPU): {_values(OFFICIAL)}. quick try (CPU): {_values(QUICK)}; "
                                       "on a CPU the official sizes take hours with the real models."),
            ],
            outputs=[
                io.Int.Output(display_name="steps", tooltip="Denoising steps (Sample, KSampler)."),
                io.Int.Output(display_name="frames", tooltip="Video frames, 4k+1 (Sample; the empty latent's length)."),
                io.Int.Output(display_name="size", tooltip="Video width and height in pixels (Sample, the empty latent)."),
                io.Int.Output(display_name="views", tooltip="Rendered orbit views (Render Views)."),
                io.Int.Output(display_name="view size", tooltip="Rendered view width and height (Render Views)."),
                io.Int.Output(display_name="max views", tooltip="Views AnySplat reconstructs from (Images to Splats)."),
                io.Int.Output(display_name="AnySplat size", tooltip="AnySplat working resolution (Images to Splats)."),
            ],
        )

    @classmethod
    @friendly("Run Size")
    def execute(cls, run) -> io.NodeOutput:
        s = RUN_SIZES.get(run)
        if s is None:
            raise NodeError(f"Run Size '{run}' is not known; pick one of: {', '.join(CHOICES)}.")
        return io.NodeOutput(s.steps, s.frames, s.size, s.views, s.view_size, s.max_views, s.anysplat_size)


NODES = [RunSize]
