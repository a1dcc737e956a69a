"""Networks of vstain and the name → constructor registry used by configs.

* ``tiramisu``: FC-DenseNet generator (C2 lipids / C3 cytoplasm), :class:`Tiramisu`.
* ``lupi``: segmentation-guided nuclei network (C1), :class:`LupiTiramisu`.
* ``patchgan``: conditional PatchGAN discriminator, :class:`PatchGAN`.
* ``tiramisu_multi``: one encoder → all three stains, :class:`MultiTiramisu`.

``build_model(name, **overrides)`` builds one (the reference configuration by default);
``model_arguments(name)`` lists its arguments and defaults.
"""

from vstain.models.lupi import LupiTiramisu
from vstain.models.multi import MultiTiramisu
from vstain.models.patchgan import PatchGAN
from vstain.models.registry import MODEL_NAMES, MODELS, build_model, model_arguments
from vstain.models.tiramisu import Tiramisu, TiramisuDecoder, TiramisuEncoder

__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "build_model",
    "model_arguments",
    "Tiramisu",
    "TiramisuEncoder",
    "TiramisuDecoder",
    "LupiTiramisu",
    "PatchGAN",
    "MultiTiramisu",
]
