/*
 * rng.h — small deterministic random numbers for the simulator: splitmix64
 * seeding a xoshiro256** generator, and the distributions the traffic
 * model needs. Not for anything security-related.
 */
#ifndef CP_UTIL_RNG_H
#define CP_UTIL_RNG_H

#include <math.h>
#include <stdint.h>

struct rng {
    uint64_t s[4];
};

static inline uint64_t
rng_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void
rng_seed(struct rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = rng_splitmix(&seed);
}

static inline uint64_t
rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5, res = ((x << 7) | (x >> 57)) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return res;
}

/* Uniform in [0, 1). */
static inline double
rng_unit(struct rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform integer in [0, n). */
static inline uint64_t
rng_below(struct rng *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}

static inline double
rng_normal(struct rng *r)
{
    double u = rng_unit(r), v = rng_unit(r);

    return sqrt(-2.0 * log(u > 0 ? u : 1e-300)) * cos(2 * M_PI * v);
}

/* Log-normal with the given median and sigma (of the underlying normal). */
static inline double
rng_lognormal(struct rng *r, double median, double sigma)
{
    return median * exp(sigma * rng_normal(r));
}

static inline double
rng_exp(struct rng *r, double mean)
{
    double u = rng_unit(r);

    return -mean * log(u > 0 ? 1 - u : 1);
}

/* Poisson-distributed count with mean `lambda`. */
static inline uint64_t
rng_poisson(struct rng *r, double lambda)
{
    if (lambda <= 0)
        return 0;
    if (lambda > 50) {
        double x = lambda + sqrt(lambda) * rng_normal(r) + 0.5;

        return x < 0 ? 0 : (uint64_t)x;
    }
    double l = exp(-lambda), p = 1;
    uint64_t k = 0;

    do {
        k++;
        p *= rng_unit(r);
    } while (p > l);
    return k - 1;
}

/* 1 + geometric: mean `mean` (>= 1), capped at `max`. */
static inline unsigned
rng_count(struct rng *r, double mean, unsigned max)
{
    unsigned n = 1;
    double p = mean > 1 ? 1.0 / mean : 1.0;

    while (n < max && rng_unit(r) > p)
        n++;
    return n;
}

#endif
