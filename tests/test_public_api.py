import fedsilo


def test_all_names_resolve_and_are_sorted():
    assert fedsilo.__all__ == sorted(fedsilo.__all__)
    for name in fedsilo.__all__:
        assert getattr(fedsilo, name) is not None, name
