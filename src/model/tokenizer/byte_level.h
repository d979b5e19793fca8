// The GPT-2 byte-level alphabet: every byte 0..255 is shown as one printable
// Unicode character so that a byte-level BPE vocabulary is a set of strings.
// Printable Latin-1 bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) map to
// themselves, the other 68 bytes to U+0100.. in byte order ("Ġ" is the space).
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace crescent::tokenizer {

// Code point that shows byte `b`.
char32_t ByteToChar(unsigned char b);

// Inverse of ByteToChar; nullopt for characters outside the alphabet.
std::optional<unsigned char> CharToByte(char32_t c);

// Bytes a vocabulary token stands for, as the ByteLevel decoder computes
// them: the bytes of its characters, or (when a character is outside the
// alphabet, as in an added token like "<|im_start|>" written in plain text)
// the token's own UTF-8 bytes.
std::string TokenToBytes(std::string_view token);

// The byte-level spelling of raw bytes (what the ByteLevel pre-tokenizer
// produces), e.g. " hi" -> "Ġhi".
std::string BytesToToken(std::string_view bytes);

}  // namespace crescent::tokenizer
