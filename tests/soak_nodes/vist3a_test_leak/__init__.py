"""A deliberately leaking ComfyUI node, loaded only by the soak test to prove it catches real leaks.

"Keep Forever" holds a reference to every value it receives (here: each generation's splats), which is
exactly the bug the soak test exists to find: memory that grows with every run until the server dies.
"""

_KEPT: list = []


class VIST3ATestKeepForever:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",), "run": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ()
    FUNCTION = "keep"
    OUTPUT_NODE = True
    CATEGORY = "VIST3A/testing"

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):  # accept any socket type (SPLAT, GAUSSIANS, ...)
        return True

    def keep(self, value, run):
        _KEPT.append(value)
        return {"ui": {"kept": [len(_KEPT)]}}


NODE_CLASS_MAPPINGS = {"VIST3ATestKeepForever": VIST3ATestKeepForever}
