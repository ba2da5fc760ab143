import os

# Tests run headless on two cores: keep torch from oversubscribing them and SDL from looking for a screen.
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import torch  # noqa: E402

torch.set_num_threads(2)
