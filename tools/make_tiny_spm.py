"""Re-create the shipped tiny sentencepiece model, ``vist3a/wan/tokenizer_data/tiny_umt5_spiece.model``.

Not needed to use or test the project (the model file is committed); kept so the file's provenance is
reproducible: ``python tools/make_tiny_spm.py [--out PATH]``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Union

import sentencepiece

from vist3a.wan.tiny import TINY_SPM_PATH

# Training text for the tiny sentencepiece model: the words our prompts actually use.
SPM_CORPUS = """\
The camera rotates around the scene, maintaining constant distance. The orbiting trajectory captures 3D structure and consistency.
Background blur, Blurred background, Blurred scene, Artifacts, not aesthetic, not realistic, rendered noise, low quality movement.
low quality video, low quality image, deformed, disfigured, distorted, extra limbs, cloned face, skinny, glitchy, double torso.
extra arms, extra hands, mangled fingers, missing lips, ugly face, distorted legs, fused fingers, too many fingers, long neck.
a red car parked on a quiet street at sunset, a wooden table with a bowl of fruit, a small house in a snowy forest.
a statue of a lion in a park, a cozy living room with a sofa and a lamp, an old castle on a hill under a blue sky.
a vase of flowers on a kitchen counter, a bicycle leaning against a brick wall, a sailing boat on a calm lake.
a teddy bear sitting on a bed, a garden with stone paths and green trees, a city square with a fountain.
one two three four five six seven eight nine ten, photo realistic, high detail, bright light, soft shadows.
"""


def train_tiny_spm(path: Union[str, Path] = TINY_SPM_PATH, vocab_size: int = 256) -> Path:
    """(Re)create the shipped tiny sentencepiece model: unigram, T5 ids (pad 0, eos 1, unk 2).

    Identity normalisation keeps the file a few KB (an NFKC table would add ~240 KB); the NFKC
    path of :func:`vist3a.wan.tokenizer.tokenizer_from_spm` is tested with a model trained in the test.
    """
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_CORPUS.splitlines()), model_writer=buf, vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="identity",
        character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(TINY_SPM_PATH))
    print(train_tiny_spm(parser.parse_args().out))
