"""miniai: a small PyTorch training framework in the fast.ai style.

`from miniai import *` gives every public name.

Heavy stacks (Hugging Face `datasets`, `matplotlib.pyplot`, fastprogress, torcheval) load only when used.
"""

import warnings as _warnings
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from .accel import *
from .callbacks import *
from .checkpoint import *
from .compare import *
from .data import *
from .device import *
from .distributed import *
from .guards import *
from .hooks import *
from .learner import *
from .lr_finder import *
from .metrics import *
from .models import *
from .param_sched import *
from .plot import *
from .progress import *
from .sched import *
from .schedulers import *
from .transfer import *
from .vision import *

# torcheval (imported when first used) calls the deprecated torch.jit.script as it loads; its users can do nothing
# about that, so that one warning is not shown.
_warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)

try:
    __version__ = _version('miniai')
except _PackageNotFoundError:  # a source checkout that is not installed: read the single source of truth
    from .settings import project_settings
    __version__ = project_settings()['version']
