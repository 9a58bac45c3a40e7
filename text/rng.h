/* xcap's sampling random stream: xoshiro256** (Blackman and Vigna, 2018) seeded through
 * splitmix64. It is small, fast, passes BigCrush, and is fully specified here, so a seed means
 * the same draws on every platform. It cannot reproduce PyTorch's stream (spec §6): the promise
 * is only "same seed and settings, same tokens" within xcap. */
#ifndef XCAP_TEXT_RNG_H
#define XCAP_TEXT_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} xcap_rng;

/* State words are four successive splitmix64 outputs starting from seed, so that nearby seeds
 * (0, 1, 2, ...) still give unrelated streams and the state is never all zero. */
void xcap_rng_seed(xcap_rng *rng, uint64_t seed);

uint64_t xcap_rng_next(xcap_rng *rng);

/* Uniform double in [0, 1) from the top 53 bits of one draw. */
double xcap_rng_uniform(xcap_rng *rng);

#endif
