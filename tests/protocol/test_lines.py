"""LineSplitter: any chunking gives the same lines; over-long lines never use more memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strands_trio.protocol import LineSplitter, LineTooLong


def feed_in_chunks(splitter: LineSplitter, data: bytes, sizes: list[int]) -> list[object]:
    out: list[object] = []
    position = 0
    for size in sizes:
        out.extend(splitter.feed(data[position : position + size]))
        position += size
    out.extend(splitter.feed(data[position:]))
    return [bytes(x) if isinstance(x, bytes | bytearray) else x for x in out]


STREAM = b'{"a":1}\n{"b":2}\n\n{"c":3}\n{"partial'


@pytest.mark.parametrize(
    "sizes",
    [
        [],  # whole
        [1] * len(STREAM),  # byte by byte
        [7, 1, 9],  # a frame split across reads
        [17],  # two frames in one read, then the rest
    ],
)
def test_any_chunking_gives_the_same_lines(sizes: list[int]) -> None:
    """Lines come out whole and in order whatever the read boundaries; empty lines are skipped
    and the unfinished last line is held."""
    splitter = LineSplitter(100)
    assert feed_in_chunks(splitter, STREAM, sizes) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    assert splitter.buffered == len(b'{"partial')
    assert splitter.feed_eof() == b'{"partial'
    assert splitter.buffered == 0


def test_over_long_complete_line_is_reported_and_skipped() -> None:
    """A complete line over the limit is reported once; the lines around it survive."""
    splitter = LineSplitter(10)
    out = splitter.feed(b"short\n" + b"x" * 11 + b"\nafter\n")
    assert out == [b"short", LineTooLong(b"x" * 11, 10), b"after"]


def test_over_long_line_across_reads_is_never_buffered_whole() -> None:
    """A line that keeps growing without a newline is dropped as soon as it passes the limit;
    its remaining bytes are skipped up to the next newline, then splitting resumes."""
    splitter = LineSplitter(10)
    assert splitter.feed(b"ok\n12345") == [b"ok"]
    assert splitter.feed(b"678901") == [LineTooLong(b"12345678901", 10)]
    assert splitter.buffered == 0
    assert splitter.feed(b"more garbage without end") == []
    assert splitter.buffered == 0
    assert splitter.feed(b"still\nnext\n") == [b"next"]


def test_line_of_exactly_the_limit_is_accepted() -> None:
    """The limit is inclusive."""
    splitter = LineSplitter(5)
    assert splitter.feed(b"12345\n123") == [b"12345"]
    assert splitter.feed(b"45\n") == [b"12345"]


def test_limit_must_be_positive() -> None:
    """A zero limit is refused at construction."""
    with pytest.raises(ValueError, match="max_line_length"):
        LineSplitter(0)


@given(
    lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=20),
)
def test_chunking_never_changes_the_result(lines: list[bytes], cuts: list[int]) -> None:
    """Splitting the same stream at random points gives the lines of bytes.split."""
    data = b"".join(line + b"\n" for line in lines)
    splitter = LineSplitter(1000)
    position = 0
    out: list[bytes] = []
    for cut in sorted(cuts):
        chunk, position = data[position:cut], max(position, cut)
        out.extend(bytes(x) for x in splitter.feed(chunk))  # type: ignore[arg-type]
    out.extend(bytes(x) for x in splitter.feed(data[position:]))  # type: ignore[arg-type]
    assert out == [line for line in lines if line]


@given(st.lists(st.binary(max_size=64), max_size=50))
def test_memory_stays_bounded_whatever_arrives(chunks: list[bytes]) -> None:
    """Whatever bytes arrive, the splitter never holds more than its limit."""
    splitter = LineSplitter(16)
    for chunk in chunks:
        for item in splitter.feed(chunk):
            assert isinstance(item, LineTooLong) or len(item) <= 16
        assert splitter.buffered <= 16
