"""Stop sequences and incremental UTF-8, as backends stream them."""

from __future__ import annotations

from llama_gpu.plugins.backends.text import StopBuffer


def stream(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    buffer, out = StopBuffer(stops), []
    for piece in pieces:
        text, stopped = buffer.push(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + buffer.flush(), False


def test_stop_sequence_split_across_pieces_is_never_emitted() -> None:
    assert stream(["###"], ["Hello #", "#", "# world"]) == ("Hello ", True)
    assert stream(["\n\n"], ["a\n", "\nb"]) == ("a", True)


def test_held_text_is_released_when_it_is_not_a_stop() -> None:
    assert stream(["###"], ["a #", "# b"]) == ("a ## b", False)
    assert stream(["END"], ["the E", "N"]) == ("the EN", False)


def test_first_of_several_stops_wins() -> None:
    assert stream(["b", "a"], ["xxab"]) == ("xx", True)


def test_no_stops_passes_everything_through() -> None:
    buffer = StopBuffer([])
    assert buffer.push("abc") == ("abc", False)


def test_incomplete_utf8_waits_for_the_rest() -> None:
    buffer = StopBuffer([])
    euro = "€".encode()
    assert buffer.push_bytes(euro[:1]) == ("", False)
    assert buffer.push_bytes(euro[1:]) == ("€", False)
    assert buffer.push_bytes(b"\xff") == ("\ufffd", False)
