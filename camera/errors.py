"""The one error type for bad user input (levels, paths, sessions, checkpoints, command-line values).

Its message is a single line that names the file and the field, e.g.
    levels/meadow.toml: scene.fog.density: must be between 0 and 1, got 3.0
The command line prints it as it is and exits with code 2.
"""
import datetime
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shlex
import stat
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib


def is_number(v) -> bool:
    """A real number as a parsed JSON or TOML value holds one: int or float (not bool), finite. (JSON's integers
    have no bound: one past a float's range is not a number here, where math.isfinite would raise.)"""
    if isinstance(v, int) and not isinstance(v, bool):
        return abs(v) <= sys.float_info.max
    return isinstance(v, float) and math.isfinite(v)


MAX_PROBLEM_CHARS = 600  # a long value quoted in a problem is cut in the middle; every message of ours fits


def _cut(text: str) -> str:
    """Text over MAX_PROBLEM_CHARS, cut in the middle."""
    return text if len(text) <= MAX_PROBLEM_CHARS else text[:MAX_PROBLEM_CHARS - 20] + " ... " + text[-15:]


# What would break a message's line or hide in it: ASCII's and Latin-1's control characters (a newline, a NUL, an
# escape sequence) and Unicode's line and paragraph separators.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """Text with its control characters written as Python writes them in a string (a newline as \\n, a NUL as \\x00):
    one line that shows what is there. Text without any (every ordinary name) is returned as it is."""
    return CONTROL_CHARACTERS.sub(lambda m: repr(m.group())[1:-1], text)


def shell_word(text: str) -> str:
    """`text` quoted for a shell, on one line: a name with a control character in it (a newline) is written in the
    $'...' form of bash, zsh and POSIX 2024 with the character escaped, where shlex.quote keeps it raw and breaks
    the line a hint is printed on."""
    if not CONTROL_CHARACTERS.search(text):
        return shlex.quote(text)

    def escaped(c: str) -> str:
        if c in "\\'":
            return "\\" + c
        if CONTROL_CHARACTERS.fullmatch(c):
            return f"\\x{ord(c):02x}" if ord(c) < 0x80 else f"\\u{ord(c):04x}"
        return c
    return "$'" + "".join(map(escaped, text)) + "'"


class InputError(ValueError):
    """Bad input from a user-supplied file or argument; the message names the file and the field."""

    def __init__(self, source, field: str | None, problem: str):
        # Escaped here, once for every caller: a file named "x\ny.toml" (or a path holding it quoted in the problem,
        # or a key read from a file) printed two lines, the first a bare "x".
        shown = _cut(escape_controls(str(source)))  # a 5000-letter name given
        where = f"{shown}: {escape_controls(field)}" if field else shown
        problem = _cut(escape_controls(problem))  # a value quoted whole (a 400-digit number, a long list): one line
        super().__init__(f"{where}: {problem}")
        self.source, self.field, self.problem = str(source), field, problem

    def __reduce__(self):  # pickles whole (a world's child process sends its errors to the game)
        return InputError, (self.source, self.field, self.problem)


TOO_DEEP = "it is nested too deeply (brackets or braces inside each other hundreds of levels deep)"


def parse_json(text: str, source, field: str | None):
    """json.loads, where text that is not JSON is an InputError naming the source and the field."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(source, field, f"not valid JSON ({e})") from None
    except ValueError:  # an integer of more digits than Python converts (4300): its advice is for programmers
        raise InputError(source, field, "not valid JSON for us: it holds an integer of over 4300 digits") from None
    except RecursionError:  # "[[[[..." a thousand deep: the parser recurses once a level
        raise InputError(source, field, f"not valid JSON for us: {TOO_DEEP}") from None


MAX_TEXT_BYTES = 2**30  # a level, path or manifest is far smaller, and so is the log of a day's play


def read_text(file, missing: str = "no such file") -> str:
    """A user's text file as a string, where every way of not being readable UTF-8 text (missing, a
    folder, a device or pipe, too big, no permission, other bytes) is an InputError naming the file.
    A leading byte-order mark, which some editors write, is dropped."""
    try:
        info = os.stat(file)
        if stat.S_ISDIR(info.st_mode):
            raise InputError(file, None, "is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):  # a pipe would block, a device never end
            raise InputError(file, None, "is not a regular file")
        if info.st_size > MAX_TEXT_BYTES:
            raise InputError(file, None, f"is {info.st_size / 2**20:.0f} MiB; at most {MAX_TEXT_BYTES // 2**20} "
                             "MiB are read")
        with open(file, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(file, None, missing) from None
    except OSError as e:
        raise InputError(file, None, f"cannot read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(file, None, f"not UTF-8 text (byte {e.start})") from None


def file_sha256(path) -> str:
    """A file's SHA-256 in hex (a checkpoint's pin, a session's level)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_toml(file, missing: str = "no such file") -> dict:
    """A user's TOML file (a level, a camera path) as a dict; unreadable or not TOML is an InputError naming it."""
    text = read_text(file, missing)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(file, None, f"not valid TOML: {e}") from None
    except ValueError:  # an integer of more digits than Python converts (4300): its advice is for programmers
        raise InputError(file, None, "not valid TOML for us: it holds an integer of over 4300 digits") from None
    except RecursionError:  # "a = [[[[..." a few hundred deep: the parser recurses once a level
        raise InputError(file, None, f"not valid TOML for us: {TOO_DEEP}") from None


def describe_value(v) -> str:
    """A value read from a file as a message names it: 'an array of 3', 'a table', "a string ('x')", 'a date
    (1979-05-27)' (TOML has dates, which Python's repr named datetime.date(1979, 5, 27))."""
    if isinstance(v, list):
        return f"an array of {len(v)}"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, (datetime.date, datetime.time)):
        return f"a date or time ({v.isoformat()})"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(type(v), type(v).__name__)
    return f"{kind} ({v!r})"


def partial_file(path: Path) -> Path:
    """A new, empty hidden file beside `path` to write it into before renaming it into place. Its name is its own (a
    user's file named as ours once were, .NAME.partial.EXT, was replaced and then removed) and short enough for the
    file system whatever the length of `path`'s."""
    while True:
        partial = path.with_name(f".{path.stem[:64]}.{secrets.token_hex(4)}.partial{path.suffix}")
        try:  # O_EXCL: made here or not at all; 0o666 less the umask, as the file it becomes would have been
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return partial
        except FileExistsError:
            continue


def write_replacing(path, write, field: str = "--out") -> None:
    """Write a file through `write(temporary path)` into a hidden file beside `path`, then rename it into place: a
    full disk, an error or Ctrl-C part-way leaves the file that was there before as it was. A write that fails
    for the disk's sake is an InputError naming `path` and `field`."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = partial_file(path)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise InputError(path, field, f"cannot write it: {e.strerror or e}") from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def unusable_name(path: Path) -> str | None:
    """Why nothing can be written at `path` or under it, as its name alone shows, or None: a link in it (itself or a
    folder above it) that leads to nothing or round to itself (making the folder there said "File exists"; resolving
    it, a traceback), or a name the file system refuses in any form ("File name too long")."""
    try:
        broken = next((p for p in (path, *path.parents) if p.is_symlink() and not p.exists()), None)
    except OSError as e:
        return e.strerror or str(e)
    return None if broken is None else f"{broken} is a link that leads nowhere (to nothing, or round to itself)"


def first_missing(path: Path) -> Path | None:
    """The topmost folder of `path` that does not exist yet (what making `path` makes), or None if it exists."""
    return next((p for p in reversed([path, *path.parents]) if not p.exists()), None)


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove `folder` and the folders above it up to `top` (`first_missing` before they were made), each only
    while it is empty: what a command made and then did not use."""
    for p in (folder, *folder.parents):
        try:
            p.rmdir()
        except OSError:
            return
        if p == top:
            return


def check_output_path(path, suffixes: tuple[str, ...], field: str = "--out") -> Path:
    """A file the command will write, refused before any work is done if it could not be: it must
    end in one of `suffixes` (the formats written), must not be a folder and must not lie under a file
    (missing folders are made when it is written)."""
    if not str(path).strip():  # Path("") is ".": the message named the current folder
        raise InputError("command line", field, f"is empty: give a file name ending in {' or '.join(suffixes)}")
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise InputError(path, field, f"must be a file name ending in {' or '.join(suffixes)}")
    unusable = unusable_name(path)
    if unusable is not None:
        raise InputError(path, field, unusable)
    if path.is_dir():
        raise InputError(path, field, "is a folder; give a file name")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise InputError(path, field, f"{parent} is a file, not a folder")
    check_writable(parent, path, field)
    return path


def refuse_overwriting(out: Path, inputs, field: str, advice: str) -> None:
    """InputError unless `out` is none of `inputs`, (what, path) pairs of the files the command reads, by whatever
    name leads there (a link, "new/../"): writing one would destroy what the output is made from."""
    for what, file in inputs:
        file = Path(file)
        if file.is_file() and (out.resolve() == file.resolve() or out.is_file() and out.samefile(file)):
            raise InputError(out, field, f"is {what}; {advice}")


def check_writable(folder: Path, source, field: str) -> None:
    """InputError naming `source` and `field` unless files can be made in `folder` (an existing folder)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(source, field, f"cannot write into {folder}")
    try:  # as root os.access says yes everywhere, /proc and /sys included: a file made and removed says for sure
        handle, probe = tempfile.mkstemp(prefix=".explorer-write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as e:  # /proc answers "no such file" for the one being made: said as what it means
        reason = "it takes no new files" if e.errno == errno.ENOENT else e.strerror or e
        raise InputError(source, field, f"cannot write into {folder} ({reason})") from None
