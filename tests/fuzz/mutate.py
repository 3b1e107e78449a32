"""Seeded mutations of real files: text (lines and numbers) and binary (bytes).

Every mutation is a pure function of its input and a ``random.Random``, so a case is rebuilt
from (reader, seed file, case number) alone.
"""
import re

NUMBERS = ("0", "-1", "3", "999999999")
_NUMBER = re.compile(rb"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _lines(data):
    return data.split(b"\n")


def delete_line(data, rng):
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"\n".join(lines)


def duplicate_line(data, rng):
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return b"\n".join(lines)


def swap_lines(data, rng):
    lines = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def set_number(data, rng):
    found = list(_NUMBER.finditer(data))
    if not found:
        return flip_char(data, rng)
    m = rng.choice(found)
    return data[:m.start()] + rng.choice(NUMBERS).encode() + data[m.end():]


def flip_char(data, rng):
    if not data:
        return b"{"
    i = rng.randrange(len(data))
    return data[:i] + bytes([rng.choice(b"{}:\"'#\n 0-xZ\x00\xff")]) + data[i + 1:]


TEXT = (delete_line, duplicate_line, swap_lines, set_number, set_number, flip_char)


def mutate_text(data, rng, rounds=None):
    """1-3 text mutations: a line deleted, duplicated or swapped, a number set to 0, -1, 3 or
    999999999, a character flipped."""
    for _ in range(rounds or rng.randint(1, 3)):
        data = rng.choice(TEXT)(data, rng)
    return data


def truncate(data, rng):
    return data[:rng.randrange(len(data))] if data else data


def bit_flips(data, rng):
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _run(data, rng, byte):
    if not data:
        return data
    i = rng.randrange(len(data))
    n = rng.randint(1, min(64, len(data) - i))
    return data[:i] + bytes([byte]) * n + data[i + n:]


def ff_run(data, rng):
    return _run(data, rng, 0xFF)


def zero_run(data, rng):
    return _run(data, rng, 0x00)


def duplicate_slice(data, rng):
    if not data:
        return data
    i = rng.randrange(len(data))
    n = rng.randint(1, min(256, len(data) - i))
    j = rng.randrange(len(data) + 1)
    return data[:j] + data[i:i + n] + data[j:]


def set_varint(data, rng):
    """A byte that may start a length or count set to a huge varint (absurd declared sizes)."""
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + rng.choice((b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x01",
                                  b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")) + data[i + 1:]


BINARY = (truncate, bit_flips, bit_flips, ff_run, zero_run, duplicate_slice, set_varint)


def mutate_binary(data, rng, rounds=None):
    """1-2 binary mutations: truncation, bit flips, 0xff runs, zeroed runs, duplicated slices,
    huge varints."""
    for _ in range(rounds or rng.randint(1, 2)):
        data = rng.choice(BINARY)(data, rng)
    return data
