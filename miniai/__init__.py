"""miniai: a small PyTorch training framework in the fast.ai style.

`from miniai import *` gives every public name.

Heavy optional stacks (Hugging Face `datasets`, `matplotlib.pyplot`, fastprogress) load only when used.
"""

import warnings as _warnings
from importlib import import_module as _import_module
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

with _warnings.catch_warnings():  # torcheval's import calls the deprecated torch.jit.script
    _warnings.simplefilter('ignore', FutureWarning)
    _import_module('torcheval.metrics')

from .accel import *
from .callbacks import *
from .checkpoint import *
from .compare import *
from .data import *
from .device import *
from .distributed import *
from .early_stopping import *
from .guards import *
from .hooks import *
from .learner import *
from .lr_finder import *
from .lsuv import *
from .metrics import *
from .models import *
from .no_trace import *
from .param_sched import *
from .plot import *
from .preds import *
from .progress import *
from .recipes import *
from .sched import *
from .schedulers import *
from .summary import *
from .transfer import *
from .vision import *

try:
    __version__ = _version('miniai')
except _PackageNotFoundError:  # a source checkout that is not installed: read the single source of truth
    from .settings import project_settings
    __version__ = project_settings()['version']
