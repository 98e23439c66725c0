"""Shared code of the training scripts: config, distributed setup, engines (DeepSpeed ZeRO or plain
torch), atomic checkpoints with resume, data, losses, LoRA, EMA, rewards and exports."""
