"""storyloop: turn people's judgments of generated story frames into a better image model."""

import logging as _logging

__version__ = "0.1.0"

# diffusers imports torchao whenever it is installed (our int8/fp8 backend), and that import alone
# prints five lines a user cannot act on: CUDA-only kernels that do not load on a CPU build of
# torch, torch's deprecation notices for torchao's enums, and diffusers' note about torchao-
# serialised checkpoints (we never load those). Errors still show.
for _name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
