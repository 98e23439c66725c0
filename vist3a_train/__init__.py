"""VIST3A training backend: layer search, stitched fine-tune and reward alignment.

Scripts (each runs under ``torchrun`` or ``deepspeed``, on CPU with gloo or on GPUs with nccl):

* ``vist3a_train/find_layer.py`` -- ridge-regression layer search for the stitching conv;
* ``vist3a_train/stitch.py`` -- LoRA fine-tune of the stitched AnySplat decoder (distillation);
* ``vist3a_train/align.py`` -- reward alignment of Wan with a LoRA (flow matching + reward).

Shared code lives in :mod:`vist3a_train.common`; see ``vist3a_train/README.md``.
"""
