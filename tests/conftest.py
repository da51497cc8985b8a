import os

import torch

# ncd whole, in the pytest-xdist controller too, before any worker reports: the controller rebuilds each warning a
# worker reports by importing its category's module in the thread that reads that worker, so two workers reporting ncd
# warnings (PrecisionWarning, MissingGlyphWarning, ...) at once imported ncd in two threads at the same time, and one
# met ncd.ir.checks partly initialised (an INTERNALERROR that took both workers down: a fresh clone's run after
# d421b8f). Imported here with the two modules that define ncd's warnings and that `import ncd` leaves out, nothing is
# left to import then.
import ncd  # noqa: F401
import ncd.prims.precision  # noqa: F401
import ncd.render.raster  # noqa: F401

os.environ.setdefault("HYPOTHESIS_PROFILE", "ci")
torch.set_num_threads(1)
