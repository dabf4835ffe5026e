"""Bounded reading: no file a group keeps can hang the kit, exhaust its memory or be read twice over.

Each case has its memory peak traced and its CPU time bounded: a refusal must come within a few
megabytes, however large the input pretends to be, and without the minutes an unbounded expansion
takes. The bound on time is a guard against a hang, loose enough for a loaded machine; how fast a
refusal comes is measured in bench/bench_profiles.py.
"""

import os
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from commonstack.stacks.reading import MAX_BYTES, MAX_DEPTH, MAX_NODES, ReadError, load_kit_yaml, load_yaml, read_text


def bounded(function, *args, seconds: float = 5, megabytes: float = 32):
    """function(*args), asserting that it took at most `seconds` of CPU and `megabytes` at peak."""
    tracemalloc.start()
    started = time.process_time()
    try:
        return function(*args)
    finally:
        spent = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        assert spent < seconds, f"{spent:.2f} s"
        assert peak < megabytes, f"{peak:.1f} MB"


def refusal(text: str, quote: bool = True) -> ReadError:
    with pytest.raises(ReadError) as caught:
        bounded(load_yaml, text, quote)
    assert "\n" not in caught.value.message and len(caught.value.message) < 200
    return caught.value


def laughs(levels: int, width: int = 10) -> str:
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ngroup: *a{levels - 1}\n"


def test_a_billion_laughs_is_refused_while_it_is_parsed():
    error = refusal(laughs(9))
    assert f"aliases expand to more than {MAX_NODES} values" in error.message and error.line == 5


def test_laughs_in_a_mapping_and_in_merge_keys_are_refused():
    text = "a: &a {x: 1, y: 2, z: 3, w: 4, v: 5, u: 6, t: 7, s: 8, r: 9, q: 10}\n"
    text += "".join(f"b{i}: &b{i} [{', '.join(['*a' if i == 0 else f'*b{i - 1}'] * 10)}]\n" for i in range(5))
    assert "aliases expand" in refusal(text).message
    merges = "a: &a {x: 1}\n" + "".join(
        f"m{i}: &m{i}\n  <<: [{', '.join(['*a' if i == 0 else f'*m{i - 1}'] * 10)}]\n  k{i}: 1\n" for i in range(6)
    )
    assert "aliases expand" in refusal(merges).message


def test_small_anchors_are_fine():
    data, _ = load_yaml("defaults: &host {user: root, port: 22}\nhosts:\n  - {<<: *host, name: a}\n  - *host\n")
    assert data["hosts"] == [{"user": "root", "port": 22, "name": "a"}, {"user": "root", "port": 22}]


def test_an_alias_inside_its_own_anchor_is_refused():
    assert "inside its own anchor" in refusal("a: &a [1, *a]\n").message
    assert "inside its own anchor" in refusal("a: &a {b: *a}\n").message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_deep_nesting_is_refused_without_recursion_errors(depth):
    assert "nest" in refusal("[" * depth + "]" * depth).message
    assert "nest" in refusal("".join("  " * i + "a:\n" for i in range(min(depth, 2000)))).message


def test_nesting_up_to_the_limit_is_read():
    data, _ = load_yaml("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    assert isinstance(data, list)


def test_too_many_values_are_refused_early():
    assert f"more than {MAX_NODES} values" in refusal("a: [" + "1," * 400_000 + "]").message
    assert f"more than {MAX_NODES} values" in refusal("".join(f"k{i}: {i}\n" for i in range(60_000))).message


@pytest.mark.parametrize(("text", "lines"), [
    ("a: 1\nb: 2\na: 3\n", "on lines 1 and 3"),
    ("{a: 1, a: 2}\n", "twice on line 1"),
    ("hosts:\n  - name: a\nhosts:\n  - name: b\n", "on lines 1 and 3"),
    ("x:\n  y: 1\n  'y': 2\n", "on lines 2 and 3"),
    ("1: a\ntrue: b\n", "on lines 1 and 2"),  # the same key once read (1 == True)
])
def test_duplicate_keys_name_both_lines(text, lines):
    error = refusal(text)
    assert "written" in error.message and lines in error.message


def test_duplicate_secret_names_are_refused_without_quoting_anything():
    error = refusal("smtp_password: hunter2\nsmtp_password: hunter3\n", quote=False)
    assert error.message.startswith("a key is written on lines 1 and 2") and "smtp_password" not in error.message


@pytest.mark.parametrize(("text", "what"), [
    ("a: " + "1" * 5000, "a value YAML cannot read"),
    ("a: 2024-13-45", "a value YAML cannot read: '2024-13-45'"),
    ("? [a]\n: 1\n", "a key that is a list or a mapping"),
    ("a: !!python/object/apply:os.system [id]\n", "could not determine a constructor"),
    ("a: 1\n---\nb: 2\n", "a second YAML document"),
    ("a: [unclosed\n", "malformed YAML"),
    ("a: \x07\n", "malformed YAML"),
])
def test_values_yaml_cannot_read_are_one_line(text, what):
    assert what in refusal(text).message


def test_secret_errors_never_quote_the_file():
    for text in ("password: [hunter2\n", "password: 2024-13-45\n", "? [hunter2]\n: 1\n"):
        assert "hunter2" not in refusal(text, quote=False).message and "2024" not in refusal(text, quote=False).message


# Files


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "stack.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ReadError, match="not a regular file"):
        bounded(read_text, fifo)  # opening a FIFO for reading would block until a writer came


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused(device):
    if not Path(device).exists():
        pytest.skip(f"{device} does not exist here")
    with pytest.raises(ReadError, match="not a regular file"):
        bounded(read_text, Path(device))


def test_a_folder_and_a_missing_file_are_named(tmp_path):
    with pytest.raises(ReadError, match="is a folder"):
        read_text(tmp_path)
    with pytest.raises(ReadError, match="file not found"):
        read_text(tmp_path / "nothing.yaml")


def test_a_large_file_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "stack.yaml"
    with big.open("wb") as handle:  # sparse: 10 GB that take no disk
        handle.truncate(10 * 1000**3)
    with pytest.raises(ReadError, match="larger than 1000 kB"):
        bounded(read_text, big)
    big.write_text("a: b\n" * (MAX_BYTES // 5 + 1))
    with pytest.raises(ReadError, match="larger than"):
        bounded(read_text, big)


def test_a_file_just_under_the_limit_is_read_quickly(tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text("# " + "x" * (MAX_BYTES - 100) + "\ngroup: g\n")
    data, _ = bounded(lambda: load_yaml(read_text(path)))
    assert data == {"group": "g"}


def test_text_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_bytes(b"group: g\ndomain: caf\xe9.org\n")
    with pytest.raises(ReadError, match="not UTF-8") as caught:
        read_text(path)
    assert caught.value.line == 2


def test_the_kits_own_yaml_files_read_the_same_through_libyaml():
    """versions.yaml and the templates' files.yaml are read with libyaml's loader: the same data
    as PyYAML's own safe loader gives."""
    from commonstack.rendering import TEMPLATES_DIR
    from commonstack.stacks.versions import VERSIONS_FILE

    files = [VERSIONS_FILE, *sorted(TEMPLATES_DIR.glob("*/files.yaml"))]
    assert len(files) > 3
    for path in files:
        assert load_kit_yaml(path) == yaml.safe_load(path.read_text()), path
