#!/usr/bin/env python3
"""Writes llama3_style/: a tiny tokenizer in the exact shape of Llama 3's
tokenizer.json (BPE with ignore_merges, its Split regex with \\p{N}{1,3},
no normalizer, ByteLevel, TemplateProcessing adding <|begin_of_text|>) so the
Llama 3 path is tested without the real 9 MB file. Run from this directory."""
import json


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()
vocab = {B2U[b]: b for b in range(256)}  # id of a single byte = the byte
merges = ["1 2", "3 4", "12 3", "4 5", "H e", "l l", "He ll", "Hell o", "Ġ w", "o r"]
for m in merges:
    a, b = m.split(" ")
    vocab.setdefault(a + b, len(vocab))
vocab["Ġworld"] = len(vocab)  # reachable only through ignore_merges
added = [
    {"id": 300, "content": "<|begin_of_text|>", "special": True},
    {"id": 301, "content": "<|eot_id|>", "special": True},
    {"id": 302, "content": "<|eom_id|>", "special": True},
    {"id": 303, "content": "<mask>", "special": False, "lstrip": True, "rstrip": True},
    {"id": 304, "content": "[X]", "special": False, "single_word": True},
]
for a in added:
    for k in ("single_word", "lstrip", "rstrip", "normalized"):
        a.setdefault(k, False)
regex = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
         "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
tokenizer = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
    "post_processor": {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [300], "tokens": ["<|begin_of_text|>"]}}}]},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
              "vocab": vocab, "merges": merges},
}
config = {
    "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "clean_up_tokenization_spaces": True,
    "chat_template": "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
                     "{{ m.content | trim }}<|eot_id|>{% endfor %}",
}
with open("llama3_style/tokenizer.json", "w") as f:
    json.dump(tokenizer, f, ensure_ascii=False)
with open("llama3_style/tokenizer_config.json", "w") as f:
    json.dump(config, f, ensure_ascii=False, indent=1)
with open("llama3_style/generation_config.json", "w") as f:
    json.dump({"bos_token_id": 300, "eos_token_id": [301, 302]}, f)
print(len(vocab), "vocab entries")
