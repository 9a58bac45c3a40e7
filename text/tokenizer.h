/* GPT-2 byte-level BPE tokenizer (spec §7), loaded from a Hugging Face model directory.
 *
 * A loaded tokenizer is read-only: every function below takes it const and may be called from
 * several threads at once. Functions that can fail return an xcap_status and write one line
 * naming the file (or id) at fault into err; nothing here prints or exits.
 *
 * Encoding follows GPT-2's pre-tokenizer pattern
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * implemented by hand on code points (\s = Unicode White_Space, as tiktoken and HF tokenizers
 * read it), then BPE with the merge ranks of merges.txt. Input that is not valid UTF-8 is still
 * encoded: each byte that does not start a well-formed UTF-8 sequence counts as one character
 * of the "other" class (like punctuation), so the tokens' bytes give back the input exactly
 * (tokenizer_decode_bytes(encode(bytes)) == bytes for any bytes, unless tokenizer_config.json
 * sets add_prefix_space; tokenizer_decode, which returns text, replaces what is not UTF-8 with
 * U+FFFD as transformers does).
 *
 * Where references differ, xcap follows spec §7 and transformers >= 5.7: BPE merges
 * every occurrence of the best pair before pairs made by it compete (identical to HF tokenizers
 * and tiktoken for trained merges files such as GPT-2's); \s is White_Space, not JavaScript's
 * \s; letters and numbers come from Unicode 17.0 (see text/unicode_tables.c). */
#ifndef XCAP_TEXT_TOKENIZER_H
#define XCAP_TEXT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct xcap_tokenizer xcap_tokenizer;

/* Loads the tokenizer of a model directory: tokenizer.json when present (what transformers'
 * AutoTokenizer uses), otherwise vocab.json + merges.txt. Then, when present: added_tokens.json,
 * tokenizer_config.json (added_tokens_decoder, bos/eos/unk/pad/... tokens,
 * clean_up_tokenization_spaces, add_prefix_space) and special_tokens_map.json. */
int tokenizer_load(const char *model_dir, xcap_tokenizer **out, char *err, size_t errlen);

/* Loads just a vocab.json + merges.txt pair (no config files; <|endoftext|> is special). */
int tokenizer_load_files(const char *vocab_json, const char *merges_txt, xcap_tokenizer **out,
                         char *err, size_t errlen);

/* Loads just a tokenizer.json (model.vocab, model.merges, added_tokens). */
int tokenizer_load_tokenizer_json(const char *path, xcap_tokenizer **out, char *err,
                                  size_t errlen);

void tokenizer_free(xcap_tokenizer *t);

/* Largest token id + 1 (vocabulary plus added tokens). */
int tokenizer_vocab_size(const xcap_tokenizer *t);

/* Id of a token written as in vocab.json (byte-level characters, e.g. "Ġthe"); -1 if absent. */
int tokenizer_token_id(const xcap_tokenizer *t, const char *token_utf8);

/* 1 when id is a special token (skipped by decode with skip_special), else 0. */
int tokenizer_is_special(const xcap_tokenizer *t, int id);

/* Id of a named special token: role is "bos", "eos", "unk", "pad", "sep", "cls" or "mask";
 * -1 when the files name none. Plain vocab.json + merges.txt names none. */
int tokenizer_role_id(const xcap_tokenizer *t, const char *role);

/* Whether decode removes spaces before punctuation. transformers >= 5.7 (the newest followed
 * here) runs that clean-up for a BPE tokenizer only when tokenizer_config.json sets both
 * clean_up_tokenization_spaces and
 * clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output; both default false. */
int tokenizer_clean_up_spaces(const xcap_tokenizer *t);

/* Encodes text[0..len) as plain text: special-token strings such as "<|endoftext|>" are encoded
 * as ordinary characters (tiktoken's encode_ordinary). Writes up to cap ids (ids may be NULL when
 * cap is 0) and returns the full count through n_ids, so a caller can size a second call. With
 * add_prefix_space (tokenizer_config.json; GPT-2's default is false) a space is put before text
 * that does not start with one, as HF's ByteLevel pre-tokenizer does; empty text gives no ids. */
int tokenizer_encode(const xcap_tokenizer *t, const char *text, size_t len, int32_t *ids, int cap,
                     int *n_ids, char *err, size_t errlen);

/* Like tokenizer_encode, but the exact text of an added or special token (e.g. "<|endoftext|>")
 * becomes that token's id, as transformers' tokenizer(text) does; leftmost, then longest match. */
int tokenizer_encode_special(const xcap_tokenizer *t, const char *text, size_t len, int32_t *ids,
                             int cap, int *n_ids, char *err, size_t errlen);

/* Decodes ids to a malloc'ed, NUL-terminated UTF-8 string (*out; free() it). The tokens' bytes
 * are joined, then every ill-formed UTF-8 sequence becomes U+FFFD (one per maximal subpart, as
 * Python's and Rust's decoders do). skip_special drops special ids. An id that is out of range
 * or names no token is an error naming it. */
int tokenizer_decode(const xcap_tokenizer *t, const int32_t *ids, int n, int skip_special,
                     char **out, char *err, size_t errlen);

/* The joined raw bytes of the tokens (malloc'ed into *out, *len bytes, plus a NUL that len does
 * not count), with no UTF-8 repair and no clean-up: decode_bytes(encode(b)) == b for any bytes b,
 * which tokenizer_decode cannot promise since it must replace invalid UTF-8. */
int tokenizer_decode_bytes(const xcap_tokenizer *t, const int32_t *ids, int n, int skip_special,
                           char **out, size_t *len, char *err, size_t errlen);

/* Raw bytes of one token (not NUL-terminated), e.g. to tell which word a token belongs to.
 * Returns XCAP_ERR_ARG for an id that names no token. */
int tokenizer_token_bytes(const xcap_tokenizer *t, int id, const char **bytes, int *len);

/* transformers' clean_up_tokenization: " ." -> ".", " ?", " !", " ,", " ' " -> "'", " n't",
 * " 'm", " 's", " 've", " 're", applied in that order to the whole string, in place. Exposed so
 * a caller can apply it on request; tokenizer_decode applies it when
 * tokenizer_clean_up_spaces() says so. */
void tokenizer_clean_up_text(char *text);

#endif
