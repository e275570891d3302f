"""Numba kernels of the OpenIGTLink codec: CRC-64/ECMA-182.

OpenIGTLink checks every message body with CRC-64/ECMA-182: polynomial 0x42F0E1EBA9EA3693,
most significant bit first (not reflected), initial value 0, no final XOR; check value of
``b"123456789"`` = 0x6C40DF5F0B497347. Linear and with init 0, it composes:
``crc(A || B) = shift(crc(A), len(B)) ^ crc(B)`` where ``shift`` multiplies by x^(8·len(B))
modulo the polynomial. The kernel uses that to run two independent slicing-by-8 chains over
the two halves of a buffer at once (the CPU overlaps their table look-ups), then joins them.

All kernels are pure functions on arrays, ``nogil=True`` so a receiving thread does not hold
the GIL while it checks a large IMAGE, and ``cache=True``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: CRC-64/ECMA-182 polynomial (x^64 term implicit).
POLY = np.uint64(0x42F0E1EBA9EA3693)
#: CRC of b"123456789" (the catalogue check value).
CHECK_VALUE = 0x6C40DF5F0B497347

# Buffers shorter than this are done with one chain (the join costs ~64 steps).
_SPLIT_MIN_BYTES = 4096


def make_tables() -> np.ndarray:
    """Slicing-by-8 tables, shape (8, 256) uint64.

    ``T[0][b]`` is the CRC of the single byte ``b`` (the classic byte-wise table);
    ``T[k][b]`` is the CRC of byte ``b`` followed by ``k`` zero bytes.
    """
    poly = int(POLY)
    mask = (1 << 64) - 1
    tables = np.zeros((8, 256), dtype=np.uint64)
    for b in range(256):
        crc = b << 56
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & (1 << 63) else (crc << 1) & mask
        tables[0, b] = crc
    for k in range(1, 8):
        for b in range(256):
            prev = int(tables[k - 1, b])
            tables[k, b] = ((prev << 8) & mask) ^ int(tables[0, prev >> 56])
    return tables


TABLES = make_tables()


@nb.njit(cache=True, nogil=True, inline="always")
def _chain(data: np.ndarray, start: int, stop: int, crc: np.uint64, t: np.ndarray) -> np.uint64:
    """Slicing-by-8 over ``data[start:stop]`` continuing from ``crc``."""
    i = start
    end8 = start + ((stop - start) // 8) * 8
    while i < end8:
        word = (
            (np.uint64(data[i]) << np.uint64(56))
            | (np.uint64(data[i + 1]) << np.uint64(48))
            | (np.uint64(data[i + 2]) << np.uint64(40))
            | (np.uint64(data[i + 3]) << np.uint64(32))
            | (np.uint64(data[i + 4]) << np.uint64(24))
            | (np.uint64(data[i + 5]) << np.uint64(16))
            | (np.uint64(data[i + 6]) << np.uint64(8))
            | np.uint64(data[i + 7])
        )
        crc ^= word
        crc = (
            t[7, (crc >> np.uint64(56)) & np.uint64(0xFF)]
            ^ t[6, (crc >> np.uint64(48)) & np.uint64(0xFF)]
            ^ t[5, (crc >> np.uint64(40)) & np.uint64(0xFF)]
            ^ t[4, (crc >> np.uint64(32)) & np.uint64(0xFF)]
            ^ t[3, (crc >> np.uint64(24)) & np.uint64(0xFF)]
            ^ t[2, (crc >> np.uint64(16)) & np.uint64(0xFF)]
            ^ t[1, (crc >> np.uint64(8)) & np.uint64(0xFF)]
            ^ t[0, crc & np.uint64(0xFF)]
        )
        i += 8
    while i < stop:
        crc = t[0, ((crc >> np.uint64(56)) ^ np.uint64(data[i])) & np.uint64(0xFF)] ^ (
            crc << np.uint64(8)
        )
        i += 1
    return crc


@nb.njit(cache=True, nogil=True)
def _gf_mulmod(a: np.uint64, b: np.uint64) -> np.uint64:
    """a·b modulo the CRC polynomial, in GF(2)[x] (both < x^64)."""
    result = np.uint64(0)
    poly = np.uint64(0x42F0E1EBA9EA3693)
    top = np.uint64(1) << np.uint64(63)
    for bit in range(63, -1, -1):
        # result = result·x mod P, then add a if bit set in b (Horner over b's bits)
        result = ((result << np.uint64(1)) ^ poly) if result & top else (result << np.uint64(1))
        if (b >> np.uint64(bit)) & np.uint64(1):
            result ^= a
    return result


@nb.njit(cache=True, nogil=True)
def _x_pow_8n(n_bytes: int) -> np.uint64:
    """x^(8·n_bytes) modulo the polynomial (square and multiply)."""
    result = np.uint64(1)
    base = np.uint64(1) << np.uint64(8)  # x^8
    n = n_bytes
    while n > 0:
        if n & 1:
            result = _gf_mulmod(result, base)
        base = _gf_mulmod(base, base)
        n >>= 1
    return result


@nb.njit(cache=True, nogil=True)
def crc64_update(crc: np.uint64, data: np.ndarray, tables: np.ndarray) -> np.uint64:
    """Continue a CRC-64/ECMA-182 over ``data`` (uint8, 1-D, contiguous).

    Parameters
    ----------
    crc
        The CRC of everything before ``data`` (0 to start).
    data
        Bytes to add.
    tables
        :data:`TABLES`.

    Returns
    -------
    numpy.uint64
        CRC of the previous bytes followed by ``data``.
    """
    n = data.shape[0]
    if n < _SPLIT_MIN_BYTES:
        return _chain(data, 0, n, crc, tables)
    half = (n // 16) * 8
    # Two independent chains: A = data[:half] (continuing crc), B = data[half:] from 0.
    a = crc
    b = np.uint64(0)
    i = 0
    j = half
    t = tables
    while i < half:
        wa = (
            (np.uint64(data[i]) << np.uint64(56))
            | (np.uint64(data[i + 1]) << np.uint64(48))
            | (np.uint64(data[i + 2]) << np.uint64(40))
            | (np.uint64(data[i + 3]) << np.uint64(32))
            | (np.uint64(data[i + 4]) << np.uint64(24))
            | (np.uint64(data[i + 5]) << np.uint64(16))
            | (np.uint64(data[i + 6]) << np.uint64(8))
            | np.uint64(data[i + 7])
        )
        wb = (
            (np.uint64(data[j]) << np.uint64(56))
            | (np.uint64(data[j + 1]) << np.uint64(48))
            | (np.uint64(data[j + 2]) << np.uint64(40))
            | (np.uint64(data[j + 3]) << np.uint64(32))
            | (np.uint64(data[j + 4]) << np.uint64(24))
            | (np.uint64(data[j + 5]) << np.uint64(16))
            | (np.uint64(data[j + 6]) << np.uint64(8))
            | np.uint64(data[j + 7])
        )
        a ^= wa
        b ^= wb
        a = (
            t[7, (a >> np.uint64(56)) & np.uint64(0xFF)]
            ^ t[6, (a >> np.uint64(48)) & np.uint64(0xFF)]
            ^ t[5, (a >> np.uint64(40)) & np.uint64(0xFF)]
            ^ t[4, (a >> np.uint64(32)) & np.uint64(0xFF)]
            ^ t[3, (a >> np.uint64(24)) & np.uint64(0xFF)]
            ^ t[2, (a >> np.uint64(16)) & np.uint64(0xFF)]
            ^ t[1, (a >> np.uint64(8)) & np.uint64(0xFF)]
            ^ t[0, a & np.uint64(0xFF)]
        )
        b = (
            t[7, (b >> np.uint64(56)) & np.uint64(0xFF)]
            ^ t[6, (b >> np.uint64(48)) & np.uint64(0xFF)]
            ^ t[5, (b >> np.uint64(40)) & np.uint64(0xFF)]
            ^ t[4, (b >> np.uint64(32)) & np.uint64(0xFF)]
            ^ t[3, (b >> np.uint64(24)) & np.uint64(0xFF)]
            ^ t[2, (b >> np.uint64(16)) & np.uint64(0xFF)]
            ^ t[1, (b >> np.uint64(8)) & np.uint64(0xFF)]
            ^ t[0, b & np.uint64(0xFF)]
        )
        i += 8
        j += 8
    # j walked only over as many bytes as i; finish B's tail (n - 2·half bytes).
    b = _chain(data, j, n, b, tables)
    return _gf_mulmod(a, _x_pow_8n(n - half)) ^ b
