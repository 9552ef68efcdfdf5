from sandbox.results import CappedBuffer


def test_capped_buffer_keeps_head_and_tail_and_marks_the_cut() -> None:
    buf = CappedBuffer(100)
    for i in range(1000):
        buf.write(f"{i:05d}\n".encode())
    text = buf.text()
    assert buf.truncated and buf.total == 6000
    assert text.startswith("00000\n")
    assert text.rstrip().endswith("00999")
    assert "bytes truncated" in text
    assert len(buf.head) + len(buf.tail) <= 100


def test_small_output_is_kept_whole() -> None:
    buf = CappedBuffer(100)
    buf.write(b"hello\n")
    assert not buf.truncated and buf.text() == "hello\n"


def test_memory_stays_bounded_for_huge_writes() -> None:
    buf = CappedBuffer(1024)
    for _ in range(100):
        buf.write(b"x" * 1_000_000)
    assert len(buf.head) + len(buf.tail) == 1024 and buf.total == 100_000_000
