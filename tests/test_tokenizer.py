import pytest

from gpt2.data.tokenizer import CharTokenizer, GPT2Tokenizer, build_tokenizer, tokenizer_from_state
from gpt2.errors import DataError

from conftest import MIRROR


def test_gpt2_matches_openai_ids(tmp_path):
    enc = GPT2Tokenizer(tmp_path, MIRROR)
    assert enc.vocab_size == 50257 and enc.eot_token == 50256
    assert enc.encode("Hello world") == [15496, 995]
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    assert enc.decode(enc.encode(text)) == text
    assert enc.encode("<|endoftext|>") != [50256]  # ordinary text, never a special token


def test_char_tokenizer_roundtrip_and_state(tmp_path):
    enc = build_tokenizer("char", "hello world", tmp_path)
    assert enc.vocab_size == 8 and enc.chars == " dehlorw"
    assert enc.decode(enc.encode("world hello")) == "world hello"
    again = tokenizer_from_state(enc.state(), tmp_path)
    assert again.encode("lower") == enc.encode("lower")
    with pytest.raises(ValueError, match="'z' is not in this char vocabulary"):
        enc.encode("z")


def test_unknown_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer 'bpe'"):
        build_tokenizer("bpe", "", tmp_path)


def test_char_tokenizer_is_sorted():
    assert CharTokenizer.from_text("cab").encode("abc") == [0, 1, 2]


@pytest.mark.parametrize("state, problem", [
    ("gpt2", 'tokenizer: "gpt2" is not an object'),
    ({"name": "bpe"}, 'tokenizer.name: "bpe" is not a tokenizer this harness knows (gpt2 or char)'),
    ({"name": "char", "vocab_size": 3}, "tokenizer.chars: missing (a char tokenizer's characters)"),
    ({"name": "char", "chars": 65}, "tokenizer.chars: 65 is not a non-empty string of characters"),
    ({"name": "char", "chars": "abca"}, "tokenizer.chars: holds 'a' more than once"),
    ({"name": "char", "chars": "ba"}, "tokenizer.chars: is not in sorted order (a char tokenizer's ids are its "
                                      "characters in sorted order)"),
    ({"name": "gpt2", "vocab_size": 50304}, "tokenizer.vocab_size: 50304 is not 50257 (its gpt2 vocabulary)"),
])
def test_a_tokenizer_state_that_describes_none_is_one_line_naming_the_field(tmp_path, state, problem):
    """A checkpoint's or a manifest's tokenizer state (read_manifest prefixes the manifest's path)."""
    with pytest.raises(DataError) as err:
        tokenizer_from_state(state, tmp_path)
    assert str(err.value) == f"{problem}: this tokenizer state cannot be rebuilt"
