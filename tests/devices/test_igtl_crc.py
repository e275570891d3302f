"""CRC-64/ECMA-182 kernel against a bitwise reference and crcmod (pyigtl's CRC)."""

from __future__ import annotations

import crcmod
import numpy as np
import pytest
from igtl_helpers import MASK, POLY, crc64_bitwise

from usnav.igtl._kernels import CHECK_VALUE, TABLES, crc64_update, make_tables
from usnav.igtl.codec import crc64


def crc64_table_numpy(data: np.ndarray) -> int:
    """Reference: the byte-wise table form, T[(crc >> 56) ^ b] ^ (crc << 8)."""
    table = make_tables()[0]
    crc = 0
    for b in data.tolist():
        crc = int(table[((crc >> 56) ^ b) & 0xFF]) ^ ((crc << 8) & MASK)
    return crc


def test_catalogue_check_value_and_empty_input():
    assert crc64(b"123456789") == CHECK_VALUE == 0x6C40DF5F0B497347
    assert crc64_bitwise(b"123456789") == CHECK_VALUE
    assert crc64(b"") == 0


def test_first_table_entry_is_the_polynomial():
    assert int(TABLES[0, 1]) == POLY


@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 4095, 4096, 4097, 4104, 12_345])
def test_kernel_matches_references_across_lengths(n):
    rng = np.random.default_rng(n)
    data = rng.integers(0, 256, n, dtype=np.uint8)
    expected = crc64_table_numpy(data)
    assert crc64(data) == expected
    if n < 5000:
        assert crc64_bitwise(data.tobytes()) == expected


def test_kernel_matches_crcmod_on_a_frame_and_composes_incrementally():
    crcmod_fn = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, rev=False, initCrc=0, xorOut=0)
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, 512 * 512 + 72 + 12, dtype=np.uint8)
    whole = crc64(frame)
    assert whole == crcmod_fn(frame.tobytes())
    # Continuing a CRC over pieces (header parts, pixels, metadata) gives the same value.
    cut1, cut2 = 12, 84 + 1000
    running = crc64(frame[:cut1])
    running = crc64(frame[cut1:cut2], running)
    running = crc64(memoryview(frame[cut2:].tobytes()), running)
    assert running == whole
    assert int(crc64_update(np.uint64(0), frame, TABLES)) == whole


def test_every_kind_of_buffer_uses_the_one_kernel_that_warm_up_loads() -> None:
    """Numba compiles writable and read-only arrays separately; warm_up() loads the read-only
    one, so a writable buffer (a socket's bytearray) must not add a second compile: with a
    cold cache that compile took 6-12 s inside the first message's receive path."""
    from usnav.igtl._kernels import crc64_update
    from usnav.igtl.connection import warm_up

    warm_up()
    loaded = set(crc64_update.signatures)
    for data in (b"123456789", bytearray(b"123456789"), memoryview(bytearray(b"123456789"))):
        assert crc64(data) == 0x6C40DF5F0B497347
    crc64(np.frombuffer(bytearray(b"123456789"), np.uint8))
    assert set(crc64_update.signatures) == loaded
