import os

import torch

os.environ.setdefault("HYPOTHESIS_PROFILE", "ci")
torch.set_num_threads(1)
