// splitmix64 seeding and xoshiro256** (Blackman and Vigna, 2018), public-domain algorithms.
#include "policies/random.hpp"

#include <cmath>
#include <utility>

namespace mailtap::policies {
namespace {

constexpr std::uint64_t golden_gamma = 0x9e3779b97f4a7c15ull;

std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::uint64_t session_seed(std::uint64_t master, std::uint64_t number) {
  return mix64(master + golden_gamma * (number + 1));
}

rng::rng(std::uint64_t seed) {
  // The state is expanded with splitmix64, as xoshiro's authors recommend; it is never all zero.
  for (auto& word : s_) {
    seed += golden_gamma;
    word = mix64(seed);
  }
}

std::uint64_t rng::next() {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double rng::uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

std::uint64_t rng::uniform(std::uint64_t lo, std::uint64_t hi) {
  if (hi < lo) std::swap(lo, hi);
  const std::uint64_t span = hi - lo;
  if (span == ~0ull) return next();
  // Rejection sampling keeps the draw exactly uniform.
  const std::uint64_t range = span + 1;
  const std::uint64_t limit = ~0ull - (~0ull % range);
  std::uint64_t x = next();
  while (x >= limit) x = next();
  return lo + x % range;
}

double rng::normal() {
  constexpr double two_pi = 6.283185307179586476925286766559;
  const double u1 = 1.0 - uniform01();   // (0, 1]: log(u1) is finite
  const double u2 = uniform01();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2);
}

}  // namespace mailtap::policies
