"""The one error type for bad user input (levels, paths, sessions, checkpoints, command-line values).

Its message is a single line that names the file and the field, e.g.
    levels/meadow.toml: scene.fog.density: must be between 0 and 1, got 3.0
The command line prints it as it is and exits with code 2.
"""
import json


class InputError(ValueError):
    """Bad input from a user-supplied file or argument; the message names the file and the field."""

    def __init__(self, source, field: str | None, problem: str):
        where = f"{source}: {field}" if field else f"{source}"
        super().__init__(f"{where}: {problem}")
        self.source, self.field, self.problem = str(source), field, problem

    def __reduce__(self):  # pickles whole (a world's child process sends its errors to the game)
        return InputError, (self.source, self.field, self.problem)


def parse_json(text: str, source, field: str | None):
    """json.loads, where text that is not JSON is an InputError naming the source and the field."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(source, field, f"not valid JSON ({e})") from None
