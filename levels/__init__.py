"""The shipped levels (*.toml) and example camera paths (paths/*.toml)."""
from pathlib import Path

LEVELS_DIR = Path(__file__).resolve().parent
PATHS_DIR = LEVELS_DIR / "paths"
