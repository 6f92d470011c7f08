/*
 * rt_text.h -- text data for language models (issue 11): a tokenizer
 * interface with a byte-level implementation, a text dataset read from a
 * file, a folder or memory and split into train and validation, and a
 * sampler of [N, T+1] windows that is reproducible from (seed, epoch).
 *
 * Shapes: a batch is ids [N, T+1] i32, row-major.  Row n is T+1
 * consecutive tokens of one split; the model's input is columns 0..T-1 and
 * its targets are columns 1..T (the same row shifted by one), so
 *   input[n, t] = batch[n * (T+1) + t],  target[n, t] = batch[n * (T+1) + t + 1].
 */
#ifndef RT_TEXT_H
#define RT_TEXT_H

#include "retort.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ============================================================= tokenizer */

/* A tokenizer: a table of functions over an opaque self.  Another tokenizer
 * (BPE, a word list) fills in the same struct; the dataset and the
 * generator only call through it.  Ids are in [0, vocab_size(self)). */
typedef struct rt_tokenizer {
    void *self;
    const char *(*name)(const void *self);     /* "bytes"; static */
    int64_t (*vocab_size)(const void *self);   /* 256 for bytes */
    /* Encodes text[0..len) into ids: writes at most cap ids and sets *n to
     * the full count (call with cap 0 to size the buffer).  Errors (text
     * the tokenizer cannot encode) go into ctx. */
    rt_status (*encode)(const void *self, rt_ctx *ctx, const char *text,
                        size_t len, int32_t *ids, int64_t cap, int64_t *n);
    /* Decodes ids[0..n) into buf: writes at most cap bytes (no NUL is
     * added) and sets *len to the full length.  An id outside the
     * vocabulary is RT_STATUS_ERR_ARG naming its index. */
    rt_status (*decode)(const void *self, rt_ctx *ctx, const int32_t *ids,
                        int64_t n, char *buf, size_t cap, size_t *len);
} rt_tokenizer;

/* The byte-level tokenizer: id = the byte's value (vocabulary 256), every
 * byte string encodes, one id per byte.  Static; borrowed. */
const rt_tokenizer *rt_tokenizer_bytes(void);

/* =============================================================== dataset */

typedef struct rt_text rt_text;

enum { RT_TEXT_TRAIN = 0, RT_TEXT_VAL = 1 };

#define RT_TEXT_MAX_BYTES_DEFAULT ((int64_t)64 << 20) /* 64 MiB: 256 MiB of ids */

typedef struct rt_text_opts {
    /* Fraction of each file's tokens, taken from its end, that goes to the
     * validation split, in [0, 1).  0 = no validation split. */
    double val_fraction;
    /* Upper bound on the bytes read, over all files (0 = the default
     * RT_TEXT_MAX_BYTES_DEFAULT): a folder of unexpected size is an error
     * naming the file where the bound was crossed, not an exhausted
     * machine. */
    int64_t max_bytes;
    /* Files of a folder whose names end with this are skipped (NULL or ""
     * = none); e.g. ".dat" for the fortune(6) index files beside the text
     * in /usr/share/games/fortunes. */
    const char *skip_suffix;
} rt_text_opts;

/* Reads path: a regular file, or a folder whose regular files (not
 * symbolic links, not subfolders, not names starting with '.') are read in
 * byte order of their names.  Each file is encoded on its own with tok
 * (NULL = bytes), then split: its last tokens go to validation, the rest
 * to train; the splits are the concatenations of these parts, in file
 * order.  A file's validation share is floor(f * S') - floor(f * S), f =
 * val_fraction, S and S' the tokens of the files before it and with it:
 * about f of each file, and exactly floor(f * total) over the corpus even
 * when every file is too small for a floor of its own to be nonzero.
 *
 * Why a contiguous tail of each file, not of the whole corpus or whole
 * files: a window never mixes the two splits (no leakage through
 * overlapping windows), and every file -- in fortunes, every topic --
 * is represented in both, which a tail of the sorted concatenation or a
 * split by files would not give.  Windows may cross from one file into the
 * next within a split, as in GPT-2's concatenated corpus.
 *
 * opts NULL = val_fraction 0.1, default bound, no suffix skipped.  Errors:
 * the path missing or unreadable (with the cause), a folder without a
 * file, the bound crossed, val_fraction outside [0, 1), an empty corpus.
 * tok is borrowed and must outlive the dataset. */
rt_status rt_text_open(rt_ctx *ctx, const char *path, const rt_tokenizer *tok,
                       const rt_text_opts *opts, rt_text **out);
/* The same over one document in memory (an embedded corpus); label names
 * it in messages. */
rt_status rt_text_from_memory(rt_ctx *ctx, const char *text, size_t len,
                              const char *label, const rt_tokenizer *tok,
                              const rt_text_opts *opts, rt_text **out);
void rt_text_free(rt_text *d); /* NULL is a no-op */

/* Tokens of a split (RT_TEXT_TRAIN, RT_TEXT_VAL); -1 for another value. */
int64_t rt_text_count(const rt_text *d, int split);
/* The split's tokens (borrowed, rt_text_count of them; NULL if none). */
const int32_t *rt_text_tokens(const rt_text *d, int split);
int rt_text_files(const rt_text *d);          /* files read (1 for memory) */
int64_t rt_text_bytes(const rt_text *d);      /* bytes read */
const rt_tokenizer *rt_text_tokenizer(const rt_text *d); /* borrowed */

/* Seeds r for the batches of one epoch: rt_rng_seed(r, seed, stream) with
 * a stream made of "text" and the epoch, so the sampler's draws are apart
 * from the training streams of the same seed.  Batch b of an epoch is the
 * b-th rt_text_batch call after this: reproducible from (seed, epoch). */
void rt_text_epoch_rng(rt_rng *r, uint64_t seed, uint64_t epoch);

/* Fills batch [N, T+1] i32 (the caller's buffer) with N windows of T+1
 * consecutive tokens of a split, each starting at an offset drawn
 * uniformly from [0, count - T - 1] with rt_rng_below(r, ...), in row
 * order (N draws per call).  Errors: a split shorter than T + 1 tokens
 * (naming the split, its size and what to change), N < 1 or T < 1. */
rt_status rt_text_batch(const rt_text *d, rt_ctx *ctx, int split, int64_t N,
                        int64_t T, rt_rng *r, int32_t *batch);
/* Deterministic windows for evaluation: window i starts at i * T (windows
 * overlap by the one target token); fills rows for windows first ..
 * first+N-1 that exist and returns how many (0 past the end); -1 + error
 * as rt_text_batch.  rt_text_windows_count gives how many there are:
 * floor((count - 1) / T). */
int64_t rt_text_windows(const rt_text *d, rt_ctx *ctx, int split,
                        int64_t first, int64_t N, int64_t T, int32_t *batch);
int64_t rt_text_windows_count(const rt_text *d, int split, int64_t T);

#ifdef __cplusplus
}
#endif
#endif /* RT_TEXT_H */
