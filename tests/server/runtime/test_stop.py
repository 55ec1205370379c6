"""Stop strings: earliest match, held-back prefixes, trimming."""
from __future__ import annotations

from server.runtime.stop import StopStrings, trim_at_stop


def test_find_earliest_match_over_all_stop_strings() -> None:
    s = StopStrings(["###", "USER:", ""])
    assert s.stops == ("###", "USER:")
    assert s.find("answer USER: more ### x") == (7, "USER:")
    assert s.find("answer ### USER:") == (7, "###")
    assert s.find("no stop here") is None


def test_find_from_offset_still_sees_matches_spanning_it() -> None:
    s = StopStrings(["###"])
    text = "abc ##"
    assert s.find(text) is None
    assert s.find(text + "# tail", start=len(text)) == (4, "###")


def test_safe_length_holds_back_possible_stop_prefixes() -> None:
    s = StopStrings(["###", "</s>"])
    assert s.safe_length("Hello ##") == len("Hello ")
    assert s.safe_length("Hello #") == len("Hello ")
    assert s.safe_length("Hello </") == len("Hello ")
    assert s.safe_length("Hello #x") == len("Hello #x")
    assert s.safe_length("") == 0
    assert StopStrings([]).safe_length("abc#") == 4


def test_trim_at_stop() -> None:
    s = StopStrings(["</s>", "\n\n"])
    assert trim_at_stop("The liver.</s> junk", s) == ("The liver.", "</s>")
    assert trim_at_stop("Line\n\nNext", s) == ("Line", "\n\n")
    assert trim_at_stop("plain", s) == ("plain", None)
    assert trim_at_stop("plain", StopStrings()) == ("plain", None)
